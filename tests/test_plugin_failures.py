"""A plugin that cannot load never takes the command line down: one line naming it, exit 2 for
commands that need the plugins, and --help, `plugins` and `validate` still work and report it."""

from conftest import synth, toy_manifest

BROKEN = "plugin 'broken' (entry point broken = synth_example_plugin.broken) failed to load: RuntimeError: this plugin's dependency is missing"


def _env(example_plugin, allow):
    return {"PYTHONPATH": example_plugin["PYTHONPATH"], "SYNTH_LOAD_PLUGINS": allow}


def _no_traceback(res):
    assert "Traceback" not in res.stderr and "Traceback" not in res.stdout


def test_plugin_raising_on_import(tmp_path, example_plugin):
    env = _env(example_plugin, "example,broken")
    help_ = synth("--help", env=env)
    assert help_.returncode == 0 and "run" in help_.stdout and "fit" in help_.stdout
    assert f"Plugin problems (see `synth plugins`):\n  {BROKEN}\n" in help_.stdout
    _no_traceback(help_)

    plugins = synth("plugins", env=env)
    assert plugins.returncode == 0 and f"FAILED: {BROKEN}" in plugins.stdout
    assert "example 0.3.1 (third-party" in plugins.stdout  # the healthy plugins are still listed
    _no_traceback(plugins)

    # validate reports it together with the manifest's own problems
    m = toy_manifest(tmp_path)
    m.write_text(m.read_text().replace("batch_size = 4", "batch_size = 0"))
    res = synth("validate", m, env=env)
    assert res.returncode == 2 and BROKEN in res.stderr and "run.batch_size" in res.stderr
    _no_traceback(res)

    res = synth("run", toy_manifest(tmp_path, name="ok.toml"), env=env)
    assert res.returncode == 2
    assert res.stderr.strip().splitlines() == [f"synth: error: {tmp_path / 'ok.toml'}: {BROKEN}"]
    assert not (tmp_path / "out").exists()


def test_allowlisted_plugin_that_is_not_installed(tmp_path, example_plugin):
    res = synth("run", toy_manifest(tmp_path), env=_env(example_plugin, "nonexistent"))
    assert res.returncode == 2
    (line,) = res.stderr.strip().splitlines()
    assert "plugin 'nonexistent' (named in SYNTH_LOAD_PLUGINS) is not installed (installed: " in line
    assert "FAILED: plugin 'nonexistent'" in synth("plugins", env=_env(example_plugin, "nonexistent")).stdout


def test_stage_class_given_to_register_generators(tmp_path, example_plugin):
    res = synth("run", toy_manifest(tmp_path), env=_env(example_plugin, "example,badgen"))
    assert res.returncode == 2
    (line,) = res.stderr.strip().splitlines()
    assert (
        "plugin 'badgen' (entry point badgen = synth_example_plugin.badgen) failed in register_generators: "
        "RegistrationError: register_generators was given Mirror, which is not a synth.protocols.Generator subclass"
    ) in line


def test_stage_of_unknown_kind(tmp_path, example_plugin):
    res = synth("validate", toy_manifest(tmp_path), env=_env(example_plugin, "badkind"))
    assert res.returncode == 2
    (line,) = res.stderr.strip().splitlines()
    assert "plugin 'badkind'" in line and "stage 'odd' has kind 'transformer'; a stage's kind is one of source, transform, expand, filter, dataset" in line
