"""The Hugging Face path end to end: a tiny fine-tuned BERT teacher, 2-layer students started
from its layers or from scratch, a search over the ``hf`` space, report and verified export.

Protocol (fixed before any number was seen):

1. Task: ``_hf_task.sentiment`` (``--samples`` sentences, 60% two opposite clauses joined by
   ``but``/``yet``/``however`` where the second decides, negators that flip an adjective, 5%
   of labels flipped, so about 95% is the ceiling), written as ``data.csv`` (text,label). The
   split is autokd's own (``text:`` data, default fractions 0.65/0.15/0.2, data seed 0);
   the script asserts that autokd's tokenised test split is the one the teacher was scored on.
   Floor: scikit-learn logistic regression on word counts (unigrams; unigrams + bigrams
   beside it) fitted on train, scored on test.
2. Teacher: ``BertConfig`` (4 layers, hidden 64, 4 heads, intermediate 128, built with
   ``from_config``: nothing downloaded) and a WordPiece tokenizer trained on the train texts,
   fine-tuned ``--teacher-epochs`` epochs (AdamW, lr 1e-3, batch 32) on train only, saved with
   ``save_pretrained`` under ``AUTOKD_CACHE/bench/hf_recipe/<hash of this protocol>`` (a rerun
   reuses it; its cost is recorded when it is trained).
3. ``autokd distill --teacher hf:DIR --student hf:layers=2`` with ``--init teacher`` and
   ``--init random``, each with two recipes (the default ``kl`` + ``ce``, and
   ``--terms kl=0.9,ce=0.1,hidden_cos=1``), the same ``--epochs``, ``--lr 1e-3``,
   ``--batch-size 32``, seeds ``--seeds``: test accuracy mean ± sample std and retention =
   student / teacher test accuracy.
4. ``autokd search --space hf --budget B`` (TPE, seed 0; the shipped space: depth, widths,
   recipe, init, lr), then the same search over a copy of that space with the student fixed
   to 2 full-width layers started from the teacher (``init: teacher``; recipe and lr still
   searched); ``autokd report`` and ``autokd export`` of the 2-layer search (its best trial
   by validation accuracy): the card's parity (every format's max abs difference to the PyTorch
   student, <= 1e-4), artifact sizes, the exported student's test accuracy and retention; the
   exported ``student.hf.onnx`` is run again here with ONNX Runtime on autokd's test split.

Every command runs in this process through ``autokd.cli.main`` (torch on ``--threads``
threads); per run: CPU seconds (this process), wall seconds, load average before and after.
Runs are saved after each one and a rerun with the same protocol resumes.
Usage: ``python benchmarks/hf_recipe.py [--seeds 0 1 2] [--quick]``.
"""

from __future__ import annotations

import argparse
import contextlib
import hashlib
import io
import json
import os
import tempfile
import time
from pathlib import Path
from typing import Any

import _hf_task as task
import numpy as np
import torch
from _common import (
    load_resumable,
    log,
    mean_std,
    pm,
    result_path,
    save_atomic,
    set_threads,
    write_result,
)

from autokd._io import cache_dir
from autokd.config import DataConfig

__all__ = ["main"]

NAME = "hf_recipe"
TEACHER = {"hidden_size": 64, "num_hidden_layers": 4, "num_attention_heads": 4,
           "intermediate_size": 128}
RECIPES = {"kl+ce": [], "kl+ce+hidden_cos": ["--terms", "kl=0.9,ce=0.1,hidden_cos=1"]}
INITS = ("teacher", "random")
PROTOCOL_KEYS = ("samples", "max_length", "teacher_epochs", "epochs", "seeds", "budget",
                 "search_epochs", "recipes")


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--samples", type=int, default=3000)
    p.add_argument("--max-length", type=int, default=24)
    p.add_argument("--teacher-epochs", type=int, default=25)
    p.add_argument("--epochs", type=int, default=10, help="epochs of each distill run")
    p.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    p.add_argument("--budget", type=int, default=4, help="trials of the hf search")
    p.add_argument("--search-epochs", type=int, default=5)
    p.add_argument("--recipes", nargs="+", default=list(RECIPES), choices=list(RECIPES))
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--quick", action="store_true", help="smoke run: tiny budget, temp output")
    args = p.parse_args(argv)
    if args.quick:
        args.samples, args.teacher_epochs, args.epochs = 300, 1, 1
        args.seeds, args.budget, args.search_epochs, args.recipes = args.seeds[:1], 1, 1, ["kl+ce"]
    return args






# -- the task and the teacher ------------------------------------------------------------------
def _split(labels: list[int]) -> dict[str, np.ndarray]:
    """autokd's own split of these labels (``text:`` data with default fractions)."""
    from autokd.data.splits import split_indices

    return split_indices(np.asarray(labels), ["0", "1"], DataConfig(source="text:x"), None)


