"""Quick-start benchmark: what ``autokd search --budget 20`` costs a new user, as they run it.

Why: the README's quick start states a time; this measures it the way a first-time user meets
it. Each *cold* run starts the installed ``autokd`` command in a subprocess, in an empty working
directory with an empty ``AUTOKD_CACHE``, so the default teacher is trained first; the *warm*
run after it repeats the search in another empty directory with that cache kept (teacher and its
outputs cached: what every later search costs). Per run it records wall time, CPU time of the
process tree (``getrusage(RUSAGE_CHILDREN)``), the load average before and after, and splits the
wall time into start-up and teacher (process start to the first trial's start), the trials (first
trial's start to the last trial's end, from the study's own timestamps) and the tail (front
table, files). The teacher's own training time is read from its closing progress line. The
``pip install`` is not part of it.

Usage: ``python benchmarks/quickstart.py [--repeats 3] [--budget 20] [--quick] [--fresh]
[--out results/benchmarks]``. Runs are written one by one, so a killed run resumes where it
stopped. ``--quick`` runs one cold and one warm 2-trial, 1-epoch search on ``wine`` (a tiny
teacher) into a temp directory: a smoke test of the plumbing, not the README's number.
"""

from __future__ import annotations

import argparse
import importlib.metadata
import json
import os
import platform
import re
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections import Counter
from datetime import datetime
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(Path(__file__).resolve().parent))

from _common import QUICK_OUT_DIR, log, save_atomic

NAME = "quickstart"
PACKAGES = ("autokd", "torch", "optuna", "numpy", "scikit-learn", "fvcore", "pandas")
#: the teacher's closing progress line, e.g. "teacher (cnn): 30/30 epochs ... done in 1m49s"
_TEACHER_DONE = re.compile(r"^teacher \([^)]*\):.*done in (\d+)m(\d+)s")


def _command() -> list[str]:
    """The installed console script, as a user types it; ``python -m autokd`` without one."""
    exe = shutil.which("autokd")
    return [exe] if exe else [sys.executable, "-m", "autokd"]


def _versions() -> dict[str, str | None]:
    out: dict[str, str | None] = {"python": platform.python_version()}
    for name in PACKAGES:
        try:
            out[name] = importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            out[name] = None
    return out


def _read_lines(stream: Any, t0: float, sink: list[tuple[float, str]]) -> None:
    """Collect each line with its arrival time (seconds after start); runs in a thread."""
    for line in iter(stream.readline, ""):
        sink.append((time.perf_counter() - t0, line.rstrip("\n")))
    stream.close()


def _trial_times(workdir: Path) -> list[dict[str, Any]]:
    """Start/end of every trial from the study written under ``workdir/results``."""
    import optuna

    dbs = sorted((workdir / "results").glob("*/study.db"))
    if len(dbs) != 1:
        raise RuntimeError(f"expected one study under {workdir / 'results'}, found {dbs}")
    optuna.logging.set_verbosity(optuna.logging.ERROR)
    study = optuna.load_study(study_name=None, storage=f"sqlite:///{dbs[0]}")
    return [{"number": t.number, "state": t.state.name, "start": t.datetime_start,
             "end": t.datetime_complete} for t in study.get_trials(deepcopy=False)]


