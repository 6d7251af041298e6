"""NNI 3.0's own DARTS on autokd's conv space, timed to its first success like every method.

Why a module: NNI (and the pytorch-lightning its one-shot strategies run on) is an optional
extra, and expressing our space in NNI's model-space API takes some care; the benchmark only
calls ``available()`` and ``run()``.

The space is the one ``--strategy darts`` relaxes for the dataset's bundled space (``cnn`` on
digits, ``cnn1d`` on MNIST-1D): the same decisions, options and shared labels, as NNI mutables.

* per-stage widths: ``MutableConv2d`` / ``MutableBatchNorm2d`` with ``nni.choice`` channel
  counts (NNI's DARTS masks channels FBNetV2-style, like our supernet); signals run as
  ``(C, 1, L)`` images with ``(1, k)`` kernels, since NNI has no mixed 1-D convolution;
* kernel, activation, pool and batch norm: ``LayerChoice`` with one label shared by every stage
  (one convolution per kernel size, as our supernet keeps one weight per kernel; NNI's mixed
  convolution cannot mix the non-square ``(1, k)`` kernels of signals); the
  ``stride`` pool is a stride-1 convolution subsampled 2x, which gives the same outputs as the
  stride-2 convolution (NNI's differentiable convolution cannot mix strides); on an odd length
  the candidates are averaged to the floor size, as our supernet's ``fit_spatial`` does;
* depth: an ``InputChoice`` over one linear head per candidate depth (NNI's ``Repeat`` sums its
  prefixes' outputs, which differ in shape here, so each prefix is mapped to logits first).

It is trained by ``nni.nas.strategy.DARTS`` (first order, softmax) with NNI's ``Classification``
evaluator (cross-entropy) under NNI's FLOPs penalty: ``FlopsProfiler`` of the space and
``ExpectationProfilerPenalty`` with the target as baseline, ``nonlinear='positive'``. Every knob
both DARTS have is set alike (epochs, batch size, weight and architecture learning rates,
weight-only warm-up). The exported architecture (NNI's argmax) is retrained by autokd's
trainer with the recipe our DARTS runs use (the space's midpoint, ``kd="fixed"``). A competent
user's loop: a run whose student breaks the FLOPs target is rerun with 4x the penalty scale; one
that fits but misses the accuracy threshold is rerun with the next seed.

NNI's profiler counts every stage whatever the depth (the relaxed network runs all of them, and
``InputChoice`` costs nothing to it), so the penalty treats a shallow student as deep: a
conservative expected cost. Lightning writes nothing (no logger, no checkpoints, root in a
temporary folder) and no ``NasExperiment`` is created, so nothing lands in ``~/nni-experiments``.
"""

from __future__ import annotations

import logging
import tempfile
import time
import warnings
from typing import Any

import torch
from _first_success import EPOCHS, Rule, Stopwatch
from torch import nn

from autokd.config import CostConfig, DataConfig, TrainConfig
from autokd.data import DataSplits, load_data
from autokd.models.supernet.stage import fit_spatial
from autokd.nas import DartsOptions, midpoint, space_decisions
from autokd.pipeline import run_distillation
from autokd.search import default_space_name
from autokd.space import SearchSpace, load_space
from autokd.teachers import load_teacher

__all__ = ["available", "build_space", "run"]

logger = logging.getLogger(__name__)
_PENALTY_GROWTH = 4.0


def available() -> str | None:
    """None when NNI's DARTS can run here, else why not (exception type and message)."""
    try:
        _quiet_imports()
    except Exception as exc:  # noqa: BLE001 - ImportError, or NNI failing on this torch
        return f"{type(exc).__name__}: {exc}"[:300]
    return None


def _quiet_imports() -> None:
    with warnings.catch_warnings():  # NNI warns about torch classes it does not know
        warnings.simplefilter("ignore")
        import nni.nas.strategy  # noqa: F401
        import pytorch_lightning  # noqa: F401
        from nni.nas.evaluator.pytorch import Classification  # noqa: F401
    for name in ("nni", "pytorch_lightning", "lightning.pytorch", "lightning_fabric"):
        logging.getLogger(name).setLevel(logging.ERROR)


# --------------------------------------------------------------------------- the space


