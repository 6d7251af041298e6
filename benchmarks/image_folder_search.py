"""End to end on a folder of images: teacher, mbv2 search, report and export, in memory and
streamed.

What it shows: the whole user path of ``autokd`` on image files (not an in-memory array) with a
real student family, once with the data in memory and once forced through the streaming path
(``--memory-budget 1K``), through the CLI exactly as a user runs it:

1. a generated folder of ``--images`` RGB PNGs (``--size`` square, ``--classes`` classes; each
   class a colour cast plus noise, so students must learn something but can);
2. ``autokd teacher train --family mbv2`` (``--teacher-epochs``);
3. ``autokd search --space mbv2 --budget B --epochs E`` in each mode, then ``autokd report``
   and ``autokd export --formats pt,torchscript,onnx`` (parity verified by export itself).

Recorded per step: wall and CPU seconds (child processes), the exit code; per search: the
split hash (must be equal in both modes), the number of complete trials, the front and its
best validation accuracy; the export's verified parity. Load average before and after.
Usage: ``python benchmarks/image_folder_search.py [--images 3000] [--budget 8] [--quick]``.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from _common import log, write_result
from data_paths import _make_folder

__all__ = ["main"]

MODES = {"memory": "64G", "streamed": "1K"}


def _cpu_children() -> float:
    use = resource.getrusage(resource.RUSAGE_CHILDREN)
    return use.ru_utime + use.ru_stime


def _cli(*args: str, env: dict[str, str]) -> dict[str, Any]:
    """Run ``autokd ARGS``; its wall and CPU seconds, exit code and (``--json``) output."""
    w0, c0 = time.perf_counter(), _cpu_children()
    proc = subprocess.run([sys.executable, "-m", "autokd", *args], capture_output=True,
                          text=True, env=env, check=False)
    out: dict[str, Any] = {"wall_s": time.perf_counter() - w0, "cpu_s": _cpu_children() - c0,
                           "rc": proc.returncode}
    if proc.returncode != 0:
        out["stderr"] = proc.stderr[-2000:]
        log(f"autokd {args[0]} failed ({proc.returncode}): {proc.stderr.strip()[-400:]}")
    elif "--json" in args:
        out["json"] = json.loads(proc.stdout)
    return out


def _front_summary(search: dict[str, Any], export: dict[str, Any]) -> dict[str, Any]:
    """The front of the search's ``--json`` summary and the split hash of the export card."""
    js = search.get("json") or {}
    front = js.get("pareto") or []
    accs = [t["val_accuracy"] for t in front if isinstance(t.get("val_accuracy"), float)]
    card = (export.get("json") or {}).get("card") or {}
    return {"finished_trials": js.get("finished_trials"), "front_size": len(front),
            "best_val_accuracy": max(accs) if accs else None,
            "teacher_val_accuracy": (js.get("teacher") or {}).get("val_accuracy"),
            "front": [{k: t.get(k) for k in ("val_accuracy", "test_accuracy", "flops",
                                              "params", "latency_ms", "architecture")}
                      for t in front],
            "split_hash": (card.get("dataset") or {}).get("split_hash")}


def main(argv: list[str] | None = None) -> dict[str, Any]:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--images", type=int, default=3000)
    p.add_argument("--classes", type=int, default=10)
    p.add_argument("--size", type=int, default=32)
    p.add_argument("--teacher-epochs", type=int, default=8)
    p.add_argument("--budget", type=int, default=8)
    p.add_argument("--epochs", type=int, default=4)
    p.add_argument("--quick", action="store_true", help="100 16x16 images, 2 trials: a smoke test")
    args = p.parse_args(argv)
    if args.quick:
        args.images, args.size, args.teacher_epochs, args.budget, args.epochs = 100, 16, 1, 2, 1
    load_before = os.getloadavg()
    steps: dict[str, Any] = {}
    with tempfile.TemporaryDirectory(prefix="autokd-folder-search-") as name:
        tmp = Path(name)
        env = {**os.environ, "AUTOKD_CACHE": str(tmp / "cache"), "PYTHONPATH":
               os.pathsep.join([str(Path(__file__).resolve().parents[1]),
                                os.environ.get("PYTHONPATH", "")])}
        _make_folder(tmp / "images", args.images, args.classes, args.size)
        data = ["--dataset", f"folder:{tmp / 'images'}", "--loader-workers", "0"]
        teacher = tmp / "teacher.pt"
        steps["teacher"] = _cli("teacher", "train", *data, "--family", "mbv2", "--epochs",
                                str(args.teacher_epochs), "--out", str(teacher), "--json",
                                env=env)
        log(f"teacher: {steps['teacher']['wall_s']:.1f} s")
        for mode, budget in MODES.items():
            results = tmp / f"results-{mode}"
            run = ["--memory-budget", budget]
            search = _cli("search", *data, *run, "--teacher", str(teacher), "--space", "mbv2",
                          "--strategy", "optuna",
                          "--budget", str(args.budget), "--epochs", str(args.epochs),
                          "--results", str(results), "--name", "imgs", "--seed", "0",
                          "--json", env=env)
            report = _cli("report", str(results / "imgs"), env=env)
            export = _cli("export", str(results / "imgs"), "--formats", "pt,torchscript,onnx",
                          "--json", env=env)
            steps[mode] = {"search": search, "summary": _front_summary(search, export),
                           "report": report, "report_written":
                           (results / "imgs" / "report.md").exists(), "export": export,
                           "onnx_written": bool(list((results / "imgs").rglob("*.onnx")))}
            log(f"{mode}: search {search['wall_s']:.1f} s rc {search['rc']}, export rc "
                f"{export['rc']}")
    hashes = {steps[m]["summary"]["split_hash"] for m in MODES}
    payload = {
        "all_ok": all(s["rc"] == 0 for s in [steps["teacher"]] +
                      [steps[m][k] for m in MODES for k in ("search", "report", "export")]),
        "same_split_hash": len(hashes) == 1 and None not in hashes,
        "config": vars(args) | {"cpus": os.cpu_count()},
        "steps": steps,
        "loadavg_before": list(load_before),
        "loadavg_after": list(os.getloadavg()),
    }
    write_result("image_folder_search", payload, quick=args.quick)
    return payload


if __name__ == "__main__":
    main()
