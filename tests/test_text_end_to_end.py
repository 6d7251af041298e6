"""A text classification job end to end with autokd's own transformer family.

What a user with a CSV of texts and no model does: train a transformer teacher on it, search
transformer students (the default space for token data) with the DistilBERT / TinyBERT / MiniLM
terms and teacher-layer initialisation in the recipe, report, and export a verified student.
"""

from __future__ import annotations

import csv
import json
from pathlib import Path

import optuna
import pytest

from autokd.cli import main
from autokd.record import TrialRecord

SPACE = """\
family: transformer
architecture:
  layers: {int: [1, 2]}
  hidden: 64
  heads: {choice: [2, 4]}
  mlp_ratio: 4
  pooling: {choice: [cls, mean]}
distillation:
  terms: {kl: 0.9, ce: 0.1, hidden_cos: {choice: [0.0, 1.0]}, tinybert_attn: {choice: [0.0, 1.0]},
          minilm: {choice: [0.0, 1.0]}, embed_mse: {choice: [0.0, 1.0]}}
  hint_mapping: {choice: [uniform, learned]}
  init: {choice: [random, teacher]}
training:
  lr: 3.0e-3
  batch_size: 32
  epochs: 2
"""


def _texts(path: Path, n: int = 160) -> None:
    """Two classes told apart by which of two word lists a sentence draws from."""
    words = (["bright", "sunny", "warm", "clear"], ["rain", "storm", "cold", "grey"])
    filler = ["the", "day", "was", "very", "quite", "and", "it", "felt"]
    with open(path, "w", newline="") as fh:
        w = csv.writer(fh)
        w.writerow(["text", "label"])
        for i in range(n):
            label = i % 2
            picks = [filler[(i + j) % len(filler)] for j in range(i % 5 + 1)]
            picks.insert(i % 3, words[label][i % 4])
            w.writerow([" ".join(picks), ["dry", "wet"][label]])


@pytest.mark.slow
def test_text_search_report_export_with_transformer_students(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("AUTOKD_CACHE", str(tmp_path / "cache"))
    data = tmp_path / "weather.csv"
    _texts(data)
    space = tmp_path / "space.yaml"
    space.write_text(SPACE)
    common = ["--dataset", f"text:{data}", "--max-length", "12", "--vocab-size", "64"]
    teacher = tmp_path / "teacher.pt"
    assert main(["teacher", "train", *common, "--epochs", "3", "--out", str(teacher),
                 "--json"]) == 0  # the transformer: the default family for token data
    assert main(["search", *common, "--space", str(space), "--teacher", str(teacher),
                 "--budget", "6", "--sampler", "random", "--no-latency", "--json",
                 "--results", str(tmp_path), "--name", "text"]) == 0
    study = optuna.load_study(study_name="text",
                              storage=f"sqlite:///{tmp_path / 'text' / 'study.db'}")
    records = [TrialRecord.of(t) for t in study.trials if t.state.is_finished()]
    assert records and {r.get("family") for r in records} == {"transformer"}
    trained = [r for r in records if not r.get("infeasible")]
    assert trained and all(r.get("test_accuracy") is not None for r in trained)
    # the teacher recipe has 4 heads: a 2-head student cannot start from its layers
    for r in records:
        if r.get("infeasible"):
            assert "head" in r.get("infeasible_reason")
    assert any(r.get("recipe")["init"] == "teacher" for r in trained)  # shapes match: copied
    assert main(["report", str(tmp_path / "text")]) == 0
    out = tmp_path / "export"
    assert main(["export", str(tmp_path / "text"), "--out", str(out), "--json"]) == 0
    card = json.loads((out / "model_card.json").read_text())
    assert {"student.pt", "student.onnx"} <= set(card["artifacts"])
    checks = [v for v in card["verification"].values() if isinstance(v, dict)]
    assert checks and all(v["max_abs_diff"] <= 1e-4 for v in checks)
