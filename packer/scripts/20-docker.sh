#!/usr/bin/env bash
# 20-docker.sh: Docker CE from the static binaries of download.docker.com
# (dockerd runs its own containerd), a systemd unit, and the Compose v2 and
# Buildx CLI plugins. Every download is checked against its pinned SHA-256.
set -euo pipefail
# shellcheck source-path=SCRIPTDIR source=lib.sh
. /tmp/jit-runner/lib.sh

require DOCKER_VERSION DOCKER_COMPOSE_VERSION DOCKER_BUILDX_VERSION
case $(machine_arch) in
x64) docker_arch=x86_64 ;;
arm64) docker_arch=aarch64 ;;
esac
plugins=/usr/local/lib/docker/cli-plugins

fetch "https://download.docker.com/linux/static/stable/${docker_arch}/docker-${DOCKER_VERSION}.tgz" \
	"$(per_arch DOCKER_SHA256_X64 DOCKER_SHA256_ARM64)" "${DOWNLOADS}/docker.tgz"
tar -xzf "${DOWNLOADS}/docker.tgz" -C /usr/local/bin --strip-components=1 --no-same-owner
fetch "https://github.com/docker/compose/releases/download/v${DOCKER_COMPOSE_VERSION}/docker-compose-linux-${docker_arch}" \
	"$(per_arch DOCKER_COMPOSE_SHA256_X64 DOCKER_COMPOSE_SHA256_ARM64)" "${DOWNLOADS}/docker-compose"
install -D -m 0755 "${DOWNLOADS}/docker-compose" "${plugins}/docker-compose"
# The same binary also works as the standalone docker-compose command.
ln -sf "${plugins}/docker-compose" /usr/local/bin/docker-compose
fetch "https://github.com/docker/buildx/releases/download/v${DOCKER_BUILDX_VERSION}/buildx-v${DOCKER_BUILDX_VERSION}.linux-$(go_arch)" \
	"$(per_arch DOCKER_BUILDX_SHA256_X64 DOCKER_BUILDX_SHA256_ARM64)" "${DOWNLOADS}/docker-buildx"
install -D -m 0755 "${DOWNLOADS}/docker-buildx" "${plugins}/docker-buildx"

# dockerd needs iptables for container networking; whichever package owns the
# command on this release (iptables-nft) is fine.
dnf_install /usr/sbin/iptables
getent group docker >/dev/null || groupadd --system docker

cat >/etc/systemd/system/docker.service <<'UNIT'
[Unit]
Description=Docker Application Container Engine (static binaries)
Documentation=https://docs.docker.com
After=network-online.target nss-lookup.target time-set.target
Wants=network-online.target

[Service]
Type=notify
ExecStart=/usr/local/bin/dockerd
ExecReload=/bin/kill -s HUP $MAINPID
Restart=always
RestartSec=2
TimeoutStartSec=0
LimitNOFILE=infinity
LimitNPROC=infinity
LimitCORE=infinity
TasksMax=infinity
Delegate=yes
KillMode=process
OOMScoreAdjust=-500

[Install]
WantedBy=multi-user.target
UNIT
systemctl daemon-reload
systemctl enable --now docker.service

check_version docker "$DOCKER_VERSION" docker version --format '{{.Server.Version}}'
check_version docker-compose "$DOCKER_COMPOSE_VERSION" docker compose version
check_version docker-buildx "$DOCKER_BUILDX_VERSION" docker buildx version
record containerd "$(containerd --version | awk '{print $3}')"
record runc "$(runc --version | awk 'NR == 1 {print $3}')"
