"""``autokd teacher train`` and ``autokd distill``: one model, trained once."""

from __future__ import annotations

import argparse
import contextlib
from pathlib import Path
from typing import Any

from autokd.cli._chains import (
    assistant_for,
    assistant_rows,
    check_born_again,
    run_born_again,
)
from autokd.cli._common import (
    add_data_args,
    add_kd_args,
    add_latency_args,
    add_teacher_args,
    add_train_args,
    check_writable,
    command,
    data_config,
    fmt,
    kd_config,
    latency_config,
    positive_int,
    print_json,
    print_kv_table,
    resolve_teacher,
    train_config,
)

__all__ = ["add_parsers"]


def _progress(args: argparse.Namespace) -> contextlib.AbstractContextManager[None]:
    """Progress on stderr (a bar on a terminal, periodic lines in a log); none with --json."""
    from autokd.progress import showing

    return contextlib.nullcontext() if args.json else showing()


@command("teacher")
def cmd_teacher(args: argparse.Namespace) -> int:
    from autokd import teachers
    from autokd.data import load_data
    from autokd.device import resolve_device
    from autokd.quant.deploy import runtime_cost

    resolve_device(args.device)  # --device cuda without CUDA: fail before loading data
    cost_cfg = latency_config(args)
    with _progress(args):  # decoding an image folder shows progress too
        data = load_data(data_config(args)).for_teacher()  # a teacher sees every column
    check_writable(Path(args.out))
    with _progress(args):
        model, result = teachers.train_teacher(data, epochs=args.epochs, seed=args.seed,
                                               device=args.device, family=args.family)
    metrics = teachers.teacher_metrics(model, data, result)
    metrics.update(runtime_cost(model, data.input_shape, cost_cfg).to_dict())
    path = teachers.save_checkpoint(model, args.out, data=data.describe(), metrics=metrics)
    out = {"path": str(path), "dataset": data.describe(), "family": model.family,
           "spec": model.spec, **metrics}
    if args.json:
        print_json(out)
    else:
        print_kv_table(f"teacher saved to {path}", [
            ("test accuracy", metrics["test_accuracy"]), ("val accuracy", metrics["val_accuracy"]),
            ("params", metrics["params"]), ("FLOPs", metrics["flops"]),
            (f"latency ms (batch 1, {_runtime_name(metrics)})", metrics["latency_ms"]),
            ("split hash", data.split_hash)])
    return 0


@command("distill")
def cmd_distill(args: argparse.Namespace) -> int:
    from autokd.data import load_data
    from autokd.data.augment import get_augment
    from autokd.datafree import apply_data_free
    from autokd.hf_teacher import hf_data_config, hf_student_spec
    from autokd.models import build_student, parse_student_arg
    from autokd.pipeline import run_distillation
    from autokd.progress import ProgressMeter, epoch_callback

    train_cfg = train_config(args)  # bad options fail before data is loaded
    cost_cfg = latency_config(args)
    data_cfg = hf_data_config(data_config(args), args.teacher)
    with _progress(args):
        data = load_data(data_cfg)
    family, spec = parse_student_arg(args.student) if args.student else _default_student(data)
    spec = hf_student_spec(family, spec, args.teacher)
    kd = kd_config(args)
    check_born_again(args, kd)
    kd = kd.scratch() if args.scratch else kd
    get_augment(train_cfg.augment, data.kind)
    if args.born_again is not None:
        if args.out:
            check_writable(Path(args.out))
        return run_born_again(args, data, kd, train_cfg, cost_cfg, _progress(args))
    build_student(family, spec, data.input_shape, data.num_classes, tokens=data.tokens)
    if args.out:
        check_writable(Path(args.out))
    with _progress(args):
        teacher, teacher_ref = resolve_teacher(args, data)
        data = apply_data_free(data, teacher, data_cfg)
        assistant = assistant_for(data, teacher, family, spec, kd, train_cfg, cost_cfg)
        meter = ProgressMeter(train_cfg.epochs, f"distill ({family})", "epochs")
        with meter:
            run = run_distillation(data, assistant.teacher if assistant else teacher, family,
                                   spec, kd, train_cfg, cost_cfg=cost_cfg,
                                   callbacks={"on_epoch_end": [epoch_callback(meter)]})
    if assistant is not None:  # retention and ratios against the teacher, not the assistant
        from autokd.pipeline import teacher_profile

        run.teacher = teacher_profile(teacher, data, cost_cfg)
    metrics = run.metrics()
    if args.out:
        from autokd.teachers import save_checkpoint

        save_checkpoint(run.model, args.out, data=data.describe(), metrics=metrics,
                        recipe=vars(kd), teacher=teacher_ref,
                        assistant=assistant.record() if assistant else None)
    _report_distill(args, data, family, run, metrics, teacher_ref, assistant)
    return 0


def _runtime_name(metrics: dict[str, Any]) -> str:
    """Where the latency shown was timed, and why not where asked when it fell back."""
    name = str(metrics.get("latency_runtime") or "not timed")
    return f"{name}: {metrics['latency_fallback']}" if metrics.get("latency_fallback") else name


def _default_student(data: Any) -> tuple[str, dict[str, Any]]:
    """A small student of the data's default family (a 2-stage stack; token data: the
    transformer's defaults)."""
    from autokd.models import default_family

    family = default_family(data.input_shape, data.tokens)
    return family, ({} if data.tokens is not None else {"depth": 2, "widths": [8, 16]})


