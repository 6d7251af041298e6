"""What a student costs: parameters, FLOPs, serialized size, latency and peak memory.

Why one module: every controller scores candidates by the same numbers, and a ratio such as
``FLOPs_S / FLOPs_T`` (DESIGN.md §2) is only meaningful when teacher and student were measured
by the same code under the same conventions.

FLOP convention (what ``count_flops`` and ``torch_flop_count`` both report):

* one FLOP is one multiply-add (MAC), at batch 1, as fvcore counts it;
* counted: the contraction ops, i.e. convolution (incl. grouped / transposed, 1-3 d), linear,
  addmm / mm, matmul (with broadcasting), bmm / baddbmm, einsum, tensordot and
  ``scaled_dot_product_attention`` (two matmuls, ``B*H*L*S*E + B*H*L*S*Ev``);
* not counted: bias additions, elementwise activations (ReLU, GELU, softmax, ...), residual
  adds, normalisation layers (batch / layer / group / instance norm), pooling (max, avg and
  adaptive avg) and upsampling.

Why drop norms and pooling although fvcore counts batch-norm and adaptive-avg-pool by default:
``torch.utils.flop_counter`` has no formula for them, so keeping them would make the two
counters disagree on every CNN; they are memory-bound rather than compute-bound, batch norm
folds into the preceding convolution at export, and their real cost shows up in the measured
latency anyway. With this convention the two independent counters agree exactly, which is
what the tests check.

Latency convention: median milliseconds per forward over ``repeats`` timed blocks, each block
long enough (``min_block_s``) that timer resolution does not matter; the coefficient of
variation across blocks says how much to trust it. The glibc allocator is pinned first so the
numbers do not depend on what the process allocated before.
"""

from __future__ import annotations

import contextlib
import copy
import ctypes
import functools
import io
import itertools
import logging
import math
import operator
import platform
import re
import statistics
import time
import warnings
from collections.abc import Callable, Iterable, Iterator
from dataclasses import asdict, dataclass
from typing import Any

import torch
from torch import nn
from torch.utils.flop_counter import FlopCounterMode

from autokd.config import CostConfig
from autokd.errors import ConfigError

with warnings.catch_warnings():
    # fvcore.nn scripts its focal losses at import time, which torch now deprecates; that is
    # fvcore's business and would otherwise show up in every test run.
    warnings.simplefilter("ignore", DeprecationWarning)
    from fvcore.nn import FlopCountAnalysis
    from fvcore.nn.jit_handles import get_shape

__all__ = [
    "UNCOUNTED_OPS",
    "CostReport",
    "count_flops",
    "count_params",
    "fix_allocator",
    "measure_cost",
    "measure_latency",
    "measure_peak_memory",
    "serialized_bytes",
    "torch_flop_count",
]

logger = logging.getLogger(__name__)

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

_M_TRIM_THRESHOLD = -1  # glibc <malloc.h>
_M_MMAP_THRESHOLD = -3
_MMAP_THRESHOLD_BYTES = 32 * 1024**2
_TRIM_THRESHOLD_BYTES = 256 * 1024**2
_MAX_BLOCK_ITERS = 100_000


@dataclass
class CostReport:
    """Every cost of one model, as stored on a trial and compared across candidates.

    Attributes:
        params: Number of parameters (buffers excluded), see ``count_params``.
        flops: Multiply-adds of one forward at batch 1, see the module docstring.
        bytes: Size of the serialized ``state_dict`` (what a checkpoint weighs).
        latency_ms: Median milliseconds per forward at batch 1, or None when not measured.
        latency_ms_batch: Median milliseconds per forward at ``latency_batch_size``.
        latency_batch_size: The batch size of ``latency_ms_batch``.
        latency_cv: Coefficient of variation across the timed blocks at batch 1.
        peak_memory_bytes: Peak memory of one forward at batch 1, see ``measure_peak_memory``.
    """

    params: int
    flops: int
    bytes: int
    latency_ms: float | None
    latency_ms_batch: float | None
    latency_batch_size: int
    latency_cv: float | None
    peak_memory_bytes: int | None

    def to_dict(self) -> dict[str, float | int | None]:
        """Flat dict, ready for Optuna user attributes or a CSV row."""
        return asdict(self)


# --------------------------------------------------------------------------- small helpers


def _check_shape(input_shape: tuple[int, ...]) -> tuple[int, ...]:
    """Reject shapes that would only fail later inside a trace with an obscure message."""
    try:
        shape = tuple(operator.index(d) for d in input_shape)  # accepts numpy ints, Size
    except TypeError:
        shape = ()
    if not shape or min(shape) <= 0:
        raise ConfigError(
            f"input_shape must be a non-empty tuple of positive ints, got {input_shape!r}"
        )
    return shape


