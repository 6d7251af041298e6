"""INT8 export: the QAT student's model and the post-training baseline, verified and carded.

One module-scoped search of a single QAT trial (``quantize: int8``) on digits, exported once
with the default formats; the post-training path is tested on a float student directly.
"""

from __future__ import annotations

import copy
import dataclasses
import shutil
from pathlib import Path
from typing import Any

import numpy as np
import onnx
import optuna
import pytest
import torch
from onnx import numpy_helper

from autokd.cli import main
from autokd.data import DataSplits, load_data
from autokd.errors import ExportError
from autokd.export import (
    FORMATS,
    PARITY_TOL,
    applicable_formats,
    evaluate_artifact,
    export_student,
    load_student,
    write_artifacts,
)
from autokd.export.int8 import calibration_samples, float_student, int8_reference
from autokd.export.verify import verify_artifacts
from autokd.quant import is_qat, prepare_qat
from autokd.quant.ptq import int8_initializers
from autokd.record import TrialRecord
from autokd.study import StudyPaths
from tests._helpers import quick_study

QAT_SPACE = """
family: cnn
architecture:
  depth: 1
  widths: [8]
distillation:
  temperature: 4.0
  alpha: 0.7
  quantize: int8
training:
  lr: 0.01
  epochs: 1
"""


@pytest.fixture(scope="module")
def data() -> DataSplits:
    return load_data("digits")


@pytest.fixture(scope="module")
def qat(tmp_path_factory: pytest.TempPathFactory) -> tuple[optuna.Study, StudyPaths, Any]:
    """A one-trial QAT search and its export (torch.export is tested in test_export.py)."""
    root = tmp_path_factory.mktemp("int8")
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("AUTOKD_CACHE", str(root / "cache"))
        study = quick_study(root, "q", QAT_SPACE, budget=1, seed=0)
    paths = StudyPaths(root / "results" / "q")
    return study, paths, export_student(study, paths, formats="pt,onnx,int8")


@pytest.fixture(scope="module")
def float_cnn(qat: Any) -> torch.nn.Module:
    """The QAT student's float weights as a plain cnn: a float student to quantise after
    training."""
    return load_student(qat[2].directory)


def test_qat_export_ships_the_int8_model_the_search_scored(qat: Any) -> None:
    study, _, result = qat
    card, folder = result.card, result.directory
    assert {p.name for p in folder.iterdir()} >= {"student.int8.onnx", "student.onnx"}
    record = TrialRecord.of(study.trials[result.trial])
    q, v = card["metrics"]["int8"], card["verification"]["int8"]
    assert q["method"] == "qat" and card["metrics"]["stated"] == "int8"
    # the card states the INT8 model's own accuracy: the one the search measured on it
    assert card["metrics"]["test"]["accuracy"] == q["test"]["accuracy"] == v["test_accuracy"]
    assert q["test"]["accuracy"] == pytest.approx(record.get("test_accuracy"), abs=1e-9)
    assert card["artifacts"]["student.int8.onnx"]["test_accuracy"] == v["test_accuracy"]
    # float artifacts hold the float student (fake quantisation off) at the usual parity
    for fmt in ("pt", "onnx"):
        assert card["verification"][fmt]["max_abs_diff"] <= PARITY_TOL, fmt
        assert card["verification"][fmt]["test_accuracy"] == card["metrics"]["float"]["test"][
            "accuracy"]
    # INT8 is exempt from that parity: its deviation is reported, not refused
    assert v["parity"] == "exempt" and v["max_abs_diff"] > PARITY_TOL
    assert v["reference_max_abs_diff"] <= PARITY_TOL
    weights = int8_initializers(folder / "student.int8.onnx")
    assert any(name.endswith("_quantized") and a.dtype == np.int8 for name, a in weights.items())
    sizes = card["costs"]["int8"]
    assert sizes["int8_weight_bytes"] * 4 <= sizes["float_initializer_bytes"]
    assert "int8" in card["costs"]["latency"] and "## INT8" in (folder / "model_card.md").read_text()


def test_evaluate_reproduces_the_int8_card(qat: Any, data: DataSplits) -> None:
    _, _, result = qat
    out = evaluate_artifact(result.directory / "student.int8.onnx", data, latency=False)
    assert out["format"] == "int8" and out["card"]["verified"]
    assert out["test_accuracy"] == out["card"]["test_accuracy"] == \
        result.card["metrics"]["int8"]["test"]["accuracy"]


