"""Plugin manager: loads entry points of group ``synth`` (built-ins always, others only when
allowed) and collects what they register.

Installed entry points run code on import, so third-party plugins load only when named in the
``SYNTH_LOAD_PLUGINS`` environment variable (comma-separated entry-point names) or in the
manifest's top-level ``plugins = [...]`` list. Empty or unset means built-ins only.
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
# First-party plugins: registered through entry points like any package, allowed by default.
DEFAULT_PLUGINS = ("basic", "toy", "diffusers", "shapes", "pixelhead")


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


@dataclass
class ModelAlias:
    name: str
    path: str
    description: str
    plugin: str


class Registry:
    """What the loaded plugins provide, by name."""

    def __init__(self):
        self.generators: dict[str, type] = {}
        self.stages: dict[str, type] = {}
        self.models: dict[str, ModelAlias] = {}
        self.plugins: dict[str, PluginInfo] = {}
        self.owner: dict[tuple[str, str], str] = {}  # (kind, name) -> plugin name
        self.plugin_manager: pluggy.PluginManager | None = None

    def versions(self) -> dict[str, str]:
        return {name: info.version for name, info in sorted(self.plugins.items())}

    def generator(self, name: str, where: str) -> type:
        return _lookup(self.generators, name, "generator", where)

    def stage(self, name: str, where: str) -> type:
        return _lookup(self.stages, name, "stage", where)

    def resolve_model(self, ref: str) -> str:
        """Turn ``builtin:NAME`` into the registered path; anything else passes through."""
        if not ref.startswith("builtin:"):
            return ref
        name = ref.split(":", 1)[1]
        if name not in self.models:
            known = ", ".join(sorted(self.models)) or "none"
            raise UsageError(f"unknown built-in model {name!r} (known: {known})")
        return self.models[name].path


def _lookup(table: dict, name: str, kind: str, where: str):
    if name in table:
        return table[name]
    close = difflib.get_close_matches(name, list(table), n=1)
    hint = f"; did you mean {close[0]!r}?" if close else ""
    known = ", ".join(sorted(table)) or "none"
    raise UsageError(f"{where}: unknown {kind} {name!r}{hint} (installed: {known})")


def allowed_names(extra: list[str] | tuple[str, ...] = ()) -> set[str]:
    env = os.environ.get(ALLOWLIST_ENV, "")
    names = {n.strip() for n in env.split(",") if n.strip()}
    return set(DEFAULT_PLUGINS) | names | set(extra)


def load_registry(extra_allowed: list[str] | tuple[str, ...] = ()) -> Registry:
    """Load allowed entry points, call their register hooks, return the registry."""
    allowed = allowed_names(extra_allowed)
    pm = pluggy.PluginManager("synth")
    pm.add_hookspecs(hookspecs)
    registry = Registry()
    eps = {ep.name: ep for ep in metadata.entry_points(group=ENTRY_POINT_GROUP)}
    missing = sorted(set(extra_allowed) - set(eps))
    if missing:
        raise UsageError(
            f"plugin {missing[0]!r} is not installed (installed: {', '.join(sorted(eps)) or 'none'})"
        )
    for name in sorted(eps):
        if name not in allowed:
            continue
        ep = eps[name]
        module = ep.load() if ":" in ep.value else importlib.import_module(ep.value)
        pm.register(module, name=name)
        dist = ep.dist
        registry.plugins[name] = PluginInfo(
            name=name,
            module=ep.value,
            distribution=dist.name if dist else "?",
            version=dist.version if dist else __version__,
            builtin=name in DEFAULT_PLUGINS,
        )
    pm.check_pending()

    for impl in pm.hook.register_generators.get_hookimpls():
        impl.function(register=_registrar(registry, impl.plugin_name, "generator"))
    for impl in pm.hook.register_stages.get_hookimpls():
        impl.function(register=_registrar(registry, impl.plugin_name, "stage"))
    for impl in pm.hook.register_models.get_hookimpls():
        impl.function(register=_registrar(registry, impl.plugin_name, "model"))
    registry.plugin_manager = pm
    return registry


def _registrar(registry: Registry, plugin: str, kind: str):
    info = registry.plugins[plugin]

    def register(obj, path=None, description=""):
        if kind == "model":
            name = obj
            registry.models[name] = ModelAlias(name, str(path), description, plugin)
            info.models.append(name)
            return
        name = getattr(obj, "name", None)
        if not name or "Config" not in vars(obj) and not hasattr(obj, "Config"):
            raise UsageError(f"plugin {plugin!r} registered a {kind} without a name and Config")
        table = registry.generators if kind == "generator" else registry.stages
        if name in table:
            other = registry.owner[(kind, name)]
            raise UsageError(f"plugin {plugin!r} registers {kind} {name!r}, already registered by {other!r}")
        table[name] = obj
        registry.owner[(kind, name)] = plugin
        (info.generators if kind == "generator" else info.stages).append(name)

    return register