def _tensors(model: nn.Module) -> Iterator[torch.Tensor]:
    return itertools.chain(model.parameters(), model.buffers())


def _example_input(
    model: nn.Module,
    input_shape: tuple[int, ...],
    batch_size: int,
    device: torch.device | None = None,
) -> torch.Tensor:
    """A fixed random input on the model's device and in its floating dtype."""
    ref = next(_tensors(model), None)
    dtype = ref.dtype if ref is not None and ref.is_floating_point() else torch.float32
    if device is None:
        device = ref.device if ref is not None else torch.device("cpu")
    gen = torch.Generator().manual_seed(0)
    x = torch.randn((batch_size, *_check_shape(input_shape)), generator=gen, dtype=dtype)
    return x.to(device)


@contextlib.contextmanager
def _eval_mode(model: nn.Module) -> Iterator[nn.Module]:
    """Eval mode for the block, then every submodule's own flag back (they may differ)."""
    modes = [(m, m.training) for m in model.modules()]
    model.eval()
    try:
        yield model
    finally:
        for module, training in modes:
            module.training = training


@contextlib.contextmanager
def _torch_threads(threads: int | None) -> Iterator[None]:
    """Pin intra-op threads for the block; None leaves the current setting alone."""
    previous = torch.get_num_threads()
    if threads is not None:
        torch.set_num_threads(threads)
    try:
        yield
    finally:
        if torch.get_num_threads() != previous:
            torch.set_num_threads(previous)


def _resolve_device(device: str | torch.device) -> torch.device:
    if str(device) == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    dev = torch.device(device)
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise ConfigError("cost device 'cuda' requested but CUDA is not available")
    return dev


def _on_device(model: nn.Module, device: torch.device) -> nn.Module:
    """The model itself if it already lives on ``device``, else a moved copy (never mutate)."""
    if all(t.device.type == device.type for t in _tensors(model)):
        return model
    logger.debug("measuring a copy of the model moved to %s", device)
    return copy.deepcopy(model).to(device)


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


# --------------------------------------------------------------------------- size


def count_params(model: nn.Module) -> int:
    """Number of parameters, frozen ones included, buffers (BN running stats) excluded.

    Why frozen ones count: they ship with the student. Why buffers do not: they are not
    learned weights, and ``serialized_bytes`` already accounts for them. Shared parameters are
    counted once (``nn.Module.parameters`` de-duplicates).
    """
    return sum(p.numel() for p in model.parameters())


def serialized_bytes(model: nn.Module) -> int:
    """Bytes of ``torch.save(model.state_dict())``: what a checkpoint of the student weighs.

    Includes buffers and pickle overhead, so it is always a little more than 4 bytes per
    float32 parameter.
    """
    buffer = io.BytesIO()
    torch.save(model.state_dict(), buffer)
    return buffer.getbuffer().nbytes


# --------------------------------------------------------------------------- FLOPs (fvcore)


def _shape(value: Any) -> list[int]:
    shape = get_shape(value)
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
    x = _example_input(model, input_shape, batch_size=1)
    with _eval_mode(model):
        analysis = FlopCountAnalysis(model, x)
        analysis.unsupported_ops_warnings(False).uncalled_modules_warnings(False)
        analysis.set_op_handle(**_flop_handles())
        total = analysis.total()
        _warn_uncounted(analysis.unsupported_ops())
    return int(total)


# --------------------------------------------------------------------------- FLOPs (torch)


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
    x = _example_input(model, input_shape, batch_size=1)
    counter = FlopCounterMode(display=False, custom_mapping=_torch_custom_mapping())
    with _eval_mode(model), counter:
        model(x)
    return counter.get_total_flops() // 2


# --------------------------------------------------------------------------- allocator


def _glibc() -> ctypes.CDLL | None:
    """The process's C library if it is glibc (has ``gnu_get_libc_version``), else None."""
    if platform.system() != "Linux":
        return None
    try:
        libc = ctypes.CDLL(None)
    except OSError:
        return None
    return libc if hasattr(libc, "gnu_get_libc_version") and hasattr(libc, "mallopt") else None


