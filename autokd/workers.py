"""Scale-out: ``autokd worker`` joins a study from any process or machine; ``--jobs N`` locally.

The study is the whole hand-over. ``autokd search`` records in it (``publish_study``) what a
worker needs to rebuild the search: the resolved configuration, the search-space YAML itself
(its path may not exist elsewhere), the dataset reference with its split hash, and the teacher
file(s) as Optuna artifacts. A worker given only the storage URL loads all that, refuses to start
when its data or teacher hash differs, and runs trials until the study's budget, counted in the
storage across all workers, is spent (``autokd.controllers.distributed`` keeps that count exact,
retries trials of killed workers once, and rides out database outages).

``--jobs N`` starts N ``autokd worker`` processes on this machine, each with
``cores // N`` torch threads, on the same storage (the default SQLite file is safe for several
writers: WAL journal, 30 s busy timeout, claims serialised by a file lock; see
tests/test_distributed.py), and shows their trials as one progress stream.
"""

from __future__ import annotations

import dataclasses
import logging
import os
import signal
import subprocess
import sys
import tempfile
import time
import zlib
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import optuna
import yaml

from autokd.config import CostConfig, DataConfig, SearchSettings, TrainConfig, from_dict, to_dict
from autokd.controllers.base import Budget, Progress, ProgressFn, count_done
from autokd.controllers.distributed import (
    Backoff,
    is_storage_error,
    run_resilient,
    storage_error_text,
    worker_id,
)
from autokd.data import DataSplits, load_data
from autokd.errors import ConfigError, StudyError
from autokd.objective import Objective
from autokd.pareto import pareto_front
from autokd.search import SearchConfig, _check_results_dir, _controller_module, finalize
from autokd.space import SearchSpace
from autokd.study import StudyPaths, open_study, redact_url, storage_url, study_paths
from autokd.teachers import Teacher, file_hash, load_teachers

__all__ = [
    "SEARCH_CONFIG_ATTR",
    "WorkerOptions",
    "WorkerOutcome",
    "artifact_store",
    "publish_study",
    "run_controllers",
    "run_pool",
    "run_worker",
    "run_worker_pool",
    "search_worker_args",
    "worker_threads",
]

logger = logging.getLogger(__name__)
SEARCH_CONFIG_ATTR = "search_config"


# -- what the search records for its workers ---------------------------------------------------
def artifact_store(location: str) -> Any:
    """An Optuna artifact store: ``DIR``, ``file://DIR``, ``s3://BUCKET`` or ``gs://BUCKET``."""
    from optuna.artifacts import Backoff as StoreBackoff
    from optuna.artifacts import FileSystemArtifactStore

    scheme, sep, rest = location.partition("://")
    if not sep or scheme == "file":
        path = Path(rest if sep else location).expanduser()
        path.mkdir(parents=True, exist_ok=True)
        return FileSystemArtifactStore(str(path))
    if scheme in ("s3", "gs"):
        return StoreBackoff(_cloud_store(scheme, rest.strip("/")))
    raise ConfigError(f"bad --artifacts {location!r}: use a directory, file://DIR, s3://BUCKET or "
                      "gs://BUCKET")


def _cloud_store(scheme: str, bucket: str) -> Any:
    if not bucket or "/" in bucket:
        raise ConfigError(f"--artifacts {scheme}://BUCKET takes a bucket name only, "
                          f"got {bucket!r}")
    try:
        if scheme == "s3":
            from optuna.artifacts import Boto3ArtifactStore

            return Boto3ArtifactStore(bucket)
        from optuna.artifacts import GCSArtifactStore

        return GCSArtifactStore(bucket)
    except ImportError as exc:
        raise ConfigError(f"--artifacts {scheme}:// needs the {exc.name} package") from None


def _store_location(cfg: SearchConfig, paths: StudyPaths) -> str:
    loc = cfg.artifacts or str(paths.root / "artifacts")
    return loc if "://" in loc else str(Path(loc).expanduser().resolve())


