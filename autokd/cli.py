"""The ``autokd`` command line.

Only this module prints. Every user error surfaces as one line on stderr and exit code 2
(``AutokdError``); Ctrl-C exits 130 and SIGTERM 143 after the library has saved what was
finished; anything unexpected is one line too, with the traceback only under ``--debug``.
"""

from __future__ import annotations

import argparse
import contextlib
import importlib
import json
import logging
import math
import signal
import sys
import threading
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any

from autokd.errors import AutokdError, ConfigError

__all__ = ["main", "build_parser"]

logger = logging.getLogger("autokd")
Handler = Callable[[argparse.Namespace], int]
_COMMANDS: dict[str, Handler] = {}


# -- output helpers --------------------------------------------------------------------------
def _console() -> Any:
    from rich.console import Console

    width = None if sys.stdout.isatty() else 160  # logs and pipes get full tables
    return Console(stderr=False, highlight=False, width=width)


def _fmt(value: Any, digits: int = 4) -> str:
    if value is None:
        return "-"
    if isinstance(value, float):
        if math.isnan(value):
            return "nan"
        if abs(value) >= 1e5:
            return f"{value:.3g}"
        return f"{value:.{digits}g}"
    if isinstance(value, int) and abs(value) >= 10_000:
        return f"{value:,}"
    return str(value)


def print_json(obj: Any) -> None:
    print(json.dumps(obj, indent=2, default=_json_default))


def _json_default(obj: Any) -> Any:
    if hasattr(obj, "item"):
        return obj.item()
    if isinstance(obj, Path):
        return str(obj)
    return str(obj)


def print_kv_table(title: str, rows: list[tuple[str, Any]]) -> None:
    from rich.table import Table

    table = Table(title=title, show_header=False)
    table.add_column("metric", style="bold")
    table.add_column("value", justify="right")
    for key, value in rows:
        table.add_row(key, _fmt(value))
    _console().print(table)


# -- shared argument groups ------------------------------------------------------------------
def _positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {text!r}")
    return value