def _report_distill(args: argparse.Namespace, data: Any, family: str, run: Any,
                    metrics: dict[str, Any], teacher_ref: str, assistant: Any = None) -> None:
    from autokd.tables import spec_summary

    t = run.teacher
    if args.json:
        print_json({"dataset": data.describe(), "family": family, "spec": run.spec,
                    "recipe": vars(run.kd), "student": metrics, "teacher": t,
                    "teacher_ref": teacher_ref, "mode": "scratch" if args.scratch else "kd",
                    "assistant": assistant.record() if assistant else None})
        return
    rows = [
        ("mode", "scratch" if args.scratch else f"KD ({run.kd.soft_loss}, T={run.kd.temperature}, "
                                                 f"alpha={run.kd.alpha})"),
        ("student", f"{family} {spec_summary(run.spec)}"),
        ("test accuracy (student / teacher)",
         f"{fmt(metrics['test_accuracy'])} / {fmt(t.get('test_accuracy'))}"),
        ("retention", metrics.get("retention")),
        ("val KD loss", metrics.get("val_kd_loss")),
        ("params (student / teacher)", f"{fmt(metrics['params'])} / {fmt(t.get('params'))}"),
        ("FLOPs (student / teacher)", f"{fmt(metrics['flops'])} / {fmt(t.get('flops'))}"),
        ("compression by params / FLOPs",
         f"{fmt(metrics.get('params_compression'))}x / {fmt(metrics.get('flops_compression'))}x"),
        (f"latency ms b1, {_runtime_name(metrics)} (student / teacher)",
         f"{fmt(metrics.get('latency_ms'))} / {fmt(t.get('latency_ms'))}"
         + (f" ({t.get('latency_runtime')})"
            if t.get("latency_runtime") not in (None, metrics.get("latency_runtime")) else "")),
        *_data_free_rows(data),
        ("best epoch", metrics["best_epoch"]),
        ("train seconds", metrics["train_seconds"]),
        *_data_rows(data.describe()),
        *assistant_rows(assistant),
    ]
    if run.kd.quantize == "int8":  # the rows above are the INT8 ONNX model's own
        rows[1:1] = [("quantize", "int8 (accuracy, bytes and latency of the INT8 ONNX model)")]
        rows += [("INT8 ONNX bytes", metrics.get("bytes")),
                 ("test accuracy (INT8 / fake-quant float)",
                  f"{fmt(metrics['test_accuracy'])} / {fmt(metrics.get('float_test_accuracy'))}"),
                 ("max |logit diff| INT8 vs fake-quant", metrics.get("int8_max_abs_diff"))]
    print_kv_table(f"distillation on {data.name}", rows)


def _data_rows(described: dict[str, Any]) -> list[tuple[str, Any]]:
    """Rows for scarce labels, unlabelled inputs and the student's columns, when used."""
    rows: list[tuple[str, Any]] = []
    if "labels" in described:
        d = described["labels"]
        rows.append(("labelled train samples (left out)", f"{d['labelled']} ({d['left_out']})"))
    if "unlabeled" in described:
        d = described["unlabeled"]
        rows.append(("unlabelled samples (dropped: in val/test)",
                     f"{d['samples']} ({d['leaked_dropped']})"))
    if "student_features" in described:
        d = described["student_features"]
        rows.append(("student columns (of teacher's)",
                     f"{len(d['indices'])} ({d['teacher_input_shape'][0]})"))
    return rows


def _data_free_rows(data: Any) -> list[tuple[str, Any]]:
    """What the student learnt from when it saw no real training data."""
    info = data.meta.get("data_free")
    if not info:
        return []
    text = (f"{info['n']} inputs synthesised from the teacher (DeepInversion, {info['steps']} "
            f"steps; the teacher agrees with the target on {fmt(info.get('target_hit_rate'))})")
    return [("train data", text)]


def add_parsers(sub: Any) -> None:
    """Add the teacher and distill subcommands."""
    _parser_teacher(sub)
    _parser_distill(sub)


def _parser_teacher(sub: Any) -> None:
    p = sub.add_parser("teacher", help="train a default teacher for a dataset")
    p.add_argument("action", choices=("train",), help="what to do (train)")
    add_data_args(p)
    p.add_argument("--out", required=True, help="checkpoint path to write")
    from autokd.models import FAMILIES

    p.add_argument("--family", help=f"student family whose teacher recipe to train "
                                    f"({', '.join(FAMILIES.names())}; default: by data kind)")
    p.add_argument("--epochs", type=positive_int, help="epochs (default: the family's recipe)")
    p.add_argument("--seed", type=int, default=0, help="training seed")
    p.add_argument("--device", default="auto", choices=("auto", "cpu", "cuda"))
    add_latency_args(p)
    p.add_argument("--json", action="store_true", help="print a JSON summary")


def _parser_distill(sub: Any) -> None:
    p = sub.add_parser("distill", help="one distillation run of a fixed student")
    add_data_args(p)
    add_teacher_args(p)
    p.add_argument("--student", help="family:key=value,... e.g. cnn:depth=2,width=16 "
                                      "(lists as widths=8/16; default a small student)")
    add_kd_args(p)
    add_train_args(p, epochs=60)
    add_latency_args(p)
    p.add_argument("--scratch", action="store_true",
                   help="train the same student without a teacher (KD-gain comparison)")
    p.add_argument("--born-again", type=positive_int, metavar="G",
                   help="G generations of the teacher's own architecture (an autokd teacher "
                        "checkpoint), each distilled from the previous one; --out writes the "
                        "last")
    p.add_argument("--out", help="write the trained student as an autokd checkpoint")
    p.add_argument("--json", action="store_true", help="print a JSON summary")
