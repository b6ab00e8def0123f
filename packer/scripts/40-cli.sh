#!/usr/bin/env bash
# 40-cli.sh: kubectl, Helm 3, GitHub CLI, yq and Git LFS into /usr/local/bin,
# each checked against its pinned SHA-256.
set -euo pipefail
# shellcheck source-path=SCRIPTDIR source=lib.sh
. /tmp/jit-runner/lib.sh

require KUBECTL_VERSION HELM_VERSION GH_VERSION YQ_VERSION GIT_LFS_VERSION
arch=$(go_arch)
unpacked=${DOWNLOADS}/unpacked
mkdir -p "$unpacked"

fetch "https://dl.k8s.io/release/v${KUBECTL_VERSION}/bin/linux/${arch}/kubectl" \
	"$(per_arch KUBECTL_SHA256_X64 KUBECTL_SHA256_ARM64)" "${DOWNLOADS}/kubectl"
install -m 0755 "${DOWNLOADS}/kubectl" /usr/local/bin/kubectl
check_version kubectl "$KUBECTL_VERSION" kubectl version --client

fetch "https://get.helm.sh/helm-v${HELM_VERSION}-linux-${arch}.tar.gz" \
	"$(per_arch HELM_SHA256_X64 HELM_SHA256_ARM64)" "${DOWNLOADS}/helm.tar.gz"
tar -xzf "${DOWNLOADS}/helm.tar.gz" -C "$unpacked" --no-same-owner "linux-${arch}/helm"
install -m 0755 "${unpacked}/linux-${arch}/helm" /usr/local/bin/helm
check_version helm "$HELM_VERSION" helm version --short

fetch "https://github.com/cli/cli/releases/download/v${GH_VERSION}/gh_${GH_VERSION}_linux_${arch}.tar.gz" \
	"$(per_arch GH_SHA256_X64 GH_SHA256_ARM64)" "${DOWNLOADS}/gh.tar.gz"
tar -xzf "${DOWNLOADS}/gh.tar.gz" -C "$unpacked" --no-same-owner "gh_${GH_VERSION}_linux_${arch}/bin/gh"
install -m 0755 "${unpacked}/gh_${GH_VERSION}_linux_${arch}/bin/gh" /usr/local/bin/gh
check_version gh "$GH_VERSION" gh --version

fetch "https://github.com/mikefarah/yq/releases/download/v${YQ_VERSION}/yq_linux_${arch}" \
	"$(per_arch YQ_SHA256_X64 YQ_SHA256_ARM64)" "${DOWNLOADS}/yq"
install -m 0755 "${DOWNLOADS}/yq" /usr/local/bin/yq
check_version yq "$YQ_VERSION" yq --version

fetch "https://github.com/git-lfs/git-lfs/releases/download/v${GIT_LFS_VERSION}/git-lfs-linux-${arch}-v${GIT_LFS_VERSION}.tar.gz" \
	"$(per_arch GIT_LFS_SHA256_X64 GIT_LFS_SHA256_ARM64)" "${DOWNLOADS}/git-lfs.tar.gz"
tar -xzf "${DOWNLOADS}/git-lfs.tar.gz" -C "$unpacked" --no-same-owner "git-lfs-${GIT_LFS_VERSION}/git-lfs"
install -m 0755 "${unpacked}/git-lfs-${GIT_LFS_VERSION}/git-lfs" /usr/local/bin/git-lfs
# The LFS filters for every user, in /etc/gitconfig.
git lfs install --system --skip-repo
check_version git-lfs "$GIT_LFS_VERSION" git lfs version
