"""Shared fixtures: one throw-away autokd cache for the whole test session; Ctrl-C per test.

Why: the default teacher for a dataset is trained once and cached; sharing that cache across
tests keeps the suite fast while never touching the user's ~/.cache/autokd. Tests that send
SIGINT to this process need it to raise KeyboardInterrupt however pytest was started.
"""

from __future__ import annotations

import os
import signal
import tempfile
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

_CACHE = Path(tempfile.mkdtemp(prefix="autokd-test-cache-"))
os.environ["AUTOKD_CACHE"] = str(_CACHE)
os.environ.setdefault("OMP_NUM_THREADS", "1")


@pytest.fixture(autouse=True)
def sigint_raises_keyboard_interrupt() -> Iterator[None]:
    """SIGINT raises KeyboardInterrupt in this process during each test, as at a terminal.

    Why: a non-interactive shell starts background jobs with SIGINT ignored, and Python then
    installs no handler, so a test's ``os.kill(os.getpid(), SIGINT)`` would do nothing. The
    previous handler (possibly SIG_IGN) is put back afterwards; autokd's own handling is untouched.
    """
    if threading.current_thread() is not threading.main_thread():
        yield  # handlers can only be installed from the main thread
        return
    previous = signal.signal(signal.SIGINT, signal.default_int_handler)
    try:
        yield
    finally:
        if previous is not None:  # None: a handler not set from Python, cannot be restored
            signal.signal(signal.SIGINT, previous)


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

    teacher, _ = default_teacher(digits)
    return teacher


@pytest.fixture(scope="module")
def wine():
    from autokd.data import load_data

    return load_data("wine")


@pytest.fixture(scope="module")
def wine_teacher(wine, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A small MLP teacher checkpoint trained for a few epochs (accuracy is not what is tested)."""
    import torch

    from autokd import train
    from autokd.models import build_student
    from autokd.teachers import save_checkpoint

    torch.manual_seed(0)
    model = build_student("mlp", {"depth": 2, "widths": 32}, wine.input_shape, wine.num_classes)
    result = train.distill(model, wine, None, train.KDConfig(soft_loss="none", alpha=0.0),
                           train.TrainConfig(epochs=5, lr=1e-2))
    return save_checkpoint(result.model, tmp_path_factory.mktemp("wine") / "wine-teacher.pt")