def publish_study(study: optuna.Study, cfg: SearchConfig, space: SearchSpace,
                  paths: StudyPaths) -> None:
    """Record everything a worker on another machine needs (study attr ``search_config``).

    Teacher files are uploaded as study artifacts once (a resumed search reuses them when the
    file is unchanged); teachers given as ``module:function`` stay references, which a worker
    resolves on its own machine (the hash check catches a different one).
    """
    old = study.user_attrs.get(SEARCH_CONFIG_ATTR) or {}
    location = _store_location(cfg, paths)
    refs = cfg.teacher or [str(paths.root / "teacher.pt")]
    known = {t.get("sha"): t for t in old.get("teachers", []) if t.get("artifact_id")}
    teachers = [_publish_teacher(study, ref, location, known) for ref in refs]
    study.set_user_attr(SEARCH_CONFIG_ATTR, {
        "data": to_dict(cfg.data),
        "space": {"source": space.source, "yaml": _space_yaml(space)},
        "teachers": teachers,
        "trust": cfg.trust,
        "strategy": cfg.strategy, "sampler": cfg.sampler, "pruner": cfg.pruner,
        "tuner": cfg.tuner, "seed": cfg.seed, "strategy_options": cfg.strategy_options,
        "artifacts": location,
        "started_at": time.time(),  # a time budget ends at started_at + seconds for every worker
    })


def _space_yaml(space: SearchSpace) -> dict[str, Any]:
    try:
        raw = yaml.safe_load(Path(space.source).read_text())
    except (OSError, yaml.YAMLError) as exc:
        raise StudyError(f"cannot re-read the search space {space.source} to record it: {exc}") \
            from None
    return raw


def _publish_teacher(study: optuna.Study, ref: str, location: str,
                     known: dict[str, dict[str, Any]]) -> dict[str, Any]:
    path = Path(ref)
    if not path.is_file():
        return {"ref": ref}
    sha = file_hash(path)
    if sha in known:
        return {**known[sha], "ref": ref}
    from optuna.artifacts import upload_artifact

    artifact_id = upload_artifact(artifact_store=artifact_store(location), file_path=str(path),
                                  study_or_trial=study)
    return {"ref": ref, "file": path.name, "sha": sha, "artifact_id": artifact_id}


# -- one worker --------------------------------------------------------------------------------
@dataclass
class WorkerOptions:
    """What ``autokd worker`` takes; everything else comes from the study."""

    name: str
    storage: str | None = None
    results: str = "results"
    artifacts: str | None = None
    device: str = "auto"
    threads: int | None = None
    seed: int | None = None  # sampler seed; None: derived from host and pid (workers differ)
    trust: bool = False
    dataset: str | None = None  # the same data at another path on this machine
    retry_seconds: float = 120.0  # how long to wait for an unreachable database


@dataclass
class WorkerOutcome:
    study: optuna.Study
    paths: StudyPaths
    status: str  # "finished" | "already_finished"
    ran: int = 0  # trials this worker finished
    budget: Budget = field(default_factory=Budget)


def search_worker_args(cfg: SearchConfig, paths: StudyPaths) -> list[str]:
    """``autokd worker`` options that make a local worker match ``cfg`` (``--jobs``)."""
    args = ["--results", str(cfg.results), "--artifacts", _store_location(cfg, paths),
            "--device", cfg.device]
    return args + (["--trust"] if cfg.trust else [])


