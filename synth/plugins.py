"""Plugin manager: loads entry points of group ``synth`` (built-ins always, others only when
allowed) and collects what they register.

Installed entry points run code on import, so third-party plugins load only when named in the
``SYNTH_LOAD_PLUGINS`` environment variable (comma-separated entry-point names) or in the
manifest's top-level ``plugins = [...]`` list. Empty or unset means built-ins only.

A plugin that cannot load (missing, raising on import, registering something malformed) never
takes the command line down with it: loading records a one-line failure naming the plugin and
its entry point, ``synth --help``, ``plugins`` and ``validate`` report it, and commands that need
the plugins (``run``, ``fit``) stop with that line and exit 2.
"""

from __future__ import annotations

import difflib
import importlib
import importlib.metadata as metadata
import os
from dataclasses import dataclass, field

import pluggy

from . import __version__, hookspecs
from .errors import UsageError

ENTRY_POINT_GROUP = "synth"
ALLOWLIST_ENV = "SYNTH_LOAD_PLUGINS"
# First-party plugins are the entry points of synth's own distribution: registered like any
# package's, allowed by default (the core names none of them).
CORE_DISTRIBUTION = "synth-data"
# Registration hooks and what each registers, in the order they are called.
REGISTER_HOOKS = (
    ("register_generators", "generator"),
    ("register_stages", "stage"),
    ("register_models", "model"),
    ("register_tables", "table"),
    ("register_executors", "executor"),
    ("register_extractors", "extractor"),
    ("register_classifiers", "classifier"),
    ("register_tasks", "task"),
    ("register_probes", "probe"),
    ("register_report_sections", "report_section"),
)


@dataclass
class PluginInfo:
    name: str
    module: str
    distribution: str
    version: str
    builtin: bool
    generators: list[str] = field(default_factory=list)
    stages: list[str] = field(default_factory=list)
    models: list[str] = field(default_factory=list)
    tables: list[str] = field(default_factory=list)
    executors: list[str] = field(default_factory=list)
    extractors: list[str] = field(default_factory=list)
    classifiers: list[str] = field(default_factory=list)
    tasks: list[str] = field(default_factory=list)
    probes: list[str] = field(default_factory=list)
    report_sections: list[str] = field(default_factory=list)

    @property
    def package(self) -> str:
        """``distribution version``, as an error message names a plugin's code."""
        return f"{self.distribution} {self.version}"


@dataclass
class PluginFailure:
    """A plugin that could not be loaded or registered something malformed."""

    name: str
    where: str  # "entry point name = module:attr", or where a missing plugin was named
    message: str

    def line(self) -> str:
        return f"plugin {self.name!r} ({self.where}) {self.message}"


@dataclass
class ModelAlias:
    name: str
    path: str
    description: str
    plugin: str
    what: str = "generator"  # what it is loaded as: "generator" (a model), "classifier", ...


class Registry:
    """What the loaded plugins provide, by name, and which plugins failed to load."""

    def __init__(self):
        self.generators: dict[str, type] = {}
        self.stages: dict[str, type] = {}
        self.models: dict[str, ModelAlias] = {}
        self.tables: dict[str, type] = {}  # top-level manifest tables a plugin's command reads
        self.executors: dict[str, type] = {}
        self.extractors: dict[str, type] = {}
        self.classifiers: dict[str, type] = {}
        self.tasks: dict[str, type] = {}
        self.probes: dict[str, type] = {}
        self.report_sections: dict[str, type] = {}
        self.plugins: dict[str, PluginInfo] = {}
        self.failures: list[PluginFailure] = []
        self.owner: dict[tuple[str, str], str] = {}  # (kind, name) -> plugin name
        self.plugin_manager: pluggy.PluginManager | None = None

    def versions(self) -> dict[str, str]:
        return {name: info.version for name, info in sorted(self.plugins.items())}

    def generator(self, name: str, where: str) -> type:
        return _lookup(self.generators, name, "generator", where)

    def default_source(self) -> str | None:
        """The source stage a manifest without [[stage]] tables starts with (Stage.default_source)."""
        from .protocols import SourceStage

        names = sorted(n for n, cls in self.stages.items() if issubclass(cls, SourceStage) and cls.default_source)
        return names[0] if names else None

    def stage(self, name: str, where: str) -> type:
        return _lookup(self.stages, name, "stage", where)

    def executor(self, name: str, where: str) -> type:
        return _lookup(self.executors, name, "executor", where)

    def extractor(self, name: str, where: str) -> type:
        return _lookup(self.extractors, name, "extractor", where)

    def classifier(self, name: str, where: str) -> type:
        return _lookup(self.classifiers, name, "classifier", where)

    def task(self, name: str, where: str) -> type:
        return _lookup(self.tasks, name, "task", where)

    def probe(self, name: str, where: str) -> type:
        return _lookup(self.probes, name, "probe", where)

    def plugin_of(self, kind: str, name: str) -> PluginInfo | None:
        """The plugin that registered ``kind`` ``name`` (e.g. ("stage", "boom"))."""
        owner = self.owner.get((kind, name))
        return self.plugins.get(owner) if owner else None

    def raise_failures(self) -> None:
        """For commands that need the plugins: the first failure as one line (exit 2)."""
        if self.failures:
            more = f" (and {len(self.failures) - 1} more plugin problems; see `synth plugins`)" if len(self.failures) > 1 else ""
            raise UsageError(self.failures[0].line() + more)

    def resolve_model(self, ref: str, what: str = "generator") -> str:
        """Turn ``builtin:NAME`` into the registered path of a built-in ``what`` (a generator's
        model, a classifier); anything else passes through."""
        if not ref.startswith("builtin:"):
            return ref
        name = ref.split(":", 1)[1]
        noun = "model" if what == "generator" else what
        alias = self.models.get(name)
        if alias is None:
            known = ", ".join(sorted(n for n, a in self.models.items() if a.what == what)) or "none"
            raise UsageError(f"unknown built-in {noun} {name!r} (known: {known})")
        if alias.what != what:
            raise UsageError(f"builtin:{name} is a {alias.what}, not a {noun}")
        return alias.path


