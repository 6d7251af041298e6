"""Scale-out: exact shared budget, heartbeat retry, outages, workers, --jobs, PostgreSQL."""

from __future__ import annotations

import multiprocessing
import os
import signal
import subprocess
import sys
import threading
import time
import uuid
from pathlib import Path

import optuna
import pytest
import sqlalchemy.exc
import yaml
from optuna.trial import TrialState

from autokd.controllers.base import Budget
from autokd.controllers.distributed import (
    Backoff,
    StorageLost,
    fail_and_requeue,
    is_storage_error,
    run_resilient,
    study_lock,
    sweep_stale,
)
from autokd.controllers.optuna_search import OptunaController
from autokd.errors import StudyError
from autokd.pool import worker_threads
from autokd.record import SEARCH_ATTR, SearchRecord, TrialRecord, count_done
from autokd.search import SearchConfig, run_search
from autokd.study import StudyPaths, open_study
from autokd.workers import WorkerOptions, run_worker
from tests._helpers import TINY_SPACE, update_search_record

TINY = TINY_SPACE
PG = os.environ.get("AUTOKD_TEST_POSTGRES")
PG_CTL = os.environ.get("AUTOKD_TEST_PG_CTL")
needs_pg = pytest.mark.skipif(not PG, reason="AUTOKD_TEST_POSTGRES is not set (.ci/postgres.sh "
                                             "starts a PostgreSQL server and sets it)")


def _space(tmp_path: Path) -> str:
    path = tmp_path / "tiny.yaml"
    path.write_text(yaml.safe_dump(TINY))
    return str(path)


def _quiet_objective(trial: optuna.Trial) -> float:
    x = trial.suggest_float("x", -1.0, 1.0)
    for i in range(10):  # as many attribute writes as a real trial makes
        trial.set_user_attr(f"a{i}", i)
    time.sleep(0.01)
    return x * x


# -- budget accounting and retries, no training --------------------------------------------------
def _hammer(url: str, budget: int, seed: int) -> None:
    optuna.logging.set_verbosity(optuna.logging.ERROR)
    study = open_study("h", url, directions=["minimize"],
                       sampler=optuna.samplers.RandomSampler(seed=seed))
    OptunaController(study, _quiet_objective, Budget(trials=budget)).run()


def test_sqlite_four_writers_exact_budget(tmp_path) -> None:
    """Why SQLite is the --jobs default: 4 writers, no lost, locked-out or extra trial."""
    url = f"sqlite:///{tmp_path / 'h.db'}"
    open_study("h", url, directions=["minimize"])
    ctx = multiprocessing.get_context("fork")  # children only run Optuna, never torch
    procs = [ctx.Process(target=_hammer, args=(url, 40, i)) for i in range(4)]
    for p in procs:
        p.start()
    for p in procs:
        p.join(timeout=120)
    assert [p.exitcode for p in procs] == [0, 0, 0, 0]
    trials = optuna.load_study(study_name="h", storage=url).trials
    assert [t.state for t in trials] == [TrialState.COMPLETE] * 40
    assert len({t.params["x"] for t in trials}) == 40


def _running_trial(study: optuna.Study) -> optuna.Trial:
    trial = study.ask()
    trial.suggest_float("x", -1.0, 1.0)
    study._storage.record_heartbeat(trial._trial_id)
    return trial