def _bow_floor(texts: np.ndarray, y: np.ndarray, parts: dict[str, np.ndarray]) -> dict[str, Any]:
    """Test accuracy of logistic regression on word counts: what ignoring order gets."""
    from sklearn.feature_extraction.text import CountVectorizer
    from sklearn.linear_model import LogisticRegression

    out = {}
    for name, ngrams in (("unigram", (1, 1)), ("unigram+bigram", (1, 2))):
        vec = CountVectorizer(ngram_range=ngrams)
        clf = LogisticRegression(max_iter=2000)
        clf.fit(vec.fit_transform(texts[parts["train"]]), y[parts["train"]])
        out[name] = float(clf.score(vec.transform(texts[parts["test"]]), y[parts["test"]]))
    return out


def _teacher(args: argparse.Namespace, protocol: dict[str, Any]) -> tuple[Path, dict[str, Any]]:
    """The CSV and the fine-tuned teacher directory, built once per protocol (cached)."""
    key = {k: protocol[k] for k in ("samples", "max_length", "teacher_epochs")} | TEACHER
    digest = hashlib.sha256(json.dumps(key, sort_keys=True).encode()).hexdigest()[:12]
    root = cache_dir() / "bench" / NAME / digest
    info_path = root / "teacher.json"
    if info_path.exists():
        log(f"teacher: cached in {root}")
        return root, json.loads(info_path.read_text())
    from transformers import AutoModelForSequenceClassification

    texts, labels = task.sentiment(args.samples, seed=0)
    root.mkdir(parents=True, exist_ok=True)
    import csv

    with open(root / "data.csv", "w", newline="") as fh:
        w = csv.writer(fh)
        w.writerow(["text", "label"])
        w.writerows(zip(texts, labels))
    parts = _split(labels)
    arr, y = np.asarray(texts, dtype=object), np.asarray(labels)
    cpu0, wall0, load0 = time.process_time(), time.perf_counter(), os.getloadavg()
    torch.manual_seed(0)
    tok = task.tokenizer(list(arr[parts["train"]]), args.max_length)
    x = task.encode(tok, texts, args.max_length)
    model = AutoModelForSequenceClassification.from_config(
        task.bert_config(vocab_size=len(tok), **TEACHER))
    train = torch.as_tensor(parts["train"])
    task.fine_tune(model, x[train], torch.as_tensor(y)[train], epochs=args.teacher_epochs,
                   lr=1e-3, batch_size=32)
    acc = {}
    with torch.no_grad():
        for split in ("train", "val", "test"):
            ids = x[torch.as_tensor(parts[split])]
            pred = model(input_ids=ids, attention_mask=(ids != 0).long()).logits.argmax(1)
            acc[f"{split}_accuracy"] = float((pred.numpy() == y[parts[split]]).mean())
    info = {
        "config": TEACHER | {"vocab_size": len(tok), "max_length": args.max_length},
        "params": sum(p.numel() for p in model.parameters()),
        "epochs": args.teacher_epochs, "lr": 1e-3, "batch_size": 32, **acc,
        "cpu_s": time.process_time() - cpu0, "wall_s": time.perf_counter() - wall0,
        "loadavg_before": list(load0), "loadavg_after": list(os.getloadavg()),
        "sizes": {k: len(v) for k, v in parts.items()},
        "bow_floor_test_accuracy": _bow_floor(arr, y, parts),
        "dir": str(root),
    }
    model.save_pretrained(str(root))
    tok.save_pretrained(str(root))
    info_path.write_text(json.dumps(info, indent=2) + "\n")
    log(f"teacher: test {acc['test_accuracy']:.3f} in {info['cpu_s']:.0f} CPU s")
    return root, info


# -- the CLI, in this process ------------------------------------------------------------------
def _cli(*argv: str) -> dict[str, Any]:
    """``autokd ARGV`` through ``autokd.cli.main``: exit code, CPU/wall seconds, load, JSON."""
    from autokd.cli import main as autokd

    load0, cpu0, wall0 = os.getloadavg(), time.process_time(), time.perf_counter()
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        rc = autokd(list(argv))
    run: dict[str, Any] = {"rc": rc, "cpu_s": time.process_time() - cpu0,
                           "wall_s": time.perf_counter() - wall0, "loadavg_before": list(load0),
                           "loadavg_after": list(os.getloadavg())}
    if rc != 0:
        raise RuntimeError(f"autokd {' '.join(argv)} exited {rc}")
    if "--json" in argv:
        run["json"] = json.loads(out.getvalue())
    return run


def _data_args(root: Path, args: argparse.Namespace) -> list[str]:
    return ["--dataset", f"text:{root / 'data.csv'}", "--max-length", str(args.max_length),
            "--teacher", f"hf:{root}"]