def _fraction(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number, got {text!r}") from None
    if not 0.0 < value < 1.0:
        raise argparse.ArgumentTypeError(f"expected a fraction in (0, 1), got {text!r}")
    return value


def add_data_args(p: argparse.ArgumentParser) -> None:
    g = p.add_argument_group("data")
    g.add_argument("--dataset", default="digits",
                   help="digits (default), wine, breast_cancer, mnist1d, npz:PATH or csv:PATH")
    g.add_argument("--target", help="target column for csv:PATH datasets")
    g.add_argument("--val-fraction", type=_fraction, default=0.15,
                   help="share of samples held out for validation/selection (default 0.15)")
    g.add_argument("--test-fraction", type=_fraction, default=0.2,
                   help="share of samples held out for the final test (default 0.2)")
    g.add_argument("--num-samples", type=_positive_int,
                   help="samples to generate for generated datasets (mnist1d)")
    g.add_argument("--data-seed", type=int, default=0, help="seed of the train/val/test split")


def add_teacher_args(p: argparse.ArgumentParser) -> None:
    g = p.add_argument_group("teacher")
    g.add_argument("--teacher", action="append", metavar="PATH",
                   help="teacher checkpoint, TorchScript file, module:function[@weights] or "
                        "joblib sklearn estimator; repeat for an ensemble (default: a cached "
                        "default teacher trained for the dataset)")
    g.add_argument("--trust", action="store_true",
                   help="allow teachers whose loading runs code (pickles, joblib, module:function)")


def add_kd_args(p: argparse.ArgumentParser) -> None:
    """Recipe flags; every choice list comes from the registries of ``autokd.distill``."""
    from autokd import distill as d

    g = p.add_argument_group("distillation recipe")
    g.add_argument("--loss", dest="soft_loss", default="kl",
                   choices=[*d.names_of_kind("soft"), "none"],
                   help="soft loss: KL with T^2, MSE or cosine on logits (default kl)")
    g.add_argument("--temperature", type=float, default=4.0, help="softmax temperature T (default 4)")
    g.add_argument("--t-schedule", default="constant", choices=d.SCHEDULES.names(),
                   help="temperature schedule (default constant)")
    g.add_argument("--t-decay", type=float, default=3.0, help="decay rate of the exp schedule")
    g.add_argument("--alpha", type=float, default=0.9, help="weight of the soft term (default 0.9)")
    g.add_argument("--label-smoothing", type=float, default=0.0, help="epsilon of the hard term")
    g.add_argument("--hint-weight", type=float, default=0.0, help="FitNet feature-hint weight")
    g.add_argument("--hint-mapping", default="uniform", choices=d.hint_mappings(),
                   help="student->teacher layer mapping for hints")
    g.add_argument("--relation", default="none", choices=["none", *d.names_of_kind("relation")],
                   help="relation KD kind")
    g.add_argument("--relation-weight", type=float, default=0.0, help="relation KD weight")
    g.add_argument("--attention-weight", type=float, default=0.0, help="attention-transfer weight")
    g.add_argument("--terms", metavar="NAME=W,...",
                   help="the recipe as weighted KD terms, e.g. kl=0.9,ce=0.1,fitnet=0.5 "
                        f"(known: {', '.join(d.TERMS.names())}); replaces --loss, --alpha, "
                        "--hint-weight, --relation, --relation-weight and --attention-weight")
    g.add_argument("--importance", default="none", choices=d.IMPORTANCE.names(),
                   help="per-sample importance weights")
    g.add_argument("--teacher-weighting", default="mean", choices=d.TEACHER_WEIGHTINGS.names(),
                   help="how an ensemble's teachers are combined")


def add_train_args(p: argparse.ArgumentParser, epochs: int = 40) -> None:
    g = p.add_argument_group("training")
    g.add_argument("--epochs", type=_positive_int, default=epochs, help=f"epochs (default {epochs})")
    g.add_argument("--batch-size", type=_positive_int, default=64, help="batch size (default 64)")
    g.add_argument("--lr", type=float, default=3e-3, help="learning rate (default 3e-3)")
    g.add_argument("--weight-decay", type=float, default=1e-4, help="AdamW weight decay")
    g.add_argument("--seed", type=int, default=0, help="seed of initialisation and batch order")
    g.add_argument("--device", default="auto", choices=("auto", "cpu", "cuda"),
                   help="auto uses CUDA with mixed precision when present")


def data_config(args: argparse.Namespace) -> Any:
    from autokd.config import DataConfig

    return DataConfig(source=args.dataset, seed=args.data_seed, val_fraction=args.val_fraction,
                      test_fraction=args.test_fraction, target=args.target,
                      num_samples=args.num_samples).validate()


def kd_config(args: argparse.Namespace) -> Any:
    """The recipe of the KD flags; ``--terms`` excludes the shorthand flags it replaces."""
    import dataclasses

    from autokd.distill import SHORTHAND, KDConfig

    keys = [f.name for f in dataclasses.fields(KDConfig) if f.name != "terms"]
    values = {k: getattr(args, k) for k in keys}
    if args.terms is not None:
        given = [k for k in SHORTHAND if values[k] != getattr(KDConfig, k)]
        if given:
            flags = ", ".join("--" + ("loss" if k == "soft_loss" else k.replace("_", "-"))
                              for k in given)
            raise ConfigError(f"--terms replaces {flags}; give one or the other")
        values["terms"] = weights_arg("--terms", args.terms, "kl=0.9")
    return KDConfig(**values).validate()


def weights_arg(flag: str, text: str, example: str) -> dict[str, float]:
    """``"kl=0.9,ce=0.1"`` -> ``{"kl": 0.9, "ce": 0.1}`` (one clear error otherwise)."""
    out = {}
    for item in filter(None, (p.strip() for p in text.split(","))):
        key, eq, value = item.partition("=")
        try:
            out[key.strip()] = float(value)
        except ValueError:
            raise ConfigError(f"bad {flag} item {item!r}; expected e.g. {example}") from None
        if not eq:
            raise ConfigError(f"bad {flag} item {item!r}; expected e.g. {example}")
    return out


def train_config(args: argparse.Namespace) -> Any:
    from autokd.config import TrainConfig

    return TrainConfig(epochs=args.epochs, batch_size=args.batch_size, lr=args.lr,
                       weight_decay=args.weight_decay, seed=args.seed, device=args.device).validate()


def resolve_teacher(args: argparse.Namespace, data: Any) -> tuple[Any, str]:
    """The user's teacher(s), or the cached default teacher for the data."""
    from autokd import teachers

    if args.teacher:
        return teachers.load_teachers(args.teacher, trust=args.trust, data=data), ", ".join(args.teacher)
    device = getattr(args, "device", "cpu")
    if not getattr(args, "json", False):
        print(f"no --teacher given: using the default teacher for {data.name} "
              "(trained once, then cached)", file=sys.stderr)
    teacher, path = teachers.default_teacher(data, device=device)
    return teacher, str(path)


# -- commands --------------------------------------------------------------------------------
def command(name: str) -> Callable[[Handler], Handler]:
    def deco(fn: Handler) -> Handler:
        _COMMANDS[name] = fn
        return fn

    return deco


@command("teacher")
def cmd_teacher(args: argparse.Namespace) -> int:
    from autokd import teachers
    from autokd.cost import measure_cost
    from autokd.data import load_data

    data = load_data(data_config(args))
    _check_writable(Path(args.out))
    model, result = teachers.train_teacher(data, epochs=args.epochs, seed=args.seed, device=args.device)
    metrics = teachers.teacher_metrics(model, data, result)
    metrics.update(measure_cost(model, data.input_shape).to_dict())
    path = teachers.save_checkpoint(model, args.out, data=data.describe(), metrics=metrics)
    out = {"path": str(path), "dataset": data.describe(), "family": model.family,
           "spec": model.spec, **metrics}
    if args.json:
        print_json(out)
    else:
        print_kv_table(f"teacher saved to {path}", [
            ("test accuracy", metrics["test_accuracy"]), ("val accuracy", metrics["val_accuracy"]),
            ("params", metrics["params"]), ("FLOPs", metrics["flops"]),
            ("latency ms (batch 1)", metrics["latency_ms"]), ("split hash", data.split_hash)])
    return 0


def _check_writable(path: Path) -> None:
    parent = path.parent if path.parent != Path("") else Path(".")
    try:
        parent.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise ConfigError(f"cannot create {parent}: {exc.strerror}") from None
    if not _is_writable(parent):
        raise ConfigError(f"cannot write to {parent}")


def _is_writable(folder: Path) -> bool:
    import os

    return os.access(folder, os.W_OK)


@command("distill")
def cmd_distill(args: argparse.Namespace) -> int:
    from autokd.data import load_data
    from autokd.models import build_student, default_family, parse_student_arg
    from autokd.pipeline import run_distillation

    data = load_data(data_config(args))
    family, spec = (parse_student_arg(args.student) if args.student
                    else (default_family(data.input_shape), {"depth": 2, "widths": [8, 16]}))
    kd = kd_config(args)
    kd = kd.scratch() if args.scratch else kd
    train_cfg = train_config(args)  # bad options and students fail before a teacher is trained
    build_student(family, spec, data.input_shape, data.num_classes)
    if args.out:
        _check_writable(Path(args.out))
    teacher, teacher_ref = resolve_teacher(args, data)
    run = run_distillation(data, teacher, family, spec, kd, train_cfg)
    metrics = run.metrics()
    if args.out:
        from autokd.teachers import save_checkpoint

        save_checkpoint(run.model, args.out, data=data.describe(), metrics=metrics,
                        recipe=vars(kd), teacher=teacher_ref)
    _report_distill(args, data, family, run, metrics, teacher_ref)
    return 0


def _report_distill(args: argparse.Namespace, data: Any, family: str, run: Any,
                    metrics: dict[str, Any], teacher_ref: str) -> None:
    from autokd.tables import spec_summary

    t = run.teacher
    if args.json:
        print_json({"dataset": data.describe(), "family": family, "spec": run.spec,
                    "recipe": vars(run.kd), "student": metrics, "teacher": t,
                    "teacher_ref": teacher_ref, "mode": "scratch" if args.scratch else "kd"})
        return
    rows = [
        ("mode", "scratch" if args.scratch else f"KD ({run.kd.soft_loss}, T={run.kd.temperature}, "
                                                 f"alpha={run.kd.alpha})"),
        ("student", f"{family} {spec_summary(run.spec)}"),
        ("test accuracy (student / teacher)",
         f"{_fmt(metrics['test_accuracy'])} / {_fmt(t.get('test_accuracy'))}"),
        ("retention", metrics.get("retention")),
        ("val KD loss", metrics.get("val_kd_loss")),
        ("params (student / teacher)", f"{_fmt(metrics['params'])} / {_fmt(t.get('params'))}"),
        ("FLOPs (student / teacher)", f"{_fmt(metrics['flops'])} / {_fmt(t.get('flops'))}"),
        ("compression by params / FLOPs",
         f"{_fmt(metrics.get('params_compression'))}x / {_fmt(metrics.get('flops_compression'))}x"),
        ("latency ms b1 (student / teacher)",
         f"{_fmt(metrics.get('latency_ms'))} / {_fmt(t.get('latency_ms'))}"),
        ("best epoch", metrics["best_epoch"]),
        ("train seconds", metrics["train_seconds"]),
    ]
    print_kv_table(f"distillation on {data.name}", rows)


@command("search")
def cmd_search(args: argparse.Namespace) -> int:
    from autokd.search import SearchConfig, run_search

    cfg = SearchConfig(
        data=data_config(args), teacher=args.teacher, trust=args.trust, space=args.space,
        budget=args.budget, strategy=args.strategy, sampler=args.sampler, pruner=args.pruner,
        settings=search_settings(args), name=args.name, results=args.results,
        storage=args.storage, seed=args.seed, device=args.device, baseline=args.baseline,
        strategy_options=_darts_options(args), jobs=args.jobs, artifacts=args.artifacts,
        tuner=_tuner(args))
    printer = None if args.json else _progress_line
    state: dict[str, Any] = {}
    try:
        outcome = run_search(cfg, printer, on_ready=lambda o: state.update(outcome=o))
    except KeyboardInterrupt:
        _resume_hint(state.get("outcome"), args)
        raise
    _search_summary(args, outcome)
    return 0


def _tuner(args: argparse.Namespace) -> str:
    if args.tuner is not None and args.strategy != "nni":
        raise ConfigError("--tuner applies to --strategy nni only")
    return args.tuner or "tpe"


def _darts_options(args: argparse.Namespace) -> dict[str, Any]:
    """The DARTS flags given (autokd.controllers.darts.DartsOptions validates them)."""
    given = {k: v for k, v in (("targets", args.targets), ("target_metric", args.target_metric),
                               ("relaxation", args.relaxation), ("epochs", args.darts_epochs),
                               ("kd", args.darts_kd)) if v is not None}
    if given and args.strategy != "darts":
        raise ConfigError("--targets, --target-metric, --relaxation, --darts-epochs and "
                          "--darts-kd apply to --strategy darts only")
    return given


def search_settings(args: argparse.Namespace) -> Any:
    from autokd.config import CostConfig, SearchSettings, TrainConfig

    objectives = [o.strip() for o in args.objectives.split(",") if o.strip()]
    weights = weights_arg("--score-weights", args.score_weights, "flops=0.1")
    return SearchSettings(
        objectives=objectives, score=args.score, score_weights=weights,
        max_flops=args.max_flops, max_params=args.max_params, max_bytes=args.max_bytes,
        max_latency_ms=args.max_latency_ms, epochs=args.epochs,
        train=TrainConfig(threads=args.threads),
        cost=CostConfig.for_search(batch_size=args.latency_batch, latency=not args.no_latency,
                                   threads=args.latency_threads),
        pareto_pruning=not args.no_early_stop).validate()


def _progress_line(p: Any) -> None:
    t = p.last
    state = t.state.name.lower()
    if t.user_attrs.get("infeasible"):
        state = "infeasible"
    acc = t.user_attrs.get("val_accuracy")
    what = f"val acc {acc:.4f} FLOPs {_fmt(t.user_attrs.get('flops'))}" if acc is not None else (
        t.user_attrs.get("fail_reason") or t.user_attrs.get("prune_reason")
        or t.user_attrs.get("infeasible_reason") or "")
    budget = p.budget.trials if p.budget.trials is not None else f"{p.budget.seconds:g}s"
    eta = f"eta {_duration(p.eta)}" if p.eta is not None else ""
    best = " ".join(f"{k}={_fmt(v)}" for k, v in p.best.items())
    print(f"[{p.done}/{budget}] trial {t.number} {state}: {what} | elapsed "
          f"{_duration(p.elapsed)} {eta} | front {p.front_size} best {best}", flush=True)


def _duration(seconds: float | None) -> str:
    if seconds is None:
        return "-"
    m, s = divmod(int(seconds), 60)
    h, m = divmod(m, 60)
    return f"{h}h{m:02d}m" if h else f"{m}m{s:02d}s"


def _resume_hint(outcome: Any, args: argparse.Namespace) -> None:
    if outcome is None:
        return
    from autokd.controllers.base import count_done

    done = count_done(outcome.study)
    print(f"autokd: search interrupted after {done} finished trials (all saved in "
          f"{outcome.paths.root}); rerun the same command to resume", file=sys.stderr)


def _search_summary(args: argparse.Namespace, outcome: Any) -> None:
    from autokd.controllers.base import count_done
    from autokd.tables import front_rows

    rows = front_rows(outcome.study)
    done = count_done(outcome.study)
    if args.json:
        print_json({"study": outcome.study.study_name, "results": str(outcome.paths.root),
                    "status": outcome.status, "finished_trials": done,
                    "teacher": outcome.teacher, "pareto": rows})
        return
    if outcome.status == "already_finished":
        print(f"study {outcome.study.study_name!r} already has {done} finished trials "
              f"(budget {outcome.budget}); pass a larger --budget to extend it")
    print_front(outcome.study.study_name, rows, outcome.teacher)
    print(f"results: {outcome.paths.root} (trials.csv, pareto.csv); "
          f"next: autokd report {outcome.paths.root}")


def print_front(name: str, rows: list[dict[str, Any]], teacher: dict[str, Any]) -> None:
    from rich.table import Table

    table = Table(title=f"Pareto front of {name} (teacher: test acc "
                        f"{_fmt(teacher.get('test_accuracy'))}, FLOPs {_fmt(teacher.get('flops'))}, "
                        f"params {_fmt(teacher.get('params'))})")
    cols = [("trial", "trial"), ("val acc", "val_accuracy"), ("test acc", "test_accuracy"),
            ("retention", "retention"), ("FLOPs", "flops"), ("params", "params"),
            ("latency ms", "latency_ms"), ("FLOPs x", "flops_compression"),
            ("architecture", "architecture"), ("recipe", "recipe")]
    if any("kd_gain" in r for r in rows):
        cols.append(("KD gain", "kd_gain"))
    for title, _ in cols:
        table.add_column(title, justify="left" if title in ("architecture", "recipe") else "right")
    for r in rows:
        table.add_row(*[_fmt(r.get(key)) for _, key in cols])
    if not rows:
        table.add_row(*(["-"] * len(cols)))
    _console().print(table)


# -- parser ----------------------------------------------------------------------------------
def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="autokd", description="Search student networks and "
                                "distillation recipes for a teacher; report and export them.")
    p.add_argument("--debug", action="store_true", help="show tracebacks for errors")
    p.add_argument("-v", "--verbose", action="store_true", help="log progress details")
    sub = p.add_subparsers(dest="command", metavar="COMMAND")
    _parser_search(sub)
    _parser_teacher(sub)
    _parser_distill(sub)
    for module in _EXTRA_COMMAND_MODULES:
        importlib.import_module(module).add_parsers(sub)
    return p


