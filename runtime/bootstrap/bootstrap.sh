#!/bin/bash
# jit-runners instance bootstrap (EC2 user-data; jit-runner.service on later
# boots): one single-use GitHub Actions JIT runner, then terminate. Rendered by
# package runtime/bootstrap; the values below are deployment-wide only (no job
# data, no secrets).
#@PARAMS@
readonly IMDS_URL='http://169.254.169.254'
readonly ROOT=''
readonly CONSOLE='/dev/console'
readonly WATCHDOG_POLL_SECONDS='2'
readonly JIT_RETRY_DELAYS='1 2 3 5'
readonly POOL_POLL_SECONDS='1'
readonly POOL_BACKOFF_DELAYS='2 4 8 16 30'

set -Eeuo pipefail
set +x # never trace: the JIT config passes through this shell
shopt -s inherit_errexit
umask 022
: "${HOME:=/root}"
export HOME AWS_PAGER='' DEBIAN_FRONTEND=noninteractive PATH="${PATH:-/usr/bin:/bin}:/usr/sbin:/sbin:/snap/bin"

readonly RUNNER_HOME="${ROOT}/home/runner"
readonly RUNNER_DIR="${RUNNER_HOME}/actions-runner"
readonly MARKER="${ROOT}/opt/jit-runner-prebaked"
readonly DOWNLOAD_DIR="${ROOT}/opt/jit-runner-download"
readonly LOCK="${ROOT}/run/jit-runner"
readonly SELF="${ROOT}/usr/local/sbin/jit-runner-bootstrap"
readonly UNIT="${ROOT}/etc/systemd/system/jit-runner.service"

phase=start phase_t0=0 exit_reason=''
imds_token='' instance_id='' region='' table_region='' arch='' instance_arn='' jit_config=''
runner_pid='' watchdog_pid='' sleep_pid='' pool_stop=''

log() {
	local line
	line="$(date -u +%Y-%m-%dT%H:%M:%SZ) jit-runner: $*"
	printf '%s\n' "$line"
	{ printf '%s\n' "$line" >>"$CONSOLE"; } 2>/dev/null || true
}