def _distill(root: Path, args: argparse.Namespace, recipe: str, init: str,
             seed: int) -> dict[str, Any]:
    run = _cli("distill", *_data_args(root, args), "--student", "hf:layers=2", "--init", init,
               *RECIPES[recipe], "--epochs", str(args.epochs), "--lr", "1e-3",
               "--batch-size", "32", "--seed", str(seed), "--json")
    js = run.pop("json")
    s, t = js["student"], js["teacher"]
    return run | {
        "test_accuracy": s["test_accuracy"], "val_accuracy": s.get("val_accuracy"),
        "retention": s["test_accuracy"] / t["test_accuracy"], "best_epoch": s.get("best_epoch"),
        "params": s.get("params"), "flops": s.get("flops"), "teacher_params": t.get("params"),
        "teacher_test_accuracy": t["test_accuracy"], "recipe": js["recipe"].get("terms")
        or {k: js["recipe"].get(k) for k in ("soft_loss", "temperature", "alpha")},
        "init": js["recipe"].get("init"), "split_hash": js["dataset"].get("split_hash"),
    }


def _onnx_accuracy(root: Path, args: argparse.Namespace, onnx_path: Path) -> dict[str, Any]:
    """``student.hf.onnx`` on autokd's test split with ONNX Runtime (ids + attention mask)."""
    import onnxruntime as ort

    from autokd.data import load_data

    data = load_data(DataConfig(source=f"text:{root / 'data.csv'}", max_length=args.max_length,
                                tokenizer=str(root)))
    sess = ort.InferenceSession(str(onnx_path), providers=["CPUExecutionProvider"])
    ids = data.x_test.numpy()
    feeds = {"input_ids": ids, "attention_mask": (ids != data.tokens.pad_id).astype(np.int64)}
    names = {i.name for i in sess.get_inputs()}
    logits = sess.run(None, {k: v for k, v in feeds.items() if k in names})[0]
    pred = logits.argmax(1)
    return {"inputs": sorted(names), "test_samples": len(ids),
            "test_accuracy": float((pred == data.y_test.numpy()).mean()),
            "split_hash": data.split_hash}


def _search(root: Path, args: argparse.Namespace, space: str, name: str,
            results: Path) -> dict[str, Any]:
    """``autokd search`` (TPE, seed 0, no latency) and its front."""
    run = _cli("search", *_data_args(root, args), "--space", space, "--strategy", "optuna",
               "--budget", str(args.budget),
               "--epochs", str(args.search_epochs), "--name", name, "--results", str(results),
               "--seed", "0", "--no-latency", "--json")
    js = run.pop("json")
    return run | {"space": Path(space).name, "finished_trials": js.get("finished_trials"),
                  "front": [{k: t.get(k) for k in ("val_accuracy", "test_accuracy", "flops",
                                                    "params", "architecture", "recipe")}
                            for t in js.get("pareto") or []]}


def _two_layer_space(path: Path) -> Path:
    """The shipped ``hf`` space for one student: 2 full-width layers started from the teacher
    (the recipe and learning rate as shipped)."""
    import yaml

    import autokd

    raw = yaml.safe_load((Path(autokd.__file__).parent / "search_spaces" / "hf.yaml").read_text())
    raw["architecture"].update(layers=2, hidden_scale=1.0, intermediate_scale=1.0)
    raw["distillation"]["init"] = "teacher"
    path.write_text(yaml.safe_dump(raw, sort_keys=False))
    return path


def _pipeline(root: Path, args: argparse.Namespace, work: Path) -> dict[str, Any]:
    """Both searches, report and export of the 2-layer one, the exported student re-checked."""
    results, out = work / "results", work / "export"
    searches = {"hf": _search(root, args, "hf", "hf", results),
                "hf_2_layers": _search(root, args, str(_two_layer_space(work / "hf2.yaml")),
                                       "hf2", results)}
    study = results / "hf2"
    report = _cli("report", str(study))
    export = _cli("export", str(study), "--out", str(out), "--json")
    card = json.loads((out / "model_card.json").read_text())
    ver = card["verification"]
    parity = {k: v["max_abs_diff"] for k, v in ver.items() if isinstance(v, dict)}
    timing = ("cpu_s", "wall_s", "loadavg_before", "loadavg_after")
    return {
        "searches": searches,
        "report": {k: report[k] for k in timing} | {"written": (study / "report.md").exists()},
        "export": {k: export[k] for k in timing},
        "card": {"spec": {k: v for k, v in card["model"]["spec"].items() if k != "config"},
                 "recipe": card["hyperparameters"]["recipe"],
                 "test_accuracy": card["metrics"]["test"]["accuracy"],
                 "val_accuracy": card["metrics"]["val"]["accuracy"],
                 "retention": card["metrics"]["retention"],
                 "teacher_test_accuracy": card["teacher"].get("test_accuracy"),
                 "params": card["costs"]["params"], "flops": card["costs"]["flops"],
                 "params_compression": card["costs"]["params_compression"],
                 "flops_compression": card["costs"]["flops_compression"]},
        "verification": ver, "max_abs_diff": parity,
        "verified": bool(parity) and all(d <= ver.get("tolerance", 1e-4) for d in parity.values()),
        "artifact_bytes": {k: v["bytes"] for k, v in card["artifacts"].items()},
        "onnx_rerun": _onnx_accuracy(root, args, out / "student.hf.onnx"),
    }


