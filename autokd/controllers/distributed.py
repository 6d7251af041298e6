"""Sharing one study between workers: budget slots, heartbeats, stale-trial retry, outages.

Why a module of its own: every controller that asks for trials in a shared study (several
``autokd worker`` processes, ``--jobs N``, or one search plus remote workers) needs the same four
guarantees, and each must hold in the storage, not in one process's memory:

* **Exact budget.** A worker starts a trial only while ``finished + in flight < budget``, checked
  and claimed (``study.ask``) under a storage-wide lock (a PostgreSQL advisory lock, a file lock
  beside a SQLite file), so two workers can never both take the last slot. In-flight trials
  that later fail free their slot; a worker waits while others' trials fill the budget, because
  one of them may still die and need a retry.
* **No lost work.** A running trial records a heartbeat every ``heartbeat_interval`` seconds;
  a trial whose heartbeat is older than the grace period belonged to a killed worker. The next
  worker to claim a slot marks it FAIL (``fail_reason``) and re-queues its parameters with
  ``retry_of`` set; the FAIL transition happens once in the storage, so exactly one retry is
  queued however many workers sweep at the same moment.
* **No half-recorded trial.** A trial is told COMPLETE only after all its attributes are
  written; a trial cut off by a lost database connection stays RUNNING and is then failed and
  re-queued (by its own worker after reconnecting, or by any worker once its heartbeat is stale).
* **Outages are survived.** ``run_resilient`` retries with exponential back-off while the
  storage is unreachable, then fails with one clear line.
"""

from __future__ import annotations

import contextlib
import logging
import os
import socket
import threading
import time
import warnings
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import optuna
from optuna.exceptions import UpdateFinishedTrialError
from optuna.trial import FrozenTrial, TrialState

from autokd.errors import StudyError
from autokd.record import TrialLog, patch_trial, retry_attrs

__all__ = ["Backoff", "Heartbeat", "StorageLost", "ask_trial", "fail_and_requeue",
           "heartbeat_interval", "in_flight", "is_storage_error", "run_resilient", "run_trial",
           "storage_error_text", "study_lock", "sweep_stale", "wait_for_storage", "worker_id"]

logger = logging.getLogger(__name__)
_LOCK_NAMESPACE = 0x414B44  # "AKD": first key of PostgreSQL advisory locks taken by autokd
_LOCAL_LOCKS: dict[int, threading.Lock] = {}
_WARNED: set[str] = set()


class StorageLost(Exception):
    """The storage became unreachable; ``trial_id`` is the trial this worker had in flight."""

    def __init__(self, cause: BaseException, trial_id: int | None = None) -> None:
        super().__init__(_one_line(cause))
        self.cause, self.trial_id = cause, trial_id


@dataclass(frozen=True)
class Backoff:
    """Waits between reconnection attempts: ``first``, x``factor`` each time, up to ``total``."""

    first: float = 1.0
    factor: float = 2.0
    cap: float = 30.0
    total: float = 120.0

    def delays(self) -> Iterator[float]:
        spent, delay = 0.0, self.first
        while spent < self.total:
            step = min(delay, self.cap, self.total - spent)
            yield step
            spent += step
            delay *= self.factor


def worker_id() -> str:
    """``host:pid``, recorded on each trial as ``worker`` (which process ran it)."""
    return f"{socket.gethostname()}:{os.getpid()}"


def _one_line(exc: BaseException) -> str:
    from autokd.study import redact_url

    text = str(exc).strip().splitlines()
    return redact_url(f"{type(exc).__name__}: {text[0] if text else ''}")[:300]


def storage_error_text(exc: BaseException) -> str:
    """One line naming the database's own error (not Optuna's generic commit message)."""
    import sqlalchemy.exc as sa

    for cur in _chain(exc):
        if isinstance(cur, sa.DBAPIError) and cur.orig is not None:
            return _one_line(cur.orig)
    return _one_line(list(_chain(exc))[-1])


def is_storage_error(exc: BaseException) -> bool:
    """True when ``exc`` (or what caused it) says the database cannot be reached or used."""
    import sqlalchemy.exc as sa

    kinds = (StorageLost, optuna.exceptions.StorageInternalError, sa.OperationalError,
             sa.InterfaceError, sa.TimeoutError)
    for cur in _chain(exc):
        if isinstance(cur, kinds):
            return True
        if isinstance(cur, sa.DBAPIError) and cur.connection_invalidated:
            return True
    return False


def _chain(exc: BaseException) -> Iterator[BaseException]:
    """``exc`` and what caused it (``raise ... from``) or was being handled when it was raised
    (unless raised ``from None``: such an error already explains itself)."""
    seen: set[int] = set()
    cur: BaseException | None = exc
    while cur is not None and id(cur) not in seen:
        seen.add(id(cur))
        yield cur
        cur = cur.__cause__ if cur.__suppress_context__ else (cur.__cause__ or cur.__context__)