begin() {
	phase=$1
	phase_t0=${EPOCHREALTIME//[!0-9]/}
	log "${phase}: start"
}

# finish_phase logs how long the current phase took.
finish_phase() {
	local us ms
	us=$((${EPOCHREALTIME//[!0-9]/} - phase_t0))
	printf -v ms '%03d' $((us / 1000 % 1000))
	log "${phase}: done in $((us / 1000000)).${ms}s${1:+ ($1)}"
}

fail() {
	exit_reason="${phase}: $*"
	log "${phase}: FAILED: $*"
	exit 1
}

# shellcheck disable=SC2317 # reached through the ERR trap, which shellcheck 0.9 does not follow
on_err() {
	log "${phase}: command failed with status $1 at line $2: $3"
}

# finish runs on every exit: it stops what is still running and shuts the
# instance down, which terminates it (the launch template's shutdown
# behaviour is terminate). The role may not terminate instances: job code
# runs with its credentials. The one exception: stopped for the stopped pool.
# shellcheck disable=SC2317 # reached through the EXIT trap, which shellcheck 0.9 does not follow
finish() {
	local rc=$?
	trap - EXIT ERR
	trap : INT TERM HUP # finish what was started; children get default handlers
	set +e
	[[ -z $watchdog_pid ]] || kill "$watchdog_pid" 2>/dev/null
	[[ -z $runner_pid ]] || kill -TERM "$runner_pid" 2>/dev/null
	[[ -z $sleep_pid ]] || kill "$sleep_pid" 2>/dev/null
	rm -rf "$DOWNLOAD_DIR"
	if [[ -n $pool_stop ]]; then
		log "exit: status ${rc}: ${exit_reason}; not terminating"
		exit "$rc"
	fi
	log "exit: status ${rc}: ${exit_reason:-"failed during ${phase}"}; terminating"
	shutdown -h now || log "exit: shutdown failed"
	exit "$rc"
}

trap finish EXIT
trap 'on_err "$?" "$LINENO" "$BASH_COMMAND"' ERR
trap 'exit_reason="signal TERM"; exit 143' TERM
trap 'exit_reason="signal INT"; exit 130' INT
trap 'exit_reason="signal HUP"; exit 129' HUP

# imds GETs a metadata path with the IMDSv2 session token. The token reaches
# curl on stdin (-H @-), never in its argv.
imds() {
	printf 'X-aws-ec2-metadata-token: %s\n' "$imds_token" |
		curl -fsS --connect-timeout 2 --max-time 5 --retry 5 --retry-connrefused --retry-delay 1 -H @- "${IMDS_URL}$1"
}

# json_string sets REPLY to the string value of key $2 in AWS's flat JSON $1.
json_string() {
	local re="\"$2\"[[:space:]]*:[[:space:]]*\"([^\"]*)\""
	REPLY=''
	[[ $1 =~ $re ]] && REPLY=${BASH_REMATCH[1]}
	return 0
}

read_instance() {
	local doc account partition machine
	imds_token=$(curl -fsS --connect-timeout 2 --max-time 5 --retry 5 --retry-connrefused --retry-delay 1 \
		-X PUT -H 'X-aws-ec2-metadata-token-ttl-seconds: 300' "${IMDS_URL}/latest/api/token") ||
		fail "no IMDSv2 token"
	doc=$(imds /latest/dynamic/instance-identity/document) || fail "no instance identity document"
	json_string "$doc" instanceId
	[[ $REPLY =~ ^i-[0-9a-f]{8,32}$ ]] || fail "bad instanceId '${REPLY}'"
	instance_id=$REPLY
	json_string "$doc" region
	[[ $REPLY =~ ^[a-z]{2}(-[a-z]+)+-[0-9]+$ ]] || fail "bad region '${REPLY}'"
	region=$REPLY
	table_region=${REGION_OVERRIDE:-$region}
	json_string "$doc" accountId
	[[ $REPLY =~ ^[0-9]{12}$ ]] || fail "bad accountId '${REPLY}'"
	account=$REPLY
	partition=$(imds /latest/meta-data/services/partition) || fail "no partition"
	[[ $partition =~ ^aws(-[a-z]+)*$ ]] || fail "bad partition '${partition}'"
	instance_arn="arn:${partition}:ec2:${region}:${account}:instance/${instance_id}"
	machine=$(uname -m)
	case $machine in
	x86_64 | amd64) arch=x64 ;;
	aarch64 | arm64) arch=arm64 ;;
	*) fail "unsupported architecture ${machine}" ;;
	esac
}

# apt_newest prints the newest package named like the regex $2 (prefix $1),
# e.g. libicu74 on Ubuntu 24.04: library package names change per release.
apt_newest() {
	apt-cache pkgnames "$1" | { grep -xE "$2" || true; } | sort -V | tail -n 1
}

install_packages() {
	local os_release="${ROOT}/etc/os-release" key value id='' version_id='' icu ssl
	[[ -r $os_release ]] || fail "no /etc/os-release"
	while IFS='=' read -r key value; do
		value=${value//[\"\']/}
		case $key in
		ID) id=$value ;;
		VERSION_ID) version_id=$value ;;
		esac
	done <"$os_release"
	log "install: ${id} ${version_id}"
	case $id in
	amzn)
		[[ $version_id == 2023* ]] || fail "unsupported Amazon Linux ${version_id}"
		dnf install -y -q --setopt=install_weak_deps=False \
			libicu krb5-libs zlib openssl-libs lttng-ust tar gzip git jq || fail "dnf install failed"
		command -v aws >/dev/null || dnf install -y -q awscli-2 || fail "dnf install awscli-2 failed"
		;;
	ubuntu | debian)
		apt-get -o DPkg::Lock::Timeout=300 -q update || fail "apt-get update failed"
		icu=$(apt_newest libicu '^libicu[0-9]+$')
		ssl=$(apt_newest libssl '^libssl[0-9.]+(t64)?$')
		[[ -n $icu && -n $ssl ]] || fail "no libicu/libssl package found"
		apt-get -o DPkg::Lock::Timeout=300 -q install -y --no-install-recommends \
			"$icu" "$ssl" libkrb5-3 zlib1g ca-certificates curl tar gzip git jq || fail "apt-get install failed"
		# Ubuntu 24.04 has no awscli deb; the snap is the supported route there.
		command -v aws >/dev/null ||
			apt-get -o DPkg::Lock::Timeout=300 -q install -y awscli ||
			snap install aws-cli --classic || fail "cannot install the AWS CLI"
		;;
	*) fail "unsupported OS '${id}'" ;;
	esac
	command -v aws >/dev/null || fail "no AWS CLI"
	id -u runner >/dev/null 2>&1 || useradd -m -s /bin/bash runner || fail "useradd runner failed"
}

