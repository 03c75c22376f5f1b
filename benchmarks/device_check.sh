#!/usr/bin/env bash
# The prepared GPU check of issue 16 (benchmarks/device_check.py): on one GPU (meant to fit in 6 minutes;
# not yet timed on one),
# pretraining throughput at 224 px with resnet50 in bf16 against lightly's plain loop, every pipeline stage
# once (one epoch each) through dvc repro, and retailnb predict --device cuda. Run from the repository root:
#   bash benchmarks/device_check.sh [extra device_check.py options]
set -euo pipefail
cd "$(dirname "$0")/.."
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader || echo "nvidia-smi: not available"
exec python benchmarks/device_check.py --device cuda "$@"
