"""``autokd search``: data + teacher + space -> a study, with progress lines and a front."""

from __future__ import annotations

import argparse
import contextlib
import sys
from typing import Any

from autokd.cli._common import (
    add_data_args,
    add_metric_arg,
    add_runtime_arg,
    add_teacher_args,
    command,
    data_config,
    positive_int,
    print_front,
    print_json,
    progress_line,
    weights_arg,
)
from autokd.config import DEFAULT_STRATEGY
from autokd.errors import ConfigError

__all__ = ["add_parsers", "search_settings"]


@command("search")
def cmd_search(args: argparse.Namespace) -> int:
    from autokd.device import resolve_device
    from autokd.progress import showing
    from autokd.quant.deploy import resolve_runtime
    from autokd.search import SearchConfig, run_search

    resolve_device(args.device)  # --device cuda without CUDA: one line, before any work
    resolve_device(args.latency_device, "--latency-device")
    settings = search_settings(args)
    resolve_runtime(settings.cost)  # onnxruntime asked for but not installed: before any work
    cfg = SearchConfig(
        data=data_config(args), teacher=args.teacher, trust=args.trust, space=args.space,
        budget=args.budget, strategy=_strategy(args), sampler=args.sampler, pruner=args.pruner,
        settings=settings, name=args.name, results=args.results,
        storage=args.storage, seed=args.seed, device=args.device, baseline=args.baseline,
        baseline_seeds=baseline_seeds(args.baseline_seeds),
        strategy_options=_strategy_options(args), jobs=args.jobs, artifacts=args.artifacts,
        tuner=_tuner(args), recipe=recipe_overrides(args.recipe))
    printer = None if args.json else progress_line
    state: dict[str, Any] = {}
    try:
        with contextlib.nullcontext() if args.json else showing():  # the default teacher's
            outcome = run_search(cfg, printer, on_ready=lambda o: state.update(outcome=o))
    except KeyboardInterrupt:
        _resume_hint(state.get("outcome"), args)
        raise
    _search_summary(args, outcome)
    return 0


def baseline_seeds(text: str | None) -> int:
    """``--baseline-seeds N``: an integer >= 2 (0 when not given); one line otherwise."""
    if text is None:
        return 0
    try:
        value = int(text)
    except ValueError:
        raise ConfigError(f"--baseline-seeds: expected an integer >= 2 (seeds per arm), got "
                          f"{text!r}") from None
    if value < 2:
        raise ConfigError(f"--baseline-seeds: expected an integer >= 2 (seeds per arm), got "
                          f"{text!r}")
    return value


def recipe_overrides(items: list[str] | None) -> dict[str, list[Any]] | None:
    """``["quantize=none,int8", "alpha=0.5"]`` -> ``{"quantize": ["none", "int8"], "alpha":
    [0.5]}``; each value is read as a YAML scalar (numbers, booleans, words)."""
    import dataclasses

    import yaml

    from autokd.distill import KDConfig

    if not items:
        return None
    known = [f.name for f in dataclasses.fields(KDConfig) if f.name != "terms"]
    out: dict[str, list[Any]] = {}
    for item in items:
        key, eq, text = (part.strip() for part in item.partition("="))
        values = [v.strip() for v in text.split(",") if v.strip()]
        if not eq or not values:
            raise ConfigError(f"--recipe {item!r}: expected KEY=V1,V2 (e.g. quantize=none,int8)")
        if key not in known:
            raise ConfigError(f"--recipe: unknown recipe key {key!r}; known: {', '.join(known)}")
        try:
            out[key] = [yaml.safe_load(v) for v in values]
        except yaml.YAMLError:
            raise ConfigError(f"--recipe {item!r}: cannot read its values") from None
    return out


def _tuner(args: argparse.Namespace) -> str:
    if args.tuner is not None and args.strategy != "nni":
        raise ConfigError("--tuner applies to --strategy nni only")
    return args.tuner or "tpe"


def _strategy_options(args: argparse.Namespace) -> dict[str, Any]:
    return {**_darts_options(args), **_asha_options(args)}


def _asha_options(args: argparse.Namespace) -> dict[str, Any]:
    """The ASHA flags given (autokd.controllers.asha.AshaOptions validates them)."""
    given = {k: v for k, v in (("eta", args.asha_eta), ("min_epochs", args.asha_min_epochs))
             if v is not None}
    if given and args.strategy not in (None, "asha"):
        raise ConfigError("--asha-eta and --asha-min-epochs apply to --strategy asha only")
    return given


