"""The ``--where`` filter: a tiny grammar over recorded metrics, parsed without ``eval``.

Why a grammar: a filter string may come from a script or a shared command line, so it may hold
only metric names, comparisons, numbers, ``and``/``or`` and parentheses; anything else is a
``ConfigError`` that points at the first unreadable token.
"""

from __future__ import annotations

import operator
import re
from collections.abc import Callable
from typing import Any

from autokd.config import OBJECTIVES
from autokd.errors import ConfigError

__all__ = ["ALIASES", "Node", "parse_where", "where_matches", "where_metrics"]

# objective names (e.g. "params") -> the trial attribute that holds them
ALIASES = {name: key for name, (key, _) in OBJECTIVES.items()}
_TOKEN = re.compile(r"\s*(?:(?P<num>[-+]?(?:\d+\.?\d*|\.\d+)(?:[eE][-+]?\d+)?%?)"
                    r"|(?P<op><=|>=|==|!=|<|>)|(?P<word>[A-Za-z_][A-Za-z0-9_]*)|(?P<paren>[()]))")
_OPS: dict[str, Callable[[float, float], bool]] = {
    "<": operator.lt, "<=": operator.le, ">": operator.gt, ">=": operator.ge,
    "==": operator.eq, "!=": operator.ne}
Node = tuple[Any, ...]  # ("or"|"and", [nodes]) or ("cmp", metric, op, number)


def _tokens(text: str) -> list[tuple[str, str]]:
    """(kind, text) pairs; ``and``/``or`` become keywords whatever their case."""
    out, pos = [], 0
    while pos < len(text.rstrip()):
        m = _TOKEN.match(text, pos)
        if not m or m.end() == pos:
            raise ConfigError(f"bad --where {text!r}: cannot read {text[pos:].strip()!r}")
        kind = m.lastgroup or ""
        value = m.group(kind)
        out.append(("kw" if kind == "word" and value.lower() in ("and", "or") else kind,
                    value.lower() if kind == "word" and value.lower() in ("and", "or") else value))
        pos = m.end()
    return out


class _WhereParser:
    """Recursive descent: ``expr := conj ('or' conj)*``, ``conj := atom ('and' atom)*``,
    ``atom := '(' expr ')' | METRIC OP NUMBER``."""

    def __init__(self, text: str) -> None:
        self.text, self.toks, self.pos = text, _tokens(text), 0

    def fail(self, expected: str) -> ConfigError:
        got = self.toks[self.pos][1] if self.pos < len(self.toks) else "end of text"
        return ConfigError(f"bad --where {self.text!r}: expected {expected} at {got!r} "
                           "(e.g. \"latency_ms<2 and val_retention>=0.97\")")

    def peek(self, kind: str, value: str | None = None) -> bool:
        if self.pos >= len(self.toks):
            return False
        k, v = self.toks[self.pos]
        return k == kind and (value is None or v == value)

    def take(self, kind: str, expected: str) -> str:
        if not self.peek(kind):
            raise self.fail(expected)
        self.pos += 1
        return self.toks[self.pos - 1][1]

    def parse(self) -> Node:
        node = self.expr()
        if self.pos != len(self.toks):
            raise self.fail("'and', 'or' or the end")
        return node

    def expr(self) -> Node:
        parts = [self.conj()]
        while self.peek("kw", "or"):
            self.pos += 1
            parts.append(self.conj())
        return parts[0] if len(parts) == 1 else ("or", parts)

    def conj(self) -> Node:
        parts = [self.atom()]
        while self.peek("kw", "and"):
            self.pos += 1
            parts.append(self.atom())
        return parts[0] if len(parts) == 1 else ("and", parts)

    def atom(self) -> Node:
        if self.peek("paren", "("):
            self.pos += 1
            node = self.expr()
            self.take("paren", "')'")
            return node
        name = self.take("word", "a metric name")
        op = self.take("op", "a comparison (<, <=, >, >=, ==, !=)")
        number = self.take("num", "a number")
        value = float(number[:-1]) / 100 if number.endswith("%") else float(number)
        return ("cmp", ALIASES.get(name, name), op, value)


def parse_where(text: str) -> Node:
    """Parse a ``--where`` filter into a tree (no ``eval``; numbers and metric names only)."""
    if not text.strip():
        raise ConfigError("--where is empty")
    return _WhereParser(text).parse()


def where_metrics(node: Node) -> set[str]:
    """Every metric the filter compares, so unknown names fail before any trial is read."""
    if node[0] == "cmp":
        return {node[1]}
    return set().union(*(where_metrics(n) for n in node[1]))


def where_matches(node: Node, metrics: dict[str, Any]) -> bool:
    """Evaluate the tree; a comparison on a metric the trial did not record is false."""
    if node[0] == "cmp":
        _, name, op, value = node
        have = metrics.get(name)
        ok = isinstance(have, (int, float)) and not isinstance(have, bool)
        return ok and _OPS[op](float(have), value)
    results = (where_matches(n, metrics) for n in node[1])
    return all(results) if node[0] == "and" else any(results)