def _lookup(table: dict, name: str, kind: str, where: str):
    if name in table:
        return table[name]
    close = difflib.get_close_matches(name, list(table), n=1)
    hint = f"; did you mean {close[0]!r}?" if close else ""
    known = ", ".join(sorted(table)) or "none"
    raise UsageError(f"{where}: unknown {kind} {name!r}{hint} (installed: {known})")


def env_names() -> set[str]:
    env = os.environ.get(ALLOWLIST_ENV, "")
    return {n.strip() for n in env.split(",") if n.strip()}


def _normalised(dist_name: str) -> str:
    return dist_name.lower().replace("_", "-").replace(".", "-")


def first_party(eps: dict | None = None) -> set[str]:
    """Names of the plugins synth's own distribution installs."""
    if eps is None:
        eps = {ep.name: ep for ep in metadata.entry_points(group=ENTRY_POINT_GROUP)}
    return {name for name, ep in eps.items() if ep.dist is not None and _normalised(ep.dist.name) == CORE_DISTRIBUTION}


def allowed_names(extra: list[str] | tuple[str, ...] = (), eps: dict | None = None) -> set[str]:
    return first_party(eps) | env_names() | set(extra)


def one_line(e: BaseException) -> str:
    text = str(e).strip().splitlines()
    return f"{type(e).__name__}: {text[0]}" if text else type(e).__name__


def load_registry(extra_allowed: list[str] | tuple[str, ...] = ()) -> Registry:
    """Load allowed entry points, call their register hooks, return the registry.

    Never raises for a plugin's own problem: each becomes a ``PluginFailure`` in
    ``registry.failures`` (see the module docstring)."""
    pm = pluggy.PluginManager("synth")
    pm.add_hookspecs(hookspecs)
    registry = Registry()
    eps = {ep.name: ep for ep in metadata.entry_points(group=ENTRY_POINT_GROUP)}
    installed = ", ".join(sorted(eps)) or "none"
    for name in sorted(env_names() - set(eps)):
        registry.failures.append(PluginFailure(name, f"named in {ALLOWLIST_ENV}", f"is not installed (installed: {installed})"))
    for name in sorted(dict.fromkeys(extra_allowed)):
        if name not in eps:
            registry.failures.append(PluginFailure(name, "named in the manifest's plugins", f"is not installed (installed: {installed})"))
    allowed = allowed_names(extra_allowed, eps)
    ours = first_party(eps)
    for name in sorted(eps):
        if name not in allowed:
            continue
        ep = eps[name]
        declared = f"entry point {ep.name} = {ep.value}"
        try:
            module = ep.load() if ":" in ep.value else importlib.import_module(ep.value)
            pm.register(module, name=name)
        except Exception as e:  # a plugin's import error is its own, never the command line's
            registry.failures.append(PluginFailure(name, declared, f"failed to load: {one_line(e)}"))
            continue
        dist = ep.dist
        registry.plugins[name] = PluginInfo(
            name=name,
            module=ep.value,
            distribution=dist.name if dist else "?",
            version=dist.version if dist else __version__,
            builtin=name in ours,
        )
    try:
        pm.check_pending()
    except pluggy.PluginValidationError as e:
        registry.failures.append(PluginFailure(getattr(e.plugin, "__name__", "?"), "?", f"implements an unknown hook: {one_line(e)}"))

    for hook, kind in REGISTER_HOOKS:
        for impl in getattr(pm.hook, hook).get_hookimpls():
            plugin = impl.plugin_name
            try:
                impl.function(register=_registrar(registry, plugin, kind))
            except Exception as e:
                ep = eps.get(plugin)
                declared = f"entry point {ep.name} = {ep.value}" if ep else plugin
                registry.failures.append(PluginFailure(plugin, declared, f"failed in {hook}: {one_line(e)}"))
    registry.plugin_manager = pm
    return registry


