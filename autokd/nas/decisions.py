"""A search space's architecture decisions as a supernet relaxes them."""

from __future__ import annotations

import math
from typing import Any

from autokd.errors import SpaceError
from autokd.models import FAMILIES, get_family
from autokd.space import Param, SearchSpace

__all__ = ["midpoint", "space_decisions"]


def space_decisions(space: SearchSpace) -> tuple[dict[str, list[Any]], dict[str, Any]]:
    """The space's relaxable decisions (``{name: options}``) and its fixed architecture values.

    Raises:
        SpaceError: For a family without a supernet or a conditional architecture decision.
    """
    form = get_family(space.family).supernet
    if form is None:
        known = [n for n in FAMILIES if FAMILIES.get(n).supernet is not None]
        raise SpaceError(f"--strategy darts has no supernet for family {space.family!r}; "
                         f"known: {', '.join(known)}")
    relaxable = form.relaxable
    decisions, fixed = {}, {}
    for p in space.group("architecture"):
        if p.kind == "fixed":
            fixed[p.name] = p.value
        elif p.name in relaxable and p.kind in ("choice", "int"):
            if p.when:
                raise SpaceError(f"--strategy darts cannot relax the conditional architecture "
                                 f"parameter {p.name!r} ({space.source}); make it unconditional")
            decisions.update(_expand(space, p))
    return decisions, fixed


def _expand(space: SearchSpace, p: Param) -> dict[str, list[Any]]:
    """One decision, or one per stage (``widths_0`` ...) up to the deepest depth."""
    if not p.per_stage:
        return {p.name: p.options()}
    depth = next(q for q in space.params if q.name == p.per_stage)
    return {f"{p.name}_{i}": p.options() for i in range(max(depth.options()))}


def midpoint(p: Param) -> Any:
    """The value a fixed-recipe run uses: first choice, or the (geometric) middle of a range."""
    if p.kind == "fixed":
        return p.value
    if p.kind == "choice":
        return p.choices[0]
    low, high = float(p.low), float(p.high)
    mid = math.sqrt(low * high) if p.log else (low + high) / 2
    if p.step:
        mid = low + round((mid - low) / p.step) * p.step
    return round(mid) if p.kind == "int" else float(mid)
