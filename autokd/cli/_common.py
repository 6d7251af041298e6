"""What every ``autokd`` command shares: output helpers, argument groups, config builders.

Only the ``autokd.cli`` package prints. Library errors a user can cause arrive as
``AutokdError`` and become one line in ``autokd.cli.main``.
"""

from __future__ import annotations

import argparse
import json
import logging
import math
import os
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

from autokd.data import dataset_help
from autokd.errors import ConfigError
from autokd.paired import gain_text
from autokd.progress import format_eta
from autokd.record import TrialRecord
from autokd.registry import Registry

__all__ = [
    "COMMANDS",
    "add_data_args",
    "add_kd_args",
    "add_latency_args",
    "add_runtime_arg",
    "add_teacher_args",
    "add_train_args",
    "check_writable",
    "command",
    "data_config",
    "fmt",
    "fraction",
    "kd_config",
    "latency_config",
    "positive_int",
    "print_front",
    "print_json",
    "print_kv_table",
    "progress_line",
    "resolve_teacher",
    "train_config",
    "weights_arg",
]

logger = logging.getLogger("autokd")
Handler = Callable[[argparse.Namespace], int]
COMMANDS: Registry[Handler] = Registry("command")


def _console() -> Any:
    from rich.console import Console

    width = None if sys.stdout.isatty() else 160  # logs and pipes get full tables
    return Console(stderr=False, highlight=False, width=width)


def fmt(value: Any, digits: int = 4) -> str:
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
        table.add_row(key, fmt(value))
    _console().print(table)


def positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {text!r}")
    return value