# -- the storage-wide lock ---------------------------------------------------------------------
def _backend(study: optuna.Study) -> Any:
    storage = study._storage
    return getattr(storage, "_backend", storage)  # RDBStorage sits behind Optuna's cache


@contextlib.contextmanager
def study_lock(study: optuna.Study, timeout: float = 120.0) -> Iterator[None]:
    """Serialise budget checks and claims of all workers of ``study``.

    PostgreSQL: an advisory lock (released by the server if the holder dies); SQLite: a file lock
    beside the database (the file is local, so are its writers); in-memory: a thread lock.
    Other databases get no lock: the budget may then be exceeded by concurrent claims.
    """
    backend = _backend(study)
    url = str(getattr(backend, "url", ""))
    if url.startswith("postgresql"):
        with _pg_lock(backend, study._study_id, timeout):
            yield
    elif url.startswith("sqlite") and _sqlite_path(url):
        from filelock import FileLock

        with FileLock(f"{_sqlite_path(url)}.autokd-lock", timeout=timeout):
            yield
    elif url:
        kind = url.split(":", 1)[0]
        if kind not in _WARNED:
            _WARNED.add(kind)
            logger.warning("no cross-worker lock for %s storages: concurrent workers may exceed "
                           "the trial budget by one trial each", kind)
        yield
    else:
        with _LOCAL_LOCKS.setdefault(id(backend), threading.Lock()):
            yield


def _sqlite_path(url: str) -> str | None:
    from sqlalchemy.engine import make_url

    db = make_url(url).database
    return None if not db or db == ":memory:" else str(Path(db).resolve())


@contextlib.contextmanager
def _pg_lock(backend: Any, study_id: int, timeout: float) -> Iterator[None]:
    from sqlalchemy import text

    keys = {"a": _LOCK_NAMESPACE, "b": int(study_id) & 0x7FFFFFFF}
    with backend.engine.connect() as conn:
        deadline = time.monotonic() + timeout
        while not conn.execute(text("SELECT pg_try_advisory_lock(:a, :b)"), keys).scalar():
            if time.monotonic() > deadline:
                raise StudyError(f"waited {timeout:g} s for the study lock held by another worker")
            time.sleep(0.05)
        try:
            yield
        finally:
            conn.execute(text("SELECT pg_advisory_unlock(:a, :b)"), keys)
            conn.commit()


# -- stale trials and retries ------------------------------------------------------------------
def heartbeat_interval(study: optuna.Study) -> int | None:
    """Seconds between heartbeats, or None for storages without them (in-memory, journal)."""
    get = getattr(study._storage, "get_heartbeat_interval", None)
    return get() if get else None


def sweep_stale(study: optuna.Study) -> list[int]:
    """Fail trials whose worker stopped sending heartbeats and re-queue them; call under the lock.

    Returns the numbers of the trials re-queued (by this call).
    """
    interval = heartbeat_interval(study)
    if not interval:
        return []
    grace = getattr(_backend(study), "grace_period", None) or 2 * interval
    reason = f"worker stopped mid-trial (no heartbeat for {grace} s)"
    stale = study._storage._get_stale_trial_ids(study._study_id)
    out = [n for n in (fail_and_requeue(study, tid, reason) for tid in stale) if n is not None]
    if out:
        logger.warning("re-queued trial(s) %s of stopped workers", ", ".join(map(str, out)))
    return out


def fail_and_requeue(study: optuna.Study, trial_id: int, reason: str) -> int | None:
    """RUNNING -> FAIL with ``fail_reason``, then queue the same parameters once.

    Only the caller whose FAIL transition succeeds queues the retry, so concurrent sweeps queue
    exactly one. Returns the trial number when this call re-queued it.
    """
    storage = study._storage
    try:
        patch_trial(study, trial_id, fail_reason=reason)
        if not storage.set_trial_state_values(trial_id, state=TrialState.FAIL):
            return None
    except UpdateFinishedTrialError:
        return None  # finished meanwhile, or another worker failed it first
    trial = storage.get_trial(trial_id)
    if trial.params:
        study.enqueue_trial(trial.params, user_attrs=retry_attrs(trial.number))
    return trial.number


def in_flight(study: optuna.Study) -> list[FrozenTrial]:
    """Trials running in any worker (stale ones count until a sweep fails them)."""
    return study.get_trials(deepcopy=False, states=(TrialState.RUNNING,))


class Heartbeat:
    """Record a trial's heartbeat every interval on a daemon thread, riding out outages.

    Why not Optuna's own thread: it dies on the first database error and prints a traceback;
    during an outage this one keeps trying, so a trial that survives a short outage is not
    declared dead.
    """

    def __init__(self, study: optuna.Study, trial_id: int) -> None:
        self.storage, self.trial_id = study._storage, trial_id
        self.interval = heartbeat_interval(study)
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def __enter__(self) -> Heartbeat:
        if self.interval:
            self.storage.record_heartbeat(self.trial_id)
            self._thread = threading.Thread(target=self._beat, daemon=True,
                                            name=f"autokd-heartbeat-{self.trial_id}")
            self._thread.start()
        return self

    def _beat(self) -> None:
        while not self._stop.wait(self.interval):
            try:
                self.storage.record_heartbeat(self.trial_id)
            except Exception as exc:  # outage: keep trying; the trial itself will notice
                logger.debug("heartbeat of trial id %d failed: %s", self.trial_id, exc)

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=10)


