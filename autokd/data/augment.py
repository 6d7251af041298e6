"""Batched, seeded training-time augmentations whose every draw can be re-applied exactly.

Why this shape: each recipe splits into ``draw`` (random parameters, one small row per sample:
crop offsets, a flip bit, a resized-crop box) and ``apply`` (a pure function of the clean batch
and those rows). Keeping the randomness in a tensor is what lets an augmentation-replay cache
store only the parameters of its K draws per sample (no augmented image) and rebuild exactly
the batch its teacher logits were computed on; it also makes a run reproducible and resumable
from (seed, epoch) alone. Everything runs on whole batches (indexing, ``affine_grid`` +
``grid_sample``), so there is no per-sample Python loop (torchvision does not import here).

Recipes (``AUGMENTS``):

* ``none``: the clean batch.
* ``crop``: pad by ``pad`` (default 1/8 of each spatial size, at least 1) with the value of a
  raw zero, then crop back to size at a random offset (CIFAR's "pad 4, crop 32"). Images and
  1-D signals (there it is a random shift).
* ``crop_flip``: ``crop`` plus a horizontal flip with probability 1/2. Images only.
* ``rrc_flip``: random-resized crop (area ``scale``, aspect ``ratio``, resized back with
  bilinear sampling) plus a flip. Images only. The box is clamped to the image rather than
  re-drawn up to ten times as torchvision does; the default ``scale`` starts at 0.25, not
  ImageNet's 0.08, since 8% of an 8x8 image is a 2x2 patch.

Flips are refused for 1-D signals: mirroring time reverses causality (a chirp, an ECG), so it
is not a label-preserving transform in general; signals get ``crop`` (shift) only.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F

from autokd.errors import ConfigError
from autokd.registry import Registry

__all__ = ["AUGMENTS", "Augment", "PadCrop", "ResizedCrop", "blank_value", "epoch_generator",
           "get_augment"]


@dataclass(frozen=True)
class Augment:
    """The identity; the base of every recipe (``draw`` -> rows, ``apply`` rows -> batch)."""

    name: str = "none"
    kinds: tuple[str, ...] = ("image", "signal", "tabular", "tokens")

    @property
    def active(self) -> bool:
        return self.name != "none"

    def width(self, ndim: int) -> int:
        """Columns of one sample's parameter row for samples of rank ``ndim`` ((C,L) or (C,H,W))."""
        return 0

    def key(self) -> str:
        """A stable text naming the recipe and its settings (part of cache keys)."""
        return repr(self)

    def draw(self, n: int, shape: tuple[int, ...], gen: torch.Generator) -> torch.Tensor:
        """Random parameters for ``n`` samples of ``shape`` (C, ...), shape (n, width)."""
        return torch.zeros(n, self.width(len(shape)))

    def apply(self, x: torch.Tensor, params: torch.Tensor, fill: float = 0.0) -> torch.Tensor:
        """The batch ``x`` (B, C, ...) augmented by ``params`` (B, width); deterministic."""
        return x

    def __call__(self, x: torch.Tensor, gen: torch.Generator,
                 fill: float = 0.0) -> tuple[torch.Tensor, torch.Tensor]:
        """Draw and apply in one go; returns (augmented batch, its parameters)."""
        params = self.draw(len(x), tuple(x.shape[1:]), gen).to(x.device)
        return self.apply(x, params, fill), params


def _flip_bits(n: int, gen: torch.Generator) -> torch.Tensor:
    return torch.randint(0, 2, (n, 1), generator=gen).float()  # (n, 1)


@dataclass(frozen=True)
class PadCrop(Augment):
    """Pad with ``fill``, crop back at a random offset; rows are (offset per axis[, flip])."""

    name: str = "crop"
    kinds: tuple[str, ...] = ("image", "signal")
    flip: bool = False
    pad_fraction: float = 0.125

    def pad(self, size: int) -> int:
        return max(1, round(size * self.pad_fraction))

    def width(self, ndim: int) -> int:
        return (ndim - 1) + int(self.flip)

    def draw(self, n: int, shape: tuple[int, ...], gen: torch.Generator) -> torch.Tensor:
        spatial = shape[1:]  # (H, W) or (L,)
        cols = [torch.randint(0, 2 * self.pad(s) + 1, (n, 1), generator=gen).float()
                for s in spatial]
        if self.flip:
            cols.append(_flip_bits(n, gen))
        return torch.cat(cols, 1)  # (n, len(spatial) [+1])

    def apply(self, x: torch.Tensor, params: torch.Tensor, fill: float = 0.0) -> torch.Tensor:
        b = torch.arange(len(x), device=x.device)
        off = params.long()
        if x.ndim == 3:  # (B, C, L): a shift
            p = self.pad(x.shape[2])
            cols = off[:, :1] + torch.arange(x.shape[2], device=x.device)  # (B, L)
            xp = F.pad(x, (p, p), value=fill)
            return xp[b[:, None], :, cols].permute(0, 2, 1).contiguous()  # (B, C, L)
        h, w = x.shape[2:]
        ph, pw = self.pad(h), self.pad(w)
        rows = off[:, :1] + torch.arange(h, device=x.device)  # (B, H)
        cols = off[:, 1:2] + torch.arange(w, device=x.device)  # (B, W)
        xp = F.pad(x, (pw, pw, ph, ph), value=fill)
        out = xp[b[:, None, None], :, rows[:, :, None], cols[:, None, :]]  # (B, H, W, C)
        out = out.permute(0, 3, 1, 2).contiguous()  # (B, C, H, W)
        if self.flip:
            out = torch.where(params[:, 2].bool().view(-1, 1, 1, 1), out.flip(-1), out)
        return out