def _strategy(args: argparse.Namespace) -> str | None:
    """``--strategy``; the ASHA flags name asha themselves (also when resuming a study of
    another strategy); None lets ``run_search`` take the study's own, else the default."""
    if args.strategy is None and (args.asha_eta is not None or args.asha_min_epochs is not None):
        return "asha"
    return args.strategy


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
        max_latency_ms=args.max_latency_ms, min_accuracy=args.min_accuracy,
        min_retention=args.min_retention, epochs=args.epochs,
        train=TrainConfig(threads=args.threads),
        cost=CostConfig.for_search(batch_size=args.latency_batch, latency=not args.no_latency,
                                   threads=args.latency_threads,
                                   device=args.latency_device, runtime=args.latency_runtime),
        pareto_pruning=not args.no_early_stop, metric=args.metric,
        checkpoint_every=args.checkpoint_every).validate()


def _resume_hint(outcome: Any, args: argparse.Namespace) -> None:
    if outcome is None:
        return
    from autokd.record import count_done

    done = count_done(outcome.study)
    print(f"autokd: search interrupted after {done} finished trials (all saved in "
          f"{outcome.paths.root}); rerun the same command to resume", file=sys.stderr)


def _search_summary(args: argparse.Namespace, outcome: Any) -> None:
    from autokd.front import UsefulnessFloor, useful_trials
    from autokd.record import count_done
    from autokd.tables import front_rows

    floor = UsefulnessFloor.of(outcome.study)
    rows = _with_runtime(outcome.study, front_rows(outcome.study, floor))
    below = useful_trials(outcome.study, floor)[1]
    usefulness = floor.summary(below)
    done = count_done(outcome.study)
    if args.json:
        print_json({"study": outcome.study.study_name, "results": str(outcome.paths.root),
                    "status": outcome.status, "finished_trials": done,
                    "teacher": outcome.teacher, "usefulness": usefulness, "pareto": rows})
        return
    if outcome.status == "already_finished":
        print(f"study {outcome.study.study_name!r} already has {done} finished trials "
              f"(budget {outcome.budget}); pass a larger --budget to extend it")
    print_front(outcome.study.study_name, rows, outcome.teacher, usefulness)
    print(f"results: {outcome.paths.root} (trials.csv, pareto.csv); "
          f"next: autokd report {outcome.paths.root}")


