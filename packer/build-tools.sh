#!/usr/bin/env bash
# build-tools.sh installs Packer and its amazon plugin for `make ami.*`.
#
# Both are built from their Go modules (no release archive, no HashiCorp
# download site), each in a throwaway scratch module: `go mod init scratch`,
# require the pinned version, repeat the `replace` lines of the module's own
# go.mod (without them MVS would pick a different go-cty than the release
# does), and `go build`. The plugin is then registered with
# `packer plugins install --path`, which puts it under PACKER_PLUGIN_PATH
# where `packer validate/build` find it without `packer init` (no network).
#
# Idempotent: an existing packer on PATH and an already installed plugin of the
# pinned version are kept.
#
# Environment (the Makefile sets all of them):
#   PACKER_VERSION         e.g. v1.14.3
#   PACKER_AMAZON_VERSION  e.g. v1.8.0
#   TOOLS_BIN              where the binaries go
#   PACKER_PLUGIN_PATH     where `packer plugins install` puts the plugin
#   GO                     the go command (default: go)
set -euo pipefail

: "${PACKER_VERSION:?set PACKER_VERSION, e.g. v1.14.3}"
: "${PACKER_AMAZON_VERSION:?set PACKER_AMAZON_VERSION, e.g. v1.8.0}"
: "${TOOLS_BIN:?set TOOLS_BIN}"
: "${PACKER_PLUGIN_PATH:?set PACKER_PLUGIN_PATH}"
GO=${GO:-go}
export PACKER_PLUGIN_PATH CHECKPOINT_DISABLE=1

log() { printf 'build-tools: %s\n' "$*" >&2; }

scratch=''
cleanup() { [[ -z $scratch ]] || rm -rf "$scratch"; }
trap cleanup EXIT

# replace_lines prints the replace directives of go.mod file $1, one
# "old [v] => new [v]" per line, from both the single-line and the block form.
replace_lines() {
	awk '
		{ sub(/[ \t]*\/\/.*$/, "") }
		/^replace[ \t]*\($/ { block = 1; next }
		block && /^\)/ { block = 0; next }
		block && NF { sub(/^[ \t]+/, ""); print; next }
		/^replace[ \t]/ { sub(/^replace[ \t]+/, ""); print }
	' "$1"
}

# build_module builds the main package of module $1 at version $2 into $3.
build_module() {
	local module=$1 version=$2 out=$3 info gomod replaces
	scratch=$(mktemp -d)
	(
		cd "$scratch"
		"$GO" mod init scratch 2>/dev/null
		# GOFLAGS=-mod=mod: the scratch module starts without a go.sum.
		# GONOSUMDB=$module: the checksum database has no entry for
		# github.com/hashicorp/packer (its lookup answers 404), so the
		# module itself is taken from the proxy unverified; every dependency
		# is still checked against sum.golang.org.
		export GONOSUMDB=$module GOFLAGS=-mod=mod
		info=$("$GO" mod download -json "${module}@${version}") || {
			log "go mod download ${module}@${version} failed:"
			printf '%s\n' "$info" >&2
			exit 1
		}
		gomod=$(sed -n 's/^[[:space:]]*"GoMod":[[:space:]]*"\(.*\)",\{0,1\}$/\1/p' <<<"$info")
		[[ -f $gomod ]] || {
			log "no go.mod for ${module}@${version} in: ${info}"
			exit 1
		}
		replaces=$(replace_lines "$gomod")
		if grep -qE '=>[[:space:]]*\.{0,2}/' <<<"$replaces"; then
			log "${module}@${version} replaces a module with a local path; cannot build it from the module"
			exit 1
		fi
		{
			printf 'require %s %s\n' "$module" "$version"
			[[ -z $replaces ]] || printf 'replace (\n%s\n)\n' "$replaces"
		} >>go.mod
		log "building ${module}@${version} (replaces: ${replaces:-none})"
		CGO_ENABLED=0 "$GO" build -trimpath -buildvcs=false -ldflags='-s -w' -o "$out" "$module"
	)
	rm -rf "$scratch"
	scratch=''
}

mkdir -p "$TOOLS_BIN" "$PACKER_PLUGIN_PATH"

packer_bin=$(command -v packer || true)
if [[ -n $packer_bin ]]; then
	found=$("$packer_bin" version | head -n 1)
	if [[ $found == "Packer ${PACKER_VERSION}" ]]; then
		log "using ${packer_bin} (${found})"
	else
		log "WARNING: using ${packer_bin} (${found}), not the pinned ${PACKER_VERSION}"
	fi
else
	build_module github.com/hashicorp/packer "$PACKER_VERSION" "${TOOLS_BIN}/packer"
	packer_bin=${TOOLS_BIN}/packer
fi

# `packer plugins installed` prints the path of each installed plugin binary,
# e.g. .../github.com/hashicorp/amazon/packer-plugin-amazon_v1.8.0_x5.0_linux_amd64.
if "$packer_bin" plugins installed 2>/dev/null |
	grep -q "/github.com/hashicorp/amazon/packer-plugin-amazon_${PACKER_AMAZON_VERSION}_"; then
	log "amazon plugin ${PACKER_AMAZON_VERSION} already installed in ${PACKER_PLUGIN_PATH}"
else
	if [[ ! -x ${TOOLS_BIN}/packer-plugin-amazon ]] ||
		[[ $("${TOOLS_BIN}/packer-plugin-amazon" describe 2>/dev/null) != *"\"version\":\"${PACKER_AMAZON_VERSION#v}\""* ]]; then
		build_module github.com/hashicorp/packer-plugin-amazon "$PACKER_AMAZON_VERSION" "${TOOLS_BIN}/packer-plugin-amazon"
	fi
	"$packer_bin" plugins install --path "${TOOLS_BIN}/packer-plugin-amazon" github.com/hashicorp/amazon
fi

"$packer_bin" plugins installed
log "ready: $("$packer_bin" version | head -n 1), amazon plugin ${PACKER_AMAZON_VERSION}"
