"""``autokd report``, ``autokd export`` and ``autokd evaluate``.

Only printing and argument handling live here; the work is in ``autokd.report`` and
``autokd.export``.
"""

from __future__ import annotations

import argparse
import sys
from typing import Any

from autokd.cli._common import (
    add_data_args,
    command,
    data_config,
    fmt,
    positive_int,
    print_front,
    print_json,
    print_kv_table,
)

__all__ = ["add_parsers"]


def _retention(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number, got {text!r}") from None
    if not 0.0 < value <= 2.0:
        raise argparse.ArgumentTypeError(f"expected a retention in (0, 2], got {text!r}")
    return value


def _add_study_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("study", metavar="NAME|DIR", help="study name or its results directory")
    p.add_argument("--results", default="results", help="results root when NAME is a name")
    p.add_argument("--storage", help="Optuna storage URL, when the study is not in study.db")
    p.add_argument("--json", action="store_true", help="print JSON instead of tables")


def add_parsers(sub: Any) -> None:
    """Add the report, export and evaluate subcommands."""
    p = sub.add_parser("report", help="write report.html, report.md, pareto.png and the tables")
    _add_study_args(p)
    p = sub.add_parser("export", help="export a student (pt, TorchScript, torch.export, ONNX, "
                                      "INT8 ONNX) with a model card")
    _add_study_args(p)
    g = p.add_argument_group("which student (one of)").add_mutually_exclusive_group()
    g.add_argument("--trial", type=int, help="trial number")
    g.add_argument("--pick", choices=("accuracy", "smallest", "fastest"),
                   help="best val accuracy (default), or the smallest (params) / fastest "
                        "(latency) keeping --min-retention")
    g.add_argument("--where", help='filter on recorded metrics, e.g. "latency_ms<2 and '
                                   'val_retention>=0.97"; the best val accuracy among matches')
    p.add_argument("--min-retention", type=_retention, default=0.95,
                   help="val retention that --pick smallest/fastest must keep (default 0.95)")
    p.add_argument("--retrain", action="store_true",
                   help="retrain with the recorded recipe even if the search kept weights")
    p.add_argument("--epochs", type=positive_int,
                   help="epochs when training again (default: 2x the search's with --retrain; "
                        "the search's own when reproducing a trial whose weights were not kept)")
    p.add_argument("--formats",
                   help="comma-separated: pt, torchscript, pt2 (torch.export), onnx, int8 "
                        "(INT8 ONNX: the QAT model, or post-training quantisation of a float "
                        "student); for hf students hf_onnx (input_ids + attention_mask) and "
                        "hf (save_pretrained folder) (default: every format the student fits; "
                        "int8 only for a student trained with quantize: int8)")
    p.add_argument("--out", help="output directory (default results/<study>/export/<trial>)")
    p.add_argument("--trust", action="store_true",
                   help="allow a teacher whose loading runs code when training again")
    p = sub.add_parser("evaluate", help="re-measure accuracy and latency of an exported file")
    p.add_argument("artifact", help=".pt autokd checkpoint, .torchscript.pt, .pt2 or .onnx "
                                    "(also .int8.onnx) file")
    add_data_args(p)
    p.add_argument("--no-latency", action="store_true", help="skip the latency measurement")
    p.add_argument("--json", action="store_true", help="print JSON")


def _open(args: argparse.Namespace) -> tuple[Any, Any]:
    from autokd.study import find_study

    return find_study(args.study, args.results, args.storage)


@command("report")
def cmd_report(args: argparse.Namespace) -> int:
    from autokd.report import build_report

    study, paths = _open(args)
    data = build_report(study, paths, json=args.json)
    if args.json:
        print_json(data)
        return 0
    print(data["status"]["note"])
    print_kv_table(f"teacher of {data['study']}", [
        ("val / test accuracy", (f"{fmt(data['teacher'].get('val_accuracy'))} / "
                                f"{fmt(data['teacher'].get('test_accuracy'))}")),
        ("params", data["teacher"].get("params")), ("FLOPs", data["teacher"].get("flops")),
        ("latency ms", data["teacher"].get("latency_ms"))])
    print_front(data["study"], _front_rows(data["front"]), data["teacher"], data["usefulness"])
    _print_claims(data["claim"])
    print("wrote " + ", ".join(data["files"].values()))
    return 0


def _front_rows(front: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [{**r, "recipe": r.get("recipe_summary")} for r in front]


def _print_claims(rows: list[dict[str, Any]]) -> None:
    print("retention by compression band (article's claim -> best by val, its test retention):")
    for r in rows:
        got = f"{100 * r['retention']:.1f} % (trial {r['best_trial']})" if r["retention"] else "-"
        print(f"  {r['band']:>8}  claim {r['claim']:>8}  measured {got}  [{r['verdict']}]")


@command("export")
def cmd_export(args: argparse.Namespace) -> int:
    from autokd.export import export_student, parse_formats

    # bad formats fail before the study is opened
    formats = parse_formats(args.formats) if args.formats else None
    study, paths = _open(args)
    result = export_student(study, paths, trial=args.trial, pick=args.pick, where=args.where,
                            min_retention=args.min_retention, retrain=args.retrain,
                            epochs=args.epochs, formats=formats, out=args.out,
                            trust=args.trust)
    for note in result.warnings:
        print(f"autokd: warning: {note}", file=sys.stderr)
    if args.json:
        print_json(result.to_dict())
        return 0
    _print_export(result)
    return 0


def _print_export(result: Any) -> None:
    card = result.card
    m, c, lat = card["metrics"], card["costs"], card["costs"]["latency"]
    rows = [("selected", f"trial {result.trial} ({result.selection})"),
            ("weights", _weights_text(card["provenance"]["weights"])),
            ("test accuracy (export / search)",
             f"{fmt(m['test']['accuracy'])} / {fmt(m['search']['test_accuracy'])}"),
            ("val accuracy", m["val"]["accuracy"]), ("retention", m["retention"]),
            ("params", c["params"]), ("FLOPs", c["flops"])]
    for name, v in lat.items():
        if isinstance(v, dict):
            rows.append((f"latency ms b1 / b{lat['batch_size']} ({name})",
                         f"{fmt(v['latency_ms'])} / {fmt(v['latency_ms_batch'])}"))
    for kind, v in card["verification"].items():
        if isinstance(v, dict):
            rows.append((f"{kind} max abs diff / test acc",
                         f"{v['max_abs_diff']:.2e} / {fmt(v['test_accuracy'])}"))
    print_kv_table(f"exported to {result.directory}", rows)
    for name, entry in card["artifacts"].items():
        print(f"  {name}  sha256 {entry['sha256']}")


def _weights_text(weights: dict[str, Any]) -> str:
    text = f"{weights['how']}, {weights.get('epochs', '?')} epochs"
    return f"{text} ({weights['reason']})" if weights.get("reason") else text


@command("evaluate")
def cmd_evaluate(args: argparse.Namespace) -> int:
    from autokd.data import load_data
    from autokd.export import evaluate_artifact

    data = load_data(data_config(args))
    out = evaluate_artifact(args.artifact, data, latency=not args.no_latency)
    if out.get("warning"):
        print(f"autokd: warning: {out['warning']}", file=sys.stderr)
    if args.json:
        print_json(out)
        return 0
    card = out["card"]
    rows = [("format", out["format"]), ("sha256", out["sha256"][:16] + "…"),
            ("model card", "verified" if card and card["verified"] else
             (card or {}).get("note", "none beside the file")),
            ("test accuracy", out["test_accuracy"]), ("val accuracy", out["val_accuracy"]),
            ("card test accuracy", (card or {}).get("test_accuracy")),
            ("latency ms (batch 1)", out.get("latency_ms")),
            (f"latency ms (batch {out.get('latency_batch_size', '-')})",
             out.get("latency_ms_batch"))]
    print_kv_table(f"{out['artifact']} on {data.name}", rows)
    return 0
