"""The core names no plugin: first-party plugins come from synth's own distribution's entry
points, the default source and the measuring stage are flags a plugin sets, and the report reads
a filter's bounds from dataset.json. A test that greps, so that a new special case fails here."""

import ast
from importlib import metadata
from pathlib import Path

from synth.plugins import CORE_DISTRIBUTION, first_party, load_registry

CORE = Path(__file__).resolve().parents[1] / "synth"


def _strings(path: Path):
    """(line, text) of every string literal that is not a docstring."""
    tree = ast.parse(path.read_text())
    docs = set()
    for node in ast.walk(tree):
        if isinstance(node, (ast.Module, ast.FunctionDef, ast.ClassDef, ast.AsyncFunctionDef)) and node.body:
            first = node.body[0]
            if isinstance(first, ast.Expr) and isinstance(first.value, ast.Constant):
                docs.add(id(first.value))
    for node in ast.walk(tree):
        if isinstance(node, ast.Constant) and isinstance(node.value, str) and id(node) not in docs:
            yield node.lineno, node.value


def test_no_plugin_or_plugin_stage_is_named_in_the_core():
    plugins = first_party()
    assert {"basic", "diffusers", "filters"} <= plugins  # the scan below looks for real names
    reg = load_registry()
    owned = {n for n, cls in reg.stages.items() if reg.owner.get(("stage", n)) in plugins} | set(reg.generators) | set(reg.extractors)
    # words that are also dataset.json keys or the core's own vocabulary, not a reference to a plugin
    generic = {"generator", "shards", "metrics", "folder", "threshold", "local"}
    found = []
    for path in sorted(CORE.glob("*.py")):
        for line, text in _strings(path):
            if text in plugins or (text in owned and text not in generic) or text.startswith("synth_") or (text.startswith("builtin:") and text != "builtin:"):
                found.append(f"{path.name}:{line} {text!r}")
    assert found == []


def test_no_step_name_is_compared_with_a_literal_in_the_core():
    found = []
    for path in sorted(CORE.glob("*.py")):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Compare):
                sides = [node.left, *node.comparators]
                named = any(isinstance(s, ast.Attribute) and s.attr == "name" for s in sides)
                literal = any(isinstance(s, ast.Constant) and isinstance(s.value, str) for s in sides)
                if named and literal:
                    found.append(f"{path.name}:{node.lineno}")
    assert found == []


def test_first_party_plugins_are_our_distributions_entry_points():
    eps = {ep.name: ep for ep in metadata.entry_points(group="synth")}
    ours = {n for n, ep in eps.items() if ep.dist is not None and ep.dist.name.lower().replace("_", "-") == CORE_DISTRIBUTION}
    assert first_party() == ours and "classify" in ours
    reg = load_registry()
    assert all(info.builtin == (name in ours) for name, info in reg.plugins.items())
    assert reg.default_source() == "generate" and reg.stages["metrics"].measures


def test_a_stage_kind_and_its_contract_go_together():
    import pytest

    from synth.plugins import PluginInfo, RegistrationError, Registry, _registrar
    from synth.protocols import DatasetStage, SourceStage, Stage

    reg = Registry()
    reg.plugins["mine"] = PluginInfo(name="mine", module="mine", distribution="mine", version="0", builtin=False)
    register = _registrar(reg, "mine", "stage")

    class Reader(Stage):  # says source, but has the per-sample contract
        name, kind = "reader", "source"

    class Counter(DatasetStage):
        name, kind = "counter", "filter"

    class Good(SourceStage):
        name = "good"

    for bad, message in ((Reader, "a source stage subclasses synth.protocols.SourceStage"), (Counter, "a dataset stage subclasses synth.protocols.DatasetStage")):
        with pytest.raises(RegistrationError, match=message):
            register(bad)
    register(Good)
    assert reg.stages["good"] is Good and reg.default_source() is None  # not the default unless it says so


BENCH = CORE.parent / "bench"


def _plugin_imports(path: Path):
    """(line, module, names) of every import of a first-party plugin package in ``path``."""
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("synth_"):
            yield node.lineno, node.module, [a.name for a in node.names]
        elif isinstance(node, ast.Import):
            for a in node.names:
                if a.name.startswith("synth_"):
                    yield node.lineno, a.name, []


def test_bench_scripts_use_only_the_plugins_public_names():
    """A bench script imports a plugin's public names (its package's __all__), never one of its
    modules: plugins may reorganise their insides without breaking a benchmark."""
    import importlib

    found, checked = [], 0
    for path in sorted(BENCH.glob("*.py")):
        for line, module, names in _plugin_imports(path):
            if "." in module or not names:
                found.append(f"{path.name}:{line} imports {module} (a module, not the package's public names)")
                continue
            package = importlib.import_module(module)
            for name in names:
                checked += 1
                if name not in getattr(package, "__all__", ()):
                    found.append(f"{path.name}:{line} imports {module}.{name}, which is not in its __all__")
    assert checked > 20 and found == []


def test_every_public_name_of_a_plugin_resolves():
    import importlib

    for name in sorted(first_party()):
        package = importlib.import_module(tuple(metadata.entry_points(group="synth", name=name))[0].value.rsplit(".", 1)[0])
        for public in getattr(package, "__all__", ()):
            assert getattr(package, public) is not None, f"{package.__name__}.{public}"