# -- summary -----------------------------------------------------------------------------------
def _summary(doc: dict[str, Any], args: argparse.Namespace) -> dict[str, Any]:
    cells = {}
    for recipe in args.recipes:
        for init in INITS:
            runs = [doc["runs"][f"{recipe}/{init}/{s}"] for s in args.seeds]
            cells[f"{recipe}/{init}"] = {
                "test_accuracy": mean_std([r["test_accuracy"] for r in runs]),
                "retention": mean_std([r["retention"] for r in runs]),
                "cpu_s": mean_std([r["cpu_s"] for r in runs]),
                "wall_s": mean_std([r["wall_s"] for r in runs]),
            }
            log(f"{recipe}/{init}: test {pm(cells[f'{recipe}/{init}']['test_accuracy'])} %, "
                f"retention {pm(cells[f'{recipe}/{init}']['retention'])} %")
    return cells


def main(argv: list[str] | None = None) -> dict[str, Any]:
    args = parse_args(argv)
    set_threads(args.threads)
    protocol = {k: getattr(args, k) for k in PROTOCOL_KEYS} | {"quick": args.quick,
                                                                "teacher": TEACHER}
    path = result_path(NAME, args.quick)
    doc = load_resumable(path, protocol)
    doc["loadavg_start"] = list(os.getloadavg())
    cpu0, wall0 = time.process_time(), time.perf_counter()
    root, doc["teacher"] = _teacher(args, protocol)
    save_atomic(path, doc)
    for recipe in args.recipes:
        for seed in args.seeds:
            for init in INITS:
                key = f"{recipe}/{init}/{seed}"
                if key in doc["runs"]:
                    continue
                doc["runs"][key] = _distill(root, args, recipe, init, seed)
                r = doc["runs"][key]
                log(f"{key}: test {r['test_accuracy']:.3f} retention {r['retention']:.3f} "
                    f"({r['cpu_s']:.0f} CPU s)")
                save_atomic(path, doc)  # resume point after every run
    if "pipeline" not in doc:
        with tempfile.TemporaryDirectory(prefix="autokd-hf-recipe-") as work:
            doc["pipeline"] = _pipeline(root, args, Path(work))
        save_atomic(path, doc)
    doc["summary"] = _summary(doc, args)
    t_acc = doc["teacher"]["test_accuracy"]
    runs = list(doc["runs"].values())
    doc["checks"] = {
        # autokd's tokenised test split is the one the teacher was scored on
        "teacher_test_accuracy_as_autokd_sees_it": sorted({r["teacher_test_accuracy"]
                                                           for r in runs}),
        "same_teacher_accuracy": all(abs(r["teacher_test_accuracy"] - t_acc) < 1e-6
                                     for r in runs),  # autokd counts in float32
        "one_split_hash": len({r["split_hash"] for r in runs}
                              | {doc["pipeline"]["onnx_rerun"]["split_hash"]}) == 1,
        "onnx_rerun_matches_card": doc["pipeline"]["onnx_rerun"]["test_accuracy"]
        == doc["pipeline"]["card"]["test_accuracy"],
    }
    first = args.recipes[0]
    doc["teacher_test_accuracy"] = t_acc
    doc["bow_floor_test_accuracy"] = doc["teacher"]["bow_floor_test_accuracy"]["unigram"]
    doc["retention_teacher_init_mean"] = doc["summary"][f"{first}/teacher"]["retention"]["mean"]
    doc["retention_random_init_mean"] = doc["summary"][f"{first}/random"]["retention"]["mean"]
    doc["export_max_abs_diff"] = max(doc["pipeline"]["max_abs_diff"].values())
    doc["export_retention"] = doc["pipeline"]["card"]["test_accuracy"] / t_acc
    doc["this_run"] = {"cpu_s": time.process_time() - cpu0, "wall_s": time.perf_counter() - wall0,
                       "loadavg_end": list(os.getloadavg()), "threads": args.threads,
                       "cpus": os.cpu_count()}
    write_result(NAME, doc, quick=args.quick)
    return doc


if __name__ == "__main__":
    main()
