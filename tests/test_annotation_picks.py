"""Which images get labels (issue 36: the pick as a manifest field): `annotations.pick_from`
labels the `count` most varied of a source's first pick_from images, as the select stage's
greedy k-center would choose them, instead of its first `count`."""

import numpy as np

from conftest import synth

CLASSES = ["background", "circle", "square", "triangle"]
SOURCE = {"name": "shapes", "split": "train", "size": 32, "difficulty": 0.5}


def _context(tmp_path):
    from synth.plugins import load_registry
    from synth.protocols import RunContext

    return RunContext(seed=0, manifest_dir=tmp_path, classes=CLASSES, registry=load_registry(), quiet=True)


def test_pick_from_labels_the_k_center_picks_of_the_pool(tmp_path):
    from synth import extractors
    from synth.annotations import AnnotationsConfig, load_examples
    from synth.manifest import source_step
    from synth.selection import k_center

    ctx = _context(tmp_path)
    cfg = AnnotationsConfig(source=SOURCE, count=4, pick_from=40, pick_extractor="shapes")
    ex = load_examples(cfg, ctx, "stage 'pixelhead'")

    # the pool as the source gives it, and the picks the select stage would make in the same space
    step = source_step(ctx.registry, SOURCE, "pool")
    source = step.cls(step.config, ctx)
    source.setup()
    pool = source.produce(list(range(40)))
    feats = np.asarray(extractors.get(ctx, "shapes").embed(pool.images), np.float32)
    rows = sorted(k_center(feats, np.arange(40), 4))
    assert ex.keys == [pool.keys[r] for r in rows]
    assert np.array_equal(ex.images, pool.images[rows]) and np.array_equal(ex.masks, pool.seg[rows].astype(np.int64))
    # varied, not the first four; greedy k-center starts from the pool's first image
    assert ex.keys != pool.keys[:4] and ex.keys[0] == pool.keys[0]

    plain = load_examples(AnnotationsConfig(source=SOURCE, count=4), ctx, "stage 'pixelhead'")
    assert plain.keys == pool.keys[:4]
    assert ex.digest() != plain.digest()  # a head trained on the picks is cached under its own key


def _manifest(tmp_path, annotations: str):
    path = tmp_path / "m.toml"
    path.write_text(f"""
[dataset]
name = "picks"
num_samples = 4
seed = 0
classes = {CLASSES!r}
[generator]
name = "diffusers"
model = "builtin:shapes-32"
[[stage]]
name = "generate"
[[stage]]
name = "pixelhead"
annotations = {annotations}
""")
    return path


def test_bad_picks_are_one_line_errors(tmp_path):
    src = '{ name = "shapes", split = "train" }'
    cases = {
        f"{{ source = {src}, count = 8, pick_from = 4 }}": "pick_from (4) must be at least count (8)",
        '{ shards = "out", masks = "masks", pick_from = 40 }': "pick_from chooses among a source's images",
        f'{{ source = {src}, count = 8, pick_from = 40, pick_extractor = "nope" }}': "annotations.pick_extractor.name: unknown extractor 'nope'",
        f'{{ source = {src}, count = 8, pick_extractor = "shapes" }}': "pick_extractor says how pick_from chooses; give pick_from too",
    }
    for table, message in cases.items():
        r = synth("validate", _manifest(tmp_path, table))
        assert r.returncode == 2, table
        assert message in r.stderr and len(r.stderr.strip().splitlines()) == 1 and "Traceback" not in r.stderr, r.stderr


def test_pick_extractor_defaults_to_the_generator_only_with_pick_from():
    from synth.annotations import AnnotationsConfig

    assert AnnotationsConfig(source=SOURCE, count=4, pick_from=40).pick_extractor == "generator"
    # without pick_from nothing is picked, so no extractor is named (nor checked against the generator)
    assert AnnotationsConfig(source=SOURCE, count=4).pick_extractor is None
