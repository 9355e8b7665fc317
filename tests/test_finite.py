"""No option of any manifest table takes an infinite or NaN number (TOML spells them inf and
nan): the schema is walked, every float field (alone, in a list, a dict or an optional) tried."""

import math
import types
import typing

import pytest

from conftest import synth, write_manifest


def _non_finite_inputs(annotation):
    """Inputs that put inf or nan where this annotation has a float (empty when it has none)."""
    origin, args = typing.get_origin(annotation), typing.get_args(annotation)
    if annotation is float:
        return [math.inf, -math.inf, math.nan]
    if origin in (list, tuple, set, frozenset) and args:
        return [[v] for v in _non_finite_inputs(args[0])]
    if origin is dict and len(args) == 2:
        return [{"k": v} for v in _non_finite_inputs(args[1])]
    if origin is typing.Annotated:
        return _non_finite_inputs(args[0])
    if origin in (typing.Union, types.UnionType):
        return [v for a in args for v in _non_finite_inputs(a)]
    return []


def _configs():
    from synth.manifest import DatasetConfig, RunConfig
    from synth.plugins import load_registry

    reg = load_registry()
    out = [("dataset", DatasetConfig), ("run", RunConfig)]
    for kind in ("generators", "stages", "extractors", "executors"):
        out += [(f"{kind[:-1]} {name}", cls.Config) for name, cls in sorted(getattr(reg, kind).items())]
    out += [(f"table {name}", model) for name, model in sorted(reg.tables.items())]
    return out


def _walk(model, seen=None):
    """(model, field name, annotation) of every field, nested config models too."""
    seen = seen or set()
    if model in seen:
        return
    seen.add(model)
    for name, field in model.model_fields.items():
        yield model, name, field.annotation
        for sub in _models_in(field.annotation):
            yield from _walk(sub, seen)


def _models_in(annotation):
    from pydantic import BaseModel

    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return [annotation]
    return [m for a in typing.get_args(annotation) for m in _models_in(a)]


def test_every_float_option_refuses_inf_and_nan():
    checked = 0
    for where, config in _configs():
        for model, name, annotation in _walk(config):
            for value in _non_finite_inputs(annotation):
                try:
                    model.model_validate({name: value})
                except Exception as e:  # pydantic's ValidationError: look for the field's own error
                    errors = [err for err in e.errors() if err["loc"] and err["loc"][0] == name]
                    assert any(err["type"] == "finite_number" for err in errors), (where, model.__name__, name, value, errors)
                    checked += 1
                    continue
                pytest.fail(f"{where}: {model.__name__}.{name} accepted {value!r}")
    assert checked > 50  # the walk reached the float options (threshold's min/max, views' sigma, ...)


def test_threshold_min_nan_fails_validate_in_one_line(tmp_path):
    m = write_manifest(tmp_path, """
[dataset]
num_samples = 4
[generator]
name = "toy"
[[stage]]
name = "generate"
[[stage]]
name = "image_stats"
[[stage]]
name = "threshold"
score = "brightness"
min = nan
""")
    res = synth("validate", m)
    assert res.returncode == 2
    assert res.stderr.strip().splitlines() == [f"synth: error: {m}: stage[2].min: Input should be a finite number (got nan)"]