def _with_runtime(study: Any, rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Front rows with where their latency was timed, and their deploy-runtime latency when
    the front was re-timed after the search (``autokd.runtime_front``)."""
    from autokd.record import TrialRecord
    from autokd.runtime_front import runtime_latency

    trials = study.get_trials(deepcopy=False)
    deploy = runtime_latency(study).get("trials") or {}
    for row in rows:
        rec = TrialRecord.of(trials[row["trial"]])
        row["latency_runtime"] = rec.get("latency_runtime", "torch")
        got = deploy.get(str(row["trial"]))
        if got:
            row.update(deploy_runtime=got.get("latency_runtime"),
                       deploy_latency_ms=got.get("latency_ms"),
                       deploy_latency_ms_batch=got.get("latency_ms_batch"),
                       deploy_latency_speedup=got.get("latency_speedup"))
    return rows


def add_parsers(sub: Any) -> None:
    """Add the search subcommand."""
    p = sub.add_parser("search", help="search student architectures and KD recipes")
    add_data_args(p)
    add_teacher_args(p)
    _search_args(p)
    _asha_args(p)
    _darts_args(p)
    _study_args(p)
    p.add_argument("--json", action="store_true", help="quiet; print a JSON summary at the end")


def _search_args(p: argparse.ArgumentParser) -> None:
    g = p.add_argument_group("search")
    g.add_argument("--space", help="a bundled space (cnn, cnn1d, mlp, mbv2, resnet, transformer, hf) or a "
                   "YAML file (default: by data kind)")
    g.add_argument("--recipe", action="append", metavar="KEY=V1,V2",
                   help="set a recipe key of the space's distillation group: one value fixes "
                        "it, several make it a choice (e.g. quantize=none,int8); repeatable")
    g.add_argument("--budget", default="20",
                   help="finished trials in total (40) or wall time (15m, 2h); default 20 "
                        "(with --strategy asha a rung counts its share of a full training: "
                        "1 epoch of 9 is 1/9 of a trial)")
    g.add_argument("--strategy", default=None,
                   help="asha (multi-fidelity: many candidates on few epochs, the promising "
                        "ones trained on), optuna (every candidate trained in full, with Pareto "
                        f"early stopping), darts or nni; default {DEFAULT_STRATEGY} for a new "
                        "study, and a resumed study keeps the strategy it was started with")
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
    g.add_argument("--min-accuracy", type=float, metavar="X",
                   help="validation accuracy (of --metric) a student must reach, in [0, 1]; "
                        "known after training, so a student below it is trained, kept in the "
                        "study and left off the front as infeasible")
    g.add_argument("--min-retention", type=float, metavar="X",
                   help="validation retention (student / teacher val accuracy) a student must "
                        "keep, in [0, 1]; checked after training like --min-accuracy")
    g.add_argument("--epochs", type=positive_int, help="override the space's epochs per trial")
    g.add_argument("--threads", type=positive_int, default=1,
                   help="torch CPU threads per trial (default 1: small students gain nothing "
                        "from more, and spinning threads slow down a busy machine)")
    g.add_argument("--no-early-stop", action="store_true",
                   help="disable the Pareto early-stopping rule of --strategy optuna (asha, the "
                        "default, never uses it: its rungs decide which candidates train on)")
    g.add_argument("--baseline", action="store_true",
                   help="also train each Pareto student from scratch to measure the KD gain")
    g.add_argument("--baseline-seeds", metavar="N",
                   help="implies --baseline: re-train each Pareto student with KD and from "
                        "scratch on N >= 2 fresh seeds (scratch's lr picked on validation from "
                        "the KD lr x 0.3/1/3) and report the paired test gain with a 95 %% CI")
    g.add_argument("--latency-batch", type=positive_int, default=64,
                   help="batch size of the second latency measurement (default 64)")
    g.add_argument("--latency-threads", type=positive_int, default=1,
                   help="threads used when measuring latency (default 1)")
    g.add_argument("--latency-device", default="cpu", choices=("cpu", "cuda", "auto"),
                   help="device latency is measured on (default cpu; cuda times with CUDA "
                        "events)")
    add_runtime_arg(g)
    g.add_argument("--no-latency", action="store_true", help="skip latency measurement")
    add_metric_arg(g)
    g.add_argument("--checkpoint-every", type=float, default=30.0, metavar="SECONDS",
                   help="save a running trial's training state after an epoch once SECONDS "
                        "have passed since its last save (default 30; 0 disables), so a "
                        "resumed search continues a killed trial from its last saved epoch")


def _asha_args(p: argparse.ArgumentParser) -> None:
    g = p.add_argument_group("ASHA (--strategy asha, the default, with any --sampler; --budget "
                             "counts full trainings: a rung counts its share)")
    g.add_argument("--asha-eta", type=int, metavar="ETA",
                   help="reduction factor: the top 1/ETA of each rung (by Pareto layer, then "
                        "crowding) train on to ETA times the epochs (default 3)")
    g.add_argument("--asha-min-epochs", type=positive_int, metavar="N",
                   help="epochs of the first rung (default: the candidate's epochs / ETA^2, so "
                        "about three rungs); rung k trains to min(epochs, N * ETA^k) in all")


def _darts_args(p: argparse.ArgumentParser) -> None:
    g = p.add_argument_group("DARTS (--strategy darts; --budget counts DARTS runs)")
    g.add_argument("--targets", help="cost targets as fractions of the teacher's cost, one DARTS "
                   "run each, e.g. 0.05,0.1,0.25 (default 0.05,0.1,0.25,0.5; more runs fill the "
                   "gaps between them)")
    g.add_argument("--target-metric", choices=("auto", "flops", "params", "latency"),
                   help="what --targets are fractions of (auto: latency with --max-latency-ms "
                        "or the latency objective, else FLOPs)")
    g.add_argument("--relaxation", choices=("softmax", "gumbel"),
                   help="gumbel (annealed Gumbel-softmax, FBNet; default) or softmax (DARTS)")
    g.add_argument("--darts-epochs", type=positive_int,
                   help="supernet search epochs per run (default 16)")
    g.add_argument("--darts-kd", choices=("fixed", "sample"),
                   help="recipe per run: the space's first choice/midpoint (fixed, default) or "
                        "sampled by the outer Optuna loop (sample)")


def _study_args(p: argparse.ArgumentParser) -> None:
    g = p.add_argument_group("study")
    g.add_argument("--name", help="study name (default: DATASET-SPACE, so re-running resumes)")
    g.add_argument("--results", default="results", help="results root directory")
    g.add_argument("--storage", help="Optuna storage URL (default SQLite in results/NAME/)")
    g.add_argument("--seed", type=int, default=0, help="sampler and training seed")
    g.add_argument("--device", default="auto", choices=("auto", "cpu", "cuda"))
    g.add_argument("--jobs", type=positive_int, default=1,
                   help="local worker processes sharing the study (cores/N torch threads each)")
    g.add_argument("--artifacts", metavar="DIR|URL",
                   help="where the teacher is stored for workers: a shared directory, s3://BUCKET "
                        "or gs://BUCKET (default results/NAME/artifacts)")
    g.add_argument("--tuner", choices=("tpe", "evolution", "anneal", "random"),
                   help="NNI tuner for --strategy nni (default tpe)")
