# Sourced by the lent-GPU scripts: install what the GPU image lacks from wheels carried in .whl/
# (see the device notes), then synth itself, so that `python3 -m synth` and the benches run.
# The image (Python 3.12, torch, numpy, pillow, click, pluggy, safetensors, huggingface-hub, ...)
# lacked these on 2026-11-26; fetch them here, in the repository root, and carry ".whl":
#   echo /.whl/ >> .git/info/exclude
#   for p in diffusers==0.42.1 pydantic==2.14.4 pydantic_core==2.50.5 annotated-types typing-inspection \
#            typing_extensions webdataset==1.0.2 braceexpand tomli-w importlib_metadata; do
#     python -m pip download --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
#       --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64 -d .whl "$p"; done
if [ -d .whl ]; then
  python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl
  export PYTHONPATH=/tmp/site
fi
if ! python3 -c "import synth_shapes" 2>/dev/null; then
  python3 -m pip install -q --no-index --no-deps --no-build-isolation --no-compile --upgrade --target /tmp/site .
  export PYTHONPATH=/tmp/site
fi
export HF_HUB_OFFLINE=1 PYTHONUNBUFFERED=1
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader || true
python3 -c "import torch, diffusers, pydantic, synth_shapes; print('torch', torch.__version__, 'cuda', torch.cuda.is_available(), 'diffusers', diffusers.__version__)"
