#!/usr/bin/env bash
# 90-verify.sh: the AMI is what the instance bootstrap expects (after the
# extra script, which might have broken something): the marker holds exactly
# the runner version, the runner is runnable by user runner, Docker starts at
# boot, and the tool manifest is complete.
set -euo pipefail
# shellcheck source-path=SCRIPTDIR source=lib.sh
. /tmp/jit-runner/lib.sh

require RUNNER_VERSION
marker=$(</opt/jit-runner-prebaked)
marker=${marker//[[:space:]]/} # as runtime/bootstrap/bootstrap.sh reads it
[[ $marker == "$RUNNER_VERSION" ]] || die "marker holds '${marker}', want '${RUNNER_VERSION}'"
runuser -u runner -- test -x "${RUNNER_DIR}/run.sh" || die "runner cannot execute ${RUNNER_DIR}/run.sh"
[[ " $(id -nG runner) " == *" docker "* ]] || die "runner is not in group docker"
systemctl is-enabled --quiet docker.service || die "docker.service is not enabled"

for tool in amazon-linux gcc gcc-c++ cmake make git jq python3 python3-pip aws-cli \
	docker containerd runc docker-compose docker-buildx go node npm yamllint \
	kubectl helm gh yq git-lfs actions-runner; do
	grep -q "^${tool} " "$MANIFEST" || die "${MANIFEST} has no line for ${tool}"
done
log "tool manifest ${MANIFEST}:"
cat "$MANIFEST"
