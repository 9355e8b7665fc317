import os
import subprocess
import sys
import tempfile
import textwrap
from pathlib import Path

import pytest

os.environ["HF_HUB_OFFLINE"] = "1"
os.environ.setdefault("TQDM_DISABLE", "1")
# One torch thread per test process: two xdist workers share two cores, and a fixed count keeps
# two runs of one manifest byte-identical (torch's CPU results depend on it; synth.threads).
os.environ["OMP_NUM_THREADS"] = "1"
# Trained pixel heads are cached here, not in the user's ~/.cache/synth.
os.environ["SYNTH_CACHE_DIR"] = tempfile.mkdtemp(prefix="synth-test-cache-")

TESTS = Path(__file__).parent
sys.path.insert(0, str(TESTS))


BENCH = TESTS.parent / "bench"


def bench_module(name: str):
    """A bench script (bench/NAME.py) imported as a module, for testing its pieces."""
    import importlib.util

    spec = importlib.util.spec_from_file_location(name, BENCH / f"{name}.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def write_manifest(folder: Path, body: str, name: str = "manifest.toml") -> Path:
    path = folder / name
    path.write_text(textwrap.dedent(body))
    return path


def tiny_fit_manifest(folder: Path, num_samples: int, batch_size: int, fit: str = "", stages: str = "") -> Path:
    """A `synth fit` manifest on 16x16 shapes scenes with a tiny UNet; `fit` adds [fit] lines,
    `stages` adds [[stage]] tables after the shapes source."""
    return write_manifest(folder, f"""
[dataset]
num_samples = {num_samples}
[run]
batch_size = {batch_size}
[[stage]]
name = "shapes"
size = 16
{stages}
[fit]
output = "model"
block_out_channels = [8, 16]
attention_levels = [1]
norm_num_groups = 4
{fit}
""")


def synth(*args, env=None, cwd=None, timeout=300):
    """Run the real CLI in a subprocess; returns CompletedProcess (text)."""
    full_env = {**os.environ, **(env or {})}
    return subprocess.run(
        [sys.executable, "-m", "synth", *map(str, args)],
        capture_output=True,
        text=True,
        env=full_env,
        cwd=cwd,
        timeout=timeout,
    )


DIFFUSERS_MANIFEST = """
[dataset]
name = "d"
output = "{output}"
num_samples = {n}
shard_size = {shard}
{dataset}

[run]
batch_size = {batch}

[generator]
name = "diffusers"
model = "{model}"
steps = {steps}
{generator}
{stages}
"""


def diffusers_manifest(folder: Path, model, dataset="", generator="", stages="", n=6, shard=4, batch=3, name="m.toml", output="out", steps=3) -> Path:
    """A manifest for a (tiny) diffusers model: shards d-NNNNNN.tar, 3 sampling steps by default."""
    body = DIFFUSERS_MANIFEST.format(output=output, n=n, shard=shard, dataset=dataset, batch=batch, model=model, generator=generator, stages=stages, steps=steps)
    return write_manifest(folder, body, name)


TOY_MANIFEST = """
[dataset]
name = "toy"
output = "out"
num_samples = {n}
shard_size = {shard}
classes = ["circle", "square", "triangle"]

[run]
batch_size = {batch}

[generator]
name = "toy"
size = 32
{extra}
"""


def toy_manifest(folder: Path, n=20, shard=8, batch=4, extra="", name="manifest.toml") -> Path:
    return write_manifest(folder, TOY_MANIFEST.format(n=n, shard=shard, batch=batch, extra=extra), name)


@pytest.fixture(scope="session")
def models(tmp_path_factory):
    """Tiny random-weight diffusers pipelines saved to a local folder once per session."""
    from tiny_models import build_ddpm, build_stable_diffusion

    root = tmp_path_factory.mktemp("models")
    return {
        "ddpm": build_ddpm(root / "ddpm"),
        "ddpm_cls": build_ddpm(root / "ddpm_cls", num_class_embeds=3),
        "sd": build_stable_diffusion(root / "sd"),
    }


@pytest.fixture(scope="session")
def example_plugin(tmp_path_factory):
    """The throw-away third-party plugin, pip-installed into its own target folder.

    Returns the environment a subprocess needs to see it (PYTHONPATH) and allow it.
    """
    target = tmp_path_factory.mktemp("site")
    subprocess.run(
        [sys.executable, "-m", "pip", "install", "-q", "--no-deps", "--no-build-isolation", "--no-index", "--target", str(target), str(TESTS / "plugin_example")],
        check=True,
        capture_output=True,
    )
    return {"PYTHONPATH": str(target), "SYNTH_LOAD_PLUGINS": "example"}


@pytest.fixture
def with_example_plugin(example_plugin, monkeypatch):
    """The example plugin importable and allowed in this process too."""
    import importlib

    monkeypatch.syspath_prepend(example_plugin["PYTHONPATH"])
    monkeypatch.setenv("SYNTH_LOAD_PLUGINS", "example")
    importlib.invalidate_caches()
    return example_plugin
