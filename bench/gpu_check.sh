#!/usr/bin/env bash
# The one-command GPU check: `bash bench/gpu_check.sh OUT_DIR [--cpu-dry-run]`. Offline, ~8 min on an H100/H200,
# with the torch/triton already installed; see sdkernels/tools/gpu_check.py and the README's "GPU check".
set -uo pipefail
cd "$(dirname "$0")/.."
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}"
exec timeout 570 python -m sdkernels.tools.gpu_check "${@:-gpu_check_out}"
