# shellcheck shell=bash
# lib.sh: helpers sourced by the AMI provisioning scripts (uploaded to
# /tmp/jit-runner/lib.sh by the template). Nothing here runs on its own.

# shellcheck disable=SC2034 # used by the scripts that source this file
readonly MANIFEST=/opt/jit-runner-manifest.txt
readonly DOWNLOADS=/tmp/jit-runner/downloads
readonly RUNNER_DIR=/home/runner/actions-runner

# sudo's secure_path leaves out /usr/local, where the tools go.
export PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin

log() { printf '%s jit-runner-ami: %s\n' "$(date -u +%H:%M:%S)" "$*"; }
die() {
	printf 'jit-runner-ami: ERROR: %s\n' "$*" >&2
	exit 1
}

# machine_arch prints x64 or arm64: the machine's architecture in the
# runner's naming.
machine_arch() {
	case $(uname -m) in
	x86_64) printf 'x64\n' ;;
	aarch64) printf 'arm64\n' ;;
	*) die "unsupported architecture $(uname -m)" ;;
	esac
}

# per_arch NAME_X64 NAME_ARM64 prints the value of the variable for this
# machine's architecture.
per_arch() {
	case $(machine_arch) in
	x64) printf '%s\n' "${!1:-}" ;;
	arm64) printf '%s\n' "${!2:-}" ;;
	esac
}

# go_arch prints amd64 or arm64 (Go, Kubernetes, Helm, gh, yq naming).
go_arch() {
	case $(machine_arch) in
	x64) printf 'amd64\n' ;;
	arm64) printf 'arm64\n' ;;
	esac
}

# require NAME...: every named variable is set and not empty.
require() {
	local name
	for name in "$@"; do
		[[ -n ${!name:-} ]] || die "${name} is empty: set it in packer/variables.pkr.hcl or with -var"
	done
}

# fetch URL SHA256 DEST downloads URL to DEST and fails unless its SHA-256 is
# exactly SHA256 (an empty or malformed digest fails before downloading).
fetch() {
	local url=$1 sha=$2 dest=$3
	[[ $sha =~ ^[0-9a-f]{64}$ ]] || die "no valid SHA-256 for ${url} (got '${sha}')"
	mkdir -p "$(dirname "$dest")"
	log "download ${url}"
	curl -fsSL --proto '=https' --retry 5 --retry-connrefused --connect-timeout 20 --max-time 900 -o "$dest" "$url" ||
		die "download failed: ${url}"
	printf '%s  %s\n' "$sha" "$dest" | sha256sum --check --status - ||
		die "checksum mismatch: ${url} is sha256 $(sha256sum "$dest" | cut -d' ' -f1), want ${sha}"
}

# record NAME VERSION appends one "tool version" line to the tool manifest.
record() {
	[[ -n $2 ]] || die "no version for $1"
	printf '%s %s\n' "$1" "$2" >>"$MANIFEST"
}

# check_version NAME VERSION COMMAND... runs COMMAND, fails unless its output
# names VERSION (as a whole version, so 1.2.1 does not match 1.2.10), and
# records NAME VERSION in the tool manifest.
check_version() {
	local name=$1 want=$2 out re
	shift 2
	out=$("$@" 2>&1) || die "${name}: '$*' failed: ${out}"
	re="(^|[^0-9.])${want//./\\.}([^0-9.]|$)"
	[[ $out =~ $re ]] || die "${name}: '$*' printed '${out}', want version ${want}"
	record "$name" "$want"
}

# rpm_version PACKAGE prints the installed version-release of PACKAGE.
rpm_version() {
	rpm -q --queryformat '%{VERSION}-%{RELEASE}\n' "$1" | head -n 1
}

# dnf_install PACKAGE... installs without weak dependencies.
dnf_install() {
	dnf install -y -q --setopt=install_weak_deps=False "$@"
}
