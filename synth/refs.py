"""References from one plugin's table to another plugin: a source stage of real images, a
labelling stage, a feature extractor, a classifier. A config field says what it holds by its type
(``SourceRef``, ``StageRef``, ``ExtractorRef``, ``ClassifierRef``); the manifest loader finds
them (nested tables and lists too) and validates each in one place, so a misnamed extractor in a
labeller's reference set is caught by ``synth validate`` with its full location, and no stage
checks what it names by hand.

    class MyConfig(PluginConfig):
        reference: SourceRef                      # {name = "folder", path = "real/"}
        extractor: ExtractorRef = "shapes"        # a name or {name = "clip", model = "..."}
"""

from __future__ import annotations

import typing
from dataclasses import dataclass
from typing import Annotated, Any, Iterator

from pydantic import BaseModel


@dataclass(frozen=True)
class Ref:
    """What a field refers to: "source", "stage" (of ``kinds``), "extractor" or "classifier"."""

    kind: str
    kinds: tuple[str, ...] = ()


SourceRef = Annotated[dict[str, Any], Ref("source")]
StageRef = Annotated[dict[str, Any], Ref("stage", ("transform",))]
ExtractorRef = Annotated[str | dict[str, Any], Ref("extractor")]
ClassifierRef = Annotated[dict[str, Any], Ref("classifier")]


def _ref_of(annotation: Any) -> Ref | None:
    """The Ref marker in a field's annotation, also inside ``X | None`` and ``list[X]``."""
    if typing.get_origin(annotation) is Annotated:
        return next((m for m in annotation.__metadata__ if isinstance(m, Ref)), None)
    for arg in typing.get_args(annotation):
        found = _ref_of(arg)
        if found is not None:
            return found
    return None


def references(config: BaseModel, prefix: str = "") -> Iterator[tuple[str, Ref, Any]]:
    """(location, Ref, value) of every reference set in ``config``: "reference.source",
    "annotations.source", "prompts[1].extractor", ... (unset optional ones are skipped)."""
    for name, info in type(config).model_fields.items():
        value = getattr(config, name)
        if value is None:
            continue
        where = f"{prefix}{name}"
        ref = next((m for m in info.metadata if isinstance(m, Ref)), None) or _ref_of(info.annotation)
        if ref is not None:
            yield from ([(f"{where}[{i}]", ref, v) for i, v in enumerate(value)] if isinstance(value, list) else [(where, ref, value)])
        elif isinstance(value, BaseModel):
            yield from references(value, f"{where}.")
        elif isinstance(value, list):
            for i, item in enumerate(value):
                if isinstance(item, BaseModel):
                    yield from references(item, f"{where}[{i}].")


def validate(registry: Any, config: BaseModel, where: str, problems: list[str]) -> None:
    """The shape of every source and stage reference in ``config`` (a known name, a valid
    table, the right kind), added to ``problems`` under ``where.location``: before any plan."""
    from .manifest import source_step, stage_step

    for loc, ref, value in references(config):
        if ref.kind == "source":
            source_step(registry, value, f"{where}.{loc}", problems)
        elif ref.kind == "stage":
            stage_step(registry, value, f"{where}.{loc}", problems, kinds=ref.kinds)


def check(plan: Any, config: BaseModel) -> list[str]:
    """Each reference's look at the whole plan (a source's folder, an extractor's model files, a
    classifier's classes), one message per problem, located from ``config``'s fields. Sources
    and stages are validated first (``validate``); here the sources' own check_plan runs."""
    from dataclasses import replace

    from . import classifiers, extractors
    from .manifest import source_step

    problems: list[str] = []
    for loc, ref, value in references(config):
        if ref.kind == "source":
            inner = source_step(plan.registry, value, loc, [])
            if inner is not None:  # embedded: not the run's own source (position -2)
                problems += [_at(loc, p) for p in inner.cls.check_plan(inner.config, replace(plan, position=-2))]
                problems += [_at(loc, p) for p in check(plan, inner.config)]
        elif ref.kind == "extractor":
            problems += extractors.check(plan, value, loc)
        elif ref.kind == "classifier":
            problems += classifiers.check(plan, value, loc)
    return problems


def _at(where: str, problem: str) -> str:
    from .manifest import _at as at

    return at(where, problem)
