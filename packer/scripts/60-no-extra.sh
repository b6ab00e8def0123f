#!/usr/bin/env bash
# 60-no-extra.sh: stands in for var.extra_script when none is given.
set -euo pipefail
printf 'jit-runner-ami: no extra_script given\n'