def worker_threads(jobs: int, cores: int | None = None) -> int:
    """Torch threads per local worker so that ``jobs x threads <= cores``."""
    cores = cores or len(os.sched_getaffinity(0))
    return max(1, cores // max(1, jobs))


def _open(opts: WorkerOptions) -> tuple[optuna.Study, str, dict[str, Any]]:
    paths = study_paths(opts.name, opts.results)
    url = opts.storage or os.environ.get("AUTOKD_STORAGE")
    if url is None:
        if not paths.db.exists():
            raise StudyError(f"give --storage URL (or set AUTOKD_STORAGE): no local study "
                             f"{paths.db} to join")
        url = storage_url(paths, None)
    study = open_study(opts.name, storage_url(paths, url), create=False)
    spec = study.user_attrs.get(SEARCH_CONFIG_ATTR)
    if not spec:
        raise StudyError(f"study {opts.name!r} in {redact_url(url)} does not record its search "
                         "configuration; start or resume it with `autokd search` first")
    return study, url, spec


def _search_config(spec: dict[str, Any], study: optuna.Study, opts: WorkerOptions,
                   url: str) -> SearchConfig:
    data = from_dict(DataConfig, spec["data"])
    if opts.dataset:
        data = dataclasses.replace(data, source=opts.dataset)
    seed = opts.seed if opts.seed is not None else \
        int(spec.get("seed", 0)) + zlib.crc32(worker_id().encode()) % 100_000
    return SearchConfig(
        data=data.validate(), teacher=[t["ref"] for t in spec["teachers"]], trust=opts.trust,
        space=spec["space"]["source"], strategy=spec["strategy"], sampler=spec["sampler"],
        pruner=spec["pruner"], tuner=spec.get("tuner", "tpe"), settings=_settings(study, opts),
        name=opts.name, results=opts.results, storage=url, seed=seed, device=opts.device,
        strategy_options=spec.get("strategy_options") or {}, artifacts=opts.artifacts)


def _settings(study: optuna.Study, opts: WorkerOptions) -> SearchSettings:
    raw = dict(study.user_attrs.get("settings") or {})
    train = from_dict(TrainConfig, raw.pop("train", None))
    cost = from_dict(CostConfig, raw.pop("cost", None))
    train.device = opts.device
    return from_dict(SearchSettings, {**raw, "train": train, "cost": cost}).validate()


def _check_data(data: DataSplits, study: optuna.Study) -> None:
    want = study.user_attrs.get("dataset_hash")
    if want != data.split_hash:
        raise StudyError(f"this worker's data differs from study {study.study_name!r}: "
                         f"{data.name} splits to {data.split_hash} here but the study ran on "
                         f"{want} (same data, fractions and --data-seed needed); not starting")


def _teacher(spec: dict[str, Any], study: optuna.Study, opts: WorkerOptions, paths: StudyPaths,
             data: DataSplits) -> Teacher:
    location = opts.artifacts or spec.get("artifacts") or str(paths.root / "artifacts")
    refs = [_teacher_file(entry, location, paths) for entry in spec["teachers"]]
    teacher = load_teachers(refs, trust=opts.trust, data=data)
    want = study.user_attrs.get("teacher_hash")
    if teacher.hash != want:
        raise StudyError(f"this worker's teacher differs from study {study.study_name!r}: hash "
                         f"{teacher.hash} here, {want} in the study; not starting")
    return teacher


def _teacher_file(entry: dict[str, Any], location: str, paths: StudyPaths) -> str:
    """The teacher file on this machine: the original path, a cached copy, or a download."""
    if "artifact_id" not in entry:
        return entry["ref"]
    cached = paths.root / "teachers" / f"{entry['sha']}-{entry['file']}"
    for candidate in (Path(entry["ref"]), cached):
        if candidate.is_file() and file_hash(candidate) == entry["sha"]:
            return str(candidate)
    return str(_download(entry, location, cached))


def _download(entry: dict[str, Any], location: str, dest: Path) -> Path:
    from optuna.artifacts import download_artifact
    from optuna.artifacts.exceptions import ArtifactNotFound

    dest.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=dest.parent, prefix=f".{dest.name}.", suffix=".tmp")
    os.close(fd)
    os.unlink(tmp)  # download_artifact refuses to overwrite
    try:
        download_artifact(artifact_store=artifact_store(location), file_path=tmp,
                          artifact_id=entry["artifact_id"])
        os.replace(tmp, dest)  # atomic: --jobs workers may download at the same time
    except (OSError, ArtifactNotFound) as exc:
        raise StudyError(f"cannot fetch teacher {entry['file']} from the artifact store "
                         f"{location}: {exc}; pass --artifacts with the store the search used "
                         "(a shared directory or s3://BUCKET)") from None
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)
    if file_hash(dest) != entry["sha"]:
        raise StudyError(f"teacher {entry['file']} from {location} does not match the study's "
                         f"copy (hash {file_hash(dest)} != {entry['sha']})")
    return dest


def _remaining(study: optuna.Study, spec: dict[str, Any]) -> Budget:
    raw = study.user_attrs.get("budget") or {}
    if raw.get("seconds"):
        left = float(raw["seconds"]) - (time.time() - float(spec.get("started_at", time.time())))
        return Budget(seconds=max(0.0, left))
    return Budget(trials=int(raw.get("trials") or 0))


def _spent(study: optuna.Study, budget: Budget) -> bool:
    if budget.seconds is not None:
        return budget.seconds <= 0
    return count_done(study) >= (budget.trials or 0)


def _set_threads(threads: int | None) -> None:
    if threads is not None:
        import torch

        torch.set_num_threads(threads)


def run_worker(opts: WorkerOptions, progress: ProgressFn | None = None) -> WorkerOutcome:
    """Join study ``opts.name`` and run trials until its budget is spent.

    Raises:
        StudyError: no such study, data or teacher differ from the study's, the teacher cannot
            be fetched, or the database stayed unreachable past ``opts.retry_seconds`` (or was
            lost while the worker was starting).
    """
    try:
        return _run_worker(opts, progress)
    except Exception as exc:
        if not is_storage_error(exc):
            raise
        raise StudyError(f"lost the connection to the study's storage while starting: "
                         f"{storage_error_text(exc)}") from None