@functools.cache
def fix_allocator() -> bool:
    """Pin glibc's malloc thresholds once per process so latency does not depend on history.

    Why: glibc raises its mmap threshold dynamically after large blocks are freed, so the same
    forward pass can be served by ``mmap`` (page faults on every call) or from the heap
    depending on what the process allocated before; trimming adds a second such effect. Fixing
    ``M_MMAP_THRESHOLD`` (32 MiB) and ``M_TRIM_THRESHOLD`` (256 MiB) turns both off.

    Returns:
        True when the thresholds are set, False when the C library is not glibc (or refused).
    """
    libc = _glibc()
    if libc is None:
        logger.debug("not glibc; malloc thresholds left alone")
        return False
    ok_mmap = libc.mallopt(_M_MMAP_THRESHOLD, _MMAP_THRESHOLD_BYTES) == 1
    ok_trim = libc.mallopt(_M_TRIM_THRESHOLD, _TRIM_THRESHOLD_BYTES) == 1
    if not (ok_mmap and ok_trim):
        logger.warning("mallopt refused to pin malloc thresholds; latency may drift")
    return ok_mmap and ok_trim


# --------------------------------------------------------------------------- latency


def _check_latency_args(batch_size: int, warmup: int, repeats: int, min_block_s: float) -> None:
    if not (isinstance(batch_size, int) and batch_size >= 1):
        raise ConfigError(f"latency batch_size must be an integer >= 1, got {batch_size!r}")
    if not (isinstance(warmup, int) and warmup >= 0):
        raise ConfigError(f"latency warmup must be an integer >= 0, got {warmup!r}")
    if not (isinstance(repeats, int) and repeats >= 1):
        raise ConfigError(f"latency repeats must be an integer >= 1, got {repeats!r}")
    if not (math.isfinite(min_block_s) and min_block_s > 0):
        raise ConfigError(f"latency min_block_s must be > 0, got {min_block_s!r}")


def _time_block(model: nn.Module, x: torch.Tensor, iters: int, device: torch.device) -> float:
    """Seconds per forward, averaged over ``iters`` back-to-back calls."""
    _sync(device)
    start = time.perf_counter()
    for _ in range(iters):
        model(x)
    _sync(device)
    return (time.perf_counter() - start) / iters


def _block_iters(
    model: nn.Module, x: torch.Tensor, warmup: int, min_block_s: float, device: torch.device
) -> int:
    """Warm up (at least once) and size a block so it lasts at least ``min_block_s``."""
    fastest = min(_time_block(model, x, 1, device) for _ in range(max(warmup, 1)))
    return max(1, min(_MAX_BLOCK_ITERS, math.ceil(min_block_s / max(fastest, 1e-9))))


def measure_latency(
    model: nn.Module,
    input_shape: tuple[int, ...],
    batch_size: int = 1,
    *,
    warmup: int = 5,
    repeats: int = 7,
    threads: int | None = 1,
    device: str | torch.device = "cpu",
    min_block_s: float = 0.02,
) -> tuple[float, float]:
    """Median wall time of one forward, measured so repeated calls agree.

    Args:
        model: The network; eval mode under ``torch.inference_mode`` while timed, previous
            modes restored. Measured on a copy if it does not live on ``device``.
        input_shape: One sample's shape, without the batch dimension.
        batch_size: Samples per forward.
        warmup: Untimed forwards first (at least one is always run, to size the blocks).
        repeats: Timed blocks; the median is reported.
        threads: torch intra-op threads while timing (previous value restored); None keeps it.
        device: ``"cpu"``, ``"cuda"`` or ``"auto"``.
        min_block_s: Each block repeats the forward until it lasts at least this long.

    Returns:
        ``(median milliseconds per forward, coefficient of variation across blocks)``.
    """
    _check_latency_args(batch_size, warmup, repeats, min_block_s)
    fix_allocator()
    dev = _resolve_device(device)
    net = _on_device(model, dev)
    x = _example_input(net, input_shape, batch_size, dev)
    with _torch_threads(threads), _eval_mode(net), torch.inference_mode():
        iters = _block_iters(net, x, warmup, min_block_s, dev)
        blocks = [_time_block(net, x, iters, dev) for _ in range(repeats)]
    mean = statistics.fmean(blocks)
    cv = statistics.pstdev(blocks) / mean if mean > 0 else 0.0
    return statistics.median(blocks) * 1e3, cv


# --------------------------------------------------------------------------- peak memory


def _storage_key(t: torch.Tensor) -> tuple[int, int] | None:
    try:
        storage = t.untyped_storage()
        return storage.data_ptr(), storage.nbytes()
    except (RuntimeError, NotImplementedError):  # sparse / meta tensors have no storage
        return None


def _distinct_bytes(tensors: Iterable[torch.Tensor]) -> int:
    """Bytes of the distinct storages behind ``tensors`` (views share one)."""
    storages = {key for key in map(_storage_key, tensors) if key is not None}
    return sum(nbytes for _, nbytes in storages)


