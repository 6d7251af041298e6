"""Per-epoch checkpoints of running trials, so a killed search continues them, not restarts them.

Why: on real data one trial trains for minutes to hours; a search that is killed (Ctrl-C twice,
a lost machine, a pre-empted job) re-queues its running trials, and without a checkpoint their
retries start again from epoch 0. After an epoch the trial's full ``TrainState`` is saved; the
retry, which trains the same candidate with the same seed on the same split, finds it and
continues from that epoch, giving exactly the student an uninterrupted run gives.

How:
- The key is what the run *is*, not the trial's number: a hash of the family, spec, recipe,
  training settings (seed, epochs, schedule, metric), the split hash and the teacher hash. A
  retry (another trial number) of the same run finds the state; anything else never does.
- States live in the study's artifact store (``results/<name>/artifacts`` or ``--artifacts``):
  a directory (written atomically: temp file + rename) is shared by ``--jobs`` workers and by
  workers on a shared filesystem; ``s3://`` / ``gs://`` stores (whose object writes are atomic)
  reach workers on other machines.
- Throttled: a state is written after an epoch only once ``every`` seconds have passed since the
  trial's last write (or its start), so trials of a few seconds never write one and a long trial
  loses at most ``every`` seconds plus one epoch. ``every = 0`` turns checkpoints off.
- A trial that finishes (complete, pruned, diverged, an invalid candidate) deletes its state; a
  trial interrupted or killed keeps it for its retry.
"""

from __future__ import annotations

import hashlib
import json
import logging
import tempfile
import time
from pathlib import Path
from typing import Any

from autokd.artifacts import artifact_store
from autokd.config import TrainConfig
from autokd.train_state import TrainState

__all__ = ["TrialCheckpoints", "run_key"]

logger = logging.getLogger(__name__)
_FOLDER = "checkpoints"


def run_key(family: str, spec: dict[str, Any], recipe: dict[str, Any], train: dict[str, Any],
            cfg: TrainConfig, split_hash: str, teacher_hash: str | None) -> str:
    """The identity of one training run (what must match for a state to be continued).

    ``device`` and ``threads`` are left out: they change where a run trains, not what it is.
    """
    settings = {k: v for k, v in vars(cfg).items() if k not in ("device", "threads", "amp")}
    doc = {"family": family, "spec": spec, "recipe": recipe, "train": train,
           "settings": settings, "split": split_hash, "teacher": teacher_hash}
    text = json.dumps(doc, sort_keys=True, default=str)
    return hashlib.sha256(text.encode()).hexdigest()[:32]


class TrialCheckpoints:
    """The training states of running trials in one artifact store, by ``run_key``."""

    def __init__(self, location: str, every: float) -> None:
        self.location, self.every = location, float(every)
        scheme, sep, rest = location.partition("://")
        local = not sep or scheme == "file"
        self.folder = Path(rest if sep else location).expanduser() / _FOLDER if local else None

    @property
    def enabled(self) -> bool:
        return self.every > 0

    # -- storage ----------------------------------------------------------------------------------
    def _path(self, key: str) -> Path:
        assert self.folder is not None
        return self.folder / f"{key}.pt"

    def save(self, key: str, state: TrainState) -> None:
        """Write ``state`` atomically (a kill mid-write leaves the previous state)."""
        if self.folder is not None:
            self.folder.mkdir(parents=True, exist_ok=True)
            state.save(self._path(key))
            return
        with tempfile.TemporaryDirectory() as tmp:
            path = state.save(Path(tmp) / "state.pt")
            with open(path, "rb") as fh:
                artifact_store(self.location).write(f"{_FOLDER}-{key}.pt", fh)

    def load(self, key: str) -> TrainState | None:
        """The saved state of run ``key``; None when there is none or it cannot be read (the
        run then starts from epoch 0, as it would have without checkpoints)."""
        try:
            if self.folder is not None:
                path = self._path(key)
                return TrainState.load(path) if path.is_file() else None
            return self._load_remote(key)
        except Exception as exc:  # noqa: BLE001 - a damaged or foreign file: start again
            logger.warning("ignoring the checkpoint of run %s: %s", key, str(exc)[:200])
            return None

    def _load_remote(self, key: str) -> TrainState | None:
        from optuna.artifacts.exceptions import ArtifactNotFound

        try:
            reader = artifact_store(self.location).open_reader(f"{_FOLDER}-{key}.pt")
        except ArtifactNotFound:
            return None
        with reader, tempfile.TemporaryDirectory() as tmp:
            path = Path(tmp) / "state.pt"
            path.write_bytes(reader.read())
            return TrainState.load(path)

    def remove(self, key: str) -> None:
        """Delete run ``key``'s state; one already gone is not an error."""
        if self.folder is not None:
            self._path(key).unlink(missing_ok=True)
            return
        from optuna.artifacts.exceptions import ArtifactNotFound

        try:
            artifact_store(self.location).remove(f"{_FOLDER}-{key}.pt")
        except (OSError, ArtifactNotFound):
            pass

    # -- the trainer callback ---------------------------------------------------------------------
    def saver(self, key: str) -> Any:
        """An ``on_epoch_end`` callback that saves the trainer's state at most every
        ``self.every`` seconds (a failed write is logged, never fails the trial)."""
        last = [time.monotonic()]

        def save(trainer: Any, epoch: int, _metrics: dict[str, float]) -> None:
            if time.monotonic() - last[0] < self.every:
                return
            try:
                self.save(key, trainer.snapshot())
            except Exception as exc:  # noqa: BLE001 - a full disk must not cost the trial
                logger.warning("checkpoint of epoch %d not saved: %s", epoch, str(exc)[:200])
            last[0] = time.monotonic()

        return save