class _Subsample(nn.Module):
    """Every other position: a stride-1 'same' convolution subsampled is the stride-2 one."""

    def __init__(self, dims: int) -> None:
        super().__init__()
        self.dims = dims

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x[..., ::2] if self.dims == 1 else x[..., ::2, ::2]


class _AsImage(nn.Module):
    """A signal (B, C, L) as a one-row image (B, C, 1, L): NNI mixes only 2-D convolutions."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x.unsqueeze(2)


class _FitTo(nn.Module):
    """Average a candidate's map to the stage's (floor) size, as ``fit_spatial`` does."""

    def __init__(self, inner: nn.Module, size: tuple[int, int]) -> None:
        super().__init__()
        self.inner, self.size = inner, size

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return fit_spatial(self.inner(x), self.size)


def build_space(space: SearchSpace, input_shape: tuple[int, ...], num_classes: int) -> Any:
    """Our DARTS decisions for ``space`` as an NNI ``ModelSpace`` (see the module docstring)."""
    import nni
    from nni.nas.nn.pytorch import (
        InputChoice,
        LayerChoice,
        ModelSpace,
        MutableBatchNorm2d,
        MutableConv2d,
        MutableLinear,
    )

    decisions, fixed = space_decisions(space)
    one_d = len(input_shape) == 2
    options = _options(decisions, fixed)

    def choice(label: str) -> Any:
        values = options[label]
        return values[0] if len(values) == 1 else nni.choice(label, values)

    pool_k = (1, 2) if one_d else 2

    def shared(label: str, make: dict[str, Any]) -> nn.Module:
        values = [str(v).lower() for v in options[label]]
        if len(values) == 1:
            return make[values[0]]()
        return LayerChoice({v: make[v]() for v in values}, label=label)

    class ConvSpace(ModelSpace):
        def __init__(self) -> None:
            super().__init__()
            c_in, size = input_shape[0], _spatial(input_shape)
            stages, heads = [], []
            self.depths = sorted(options["depth"])
            for i in range(max(self.depths)):
                width = choice(f"widths_{i}")
                convs = {str(k): (lambda k=k, c=c_in, w=width: MutableConv2d(
                    c, w, (1, k) if one_d else k, padding=(0, k // 2) if one_d else k // 2,
                    bias=False)) for k in options["kernel"]}
                conv = shared("kernel", convs)
                norm = {"true": lambda w=width: MutableBatchNorm2d(w), "false": nn.Identity}
                act = {a: (lambda a=a: _activation(a)) for a in map(str, options["activation"])}
                shrink = min(size) >= 2 if not one_d else size[1] >= 2
                new = (size[0], size[1] // 2) if one_d else (size[0] // 2, size[1] // 2)
                pools = {"max": lambda: nn.MaxPool2d(pool_k), "avg": lambda: nn.AvgPool2d(pool_k),
                         "stride": lambda new=new: _FitTo(_Subsample(1 if one_d else 2), new)}
                stage = [conv, shared("batch_norm", norm), shared("activation", act)]
                if shrink:
                    stage.append(shared("pool", pools))
                    size = new
                stages.append(nn.Sequential(*stage))
                if i + 1 in self.depths:
                    heads.append(MutableLinear(width, num_classes))
                c_in = width
            self.stages, self.heads = nn.ModuleList(stages), nn.ModuleList(heads)
            self.depth = InputChoice(len(self.depths), 1, label="depth") \
                if len(self.depths) > 1 else None
            self.as_image = _AsImage() if one_d else nn.Identity()

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            h = self.as_image(x)  # (B, C, 1, L) or (B, C, H, W)
            logits = []
            for i, stage in enumerate(self.stages):
                h = stage(h)
                if i + 1 in self.depths:
                    logits.append(self.heads[len(logits)](h.mean(dim=(2, 3))))  # (B, K)
            return logits[0] if self.depth is None else self.depth(logits)

    return ConvSpace()


def _options(decisions: dict[str, list[Any]], fixed: dict[str, Any]) -> dict[str, list[Any]]:
    """Every decision's options; a fixed value is a one-option decision."""
    out = {k: [v] for k, v in fixed.items() if not isinstance(v, list)}
    out.update(decisions)
    out.setdefault("batch_norm", [True])
    return out


