"""autokd: search student architectures and distillation recipes together.

The public API mirrors the CLI. Names are imported lazily so ``import autokd`` stays cheap and
optional pieces (ONNX export) only load when used.
"""

from __future__ import annotations

import importlib
from typing import Any

__all__ = ["search", "report", "export", "distill", "load_student", "load_data", "__version__"]
__version__ = "0.1.0"

_LAZY = {
    "report": ("autokd.report", "build_report"),
    "export": ("autokd.export", "export_student"),
    "load_student": ("autokd.export", "load_student"),
    "distill": ("autokd.pipeline", "run_distillation"),
    "load_data": ("autokd.data", "load_data"),
}


# ``autokd.search`` is both a submodule and the API function: importing the module first and
# then binding the function makes ``autokd.search(...)`` the function for every caller.
from autokd import search as _search_module  # noqa: E402

search = _search_module.search


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        module, attr = _LAZY[name]
        return getattr(importlib.import_module(module), attr)
    raise AttributeError(f"module 'autokd' has no attribute {name!r}")