def _run_worker(opts: WorkerOptions, progress: ProgressFn | None) -> WorkerOutcome:
    _set_threads(opts.threads)
    study, url, spec = _open(opts)
    paths = study_paths(opts.name, opts.results)
    _check_results_dir(paths.root)
    cfg = _search_config(spec, study, opts, url)
    data = load_data(cfg.data)
    _check_data(data, study)
    teacher = _teacher(spec, study, opts, paths, data)
    space = SearchSpace.from_dict(spec["space"]["yaml"], spec["space"]["source"])
    budget = _remaining(study, spec)
    if _spent(study, budget):
        return WorkerOutcome(study, paths, "already_finished", 0, budget)
    module = _controller_module(cfg.strategy)
    study = module.open_for_search(opts.name, url, cfg, cfg.settings)
    objective = Objective(space, data, teacher, cfg.settings, paths,
                          study.user_attrs.get("teacher") or {}, strategy=cfg.strategy)
    me = worker_id()
    before = {t.number for t in study.get_trials(deepcopy=False) if t.state.is_finished()}
    try:
        run_controllers(module, study, objective, budget, progress, cfg,
                        Backoff(total=opts.retry_seconds))
    finally:
        finalize(study, paths)
    ran = sum(1 for t in study.get_trials(deepcopy=False) if t.state.is_finished()
              and t.number not in before and t.user_attrs.get("worker") == me)
    return WorkerOutcome(study, paths, "finished", ran, budget)


def run_worker_pool(opts: WorkerOptions, jobs: int,
                    progress: ProgressFn | None = None) -> WorkerOutcome:
    """``autokd worker --jobs N``: N local workers with ``opts``, one progress stream."""
    study, url, spec = _open(opts)
    paths = study_paths(opts.name, opts.results)
    budget = _remaining(study, spec)
    if _spent(study, budget):
        return WorkerOutcome(study, paths, "already_finished", 0, budget)
    args = ["--results", opts.results, "--device", opts.device,
            "--retry-seconds", str(opts.retry_seconds)]
    for flag, value in (("--artifacts", opts.artifacts), ("--dataset", opts.dataset)):
        args += [flag, value] if value else []
    args += ["--trust"] if opts.trust else []
    seed = opts.seed if opts.seed is not None else int(spec.get("seed", 0))
    before = {t.number for t in study.get_trials(deepcopy=False) if t.state.is_finished()}
    run_pool(study, paths, url, jobs, args, progress, budget, seed)
    finalize(study, paths)
    ran = sum(1 for t in study.get_trials(deepcopy=False)
              if t.state.is_finished() and t.number not in before)
    return WorkerOutcome(study, paths, "finished", ran, budget)


def run_controllers(module: Any, study: optuna.Study, objective: Objective, budget: Budget,
                    progress: ProgressFn | None, cfg: SearchConfig,
                    backoff: Backoff | None = None) -> None:
    """Run the strategy's controller until the budget is spent, again after each outage.

    A time budget keeps one deadline across restarts, so an outage does not extend it.
    """
    deadline = time.monotonic() + budget.seconds if budget.seconds is not None else None

    def once() -> None:
        if deadline is None:
            left = budget
        else:
            left = Budget(seconds=max(0.0, deadline - time.monotonic()))
        module.make_controller(study, objective, left, progress, cfg).run()

    run_resilient(once, study, backoff)


# -- N local workers ---------------------------------------------------------------------------
@dataclass
class _Child:
    index: int
    log: Path
    proc: subprocess.Popen[bytes]
    restarts: int = 0