def _spatial(input_shape: tuple[int, ...]) -> tuple[int, int]:
    return (1, input_shape[1]) if len(input_shape) == 2 else (input_shape[1], input_shape[2])


def _activation(name: str) -> nn.Module:
    return {"relu": nn.ReLU, "silu": nn.SiLU, "hardswish": nn.Hardswish, "gelu": nn.GELU}[name]()


def _register_shapes() -> None:
    """Shape formulas NNI's profiler lacks (its error message asks users to add them):
    SiLU/Hardswish/GELU modules, our subsample and fit modules, and AvgPool2d (NNI 3.0's own
    formula for it refers to an undefined variable)."""
    from nni.nas.profiler.pytorch.utils import MutableShape
    from nni.nas.profiler.pytorch.utils.shape_formula import (
        keep_shape_formula,
        register_shape_inference_formula,
    )

    def pooled(module: Any, input: Any) -> Any:
        shape = list(input.real_shape)
        k = module.kernel_size if isinstance(module.kernel_size, tuple) else (module.kernel_size,) * 2
        shape[-2], shape[-1] = shape[-2] // k[0], shape[-1] // k[1]
        return MutableShape(*shape)

    def fitted(module: _FitTo, input: Any) -> Any:
        return MutableShape(*list(input.real_shape)[:-2], *module.size)

    def as_image(module: _AsImage, input: Any) -> Any:
        shape = list(input.real_shape)
        return MutableShape(*shape[:-1], 1, shape[-1])

    for cls in (nn.ReLU, nn.SiLU, nn.Hardswish, nn.GELU, nn.Identity):
        register_shape_inference_formula(cls, keep_shape_formula)
    register_shape_inference_formula(nn.AvgPool2d, pooled)
    register_shape_inference_formula(_FitTo, fitted)
    register_shape_inference_formula(_AsImage, as_image)


# --------------------------------------------------------------------------- one NNI search


def nni_search(space: SearchSpace, data: DataSplits, limit: float, scale: float, seed: int,
               options: DartsOptions, lr: float, batch_size: int) -> dict[str, Any]:
    """Train NNI's DARTS on ``space`` and return its exported sample (``{label: value}``)."""
    _quiet_imports()
    from nni.nas.evaluator.pytorch import Classification, DataLoader
    from nni.nas.execution import SequentialExecutionEngine
    from nni.nas.profiler.pytorch.flops import FlopsProfiler
    from nni.nas.space import RawFormatModelSpace
    from nni.nas.strategy import DARTS
    from torch.utils.data import TensorDataset

    torch.manual_seed(seed)
    model = build_space(space, data.input_shape, data.num_classes)
    _register_shapes()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        profiler = FlopsProfiler(model, torch.zeros(1, *data.input_shape), count_bias=False,
                                 count_normalization=False, count_activation=False)
    gen = torch.Generator().manual_seed(seed)
    train = DataLoader(TensorDataset(data.x_train, data.y_train), batch_size=batch_size,
                       shuffle=True, generator=gen)
    val = DataLoader(TensorDataset(data.x_val, data.y_val), batch_size=batch_size, shuffle=True,
                     generator=gen)
    with tempfile.TemporaryDirectory(prefix="autokd-nni-") as root:
        evaluator = Classification(
            learning_rate=lr, weight_decay=1e-4, train_dataloaders=train, val_dataloaders=val,
            max_epochs=options.epochs, num_classes=data.num_classes, export_onnx=False,
            default_root_dir=root, logger=False, enable_checkpointing=False,
            enable_progress_bar=False, enable_model_summary=False, accelerator="cpu")
        strategy = DARTS(arc_learning_rate=options.alpha_lr,
                         warmup_epochs=round(options.warmup * options.epochs),
                         penalty={"profiler": profiler, "baseline": limit, "scale": scale,
                                  "nonlinear": "positive"})
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            strategy.initialize(RawFormatModelSpace.from_model(model, evaluator),
                                SequentialExecutionEngine())
            strategy.run()
            sample = dict(next(strategy.list_models()).sample)
    return {"sample": sample, **_penalty_probe(strategy)}


