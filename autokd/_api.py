"""Modules that are also the API function of the same name (``autokd.search(...)``).

Why: the public API names ``search``, ``report`` and ``export`` are also the names of the
modules that implement them. Once a submodule is imported, Python binds its name on the package
to the module, so ``autokd.report(...)`` would stop being the function. Making those modules
callable (their class becomes a ``ModuleType`` subclass with ``__call__``) keeps
``autokd.search(...)`` working whichever was imported first, while ``import autokd`` stays cheap.
"""

from __future__ import annotations

import sys
import types
from collections.abc import Callable
from typing import Any

__all__ = ["callable_module"]


class _CallableModule(types.ModuleType):
    """A module whose call is its API function (``__api__``)."""

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        return self.__dict__["__api__"](*args, **kwargs)


def callable_module(name: str, fn: Callable[..., Any]) -> None:
    """Make module ``name`` callable as ``fn``."""
    module = sys.modules[name]
    module.__api__ = fn  # type: ignore[attr-defined]
    module.__class__ = _CallableModule
