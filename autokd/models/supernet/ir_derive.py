"""Deriving an ``mbv2`` spec from the inverted-residual supernet (mixin of ``IRSupernet``).

Why per stage: the agreed ``mbv2`` schema has one depth, kernel, expansion and width per stage,
while alpha has one decision per block position. A block is kept when it is not ``skip``
(argmax rule) or when ``P(skip) <= 1/2`` (marginal rule); a stage's depth is its number of kept
blocks (the first block always runs), snapped down to an allowed depth; its kernel and its
expansion are each the value with the largest probability summed over the stage's kept blocks
(marginal over the other factor), so one undecided block cannot outvote the others; its width is
the argmax (or the upper median, as the stack supernet's) of its width decision. Every
block-level choice is made stage-consistent the same way (``full_choice``), so the cost model,
the latency table and the built student always agree.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor

from autokd.errors import ConfigError
from autokd.models.supernet.net import _upper_median

__all__ = ["SKIP", "IRDerivation", "candidate_label", "parse_label"]

SKIP = "skip"
_PER_STAGE = ("depths", "widths", "kernel", "expansion", "se", "activation")


def candidate_label(kernel: int, expansion: int) -> str:
    return f"k{kernel}e{expansion}"


def parse_label(label: str) -> tuple[int, int]:
    kernel, _, expansion = label[1:].partition("e")
    return int(kernel), int(expansion)


class IRDerivation:
    """Block-level choices <-> per-stage ``mbv2`` specs and the space's parameter names."""

    decisions: dict[str, list[Any]]
    n_stages: int
    strides: list[list[int]]
    kernels: list[list[int]]
    expansions: list[list[int]]
    fixed: dict[str, Any]

    def full_choice(self, choice: dict[str, Any]) -> dict[str, Any]:
        """Completed and made stage-consistent: the first ``depth`` blocks of each stage run
        the kernel and expansion of the block that governs it (its first, or stage 0's first
        for a decision shared by all stages), the others are skipped."""
        full = super().full_choice(choice)
        counts = [sum(full[f"block_{i}_{j}"] != SKIP for j in range(len(self.strides[i])))
                  for i in range(self.n_stages)]
        depths = self._depths(counts)
        for i in range(self.n_stages):
            k = parse_label(full[f"block_{self._leader('kernel', i)}_0"])[0]
            e = parse_label(full[f"block_{self._leader('expansion', i)}_0"])[1]
            for j in range(len(self.strides[i])):
                full[f"block_{i}_{j}"] = candidate_label(k, e) if j < depths[i] else SKIP
        return full

    def _leader(self, key: str, stage: int) -> int:
        """The first stage that shares ``key``'s decision with ``stage``."""
        name = self.decision_name(key, stage)
        if name is None or name != key:
            return stage
        return 0

    def _depths(self, counts: list[int]) -> list[int]:
        """Per stage, the kept-block count (averaged over stages sharing one depth decision),
        snapped down to an allowed depth."""
        out = []
        for i in range(self.n_stages):
            name = self.decision_name("depths", i)
            group = [s for s in range(self.n_stages) if self.decision_name("depths", s) == name] \
                if name == "depths" else [i]
            mean = sum(counts[s] for s in group) / len(group)
            allowed = sorted(int(d) for d in self.options("depths", i))
            target = int(mean + 0.5)
            out.append(max([d for d in allowed if d <= target], default=allowed[0]))
        return out

    def argmax_choice(self) -> dict[str, Any]:
        """The most probable option of every decision (first on ties)."""
        return {name: self.decisions[name][int(alpha.detach().argmax())]
                for name, alpha in self.alphas.items()}

    def choice(self, rule: str = "argmax") -> dict[str, Any]:
        """The derived, stage-consistent choice by ``rule``: ``argmax`` or ``marginal``."""
        if rule not in ("argmax", "marginal"):
            raise ConfigError(f"unknown derivation rule {rule!r}; known: argmax, marginal")
        probs = {n: p.detach().cpu() for n, p in self.probabilities().items()}
        kept = [[j for j in range(len(self.strides[i])) if self._kept(probs, i, j, rule)]
                for i in range(self.n_stages)]
        choice: dict[str, Any] = {}
        for i in range(self.n_stages):
            name = self.decision_name("widths", i)
            if name is not None:
                opts = self.decisions[name]
                choice[name] = opts[int(probs[name].argmax())] if rule == "argmax" \
                    else _upper_median(opts, probs[name])
        depths = self._depths([len(k) for k in kept])
        for i in range(self.n_stages):
            k = self._summed_argmax(probs, kept, "kernel", i)
            e = self._summed_argmax(probs, kept, "expansion", i)
            for j in range(len(self.strides[i])):
                choice[f"block_{i}_{j}"] = candidate_label(k, e) if j < depths[i] else SKIP
        return choice

    def _kept(self, probs: dict[str, Tensor], i: int, j: int, rule: str) -> bool:
        opts, p = self.decisions[f"block_{i}_{j}"], probs[f"block_{i}_{j}"]
        if opts[-1] != SKIP:
            return True
        return int(p.argmax()) != len(opts) - 1 if rule == "argmax" else float(p[-1]) <= 0.5

    def _summed_argmax(self, probs: dict[str, Tensor], kept: list[list[int]], key: str,
                       stage: int) -> int:
        """The ``key`` value with the largest probability summed over the kept blocks of every
        stage sharing ``stage``'s decision (marginal over the other factor)."""
        name = self.decision_name(key, stage)
        group = [s for s in range(self.n_stages) if self.decision_name(key, s) == name] \
            if name == key else [stage]
        values = self.kernels[stage] if key == "kernel" else self.expansions[stage]
        axis = 1 if key == "kernel" else 0  # candidates are (kernel, expansion), row-major
        score = torch.zeros(len(values), dtype=torch.float64)
        for s in group:
            n = len(self.kernels[s]) * len(self.expansions[s])
            for j in kept[s]:
                grid = probs[f"block_{s}_{j}"][:n].view(len(self.kernels[s]), -1).double()
                score += grid.sum(axis)
        return int(values[int(score.argmax())])

    def spec_for(self, choice: dict[str, Any]) -> dict[str, Any]:
        """The student spec (agreed ``mbv2`` schema) of a block-level choice."""
        full = self.full_choice(choice)
        spec = dict(self.fixed)
        spec["stages"] = self.n_stages
        for key in ("se", "activation"):
            spec[key] = [self.stage_value(key, i) for i in range(self.n_stages)]
        spec["depths"], spec["widths"], spec["kernel"], spec["expansion"] = [], [], [], []
        for i in range(self.n_stages):
            labels = [full[f"block_{i}_{j}"] for j in range(len(self.strides[i]))]
            kernel, expansion = parse_label(labels[0])
            spec["depths"].append(sum(label != SKIP for label in labels))
            spec["widths"].append(self.width(full, i))
            spec["kernel"].append(kernel)
            spec["expansion"].append(expansion)
        return spec

    def active(self, choice: dict[str, Any]) -> dict[str, Any]:
        """The space's parameter values (``{param_name: value}``) of a block-level choice.

        Per-stage values that were not relaxed (``se_i``, ``activation_i``) are included too, so
        pinning them reproduces the supernet's fixed values.
        """
        spec, out = self.spec_for(choice), {}
        for i in range(self.n_stages):
            for key in _PER_STAGE:
                name = self.decision_name(key, i)
                if name is not None:
                    out[name] = spec[key][i]
                elif key in ("se", "activation"):
                    out[f"{key}_{i}"] = spec[key][i]
        return out

    def export(self, rule: str = "argmax") -> dict[str, Any]:
        """``{param_name: choice}`` as the samplers produce it (NNI-style)."""
        return self.active(self.choice(rule))

