"""Progress of one long step (training a teacher, caching its outputs, a distillation run).

Library code creates a ``ProgressMeter`` and calls ``update``; nothing is shown unless the
CLI turned display on with ``showing(stream)`` (and it does not with ``--json``), so the
library itself stays silent and the API never writes to a caller's terminal uninvited.

How it renders, decided once per stream:
- a terminal gets one live bar, redrawn in place with ``\\r`` at most every ``redraw_s``;
- a log file or pipe gets plain lines (``label: 3/30 epochs (10%) ... eta 0m12s``) at most
  every ``interval_s`` (``AUTOKD_PROGRESS_INTERVAL``, default 10 s), plus one closing line,
  so a slow epoch-per-minute run logs every epoch and a fast one does not flood the log.

Why not tqdm or rich.progress: tqdm is not a declared dependency, and rich's progress shows
nothing on a pipe until it stops; both would need the plain-line mode written here anyway.
Why not ``autokd.controllers.base.Progress``: that one is the search's per-trial record.
"""

from __future__ import annotations

import contextlib
import os
import sys
import time
from collections.abc import Callable, Iterator
from types import TracebackType
from typing import Any, TextIO, final

__all__ = ["ProgressMeter", "epoch_callback", "format_eta", "showing"]

_BAR_WIDTH = 24
_REDRAW_S = 0.1


class _Display:
    """Where and how meters render while the CLI shows progress."""

    def __init__(self, stream: TextIO, tty: bool, interval_s: float) -> None:
        self.stream, self.tty, self.interval_s = stream, tty, interval_s


_DISPLAY: _Display | None = None


def _interval_from_env() -> float:
    text = os.environ.get("AUTOKD_PROGRESS_INTERVAL", "10")
    try:
        value = float(text)
    except ValueError:
        return 10.0
    return value if value >= 0 else 10.0


@contextlib.contextmanager
def showing(stream: TextIO | None = None, *, tty: bool | None = None,
            interval_s: float | None = None) -> Iterator[None]:
    """Render every meter created inside the block on ``stream`` (default ``sys.stderr``).

    Args:
        stream: Where progress goes; stdout stays free for results and JSON.
        tty: Force the live bar (True) or plain lines (False); default ``stream.isatty()``.
        interval_s: Seconds between plain lines (default ``AUTOKD_PROGRESS_INTERVAL`` or 10).
    """
    global _DISPLAY
    stream = stream or sys.stderr
    if tty is None:
        tty = bool(getattr(stream, "isatty", lambda: False)())
    previous = _DISPLAY
    _DISPLAY = _Display(stream, tty, _interval_from_env() if interval_s is None else interval_s)
    try:
        yield
    finally:
        _DISPLAY = previous


def format_eta(seconds: float | None) -> str:
    """``1h02m``, ``3m07s`` or ``-`` when unknown."""
    if seconds is None:
        return "-"
    m, s = divmod(round(seconds), 60)
    h, m = divmod(m, 60)
    return f"{h}h{m:02d}m" if h else f"{m}m{s:02d}s"


def _fmt(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:.4g}"
    return str(value)


@final
class ProgressMeter:
    """Counts work done out of ``total`` and shows it with metrics and an ETA.

    Use as a context manager: ``with ProgressMeter(30, "teacher", "epochs") as bar:
    bar.update(1, val_acc=0.91)``. Outside ``showing`` every call is a cheap no-op.
    """

    def __init__(self, total: int, label: str, unit: str = "steps") -> None:
        self.total, self.label, self.unit = max(0, int(total)), label, unit
        self.done = 0
        self.metrics: dict[str, Any] = {}
        self._display = _DISPLAY
        self._start = time.perf_counter()
        self._last_shown = self._start
        self._shown_any = False

    def __enter__(self) -> ProgressMeter:
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.close(failed=exc_type is not None)

    @property
    def elapsed(self) -> float:
        return time.perf_counter() - self._start

    def eta(self) -> float | None:
        """Seconds left at the average rate so far (None before the first unit is done)."""
        if self.done <= 0 or self.total <= 0:
            return None
        return self.elapsed / self.done * max(0, self.total - self.done)

    def update(self, n: int = 1, **metrics: Any) -> None:
        """Add ``n`` units done and replace the shown metrics with ``metrics`` (if any)."""
        self.done += n
        if metrics:
            self.metrics = metrics
        if self._display is None:
            return
        now = time.perf_counter()
        wait = _REDRAW_S if self._display.tty else self._display.interval_s
        if now - self._last_shown >= wait or (self._display.tty and self.done >= self.total):
            self._last_shown = now
            self._show(final=False)

    def close(self, failed: bool = False) -> None:
        """End the bar's line (terminal) or write the closing line (log)."""
        if self._display is None:
            return
        if self._display.tty:
            if self._shown_any:
                self._show(final=True)
        elif not failed:
            self._show(final=True)
        self._display = None

    def line(self, final: bool = False) -> str:
        """The text shown: label, count, percent, metrics, and ETA (or elapsed when done)."""
        pct = f" ({100 * self.done / self.total:.0f}%)" if self.total else ""
        text = f"{self.label}: {self.done}/{self.total} {self.unit}{pct}"
        if self.metrics:
            text += " " + " ".join(f"{k} {_fmt(v)}" for k, v in self.metrics.items())
        when = f"done in {format_eta(self.elapsed)}" if final else f"eta {format_eta(self.eta())}"
        return f"{text} | {when}"

    def _show(self, final: bool) -> None:
        display = self._display
        assert display is not None
        if display.tty:
            filled = int(_BAR_WIDTH * self.done / self.total) if self.total else _BAR_WIDTH
            bar = "#" * filled + "-" * (_BAR_WIDTH - filled)
            display.stream.write(f"\r[{bar}] {self.line(final)}\x1b[K" + ("\n" if final else ""))
        else:
            display.stream.write(self.line(final) + "\n")
        display.stream.flush()
        self._shown_any = True


def epoch_callback(meter: ProgressMeter) -> Callable[[Any, int, dict[str, float]], None]:
    """A trainer ``on_epoch_end`` callback that advances ``meter`` by one epoch."""

    def on_epoch_end(_trainer: Any, epoch: int, metrics: dict[str, float]) -> None:
        shown = {"epoch": epoch}
        if "val_accuracy" in metrics:
            shown["val_acc"] = metrics["val_accuracy"]
        if "train_loss" in metrics:
            shown["loss"] = metrics["train_loss"]
        meter.update(1, **shown)

    return on_epoch_end
