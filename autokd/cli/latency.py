"""``autokd latency-table``: measure (or show) the latency lookup table DARTS uses.

The table is built automatically by the first ``search --strategy darts`` on a device; this
command builds it ahead of time, for any device the user has (``--device cuda``), and shows
how well it predicts whole models.
"""

from __future__ import annotations

import argparse
import logging
import sys
from typing import Any

from autokd.cli._common import (
    add_data_args,
    add_runtime_arg,
    command,
    data_config,
    fmt,
    positive_int,
    print_json,
    print_kv_table,
)

__all__ = ["add_parsers"]


def add_parsers(sub: Any) -> None:
    p = sub.add_parser("latency-table",
                       help="measure the per-op latency table DARTS uses for a space and device")
    p.add_argument("--space", help="a bundled space (cnn, cnn1d, mlp, mbv2, resnet, transformer, hf) or a "
                   "YAML file (default: by data kind)")
    p.add_argument("--device", default="cpu", choices=("cpu", "cuda", "auto"),
                   help="device to measure on (default cpu)")
    add_data_args(p)  # the input shape and class count are part of each op's context
    p.add_argument("--threads", type=positive_int, default=1,
                   help="torch threads while timing, as --latency-threads of search (default 1)")
    p.add_argument("--calibration", type=positive_int, default=5,
                   help="whole models per depth measured to fit and check the table (default 5)")
    add_runtime_arg(p)
    p.add_argument("--force", action="store_true", help="measure again even if cached")
    p.add_argument("--json", action="store_true", help="print a JSON summary")


def _progress(json_mode: bool) -> Any:
    """A one-line counter on a terminal (nothing in logs or with --json)."""
    if json_mode or not sys.stderr.isatty():
        return None
    step = {"next": 0}

    def show(done: int, total: int) -> None:
        if done >= step["next"] or done == total:
            print(f"\rmeasuring ops: {done}/{total}", end="" if done < total else "\n",
                  file=sys.stderr, flush=True)
            step["next"] = done + max(1, total // 20)

    return show


@command("latency-table")
def cmd_latency_table(args: argparse.Namespace) -> int:
    from autokd.config import CostConfig
    from autokd.data import load_data
    from autokd.latency_table import get_table, table_path
    from autokd.models import build_student, default_family, get_family
    from autokd.models.supernet import build_supernet
    from autokd.nas import space_decisions
    from autokd.space import load_space

    data = load_data(data_config(args))
    space = load_space(args.space or default_family(data.input_shape, data.tokens))
    # fits this data?
    build_student(space.family, {}, data.input_shape, data.num_classes, tokens=data.tokens)
    if get_family(space.family).supernet is None:
        return _block_table(args, space, data)
    decisions, fixed = space_decisions(space)
    net = build_supernet(space.family, decisions, fixed, data.input_shape, data.num_classes)
    settings = _settings(args)
    path = table_path(net, space.name, args.device, args.threads, settings.runtime)
    cached = path.exists() and not args.force
    settings.calibration = args.calibration
    table = get_table(net, space.name, args.device, args.threads, settings, rebuild=args.force,
                      progress=_progress(args.json),
                      batch_size=CostConfig.for_search().batch_size)
    _report(args, table, cached)
    return 0


def _settings(args: argparse.Namespace) -> Any:
    """Search-style timing in the runtime asked for (``auto``: onnxruntime when installed)."""
    from autokd.config import CostConfig
    from autokd.latency_table import TableSettings
    from autokd.quant.deploy import resolve_runtime

    cost = resolve_runtime(CostConfig.for_search(runtime=args.latency_runtime,
                                                 device=args.device))
    return TableSettings.from_cost(cost)


def _block_table(args: argparse.Namespace, space: Any, data: Any) -> int:
    """Families without a supernet: time every block of sampled students (``block_latency``)."""
    import optuna

    from autokd.block_latency import block_table_path, build_block_table
    from autokd.config import CostConfig
    from autokd.errors import ConfigError
    from autokd.latency_table import load_table

    sampler = optuna.samplers.RandomSampler(seed=0)
    study = optuna.create_study(sampler=sampler)
    specs = [space.sample(study.ask()).spec for _ in range(4 * args.calibration)]
    settings = _settings(args)
    path = block_table_path(space.family, space.name, data.input_shape, data.num_classes, specs,
                            args.device, args.threads, settings.runtime)
    table = None
    if path.exists() and not args.force:
        try:
            table = load_table(path)
        except ConfigError as exc:  # an older version or a damaged file: measure again
            logging.getLogger(__name__).warning("%s; measuring it again", exc)
    cached = table is not None
    if table is None:
        table = build_block_table(space.family, specs, data.input_shape, data.num_classes,
                                  space.name, args.device, args.threads, settings,
                                  progress=_progress(args.json),
                                  batch_size=CostConfig.for_search().batch_size)
        table.save(path)
    _report(args, table, cached)
    return 0


def _report(args: argparse.Namespace, table: Any, cached: bool) -> None:
    error = table.error()
    summary = {"path": table.path, "cached": cached, "device": table.device, "host": table.host,
               "threads": table.threads, "space": table.space,
               "input_shape": list(table.input_shape), "num_classes": table.num_classes,
               "ops": len(table.entries), "build_seconds": table.build_seconds,
               "overhead_ms": table.overhead, "error": error}
    if args.json:
        print_json(summary)
        return
    overhead = ", ".join(f"d{d}: {fmt(v)}" for d, v in sorted(table.overhead.items()))
    print_kv_table(f"latency table for {table.space} on {table.device}", [
        ("file", f"{table.path}{' (cached)' if cached else ''}"),
        ("device", f"{table.device} ({table.host}), {table.threads} thread(s)"),
        ("context", f"input {tuple(table.input_shape)}, {table.num_classes} classes"),
        ("ops measured", len(table.entries)),
        ("build seconds", table.build_seconds),
        ("overhead ms per depth", overhead),
        *_error_rows(error),
        ("calibration models (each predicted without it)", error["n"]),
    ])


def _error_rows(error: dict[str, Any]) -> list[tuple[str, Any]]:
    """Held-out error per batch beside the calibration models' run-to-run variation."""
    rows = []
    for batch, label in (("1", "batch 1"), ("deploy", f"batch {error['batch_size']}")):
        e = error[batch]
        rows.append((f"whole-model error {label}, mean / max |%| (held out)",
                     f"{fmt(e['mean_abs_pct'])} / {fmt(e['max_abs_pct'])}"))
        rows.append((f"run-to-run variation {label}, median CV %", e["run_to_run_cv_pct"]))
    return rows
