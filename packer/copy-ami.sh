#!/usr/bin/env bash
# copy-ami.sh copies an AMI from its region to other regions with its name,
# description and tags, waits for each copy, and shares the copies publicly
# when asked (`make ami.copy AMI_ID=ami-...` passes the regions and the
# sharing from the template's variables).
#
# Usage: copy-ami.sh [--public] SOURCE_REGION AMI_ID REGION...
set -euo pipefail

die() {
	printf 'copy-ami: %s\n' "$*" >&2
	exit 1
}

public=false
if [[ ${1:-} == --public ]]; then
	public=true
	shift
fi
(($# >= 2)) || die "usage: copy-ami.sh [--public] SOURCE_REGION AMI_ID REGION..."
source_region=$1 ami=$2
shift 2
[[ $ami =~ ^ami-[0-9a-f]{8,17}$ ]] || die "not an AMI id: '${ami}'"
export AWS_PAGER=''

info=$(aws ec2 describe-images --region "$source_region" --image-ids "$ami" \
	--query 'Images[0].[Name, Description]' --output text) || die "cannot describe ${ami} in ${source_region}"
IFS=$'\t' read -r name description <<<"$info"
[[ -n $name && $name != None ]] || die "${ami} not found in ${source_region}"

declare -A copies=()
for region in "$@"; do
	[[ $region != "$source_region" ]] || continue
	copies[$region]=$(aws ec2 copy-image --region "$region" --source-region "$source_region" --source-image-id "$ami" \
		--name "$name" --description "$description" --copy-image-tags --query ImageId --output text)
	printf 'copy-ami: %s -> %s %s\n' "$ami" "$region" "${copies[$region]}"
done

for region in "${!copies[@]}"; do
	id=${copies[$region]}
	# Each wait gives up after 10 minutes; a large copy can take longer.
	for attempt in 1 2 3 4 5 6; do
		if aws ec2 wait image-available --region "$region" --image-ids "$id"; then
			break
		fi
		((attempt < 6)) || die "${id} in ${region} is not available after an hour"
	done
	shared=private
	if $public; then
		aws ec2 modify-image-attribute --region "$region" --image-id "$id" --launch-permission 'Add=[{Group=all}]'
		shared=public
	fi
	printf 'copy-ami: %s %s available, %s\n' "$region" "$id" "$shared"
done