# modules that add subcommands: each has add_parsers(sub) and registers handlers with @command
_EXTRA_COMMAND_MODULES = ["autokd.cli_outputs", "autokd.cli_darts", "autokd.cli_workers"]


def _parser_search(sub: Any) -> None:
    p = sub.add_parser("search", help="search student architectures and KD recipes")
    add_data_args(p)
    add_teacher_args(p)
    g = p.add_argument_group("search")
    g.add_argument("--space", help="cnn, cnn1d, mlp or a YAML file (default: by data kind)")
    g.add_argument("--budget", default="20",
                   help="finished trials in total (40) or wall time (15m, 2h); default 20")
    g.add_argument("--strategy", default="optuna", help="optuna (default), darts or nni")
    g.add_argument("--sampler", default="tpe", help="tpe (default), nsga2, gp or random")
    g.add_argument("--pruner", default="none",
                   help="none (default), median or hyperband (single-objective --score only)")
    g.add_argument("--objectives", default="accuracy,flops",
                   help="Pareto objectives from accuracy, kd_loss, flops, params, bytes, latency")
    g.add_argument("--score", action="store_true",
                   help="optimise one scalar: val KD loss + weighted costs / teacher's costs")
    g.add_argument("--score-weights", default="bytes=0.1,flops=0.1,latency=0.1",
                   help="lambda weights of the --score cost terms")
    g.add_argument("--max-flops", type=float, help="hard limit on FLOPs (multiply-adds)")
    g.add_argument("--max-params", type=float, help="hard limit on parameters")
    g.add_argument("--max-bytes", type=float, help="hard limit on serialized bytes")
    g.add_argument("--max-latency-ms", type=float, help="hard limit on batch-1 latency (ms)")
    g.add_argument("--epochs", type=_positive_int, help="override the space's epochs per trial")
    g.add_argument("--threads", type=_positive_int, default=1,
                   help="torch CPU threads per trial (default 1: small students gain nothing "
                        "from more, and spinning threads slow down a busy machine)")
    g.add_argument("--no-early-stop", action="store_true",
                   help="disable the Pareto early-stopping rule")
    g.add_argument("--baseline", action="store_true",
                   help="also train each Pareto student from scratch to measure the KD gain")
    g.add_argument("--latency-batch", type=_positive_int, default=64,
                   help="batch size of the second latency measurement (default 64)")
    g.add_argument("--latency-threads", type=_positive_int, default=1,
                   help="threads used when measuring latency (default 1)")
    g.add_argument("--no-latency", action="store_true", help="skip latency measurement")
    g = p.add_argument_group("DARTS (--strategy darts; --budget counts DARTS runs)")
    g.add_argument("--targets", help="cost targets as fractions of the teacher's cost, one DARTS "
                   "run each, e.g. 0.05,0.1,0.25 (default 0.05,0.1,0.25,0.5; more runs fill the "
                   "gaps between them)")
    g.add_argument("--target-metric", choices=("auto", "flops", "params", "latency"),
                   help="what --targets are fractions of (auto: latency with --max-latency-ms "
                        "or the latency objective, else FLOPs)")
    g.add_argument("--relaxation", choices=("softmax", "gumbel"),
                   help="gumbel (annealed Gumbel-softmax, FBNet; default) or softmax (DARTS)")
    g.add_argument("--darts-epochs", type=_positive_int,
                   help="supernet search epochs per run (default 16)")
    g.add_argument("--darts-kd", choices=("fixed", "sample"),
                   help="recipe per run: the space's first choice/midpoint (fixed, default) or "
                        "sampled by the outer Optuna loop (sample)")
    g = p.add_argument_group("study")
    g.add_argument("--name", help="study name (default: DATASET-SPACE, so re-running resumes)")
    g.add_argument("--results", default="results", help="results root directory")
    g.add_argument("--storage", help="Optuna storage URL (default SQLite in results/NAME/)")
    g.add_argument("--seed", type=int, default=0, help="sampler and training seed")
    g.add_argument("--device", default="auto", choices=("auto", "cpu", "cuda"))
    g.add_argument("--jobs", type=_positive_int, default=1,
                   help="local worker processes sharing the study (cores/N torch threads each)")
    g.add_argument("--artifacts", metavar="DIR|URL",
                   help="where the teacher is stored for workers: a shared directory, s3://BUCKET "
                        "or gs://BUCKET (default results/NAME/artifacts)")
    g.add_argument("--tuner", choices=("tpe", "evolution", "anneal", "random"),
                   help="NNI tuner for --strategy nni (default tpe)")
    p.add_argument("--json", action="store_true", help="quiet; print a JSON summary at the end")