# -- outages -----------------------------------------------------------------------------------
def wait_for_storage(study: optuna.Study, backoff: Backoff, cause: BaseException) -> None:
    """Block until the storage answers again; raise ``StudyError`` when ``backoff`` runs out."""
    tries = 0
    for delay in backoff.delays():
        tries += 1
        logger.warning("storage unreachable (%s); retry %d in %.0f s", storage_error_text(cause),
                       tries, delay)
        time.sleep(delay)
        try:
            study._storage.get_study_id_from_name(study.study_name)
            return
        except Exception as exc:
            if not is_storage_error(exc):
                raise
            cause = exc
    raise StudyError(f"lost the connection to the study's storage and could not reconnect within "
                     f"{backoff.total:g} s ({tries} attempts): {storage_error_text(cause)}; "
                     "trials in flight will be retried when workers restart") from None


def run_resilient(run_once: Callable[[], Any], study: optuna.Study,
                  backoff: Backoff | None = None) -> Any:
    """Call ``run_once`` (one controller run) again after each outage, until it returns.

    A trial cut off by the outage is failed and re-queued by this worker once it reconnects;
    if another worker's sweep got there first, that one queued the retry.
    """
    backoff = backoff or Backoff()
    while True:
        try:
            return run_once()
        except Exception as exc:
            if not is_storage_error(exc):
                raise
            wait_for_storage(study, backoff, exc)
            trial_id = exc.trial_id if isinstance(exc, StorageLost) else None
            if trial_id is not None:
                with study_lock(study):
                    fail_and_requeue(study, trial_id, "database connection lost mid-trial")
            logger.warning("storage reachable again; resuming the search")


# -- one trial ---------------------------------------------------------------------------------
def ask_trial(study: optuna.Study) -> optuna.Trial:
    """``study.ask()`` plus the first heartbeat and the ``worker`` attribute; call under the lock.

    The heartbeat is written at once so that a worker killed right after claiming still leaves a
    trial the sweep can recognise as stale.
    """
    with warnings.catch_warnings():  # Optuna warns that heartbeats are meant for optimize()
        warnings.simplefilter("ignore")
        trial = study.ask()
    if heartbeat_interval(study):
        study._storage.record_heartbeat(trial._trial_id)
    TrialLog(trial).flush(worker=worker_id())
    return trial


def run_trial(study: optuna.Study, trial: optuna.Trial,
              fn: Callable[[optuna.Trial], Any]) -> FrozenTrial | None:
    """Evaluate ``fn(trial)`` with heartbeats and tell the outcome, as ``study.optimize`` does.

    Returns the finished trial, or None when another worker failed it meanwhile (its heartbeat
    went stale, e.g. across an outage): its retry runs elsewhere, so this result is dropped.

    Raises:
        StorageLost: the storage became unreachable; the trial stays RUNNING until re-queued.
        KeyboardInterrupt: after the trial is failed as ``interrupted`` and re-queued.
    """
    tid = trial._trial_id
    try:
        with Heartbeat(study, tid):
            values, state = _evaluate(fn, trial)
        study.tell(trial, values, state=state)
    except KeyboardInterrupt:
        _interrupted(study, tid)
        raise
    except Exception as exc:
        if _caused_by(exc, UpdateFinishedTrialError):
            logger.warning("trial %d was failed by another worker (missed heartbeats); its retry "
                           "runs instead and this result is dropped", trial.number)
            return None
        if is_storage_error(exc):
            raise StorageLost(exc, tid) from exc
        raise
    return study._storage.get_trial(tid)


def _evaluate(fn: Callable[[optuna.Trial], Any],
              trial: optuna.Trial) -> tuple[Any, TrialState | None]:
    try:
        return fn(trial), None
    except optuna.TrialPruned:
        return None, TrialState.PRUNED
    except Exception as exc:
        if is_storage_error(exc) or _caused_by(exc, UpdateFinishedTrialError):
            raise
        logger.debug("trial %d failed", trial.number, exc_info=True)
        return None, TrialState.FAIL


def _interrupted(study: optuna.Study, trial_id: int) -> None:
    """Ctrl-C: fail the trial as ``interrupted`` and queue it again, so nothing is lost."""
    try:
        with study_lock(study, timeout=10):
            fail_and_requeue(study, trial_id, "interrupted")
    except Exception as exc:  # never hide the interrupt behind a cleanup error
        logger.warning("could not re-queue the interrupted trial: %s", _one_line(exc))


def _caused_by(exc: BaseException, kind: type[BaseException]) -> bool:
    return any(isinstance(cur, kind) for cur in _chain(exc))
