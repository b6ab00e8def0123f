#!/usr/bin/env bash
# 30-languages.sh: Go (/usr/local/go), Node.js LTS with npm (/usr/local) and
# yamllint (pip, in its own virtualenv). Python 3 and pip come from 10-base.sh.
set -euo pipefail
# shellcheck source-path=SCRIPTDIR source=lib.sh
. /tmp/jit-runner/lib.sh

require GO_VERSION NODE_MAJOR_VERSION NODE_VERSION YAMLLINT_VERSION

fetch "https://go.dev/dl/go${GO_VERSION}.linux-$(go_arch).tar.gz" \
	"$(per_arch GO_SHA256_X64 GO_SHA256_ARM64)" "${DOWNLOADS}/go.tar.gz"
rm -rf /usr/local/go
tar -xzf "${DOWNLOADS}/go.tar.gz" -C /usr/local --no-same-owner
ln -sf /usr/local/go/bin/go /usr/local/bin/go
ln -sf /usr/local/go/bin/gofmt /usr/local/bin/gofmt
check_version go "$GO_VERSION" go version

[[ $NODE_VERSION == "${NODE_MAJOR_VERSION}".* ]] ||
	die "node_version ${NODE_VERSION} is not a Node.js ${NODE_MAJOR_VERSION} release: set node_version and its digests too"
fetch "https://nodejs.org/dist/v${NODE_VERSION}/node-v${NODE_VERSION}-linux-$(machine_arch).tar.xz" \
	"$(per_arch NODE_SHA256_X64 NODE_SHA256_ARM64)" "${DOWNLOADS}/node.tar.xz"
node_dir=node-v${NODE_VERSION}-linux-$(machine_arch)
tar -xJf "${DOWNLOADS}/node.tar.xz" -C /usr/local --strip-components=1 --no-same-owner \
	"${node_dir}/bin" "${node_dir}/include" "${node_dir}/lib" "${node_dir}/share"
check_version node "$NODE_VERSION" node --version
record npm "$(npm --version)"

python3 -m venv /opt/yamllint
/opt/yamllint/bin/pip install --quiet --no-cache-dir --disable-pip-version-check --only-binary=:all: \
	"yamllint==${YAMLLINT_VERSION}"
ln -sf /opt/yamllint/bin/yamllint /usr/local/bin/yamllint
check_version yamllint "$YAMLLINT_VERSION" yamllint --version
