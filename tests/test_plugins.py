"""Plugins: a third-party package installed into the environment, the allowlist, the hooks."""

import inspect
import json

import numpy as np

from conftest import synth, toy_manifest
from synth import hookspecs
from synth.plugins import load_registry

PIPELINE = """
[[stage]]
name = "generate"
[[stage]]
name = "bright_seg"
levels = 4
[[stage]]
name = "mirror"
"""


def test_third_party_plugin_is_listed_only_when_allowed(example_plugin):
    env = {"PYTHONPATH": example_plugin["PYTHONPATH"]}
    res = synth("plugins", "--json", env={**env, "SYNTH_LOAD_PLUGINS": ""})
    assert res.returncode == 0
    names = {p["name"] for p in json.loads(res.stdout)}
    assert names == {"basic", "toy", "diffusers", "shapes", "pixelhead", "ray", "operators", "filters", "sam", "attention", "classify", "optimise", "discover", "regionclass"}  # installed but not allowed: not even imported
    res = synth("plugins", "--json", env=example_plugin)
    plugins = {p["name"]: p for p in json.loads(res.stdout)}
    ex = plugins["example"]
    assert ex["version"] == "0.3.1" and ex["distribution"] == "synth-example-plugin" and not ex["builtin"]
    assert ex["stages"] == ["mirror", "bright_seg", "boom", "nap", "bright_class"] and ex["models"] == ["example-model"]
    assert plugins["diffusers"]["generators"] == ["diffusers"] and plugins["diffusers"]["builtin"]
    text = synth("plugins", env=example_plugin).stdout
    assert "example 0.3.1 (third-party" in text and "stages: mirror, bright_seg, boom, nap, bright_class" in text


def test_not_allowed_plugin_stage_is_unknown(tmp_path, example_plugin):
    m = toy_manifest(tmp_path, extra=PIPELINE)
    res = synth("validate", m, env={"PYTHONPATH": example_plugin["PYTHONPATH"]})
    assert res.returncode == 2 and "unknown stage 'bright_seg'" in res.stderr


def test_manifest_plugins_list_allows_a_plugin(tmp_path, example_plugin):
    m = toy_manifest(tmp_path, extra=PIPELINE)
    m.write_text('plugins = ["example"]\n' + m.read_text())
    assert synth("validate", m, env={"PYTHONPATH": example_plugin["PYTHONPATH"]}).returncode == 0
    m.write_text(m.read_text().replace('plugins = ["example"]', 'plugins = ["exampel"]'))
    res = synth("validate", m, env={"PYTHONPATH": example_plugin["PYTHONPATH"]})
    assert res.returncode == 2 and "plugin 'exampel' (named in the manifest's plugins) is not installed" in res.stderr


def test_synth_run_uses_the_third_party_stages(tmp_path, example_plugin):
    import webdataset as wds

    m = toy_manifest(tmp_path, n=6, shard=4, batch=3, extra=PIPELINE)
    res = synth("run", m, env=example_plugin)
    assert res.returncode == 0, res.stderr
    out = tmp_path / "out"
    info = json.loads((out / "dataset.json").read_text())
    assert info["num_samples"] == 12 and info["plugins"]["example"] == "0.3.1"
    assert info["fields"] == ["cls", "json", "latent.npy", "png", "seg.png"]

    # seg.png must be decoded by its own handler first, or "rgb8" turns class ids into colours.
    def seg_handler(key, data):
        if key.endswith("seg.png"):
            import io

            from PIL import Image

            return np.asarray(Image.open(io.BytesIO(data)))
        return None

    tars = sorted(str(p) for p in out.glob("*.tar"))
    samples = list(wds.WebDataset(tars, shardshuffle=False).decode(seg_handler, "rgb8"))
    assert len(samples) == 12
    by_key = {s["__key__"]: s for s in samples}
    for i in range(6):
        orig, mirrored = by_key[f"s{i:08d}"], by_key[f"s{i:08d}_m"]
        np.testing.assert_array_equal(mirrored["png"], orig["png"][:, ::-1])
        seg = orig["seg.png"]
        assert seg.dtype == np.uint8 and seg.ndim == 2 and seg.max() <= 3
        expected = np.minimum(orig["png"].mean(axis=-1) * 4 / 256.0, 3).astype(np.uint8)
        np.testing.assert_array_equal(seg, expected)
        np.testing.assert_array_equal(mirrored["seg.png"], seg[:, ::-1])
        assert mirrored["json"]["class"] == orig["json"]["class"] == mirrored["cls"]  # inherited
        assert mirrored["json"]["lineage"][-1] == {"op": "mirror", "parent": f"s{i:08d}"}
        assert mirrored["json"]["plugins"]["example"] == "0.3.1"
        np.testing.assert_array_equal(mirrored["latent.npy"], orig["latent.npy"])


def test_builtin_model_alias_resolves(with_example_plugin):
    reg = load_registry()
    assert reg.resolve_model("builtin:example-model") == "/nonexistent/example-model"
    assert reg.resolve_model("org/name") == "org/name"


def test_every_hook_is_documented_and_implemented_somewhere(with_example_plugin):
    hooks = [name for name, fn in inspect.getmembers(hookspecs, inspect.isfunction) if name.startswith("register_")]
    assert sorted(hooks) == ["register_classifiers", "register_commands", "register_executors", "register_extractors", "register_generators", "register_models", "register_probes", "register_report_sections", "register_stages", "register_tables", "register_tasks"]
    for name in hooks:
        doc = getattr(hookspecs, name).__doc__ or ""
        assert len(doc.strip()) > 40, f"hook {name} has no real docstring"
    reg = load_registry()
    provided = {"register_generators": reg.generators, "register_stages": reg.stages, "register_models": reg.models, "register_tables": reg.tables, "register_executors": reg.executors, "register_extractors": reg.extractors, "register_classifiers": reg.classifiers, "register_tasks": reg.tasks, "register_probes": reg.probes, "register_report_sections": reg.report_sections}
    for name in hooks:
        impls = getattr(reg.plugin_manager.hook, name).get_hookimpls()
        assert impls, f"no loaded plugin implements {name}"
        if name in provided:
            assert provided[name], f"{name} registered nothing"
    from synth.cli import main

    assert "fit" in main.commands  # register_commands: the diffusers plugin adds `synth fit`


def test_every_registered_stage_and_generator_has_a_config_and_doc():
    reg = load_registry()
    for table in (reg.generators, reg.stages):
        for name, cls in table.items():
            assert cls.name == name
            assert (cls.__doc__ or "").strip(), f"{name} has no docstring"
            cls.Config.model_json_schema()


def test_core_imports_no_model_library():
    import subprocess
    import sys

    code = (
        "import sys, synth.cli, synth.engine, synth.manifest, synth.plugins, synth.inspect;"
        "from synth.plugins import load_registry; load_registry();"
        "bad = [m for m in ('torch', 'diffusers', 'transformers') if m in sys.modules];"
        "print(','.join(bad))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.strip()
    assert out == ""