download_runner() {
	local sha url tarball="${DOWNLOAD_DIR}/runner.tar.gz"
	case $arch in
	x64) sha=$RUNNER_SHA256_X64 ;;
	arm64) sha=$RUNNER_SHA256_ARM64 ;;
	esac
	url="${DOWNLOAD_BASE_URL}/v${RUNNER_VERSION}/actions-runner-linux-${arch}-${RUNNER_VERSION}.tar.gz"
	rm -rf "$DOWNLOAD_DIR"
	mkdir -m 0700 "$DOWNLOAD_DIR"
	log "download: ${url}"
	curl -fsSL --connect-timeout 10 --max-time 900 --retry 5 --retry-connrefused -o "$tarball" "$url" ||
		fail "download failed: ${url}"
	printf '%s  %s\n' "$sha" "$tarball" | sha256sum -c --status - ||
		fail "checksum mismatch: ${url} is not sha256 ${sha}"
	rm -rf "$RUNNER_DIR"
	runuser -u runner -- mkdir -p "$RUNNER_DIR"
	runuser -u runner -- tar -xzf - -C "$RUNNER_DIR" <"$tarball" || fail "unpack failed"
	rm -rf "$DOWNLOAD_DIR"
	# Later boots (a stopped pooled instance started for a job) skip to jit-fetch.
	printf '%s\n' "$RUNNER_VERSION" >"$MARKER"
}

