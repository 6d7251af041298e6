"""One-shot architecture search without Optuna: DARTS options, the supernet search, derivation.

``autokd.controllers.darts`` is the study-facing part: it claims trials, runs a
``DartsSearch`` per trial, derives a student with ``derive`` and records it like any trial.
"""

from __future__ import annotations

from autokd.nas.decisions import midpoint, space_decisions
from autokd.nas.derive import derive
from autokd.nas.options import DEFAULT_TARGETS, TARGET_METRICS, DartsOptions, parse_targets
from autokd.nas.search import DartsSearch, SearchResult

__all__ = [
    "DEFAULT_TARGETS",
    "TARGET_METRICS",
    "DartsOptions",
    "DartsSearch",
    "SearchResult",
    "derive",
    "midpoint",
    "parse_targets",
    "space_decisions",
]
