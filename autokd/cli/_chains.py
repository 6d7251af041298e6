"""``autokd distill --assistant auto`` and ``autokd distill --born-again G``: chains of teachers.

Why apart from ``train.py``: both wrap the one distillation run of ``autokd distill`` in a
chain (``autokd.chains``), and print what the chain was: the assistant, or each generation.
"""

from __future__ import annotations

import argparse
import contextlib
from pathlib import Path
from typing import Any

from autokd.cli._common import fmt, print_json, print_kv_table
from autokd.errors import ConfigError

__all__ = ["assistant_for", "assistant_rows", "check_born_again", "run_born_again"]


def check_born_again(args: argparse.Namespace, kd: Any) -> None:
    """Options that make no sense with ``--born-again``, refused before any work."""
    if args.born_again is None:
        return
    clash = [flag for flag, given in (("--student", args.student), ("--scratch", args.scratch),
                                      ("--assistant auto", kd.assistant != "none")) if given]
    if clash:
        raise ConfigError(f"--born-again trains the teacher's own architecture from the "
                          f"previous generation; drop {', '.join(clash)}")
    if not kd.uses_teacher:
        raise ConfigError("--born-again needs a recipe that uses the teacher (not --loss none)")


def assistant_for(data: Any, teacher: Any, family: str, spec: dict[str, Any], kd: Any,
                  train_cfg: Any, cost_cfg: Any) -> Any:
    """The teacher assistant of ``--assistant auto`` (trained here: no study to look in), or
    None when the recipe asks for none."""
    if kd.assistant == "none" or not kd.uses_teacher:
        return None
    from autokd.chains import resolve_assistant
    from autokd.cost import count_flops
    from autokd.models import build_student
    from autokd.pipeline import teacher_profile

    profile = teacher_profile(teacher, data, cost_cfg)
    student = build_student(family, spec, data.input_shape, data.num_classes, tokens=data.tokens)
    flops = count_flops(student, tuple(data.input_shape))
    return resolve_assistant(data, teacher, profile.get("flops"), family, spec, flops, kd,
                             train_cfg)


def assistant_rows(found: Any) -> list[tuple[str, Any]]:
    """What the distill table says about the assistant."""
    from autokd.tables import spec_summary

    if found is None:
        return []
    return [("assistant (trained first)", f"{found.family} {spec_summary(found.spec)}"),
            ("assistant FLOPs / target", f"{fmt(found.flops)} / {fmt(found.target_flops)}"),
            ("assistant test accuracy", found.test_accuracy),
            ("assistant CPU seconds", found.cpu_seconds)]


def run_born_again(args: argparse.Namespace, data: Any, kd: Any, train_cfg: Any,
                   cost_cfg: Any, shown: contextlib.AbstractContextManager[Any]) -> int:
    """G generations of the teacher's architecture, each taught by the previous one;
    ``shown`` is the command's progress display."""
    from autokd.chains import born_again, born_again_architecture
    from autokd.cli._common import resolve_teacher
    from autokd.progress import ProgressMeter, epoch_callback

    with shown:
        teacher, teacher_ref = resolve_teacher(args, data)
        family, spec = born_again_architecture(teacher)  # refuses a teacher without one
        total = args.born_again * train_cfg.epochs
        with ProgressMeter(total, f"born-again ({args.born_again} x {family})", "epochs") as meter:
            runs = born_again(data, teacher, args.born_again, kd, train_cfg, cost_cfg,
                              on_generation=lambda g: {"on_epoch_end": [epoch_callback(meter)]})
    rows = [{"generation": g, **{k: r.metrics().get(k) for k in
                                 ("val_accuracy", "test_accuracy", "retention", "best_epoch",
                                  "train_seconds")}} for g, r in enumerate(runs, 1)]
    if args.out:
        from autokd.teachers import save_checkpoint

        save_checkpoint(runs[-1].model, Path(args.out), data=data.describe(),
                        metrics=runs[-1].metrics(), recipe=vars(kd), teacher=teacher_ref,
                        born_again=len(runs))
    if args.json:
        print_json({"dataset": data.describe(), "family": family, "spec": spec,
                    "recipe": vars(kd), "teacher": runs[-1].teacher, "teacher_ref": teacher_ref,
                    "mode": "born-again", "generations": rows,
                    "student": runs[-1].metrics()})
        return 0
    teacher_acc = runs[-1].teacher.get("test_accuracy")
    print_kv_table(f"born-again {family} on {data.name} (teacher test accuracy "
                   f"{fmt(teacher_acc)})",
                   [(f"generation {r['generation']} test / val accuracy",
                     f"{fmt(r['test_accuracy'])} / {fmt(r['val_accuracy'])}") for r in rows])
    return 0