# fetch_jit_config reads and deletes this instance's item in one call (the role
# may only DeleteItem its own key): a JIT config, or a pooled instance's marker
# (data: compared, never evaluated). Output: "<config>\t<pool>", None if absent.
# Retry until JIT_WAIT_SECONDS have passed, forever once hot. The config is
# captured by command substitution only: no file, no argv, no log.
fetch_jit_config() {
	local key out cfg pool delays backoff delay hot='' rc fails=0 attempt=0 deadline=$((${EPOCHREALTIME//[!0-9]/} + JIT_WAIT_SECONDS * 1000000))
	key="{\"${JIT_KEY_ATTRIBUTE}\":{\"S\":\"${instance_arn}\"}}"
	read -r -a delays <<<"$JIT_RETRY_DELAYS"
	read -r -a backoff <<<"$POOL_BACKOFF_DELAYS"
	while :; do
		attempt=$((attempt + 1)) rc=0
		if out=$(timeout -k 5 30 aws dynamodb delete-item --region "$table_region" --table-name "$JIT_TABLE" --key "$key" \
			--return-values ALL_OLD --query "[Attributes.${JIT_CONFIG_ATTRIBUTE}.S, Attributes.${POOL_ATTRIBUTE}.S]" --output text); then
			cfg=${out%%$'\t'*} pool=''
			[[ $out != *$'\t'* ]] || pool=${out#*$'\t'}
			if [[ -n $cfg && $cfg != None ]]; then
				[[ $cfg =~ ^[A-Za-z0-9+/=]+$ ]] || fail "JIT config in ${JIT_TABLE} is not base64"
				jit_config=$cfg
				log "jit-fetch: got the JIT config after ${attempt} attempt(s)"
				return 0
			fi
			case $pool in
			'' | None) ;;
			"$POOL_HOT")
				hot=1
				log "jit-fetch: pooled (${POOL_HOT}): waiting for a job without a deadline"
				;;
			"$POOL_STOPPED") await_stop ;;
			*)
				pool=${pool:0:64}
				log "jit-fetch: unknown pool marker '${pool//[![:alnum:]._ -]/?}' ignored"
				;;
			esac
		else
			rc=$?
		fi
		fails=$((rc ? fails + 1 : 0))
		if [[ -n $hot ]]; then
			delay=$POOL_POLL_SECONDS
			((fails == 0)) || delay=${backoff[fails - 1]:-${backoff[-1]}}
		else
			((${EPOCHREALTIME//[!0-9]/} < deadline)) || fail "no JIT config for ${instance_arn} in ${JIT_TABLE} after ${JIT_WAIT_SECONDS}s"
			delay=${delays[attempt - 1]:-${delays[-1]}}
		fi
		((rc == 0)) || log "jit-fetch: delete-item failed with status ${rc} (attempt ${attempt}); next in ${delay}s"
		sleep "$delay"
	done
}

# await_stop: consuming the stopped marker told the control plane this instance
# is prepared; it stops it. Sleep until that stop's SIGTERM, then exit 0 without
# shutdown (which would terminate). No stop in STOP_WAIT_SECONDS: fail.
await_stop() {
	log "jit-fetch: pooled (${POOL_STOPPED}): prepared; waiting up to ${STOP_WAIT_SECONDS}s to be stopped"
	trap 'exit_reason="stopped for the stopped pool" pool_stop=1; exit 0' TERM
	sleep "$STOP_WAIT_SECONDS" &
	sleep_pid=$!
	wait "$sleep_pid" || :
	fail "not stopped within ${STOP_WAIT_SECONDS}s"
}

# install_unit runs this script on later boots too (cloud-init runs user-data on
# the first only): the symlink is what systemctl enable makes; nothing starts now.
install_unit() {
	local wants="${ROOT}/etc/systemd/system/multi-user.target.wants"
	[[ ! ${BASH_SOURCE[0]} -ef $SELF ]] || return 0
	mkdir -p "${SELF%/*}" "$wants"
	install -m 0700 "${BASH_SOURCE[0]}" "$SELF"
	cat >"$UNIT" <<EOF
[Unit]
Description=jit-runners bootstrap
Wants=network-online.target
After=network-online.target

[Service]
Type=simple
ExecStart=${SELF}
StandardOutput=journal+console
StandardError=journal+console
TimeoutStartSec=0

[Install]
WantedBy=multi-user.target
EOF
	ln -sfn "$UNIT" "${wants}/jit-runner.service"
}

job_started() {
	local f
	for f in "${RUNNER_DIR}"/_diag/Worker_*.log; do
		[[ -e $f ]] && return 0
	done
	return 1
}

# watchdog stops the runner if no job has started within IDLE_TIMEOUT_SECONDS
# (the runner writes _diag/Worker_*.log when a job starts). It exits 3 when it
# stopped the runner, 0 otherwise.
watchdog() {
	local pid=$1 deadline=$((${EPOCHREALTIME//[!0-9]/} + IDLE_TIMEOUT_SECONDS * 1000000)) i
	while kill -0 "$pid" 2>/dev/null; do
		if job_started; then
			log "watchdog: job started"
			return 0
		fi
		if ((${EPOCHREALTIME//[!0-9]/} >= deadline)); then
			log "watchdog: no job within ${IDLE_TIMEOUT_SECONDS}s; stopping the runner"
			kill -TERM "$pid" 2>/dev/null || true
			for ((i = 0; i < 150; i++)); do
				kill -0 "$pid" 2>/dev/null || return 3
				sleep 0.1
			done
			kill -KILL "$pid" 2>/dev/null || true
			return 3
		fi
		sleep "$WATCHDOG_POLL_SECONDS"
	done
}

run_runner() {
	local rc=0 wd=0
	rm -rf "${RUNNER_DIR}/_diag"
	log "runner: starting ${NAME_PREFIX}-${instance_id}"
	# The runner reads --jitconfig from ACTIONS_RUNNER_INPUT_JITCONFIG. It is
	# exported only in this subshell, which execs runuser: it is in the
	# environment of runuser and the runner (readable by root and the runner
	# user only), never in any argv, unlike `env VAR=...` or --jitconfig.
	# runuser -u without --login keeps the caller's environment.
	(
		cd "$RUNNER_DIR"
		export ACTIONS_RUNNER_INPUT_JITCONFIG="$jit_config"
		exec runuser -u runner -- ./run.sh
	) &
	runner_pid=$!
	jit_config=''
	watchdog "$runner_pid" &
	watchdog_pid=$!
	wait "$runner_pid" || rc=$?
	runner_pid=''
	wait "$watchdog_pid" || wd=$?
	watchdog_pid=''
	if ((wd == 3)); then
		exit_reason="idle timeout: no job within ${IDLE_TIMEOUT_SECONDS}s"
		finish_phase "runner stopped"
		exit 0
	fi
	exit_reason="runner exited with status ${rc}"
	finish_phase "runner exited with status ${rc}"
	exit "$rc"
}

main() {
	local marker=''
	# One copy per boot: mkdir is atomic, /run is cleared at boot.
	if ! mkdir "$LOCK" 2>/dev/null; then
		[[ -d $LOCK ]] || fail "cannot create ${LOCK}"
		trap - EXIT
		log "start: already running this boot"
		exit 0
	fi
	log "start: runner ${RUNNER_VERSION}, name prefix ${NAME_PREFIX}"
	install_unit
	begin imds
	read_instance
	finish_phase "${instance_id} ${region} ${arch}"

	[[ ! -e $MARKER ]] || marker=$(<"$MARKER")
	marker=${marker//[[:space:]]/}
	if [[ $marker == "$RUNNER_VERSION" ]]; then
		phase=install
		log "install: skipped, runner ${marker} already installed"
	else
		if [[ -z $marker ]]; then
			begin install
			install_packages
			finish_phase
		else
			log "install: skipped, pre-baked runner ${marker} is not ${RUNNER_VERSION}: downloading the runner only"
		fi
		begin download
		download_runner
		finish_phase
	fi
	[[ -x ${RUNNER_DIR}/run.sh ]] || fail "no runner at ${RUNNER_DIR}"

	begin jit-fetch
	fetch_jit_config
	finish_phase

	begin runner
	run_runner
}

main
