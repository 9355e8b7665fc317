"""Values of manifest fields, as a search over them writes them: ``KEY=v1,v2,...`` parsed into
TOML scalars, a value set at a key path (``generator.guidance_scale``, ``dataset.seed``,
``stage[2].sigma`` by position, ``stage.views.sigma`` by name), and a trial's label and folder
name. Used by ``synth sweep`` (filters plugin) and ``synth optimise`` (optimise plugin)."""

from __future__ import annotations

import re
import tomllib
from typing import Any

from .errors import UsageError


def parse_set(text: str) -> tuple[str, list[Any]]:
    """KEY and its values, each a TOML scalar (a bare word is a string); an empty value is an
    error, a repeated one is swept once."""
    if "=" not in text:
        raise UsageError(f"--set {text!r}: expected KEY=v1,v2,...")
    key, raw = text.split("=", 1)
    values = []
    for v in raw.split(","):
        if not v.strip():
            raise UsageError(f"--set {text!r}: an empty value (two commas, or a comma at an end)")
        try:
            value = tomllib.loads(f"v = {v.strip()}")["v"]
        except tomllib.TOMLDecodeError:
            value = v.strip()  # a bare word: a string
        if value not in values:
            values.append(value)
    if not values or not key.strip():
        raise UsageError(f"--set {text!r}: expected KEY=v1,v2,...")
    return key.strip(), values


def assign(data: dict, key: str, value: Any, where: str) -> None:
    """Set ``key`` (generator.x, dataset.x, stage[i].x, stage.NAME.x) in a manifest's data."""
    parts = key.split(".")
    m = re.fullmatch(r"stage\[(\d+)\]", parts[0])
    if m:
        stages = data.get("stage", [])
        i = int(m.group(1))
        if i >= len(stages):
            raise UsageError(f"{where}: {key}: the manifest has {len(stages)} stages")
        target, rest = stages[i], parts[1:]
    elif parts[0] == "stage" and len(parts) >= 3:
        target = next((s for s in data.get("stage", []) if s.get("name") == parts[1]), None)
        if target is None:
            raise UsageError(f"{where}: {key}: no stage named {parts[1]!r}")
        rest = parts[2:]
    else:
        target, rest = data, parts
    for p in rest[:-1]:
        target = target.setdefault(p, {})
        if not isinstance(target, dict):
            raise UsageError(f"{where}: {key}: {p} is not a table")
    if not rest:
        raise UsageError(f"{where}: {key}: name a field, e.g. stage.views.sigma")
    target[rest[-1]] = value


def label(combo: dict[str, Any]) -> str:
    """'steps=10,sigma=0.3' for {"generator.steps": 10, "stage.views.sigma": 0.3}."""
    return ",".join(f"{k.split('.')[-1]}={v}" for k, v in combo.items())


def folder_name(label: str) -> str:
    """A label as a folder name (characters a path could misread become _)."""
    return re.sub(r"[^A-Za-z0-9_.,=-]", "_", label)
