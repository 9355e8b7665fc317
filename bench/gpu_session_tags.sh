#!/usr/bin/env bash
# One lent-GPU call for issues 33 and 34, within the device tool's 600 s per command:
#   1. fit builtin:shapes-32-tags (manifests/fit-shapes-32-tags-gpu.toml) with gpu_fit_shapes.sh,
#      which measures steps/s, plans the steps for MINUTES and packs the pipeline into $OUT;
#   2. with what is left of LIMIT seconds, bench/gpu_sd.py: real-size SD 1.5 / SDXL / SAM vit_h
#      architectures with random weights (images/s and peak memory).
#   MINUTES=5 LIMIT=585 bash bench/gpu_session_tags.sh      (carry .whl; see bench/gpu_env.sh)
set -euo pipefail
start=$(date +%s)
MINUTES=${MINUTES:-5} LIMIT=${LIMIT:-585}
OUT=${OUT:-out/gpu-session}
mkdir -p "$OUT"
MINUTES=$MINUTES BATCHES=${BATCHES:-512} MANIFEST=manifests/fit-shapes-32-tags-gpu.toml OUT="$OUT" bash bench/gpu_fit_shapes.sh
rm -f "$OUT/throughput.txt"  # its lines are in session.log too; $OUT returns at most 8 files
source bench/gpu_env.sh >/dev/null
left=$(( LIMIT - ($(date +%s) - start) ))
echo "gpu_sd: $left s left"
if [ "$left" -gt 30 ]; then
  timeout "$left" python3 bench/gpu_sd.py --batch-sizes 1,8 2>&1 | grep -v "should be kept in float32" | tee "$OUT/gpu_sd.txt" || echo "gpu_sd stopped at the limit" | tee -a "$OUT/gpu_sd.txt"
fi