def _parser_teacher(sub: Any) -> None:
    p = sub.add_parser("teacher", help="train a default teacher for a dataset")
    p.add_argument("action", choices=("train",), help="what to do (train)")
    add_data_args(p)
    p.add_argument("--out", required=True, help="checkpoint path to write")
    p.add_argument("--epochs", type=_positive_int, help="epochs (default: per data kind)")
    p.add_argument("--seed", type=int, default=0, help="training seed")
    p.add_argument("--device", default="auto", choices=("auto", "cpu", "cuda"))
    p.add_argument("--json", action="store_true", help="print a JSON summary")


def _parser_distill(sub: Any) -> None:
    p = sub.add_parser("distill", help="one distillation run of a fixed student")
    add_data_args(p)
    add_teacher_args(p)
    p.add_argument("--student", help="family:key=value,... e.g. cnn:depth=2,width=16 "
                                      "(lists as widths=8/16; default a small student)")
    add_kd_args(p)
    add_train_args(p, epochs=60)
    p.add_argument("--scratch", action="store_true",
                   help="train the same student without a teacher (KD-gain comparison)")
    p.add_argument("--out", help="write the trained student as an autokd checkpoint")
    p.add_argument("--json", action="store_true", help="print a JSON summary")


# -- entry point -----------------------------------------------------------------------------
def _setup_logging(verbose: bool) -> None:
    logging.basicConfig(level=logging.INFO if verbose else logging.WARNING,
                        format="%(levelname)s %(name)s: %(message)s", stream=sys.stderr)
    for noisy in ("fvcore", "iopath"):
        logging.getLogger(noisy).setLevel(logging.ERROR)
    import warnings

    import optuna

    # our progress lines carry failure reasons; Optuna's own warnings add tracebacks
    optuna.logging.set_verbosity(logging.INFO if verbose else logging.ERROR)
    warnings.filterwarnings("ignore", category=optuna.exceptions.ExperimentalWarning)


