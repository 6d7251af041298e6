"""FLOPs of one forward at batch 1, counted by fvcore and cross-checked with torch.

FLOP convention (what ``count_flops`` and ``torch_flop_count`` both report):

* one FLOP is one multiply-add (MAC), at batch 1, as fvcore counts it;
* counted: the contraction ops, i.e. convolution (incl. grouped / transposed, 1-3 d), linear,
  addmm / mm, matmul (with broadcasting), bmm / baddbmm, einsum, tensordot and
  ``scaled_dot_product_attention`` (two matmuls, ``B*H*L*S*E + B*H*L*S*Ev``);
* attention therefore costs the same whichever path runs: fused ``F.scaled_dot_product_attention``
  or the explicit ``softmax(Q @ K^T / sqrt(d)) @ V`` (two ``matmul``s) both count
  ``QK^T`` and ``AV`` as ``B*H*L*L*d_h`` multiply-adds each; padded positions of token data
  are counted (the shapes are static, the work is done);
* not counted: bias additions, elementwise activations (ReLU, GELU, softmax, ...), residual
  adds, normalisation layers (batch / layer / group / instance norm), pooling (max, avg and
  adaptive avg), upsampling and embedding lookups (a gather, no arithmetic).

Why drop norms and pooling although fvcore counts batch-norm and adaptive-avg-pool by default:
``torch.utils.flop_counter`` has no formula for them, so keeping them would make the two
counters disagree on every CNN; they are memory-bound rather than compute-bound, batch norm
folds into the preceding convolution at export, and their real cost shows up in the measured
latency anyway. With this convention the two independent counters agree exactly, which is
what the tests check.

Elementwise work, counted apart (``elementwise_flops``, and ``flop_breakdown`` for both parts):
fvcore's own rule is one FLOP per element touched (``elementwise_flop_counter``), and it skips
activations, adds and multiplies altogether. Inverted-residual students spend a real share of
their work there (squeeze-and-excitation gates, hard-swish, residual adds), so the separate
count follows fvcore's per-element rule for every op these students use:

* activations (ReLU, hard-swish, hard-sigmoid, sigmoid, SiLU, GELU, tanh, ...): 1 per output
  element, however many instructions the formula takes;
* residual add and the SE scale multiply (``add`` / ``mul`` of two tensors): 1 per output element;
* batch norm at inference: 2 per element (scale and shift; fvcore's rule for an affine norm,
  1 without affine parameters);
* layer / group / instance norm: fvcore's own rule, 5 per element with affine parameters
  (mean, variance, normalise, scale, shift), 4 without;
* softmax: 1 per element; fused attention: its softmax (1 per score, ``B*H*L*S``) plus 1 per
  score for an additive mask, exactly what the explicit path's ``softmax`` and ``add`` count;
* pooling: 1 per element read, i.e. output elements x window (max / avg), and the input size
  for adaptive average pooling to one value (the global pool);
* bias additions, dropout at inference, reshapes and copies: 0.

``count_flops`` (the ``flops`` every search objective uses) keeps the contraction-only
convention above, so results stay comparable with torch's counter and with earlier studies.
"""

from __future__ import annotations

import logging
import math
import re
import warnings
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn
from torch.utils.flop_counter import FlopCounterMode

from autokd.cost._model import eval_mode, example_input


def _fvcore() -> Any:
    """``fvcore.nn``, imported on first use: latency and size measurement (and so a GPU
    machine's benchmark) must not need fvcore installed."""
    with warnings.catch_warnings():
        # fvcore.nn scripts its focal losses at import time, which torch now deprecates; that
        # is fvcore's business and would otherwise show up in every test run.
        warnings.simplefilter("ignore", DeprecationWarning)
        import fvcore.nn
        import fvcore.nn.jit_handles
    return fvcore.nn

__all__ = [
    "ELEMENTWISE_OPS",
    "UNCOUNTED_OPS",
    "FlopBreakdown",
    "count_flops",
    "elementwise_flops",
    "flop_breakdown",
    "torch_flop_count",
]

logger = logging.getLogger("autokd.cost")

# fvcore counts these by default; torch.utils.flop_counter does not (see module docstring).
UNCOUNTED_OPS: tuple[str, ...] = (
    "aten::batch_norm",
    "aten::group_norm",
    "aten::layer_norm",
    "aten::instance_norm",
    "aten::adaptive_avg_pool2d",
    "aten::upsample_nearest2d",
    "aten::upsample_bilinear2d",
    "aten::grid_sampler",
)

# An unsupported op whose name matches this is probably a contraction we would undercount.
_COSTLY_OP = re.compile(r"conv|mm|mv|matmul|dot|einsum|attention|linear|bilinear")


def _shape(value: Any) -> list[int]:
    shape = _fvcore().jit_handles.get_shape(value)
    if shape is None:
        raise ValueError("operator input has no complete shape in the trace")
    return list(shape)


