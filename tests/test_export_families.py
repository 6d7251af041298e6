"""Every student family exports to TorchScript and ONNX with outputs within ``PARITY_TOL``
of PyTorch (hard-swish, hard-sigmoid, depthwise and 1-D convs included), through the same
writers and parity check ``autokd export`` uses; torch.export (.pt2) on one case per input
kind (each program costs about a second to export)."""

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
from tests._tokens import PAD, token_splits

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
    ("transformer", "digits", {"layers": 2, "hidden": 16, "heads": 4, "patch": 5}),
    ("transformer", "mnist1d", {"layers": 2, "hidden": 16, "heads": 2, "pooling": "mean"}),
    ("transformer", "tokens", {"layers": 2, "hidden": 16, "heads": 2}),
    ("transformer", "tokens", {"layers": 1, "hidden": 16, "heads": 4, "pooling": "mean"}),
]
# torch.export on an image, a 1-D signal and token ids (SE, hard-swish and attention inside)
PT2_CASES = {("mbv2", "digits"), ("cnn1d", "mnist1d"), ("transformer", "tokens")}


@pytest.fixture(scope="module")
def datasets() -> dict[str, DataSplits]:
    return {"digits": load_data("digits"), "wine": load_data("wine"),
            "mnist1d": load_data("mnist1d", num_samples=300), "tokens": token_splits()}


def test_every_family_is_covered() -> None:
    assert {family for family, _, _ in CASES} == set(SHIPPED)


def _trained_looking(model: torch.nn.Module) -> torch.nn.Module:
    """Non-trivial batch-norm statistics, so folding them at export is actually exercised;
    a transformer's weights moved far from their N(0, 0.02) start, so masking errors show."""
    gen = torch.Generator().manual_seed(0)
    for m in model.modules():
        if isinstance(m, torch.nn.modules.batchnorm._BatchNorm):
            m.running_mean.normal_(0, 0.1, generator=gen)
            m.running_var.uniform_(0.5, 2.0, generator=gen)
    if model.family == "transformer":
        with torch.no_grad():
            for p in model.parameters():
                p.add_(torch.randn(p.shape, generator=gen) * 0.3)
    return model.eval()


@pytest.mark.parametrize(("family", "dataset", "spec"), CASES,
                         ids=[f"{f}-{d}" for f, d, _ in CASES])
def test_export_parity(family: str, dataset: str, spec: dict[str, Any], tmp_path: Path,
                       datasets: dict[str, DataSplits]) -> None:
    data = datasets[dataset]
    torch.manual_seed(0)
    model = _trained_looking(build_student(family, spec, data.input_shape, data.num_classes,
                                           tokens=data.tokens))
    example = data.x_test[:2]
    formats = ("pt", "torchscript", "pt2", "onnx") if (family, dataset) in PT2_CASES else \
        ("pt", "torchscript", "onnx")
    files = write_artifacts(model, tmp_path, formats, {}, example)
    report = verify_artifacts(model, files, data)
    for fmt in formats:
        assert report[fmt]["passed"] and report[fmt]["max_abs_diff"] <= report["tolerance"]
    batch = data.x_test[:7]  # a batch size other than the traced one (dynamic axis)
    for fmt in formats[2:]:
        assert run_artifact(files[fmt], fmt)(batch).shape == (7, data.num_classes), fmt


def test_token_artifacts_mask_padding_like_the_model(tmp_path: Path,
                                                    datasets: dict[str, DataSplits]) -> None:
    """Traced with a padded example, the artifacts still mask per sample: rows with no padding
    and rows whose padded tail became real tokens match the PyTorch student too."""
    data = datasets["tokens"]
    torch.manual_seed(0)
    model = _trained_looking(build_student("transformer", {"hidden": 16, "heads": 2},
                                           data.input_shape, data.num_classes,
                                           tokens=data.tokens))
    example = data.x_test[1:3]
    assert (example == PAD).any(dim=1).all()  # the traced example is padded
    files = write_artifacts(model, tmp_path, ("torchscript", "onnx"), {}, example)
    x = data.x_test[:8].clone()
    x[1:4] = torch.where(x[1:4] == PAD, 5, x[1:4])  # no padding left in these rows
    with torch.no_grad():
        ref = model(x)
        for fmt in ("torchscript", "onnx"):
            got = run_artifact(files[fmt], fmt)(x)
            assert (got - ref).abs().max() <= 1e-4, fmt
        assert not torch.allclose(model(data.x_test[1:4]), ref[1:4], atol=1e-3)


def test_parity_check_refuses_a_different_model(tmp_path: Path,
                                                datasets: dict[str, DataSplits]) -> None:
    data = datasets["digits"]
    model = _trained_looking(build_student("mbv2", SE_HS, data.input_shape, data.num_classes))
    files = write_artifacts(model, tmp_path, ("onnx",), {}, data.x_test[:2])
    with torch.no_grad():
        model.classifier.bias.add_(1.0)  # the artifact no longer matches the model
    with pytest.raises(ExportError, match="does not match"):
        verify_artifacts(model, files, data)
