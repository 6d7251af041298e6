"""Fake-quantised training (QAT): int8 weights and activations simulated in float.

Why this shape: a student that will ship as INT8 should learn with the rounding it will meet
(Jacob et al. 2018; Polino et al. 2018, "quantized distillation"). Each Conv1d/Conv2d/Linear is
swapped in place for a subclass that fake-quantises

- its weight: symmetric per-output-channel int8, ``scale_c = max|W_c| / 127`` (zero point 0),
- its input activation: asymmetric per-tensor uint8, the range tracked by an exponential moving
  average of the batch min/max while training, frozen (``freeze_observers``) for the last epochs
  so the exported scales are the ones the final weights were trained with.

Rounding uses torch's ``fake_quantize_*`` ops, whose backward is the straight-through estimator
(gradient 1 inside the clamp range, 0 outside). BatchNorm and activations stay float. The
subclasses keep parameter names, so feature taps, optimisers and state dicts see the same
``weight``/``bias``; the observer state adds ``<layer>.act_quant.*`` buffers.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from autokd.errors import InitError

__all__ = [
    "ACT_QRANGE",
    "FREEZE_AT",
    "QAT_FAMILIES",
    "WEIGHT_QRANGE",
    "ActQuant",
    "QuantConv1d",
    "QuantConv2d",
    "QuantLinear",
    "QuantizeError",
    "freeze_observers",
    "is_qat",
    "prepare_qat",
    "quant_layers",
    "quantize_weight",
    "rounding_penalty",
    "weight_scale",
]

#: Families whose layers are all Conv1d/Conv2d/Linear + BatchNorm + ReLU-family activations.
QAT_FAMILIES = ("cnn", "cnn1d", "mlp")
#: (qmin, qmax) of weights: int8 with a symmetric scale, so -128 is never produced.
WEIGHT_QRANGE = (-128, 127)
#: (qmin, qmax) of activations: uint8, ONNX Runtime's fast U8S8 path.
ACT_QRANGE = (0, 255)
_EPS = 1e-8
#: Fraction of the training schedule after which activation ranges stop moving.
FREEZE_AT = 0.75


class QuantizeError(InitError):
    """The student's family is not one int8 QAT covers; a search records such a candidate
    infeasible before training (as it does a student that cannot start from its teacher)."""


def weight_scale(weight: torch.Tensor) -> torch.Tensor:
    """Per-output-channel scale ``max|W_c| / 127``, shape (C_out,); no gradient flows through."""
    amax = weight.detach().abs().flatten(1).amax(1)  # (C_out,)
    return (amax / 127.0).clamp_min(_EPS).float()


def quantize_weight(weight: torch.Tensor) -> torch.Tensor:
    """``Q(W)``: the weight rounded to int8 per output channel and scaled back (STE backward)."""
    scale = weight_scale(weight)
    zero = torch.zeros(scale.shape, dtype=torch.int32, device=weight.device)
    return torch.fake_quantize_per_channel_affine(weight, scale, zero, 0, *WEIGHT_QRANGE)


class ActQuant(nn.Module):
    """Per-tensor uint8 fake quantisation of an activation with an observed range.

    Buffers (saved with the model): ``min_val``/``max_val`` (the tracked range), ``observed``
    (at least one batch seen) and ``frozen`` (range no longer updated).
    """

    def __init__(self, momentum: float = 0.1) -> None:
        super().__init__()
        self.momentum = momentum
        self.register_buffer("min_val", torch.tensor(0.0))
        self.register_buffer("max_val", torch.tensor(0.0))
        self.register_buffer("observed", torch.tensor(False))
        self.register_buffer("frozen", torch.tensor(False))

    @torch.no_grad()
    def observe(self, x: torch.Tensor) -> None:
        lo, hi = x.detach().min().float(), x.detach().max().float()
        if not bool(self.observed):
            self.min_val.copy_(lo)
            self.max_val.copy_(hi)
            self.observed.fill_(True)
            return
        self.min_val.lerp_(lo, self.momentum)
        self.max_val.lerp_(hi, self.momentum)

    def qparams(self) -> tuple[torch.Tensor, torch.Tensor]:
        """``(scale, zero_point)`` of the range widened to include 0 (exact zero padding)."""
        lo, hi = self.min_val.clamp(max=0.0), self.max_val.clamp(min=0.0)
        qmin, qmax = ACT_QRANGE
        scale = ((hi - lo) / (qmax - qmin)).clamp_min(_EPS)
        zero = (qmin - torch.round(lo / scale)).clamp(qmin, qmax).to(torch.int32)
        return scale.reshape(1), zero.reshape(1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not bool(self.frozen) and (self.training or not bool(self.observed)):
            self.observe(x)
        scale, zero = self.qparams()
        return torch.fake_quantize_per_tensor_affine(x, scale, zero, *ACT_QRANGE)


class _QuantLayer:
    """Shared by the three layer types: ``act_quant`` on the input, ``Q(weight)`` in forward."""

    act_quant: ActQuant
    weight: nn.Parameter

    @classmethod
    def from_float(cls, m: nn.Module) -> nn.Module:
        """The quantised twin of ``m``, sharing its Parameter objects (no new random init)."""
        q = torch.nn.utils.skip_init(cls, *cls._args(m), device=m.weight.device,
                                     dtype=m.weight.dtype)
        q.weight, q.bias = m.weight, m.bias
        q.train(m.training)
        q.act_quant = ActQuant().to(m.weight.device)
        return q


class QuantLinear(_QuantLayer, nn.Linear):
    @staticmethod
    def _args(m: nn.Linear) -> tuple:
        return m.in_features, m.out_features, m.bias is not None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.linear(self.act_quant(x), quantize_weight(self.weight), self.bias)


class _QuantConv(_QuantLayer):
    @staticmethod
    def _args(m: nn.Module) -> tuple:
        return (m.in_channels, m.out_channels, m.kernel_size, m.stride, m.padding, m.dilation,
                m.groups, m.bias is not None, m.padding_mode)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self._conv_forward(self.act_quant(x), quantize_weight(self.weight), self.bias)


class QuantConv1d(_QuantConv, nn.Conv1d):
    pass


class QuantConv2d(_QuantConv, nn.Conv2d):
    pass


_SWAP: dict[type, type] = {nn.Linear: QuantLinear, nn.Conv1d: QuantConv1d, nn.Conv2d: QuantConv2d}


def quant_layers(model: nn.Module) -> list[tuple[str, nn.Module]]:
    """``(module path, layer)`` of every fake-quantised layer, in module order."""
    return [(n, m) for n, m in model.named_modules() if isinstance(m, _QuantLayer)]


def is_qat(model: nn.Module) -> bool:
    """Whether ``model`` has been through ``prepare_qat``."""
    return any(isinstance(m, _QuantLayer) for m in model.modules())


def prepare_qat(model: nn.Module) -> nn.Module:
    """Swap every Conv1d/Conv2d/Linear of ``model`` for its fake-quantised twin, in place.

    The model object (and its ``family``, ``spec``, ``feature_taps``) stays the same; calling it
    twice is a no-op. Returns ``model``.

    Raises:
        QuantizeError: The family is not one whose layers this module quantises.
    """
    family = getattr(model, "family", type(model).__name__)
    if family not in QAT_FAMILIES:
        raise QuantizeError(f"quantize: int8 is not supported for family {family} "
                          f"(supported: {', '.join(QAT_FAMILIES)})")
    if is_qat(model):
        return model
    for parent in list(model.modules()):
        for name, child in list(parent.named_children()):
            swap = _SWAP.get(type(child))
            if swap is not None:
                setattr(parent, name, swap.from_float(child))
    return model


def freeze_observers(model: nn.Module, frozen: bool = True) -> None:
    """Stop (or restart) updating the activation ranges: the last epochs train with fixed scales."""
    for m in model.modules():
        if isinstance(m, ActQuant):
            m.frozen.fill_(frozen)


def rounding_penalty(model: nn.Module) -> torch.Tensor:
    """``sum_l ||W_l - Q(W_l)||^2`` over the quantised weights (Polino et al. 2018, §11 of the
    article): pulls weights towards their int8 grid points. ``Q(W)`` is a fixed target (no
    gradient), else the straight-through estimator would cancel the gradient to zero."""
    layers = quant_layers(model)
    if not layers:
        return torch.zeros(())
    terms = [(m.weight - quantize_weight(m.weight).detach()).pow(2).sum() for _, m in layers]
    return torch.stack(terms).sum()
