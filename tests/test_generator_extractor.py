"""The `generator` extractor: the run's own generator's pooled features, for select, dedup and
the other extractor-driven stages, with no second model."""

import numpy as np
import pytest

from conftest import synth, write_manifest
from synth.reading import iter_samples

POOL = """
[dataset]
name = "pick"
output = "out"
num_samples = {n}
shard_size = {shard}
seed = 3
classes = ["background", "circle", "square", "triangle"]
[run]
batch_size = {batch}
{generator}
[[stage]]
name = "shapes"
split = "val"
[[stage]]
name = "select"
keep = 5
extractor = {extractor}
"""
GENERATOR = '[generator]\nname = "diffusers"\nmodel = "builtin:shapes-32"\nsteps = 4\n'


def _pool(tmp_path, n=24, shard=8, batch=8, extractor='"generator"', generator=GENERATOR, name="m.toml"):
    return write_manifest(tmp_path, POOL.format(n=n, shard=shard, batch=batch, generator=generator, extractor=extractor), name)


@pytest.fixture(scope="module")
def extractor(tmp_path_factory):
    """The extractor as a stage gets it, on the shipped shapes model's pipeline."""
    from synth.manifest import load_manifest
    from synth.pipeline import Pipeline
    from synth_filters.generator_features import GeneratorFeatures

    pipe = Pipeline(load_manifest(_pool(tmp_path_factory.mktemp("pool"))))
    pipe.generator.setup()
    ex = GeneratorFeatures(GeneratorFeatures.Config(), pipe.context)
    ex.setup()
    return ex


def test_a_vector_depends_on_its_image_alone_and_finds_the_image_again(extractor):
    from synth_shapes.world import render_many

    images, _ = render_many(7, range(20), 32, 0.5, "test")
    feats = extractor.embed(images)
    levels = len(extractor.spec.blocks) * len(extractor.spec.timesteps)
    assert feats.shape[0] == 20 and feats.dtype == np.float32
    np.testing.assert_allclose(np.linalg.norm(feats, axis=1), 1.0, atol=1e-5)  # every block weighs 1/levels
    assert len(extractor._pooled(images[:1])) == levels
    # the same image gives the same vector whatever else is in its batch
    np.testing.assert_allclose(extractor.embed(images[5:6])[0], feats[5], rtol=1e-4, atol=1e-5)
    # the features hold the image's content: a slightly noisy copy's nearest neighbour is its original
    rng = np.random.default_rng(0)
    noisy = np.clip(images.astype(np.int16) + rng.integers(-6, 7, images.shape), 0, 255).astype(np.uint8)
    d = ((extractor.embed(noisy)[:, None, :] - feats[None]) ** 2).sum(-1)
    assert (d.argmin(1) == np.arange(20)).all()


def test_the_toy_generator_has_no_features_and_says_so(tmp_path):
    toy = '[generator]\nname = "toy"\nsize = 32\n'
    res = synth("run", _pool(tmp_path, extractor='"generator"', generator=toy))
    assert res.returncode == 2, res.stderr
    (line,) = res.stderr.strip().splitlines()
    assert line.endswith("m.toml: stage[1].extractor.name: extractor 'generator' needs a generator with per-pixel features; 'toy' has none"), line


def test_select_picks_with_the_generators_features_whatever_the_batches(tmp_path, extractor):
    from synth.selection import k_center
    from synth_shapes.world import render_many

    assert synth("run", "-q", _pool(tmp_path)).returncode == 0
    keys = [s["__key__"] for t in sorted((tmp_path / "out").glob("*.tar")) for s in iter_samples(t)]
    # the run's picks are k-center's on this extractor's vectors of the 24 scenes (seed 3, as the manifest)
    images, _ = render_many(3, range(24), 32, 0.5, "val")
    picks = k_center(extractor.embed(images), np.arange(24), 5)
    assert sorted(keys) == [f"s{i:08d}" for i in sorted(picks)]
    assert picks != list(range(5))
    other = write_manifest(tmp_path, POOL.format(n=24, shard=6, batch=5, generator=GENERATOR, extractor='"generator"').replace('"out"', '"b"'), "b.toml")
    assert synth("run", "-q", other).returncode == 0
    assert [s["__key__"] for t in sorted((tmp_path / "b").glob("*.tar")) for s in iter_samples(t)] == keys


@pytest.mark.parametrize(
    "extractor, generator, expected",
    [
        ('"generator"', "", "stage[1].extractor.name: extractor 'generator' reads the run's own generator: add a [generator] table"),
        ('{ name = "generator", blocks = ["up9"] }', GENERATOR, "stage[1].extractor.blocks: unknown block 'up9'"),
        ('{ name = "generator", timesteps = [5000] }', GENERATOR, "stage[1].extractor.timesteps: 5000 is outside 0..999"),
        ('{ name = "generator", batch_size = 0 }', GENERATOR, "stage[1].extractor.batch_size: Input should be greater than or equal to 1"),
    ],
)
def test_generator_extractor_bad_input_is_one_line(tmp_path, extractor, generator, expected):
    res = synth("run", _pool(tmp_path, extractor=extractor, generator=generator))
    assert res.returncode == 2, res.stderr
    (line,) = res.stderr.strip().splitlines()
    assert expected in line, line
    assert not (tmp_path / "out").exists() or not list((tmp_path / "out").glob("*.tar"))