def fraction(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number, got {text!r}") from None
    if not 0.0 < value < 1.0:
        raise argparse.ArgumentTypeError(f"expected a fraction in (0, 1), got {text!r}")
    return value


def add_data_args(p: argparse.ArgumentParser) -> None:
    g = p.add_argument_group("data")
    g.add_argument("--dataset", default="digits", help=dataset_help())
    g.add_argument("--target", help="label column of csv:PATH (required) and text:PATH "
                                    "(default label) datasets")
    g.add_argument("--val-fraction", type=fraction, default=0.15,
                   help="share of samples held out for validation/selection (default 0.15)")
    g.add_argument("--test-fraction", type=fraction, default=0.2,
                   help="share of samples held out for the final test (default 0.2)")
    g.add_argument("--num-samples", type=positive_int,
                   help="samples to generate for generated datasets (mnist1d)")
    g.add_argument("--data-seed", type=int, default=0, help="seed of the train/val/test split")
    g.add_argument("--image-size", type=positive_int, metavar="N",
                   help="folder:DIR images: resize the shorter side to N, centre-crop N x N "
                        "(needed when images differ in size)")
    g.add_argument("--channels", default="auto", choices=("auto", "1", "3"),
                   help="folder:DIR images: 1 (grayscale), 3 (RGB) or auto: 1 when every image "
                        "is grayscale (default auto; alpha is dropped)")
    g.add_argument("--skip-bad-files", action="store_true",
                   help="folder:DIR images: leave unreadable files out (counted in the run "
                        "record) instead of stopping")
    g.add_argument("--text-column", default="text", metavar="NAME",
                   help="text:PATH: the column (csv) or key (JSON lines) holding the text "
                        "(default text)")
    g.add_argument("--vocab-size", type=int, default=4000, metavar="N",
                   help="text:PATH: vocabulary of the tokenizer trained on the train split "
                        "(default 4000)")
    g.add_argument("--max-length", type=int, default=64, metavar="N",
                   help="text:PATH: tokens per sample; longer texts are cut, shorter padded "
                        "(default 64)")
    g.add_argument("--tokenizer", metavar="PATH",
                   help="text:PATH: a tokenizer.json, or a directory holding one (as "
                        "save_pretrained writes), used instead of training one")
    g.add_argument("--tokenizer-kind", default="wordpiece", choices=("wordpiece", "bpe"),
                   help="text:PATH: the kind of tokenizer trained (default wordpiece)")
    g.add_argument("--data-free", type=positive_int, metavar="N",
                   help="no training data: the student learns from N inputs synthesised from "
                        "the teacher (DeepInversion: matches its BatchNorm statistics; needs a "
                        "PyTorch teacher with BatchNorm); val and test stay real")
    g.add_argument("--memory-budget", metavar="BYTES",
                   help="data whose float32 tensors exceed this (e.g. 512M, 4G) is streamed "
                        "from disk (default 25%% of physical memory)")
    g.add_argument("--loader-workers", type=int, metavar="N",
                   help="worker processes reading streamed data (default min(4, cpus - 1))")
    # scarce labels, unlabelled inputs, privileged features (autokd.data.scarce)
    g.add_argument("--unlabeled", metavar="SOURCE",
                   help="extra inputs without labels (any data source of the same kind and "
                        "shape; labels, if any, ignored), used only through the teacher's soft "
                        "outputs; 'rest' = the train samples --train-fraction / "
                        "--shots-per-class left out. Rows also in val/test are dropped")
    g.add_argument("--train-fraction", type=float, metavar="F",
                   help="keep this fraction (0 < F <= 1) of the labelled train split, per "
                        "class (val/test unchanged)")
    g.add_argument("--shots-per-class", type=positive_int, metavar="K",
                   help="keep K labelled train samples per class (val/test unchanged)")
    g.add_argument("--student-features", metavar="COLS",
                   help="tabular data: the columns the student sees (names or 0-based indices, "
                        "comma-separated); the teacher sees every column")


def add_teacher_args(p: argparse.ArgumentParser) -> None:
    g = p.add_argument_group("teacher")
    g.add_argument("--teacher", action="append", metavar="PATH",
                   help="teacher checkpoint, TorchScript file, module:function[@weights], "
                        "joblib sklearn estimator or hf:DIR (a Hugging Face classifier saved "
                        "with save_pretrained); repeat for an ensemble (default: a cached "
                        "default teacher trained for the dataset)")
    g.add_argument("--trust", action="store_true",
                   help="allow teachers whose loading runs code (pickles, joblib, "
                        "module:function, hf:DIR models with their own code)")


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
    g.add_argument("--init", default="random", choices=d.INITS,
                   help="student's starting weights: random, or teacher (copies of the "
                        "teacher's layers picked by --hint-mapping; same family and widths)")
    g.add_argument("--assistant", default="none", choices=d.ASSISTANTS,
                   help="who teaches the student: the teacher (none), or auto: a teacher "
                        "assistant at the geometric mean of teacher and student FLOPs (in a "
                        "search a finished trial of that size, else one trained first)")
    g.add_argument("--quantize", default="none", choices=d.QUANTIZE,
                   help="none, or int8: train with fake-quantised weights and activations and "
                        "report the INT8 ONNX model's bytes, latency and accuracy")
    g.add_argument("--qat-weight", type=float, default=0.0, metavar="LAMBDA",
                   help="weight of the rounding penalty lambda*||W - Q(W)||^2 (int8; default 0)")


def add_train_args(p: argparse.ArgumentParser, epochs: int = 40) -> None:
    g = p.add_argument_group("training")
    g.add_argument("--epochs", type=positive_int, default=epochs, help=f"epochs (default {epochs})")
    g.add_argument("--batch-size", type=positive_int, default=64, help="batch size (default 64)")
    g.add_argument("--lr", type=float, default=3e-3, help="learning rate (default 3e-3)")
    g.add_argument("--weight-decay", type=float, default=1e-4, help="AdamW weight decay")
    g.add_argument("--seed", type=int, default=0, help="seed of initialisation and batch order")
    g.add_argument("--device", default="auto", choices=("auto", "cpu", "cuda"),
                   help="auto uses CUDA with mixed precision when present")
    g.add_argument("--augment", default="none", metavar="RECIPE",
                   help="training-time augmentation: none, crop (images and signals), "
                        "crop_flip, rrc_flip (images)")
    g.add_argument("--aug-teacher", default="replay", metavar="MODE",
                   help="teacher logits of augmented batches: replay (a cache of --replay-k "
                        "draws per sample, built once) or online (the teacher runs per batch)")
    g.add_argument("--replay-k", type=int, default=8, help="augmentation draws per sample "
                   "in the replay cache (default 8)")
    add_metric_arg(g)


def add_metric_arg(g: Any) -> None:
    """``--metric``: the validation metric that keeps the best epoch (and, in a search, that
    the accuracy objective maximises); validated by the config so a typo is one line, exit 2."""
    g.add_argument("--metric", default="accuracy",
                   help="accuracy (default), balanced_accuracy or macro_f1 (imbalanced data): "
                        "keeps the best epoch and is what the accuracy objective maximises")


def data_config(args: argparse.Namespace) -> Any:
    from autokd.config import DataConfig

    return DataConfig(source=args.dataset, seed=args.data_seed, val_fraction=args.val_fraction,
                      test_fraction=args.test_fraction, target=args.target,
                      num_samples=args.num_samples, image_size=args.image_size,
                      channels=args.channels, skip_bad_files=args.skip_bad_files,
                      text_column=args.text_column, vocab_size=args.vocab_size,
                      max_length=args.max_length, tokenizer=args.tokenizer,
                      tokenizer_kind=args.tokenizer_kind, data_free=args.data_free,
                      memory_budget=args.memory_budget,
                      loader_workers=args.loader_workers,
                      unlabeled=args.unlabeled, train_fraction=args.train_fraction,
                      shots_per_class=args.shots_per_class,
                      student_features=args.student_features).validate()


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


def add_latency_args(p: argparse.ArgumentParser) -> None:
    g = p.add_argument_group("latency")
    g.add_argument("--latency-batch", type=positive_int, default=64,
                   help="batch size you deploy at; latency is measured at 1 and at this")
    g.add_argument("--latency-device", default="cpu", choices=("cpu", "cuda", "auto"),
                   help="device latency is measured on (default cpu; cuda times with CUDA events)")
    add_runtime_arg(g)


def add_runtime_arg(g: Any) -> None:
    """``--latency-runtime``: where latency is timed. Checked by ``CostConfig.validate`` (one
    line, exit 2) rather than argparse ``choices`` (a usage block)."""
    g.add_argument("--latency-runtime", default="auto", metavar="RUNTIME",
                   help="where latency is timed: torch (eager), torchscript (frozen trace) or "
                        "onnxruntime (the float ONNX file); default onnxruntime when onnx and "
                        "onnxruntime are installed and latency is timed on the CPU, else torch")


def latency_config(args: argparse.Namespace) -> Any:
    """How the trained model's cost is measured; a missing CUDA device or runtime fails here,
    early."""
    from autokd.config import CostConfig
    from autokd.device import resolve_device
    from autokd.quant.deploy import resolve_runtime

    resolve_device(args.latency_device, "--latency-device")
    return resolve_runtime(CostConfig(batch_size=args.latency_batch, device=args.latency_device,
                                      runtime=args.latency_runtime))


def train_config(args: argparse.Namespace) -> Any:
    from autokd.config import TrainConfig
    from autokd.device import resolve_device

    resolve_device(args.device)  # --device cuda without CUDA: one line, before any work
    return TrainConfig(epochs=args.epochs, batch_size=args.batch_size, lr=args.lr,
                       weight_decay=args.weight_decay, seed=args.seed, device=args.device,
                       metric=args.metric, augment=args.augment, aug_teacher=args.aug_teacher,
                       replay_k=args.replay_k).validate()


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


def command(name: str) -> Callable[[Handler], Handler]:
    """Register ``fn`` as the handler of subcommand ``name``."""

    def deco(fn: Handler) -> Handler:
        COMMANDS.register(name, fn)
        return fn

    return deco


def check_writable(path: Path) -> None:
    parent = path.parent if path.parent != Path("") else Path(".")
    try:
        parent.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise ConfigError(f"cannot create {parent}: {exc.strerror}") from None
    if not _is_writable(parent):
        raise ConfigError(f"cannot write to {parent}")


def _is_writable(folder: Path) -> bool:
    return os.access(folder, os.W_OK)


def progress_line(p: Any) -> None:
    """One line per finished trial: state, result or reason, budget, ETA and the front."""
    t, rec = p.last, TrialRecord.of(p.last)
    state = "infeasible" if rec.infeasible else t.state.name.lower()
    acc = rec.val_accuracy
    what = f"val acc {acc:.4f} FLOPs {fmt(rec.flops)}" if acc is not None else (
        rec.fail_reason or rec.prune_reason or rec.infeasible_reason or "")
    if rec.rung is not None:  # --strategy asha: which rung, and the trial it continued
        after = f", continues {rec.resumed_from}" if rec.resumed_from is not None else ""
        what = f"rung {rec.rung} ({rec.epochs_total} epochs{after}) {what}"
    budget = p.budget.trials if p.budget.trials is not None else f"{p.budget.seconds:g}s"
    eta = f"eta {format_eta(p.eta)}" if p.eta is not None else ""
    best = " ".join(f"{k}={fmt(v)}" for k, v in p.best.items())
    hv = f" hv {p.hypervolume:.4f}" if getattr(p, "hypervolume", None) is not None else ""
    print(f"[{round(p.done, 1):g}/{budget}] trial {t.number} {state}: {what} | elapsed "
          f"{format_eta(p.elapsed)} {eta} | front {p.front_size}{hv} best {best}", flush=True)


def print_front(name: str, rows: list[dict[str, Any]], teacher: dict[str, Any],
                usefulness: dict[str, Any] | None = None) -> None:
    """The front as a table; ``usefulness`` (``report_data``'s) says how many students below
    the usefulness floor it leaves off."""
    from rich.table import Table

    from autokd.report.text import left_off_text

    table = Table(title=f"Pareto front of {name} (teacher: test acc "
                        f"{fmt(teacher.get('test_accuracy'))}, FLOPs {fmt(teacher.get('flops'))}, "
                        f"params {fmt(teacher.get('params'))})")
    runtime = "+".join(sorted({str(r.get("latency_runtime") or "torch") for r in rows})) \
        or "torch"
    cols = [("trial", "trial"), ("val acc", "val_accuracy"), ("test acc", "test_accuracy"),
            ("retention", "retention"), ("FLOPs", "flops"), ("params", "params"),
            (f"latency ms ({runtime})", "latency_ms"), ("FLOPs x", "flops_compression"),
            ("architecture", "architecture"), ("recipe", "recipe")]
    deployed = sorted({str(r["deploy_runtime"]) for r in rows if r.get("deploy_runtime")})
    if deployed:  # the front re-timed in the deploy runtime after the search
        cols.insert(7, (f"latency ms ({'+'.join(deployed)})", "deploy_latency_ms"))
    if any("kd_gain" in r for r in rows):
        cols.append(("KD gain", "kd_gain"))
    if any("kd_gain_seeds" in r for r in rows):
        cols.append(("KD gain, test, N seeds [95 % CI]", "kd_gain_seeds"))
    for title, _ in cols:
        table.add_column(title, justify="left" if title in ("architecture", "recipe") else "right")
    for r in rows:
        table.add_row(*[gain_text(r[key]) if key == "kd_gain_seeds" and key in r
                        else fmt(r.get(key)) for _, key in cols])
    if not rows:
        table.add_row(*(["-"] * len(cols)))
    _console().print(table)
    if left_off_text(usefulness):
        print(left_off_text(usefulness))
