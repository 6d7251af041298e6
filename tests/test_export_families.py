"""Every student family exports to TorchScript and ONNX with outputs within ``PARITY_TOL``
of PyTorch (hard-swish, hard-sigmoid, depthwise and 1-D convs included), through the same
writers and parity check ``autokd export`` uses."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import torch

from autokd.data import DataSplits, load_data
from autokd.errors import ExportError
from autokd.export.formats import run_artifact, write_artifacts
from autokd.export.verify import verify_artifacts
from autokd.models import FAMILIES, build_student

# the families autokd ships (tests may register stand-ins of their own); hf students are
# built from a Hugging Face teacher's config, so tests/test_hf.py covers them
SHIPPED = [n for n in FAMILIES.names()
           if getattr(FAMILIES.get(n).build, "__module__", "").startswith("autokd.")
           and n != "hf"]

pytest.importorskip("onnxruntime")

SE_HS = {"se": True, "activation": "hardswish", "expansion": [1, 4], "stages": 2,
         "depths": [1, 2], "widths": [8, 16], "kernel": [3, 5], "head_width": 16}
CASES: list[tuple[str, str, dict[str, Any]]] = [
    ("cnn", "digits", {"depth": 2, "widths": [4, 8], "activation": "hardswish"}),
    ("cnn1d", "mnist1d", {"depth": 2, "widths": [4, 8]}),
    ("mlp", "wine", {"depth": 1, "widths": 8}),
    ("mbv2", "digits", SE_HS),
    ("mbv2", "mnist1d", SE_HS),
    ("resnet", "digits", {"stem": "conv3x3", "stages": 2, "widths": [8, 16]}),
    ("resnet", "mnist1d", {"stem": "conv7", "stages": 2, "depths": [1, 2], "widths": [8, 8]}),
]


@pytest.fixture(scope="module")
def datasets() -> dict[str, DataSplits]:
    return {"digits": load_data("digits"), "wine": load_data("wine"),
            "mnist1d": load_data("mnist1d", num_samples=300)}


def test_every_family_is_covered() -> None:
    assert {family for family, _, _ in CASES} == set(SHIPPED)


def _trained_looking(model: torch.nn.Module) -> torch.nn.Module:
    """Non-trivial batch-norm statistics, so folding them at export is actually exercised."""
    gen = torch.Generator().manual_seed(0)
    for m in model.modules():
        if isinstance(m, torch.nn.modules.batchnorm._BatchNorm):
            m.running_mean.normal_(0, 0.1, generator=gen)
            m.running_var.uniform_(0.5, 2.0, generator=gen)
    return model.eval()


@pytest.mark.parametrize(("family", "dataset", "spec"), CASES,
                         ids=[f"{f}-{d}" for f, d, _ in CASES])
def test_export_parity(family: str, dataset: str, spec: dict[str, Any], tmp_path: Path,
                       datasets: dict[str, DataSplits]) -> None:
    data = datasets[dataset]
    torch.manual_seed(0)
    model = _trained_looking(build_student(family, spec, data.input_shape, data.num_classes))
    example = data.x_test[:2]
    files = write_artifacts(model, tmp_path, ("pt", "torchscript", "onnx"), {}, example)
    report = verify_artifacts(model, files, data)
    for fmt in ("pt", "torchscript", "onnx"):
        assert report[fmt]["passed"] and report[fmt]["max_abs_diff"] <= report["tolerance"]
    onnx_model = run_artifact(files["onnx"], "onnx")
    batch = data.x_test[:7]  # a batch size other than the traced one (dynamic axis)
    assert onnx_model(batch).shape == (7, data.num_classes)


def test_parity_check_refuses_a_different_model(tmp_path: Path,
                                                datasets: dict[str, DataSplits]) -> None:
    data = datasets["digits"]
    model = _trained_looking(build_student("mbv2", SE_HS, data.input_shape, data.num_classes))
    files = write_artifacts(model, tmp_path, ("onnx",), {}, data.x_test[:2])
    with torch.no_grad():
        model.classifier.bias.add_(1.0)  # the artifact no longer matches the model
    with pytest.raises(ExportError, match="does not match"):
        verify_artifacts(model, files, data)
