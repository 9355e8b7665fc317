import json
from pathlib import Path

import pytest
from click.testing import CliRunner

from conftest import toy_manifest, write_manifest
from synth.cli import main
from synth.errors import ManifestError, UsageError
from synth.manifest import load_manifest


def test_valid_manifest_loads_with_defaults(tmp_path):
    m = load_manifest(toy_manifest(tmp_path))
    assert m.dataset.num_samples == 20
    assert [s.name for s in m.stages] == ["generate"]  # default source stage
    assert m.generator.config.size == 32
    assert m.output_dir() == (tmp_path / "out").resolve()  # relative to the manifest's folder


def test_hash_ignores_output_and_workers_but_not_content(tmp_path):
    a = load_manifest(toy_manifest(tmp_path, name="a.toml"))
    b_path = toy_manifest(tmp_path, name="b.toml")
    b_path.write_text(b_path.read_text().replace('output = "out"', 'output = "elsewhere"').replace("[run]", "[run]\nworkers = 1"))
    c = load_manifest(toy_manifest(tmp_path, n=21, name="c.toml"))
    assert a.hash == load_manifest(b_path).hash
    assert a.hash != c.hash


def test_all_errors_reported_at_once_with_locations(tmp_path):
    path = write_manifest(
        tmp_path,
        """
        [dataset]
        num_samples = -1
        colour = "red"

        [generator]
        name = "toy"
        size = 2

        [[stage]]
        name = "generate"

        [[stage]]
        name = "threshold"
        score = "contrast"
        min = 0.5
        max = 0.1
        """,
    )
    with pytest.raises(ManifestError) as e:
        load_manifest(path)
    problems = e.value.problems
    assert any(p.startswith("dataset.num_samples:") and "greater than 0" in p for p in problems)
    assert "dataset.colour: unknown field" in problems
    assert any(p.startswith("generator.size:") for p in problems)
    assert any(p.startswith("stage[1]") and "min (0.5) is above max (0.1)" in p for p in problems)
    assert len(problems) == 4


def test_unknown_stage_suggests_the_closest_and_lists_installed(tmp_path):
    path = toy_manifest(tmp_path, extra='[[stage]]\nname = "generate"\n[[stage]]\nname = "image_stat"\n')
    with pytest.raises(ManifestError) as e:
        load_manifest(path)
    (msg,) = e.value.problems
    assert msg.startswith("stage[1].name: unknown stage 'image_stat'; did you mean 'image_stats'?")
    assert "installed:" in msg and "threshold" in msg


def test_unknown_generator(tmp_path):
    path = write_manifest(tmp_path, '[dataset]\nnum_samples = 1\n[generator]\nname = "difusers"\n')
    with pytest.raises(ManifestError, match="generator.name: unknown generator 'difusers'; did you mean 'diffusers'"):
        load_manifest(path)


def test_pipeline_rules(tmp_path):
    path = toy_manifest(tmp_path, extra='[[stage]]\nname = "image_stats"\n[[stage]]\nname = "generate"\n')
    with pytest.raises(ManifestError) as e:
        load_manifest(path)
    assert any("first stage must be a source stage" in p for p in e.value.problems)
    assert any("only the first stage may be a source" in p for p in e.value.problems)
    no_gen = write_manifest(tmp_path, '[dataset]\nnum_samples = 1\n[[stage]]\nname = "generate"\n', "nogen.toml")
    with pytest.raises(ManifestError, match="needs a \\[generator\\] table"):
        load_manifest(no_gen)


def test_templates_need_classes(tmp_path):
    path = write_manifest(
        tmp_path,
        '[dataset]\nnum_samples = 1\n[generator]\nname = "diffusers"\nmodel = "x"\ntemplates = ["a {cls}"]\n',
    )
    with pytest.raises(ManifestError, match="generator: templates need class names"):
        load_manifest(path)


def test_toml_syntax_error_names_line_and_column(tmp_path):
    path = write_manifest(tmp_path, "[dataset]\nnum_samples = \n")
    with pytest.raises(UsageError, match=r"invalid TOML: .*line 2, column 15"):
        load_manifest(path)


def test_missing_manifest(tmp_path):
    with pytest.raises(UsageError, match="no such manifest file"):
        load_manifest(tmp_path / "nope.toml")


def test_validate_command_exit_codes(tmp_path):
    runner = CliRunner()
    ok = runner.invoke(main, ["validate", str(toy_manifest(tmp_path))])
    assert ok.exit_code == 0 and "valid" in ok.output
    bad = write_manifest(tmp_path, "[dataset]\nnum_samples = 0\nextra = 1\n", "bad.toml")
    res = runner.invoke(main, ["validate", str(bad)])
    assert res.exit_code == 2
    assert "dataset.num_samples" in res.output and "dataset.extra: unknown field" in res.output
    assert "Traceback" not in res.output


