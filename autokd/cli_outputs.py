"""Subcommands added by the cli_outputs feature set (see autokd.cli)."""

from __future__ import annotations

from typing import Any

__all__ = ["add_parsers"]


def add_parsers(sub: Any) -> None:
    """No subcommands yet."""
