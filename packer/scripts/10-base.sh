#!/usr/bin/env bash
# 10-base.sh: newest Amazon Linux 2023 packages, build tools, Python 3 + pip,
# jq, the AWS CLI v2 and the runner's own libraries. Packages come from the
# Amazon Linux repositories (signed; versions fixed by the release).
set -euo pipefail
# shellcheck source-path=SCRIPTDIR source=lib.sh
. /tmp/jit-runner/lib.sh

# shellcheck source=/dev/null
. /etc/os-release
[[ $ID == amzn && $VERSION_ID == 2023* ]] || die "expected Amazon Linux 2023, got ${ID} ${VERSION_ID}"

log "base: upgrading to the newest Amazon Linux 2023 release"
dnf upgrade -y -q --releasever=latest
dnf_install \
	gcc gcc-c++ cmake make \
	git tar gzip xz bzip2 unzip zip findutils which procps-ng shadow-utils sudo \
	jq python3 python3-pip awscli-2
# The runner's .NET dependencies: the list runtime/bootstrap installs on a
# stock AMI, so the pre-baked path lacks nothing the stock path has.
dnf_install libicu krb5-libs zlib openssl-libs lttng-ust

# shellcheck source=/dev/null
. /etc/os-release
: >"$MANIFEST"
chmod 0644 "$MANIFEST"
record amazon-linux "$VERSION_ID"
for pkg in gcc gcc-c++ cmake make git jq python3 python3-pip; do
	record "$pkg" "$(rpm_version "$pkg")"
done
check_version aws-cli "$(rpm -q --queryformat '%{VERSION}\n' awscli-2)" aws --version