def run_once(args: list[str], cache: Path, workdir: Path) -> dict[str, Any]:
    """One ``autokd search`` in ``workdir`` with ``AUTOKD_CACHE=cache``, timed and split."""
    workdir.mkdir(parents=True, exist_ok=True)
    env = dict(os.environ, AUTOKD_CACHE=str(cache),
               PYTHONPATH=os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")]))
    env.pop("AUTOKD_STORAGE", None)
    cmd = _command() + args
    load_before = os.getloadavg()
    ru0 = resource.getrusage(resource.RUSAGE_CHILDREN)
    started = datetime.now()
    t0 = time.perf_counter()
    proc = subprocess.Popen(cmd, cwd=workdir, env=env, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)
    out: list[tuple[float, str]] = []
    err: list[tuple[float, str]] = []
    readers = [threading.Thread(target=_read_lines, args=(proc.stdout, t0, out)),
               threading.Thread(target=_read_lines, args=(proc.stderr, t0, err))]
    for r in readers:
        r.start()
    rc = proc.wait()
    wall = time.perf_counter() - t0
    for r in readers:
        r.join()
    ru1 = resource.getrusage(resource.RUSAGE_CHILDREN)
    load_after = os.getloadavg()
    if rc != 0:
        tail = "\n".join(line for _, line in err[-5:])
        raise RuntimeError(f"{' '.join(cmd)} exited {rc}:\n{tail}")
    trials = _trial_times(workdir)
    done = [t for t in trials if t["state"] == "COMPLETE"]
    first = min(t["start"] for t in trials)
    last = max(t["end"] for t in trials if t["end"] is not None)
    before = (first - started).total_seconds()
    span = (last - first).total_seconds()
    teacher = [(at, _TEACHER_DONE.match(line)) for at, line in err if _TEACHER_DONE.match(line)]
    teacher_s = None
    if teacher:
        match = teacher[0][1]
        teacher_s = int(match.group(1)) * 60 + int(match.group(2))
    return {
        "command": " ".join(["autokd", *args]),
        "wall_s": round(wall, 2),
        "cpu_s": round((ru1.ru_utime - ru0.ru_utime) + (ru1.ru_stime - ru0.ru_stime), 2),
        "before_trials_s": round(before, 2),
        "teacher_train_s": teacher_s,
        "teacher_done_at_s": round(teacher[0][0], 2) if teacher else None,
        "trials_s": round(span, 2),
        "after_trials_s": round(wall - before - span, 2),
        "trials_complete": len(done),
        "trials_total": len(trials),
        "trial_states": dict(Counter(t["state"] for t in trials)),
        "trial_s_median": round(statistics.median(
            (t["end"] - t["start"]).total_seconds() for t in done), 3) if done else None,
        "load_average_before": [round(x, 2) for x in load_before],
        "load_average_after": [round(x, 2) for x in load_after],
        "stderr_lines": len(err),
        "stdout_lines": len(out),
    }


def _summary(runs: list[dict[str, Any]]) -> dict[str, Any]:
    """min/median/max of each timed field over the repeats of one kind of run."""
    out: dict[str, Any] = {"n": len(runs)}
    for key in ("wall_s", "cpu_s", "before_trials_s", "teacher_train_s", "trials_s",
                "after_trials_s"):
        vals = [r[key] for r in runs if r.get(key) is not None]
        if vals:
            out[key] = {"min": min(vals), "median": statistics.median(vals), "max": max(vals)}
    loads = [r["load_average_before"][0] for r in runs] + [r["load_average_after"][0] for r in runs]
    if loads:
        out["load_average_1min"] = {"min": min(loads), "max": max(loads)}
    return out


def main(argv: list[str] | None = None) -> dict[str, Any]:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--repeats", type=int, default=3, help="cold + warm pairs (default 3)")
    ap.add_argument("--budget", type=int, default=20)
    ap.add_argument("--quick", action="store_true",
                    help="1 pair of 2-trial, 1-epoch searches on wine (smoke test)")
    ap.add_argument("--fresh", action="store_true", help="ignore repeats already measured")
    ap.add_argument("--out", default=None, help="output folder (default results/benchmarks)")
    args = ap.parse_args(argv)
    if args.quick:
        search = ["search", "--dataset", "wine", "--budget", "2", "--epochs", "1"]
        repeats = 1
    else:
        search = ["search", "--budget", str(args.budget)]
        repeats = args.repeats
    out_dir = Path(args.out) if args.out else (QUICK_OUT_DIR if args.quick else
                                                ROOT / "results" / "benchmarks")
    path = out_dir / f"{NAME}.json"
    protocol = {"search": ["autokd", *search], "quick": args.quick}
    doc: dict[str, Any] = {"protocol": protocol, "repeats": []}
    if path.exists() and not args.fresh and not args.quick:
        old = json.loads(path.read_text())
        if old.get("protocol") == protocol:
            doc = old
    doc.update(cores=os.cpu_count(), versions=_versions(), platform=platform.platform(),
               install_time_included=False,
               note=("cold: empty AUTOKD_CACHE and working directory, so the default teacher is "
                     "trained; warm: the same search again with that cache kept (a later "
                     "search). stdout/stderr are pipes, so progress is plain lines, not a bar."))
    for i in range(len(doc["repeats"]), repeats):
        with tempfile.TemporaryDirectory(prefix="autokd-quickstart-") as tmp:
            cache = Path(tmp) / "cache"
            log(f"repeat {i + 1}/{repeats}: cold (teacher trained) ...")
            cold = run_once(search, cache, Path(tmp) / "cold")
            log(f"  cold {cold['wall_s']} s wall, {cold['cpu_s']} s CPU")
            warm = run_once(search, cache, Path(tmp) / "warm")
            log(f"  warm {warm['wall_s']} s wall, {warm['cpu_s']} s CPU")
        doc["repeats"].append({"cold": cold, "warm": warm})
        doc["cold"] = _summary([r["cold"] for r in doc["repeats"]])
        doc["warm"] = _summary([r["warm"] for r in doc["repeats"]])
        save_atomic(path, doc)
    print(json.dumps(doc, indent=2, default=str))
    log(f"wrote {path}")
    return doc


if __name__ == "__main__":
    main()
