# ami.sh is the program of the local.Command that builds one runner AMI with
# Packer (see ami.go). The component passes this text plus one last line, the
# action, to `bash -c`: create runs "build", update "reuse", delete "delete".
# Everything it needs is in its environment (no secrets: AWS credentials come
# from the environment `pulumi up` runs in):
#
#   AWS_REGION              the stack's region                      all
#   JITR_PACKER_DIR         the template (packer.WriteTo)            build
#   JITR_PACKER             the packer command                       build
#   JITR_PACKER_SOURCE      x86_64 or arm64, the template's source   build
#   JITR_BUILD_NAME         prefix of the build's jitr:build-id tag  build
#   PKR_VAR_*               the template's variables                 build
#   PACKER_PLUGIN_PATH      where the amazon plugin is (optional)    build
#   PULUMI_COMMAND_STDOUT   the last build's output (the provider)   reuse, delete
#
# A build prints "jitr:build-id=<id>" and then the AMI id, the last line; the
# stack reads the AMI id from there, and delete finds the AMI (and whatever
# carries the build's tag) from the same output, so deleting needs neither
# the template nor the manifest, only the AWS CLI.
set -euo pipefail
export AWS_PAGER=''

log() { printf 'jit-runners ami: %s\n' "$*" >&2; }

need_aws() {
	command -v aws >/dev/null 2>&1 && return 0
	log "the AWS CLI (aws) is not on PATH: it is needed to deregister $1"
	return 1
}

# deregister_image ID deregisters the AMI and deletes its snapshots. An AMI
# that is already gone is fine.
deregister_image() {
	local id=$1 out snap
	if ! out=$(aws ec2 describe-images --region "$AWS_REGION" --image-ids "$id" \
		--query 'Images[].BlockDeviceMappings[].Ebs.SnapshotId' --output text 2>&1); then
		case $out in
		*InvalidAMIID.NotFound* | *InvalidAMIID.Unavailable*)
			log "$id is already gone"
			return 0
			;;
		esac
		log "describe $id: $out"
		return 1
	fi
	aws ec2 deregister-image --region "$AWS_REGION" --image-id "$id" >/dev/null
	log "deregistered $id in $AWS_REGION"
	for snap in $out; do
		[[ $snap == snap-* ]] || continue
		aws ec2 delete-snapshot --region "$AWS_REGION" --snapshot-id "$snap"
		log "deleted $snap"
	done
}

# deregister_build ID removes every AMI and snapshot of this account in
# AWS_REGION tagged jitr:build-id=ID (what a failed build leaves behind).
deregister_build() {
	local build=$1 id snap
	for id in $(aws ec2 describe-images --region "$AWS_REGION" --owners self \
		--filters "Name=tag:jitr:build-id,Values=$build" --query 'Images[].ImageId' --output text); do
		deregister_image "$id"
	done
	for snap in $(aws ec2 describe-snapshots --region "$AWS_REGION" --owner-ids self \
		--filters "Name=tag:jitr:build-id,Values=$build" --query 'Snapshots[].SnapshotId' --output text); do
		aws ec2 delete-snapshot --region "$AWS_REGION" --snapshot-id "$snap"
		log "deleted $snap"
	done
}

# last_ami prints the AMI id on the last line of $1, or nothing.
last_ami() {
	local last
	last=$(printf '%s\n' "$1" | sed '/^[[:space:]]*$/d' | tail -n 1 | tr -d '[:space:]')
	[[ $last =~ ^ami-[0-9a-f]+$ ]] && printf '%s\n' "$last"
	return 0
}

# after_build cleans up when a build fails: Packer removes what it created
# when a step fails, but not an AMI whose manifest this script cannot read.
after_build() {
	local status=$1 build=$2
	((status != 0)) || return 0
	if need_aws "the leftovers of build $build"; then
		log "build $build failed: removing what carries its tag"
		deregister_build "$build" || log "cleanup failed: make ami.deregister AMI_BUILD_ID=$build AMI_REGION=$AWS_REGION"
	else
		log "whatever the build left carries tag jitr:build-id=$build: make ami.deregister AMI_BUILD_ID=$build AMI_REGION=$AWS_REGION"
	fi
}

build() {
	local packer=${JITR_PACKER:-packer} source=${JITR_PACKER_SOURCE:?} manifest=${PKR_VAR_manifest_path:?}
	local build_log="build-$source.log" artifacts artifact id=''
	if ! command -v "$packer" >/dev/null 2>&1; then
		log "packer ($packer) not found: run 'make ami.tools' in the jit-runners checkout, or put packer on PATH and its amazon plugin in PACKER_PLUGIN_PATH (docs/ami.md)"
		return 1
	fi
	cd "${JITR_PACKER_DIR:?}"
	# Global: the EXIT trap reads it after build has returned.
	build_id="${JITR_BUILD_NAME:?}-$(date -u +%Y%m%dT%H%M%SZ)-$RANDOM"
	# The manifest post-processor appends to an existing file.
	rm -f "$manifest"
	trap 'after_build $? "$build_id"' EXIT
	log "packer build $source in $AWS_REGION, build id $build_id; log: $PWD/$build_log"
	if ! "$packer" build -color=false -only="jit-runner.amazon-ebs.$source" -var "build_id=$build_id" . >"$build_log" 2>&1; then
		tail -n 40 "$build_log" >&2
		log "packer build failed; the whole log: $PWD/$build_log"
		return 1
	fi
	# "artifact_id": "eu-west-1:ami-0123...,us-east-1:ami-...": this region's.
	artifacts=$(sed -n 's/.*"artifact_id"[[:space:]]*:[[:space:]]*"\([^"]*\)".*/\1/p' "$manifest" | tail -n 1)
	for artifact in ${artifacts//,/ }; do
		if [[ ${artifact%%:*} == "$AWS_REGION" ]]; then
			id=${artifact#*:}
		fi
	done
	if [[ ! $id =~ ^ami-[0-9a-f]+$ ]]; then
		log "no AMI of $AWS_REGION in $PWD/$manifest (artifacts: ${artifacts:-none})"
		return 1
	fi
	log "built $id"
	printf 'jitr:build-id=%s\n%s\n' "$build_id" "$id"
}

# reuse answers an update that changed no trigger (a new machine, another
# PACKER_PLUGIN_PATH, a new version of this script): the AMI stays.
reuse() {
	local out=${PULUMI_COMMAND_STDOUT:-}
	if [[ -z $(last_ami "$out") ]]; then
		log "the last build printed no AMI id; rebuild with: pulumi up --replace <this resource's URN>"
		return 1
	fi
	printf '%s\n' "$out"
}

delete() {
	local out=${PULUMI_COMMAND_STDOUT:-} id build
	id=$(last_ami "$out")
	build=$(printf '%s\n' "$out" | sed -n 's/^jitr:build-id=//p' | tail -n 1)
	if [[ -z $id && -z $build ]]; then
		log "no AMI recorded: nothing to deregister"
		return 0
	fi
	need_aws "${id:-build $build}" || return 1
	[[ -z $id ]] || deregister_image "$id"
	[[ -z $build ]] || deregister_build "$build"
}