def test_schema_covers_engine_and_plugin_configs(tmp_path):
    import jsonschema

    res = CliRunner().invoke(main, ["schema"])
    assert res.exit_code == 0
    schema = json.loads(res.output)
    text = json.dumps(schema)
    for needle in ("num_samples", "shard_size", "guidance_scale", "templates", '"threshold"', '"toy"'):
        assert needle in text
    jsonschema.Draft202012Validator.check_schema(schema)
    good = {"dataset": {"num_samples": 3}, "generator": {"name": "toy", "size": 32}, "stage": [{"name": "generate"}]}
    jsonschema.validate(good, schema)
    with pytest.raises(jsonschema.ValidationError):
        jsonschema.validate({**good, "generator": {"name": "toy", "size": 2}}, schema)
    with pytest.raises(jsonschema.ValidationError):
        jsonschema.validate({**good, "stage": [{"name": "generate", "bogus": 1}]}, schema)


def test_every_shipped_manifest_is_valid():
    from synth.manifest import load_manifest

    root = Path(__file__).resolve().parents[1] / "manifests"
    found = sorted(root.glob("*.toml"))
    assert len(found) >= 6
    for path in found:
        load_manifest(path)  # raises ManifestError with every problem listed


def test_schema_accepts_every_shipped_manifest_fit_included():
    """The schema describes every manifest synth accepts, [fit] tables too (register_tables)."""
    import tomllib

    import jsonschema

    schema = json.loads(CliRunner().invoke(main, ["schema"]).output)
    assert "fit" in schema["properties"]
    root = Path(__file__).resolve().parents[1] / "manifests"
    fits = 0
    for path in sorted(root.glob("*.toml")):
        data = tomllib.loads(path.read_text())
        jsonschema.validate(data, schema)
        fits += "fit" in data
    assert fits >= 2
    bad = tomllib.loads((root / "fit-shapes-32.toml").read_text())
    bad["fit"]["lr_schedule"] = "sawtooth"
    with pytest.raises(jsonschema.ValidationError):
        jsonschema.validate(bad, schema)


def test_validate_checks_the_fit_table(tmp_path):
    m = write_manifest(tmp_path, '[dataset]\nnum_samples = 2\n[[stage]]\nname = "shapes"\n[fit]\noutput = "x"\nlr_schedule = "sawtooth"\nstepz = 3\n')
    with pytest.raises(ManifestError) as e:
        load_manifest(m)
    assert any(p.startswith("fit.lr_schedule: Input should be 'constant' or 'cosine'") for p in e.value.problems)
    assert "fit.stepz: unknown field" in e.value.problems


def test_a_switched_off_stage_is_left_out_but_still_validated(tmp_path):
    stages = '[[stage]]\nname = "generate"\n[[stage]]\nname = "image_stats"\n[[stage]]\nname = "threshold"\nscore = "contrast"\nmin = 0.1\nenabled = false\n'
    m = load_manifest(toy_manifest(tmp_path, extra=stages))
    assert [s.name for s in m.stages] == ["generate", "image_stats"]
    on = load_manifest(toy_manifest(tmp_path, extra=stages.replace("enabled = false", "enabled = true"), name="on.toml"))
    assert [s.name for s in on.stages] == ["generate", "image_stats", "threshold"] and on.hash != m.hash
    # the plan is checked as it will run: the filter's score needs image_stats switched on
    with pytest.raises(ManifestError) as e:
        load_manifest(toy_manifest(tmp_path, extra=stages.replace("enabled = false", "").replace('"image_stats"', '"image_stats"\nenabled = false'), name="off.toml"))
    assert len(e.value.problems) == 1 and e.value.problems[0].startswith("stage[2]: score 'contrast' is recorded by no earlier stage")
    # what the switch cannot hide: a bad value of its own, a typo in the stage it switches off
    with pytest.raises(ManifestError) as e:
        load_manifest(toy_manifest(tmp_path, extra=stages.replace("enabled = false", 'enabled = "no"'), name="bad.toml"))
    assert e.value.problems == ["stage[2].enabled: must be true or false, got 'no'"]
    with pytest.raises(ManifestError) as e:
        load_manifest(toy_manifest(tmp_path, extra=stages.replace("enabled = false", "enabled = false\ncolour = 1"), name="typo.toml"))
    assert e.value.problems == ["stage[2].colour: unknown field"]
