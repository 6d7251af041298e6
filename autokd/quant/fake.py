"""Fake-quantised training (QAT): int8 weights and activations simulated in float.

Why this shape: a student that will ship as INT8 should learn with the rounding it will meet,
in the form an integer-only runtime executes (Jacob et al. 2018, "Quantization and Training of
Neural Networks for Efficient Integer-Arithmetic-Only Inference"). Each Conv1d/Conv2d/Linear is
swapped in place for a subclass that

- folds the BatchNorm that follows it into its weight and bias (``W * gamma / sqrt(var + eps)``,
  ``beta + (b - mean) * gamma / sqrt(var + eps)``) and fake-quantises the *folded* weight:
  symmetric per-output-channel int8, ``scale_c = max|W_c| / 127`` (zero point 0). While BN
  statistics still move, the layer runs the folded conv and rescales it back to batch
  statistics (the "approximate" form of torch.ao's ConvBn); once they are frozen it runs
  exactly the deployed conv, bias included;
- rounds its bias to int32 with scale ``s_in * s_w`` (what the integer kernel adds);
- applies the ReLU that follows it (fused), then quantises its output: asymmetric per-tensor
  uint8, range tracked by an exponential moving average while training and frozen
  (``freeze_observers``) for the last epochs. The model's last layer (the head) keeps float
  logits.

A layer whose input is already on the previous layer's grid (only max-pooling, dropout or
flatten in between) *follows* that quantiser instead of observing its own, so the exported
graph is DQ -> Conv -> Relu -> Q throughout and ONNX Runtime fuses each into QLinearConv /
QGemm. The global average pool quantises its output too (QLinearGlobalAveragePool).

Rounding uses torch's ``fake_quantize_*`` ops, whose backward is the straight-through estimator.
The subclasses share the float layers' Parameter and buffer objects and keep their names, so
optimisers, feature taps and state dicts see the same ``weight``/``bias``/BN entries; every
quantiser's state lives under a module named ``act_quant``.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch import nn

from autokd.errors import InitError
from autokd.quant.fold import FOLDABLE, FoldedBN, bn_batch_stats, bn_factor, share_bn

__all__ = [
    "ACT_QRANGE",
    "FREEZE_AT",
    "INT32_RANGE",
    "QAT_FAMILIES",
    "WEIGHT_QRANGE",
    "ActQuant",
    "OutQuant",
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

#: Families whose layers are all Conv1d/Conv2d/Linear + BatchNorm + activations + pools.
QAT_FAMILIES = ("cnn", "cnn1d", "mlp")
#: (qmin, qmax) of weights: int8 with a symmetric scale, so -128 is never produced.
WEIGHT_QRANGE = (-128, 127)
#: (qmin, qmax) of activations: uint8, ONNX Runtime's fast U8S8 path.
ACT_QRANGE = (0, 255)
#: (qmin, qmax) of biases: int32, scale ``s_in * s_w``.
INT32_RANGE = (-(2**31), 2**31 - 1)
_EPS = 1e-8
#: Fraction of the training schedule after which activation ranges and BN statistics freeze.
FREEZE_AT = 0.75


class QuantizeError(InitError):
    """The student's family is not one int8 QAT covers; a search records such a candidate
    infeasible before training (as it does a student that cannot start from its teacher)."""


def weight_scale(weight: torch.Tensor) -> torch.Tensor:
    """Per-output-channel scale ``max|W_c| / 127``, shape (C_out,); no gradient flows through."""
    amax = weight.detach().abs().flatten(1).amax(1)  # (C_out,)
    return (amax / 127.0).clamp_min(_EPS).float()


def quantize_weight(weight: torch.Tensor, scale: torch.Tensor | None = None) -> torch.Tensor:
    """``Q(W)``: the weight rounded to int8 per output channel and scaled back (STE backward)."""
    scale = weight_scale(weight) if scale is None else scale
    zero = torch.zeros(scale.shape, dtype=torch.int32, device=weight.device)
    return torch.fake_quantize_per_channel_affine(weight, scale, zero, 0, *WEIGHT_QRANGE)


class ActQuant(nn.Module):
    """Per-tensor uint8 fake quantisation of an activation with an observed range.

    Buffers (saved with the model): ``min_val``/``max_val`` (the tracked range), ``observed``
    (at least one batch seen) and ``frozen`` (range no longer updated). A quantiser that
    ``follow``\\ s another has the leader's scale and zero point (the exported Q/DQ pair, the
    bias grid) and observes nothing.
    """

    def __init__(self, momentum: float = 0.1) -> None:
        super().__init__()
        self.momentum = momentum
        self.register_buffer("min_val", torch.tensor(0.0))
        self.register_buffer("max_val", torch.tensor(0.0))
        self.register_buffer("observed", torch.tensor(False))
        self.register_buffer("frozen", torch.tensor(False))
        object.__setattr__(self, "leader", None)  # not a submodule: it lives elsewhere

    def follow(self, leader: ActQuant | None) -> None:
        object.__setattr__(self, "leader", leader)

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
        if self.leader is not None:
            return self.leader.qparams()
        lo, hi = self.min_val.clamp(max=0.0), self.max_val.clamp(min=0.0)
        qmin, qmax = ACT_QRANGE
        scale = ((hi - lo) / (qmax - qmin)).clamp_min(_EPS)
        zero = (qmin - torch.round(lo / scale)).clamp(qmin, qmax).to(torch.int32)
        return scale.reshape(1), zero.reshape(1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.leader is not None:
            # at inference x is already on the leader's grid (max-pooling and flatten keep it
            # there), so rounding is the identity; in training it would clip dropout's rescale
            return x
        if not bool(self.frozen) and (self.training or not bool(self.observed)):
            self.observe(x)
        scale, zero = self.qparams()
        return torch.fake_quantize_per_tensor_affine(x, scale, zero, *ACT_QRANGE)


class OutQuant(nn.Module):
    """A layer's output stage: the fused ReLU (if one followed the layer), then ``act_quant``."""

    def __init__(self, relu: bool) -> None:
        super().__init__()
        self.relu = relu
        self.act_quant = ActQuant()

    def forward(self, y: torch.Tensor) -> torch.Tensor:
        return self.act_quant(F.relu(y) if self.relu else y)


