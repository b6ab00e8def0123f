#!/usr/bin/env bash
# 50-runner.sh: user runner and the GitHub Actions runner agent for this
# machine's architecture in /home/runner/actions-runner, then the marker
# /opt/jit-runner-prebaked that tells the instance bootstrap the runner is
# already here. The version comes only from RUNNER_VERSION, which the template
# sets from var.runner_version (packer_test.go checks this wiring).
set -euo pipefail
# shellcheck source-path=SCRIPTDIR source=lib.sh
. /tmp/jit-runner/lib.sh

require RUNNER_VERSION
arch=$(machine_arch)

id -u runner >/dev/null 2>&1 || useradd --create-home --shell /bin/bash runner
usermod --append --groups docker runner
if [[ ${RUNNER_PASSWORDLESS_SUDO:-true} == true ]]; then
	printf 'runner ALL=(ALL) NOPASSWD:ALL\n' >/etc/sudoers.d/90-jit-runner
	chmod 0440 /etc/sudoers.d/90-jit-runner
	visudo -cqf /etc/sudoers.d/90-jit-runner || die "invalid sudoers file"
else
	rm -f /etc/sudoers.d/90-jit-runner
fi

fetch "https://github.com/actions/runner/releases/download/v${RUNNER_VERSION}/actions-runner-linux-${arch}-${RUNNER_VERSION}.tar.gz" \
	"$(per_arch RUNNER_SHA256_X64 RUNNER_SHA256_ARM64)" "${DOWNLOADS}/runner.tar.gz"
rm -rf "$RUNNER_DIR"
runuser -u runner -- mkdir -p "$RUNNER_DIR"
runuser -u runner -- tar -xzf - -C "$RUNNER_DIR" <"${DOWNLOADS}/runner.tar.gz"
check_version actions-runner "$RUNNER_VERSION" \
	runuser -u runner -- env HOME=/home/runner "${RUNNER_DIR}/bin/Runner.Listener" --version
rm -rf "${RUNNER_DIR}/_diag"

# The marker the bootstrap compares, whitespace-stripped, to its configured
# runner version.
printf '%s\n' "$RUNNER_VERSION" >/opt/jit-runner-prebaked
chmod 0644 /opt/jit-runner-prebaked
log "runner ${RUNNER_VERSION} (${arch}) pre-baked in ${RUNNER_DIR}"
