"""Spec parsing shared by the student families.

A spec is a plain dict (what YAML, Optuna and the CLI produce); each family declares its keys
and defaults, and this module validates and normalises them so that two equal architectures
always have equal specs (the spec is what trials record and export reloads).
"""

from __future__ import annotations

from typing import Any

from autokd.errors import ConfigError

__all__ = ["parse_value", "per_stage", "resolve_spec"]


def resolve_spec(family: str, spec: dict[str, Any], defaults: dict[str, Any]) -> dict[str, Any]:
    """Merge ``spec`` over ``defaults``; unknown keys raise with the known ones."""
    unknown = sorted(set(spec) - set(defaults))
    if unknown:
        raise ConfigError(
            f"unknown {family} spec key(s): {', '.join(unknown)}; known: {', '.join(sorted(defaults))}"
        )
    return {**defaults, **spec}


def per_stage(family: str, key: str, value: Any, depth: int) -> list[int]:
    """Expand an int or a list into one positive int per stage."""
    values = list(value) if isinstance(value, (list, tuple)) else [value] * depth
    if len(values) < depth:
        raise ConfigError(f"{family} spec {key!r} has {len(values)} entries for depth {depth}")
    values = values[:depth]
    for v in values:
        if isinstance(v, bool) or not isinstance(v, int) or v < 1:
            raise ConfigError(f"{family} spec {key!r} must hold positive integers, got {v!r}")
    return values


def parse_value(text: str) -> Any:
    """Parse a CLI value: ints, floats, booleans, '/'-separated lists, else a string."""
    if "/" in text:
        return [parse_value(t) for t in text.split("/")]
    low = text.lower()
    if low in ("true", "false"):
        return low == "true"
    for cast in (int, float):
        try:
            return cast(text)
        except ValueError:
            pass
    return text