def _sdpa_handle(inputs: list[Any], outputs: list[Any]) -> int:
    """``softmax(Q K^T) V``: ``B*H*L*S*E`` for the scores plus ``B*H*L*S*Ev`` for the output."""
    q, k, v = (_shape(t) for t in inputs[:3])  # (B, H, L, E), (B, Hkv, S, E), (B, Hkv, S, Ev)
    batch_heads = math.prod(q[:-2])  # query heads: grouped K/V are broadcast to them
    return batch_heads * q[-2] * k[-2] * (q[-1] + v[-1])


def _matmul_macs(a: list[int], b: list[int]) -> int:
    """MACs of ``torch.matmul`` with numpy broadcasting and 1-d operands."""
    a = [1, *a] if len(a) == 1 else a
    b = [*b, 1] if len(b) == 1 else b
    batch = torch.broadcast_shapes(tuple(a[:-2]), tuple(b[:-2]))
    return math.prod(batch) * a[-2] * a[-1] * b[-1]


def _matmul_handle(inputs: list[Any], outputs: list[Any]) -> int:
    """Replaces fvcore's, which ignores the batch dims of the second operand."""
    return _matmul_macs(_shape(inputs[0]), _shape(inputs[1]))


def _baddbmm_handle(inputs: list[Any], outputs: list[Any]) -> int:
    """``beta*C + A@B`` with A (B, N, K), B (B, K, M); fvcore has no handle for it."""
    a, b = _shape(inputs[1]), _shape(inputs[2])
    return a[0] * a[1] * a[2] * b[2]


