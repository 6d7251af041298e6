"""One small generic registry, used for students, losses, controllers and cost models.

Why: every kind of thing is created by name through one lookup, so the CLI, YAML spaces and
tests all agree on names, and a typo lists the known names instead of a ``KeyError``.
"""

from __future__ import annotations

import difflib
import logging
from collections.abc import Callable, Iterator
from typing import Generic, TypeVar

from autokd.errors import ConfigError

__all__ = ["Registry"]

logger = logging.getLogger(__name__)
T = TypeVar("T")


class Registry(Generic[T]):
    """A name -> object table for one kind of thing (e.g. ``"student"``)."""

    def __init__(self, kind: str) -> None:
        self.kind = kind
        self._items: dict[str, T] = {}

    def register(self, name: str, obj: T | None = None) -> Callable[[T], T] | T:
        """Register ``obj`` under ``name``; usable as a decorator when ``obj`` is omitted."""

        def _add(item: T) -> T:
            if name in self._items and self._items[name] is not item:
                logger.warning("%s %r registered twice; the later one wins", self.kind, name)
            self._items[name] = item
            return item

        return _add if obj is None else _add(obj)

    def get(self, name: str) -> T:
        """Look ``name`` up; an unknown name raises with the known names and a close match."""
        try:
            return self._items[name]
        except KeyError:
            close = difflib.get_close_matches(name, self._items, n=1)
            hint = f" (did you mean {close[0]!r}?)" if close else ""
            known = ", ".join(sorted(self._items))
            raise ConfigError(f"unknown {self.kind} {name!r}{hint}; known: {known}") from None

    def names(self) -> list[str]:
        return sorted(self._items)

    def in_order(self) -> list[str]:
        """Names in registration order, for kinds whose order shows in output files."""
        return list(self._items)

    def __contains__(self, name: object) -> bool:
        return name in self._items

    def __iter__(self) -> Iterator[str]:
        return iter(self.names())
