#!/usr/bin/env bash
# A lent GPU's whole session for the shapes model (issue 9), as one command:
#   bash bench/gpu_fit_shapes.sh            (MINUTES=7 MANIFEST=manifests/fit-shapes-32-gpu.toml)
# 1. installs what the GPU image lacks from wheels carried in .whl/ (see the device notes), and
#    synth itself, so that `python3 -m synth fit` runs unchanged;
# 2. measures steps/s per batch size with bench/fit_throughput.py and writes the fastest batch
#    and the steps that fit in MINUTES into the manifest's [fit], so the cosine schedule anneals
#    before the lease ends (max_minutes stays as a safety stop);
# 3. fits, then packs the pipeline into $OUT (weights split under 15 MB, the rest as one .tgz):
#    rebuild here with  cat unet.safetensors.part-* > .../unet/diffusion_pytorch_model.safetensors
set -euo pipefail
MINUTES=${MINUTES:-7}
BATCHES=${BATCHES:-128,256,512}
MANIFEST=${MANIFEST:-manifests/fit-shapes-32-gpu.toml}
OUT=${OUT:-out/gpu-fit}
mkdir -p "$OUT"
exec > >(tee -a "$OUT/session.log") 2>&1

source bench/gpu_env.sh
python3 -m synth fit --help >/dev/null

python3 bench/fit_throughput.py "$MANIFEST" --batch-sizes "$BATCHES" --steps 40 --minutes "$MINUTES" | tee "$OUT/throughput.txt"
python3 - "$MANIFEST" "$OUT/throughput.txt" "$MINUTES" <<'EOF'
import re, sys
from pathlib import Path
manifest, probe, minutes = Path(sys.argv[1]), Path(sys.argv[2]).read_text(), float(sys.argv[3])
batch, steps = re.search(r"best batch (\d+): .*; (\d+) steps in", probe.strip().splitlines()[-1]).groups()
steps = int(int(steps) * 0.95)  # checkpoints and grids take a little of the time
head, fit = manifest.read_text().split("\n[fit]\n")  # only the [fit] table's keys change
plan = {"batch_size": batch, "steps": str(steps), "max_minutes": f"{minutes * 1.1:.2f}",
        "checkpoint_every": str(max(500, steps // 4)), "warmup_steps": str(min(500, steps // 20))}
for key, value in plan.items():
    fit, n = re.subn(rf"(?m)^{key} = .*$", f"{key} = {value}", fit)
    assert n == 1, f"{manifest}: [fit] {key} not found once"
manifest.write_text(head + "\n[fit]\n" + fit)
print("planned:", plan)
EOF

python3 -m synth fit "$MANIFEST"

model=$(python3 - "$MANIFEST" <<'EOF'
import sys, tomllib
from pathlib import Path
m = Path(sys.argv[1]).resolve()
print((m.parent / tomllib.loads(m.read_text())["fit"]["output"]).resolve())
EOF
)
split -b 15M -d "$model/unet/diffusion_pytorch_model.safetensors" "$OUT/unet.safetensors.part-"
tar czf "$OUT/model-rest.tgz" -C "$(dirname "$model")" --exclude=checkpoints --exclude=diffusion_pytorch_model.safetensors "$(basename "$model")"
cp "$MANIFEST" "$OUT/manifest.toml"
sha256sum "$model/unet/diffusion_pytorch_model.safetensors"
ls -la "$OUT"