class RegistrationError(Exception):
    """A plugin registered something malformed (reported as that plugin's failure)."""


def _registrar(registry: Registry, plugin: str, kind: str):
    from .protocols import (
        STAGE_KINDS,
        Classifier,
        DatasetStage,
        Executor,
        FeatureExtractor,
        Generator,
        PluginConfig,
        Probe,
        ReportSection,
        SourceStage,
        Stage,
        Task,
    )

    info = registry.plugins[plugin]
    base = {"generator": Generator, "stage": Stage, "executor": Executor, "extractor": FeatureExtractor, "classifier": Classifier, "task": Task, "probe": Probe, "report_section": ReportSection}.get(kind)

    def register(obj, path=None, description="", what="generator"):
        if kind == "model":
            name = obj
            registry.models[name] = ModelAlias(name, str(path), description, plugin, what)
            info.models.append(name)
            return
        if kind == "table":
            name, model = obj, path
            if not (isinstance(name, str) and isinstance(model, type) and issubclass(model, PluginConfig)):
                raise RegistrationError("register_tables takes register(name, PluginConfig subclass)")
            if name in registry.tables:
                raise RegistrationError(f"table [{name}] is already registered by {registry.owner[('table', name)]!r}")
            registry.tables[name] = model
            registry.owner[("table", name)] = plugin
            info.tables.append(name)
            return
        if not (isinstance(obj, type) and issubclass(obj, base)):
            what = obj.__name__ if isinstance(obj, type) else repr(obj)
            raise RegistrationError(f"register_{kind}s was given {what}, which is not a synth.protocols.{base.__name__} subclass")
        name = vars(obj).get("name") or getattr(obj, "name", None)
        if not isinstance(name, str) or not name:
            raise RegistrationError(f"{kind} class {obj.__name__} has no name")
        config = getattr(obj, "Config", None)
        if not (isinstance(config, type) and issubclass(config, PluginConfig)):
            raise RegistrationError(f"{kind} {name!r} has no Config (a synth.protocols.PluginConfig subclass)")
        if kind == "stage" and obj.kind not in STAGE_KINDS:
            raise RegistrationError(f"stage {name!r} has kind {obj.kind!r}; a stage's kind is one of {', '.join(STAGE_KINDS)}")
        if kind == "stage":  # the kind and the contract go together
            for contract, of_kind in ((SourceStage, "source"), (DatasetStage, "dataset")):
                if issubclass(obj, contract) != (obj.kind == of_kind):
                    raise RegistrationError(f"stage {name!r}: a {of_kind} stage subclasses synth.protocols.{contract.__name__}, and only a {of_kind} stage does")
        table = {"generator": registry.generators, "stage": registry.stages, "executor": registry.executors, "extractor": registry.extractors, "classifier": registry.classifiers, "task": registry.tasks, "probe": registry.probes, "report_section": registry.report_sections}[kind]
        if name in table:
            other = registry.owner[(kind, name)]
            raise RegistrationError(f"{kind} {name!r} is already registered by plugin {other!r}")
        table[name] = obj
        registry.owner[(kind, name)] = plugin
        getattr(info, f"{kind}s").append(name)

    return register


def public_api(package: str, names: dict[str, str]):
    """A plugin package's public names, imported on first use: ``names`` maps each to the module
    (relative to ``package``) that defines it. The package sets ``__getattr__`` to the result and
    ``__all__`` to the names, so a user or a bench script writes ``from synth_shapes import
    Oracle`` and never a module path, and importing the package (which loading the plugin does)
    still imports no model library."""
    import importlib

    def __getattr__(name: str):
        if name not in names:
            raise AttributeError(f"module {package!r} has no attribute {name!r}")
        return getattr(importlib.import_module(names[name], package), name)

    return __getattr__