def _penalty_probe(strategy: Any) -> dict[str, Any]:
    """What NNI's penalty saw at the end, and whether it could move alpha at all.

    NNI 3.0 evaluates the penalty on ``export_probs()``, which returns Python floats
    (``softmax(alpha).cpu().tolist()``), so the penalty adds a constant to the architecture
    loss: no gradient reaches alpha. This records that, measured, for every run.
    """
    module = strategy.oneshot_module
    probs = module.export_probs()
    base = torch.zeros((), requires_grad=True)
    loss, details = module.penalty(base, probs)
    alphas = [p for p in module.arch_parameters() if p.requires_grad]
    grads = torch.autograd.grad(loss, alphas, allow_unused=True) if loss.requires_grad else []
    reaches = any(g is not None and bool(g.abs().sum() > 0) for g in grads)
    return {"nni_expected_flops": float(details["penalty"]), "penalty_reaches_alpha": reaches}


def to_params(sample: dict[str, Any], space: SearchSpace) -> dict[str, Any]:
    """NNI's sample in our trial-param names, plus the recipe our fixed DARTS runs use."""
    decisions, _fixed = space_decisions(space)
    params: dict[str, Any] = {}
    for name, value in sample.items():
        if name == "depth":
            value = sorted(decisions["depth"])[value[0]]
        elif name == "kernel":
            value = int(value)
        elif name == "batch_norm":
            value = value == "true"
        params[name] = value
    for p in space.params:
        if p.group != "architecture" and p.active(params) and not p.per_stage:
            params.setdefault(p.name, midpoint(p))
    return params


# --------------------------------------------------------------------------- timed to success


def run(rule: Rule, seed: int, teacher_path: str, cap_cpu_s: float,
        epochs: int = EPOCHS, options: DartsOptions | None = None) -> dict[str, Any]:
    """NNI DARTS runs (search + retraining) until one student meets ``rule`` or the CPU cap."""
    options = options or DartsOptions()
    data = load_data(DataConfig(rule.dataset))
    teacher = load_teacher(teacher_path, data=data)
    space = load_space(default_space_name(data))
    watch, rows, scale = Stopwatch(), [], 1.0
    watch.start()
    outcome: dict[str, Any] = {"status": "censored: CPU cap", "reached": False}
    for k in range(10_000):
        row = _one_run(space, data, teacher, rule, seed, k, scale, epochs, options)
        row["wall_s"], row["cpu_s"] = watch.elapsed()
        rows.append(row)
        if row["met"] and row["cpu_s"] <= cap_cpu_s:
            outcome = {"status": "reached", "reached": True, "success": row}
            break
        if row["cpu_s"] >= cap_cpu_s:
            break
        if row["flops"] > rule.max_flops:
            scale *= _PENALTY_GROWTH
    last = rows[-1]
    return {**outcome, "wall_s": last["wall_s"], "cpu_s": last["cpu_s"], "trials": len(rows),
            "trained": len(rows), "runs": rows,
            "best_val_under_target": max((r["val_accuracy"] for r in rows
                                          if r["flops"] <= rule.max_flops), default=None)}


def _one_run(space: SearchSpace, data: DataSplits, teacher: Any, rule: Rule, seed: int, k: int,
             scale: float, epochs: int, options: DartsOptions) -> dict[str, Any]:
    t0 = time.perf_counter()
    params = to_params({}, space)  # the fixed recipe: lr and batch size of the supernet too
    lr, batch = float(params.get("lr", 3e-3)), int(params.get("batch_size", 64))
    found = nni_search(space, data, rule.max_flops, scale, seed + k, options, lr, batch)
    sample = found["sample"]
    searched = time.perf_counter() - t0
    cand = space.from_params(to_params(sample, space))
    train = cand.train_config(TrainConfig(threads=1, seed=seed + k))
    train.epochs = epochs
    result = run_distillation(data, teacher, cand.family, cand.spec, cand.kd, train,
                              CostConfig(latency=False))
    m = result.metrics()
    flops, val = m["flops"], m["val_accuracy"]
    return {"number": k, "penalty_scale": scale, "sample": {k_: str(v) for k_, v in sample.items()},
            "spec": cand.spec, "flops": flops, "val_accuracy": val,
            "test_accuracy": m.get("test_accuracy"), "search_seconds": searched,
            "nni_expected_flops": found["nni_expected_flops"],
            "penalty_reaches_alpha": found["penalty_reaches_alpha"],
            "met": rule.met(flops, val)}
