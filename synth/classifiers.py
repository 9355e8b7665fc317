"""Image classifiers (a plugin kind, ``register_classifiers``): a stage names one with a table,
e.g. ``classifier = { name = "torch", path = "models/colour-classifier" }``; ``get`` sets it up
once per process, ``check`` is what a stage's check_plan returns for it."""

from __future__ import annotations

import hashlib
import json
from typing import Any

from . import refs
from .errors import UsageError
from .extractors import resolve_named


def _resolve(registry, table: dict[str, Any], where: str, problems: list[str]):
    return resolve_named(registry.classifier, table, where, problems)


def check(plan, table: dict[str, Any], where: str = "classifier") -> list[str]:
    """The table's own problems, then the classifier's look at the plan, each under ``where``."""
    problems: list[str] = []
    found = _resolve(plan.registry, table, where, problems)
    if found is not None:
        cls, config = found
        problems += [f"{where}.{p}" for p in cls.check_plan(config, plan) + refs.check(plan, config)]
    return problems


def get(context, table: dict[str, Any]):
    """The classifier for this table, set up once per process."""
    cache = context.extra.setdefault("classifiers", {})
    ident = hashlib.sha256(json.dumps(table, sort_keys=True, default=str).encode()).hexdigest()
    if ident not in cache:
        problems: list[str] = []
        found = _resolve(context.registry, table, "classifier", problems)
        if found is None:
            raise UsageError(problems[0])
        cls, config = found
        clf = cls(config, context)
        clf.setup()
        cache[ident] = clf
    return cache[ident]
