"""``benchmarks/export_latency.py --quick``: exports a student and times every runtime."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tests._bench import benchmark


@pytest.mark.slow
def test_export_latency_quick(tmp_path: Path) -> None:
    export_latency = benchmark("export_latency")
    out = export_latency.main(["--quick", "--out", str(tmp_path)])
    saved = json.loads((tmp_path / "export_latency.json").read_text())
    assert saved["quick"] is True and saved["runs"] == 1
    for runtime in ("pytorch", "torchscript", "onnx"):
        assert set(saved["median_ms"][runtime]) == {"1", "64"}
        assert all(v > 0 for v in saved["median_ms"][runtime].values())
    assert saved["parity_max_abs_diff"]["onnx"] < 1e-4  # the exported files were verified
    assert out["onnx_speedup_vs_pytorch"]["1"] > 0