class _Terminated(KeyboardInterrupt):
    """SIGTERM, raised like Ctrl-C so the running trial is recorded as interrupted."""


def _on_sigterm(signum: int, frame: Any) -> None:
    signal.signal(signal.SIGTERM, signal.SIG_IGN)  # a second TERM must not cut cleanup short
    raise _Terminated()


@contextlib.contextmanager
def _sigterm_as_interrupt() -> Iterator[None]:
    """Treat SIGTERM (kill, systemd, Kubernetes) like Ctrl-C while a command runs.

    Why: the default action kills the process at once, leaving the running trial RUNNING and a
    temp file behind; as an exception, every ``except KeyboardInterrupt`` cleanup runs.
    """
    if threading.current_thread() is not threading.main_thread():
        yield  # signal handlers can only be installed from the main thread
        return
    previous = signal.signal(signal.SIGTERM, _on_sigterm)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if not args.command:
        parser.print_help()
        return 2
    _setup_logging(args.verbose)
    try:
        with _sigterm_as_interrupt():
            return _COMMANDS[args.command](args)
    except AutokdError as exc:
        if args.debug:
            raise
        print(f"autokd: error: {exc}", file=sys.stderr)
        return exc.exit_code
    except KeyboardInterrupt as exc:
        what = "terminated (SIGTERM)" if isinstance(exc, _Terminated) else "interrupted"
        print(f"autokd: {what}; everything finished so far is saved", file=sys.stderr)
        return 143 if isinstance(exc, _Terminated) else 130
    except Exception as exc:  # last resort: one line, traceback only with --debug
        if args.debug:
            raise
        print(f"autokd: internal error: {type(exc).__name__}: {exc} (rerun with --debug for "
              "the traceback)", file=sys.stderr)
        return 1


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
