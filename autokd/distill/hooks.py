"""Capture intermediate activations by module path, with forward hooks.

Why hooks: feature-level KD (FitNet hints, attention transfer, relational losses) needs a
model's inner activations, and hooks get them without editing any model's ``forward``. Paths
are the dotted names of ``model.named_modules()`` (e.g. ``"features.3"``), so a search space or
a user's teacher only has to name layers, never change code.

Tap groups: a model may expose ``tap_groups`` (group name -> module paths, e.g. a transformer's
``hidden``, ``attention``, ``values``) and ``enable_taps(groups)`` (turn on what those groups
compute, e.g. materialised attention probabilities). A model without ``tap_groups`` has one
group, ``features`` = its ``feature_taps``. ``TapHooks`` hooks several groups at once and
``taps_enabled`` switches a model's groups on for a block and back off after it.
"""

from __future__ import annotations

import difflib
import logging
from collections.abc import Callable, Collection, Iterator, Sequence
from contextlib import contextmanager
from types import TracebackType
from typing import TYPE_CHECKING, Any

from torch import Tensor, nn
from torch.utils.hooks import RemovableHandle

from autokd.errors import ConfigError

if TYPE_CHECKING:
    from typing_extensions import Self

__all__ = ["FeatureHooks", "TapHooks", "model_tap_groups", "taps_enabled"]

logger = logging.getLogger(__name__)

_LISTED = 8  # how many valid names an unknown-path error shows


def _first_tensor(output: Any) -> Tensor | None:
    """A module's output tensor; for tuple outputs (e.g. RNNs, attention) the first tensor."""
    if isinstance(output, Tensor):
        return output
    if isinstance(output, (tuple, list)):
        return next((o for o in output if isinstance(o, Tensor)), None)
    return None


def _unknown_path_message(unknown: list[str], known: list[str]) -> str:
    close = [m for p in unknown for m in difflib.get_close_matches(p, known, n=2)]
    shown = list(dict.fromkeys(close + known))[:_LISTED]
    more = f" (and {len(known) - len(shown)} more)" if len(known) > len(shown) else ""
    return f"unknown module path(s) {unknown}; valid names include: {', '.join(shown)}{more}"


class FeatureHooks:
    """Forward hooks at module paths; ``features`` are their outputs from the latest forward.

    Hooks are registered on construction and removed by ``remove()`` or on leaving a ``with``
    block (the last captured features stay readable after that). Outputs are stored as
    produced (not detached), so a student's features keep their graph while a teacher run
    under ``torch.no_grad()`` simply yields tensors without one. A module called twice in one
    forward keeps its last output.

    Args:
        model: The model to tap.
        paths: Dotted module names as in ``model.named_modules()``; ``features`` follows this
            order, not execution order.

    Raises:
        ConfigError: If a path names no module of ``model``.

    Example::

        with FeatureHooks(student, ["blocks.0", "blocks.1"]) as hooks:
            logits = student(x)
            h0, h1 = hooks.features  # (B, C, H, W) each
    """

    def __init__(self, model: nn.Module, paths: Sequence[str]) -> None:
        modules = dict(model.named_modules())
        unknown = [p for p in paths if p not in modules]
        if unknown:
            raise ConfigError(_unknown_path_message(unknown, [n for n in modules if n]))
        self.paths = list(paths)
        self._outputs: list[Tensor | None] = [None] * len(self.paths)
        self._handles: list[RemovableHandle] = [
            modules[p].register_forward_hook(self._make_hook(i)) for i, p in enumerate(self.paths)
        ]
        logger.debug("tapping %d module(s): %s", len(self.paths), self.paths)

    def _make_hook(self, index: int) -> Callable[[nn.Module, Any, Any], None]:
        def hook(module: nn.Module, inputs: Any, output: Any) -> None:
            tensor = _first_tensor(output)
            if tensor is None:
                raise ConfigError(f"module {self.paths[index]!r} returned no tensor to capture")
            self._outputs[index] = tensor

        return hook

    @property
    def features(self) -> list[Tensor]:
        """Captured outputs in the order of ``paths``.

        Raises:
            ConfigError: If some tapped module did not run since the last ``clear()``.
        """
        missing = [p for p, out in zip(self.paths, self._outputs, strict=True) if out is None]
        if missing:
            raise ConfigError(f"module path(s) {missing} did not run in the latest forward pass")
        return [out for out in self._outputs if out is not None]

    def clear(self) -> None:
        """Forget captured outputs (frees their memory and any graph they hold)."""
        self._outputs = [None] * len(self.paths)

    def remove(self) -> None:
        """Remove the hooks; the latest ``features`` stay readable. Safe to call twice."""
        for handle in self._handles:
            handle.remove()
        self._handles = []

    def __enter__(self) -> FeatureHooks:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.remove()

    def __len__(self) -> int:
        return len(self.paths)


def model_tap_groups(model: nn.Module | None,
                     feature_taps: Sequence[str] | None = None) -> dict[str, list[str]]:
    """A model's tap groups: its ``tap_groups``, else ``{"features": feature_taps}``.

    ``feature_taps`` defaults to the model's own attribute; a group with no paths is left out,
    so "has group g" is ``g in model_tap_groups(m)``.
    """
    if model is None:
        return {}
    groups = getattr(model, "tap_groups", None)
    if groups:
        return {str(g): list(p) for g, p in dict(groups).items() if p}
    taps = list(feature_taps if feature_taps is not None else getattr(model, "feature_taps", []))
    return {"features": taps} if taps else {}


@contextmanager
def taps_enabled(model: nn.Module | None, groups: Collection[str]) -> Iterator[None]:
    """Within the block ``model.enable_taps(groups)`` holds (when the model has it); after it,
    even on an error, ``enable_taps(set())`` puts the model back on its fast path."""
    enable = getattr(model, "enable_taps", None)
    if enable is None or not groups:
        yield
        return
    enable(set(groups))
    try:
        yield
    finally:
        enable(set())


class TapHooks:
    """``FeatureHooks`` for several tap groups at once; ``taps`` is ``group -> [tensors]``.

    One hook per path (a path in two groups is hooked twice), removed on leaving a ``with``
    block like ``FeatureHooks``.

    Raises:
        ConfigError: If a group is not among ``groups`` (naming the group and ``who``), or a
            path names no module.
    """

    def __init__(self, model: nn.Module, groups: dict[str, list[str]], wanted: Collection[str],
                 who: str = "model") -> None:
        missing = sorted(set(wanted) - set(groups))
        if missing:
            have = ", ".join(sorted(groups)) or "none"
            raise ConfigError(f"the {who} has no {', '.join(map(repr, missing))} taps that this "
                              f"KD recipe needs (its tap groups: {have})")
        self.groups = {g: list(groups[g]) for g in sorted(wanted)}
        self._hooks = FeatureHooks(model, [p for paths in self.groups.values() for p in paths])

    @property
    def taps(self) -> dict[str, list[Tensor]]:
        """Captured outputs per group, in path order."""
        flat, out, start = self._hooks.features, {}, 0
        for group, paths in self.groups.items():
            out[group] = flat[start:start + len(paths)]
            start += len(paths)
        return out

    def remove(self) -> None:
        self._hooks.remove()

    def __enter__(self) -> Self:
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.remove()