def _corrupting(spec: Any) -> Any:
    """The int8 writer, then one int8 weight tensor negated (as a bad disk or writer would)."""
    def write(model: Any, path: Path, meta: Any, example: Any, **kw: Any) -> None:
        spec.write(model, path, meta, example, **kw)
        proto = onnx.load(str(path))
        init = next(i for i in proto.graph.initializer
                    if i.name.endswith("_quantized") and i.data_type == onnx.TensorProto.INT8)
        init.CopyFrom(numpy_helper.from_array(-numpy_helper.to_array(init), init.name))
        onnx.save(proto, str(path))

    return dataclasses.replace(spec, write=write)


def test_corrupted_int8_file_is_refused(qat: Any, tmp_path: Path, capsys: Any,
                                        monkeypatch: pytest.MonkeyPatch) -> None:
    study, paths, _ = qat
    monkeypatch.setitem(FORMATS._items, "int8", _corrupting(FORMATS.get("int8")))
    out = tmp_path / "bad"
    with pytest.raises(ExportError, match="int8 export does not match the INT8 model"):
        export_student(study, paths, formats="int8", out=out)
    assert not out.exists()  # refused by verification: nothing published, no card written
    assert main(["export", str(paths.root), "--formats", "onnx,int8", "--out", str(out)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "int8 export does not match" in err[0]


def test_int8_file_changed_after_export_is_refused(qat: Any, tmp_path: Path,
                                                   capsys: Any) -> None:
    _, _, result = qat
    copy = tmp_path / "copy"
    shutil.copytree(result.directory, copy)
    with open(copy / "student.int8.onnx", "ab") as fh:
        fh.write(b"\0")
    assert main(["evaluate", str(copy / "student.int8.onnx")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "modified after export" in err[0]


def test_post_training_quantisation_is_the_float_baseline(float_cnn: torch.nn.Module,
                                                          data: DataSplits,
                                                          tmp_path: Path) -> None:
    assert applicable_formats(None, float_cnn)[-1] == "onnx"  # INT8 only on request
    example = data.head("test", 2)
    calib = calibration_samples(data)
    assert torch.equal(calib, data.x_train[:len(calib)])  # calibrated on train, never test
    reference = int8_reference(float_cnn, example, calib)
    files = write_artifacts(float_cnn, tmp_path, ("onnx", "int8"), {}, example,
                            calibration=calib)
    report = verify_artifacts(float_cnn, files, data, int8_reference=reference)
    v = report["int8"]
    assert v["parity"] == "exempt" and v["reference_max_abs_diff"] <= PARITY_TOL
    assert abs(v["test_accuracy"] - v["float_test_accuracy"]) <= 0.05
    assert int8_initializers(files["int8"])  # weights stored as 8-bit integers
    # other calibration samples give other activation scales: the verification notices
    other = int8_reference(float_cnn, example, calib[:8] * 3.0)
    with pytest.raises(ExportError, match="does not match the INT8 model"):
        verify_artifacts(float_cnn, files, data, int8_reference=other)
    with pytest.raises(ExportError, match="calibration samples"):
        write_artifacts(float_cnn, tmp_path, ("int8",), {}, example)


def test_float_student_of_a_qat_model_drops_fake_quantisation(float_cnn: torch.nn.Module,
                                                              data: DataSplits) -> None:
    qat = prepare_qat(copy.deepcopy(float_cnn)).eval()
    with torch.no_grad():
        qat(data.x_train[:256])  # an eval-mode first batch sets the ranges; BN stays as it was
    plain = float_student(qat)
    assert is_qat(qat) and not is_qat(plain) and applicable_formats(None, qat)[-1] == "int8"
    x = data.x_test[:64]
    with torch.no_grad():
        assert torch.equal(plain(x), float_cnn(x))  # the same float weights, no rounding
        assert not torch.equal(qat(x), float_cnn(x))


def test_bad_format_names_are_one_line(qat: Any, capsys: Any) -> None:
    _, paths, _ = qat
    assert main(["export", str(paths.root), "--formats", "int4"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "int4" in err[0] and "int8" in err[0] and "pt2" in err[0]


@pytest.mark.parametrize("name", ["student.int8.onnx", "student.pt2"])
def test_unreadable_int8_or_pt2_file_is_one_line(name: str, tmp_path: Path, capsys: Any) -> None:
    path = tmp_path / name
    path.write_bytes(b"not a model")
    assert main(["evaluate", str(path), "--dataset", "digits", "--no-latency"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "cannot load" in err[0] and name in err[0]