@dataclass(frozen=True)
class ResizedCrop(Augment):
    """A random box resized back to the full size; rows are (cy, cx, h, w, flip) in [0, 1]."""

    name: str = "rrc_flip"
    kinds: tuple[str, ...] = ("image",)
    scale: tuple[float, float] = (0.25, 1.0)
    ratio: tuple[float, float] = (3 / 4, 4 / 3)

    def width(self, ndim: int) -> int:
        return 5

    def draw(self, n: int, shape: tuple[int, ...], gen: torch.Generator) -> torch.Tensor:
        u = torch.rand(n, 4, generator=gen)  # (n, 4)
        area = self.scale[0] + u[:, 0] * (self.scale[1] - self.scale[0])
        lo, hi = math.log(self.ratio[0]), math.log(self.ratio[1])
        ratio = torch.exp(lo + u[:, 1] * (hi - lo))  # width / height
        w = torch.sqrt(area * ratio).clamp(max=1.0)
        h = torch.sqrt(area / ratio).clamp(max=1.0)
        cy = h / 2 + u[:, 2] * (1 - h)
        cx = w / 2 + u[:, 3] * (1 - w)
        return torch.stack([cy, cx, h, w, _flip_bits(n, gen)[:, 0]], 1)  # (n, 5)

    def apply(self, x: torch.Tensor, params: torch.Tensor, fill: float = 0.0) -> torch.Tensor:
        cy, cx, h, w, flip = params.to(x.dtype).unbind(1)
        theta = torch.zeros(len(x), 2, 3, dtype=x.dtype, device=x.device)  # (B, 2, 3)
        theta[:, 0, 0] = w * (1 - 2 * flip)  # a negative x scale samples the mirrored box
        theta[:, 0, 2] = 2 * cx - 1
        theta[:, 1, 1] = h
        theta[:, 1, 2] = 2 * cy - 1
        grid = F.affine_grid(theta, list(x.shape), align_corners=False)  # (B, H, W, 2)
        return F.grid_sample(x, grid, mode="bilinear", padding_mode="border",
                             align_corners=False)


AUGMENTS: Registry[Augment] = Registry("augmentation")
AUGMENTS.register("none", Augment())
AUGMENTS.register("crop", PadCrop())
AUGMENTS.register("crop_flip", PadCrop(name="crop_flip", kinds=("image",), flip=True))
AUGMENTS.register("rrc_flip", ResizedCrop())


def get_augment(name: str, kind: str | None = None) -> Augment:
    """The recipe ``name``, checked against a data kind (one clear line when it does not fit)."""
    aug = AUGMENTS.get(name)
    if kind is None or kind in aug.kinds:
        return aug
    if kind == "signal":
        raise ConfigError(f"augment {name!r} flips or resizes, which is not meaningful for 1-D "
                          "signals; use augment: crop (a random shift) or none")
    raise ConfigError(f"augment {name!r} needs {' or '.join(aug.kinds)} data, but this dataset "
                      f"is {kind}; use augment: none")


def blank_value(normalizer: dict) -> float:
    """The normalised value of a raw zero (the padding of a crop): ``-mean / std``."""
    mean, std = np.asarray(normalizer["mean"]), np.asarray(normalizer["std"])
    if mean.ndim:  # per-feature statistics only exist for tabular data, never augmented
        raise ConfigError("augmentation needs image or signal data (scalar normalisation)")
    return float(-mean / std)


def epoch_generator(seed: int, epoch: int) -> torch.Generator:
    """A generator fixed by (seed, epoch) alone, so a resumed run draws what a straight run
    drew without carrying generator state."""
    state = np.random.SeedSequence([int(seed) & 0xFFFFFFFF, int(epoch)]).generate_state(2)
    return torch.Generator().manual_seed(int(state[0]) << 32 | int(state[1]))