def _per_channel(v: torch.Tensor, dim: int) -> torch.Tensor:
    """(C,) -> (1, C, 1, ...) broadcastable against a (B, C, ...) tensor of ``dim`` dims."""
    return v.reshape((1, -1) + (1,) * (dim - 2))


class _QuantLayer:
    """Shared by the three layer types: ``act_quant`` on the input, the (folded) weight and bias
    rounded to the int8 / int32 grids, ``out`` (fused ReLU + output quantiser) or None."""

    act_quant: ActQuant
    out: OutQuant | None
    weight: nn.Parameter
    bias: nn.Parameter | None
    bn: nn.modules.batchnorm._BatchNorm | None
    bn_frozen: bool
    #: the layer's own op on (input, weight, bias): F.linear / F.conv1d / F.conv2d, set by
    #: each concrete layer (``QuantLinear``, ``_QuantConv``)
    _op: Callable[[torch.Tensor, torch.Tensor, torch.Tensor | None], torch.Tensor]

    @classmethod
    def from_float(cls, m: nn.Module) -> nn.Module:
        """The quantised twin of ``m``, sharing its Parameter objects (no new random init)."""
        q = torch.nn.utils.skip_init(cls, *cls._args(m), device=m.weight.device,
                                     dtype=m.weight.dtype)
        q.weight, q.bias = m.weight, m.bias
        q.train(m.training)
        q.act_quant = ActQuant().to(m.weight.device)
        q.out = None
        object.__setattr__(q, "bn", None)  # registered where it was, not here
        q.bn_frozen = False
        return q

    def folded(self) -> tuple[torch.Tensor, torch.Tensor | None]:
        """Weight and bias with the BatchNorm (running statistics) folded in; float."""
        bn = self.bn
        if bn is None:
            return self.weight, self.bias
        factor = bn_factor(self.bn)
        w = self.weight * factor.reshape((-1,) + (1,) * (self.weight.dim() - 1))
        b = self.bias if self.bias is not None else torch.zeros_like(bn.running_mean)
        beta = bn.bias if bn.bias is not None else torch.zeros_like(b)
        return w, beta + (b - bn.running_mean) * factor

    def bias_scale(self, w_scale: torch.Tensor) -> torch.Tensor:
        """``s_in * s_w`` per output channel: the int32 bias grid."""
        return self.act_quant.qparams()[0] * w_scale

    def _round_bias(self, b: torch.Tensor | None, w_scale: torch.Tensor) -> torch.Tensor | None:
        if b is None:
            return None
        s = self.bias_scale(w_scale)
        steps = torch.round(b / s).clamp(*INT32_RANGE)
        return b + (steps * s - b).detach()  # straight-through

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.act_quant(x)
        w, b = self.folded()
        w_scale = weight_scale(w)
        wq = quantize_weight(w, w_scale)
        if self.bn is not None and self.training and not self.bn_frozen:
            factor = _per_channel(bn_factor(self.bn), x.dim())
            y = self._op(x, wq, None) / factor  # the unfolded conv, then BN on batch stats
            if self.bias is not None:
                y = y + _per_channel(self.bias, y.dim())
            y = bn_batch_stats(self.bn, y)
        else:
            y = self._op(x, wq, self._round_bias(b, w_scale))
        return self.out(y) if self.out is not None else y


class QuantLinear(_QuantLayer, nn.Linear):
    @staticmethod
    def _args(m: nn.Linear) -> tuple:
        return m.in_features, m.out_features, m.bias is not None

    def _op(self, x: torch.Tensor, w: torch.Tensor, b: torch.Tensor | None) -> torch.Tensor:
        return F.linear(x, w, b)


class _QuantConv(_QuantLayer):
    @staticmethod
    def _args(m: nn.Module) -> tuple:
        return (m.in_channels, m.out_channels, m.kernel_size, m.stride, m.padding, m.dilation,
                m.groups, m.bias is not None, m.padding_mode)

    def _op(self, x: torch.Tensor, w: torch.Tensor, b: torch.Tensor | None) -> torch.Tensor:
        return self._conv_forward(x, w, b)


