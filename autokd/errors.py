"""Error types a user can cause.

Every error a user can trigger (bad path, bad YAML, wrong shapes, ...) is raised as an
``AutokdError`` subclass; the CLI turns it into one line on stderr and exit code 2, so no user
ever sees a raw traceback for their own mistake.
"""

from __future__ import annotations

__all__ = [
    "AutokdError",
    "ConfigError",
    "DataError",
    "ExportError",
    "InitError",
    "SpaceError",
    "StudyError",
    "TeacherError",
    "TrainingError",
]


class AutokdError(Exception):
    """Base of user-facing errors; ``exit_code`` is what the CLI exits with."""

    exit_code: int = 2


class ConfigError(AutokdError):
    """An option or configuration value is out of range or malformed."""


class InitError(ConfigError):
    """A student cannot be initialised from its teacher's layers (``init: teacher``): another
    family, or a different width, head count, MLP width, vocabulary or patch size. A search
    records such a candidate infeasible before training, as it does a violated constraint."""


class DataError(AutokdError):
    """A dataset could not be loaded or fails validation."""


class TeacherError(AutokdError):
    """A teacher could not be loaded or does not fit the data."""


class SpaceError(AutokdError):
    """A search-space file or a sampled spec is invalid."""


class TrainingError(AutokdError):
    """A training run failed for a reason a search records and moves past (NaN loss, ...)."""

    exit_code = 1


class StudyError(AutokdError):
    """A study is missing, finished, or its storage cannot be used."""


class ExportError(AutokdError):
    """An export could not be produced or did not verify."""
