"""The in-memory studies a report works on: a frozen copy of the study, throwaway ones for fANOVA.

Why: a search may finish trials while the report reads; every section must describe the same set
of trials, so the report reads one private snapshot. Creating such in-memory studies makes
Optuna log a line each time, which is noise in a report run.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

import optuna

__all__ = ["quiet_optuna", "snapshot"]


def snapshot(study: optuna.Study) -> optuna.Study:
    """An in-memory copy of the study as it is now.

    Why: a search may finish trials while the report reads; every section must describe the
    same set of trials (a front from one moment and counts from another would disagree).
    """
    if isinstance(study._storage, optuna.storages.InMemoryStorage):
        return study  # already a private copy
    trials = sorted(study.get_trials(deepcopy=True), key=lambda t: t.number)
    with quiet_optuna():
        copy = optuna.create_study(study_name=study.study_name, directions=study.directions,
                                   storage=optuna.storages.InMemoryStorage())
        copy.add_trials(trials)
    for key, value in study.user_attrs.items():
        copy.set_user_attr(key, value)
    return copy


@contextlib.contextmanager
def quiet_optuna() -> Iterator[None]:
    """The throwaway study's creation message is noise in a report run."""
    level = optuna.logging.get_verbosity()
    optuna.logging.set_verbosity(max(level, optuna.logging.WARNING))
    try:
        yield
    finally:
        optuna.logging.set_verbosity(level)
