"""``autokd worker``: join a study from another process or machine (see autokd.workers)."""

from __future__ import annotations

import argparse
import os
from typing import Any

from autokd.cli._common import command, positive_int, print_json, progress_line
from autokd.record import SearchRecord

__all__ = ["add_parsers"]


def add_parsers(sub: Any) -> None:
    p = sub.add_parser("worker", help="join a study and run its trials until the budget is spent",
                       description="Join study NAME (created by `autokd search`) and run trials "
                       "until its budget, counted across all workers, is spent. Everything else "
                       "(data, space, teacher, settings) comes from the study.")
    p.add_argument("name", help="study name")
    p.add_argument("--storage", metavar="URL",
                   help="the study's storage, e.g. postgresql://user@host/db (default: "
                        "$AUTOKD_STORAGE, else results/NAME/study.db)")
    p.add_argument("--artifacts", metavar="DIR|URL",
                   help="the artifact store holding the teacher (default: the one the search "
                        "recorded)")
    p.add_argument("--results", default="results",
                   help="local results root: student weights and tables (default results)")
    p.add_argument("--device", default="auto", choices=("auto", "cpu", "cuda"))
    p.add_argument("--jobs", type=positive_int, default=1,
                   help="worker processes to start on this machine (default 1)")
    p.add_argument("--threads", type=positive_int,
                   help="torch threads of this worker (default: torch's; cores/N with --jobs)")
    p.add_argument("--seed", type=int,
                   help="sampler seed (default: derived from host and pid, so workers differ)")
    p.add_argument("--trust", action="store_true",
                   help="allow teachers whose loading runs code (as for autokd search)")
    p.add_argument("--dataset", metavar="SOURCE",
                   help="where the study's dataset is on this machine, e.g. csv:/data/x.csv "
                        "(its split hash must match the study's)")
    p.add_argument("--retry-seconds", type=float, default=120.0,
                   help="how long to retry an unreachable database before giving up (default 120)")
    p.add_argument("--quiet", action="store_true", help="no progress lines")
    p.add_argument("--json", action="store_true", help="print a JSON summary at the end")


@command("worker")
def cmd_worker(args: argparse.Namespace) -> int:
    from autokd.device import resolve_device
    from autokd.workers import WorkerOptions, run_worker, run_worker_pool

    resolve_device(args.device)  # --device cuda without CUDA: one line, before joining a study

    opts = WorkerOptions(name=args.name, storage=args.storage, results=args.results,
                         artifacts=args.artifacts, device=args.device, threads=args.threads,
                         seed=args.seed, trust=args.trust, dataset=args.dataset,
                         retry_seconds=args.retry_seconds)
    progress = None if (args.quiet or args.json) else progress_line
    outcome = run_worker_pool(opts, args.jobs, progress) if args.jobs > 1 \
        else run_worker(opts, progress)
    _summary(args, outcome)
    return 0


def _summary(args: argparse.Namespace, outcome: Any) -> None:
    from autokd.record import count_done

    done = count_done(outcome.study)
    budget = SearchRecord.of(outcome.study).get("budget") or {}
    if args.json:
        print_json({"study": outcome.study.study_name, "status": outcome.status,
                    "trials_run": outcome.ran, "finished_trials": done, "budget": budget,
                    "results": str(outcome.paths.root)})
        return
    if args.quiet:
        return
    if outcome.status == "already_finished":
        print(f"study {outcome.study.study_name!r} has spent its budget ({done} finished trials)")
        return
    where = outcome.paths.root if not (args.storage or os.environ.get("AUTOKD_STORAGE")) \
        else f"{outcome.study.study_name} --storage URL"
    print(f"ran {outcome.ran} trials here; study {outcome.study.study_name!r} has {done} "
          f"finished trials; next: autokd report {where}")