def test_stale_trial_is_failed_and_requeued_exactly_once(tmp_path, monkeypatch) -> None:
    monkeypatch.setenv("AUTOKD_HEARTBEAT", "1,2")
    study = open_study("s", f"sqlite:///{tmp_path / 's.db'}", directions=["minimize"])
    dead = _running_trial(study)
    time.sleep(3.5)
    results: list[list[int]] = []

    def sweep() -> None:  # as workers do: under the study lock
        with study_lock(study):
            results.append(sweep_stale(study))

    threads = [threading.Thread(target=sweep) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert [n for r in results for n in r] == [dead.number]  # one sweeper won
    trials = study.get_trials()
    assert trials[dead.number].state == TrialState.FAIL
    assert TrialRecord.of(trials[dead.number]).get("fail_reason").startswith("worker stopped mid-trial")
    retries = [t for t in trials if TrialRecord.of(t).get("retry_of") == dead.number]
    assert len(retries) == 1 and retries[0].state == TrialState.WAITING
    assert fail_and_requeue(study, dead._trial_id, "again") is None  # finished: no 2nd retry


def test_budget_counts_trials_in_flight_and_waits_for_them(tmp_path, monkeypatch) -> None:
    """2 trials budget, one in flight elsewhere: run one; the other worker's trial dies, so its
    retry runs here too; never a third."""
    monkeypatch.setenv("AUTOKD_HEARTBEAT", "1,2")
    study = open_study("w", f"sqlite:///{tmp_path / 'w.db'}", directions=["minimize"])
    elsewhere = _running_trial(study)  # never heartbeats again: its worker died
    controller = OptunaController(study, _quiet_objective, Budget(trials=2))
    controller.poll_seconds = 0.2
    controller.run()
    trials = study.get_trials()
    assert count_done(study) == 2 and len(trials) == 3
    assert trials[elsewhere.number].state == TrialState.FAIL
    assert TrialRecord.of(trials[2]).get("retry_of") == elsewhere.number
    assert trials[2].params == trials[elsewhere.number].params


def test_storage_errors_are_recognised_through_causes() -> None:
    lost = sqlalchemy.exc.OperationalError("SELECT 1", {}, Exception("server closed"))
    try:
        try:
            raise lost
        except Exception:
            raise RuntimeError("fail_reason could not be written")
    except RuntimeError as wrapped:
        assert is_storage_error(wrapped)
    assert not is_storage_error(ValueError("a bad candidate"))
    assert sum(Backoff(first=1, factor=2, total=10).delays()) == pytest.approx(10)


def test_outage_retries_then_requeues_the_cut_off_trial(tmp_path) -> None:
    study = open_study("o", f"sqlite:///{tmp_path / 'o.db'}", directions=["minimize"])
    cut = _running_trial(study)
    calls: list[int] = []

    def run_once() -> str:
        calls.append(1)
        if len(calls) == 1:
            raise StorageLost(sqlalchemy.exc.OperationalError("x", {}, Exception("gone")),
                              cut._trial_id)
        return "done"

    assert run_resilient(run_once, study, Backoff(first=0.01, total=1)) == "done"
    trials = study.get_trials()
    assert TrialRecord.of(trials[cut.number]).get("fail_reason") == "database connection lost mid-trial"
    assert [TrialRecord.of(t).get("retry_of") for t in trials] == [None, cut.number]


def test_outage_gives_up_with_one_clear_error(tmp_path, monkeypatch) -> None:
    study = open_study("g", f"sqlite:///{tmp_path / 'g.db'}", directions=["minimize"])
    down = sqlalchemy.exc.OperationalError("x", {}, Exception("connection refused"))

    def unreachable(*args: object) -> None:
        raise down

    def run_once() -> None:
        raise down

    monkeypatch.setattr(study._storage, "get_study_id_from_name", unreachable)
    t0 = time.monotonic()
    with pytest.raises(StudyError, match=r"could not reconnect within 0.3 s \(\d+ attempts\)"):
        run_resilient(run_once, study, Backoff(first=0.1, total=0.3))
    assert time.monotonic() - t0 < 5


def test_worker_threads_never_oversubscribe() -> None:
    assert worker_threads(1, cores=2) == 2
    assert worker_threads(2, cores=2) == 1
    assert worker_threads(4, cores=2) == 1
    assert worker_threads(3, cores=16) == 5


# -- workers -----------------------------------------------------------------------------------
def _search(tmp_path: Path, budget: int, **kw: object):
    from autokd.config import CostConfig, SearchSettings

    settings = SearchSettings(cost=CostConfig.for_search(latency=False), pareto_pruning=False)
    kw.setdefault("strategy", "optuna")  # these tests count whole trials
    cfg = SearchConfig(space=_space(tmp_path), budget=budget, name="d",
                       results=str(tmp_path / "a"), device="cpu", settings=settings, **kw)
    return run_search(cfg)


def test_worker_rebuilds_the_search_from_the_study_alone(tmp_path, digits_teacher) -> None:
    outcome = _search(tmp_path, 1)
    study = outcome.study
    record = SearchRecord.of(study)
    assert record.space_yaml == TINY and record.teachers[0]["artifact_id"]
    url = f"sqlite:///{outcome.paths.db}"
    # another "machine": no space file, no teacher.pt, its own results directory
    os.unlink(tmp_path / "tiny.yaml")
    os.unlink(outcome.paths.root / "teacher.pt")
    update_search_record(study, budget={"trials": 2, "seconds": None})
    out = run_worker(WorkerOptions("d", storage=url, results=str(tmp_path / "b"), device="cpu",
                                   seed=1))
    assert out.status == "finished" and out.ran == 1 and count_done(out.study) == 2
    fetched = list((tmp_path / "b" / "d" / "teachers").iterdir())
    assert len(fetched) == 1 and fetched[0].name.endswith("teacher.pt")
    last = out.study.trials[-1]
    assert TrialRecord.of(last).get("worker").endswith(f":{os.getpid()}")
    assert TrialRecord.of(last).get("teacher_hash") == SearchRecord.of(study).teacher_hash
    again = run_worker(WorkerOptions("d", storage=url, results=str(tmp_path / "b")))
    assert again.status == "already_finished"


def test_worker_refuses_other_data_or_teacher(tmp_path, digits_teacher) -> None:
    outcome = _search(tmp_path, 1)
    url = f"sqlite:///{outcome.paths.db}"
    opts = WorkerOptions("d", storage=url, results=str(tmp_path / "b"), device="cpu")
    update_search_record(outcome.study, budget={"trials": 5, "seconds": None})
    with pytest.raises(StudyError, match="data differs"):
        run_worker(WorkerOptions(**{**vars(opts), "dataset": "wine"}))
    update_search_record(outcome.study, teacher_hash="0123456789abcdef")
    with pytest.raises(StudyError, match="teacher differs.*not starting"):
        run_worker(opts)
    assert count_done(outcome.study) == 1


def test_missing_teacher_artifact_is_a_clear_error(tmp_path) -> None:
    from autokd.artifacts import teacher_file

    entry = {"ref": str(tmp_path / "gone.pt"), "file": "gone.pt", "sha": "0" * 16,
             "artifact_id": "no-such-artifact"}
    with pytest.raises(StudyError, match="cannot fetch teacher gone.pt .* pass --artifacts"):
        teacher_file(entry, str(tmp_path / "store"), StudyPaths(tmp_path / "w"))


def test_worker_needs_a_study_it_can_join(tmp_path, monkeypatch) -> None:
    monkeypatch.delenv("AUTOKD_STORAGE", raising=False)
    with pytest.raises(StudyError, match="--storage"):
        run_worker(WorkerOptions("nope", results=str(tmp_path)))
    url = f"sqlite:///{tmp_path / 'x.db'}"
    open_study("bare", url, directions=["minimize"])
    with pytest.raises(StudyError, match="autokd search"):
        run_worker(WorkerOptions("bare", storage=url, results=str(tmp_path)))


def test_worker_cli_errors_are_one_line(tmp_path, capsys, monkeypatch) -> None:
    from autokd.cli import main

    monkeypatch.delenv("AUTOKD_STORAGE", raising=False)
    assert main(["worker", "nope", "--results", str(tmp_path)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("autokd: error: give --storage URL")


def _cli(*args: str) -> list[str]:
    return [sys.executable, "-m", "autokd", *args]


@pytest.mark.slow
def test_jobs_two_local_workers_share_the_budget(tmp_path, digits_teacher) -> None:
    res = tmp_path / "a"
    proc = subprocess.Popen(_cli("search", "--strategy", "optuna", "--space", _space(tmp_path),
                                 "--budget", "4",
                                 "--name", "j", "--results", str(res), "--no-latency",
                                 "--no-early-stop", "--device", "cpu", "--jobs", "2"),
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    out, err = proc.communicate(timeout=400)
    assert proc.returncode == 0, err
    assert out.count("complete:") == 4  # one progress line per trial, from the parent
    study = optuna.load_study(study_name="j", storage=f"sqlite:///{res / 'j' / 'study.db'}")
    complete = [t for t in study.trials if t.state == TrialState.COMPLETE]
    assert len(study.trials) == 4 and len(complete) == 4
    assert not [t for t in complete if TrialRecord.of(t).get("worker").endswith(f":{proc.pid}")]
    assert len({tuple(sorted(t.params.items())) for t in complete}) == 4
    assert sorted(p.name for p in (res / "j" / "workers").iterdir()) == ["0.log", "1.log"]


# -- PostgreSQL ----------------------------------------------------------------------------------
@pytest.fixture()
def pg_url() -> str:
    """A fresh database per test on the CI server, dropped afterwards."""
    import psycopg2
    from sqlalchemy.engine import make_url

    base = make_url(PG)
    name = f"autokd_{uuid.uuid4().hex[:10]}"
    admin = psycopg2.connect(PG)
    admin.autocommit = True
    admin.cursor().execute(f"CREATE DATABASE {name}")
    yield base.set(database=name).render_as_string(hide_password=False)
    _pg_ctl("start -w", check=False)  # an outage test may have left it stopped
    admin = psycopg2.connect(PG)
    admin.autocommit = True
    admin.cursor().execute(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")


def _pg_ctl(action: str, check: bool = True) -> None:
    subprocess.run(["su", "postgres", "-c", f"{PG_CTL} {action}"], check=check,
                   capture_output=True, timeout=60)


def _env() -> dict[str, str]:
    return {**os.environ, "AUTOKD_HEARTBEAT": "1,5", "OMP_NUM_THREADS": "1"}


class _Db:
    """The test's own view of the study (one engine: polling must not pile up connections)."""

    def __init__(self, url: str) -> None:
        from autokd.study import _storage

        self.storage = _storage(url)  # also picks the installed PostgreSQL driver

    def study(self) -> optuna.Study | None:
        try:
            return optuna.load_study(study_name="d", storage=self.storage)
        except KeyError:  # not created yet
            return None

    def started(self, workers: list[subprocess.Popen]) -> bool:
        """Every worker has claimed a trial (it is past start-up, in its trial loop)."""
        study = self.study()
        owners = {str(TrialRecord.of(t).get("worker")) for t in study.get_trials()} if study else set()
        return all(any(o.endswith(f":{w.pid}") for o in owners) for w in workers)

    def running_of(self, pid: int) -> list[optuna.trial.FrozenTrial]:
        study = self.study()
        if study is None:
            return []
        return [t for t in study.get_trials(states=(TrialState.RUNNING,))
                if str(TrialRecord.of(t).get("worker", "")).endswith(f":{pid}")
                and TrialRecord.of(t).get("seed") is not None]  # training has started


def _wait(cond, timeout: float = 240.0) -> None:
    deadline = time.time() + timeout
    while not cond():
        assert time.time() < deadline, "timed out"
        time.sleep(0.3)


def _worker(url: str, tmp_path: Path, tag: str, *extra: str) -> subprocess.Popen:
    return subprocess.Popen(_cli("worker", "d", "--storage", url, "--results",
                                 str(tmp_path / tag), "--device", "cpu", "--threads", "1",
                                 "--quiet", *extra),
                            env=_env(), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def _search_cmd(tmp_path: Path, url: str, budget: int, epochs: int = 5) -> list[str]:
    return _cli("search", "--strategy", "optuna", "--space", _space(tmp_path), "--budget",
                str(budget), "--name", "d",
                "--results", str(tmp_path / "a"), "--storage", url, "--no-latency",
                "--no-early-stop", "--device", "cpu", "--epochs", str(epochs), "--json")


@needs_pg
@pytest.mark.slow
def test_postgres_two_workers_one_killed_exact_budget(tmp_path, pg_url, digits_teacher) -> None:
    db = _Db(pg_url)
    # trials long enough that the worker is mid-trial before the search alone spends the budget
    search = subprocess.Popen(_search_cmd(tmp_path, pg_url, 12, epochs=25), env=_env(),
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    _wait(lambda: (s := db.study()) is not None and SEARCH_ATTR in s.user_attrs)
    worker = _worker(pg_url, tmp_path, "b")
    _wait(lambda: db.running_of(worker.pid) or search.poll() is not None)
    killed = db.running_of(worker.pid)[0]
    worker.send_signal(signal.SIGKILL)
    worker.wait(timeout=30)
    _, err = search.communicate(timeout=400)
    assert search.returncode == 0, err

    study = db.study()
    trials = study.get_trials()
    complete = [t for t in trials if t.state == TrialState.COMPLETE]
    assert len(complete) == 12 and count_done(study) == 12
    assert not [t for t in trials if t.state in (TrialState.RUNNING, TrialState.WAITING)]
    dead = trials[killed.number]
    assert dead.state == TrialState.FAIL
    assert TrialRecord.of(dead).get("fail_reason").startswith("worker stopped mid-trial")
    retries = [t for t in trials if TrialRecord.of(t).get("retry_of") == dead.number]
    assert len(retries) == 1 and retries[0].state == TrialState.COMPLETE
    assert retries[0].params == dead.params
    assert len({tuple(sorted(t.params.items())) for t in complete}) == 12
    _report_from_database(study, tmp_path)


def _report_from_database(study: optuna.Study, tmp_path: Path) -> None:
    from autokd.front import pareto_front
    from autokd.report import build_report

    paths = StudyPaths(tmp_path / "report" / "d")
    data = build_report(study, paths)
    assert {r["trial"] for r in data["front"]} == {t.number for t in pareto_front(study)}
    assert data["counts"]["complete"] == 12 and data["counts"]["fail"] == 1
    assert (paths.root / "report.html").exists() and (paths.root / "pareto.csv").exists()


@needs_pg
@pytest.mark.slow
@pytest.mark.skipif(not PG_CTL, reason="AUTOKD_TEST_PG_CTL is not set (needed to stop PostgreSQL)")
def test_postgres_outage_workers_exit_cleanly_then_finish(tmp_path, pg_url,
                                                          digits_teacher) -> None:
    db = _Db(pg_url)
    first = subprocess.run(_search_cmd(tmp_path, pg_url, 1), env=_env(), capture_output=True,
                           text=True, timeout=300)
    assert first.returncode == 0, first.stderr
    update_search_record(db.study(), budget={"trials": 8, "seconds": None})
    workers = [_worker(pg_url, tmp_path, tag, "--retry-seconds", "6") for tag in ("b", "c")]
    _wait(lambda: db.started(workers) and any(db.running_of(w.pid) for w in workers))
    _pg_ctl("stop -m fast")
    for w in workers:
        _, err = w.communicate(timeout=120)
        assert w.returncode == 2, err
        assert "could not reconnect within 6 s" in err and "Traceback" not in err
    _pg_ctl("start -w")
    workers = [_worker(pg_url, tmp_path, tag) for tag in ("b", "c")]
    for w in workers:
        _, err = w.communicate(timeout=400)
        assert w.returncode == 0, err

    study = db.study()
    trials = study.get_trials()
    assert count_done(study) == 8 and sum(t.state == TrialState.COMPLETE for t in trials) == 8
    assert not [t for t in trials if t.state in (TrialState.RUNNING, TrialState.WAITING)]
    cut = [t for t in trials if t.state == TrialState.FAIL]
    assert cut  # the outage cut off at least the trial that was training
    for t in cut:  # each failed with its reason and retried exactly once
        assert TrialRecord.of(t).get("fail_reason") in ("database connection lost mid-trial",
                                                "worker stopped mid-trial (no heartbeat for 5 s)")
        retries = [r for r in trials if TrialRecord.of(r).get("retry_of") == t.number]
        assert len(retries) == 1 and retries[0].state == TrialState.COMPLETE