def _tensordot_handle(inputs: list[Any], outputs: list[Any]) -> int:
    """``out = free(a) x free(b)`` and ``|a|*|b| = |out| * c**2`` give the contracted size c.

    Derived from shapes alone because the traced ``dims`` lists are not always constants.
    """
    a, b, out = (math.prod(_shape(v)) for v in (inputs[0], inputs[1], outputs[0]))
    return out * math.isqrt(a * b // out) if out else 0


def _not_counted(inputs: list[Any], outputs: list[Any]) -> int:
    """Zero, not ``None``: fvcore's ``set_op_handle(op, None)`` keeps an existing handle."""
    return 0


def _flop_handles() -> dict[str, Callable[[list[Any], list[Any]], int]]:
    handles = dict.fromkeys(UNCOUNTED_OPS, _not_counted)
    handles["aten::scaled_dot_product_attention"] = _sdpa_handle
    handles["aten::matmul"] = _matmul_handle
    handles["aten::baddbmm"] = _baddbmm_handle
    handles["aten::tensordot"] = _tensordot_handle
    return handles


def _warn_uncounted(unsupported: Iterable[str]) -> None:
    """Elementwise ops are skipped on purpose; a skipped contraction is an undercount."""
    costly = sorted(op for op in unsupported if _COSTLY_OP.search(op))
    if costly:
        logger.warning("FLOPs undercounted: no handle for %s", ", ".join(costly))


def count_flops(model: nn.Module, input_shape: tuple[int, ...]) -> int:
    """Multiply-adds of one forward at batch 1, traced by fvcore (conventions: module doc).

    Args:
        model: The network; put in eval mode for the trace (so batch norm uses running stats
            and dropout is off) and restored to its previous modes afterwards.
        input_shape: One sample's shape, without the batch dimension.

    Returns:
        The FLOP count, one FLOP per multiply-add.
    """
    x = example_input(model, input_shape, batch_size=1)
    with eval_mode(model):
        analysis = _fvcore().FlopCountAnalysis(model, x)
        analysis.unsupported_ops_warnings(False).uncalled_modules_warnings(False)
        analysis.set_op_handle(**_flop_handles())
        total = analysis.total()
        _warn_uncounted(analysis.unsupported_ops())
    return int(total)


# -- elementwise work (conventions: module docstring) ---------------------------------------
def _per_output(inputs: list[Any], outputs: list[Any]) -> int:
    return math.prod(_shape(outputs[0]))


def _batch_norm_eval(inputs: list[Any], outputs: list[Any]) -> int:
    affine = _fvcore().jit_handles.get_shape(inputs[1]) is not None
    return math.prod(_shape(inputs[0])) * (2 if affine else 1)


def _adaptive_pool(inputs: list[Any], outputs: list[Any]) -> int:
    return math.prod(_shape(inputs[0]))


def _sdpa_elementwise(inputs: list[Any], outputs: list[Any]) -> int:
    """The softmax over ``B*H*L*S`` scores, and the mask added to them when there is one."""
    q, k = _shape(inputs[0]), _shape(inputs[1])  # (B, H, L, E), (B, Hkv, S, E)
    scores = math.prod(q[:-1]) * k[-2]
    has_mask = len(inputs) > 3 and _fvcore().jit_handles.get_shape(inputs[3]) is not None
    return scores * (2 if has_mask else 1)


def _window_pool(inputs: list[Any], outputs: list[Any]) -> int:
    kernel = inputs[1].toIValue()  # the traced kernel_size list, else its ListConstruct
    if kernel is None:
        kernel = [v.toIValue() for v in inputs[1].node().inputs()]
    return math.prod(_shape(outputs[0])) * math.prod(kernel)


_ACTIVATIONS = ("relu", "relu_", "hardswish", "hardswish_", "hardsigmoid", "hardsigmoid_",
                "sigmoid", "silu", "gelu", "tanh", "leaky_relu", "hardtanh", "elu", "clamp")
ELEMENTWISE_OPS: dict[str, Callable[[list[Any], list[Any]], int]] = {
    **{f"aten::{op}": _per_output for op in (*_ACTIVATIONS, "add", "add_", "mul", "mul_",
                                             "softmax")},
    "aten::batch_norm": _batch_norm_eval,
    "aten::scaled_dot_product_attention": _sdpa_elementwise,
    "aten::adaptive_avg_pool1d": _adaptive_pool,
    "aten::adaptive_avg_pool2d": _adaptive_pool,
    **{f"aten::{k}_pool{d}d": _window_pool for k in ("max", "avg") for d in (1, 2)},
}
# the contractions that ``count_flops`` reports; zeroed when only elementwise work is wanted
_CONTRACTIONS = ("aten::_convolution", "aten::addmm", "aten::linear", "aten::matmul",
                 "aten::mm", "aten::bmm", "aten::baddbmm", "aten::einsum", "aten::tensordot",
                 "aten::scaled_dot_product_attention")


@dataclass(frozen=True)
class FlopBreakdown:
    """Multiply-adds of the contractions and the elementwise FLOPs, per the module docstring."""

    contraction: int
    elementwise: int

    @property
    def total(self) -> int:
        return self.contraction + self.elementwise


def elementwise_flops(model: nn.Module, input_shape: tuple[int, ...]) -> int:
    """Elementwise FLOPs of one forward at batch 1 (activations, adds, norms, pooling)."""
    x = example_input(model, input_shape, batch_size=1)
    with eval_mode(model):
        analysis = _fvcore().FlopCountAnalysis(model, x)
        analysis.unsupported_ops_warnings(False).uncalled_modules_warnings(False)
        contractions = dict.fromkeys(_CONTRACTIONS, _not_counted)
        analysis.set_op_handle(**{**contractions, **ELEMENTWISE_OPS})
        return int(analysis.total())


def flop_breakdown(model: nn.Module, input_shape: tuple[int, ...]) -> FlopBreakdown:
    """Both parts: ``count_flops`` (contractions) and ``elementwise_flops``."""
    return FlopBreakdown(count_flops(model, input_shape), elementwise_flops(model, input_shape))


def _cpu_sdpa_flops(
    query_shape: tuple[int, ...],
    key_shape: tuple[int, ...],
    value_shape: tuple[int, ...],
    *args: Any,
    out_shape: Any = None,
    **kwargs: Any,
) -> int:
    """torch's sdpa formula (2 FLOPs per MAC) for the CPU kernel torch has no entry for."""
    batch_heads, q_len, k_len = math.prod(query_shape[:-2]), query_shape[-2], key_shape[-2]
    return 2 * batch_heads * q_len * k_len * (query_shape[-1] + value_shape[-1])


def _torch_custom_mapping() -> dict[Any, Callable[..., int]]:
    op = getattr(torch.ops.aten, "_scaled_dot_product_flash_attention_for_cpu", None)
    return {} if op is None else {op: _cpu_sdpa_flops}


def torch_flop_count(model: nn.Module, input_shape: tuple[int, ...]) -> int:
    """Independent cross-check of ``count_flops`` with ``torch.utils.flop_counter``.

    It counts at dispatch level rather than by tracing, so it catches handles that fvcore gets
    wrong. Its total counts 2 FLOPs per multiply-add, hence the ``// 2``. On CPU, torch has no
    formula for its own ``_scaled_dot_product_flash_attention_for_cpu`` kernel; we add torch's
    sdpa formula for it. Runs with autograd enabled on purpose: under ``no_grad`` an
    ``nn.MultiheadAttention`` takes a fused fast path the counter cannot see.

    Args:
        model: The network; eval mode during the count, previous modes restored.
        input_shape: One sample's shape, without the batch dimension.

    Returns:
        Multiply-adds of one forward at batch 1.
    """
    x = example_input(model, input_shape, batch_size=1)
    counter = FlopCounterMode(display=False, custom_mapping=_torch_custom_mapping())
    with eval_mode(model), counter:
        model(x)
    return counter.get_total_flops() // 2
