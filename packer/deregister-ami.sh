#!/usr/bin/env bash
# deregister-ami.sh deregisters test AMIs and deletes their snapshots: every
# AMI in a Packer manifest (artifact ids "region:ami-...,region:ami-..."),
# and every AMI and snapshot of this account tagged jitr:build-id=BUILD_ID in
# REGION (what a build that failed after creating its AMI leaves behind).
# Missing manifests and already deleted images are fine: CI runs this always.
#
# Usage: deregister-ami.sh [--manifest FILE] [--build-id ID --region REGION]
set -euo pipefail

die() {
	printf 'deregister-ami: %s\n' "$*" >&2
	exit 1
}

manifest='' build_id='' region=''
while (($#)); do
	case $1 in
	--manifest) manifest=${2:?--manifest needs a file} ;;
	--build-id) build_id=${2:?--build-id needs an id} ;;
	--region) region=${2:?--region needs a region} ;;
	*) die "usage: deregister-ami.sh [--manifest FILE] [--build-id ID --region REGION]" ;;
	esac
	shift 2
done
[[ -z $build_id || -n $region ]] || die "--build-id needs --region"
export AWS_PAGER=''

images=() # "region ami-id"
if [[ -n $manifest ]]; then
	if [[ -f $manifest ]]; then
		while IFS=: read -r r id; do
			[[ -n $r && $id == ami-* ]] && images+=("$r $id")
		done < <(jq -r '.builds[].artifact_id | split(",")[]' "$manifest")
	else
		printf 'deregister-ami: no manifest %s\n' "$manifest"
	fi
fi
if [[ -n $build_id ]]; then
	while read -r id; do
		[[ -n $id ]] && images+=("$region $id")
	done < <(aws ec2 describe-images --region "$region" --owners self \
		--filters "Name=tag:jitr:build-id,Values=${build_id}" --query 'Images[].ImageId' --output text | tr '\t' '\n')
fi

status=0
declare -A seen=()
for entry in "${images[@]}"; do
	[[ -z ${seen[$entry]:-} ]] || continue
	seen[$entry]=1
	read -r r id <<<"$entry"
	snapshots=$(aws ec2 describe-images --region "$r" --image-ids "$id" \
		--query 'Images[].BlockDeviceMappings[].Ebs.SnapshotId' --output text 2>/dev/null || true)
	if aws ec2 deregister-image --region "$r" --image-id "$id" >/dev/null; then
		printf 'deregister-ami: deregistered %s in %s\n' "$id" "$r"
	else
		status=1
	fi
	for snap in $snapshots; do
		[[ $snap == snap-* ]] || continue
		if aws ec2 delete-snapshot --region "$r" --snapshot-id "$snap"; then
			printf 'deregister-ami: deleted %s in %s\n' "$snap" "$r"
		else
			status=1
		fi
	done
done

if [[ -n $build_id ]]; then
	for snap in $(aws ec2 describe-snapshots --region "$region" --owner-ids self \
		--filters "Name=tag:jitr:build-id,Values=${build_id}" --query 'Snapshots[].SnapshotId' --output text); do
		if aws ec2 delete-snapshot --region "$region" --snapshot-id "$snap"; then
			printf 'deregister-ami: deleted tagged %s in %s\n' "$snap" "$region"
		else
			status=1
		fi
	done
fi
((${#images[@]})) || printf 'deregister-ami: no AMIs to deregister\n'
exit "$status"
