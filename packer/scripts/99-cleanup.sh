#!/usr/bin/env bash
# 99-cleanup.sh: leave no build state in the AMI: downloads, package caches,
# cloud-init state (so every instance runs its user-data as a first boot),
# the machine id, the build's SSH key and shell history.
set -euo pipefail
# shellcheck source-path=SCRIPTDIR source=lib.sh
. /tmp/jit-runner/lib.sh

systemctl stop docker.service
dnf clean all -q
rm -rf /var/cache/dnf "$DOWNLOADS" /tmp/jit-runner
cloud-init clean --logs
truncate -s 0 /etc/machine-id
rm -f /root/.ssh/authorized_keys /home/ec2-user/.ssh/authorized_keys \
	/root/.bash_history /home/ec2-user/.bash_history
log "cleanup done"
