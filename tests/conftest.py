"""Shared fixtures: one throw-away autokd cache for the whole test session.

Why: the default teacher for a dataset is trained once and cached; sharing that cache across
tests keeps the suite fast while never touching the user's ~/.cache/autokd.
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

import pytest

_CACHE = Path(tempfile.mkdtemp(prefix="autokd-test-cache-"))
os.environ["AUTOKD_CACHE"] = str(_CACHE)
os.environ.setdefault("OMP_NUM_THREADS", "1")


@pytest.fixture(scope="session")
def autokd_cache() -> Path:
    return _CACHE


@pytest.fixture(scope="session")
def digits():
    from autokd.data import load_data

    return load_data("digits")


@pytest.fixture(scope="session")
def digits_teacher(digits):
    """The cached default digits teacher (trained once per session, ~10 s)."""
    from autokd.teachers import default_teacher

    teacher, path = default_teacher(digits)
    return teacher
