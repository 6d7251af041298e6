"""autokd: search student architectures and distillation recipes together.

The public API mirrors the CLI. Everything is imported lazily, so ``import autokd`` stays cheap
(no torch, no Optuna) and optional pieces (ONNX export) only load when used. ``search``,
``report`` and ``export`` are modules that can be called as their API function
(``autokd.search(dataset="digits", budget=20)``, see ``autokd._api``).
"""

from __future__ import annotations

import importlib
from typing import Any

__all__ = ["__version__", "distill", "export", "load_data", "load_student", "report", "search"]
__version__ = "0.1.0"

# name -> (module, attribute); attribute None: the (callable) module itself
_LAZY: dict[str, tuple[str, str | None]] = {
    "search": ("autokd.search", None),
    "report": ("autokd.report", None),
    "export": ("autokd.export", None),
    "load_student": ("autokd.export", "load_student"),
    "distill": ("autokd.pipeline", "run_distillation"),
    "load_data": ("autokd.data", "load_data"),
}


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        module, attr = _LAZY[name]
        loaded = importlib.import_module(module)
        return loaded if attr is None else getattr(loaded, attr)
    raise AttributeError(f"module 'autokd' has no attribute {name!r}")
