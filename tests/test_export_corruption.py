"""Export verification refuses real corrupted files, for every shipped family and format.

Why: the parity check is what stands between a wrong file and a published card. Each artifact
is written by the export's own writer, one weight tensor is then changed inside the file (not
in the model), and ``verify_artifacts`` must refuse it with one line. The families' clean
parity is tested in test_export_families.py; the CLI path (nothing published, exit 2) in
test_export.py.
"""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Any

import pytest
import torch

from autokd.data import load_data
from autokd.errors import ExportError
from autokd.export.formats import FORMATS, write_artifacts
from autokd.export.verify import PARITY_TOL, verify_artifacts
from autokd.models import build_student
from tests._corrupt import CORRUPTERS, corrupt
from tests.test_export_families import SHIPPED

pytest.importorskip("onnxruntime")

# one small student per family, on the input kind it is most often used with
CASES: dict[str, tuple[str, dict[str, Any]]] = {
    "cnn": ("digits", {"depth": 1, "widths": [4]}),
    "cnn1d": ("mnist1d", {"depth": 1, "widths": [4]}),
    "mlp": ("wine", {"depth": 1, "widths": 8}),
    "mbv2": ("digits", {"stages": 1, "depths": [1], "widths": [8], "expansion": [3],
                        "se": True, "activation": "hardswish", "head_width": 8}),
    "resnet": ("digits", {"stages": 1, "widths": [8]}),
    "transformer": ("digits", {"layers": 1, "hidden": 8, "heads": 2, "patch": 4}),
}
FLOAT_FORMATS = ("pt", "torchscript", "pt2", "onnx")


def _lively(model: torch.nn.Module, x: torch.Tensor) -> torch.nn.Module:
    """Weights moved well off their initialisation and batch-norm statistics taken from data.

    Why: at initialisation some students barely depend on their input (an mbv2's logits vary
    by ~1e-5 across digits, below ``PARITY_TOL``), so a parity check on them proves nothing.
    """
    gen = torch.Generator().manual_seed(0)
    norms = [m for m in model.modules() if isinstance(m, torch.nn.modules.batchnorm._BatchNorm)]
    with torch.no_grad():
        for p in model.parameters():
            p.add_(torch.randn(p.shape, generator=gen) * 0.3)
        for m in norms:
            m.reset_running_stats()
            m.momentum = None  # a plain average over the batch below
        model.train()(x)
    return model.eval()


@pytest.fixture(scope="module")
def written(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """Each family's student, its data and its artifacts in every float format (written once)."""
    datasets = {"digits": load_data("digits"), "wine": load_data("wine"),
                "mnist1d": load_data("mnist1d", num_samples=300)}
    out = {}
    for family, (dataset, spec) in CASES.items():
        data = datasets[dataset]
        torch.manual_seed(0)
        model = _lively(build_student(family, spec, data.input_shape, data.num_classes),
                        data.x_train[:256])
        assert model(data.x_test).std(0).mean() > 100 * PARITY_TOL  # outputs follow inputs
        folder = tmp_path_factory.mktemp(family)
        files = write_artifacts(model, folder, FLOAT_FORMATS, {}, data.x_test[:2])
        out[family] = (model, data, files)
    return out


def test_every_family_and_float_format_is_covered() -> None:
    assert set(CASES) == set(SHIPPED)
    float_formats = {f for f in FORMATS.names() if f != "int8" and not f.startswith("hf")}
    assert float_formats == set(FLOAT_FORMATS) == set(CORRUPTERS)


@pytest.mark.parametrize("fmt", FLOAT_FORMATS)
@pytest.mark.parametrize("family", list(CASES))
def test_corrupted_artifact_is_refused(family: str, fmt: str, written: dict[str, Any],
                                       tmp_path: Path) -> None:
    model, data, files = written[family]
    path = tmp_path / files[fmt].name
    shutil.copyfile(files[fmt], path)
    assert verify_artifacts(model, {fmt: path}, data)[fmt]["passed"]  # the clean file passes
    corrupt(path, fmt)
    with pytest.raises(ExportError, match=f"^{fmt} export does not match the PyTorch student"
                                          r": max abs difference \S+ > 0.0001$") as err:
        verify_artifacts(model, {fmt: path}, data)
    assert "\n" not in str(err.value)