def run_pool(study: optuna.Study, paths: StudyPaths, url: str, jobs: int, worker_args: list[str],
             progress: ProgressFn | None = None, budget: Budget | None = None,
             seed: int = 0) -> None:
    """Run ``jobs`` ``autokd worker`` processes on this machine until the budget is spent.

    Children get ``cores // jobs`` torch threads each and the storage URL in ``AUTOKD_STORAGE``
    (never on a command line, where ``ps`` would show credentials); their output goes to
    results/<name>/workers/<i>.log. A child killed by a signal is restarted (its trial is
    retried through the heartbeat sweep); one that exits with an error is not, and if no child
    finishes the budget, the first error is raised.
    """
    threads = worker_threads(jobs)
    if jobs > len(os.sched_getaffinity(0)):
        logger.warning("%d jobs on %d cores: each worker gets 1 thread and they share cores",
                       jobs, len(os.sched_getaffinity(0)))
    env = {**os.environ, "AUTOKD_STORAGE": url, "OMP_NUM_THREADS": str(threads),
           "MKL_NUM_THREADS": str(threads)}
    (paths.root / "workers").mkdir(parents=True, exist_ok=True)

    def spawn(i: int) -> subprocess.Popen[bytes]:
        cmd = [sys.executable, "-m", "autokd", "worker", study.study_name, *worker_args,
               "--threads", str(threads), "--seed", str(seed + i), "--quiet"]
        with open(paths.root / "workers" / f"{i}.log", "ab") as log:
            return subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, env=env)

    children = [_Child(i, paths.root / "workers" / f"{i}.log", spawn(i)) for i in range(jobs)]
    monitor = _Monitor(study, budget or Budget(), progress)
    try:
        _supervise(children, spawn, monitor)
    except KeyboardInterrupt:
        _stop(children)
        raise
    monitor.poll()
    _check_children(children, study, budget)


def _supervise(children: list[_Child], spawn: Callable[[int], subprocess.Popen[bytes]],
               monitor: _Monitor) -> None:
    while any(c.proc.poll() is None for c in children):
        time.sleep(1.0)
        monitor.poll()
        for c in children:
            rc = c.proc.poll()
            if rc is not None and rc < 0 and c.restarts < 3 and not monitor.spent():
                logger.warning("worker %d was killed (signal %d); restarting it", c.index, -rc)
                c.proc, c.restarts = spawn(c.index), c.restarts + 1


def _stop(children: list[_Child], grace: float = 30.0) -> None:
    """Ctrl-C: workers fail their trial as interrupted and re-queue it; give them time to."""
    deadline = time.monotonic() + 3.0  # a terminal's Ctrl-C reached them already
    for sig in (signal.SIGINT, signal.SIGKILL):
        for c in children:
            while c.proc.poll() is None and time.monotonic() < deadline:
                time.sleep(0.1)
            if c.proc.poll() is None:
                c.proc.send_signal(sig)
        deadline = time.monotonic() + grace
    for c in children:
        c.proc.wait()


def _check_children(children: list[_Child], study: optuna.Study, budget: Budget | None) -> None:
    failed = [c for c in children if c.proc.returncode not in (0, None)]
    if not failed:
        return
    if budget is not None and budget.trials is not None and count_done(study) >= budget.trials:
        return
    c = failed[0]
    raise StudyError(f"{len(failed)} of {len(children)} workers failed; worker {c.index} "
                     f"(exit {c.proc.returncode}): {_last_line(c.log)} (log: {c.log})")


def _last_line(path: Path) -> str:
    try:
        lines = [ln for ln in path.read_text(errors="replace").splitlines() if ln.strip()]
    except OSError:
        return "no output"
    return lines[-1][:300] if lines else "no output"


class _Monitor:
    """Turns trials finished by any worker into the same progress lines a single search shows."""

    def __init__(self, study: optuna.Study, budget: Budget,
                 progress: ProgressFn | None) -> None:
        self.study, self.budget, self.progress = study, budget, progress
        self.started = time.monotonic()
        self.seen = {t.number for t in study.get_trials(deepcopy=False) if t.state.is_finished()}
        self.done_at_start = count_done(study)

    def spent(self) -> bool:
        if self.budget.seconds is not None:
            return time.monotonic() - self.started >= self.budget.seconds
        return count_done(self.study) >= (self.budget.trials or 0)

    def poll(self) -> None:
        new = [t for t in self.study.get_trials(deepcopy=False)
               if t.state.is_finished() and t.number not in self.seen]
        for t in sorted(new, key=lambda t: t.datetime_complete or t.datetime_start):
            self.seen.add(t.number)
            if self.progress is not None:
                self.progress(self._progress(t))

    def _progress(self, trial: optuna.trial.FrozenTrial) -> Progress:
        done = count_done(self.study)
        elapsed = time.monotonic() - self.started
        eta = None
        if self.budget.seconds is not None:
            eta = max(0.0, self.budget.seconds - elapsed)
        elif done > self.done_at_start:
            eta = elapsed / (done - self.done_at_start) * max(0, (self.budget.trials or 0) - done)
        front = pareto_front(self.study)
        best = {}
        for i, name in enumerate(self.study.user_attrs.get("objectives", [])):
            pick = max if self.study.directions[i].name == "MAXIMIZE" else min
            if front:
                best[name] = pick(t.values[i] for t in front)
        return Progress(done, self.budget, elapsed, eta, trial, best, len(front))
