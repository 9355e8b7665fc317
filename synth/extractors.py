"""Feature extractors (a plugin kind, ``register_extractors``): images -> one vector each, for
fidelity and diversity filters, near-duplicate removal, selection and dataset metrics.

A stage names an extractor with a table, e.g. ``extractor = { name = "clip", model = "..." }``
or just ``extractor = "shapes"``. Within a run each extractor is set up once per process and each
sample's features are computed once: stages ask ``features(context, batch, table)``, which keeps
them in the batch (``batch.extras``) for the next stage that asks, and the shard task writes them
beside the shard for the dataset-level stages that run after all shards.
"""

from __future__ import annotations

import hashlib
import json
from typing import Any

import numpy as np

from . import refs
from .errors import UsageError


def as_table(spec: str | dict[str, Any]) -> dict[str, Any]:
    return {"name": spec} if isinstance(spec, str) else dict(spec)


def extractor_id(spec: str | dict[str, Any]) -> str:
    """A short stable name for an extractor table (its name and a hash of its settings)."""
    table = as_table(spec)
    digest = hashlib.sha256(json.dumps(table, sort_keys=True).encode()).hexdigest()[:10]
    return f"{table['name']}-{digest}"


def _settings(table: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in table.items() if k != "name"}


def _resolve(registry, spec, where: str, problems: list[str]):
    """(extractor class, its validated config), or None with the table's problems added."""
    return resolve_named(registry.extractor, as_table(spec), where, problems)


def resolve_named(lookup, table: dict[str, Any], where: str, problems: list[str]):
    """A plugin table ``{name = ..., options}`` of any kind whose registry ``lookup(name, where)``
    finds the class: (class, its validated config), or None with the problems added."""
    from pydantic import ValidationError

    from .manifest import format_errors

    try:
        cls = lookup(str(table.get("name")), f"{where}.name")
    except UsageError as e:
        problems.append(str(e))
        return None
    try:
        return cls, cls.Config.model_validate(_settings(table))
    except ValidationError as e:
        problems += format_errors(e, where)
        return None


def validate(registry, spec, where: str, problems: list[str]) -> None:
    """An extractor table's problems (an unknown name, a bad setting), added to ``problems``."""
    _resolve(registry, spec, where, problems)


def check(plan, spec, where: str = "extractor") -> list[str]:
    """A stage's check_plan for the extractor table it names: the table's own problems, then the
    extractor's look at the whole plan (its model files, say), each prefixed with ``where``."""
    problems: list[str] = []
    found = _resolve(plan.registry, spec, where, problems)
    if found is not None:
        cls, config = found
        problems += [f"{where}.{p}" for p in cls.check_plan(config, plan) + refs.check(plan, config)]
    return problems


def get(context, spec):
    """The extractor for this table, set up once per process."""
    cache = context.extra.setdefault("extractors", {})
    ident = extractor_id(spec)
    if ident not in cache:
        table = as_table(spec)
        cls = context.registry.extractor(str(table["name"]), "extractor.name")
        ex = cls(cls.Config.model_validate(_settings(table)), context)
        ex.setup()
        cache[ident] = ex
    return cache[ident]


def features(context, batch, spec) -> np.ndarray:
    """(N, D) float32 features of the batch's images, computed at most once per sample."""
    key = f"features:{extractor_id(spec)}"
    if key not in batch.extras:
        batch.extras[key] = np.asarray(get(context, spec).embed(batch.images), np.float32)
    return batch.extras[key]
