#!/usr/bin/env bash
# ci-vars.sh prints the Packer variable file (JSON) of a CI build of the AMI
# (.github/workflows/ami-build.yml) from the workflow's inputs, passed as
# environment variables (all optional):
#
#   IN_RUNNER_VERSION       actions/runner version
#   IN_GO_VERSION           Go version
#   IN_NODE_MAJOR_VERSION   Node.js major version
#   IN_JIT_RUNNERS_VERSION  version in the AMI name; empty: the newest git tag
#   IN_EXTRA_SCRIPT         path of an extra provisioning script
#   IN_DISTRIBUTE           true or false
#
# A version equal to the template's default keeps the pinned digests of
# variables.pkr.hcl. Another version gets its digests from its publisher at
# run time: the runner's release notes (GitHub API, GH_TOKEN), go.dev's
# download index, nodejs.org's SHASUMS256.txt (Node.js: the newest release of
# that major). The build still verifies every download against them.
set -euo pipefail

die() {
	printf 'ci-vars: %s\n' "$*" >&2
	exit 1
}
log() { printf 'ci-vars: %s\n' "$*" >&2; }

dir=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
# default NAME prints the template's default of variable NAME.
default() { echo "var.$1" | packer console "$dir"; }
curl_() { curl -fsSL --proto '=https' --retry 3 "$@"; }
sha_ok() { [[ $1 =~ ^[0-9a-f]{64}$ ]] || die "no SHA-256 found for $2"; }

vars='{}'
set_var() { vars=$(jq --arg k "$1" --arg v "$2" '.[$k] = $v' <<<"$vars"); }

v=${IN_JIT_RUNNERS_VERSION:-}
if [[ -z $v ]]; then
	v=$(git describe --tags --abbrev=0 2>/dev/null || printf 'dev-%s' "$(git rev-parse --short HEAD)")
fi
set_var jit_runners_version "$v"

v=${IN_RUNNER_VERSION:-}
if [[ -n $v && $v != "$(default runner_version)" ]]; then
	[[ $v =~ ^[0-9]+\.[0-9]+\.[0-9]+$ ]] || die "runner_version must look like 2.332.0, got '${v}'"
	log "runner ${v}: digests from the release notes of actions/runner v${v}"
	body=$(gh api "repos/actions/runner/releases/tags/v${v}" --jq .body) || die "no actions/runner release v${v}"
	set_var runner_version "$v"
	for arch in x64 arm64; do
		# The release notes carry <!-- BEGIN SHA linux-x64 -->digest<!-- END SHA linux-x64 -->.
		sha=$(sed -n "s/.*<!-- BEGIN SHA linux-${arch} -->\([0-9a-f]\{64\}\)<!-- END SHA linux-${arch} -->.*/\1/p" <<<"$body" | head -n 1)
		sha_ok "$sha" "actions-runner-linux-${arch}-${v}.tar.gz"
		set_var "runner_sha256_${arch}" "$sha"
	done
fi

v=${IN_GO_VERSION:-}
if [[ -n $v && $v != "$(default go_version)" ]]; then
	[[ $v =~ ^[0-9]+\.[0-9]+(\.[0-9]+)?$ ]] || die "go_version must look like 1.23.12, got '${v}'"
	log "go ${v}: digests from https://go.dev/dl/"
	index=$(curl_ 'https://go.dev/dl/?mode=json&include=all')
	set_var go_version "$v"
	for arch in x64:amd64 arm64:arm64; do
		sha=$(jq -r --arg f "go${v}.linux-${arch#*:}.tar.gz" '[.[].files[] | select(.filename == $f) | .sha256][0] // ""' <<<"$index")
		sha_ok "$sha" "go${v}.linux-${arch#*:}.tar.gz"
		set_var "go_sha256_${arch%%:*}" "$sha"
	done
fi

v=${IN_NODE_MAJOR_VERSION:-}
if [[ -n $v && $v != "$(default node_major_version)" ]]; then
	[[ $v =~ ^[0-9]+$ ]] || die "node_major_version must be a number, got '${v}'"
	node=$(curl_ https://nodejs.org/dist/index.json | jq -r --arg m "v${v}." '[.[] | select(.version | startswith($m))][0].version // ""')
	[[ -n $node ]] || die "no Node.js ${v} release"
	log "node ${node}: digests from https://nodejs.org/dist/${node}/SHASUMS256.txt"
	sums=$(curl_ "https://nodejs.org/dist/${node}/SHASUMS256.txt")
	set_var node_major_version "$v"
	set_var node_version "${node#v}"
	for arch in x64 arm64; do
		sha=$(awk -v f="node-${node}-linux-${arch}.tar.xz" '$2 == f {print $1}' <<<"$sums")
		sha_ok "$sha" "node-${node}-linux-${arch}.tar.xz"
		set_var "node_sha256_${arch}" "$sha"
	done
fi

v=${IN_EXTRA_SCRIPT:-}
if [[ -n $v ]]; then
	[[ -f $v ]] || die "extra_script ${v} is not a file in the repository"
	set_var extra_script "$v"
fi

case ${IN_DISTRIBUTE:-} in
'') ;;
true | false) vars=$(jq --argjson d "$IN_DISTRIBUTE" '.distribute = $d' <<<"$vars") ;;
*) die "distribute must be true or false, got '${IN_DISTRIBUTE}'" ;;
esac

jq . <<<"$vars"
