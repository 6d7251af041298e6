"""Bad input, table-driven: every case is one clear line naming the problem, exit code 2.

Cases run the CLI in-process (``autokd.cli.main``) with training and teacher work refused, so
each also proves the problem is found before any work starts; a few run in a real process for
real exit codes and tracebacks (only with ``--debug``).

Covered elsewhere and not repeated: the npz/csv loader's own errors at library level
(tests/test_data.py: BAD_NPZ, NaN features, object arrays, unreadable files), mutated space
dicts under hypothesis (tests/test_space.py), and teacher files at library level: wrong output
width, wrong input shape, fake TorchScript, truncated checkpoints (tests/test_teachers.py).
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
import zipfile
from pathlib import Path
from typing import Any

import numpy as np
import optuna
import pandas as pd
import pytest
import torch
import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from optuna.distributions import IntDistribution

from autokd import search as search_module
from autokd import teachers, train
from autokd.cli import main
from autokd.data import load_data
from autokd.errors import ConfigError, SpaceError
from autokd.models import build_student
from autokd.space import load_space
from autokd.study import StudyPaths, storage_url

TINY_SPACE = {"family": "cnn",
              "architecture": {"depth": {"int": [1, 2]},
                               "widths": {"choice": [4, 8], "per_stage": "depth"}},
              "distillation": {"alpha": {"float": [0.5, 1.0]}},
              "training": {"lr": 0.01, "epochs": 2}}


# -- running a case ----------------------------------------------------------------------------
@pytest.fixture(autouse=True)
def no_work(monkeypatch: pytest.MonkeyPatch) -> None:
    """Every case must fail before training anything or building the default teacher."""

    def refuse(*args: Any, **kwargs: Any) -> None:
        raise AssertionError("work started before the input was checked")

    monkeypatch.setattr(train.Trainer, "fit", refuse)
    monkeypatch.setattr(teachers, "train_teacher", refuse)
    monkeypatch.setattr(teachers, "default_teacher", refuse)
    monkeypatch.setattr(search_module, "default_teacher", refuse)


def user_error(capsys: pytest.CaptureFixture, argv: list[str]) -> str:
    """Run ``argv``; assert exit code 2, no traceback, nothing on stdout; return the error line.

    Our own errors are exactly one ``autokd: error:`` line; argparse's add the usage above it.
    """
    try:
        code = main(argv)
    except SystemExit as exc:
        code = exc.code
    captured = capsys.readouterr()
    lines = captured.err.strip().splitlines()
    assert code == 2, captured.err
    assert "Traceback" not in captured.err and captured.out == "" and lines, captured.err
    if lines[0].startswith("usage:"):
        assert re.match(r"autokd( \w+)?: error: (argument|the following|unrecognized)",
                        lines[-1]), lines[-1]
    else:
        assert len(lines) == 1 and lines[0].startswith("autokd: error: "), captured.err
    return lines[-1]


@pytest.fixture(scope="module")
def inputs(tmp_path_factory: pytest.TempPathFactory) -> dict[str, str]:
    """Files the cases point at: a space, teachers that do not fit, broken data and artifacts."""
    root = tmp_path_factory.mktemp("inputs")
    out = {"tmp": str(root)}
    (root / "space.yaml").write_text(yaml.safe_dump(TINY_SPACE))
    out["space"] = str(root / "space.yaml")
    out.update(_teacher_files(root))
    out.update(_data_files(root))
    out.update(_artifact_files(root))
    (root / "file").write_text("a regular file: it cannot hold a directory, even for root")
    return out


def _teacher_files(root: Path) -> dict[str, str]:
    torch.manual_seed(0)
    good = teachers.save_checkpoint(build_student("cnn", {"depth": 1, "widths": [8]},
                                                  (1, 8, 8), 10), root / "good.pt")
    five = teachers.save_checkpoint(build_student("cnn", {"depth": 1, "widths": [8]},
                                                  (1, 8, 8), 5), root / "five.pt")
    tabular = teachers.save_checkpoint(build_student("mlp", {"depth": 1, "widths": 8}, (13,), 10),
                                       root / "tabular.pt")
    (root / "cut.pt").write_bytes(good.read_bytes()[:300])
    (root / "notes.pt").write_text("not a model\n")
    with zipfile.ZipFile(root / "fake_script.pt", "w") as zf:
        zf.writestr("archive/code/__torch__.py", "garbage")
    (root / "est.joblib").write_bytes(b"\x80\x04K\x01.")
    return {"good_teacher": str(good), "five_classes": str(five), "tabular_teacher": str(tabular),
            "cut_teacher": str(root / "cut.pt"), "text_teacher": str(root / "notes.pt"),
            "fake_script": str(root / "fake_script.pt"), "joblib": str(root / "est.joblib")}


def _data_files(root: Path) -> dict[str, str]:
    rng = np.random.default_rng(0)
    x, y = rng.normal(size=(60, 4)), np.arange(60) % 3
    arrays = {
        "empty": {"X": x[:0], "y": y[:0]},
        "one_class": {"X": x, "y": np.zeros(60)},
        "mismatch": {"X": x, "y": y[:-5]},
        "nan": {"X": np.where(np.eye(60, 4) > 0, np.nan, x), "y": y},
        "strings": {"X": x.astype(str), "y": y},
        "complex": {"X": x.astype(np.complex64), "y": y},
        "fractional": {"X": x, "y": y + 0.5},
        "too_small": {"X": x[:6], "y": y[:6]},
        "objects": {"X": np.array([[1, "a"]] * 60, dtype=object), "y": y},
        "signal": {"X": rng.normal(size=(60, 1, 40)), "y": y},
        "image": {"X": rng.normal(size=(60, 1, 8, 8)), "y": y},
    }
    out = {}
    for name, arr in arrays.items():
        np.savez(root / f"{name}.npz", **arr)
        out[name] = f"npz:{root / name}.npz"
    frame = pd.DataFrame({"a": x[:, 0], "b": x[:, 1], "label": y})
    frame.to_csv(root / "table.csv", index=False)
    (root / "header.csv").write_text("a,b,label\n")
    gap = frame.assign(label=frame["label"].where(frame.index != 4))  # one missing label
    gap.to_csv(root / "gap.csv", index=False)
    (root / "binary.csv").write_bytes(b"\xff\xfe\x00garbage\x00\x01,\n")
    out.update(csv=f"csv:{root / 'table.csv'}", header=f"csv:{root / 'header.csv'}",
               gap=f"csv:{root / 'gap.csv'}", binary=f"csv:{root / 'binary.csv'}")
    return out


def _artifact_files(root: Path) -> dict[str, str]:
    (root / "model.onnx").write_bytes(b"\x08\x07garbage that is no protobuf")
    (root / "notes.txt").write_text("hello")
    return {"onnx": str(root / "model.onnx"), "txt": str(root / "notes.txt")}


def _fill(argv: list[str], inputs: dict[str, str]) -> list[str]:
    return [a.format(**inputs) for a in argv]


# -- autokd search: every flag ---------------------------------------------------------------
SEARCH = [  # (id, extra argv, what the error line must say)
    ("budget 0", ["--budget", "0"], "budget must be >= 1, got 0"),
    ("budget 10x", ["--budget", "10x"], "bad budget '10x'"),
    ("budget -3", ["--budget", "-3"], "bad budget '-3'"),
    ("budget empty", ["--budget", ""], "bad budget ''"),
    ("budget 0m", ["--budget", "0m"], "bad budget '0m'"),
    ("max-flops -1", ["--max-flops", "-1"], "--max-flops must be a positive number"),
    ("max-params 0", ["--max-params", "0"], "--max-params must be a positive number"),
    ("max-bytes nan", ["--max-bytes", "nan"], "--max-bytes must be a positive number, got nan"),
    ("max-latency -0.5", ["--max-latency-ms", "-0.5"], "--max-latency-ms must be a positive"),
    ("max-flops text", ["--max-flops", "1e3x"], "argument --max-flops: invalid float value"),
    ("sampler", ["--sampler", "tpee"], r"unknown sampler 'tpee' \(did you mean 'tpe'\?\)"),
    ("pruner unknown", ["--strategy", "optuna", "--score", "--pruner", "medain"],
     "unknown pruner 'medain'"),
    ("pruner multi-objective", ["--strategy", "optuna", "--pruner", "median"],
     "pruners need a single objective"),
    ("pruner under the default", ["--pruner", "median"], "add --strategy optuna to use"),
    ("strategy", ["--strategy", "bayes"], "unknown strategy 'bayes'; known: asha, darts, nni, optuna"),
    ("objective unknown", ["--objectives", "acc,flops"], "unknown objective 'acc'"),
    ("objective none", ["--objectives", ","], "give at least one objective"),
    ("objective twice", ["--objectives", "flops,flops"], "objectives must not repeat"),
    ("storage malformed", ["--storage", "results/db.sqlite"], "bad storage URL"),
    ("storage driver", ["--storage", "nosuchdb://h/x"], "cannot open storage nosuchdb://h/x"),
    ("teacher missing", ["--teacher", "{tmp}/nope.pt"], "teacher file not found: .*nope.pt"),
    ("score-weights bare", ["--score", "--score-weights", "flops"], "bad --score-weights item"),
    ("score-weights text", ["--score", "--score-weights", "flops=x"], "bad --score-weights item"),
    ("score-weights term", ["--score", "--score-weights", "size=1"], "unknown score term"),
    ("score-weights nan", ["--score", "--score-weights", "flops=nan"], "flops must be a number"),
    ("score-weights < 0", ["--score", "--score-weights", "bytes=-1"], "bytes must be a number >="),
    ("val-fraction 1.5", ["--val-fraction", "1.5"], r"--val-fraction: expected a fraction in"),
    ("val-fraction 0", ["--val-fraction", "0"], r"--val-fraction: expected a fraction in"),
    ("test-fraction text", ["--test-fraction", "a"], "--test-fraction: expected a number"),
    ("fractions sum", ["--val-fraction", "0.6", "--test-fraction", "0.5"], "no train data"),
    ("epochs 0", ["--epochs", "0"], "--epochs: expected a positive integer, got '0'"),
    ("epochs text", ["--epochs", "ten"], "--epochs: expected a positive integer"),
    ("space unknown", ["--space", "cnnn"], r"unknown search space 'cnnn' \(did you mean 'cnn'"),
    ("space missing", ["--space", "{tmp}/nope.yaml"], "search space file not found"),
    ("space malformed", ["--space", "{txt}"], "cannot read|invalid YAML|expected a mapping"),
    ("name", ["--name", "my study!"], "bad study name 'my study!'"),
    ("darts flag alone", ["--targets", "0.1"], "apply to --strategy darts only"),
    ("tuner alone", ["--tuner", "tpe"], "--tuner applies to --strategy nni only"),
    ("darts targets text", ["--strategy", "darts", "--targets", "a"], "bad --targets 'a'"),
    ("darts targets range", ["--strategy", "darts", "--targets", "0,2"], "positive fractions"),
    ("darts epochs 0", ["--strategy", "darts", "--darts-epochs", "0"], "expected a positive"),
    ("latency-batch 0", ["--latency-batch", "0"], "--latency-batch: expected a positive"),
    ("latency-threads -1", ["--latency-threads", "-1"], "--latency-threads: expected a posit"),
    ("jobs 0", ["--jobs", "0"], "--jobs: expected a positive integer"),
    ("seed text", ["--seed", "x"], "--seed: invalid int value"),
    ("device", ["--device", "tpu"], "--device: invalid choice: 'tpu'"),
    ("num-samples 0", ["--num-samples", "0"], "--num-samples: expected a positive integer"),
    ("results under a file", ["--results", "{tmp}/file/r"], "cannot write to results directory"),
    ("unknown flag", ["--budgt", "3"], "unrecognized arguments|argument"),
]


@pytest.mark.parametrize("extra, message", [c[1:] for c in SEARCH], ids=[c[0] for c in SEARCH])
def test_search_flags(extra: list[str], message: str, inputs: dict[str, str], tmp_path: Path,
                      capsys: pytest.CaptureFixture) -> None:
    argv = ["search", "--space", inputs["space"], "--results", str(tmp_path), *extra]
    line = user_error(capsys, _fill(argv, inputs))
    assert re.search(message, line), line
    assert not list(tmp_path.rglob("trials.csv"))


# -- datasets and teachers that do not fit -------------------------------------------------
DATA = [  # (id, --dataset and extra flags, error)
    ("empty", ["{empty}"], r"is empty \(0 samples\)"),
    ("one class", ["{one_class}"], "only one class"),
    ("lengths differ", ["{mismatch}"], "X has 60 samples but y has 55"),
    ("NaN features", ["{nan}"], "contain 4 NaN/inf values"),
    ("string features", ["{strings}"], "not numeric"),
    ("complex features", ["{complex}"], "has dtype complex64, not numeric"),
    ("fractional labels", ["{fractional}"], "fractional floats"),
    ("too few samples", ["{too_small}"], "fewer than the 3 classes"),
    ("pickled objects", ["{objects}"], "holds Python objects"),
    ("csv without target", ["{csv}"], "needs a target column"),
    ("csv wrong target", ["{csv}", "--target", "lable"], "target column 'lable' not in"),
    ("csv header only", ["{header}", "--target", "label"], "empty"),
    ("csv missing label", ["{gap}", "--target", "label"], "has 1 missing values"),
    ("csv binary", ["{binary}", "--target", "label"], "cannot read csv file"),
    ("tabular with cnn", ["{csv}", "--target", "label", "--space", "cnn"],
     r"cnn students need image \(C, H, W\) input"),
    ("signal with cnn", ["{signal}", "--space", "cnn"], r"shape \(1, 40\)"),
    ("image with cnn1d", ["{image}", "--space", "cnn1d"], "cnn1d students need 1-D signal"),
    ("unknown source", ["digitz"], "did you mean 'digits'"),
    ("missing file", ["npz:{tmp}/gone.npz"], "npz file not found"),
]


@pytest.mark.parametrize("flags, message", [c[1:] for c in DATA], ids=[c[0] for c in DATA])
def test_datasets(flags: list[str], message: str, inputs: dict[str, str], tmp_path: Path,
                  capsys: pytest.CaptureFixture) -> None:
    space = [] if "--space" in flags else ["--space", "mlp"]
    argv = ["search", "--results", str(tmp_path), *space, "--dataset", *flags]
    line = user_error(capsys, _fill(argv, inputs))
    assert re.search(message, line), line


TEACHERS = [  # (id, --teacher, error)
    ("wrong output width", "{five_classes}", r"outputs shape \(8, 5\), but the dataset has 10"),
    ("wrong input shape", "{tabular_teacher}", r"fails on a batch of shape \(8, 1, 8, 8\)"),
    ("truncated", "{cut_teacher}", "truncated, or not a PyTorch checkpoint"),
    ("text file", "{text_teacher}", "not a PyTorch checkpoint or TorchScript"),
    ("fake TorchScript", "{fake_script}", "not a loadable TorchScript file"),
    ("directory", "{tmp}", "is a directory"),
    ("joblib without --trust", "{joblib}", "pass --trust"),
    ("module:function without --trust", "os:getcwd", "imports and runs Python code"),
]


@pytest.mark.filterwarnings("ignore:`torch.jit.load` is deprecated:DeprecationWarning")
@pytest.mark.parametrize("teacher, message", [c[1:] for c in TEACHERS],
                         ids=[c[0] for c in TEACHERS])
def test_teachers_that_do_not_fit(teacher: str, message: str, inputs: dict[str, str],
                                  tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    argv = ["search", "--space", inputs["space"], "--results", str(tmp_path), "--teacher",
            teacher]
    line = user_error(capsys, _fill(argv, inputs))
    assert re.search(message, line), line


# -- report, export, evaluate, distill, teacher ----------------------------------------------
@pytest.fixture(scope="module")
def study_dir(tmp_path_factory: pytest.TempPathFactory) -> str:
    """A finished two-trial study (hand-written, no training) for the export cases."""
    paths = StudyPaths(tmp_path_factory.mktemp("study") / "s")
    paths.root.mkdir()
    study = optuna.create_study(study_name="s", storage=storage_url(paths, None),
                                directions=["maximize", "minimize"])
    teacher = {"val_accuracy": 0.9, "test_accuracy": 0.9, "params": 1000, "flops": 1000}
    for key, value in {"objectives": ["accuracy", "flops"], "teacher": teacher,
                       "dataset_hash": "x", "settings": {}}.items():
        study.set_user_attr(key, value)
    for depth in (1, 2):
        study.add_trial(optuna.trial.create_trial(
            values=[0.5 + depth / 10, 100 * depth], params={"depth": depth},
            distributions={"depth": IntDistribution(1, 2)},
            user_attrs={"val_accuracy": 0.5 + depth / 10, "flops": 100 * depth,
                        "params": 10 * depth, "constraints": [0.0]}))
    return str(paths.root)


OTHER = [  # (id, argv, error)
    ("report unknown study", ["report", "nope", "--results", "{tmp}"], "no study 'nope'"),
    ("report bad storage", ["report", "nope", "--storage", "x.db"], "bad storage URL|cannot open"),
    ("export formats", ["export", "{study}", "--formats", "pt,tfl"], r"unknown format\(s\) tfl"),
    ("export no formats", ["export", "{study}", "--formats", ","], r"unknown format\(s\) \(none"),
    ("export trial missing", ["export", "{study}", "--trial", "99"], "trial 99 does not exist"),
    ("export trial text", ["export", "{study}", "--trial", "x"], "--trial: invalid int value"),
    ("export two selectors", ["export", "{study}", "--trial", "0", "--pick", "smallest"],
     "not allowed with argument"),
    ("export pick", ["export", "{study}", "--pick", "cheapest"], "--pick: invalid choice"),
    ("export where grammar", ["export", "{study}", "--where", "params<<3"], "bad --where"),
    ("export where metric", ["export", "{study}", "--where", "size<3"], "unknown metric"),
    ("export where empty", ["export", "{study}", "--where", " "], "--where is empty"),
    ("export min-retention", ["export", "{study}", "--min-retention", "3"], "retention in"),
    ("export nothing qualifies", ["export", "{study}", "--pick", "smallest", "--min-retention",
                                  "1.9"], "lower --min-retention"),
    ("export epochs 0", ["export", "{study}", "--epochs", "0"], "expected a positive integer"),
    ("export out is a file", ["export", "{study}", "--out", "{tmp}/file"],
     "exists and is not an autokd export"),
    ("evaluate missing", ["evaluate", "{tmp}/nope.onnx"], "no artifact file at"),
    ("evaluate unknown type", ["evaluate", "{txt}"], "unknown artifact type"),
    ("evaluate garbage onnx", ["evaluate", "{onnx}", "--no-latency"], "cannot load"),
    ("evaluate truncated pt", ["evaluate", "{cut_teacher}", "--no-latency"], "not a loadable"),
    ("evaluate other data", ["evaluate", "{tabular_teacher}", "--no-latency"],
     r"does not accept digits inputs of shape \(1, 8, 8\)"),
    ("evaluate other classes", ["evaluate", "{five_classes}", "--no-latency"],
     "outputs shape .*digits has 10 classes"),
    ("evaluate val-fraction", ["evaluate", "{onnx}", "--val-fraction", "1.5"], "fraction in"),
    ("distill alpha", ["distill", "--alpha", "1.5"], "alpha must be <= 1.0"),
    ("distill temperature", ["distill", "--temperature", "0"], "temperature must be >= 0.05"),
    ("distill loss", ["distill", "--loss", "kld"], "--loss: invalid choice"),
    ("distill lr", ["distill", "--lr", "-1"], "lr must be >= 1e-08"),
    ("distill weight decay", ["distill", "--weight-decay", "2"], "weight_decay must be <= 1.0"),
    ("distill batch size", ["distill", "--batch-size", "0"], "--batch-size: expected a positive"),
    ("distill label smoothing", ["distill", "--label-smoothing", "1"], "label_smoothing must"),
    ("distill hint weight", ["distill", "--hint-weight", "-1"], "hint_weight must be >= 0.0"),
    ("distill student family", ["distill", "--student", "vgg:depth=2"], "vgg"),
    ("distill student depth", ["distill", "--student", "mlp:depth=-1"], "mlp depth must be"),
    ("distill student widths", ["distill", "--student", "cnn:depth=2,widths=8/x"],
     "must hold positive integers"),
    ("distill student for data", ["distill", "--dataset", "wine", "--student", "cnn:depth=1"],
     "cnn students need image"),
    ("distill out under a file", ["distill", "--out", "{tmp}/file/s.pt"], "cannot create"),
    ("teacher action", ["teacher", "fit", "--out", "x.pt"], "invalid choice: 'fit'"),
    ("teacher no out", ["teacher", "train"], "required: --out"),
    ("teacher epochs", ["teacher", "train", "--out", "x.pt", "--epochs", "0"], "positive"),
    ("teacher out under a file", ["teacher", "train", "--out", "{tmp}/file/t.pt"],
     "cannot create"),
    ("teacher val-fraction", ["teacher", "train", "--out", "x.pt", "--val-fraction", "0.95"],
     "val_fraction must be <= 0.9"),
]


@pytest.mark.parametrize("argv, message", [c[1:] for c in OTHER], ids=[c[0] for c in OTHER])
def test_other_commands(argv: list[str], message: str, inputs: dict[str, str], study_dir: str,
                        capsys: pytest.CaptureFixture) -> None:
    line = user_error(capsys, _fill(argv, {**inputs, "study": study_dir}))
    assert re.search(message, line), line


# -- --debug, and a real process ---------------------------------------------------------------
def test_debug_shows_the_traceback_in_process(capsys: pytest.CaptureFixture) -> None:
    with pytest.raises(ConfigError, match="bad budget '10x'"):
        main(["--debug", "search", "--budget", "10x"])


def _real(*argv: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    return subprocess.run([sys.executable, "-m", "autokd", *argv], capture_output=True,
                          text=True, env=env, timeout=120, check=False)


def test_real_process_exit_codes_and_tracebacks(inputs: dict[str, str]) -> None:
    plain = _real("search", "--budget", "10x")
    assert plain.returncode == 2 and plain.stdout == ""
    assert plain.stderr.startswith("autokd: error: bad budget '10x'")
    assert len(plain.stderr.strip().splitlines()) == 1 and "Traceback" not in plain.stderr
    debug = _real("--debug", "evaluate", inputs["txt"])
    assert debug.returncode == 1 and "Traceback (most recent call last)" in debug.stderr
    assert "autokd.errors.ExportError: notes.txt: unknown artifact type" in debug.stderr
    parse = _real("search", "--val-fraction", "1.5")
    assert parse.returncode == 2 and "Traceback" not in parse.stderr
    assert parse.stderr.strip().splitlines()[-1].startswith("autokd search: error: argument")


# -- search spaces: malformed YAML text ------------------------------------------------------
def _load_text(tmp_path: Path, text: str | bytes) -> None:
    """Load ``text`` as a space: it must parse, or fail with SpaceError (never anything else)."""
    path = tmp_path / "space.yaml"
    path.write_bytes(text if isinstance(text, bytes) else text.encode("utf-8", "surrogatepass"))
    try:
        space = load_space(path)
    except SpaceError as exc:
        assert "\n" not in str(exc).strip()
        return
    study = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=0))
    try:
        space.sample(study.ask())
    except SpaceError:
        pass


VALID = yaml.safe_dump(TINY_SPACE, default_flow_style=None)
_YAML_CHARS = st.sampled_from(list(":{}[],-!&*#|>'\"\t\n %@`?\\0.~") + ["!!python/name:os.system",
                              "*a", "&a ", "<<: ", "{int: [", "per_stage: depth", "1e999"])


@settings(max_examples=150, deadline=None,
          suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture])
@given(edits=st.lists(st.tuples(st.integers(0, len(VALID)), st.integers(0, 4), _YAML_CHARS),
                      min_size=1, max_size=6))
def test_mutated_yaml_text_raises_only_space_error(edits: list[tuple[int, int, str]],
                                                   tmp_path: Path) -> None:
    text = VALID
    for pos, cut, insert in edits:  # delete ``cut`` characters at ``pos``, insert there
        text = text[:pos] + insert + text[pos + cut:]
    _load_text(tmp_path, text)


@settings(max_examples=100, deadline=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(text=st.one_of(st.text(max_size=200), st.binary(max_size=200)))
def test_arbitrary_text_raises_only_space_error(text: str | bytes, tmp_path: Path) -> None:
    _load_text(tmp_path, text)


HOSTILE_YAML = {
    "nested 5000 deep": "family: cnn\narchitecture: {depth: {choice: " + "[" * 5000 + "]" * 5000
                        + "}}\n",
    "billion laughs": "a: &a [x,x,x,x,x,x,x,x,x]\nb: &b [*a,*a,*a,*a,*a,*a,*a,*a,*a]\n"
                      "c: &c [*b,*b,*b,*b,*b,*b,*b,*b,*b]\nd: &d [*c,*c,*c,*c,*c,*c,*c,*c,*c]\n"
                      "family: cnn\narchitecture: {depth: {choice: *d}}\n",
    "python tag": "family: !!python/object/apply:os.system ['touch {marker}']\n",
    "huge depth range": "family: cnn\narchitecture: {depth: {int: [1, 100000]}, widths: "
                        "{choice: [4], per_stage: depth}}\n",
    "depth range past the family": "family: mlp\narchitecture: {depth: {int: [1, 13]}}\n",
    "dropout range past 1": "family: mlp\narchitecture: {dropout: {float: [0.0, 1.5]}}\n",
    "infinite bounds": "family: cnn\ntraining: {lr: {float: [.inf, .nan]}}\n",
    "tab indentation": "family: cnn\narchitecture:\n\tdepth: 2\n",
    "unhashable key": "? [a, b]\n: 1\nfamily: cnn\n",
    "NUL byte": "family: cnn\x00\n",
    "not UTF-8": b"\xff\xfefamily: cnn\n",
    "empty": "",
    "a list": "- family: cnn\n",
    "binary family": "family: !!binary aGVsbG8=\n",
}


@pytest.mark.parametrize("name", list(HOSTILE_YAML))
def test_hostile_space_files_are_one_space_error(name: str, tmp_path: Path,
                                                 capsys: pytest.CaptureFixture) -> None:
    marker = tmp_path / "pwned"
    text = HOSTILE_YAML[name]
    text = text.replace("{marker}", str(marker)) if isinstance(text, str) else text
    path = tmp_path / "space.yaml"
    path.write_bytes(text if isinstance(text, bytes) else text.encode())
    with pytest.raises(SpaceError):
        load_space(path)
    line = user_error(capsys, ["search", "--space", str(path), "--results", str(tmp_path)])
    assert str(path) in line and not marker.exists()


def test_a_space_for_images_on_tabular_data(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    line = user_error(capsys, ["search", "--dataset", "breast_cancer", "--space", "cnn1d",
                               "--results", str(tmp_path)])
    assert "cnn1d students need 1-D signal (C, L) input" in line and "(30,)" in line
    assert load_data("breast_cancer").input_shape == (30,)