class QuantConv1d(_QuantConv, nn.Conv1d):
    pass


class QuantConv2d(_QuantConv, nn.Conv2d):
    pass


class _QuantPool:
    """A global average pool whose output is quantised (``act_quant``)."""

    act_quant: ActQuant

    @classmethod
    def from_float(cls, m: nn.Module) -> nn.Module:
        q = cls(m.output_size)
        q.act_quant = ActQuant()
        return q

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.act_quant(super().forward(x))


class QuantAdaptiveAvgPool1d(_QuantPool, nn.AdaptiveAvgPool1d):
    pass


class QuantAdaptiveAvgPool2d(_QuantPool, nn.AdaptiveAvgPool2d):
    pass


_SWAP: dict[type, type] = {nn.Linear: QuantLinear, nn.Conv1d: QuantConv1d, nn.Conv2d: QuantConv2d}
_POOLS: dict[type, type] = {nn.AdaptiveAvgPool1d: QuantAdaptiveAvgPool1d,
                            nn.AdaptiveAvgPool2d: QuantAdaptiveAvgPool2d}
#: Modules that keep a tensor on its quantisation grid (max of grid values is a grid value).
_GRID_KEEPING = (nn.MaxPool1d, nn.MaxPool2d, nn.Dropout, nn.Identity, nn.Flatten, nn.ReLU,
                 FoldedBN)


def quant_layers(model: nn.Module) -> list[tuple[str, nn.Module]]:
    """``(module path, layer)`` of every fake-quantised layer, in module order."""
    return [(n, m) for n, m in model.named_modules() if isinstance(m, _QuantLayer)]


def is_qat(model: nn.Module) -> bool:
    """Whether ``model`` has been through ``prepare_qat``."""
    return any(isinstance(m, _QuantLayer) for m in model.modules())


def _swap_children(parent: nn.Module) -> None:
    """Swap conv/linear (+ following BN, + following ReLU) and global pools of one container."""
    names = [n for n, _ in parent.named_children()]
    for i, name in enumerate(names):
        child = getattr(parent, name)
        if type(child) in _POOLS:
            setattr(parent, name, _POOLS[type(child)].from_float(child))
        if type(child) not in _SWAP:
            continue
        q = _SWAP[type(child)].from_float(child)
        setattr(parent, name, q)
        j = i + 1
        nxt = getattr(parent, names[j]) if j < len(names) else None
        if type(nxt) in FOLDABLE and nxt.num_features == q.weight.shape[0]:
            folded = share_bn(nxt)
            setattr(parent, names[j], folded)
            object.__setattr__(q, "bn", folded)
            j += 1
        nxt = getattr(parent, names[j]) if j < len(names) else None
        relu = type(nxt) is nn.ReLU
        if relu:
            setattr(parent, names[j], nn.Identity())
        q.out = OutQuant(relu).to(q.weight.device)


def _link(module: nn.Module, last: ActQuant | None) -> ActQuant | None:
    """Make each layer's input quantiser follow the upstream output quantiser when only
    grid-keeping modules sit between them (module order is forward order in QAT_FAMILIES)."""
    for child in module.children():
        if isinstance(child, _QuantLayer):
            child.act_quant.follow(last)
            last = child.out.act_quant if child.out is not None else None
        elif isinstance(child, _QuantPool):
            last = child.act_quant
        elif isinstance(child, _GRID_KEEPING):
            continue
        elif next(child.children(), None) is not None:
            last = _link(child, last)
        else:
            last = None
    return last


def prepare_qat(model: nn.Module) -> nn.Module:
    """Make ``model`` fake-quantised, in place: conv/linear layers with folded BN, fused ReLU and
    quantised outputs (the last layer, the head, keeps float logits), quantised global pools.

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
        _swap_children(parent)
    layers = quant_layers(model)
    head = layers[-1][1]
    if head.out is not None and not head.out.relu:  # logits stay float
        head.out = None
    _link(model, None)
    return model


def freeze_observers(model: nn.Module, frozen: bool = True) -> None:
    """Stop (or restart) updating the activation ranges and the folded BatchNorm statistics:
    the last epochs train exactly the model that is exported."""
    for m in model.modules():
        if isinstance(m, ActQuant):
            m.frozen.fill_(frozen)
        if isinstance(m, _QuantLayer):
            m.bn_frozen = frozen


def rounding_penalty(model: nn.Module) -> torch.Tensor:
    """``sum_l ||W_l - Q(W_l)||^2`` over the quantised (BN-folded) weights (Polino et al. 2018,
    §11 of the article): pulls weights towards their int8 grid points. ``Q(W)`` is a fixed
    target (no gradient), else the straight-through estimator would cancel the gradient."""
    layers = quant_layers(model)
    if not layers:
        return torch.zeros(())
    weights: list[torch.Tensor] = [m.folded()[0] for _, m in layers]
    terms = [(w - quantize_weight(w).detach()).pow(2).sum() for w in weights]
    return torch.stack(terms).sum()