def _flat_tensors(obj: Any) -> Iterator[torch.Tensor]:
    if isinstance(obj, torch.Tensor):
        yield obj
    elif isinstance(obj, (list, tuple)):
        for item in obj:
            yield from _flat_tensors(item)
    elif isinstance(obj, dict):
        for item in obj.values():
            yield from _flat_tensors(item)


def _cpu_peak_estimate(model: nn.Module, x: torch.Tensor) -> int:
    """Bytes of params + buffers + input + every distinct module output of one forward.

    Outputs are de-duplicated by storage, so views, in-place ops and a container returning
    its last child's output add nothing; the tensors are kept alive until the end so freed
    addresses cannot be reused and hide an allocation.
    """
    kept: list[torch.Tensor] = [x, *_tensors(model)]

    def hook(_module: nn.Module, _inputs: Any, output: Any) -> None:
        kept.extend(_flat_tensors(output))

    handles = [m.register_forward_hook(hook) for m in model.modules()]
    try:
        model(x)
    finally:
        for handle in handles:
            handle.remove()
    return _distinct_bytes(kept)


def _cuda_peak(model: nn.Module, x: torch.Tensor, device: torch.device) -> int:
    """Forward's CUDA peak above what was allocated before it, plus the model's own tensors.

    Subtracting the baseline keeps tensors the process holds for other reasons (a teacher,
    cached data) out of the student's number.
    """
    _sync(device)
    torch.cuda.reset_peak_memory_stats(device)
    before = torch.cuda.memory_allocated(device)
    model(x)
    _sync(device)
    peak = torch.cuda.max_memory_allocated(device)
    return peak - before + _distinct_bytes(_tensors(model))


def measure_peak_memory(
    model: nn.Module, input_shape: tuple[int, ...], device: str | torch.device = "cpu"
) -> int:
    """Peak memory of one eval forward at batch 1, in bytes.

    On CUDA it is measured (``torch.cuda.max_memory_allocated``, see ``_cuda_peak``). On CPU
    there is no allocator counter, so it is an estimate from forward hooks: parameters,
    buffers, the input and every distinct module output, all assumed alive at once. That is
    what an executor without buffer reuse holds, so it is an upper bound for module-level
    activations; intermediates created inside a module's ``forward`` are not seen.
    """
    dev = _resolve_device(device)
    net = _on_device(model, dev)
    x = _example_input(net, input_shape, 1, dev)
    with _eval_mode(net), torch.inference_mode():
        if dev.type == "cuda":
            return _cuda_peak(net, x, dev)
        return _cpu_peak_estimate(net, x)


# --------------------------------------------------------------------------- all together


def _add_latency(
    report: CostReport, model: nn.Module, input_shape: tuple[int, ...], cfg: CostConfig
) -> None:
    def timed(batch_size: int) -> tuple[float, float]:
        return measure_latency(
            model,
            input_shape,
            batch_size,
            warmup=cfg.warmup,
            repeats=cfg.repeats,
            threads=cfg.threads,
            device=cfg.device,
            min_block_s=cfg.min_block_s,
        )

    report.latency_ms, report.latency_cv = timed(1)
    # batch 1 is already measured; timing it twice would only add noise and time
    report.latency_ms_batch = (
        report.latency_ms if cfg.batch_size == 1 else timed(cfg.batch_size)[0]
    )


def measure_cost(
    model: nn.Module,
    input_shape: tuple[int, ...],
    cfg: CostConfig | None = None,
    *,
    latency: bool | None = None,
) -> CostReport:
    """Every cost of ``model`` in one report.

    Args:
        model: The network (its train/eval modes are left as they were).
        input_shape: One sample's shape, without the batch dimension.
        cfg: Measurement settings; defaults to ``CostConfig()``.
        latency: Overrides ``cfg.latency``; when false the latency fields stay None, which
            keeps tests and FLOP-only searches fast.

    Returns:
        The filled ``CostReport``.
    """
    cfg = cfg or CostConfig()
    shape = _check_shape(input_shape)
    report = CostReport(
        params=count_params(model),
        flops=count_flops(model, shape),
        bytes=serialized_bytes(model),
        latency_ms=None,
        latency_ms_batch=None,
        latency_batch_size=cfg.batch_size,
        latency_cv=None,
        peak_memory_bytes=measure_peak_memory(model, shape, cfg.device),
    )
    if cfg.latency if latency is None else latency:
        _add_latency(report, model, shape, cfg)
    return report
