"""Typed configuration for data, training and cost measurement.

Why dataclasses: every stage takes a plain, typed, printable object; YAML and the CLI only
fill these in, so validation lives in one place (``validate``) and tests can build configs
directly without going through any parser. The distillation recipe (``KDConfig``) lives in
``autokd.distill.recipe``, next to the registry of terms it is validated against.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass, field
from typing import Any

from autokd.errors import ConfigError
from autokd.metrics import check_metric

__all__ = [
    "CONSTRAINTS",
    "COST_KEYS",
    "MINIMA",
    "OBJECTIVES",
    "RUNTIMES",
    "SCORE_TERMS",
    "CostConfig",
    "DataConfig",
    "SearchConfig",
    "SearchSettings",
    "TrainConfig",
    "from_dict",
    "objective_key",
    "parse_bytes",
    "to_dict",
]

def _check(cond: bool, msg: str) -> None:
    if not cond:
        raise ConfigError(msg)

def _finite(name: str, value: float, low: float | None = None, high: float | None = None) -> None:
    _check(isinstance(value, (int, float)) and math.isfinite(value), f"{name} must be a number")
    if low is not None:
        _check(value >= low, f"{name} must be >= {low}, got {value}")
    if high is not None:
        _check(value <= high, f"{name} must be <= {high}, got {value}")

@dataclass
class DataConfig:
    """Which dataset and how it is split."""

    source: str = "digits"
    seed: int = 0
    val_fraction: float = 0.15
    test_fraction: float = 0.2
    target: str | None = None  # label column: csv (required), text (None means "label")
    num_samples: int | None = None  # generated sources (mnist1d)
    # image folders (folder:DIR): decode options, part of the dataset's identity
    image_size: int | None = None  # shorter side resized to this, then centre-cropped square
    channels: str = "auto"  # auto | 1 | 3
    skip_bad_files: bool = False  # skip (and record) unreadable images instead of failing
    # text files (text:PATH): the column read and how it becomes token ids (part of the identity)
    text_column: str = "text"
    vocab_size: int = 4000  # of a tokenizer trained on the train split
    max_length: int = 64  # tokens per sample after truncation or padding
    tokenizer: str | None = None  # tokenizer.json, or a directory holding one; None: train one
    tokenizer_kind: str = "wordpiece"  # wordpiece | bpe, for a trained tokenizer
    # data-free distillation: the train split is this many inputs synthesised from the teacher
    # (``autokd.datafree``); val and test stay real. Part of the identity via the new split hash
    data_free: int | None = None
    # how data is held: not part of its identity (in memory and streamed hash the same)
    memory_budget: str | int | None = None  # bytes, "512M", "4G"; None: 25 % of physical RAM
    loader_workers: int | None = None  # streaming DataLoader workers; None: min(4, cpus - 1)
    # scarce labels and privileged features (``autokd.data.scarce``), part of the identity:
    # a source of extra inputs whose labels are ignored (``rest``: the train samples that
    # train_fraction / shots_per_class left out), a labelled train split shrunk to a fraction
    # or to K samples per class, and the columns the student sees (tabular; the teacher sees all)
    unlabeled: str | None = None
    train_fraction: float | None = None
    shots_per_class: int | None = None
    student_features: str | None = None

    def validate(self) -> DataConfig:
        _finite("val_fraction", self.val_fraction, 0.01, 0.9)
        _finite("test_fraction", self.test_fraction, 0.01, 0.9)
        _check(self.val_fraction + self.test_fraction < 0.95, "val + test fractions leave no train data")
        _check(self.image_size is None or (isinstance(self.image_size, int)
                                           and not isinstance(self.image_size, bool)
                                           and 1 <= self.image_size <= 4096),
               f"image_size must be an integer in 1..4096, got {self.image_size!r}")
        _check(str(self.channels) in ("auto", "1", "3"),
               f"unknown channels {self.channels!r}; known: auto, 1, 3")
        self.channels = str(self.channels)
        self._validate_text()
        _check(self.data_free is None or (isinstance(self.data_free, int)
                                          and not isinstance(self.data_free, bool)
                                          and 1 <= self.data_free <= 1_000_000),
               f"data_free must be an integer in 1..1000000, got {self.data_free!r}")
        _check(self.loader_workers is None or (isinstance(self.loader_workers, int)
                                               and self.loader_workers >= 0),
               f"loader_workers must be an integer >= 0, got {self.loader_workers!r}")
        if self.memory_budget is not None:
            parse_bytes(self.memory_budget, "memory_budget")
        self._validate_scarce()
        return self

    def _validate_scarce(self) -> None:
        if self.train_fraction is not None:
            _finite("train_fraction", self.train_fraction)
            _check(0.0 < self.train_fraction <= 1.0,
                   f"train_fraction must be in (0, 1], got {self.train_fraction}")
        _check(self.shots_per_class is None or (isinstance(self.shots_per_class, int)
                                                and not isinstance(self.shots_per_class, bool)
                                                and self.shots_per_class >= 1),
               f"shots_per_class must be an integer >= 1, got {self.shots_per_class!r}")
        _check(self.train_fraction is None or self.shots_per_class is None,
               "train_fraction and shots_per_class are mutually exclusive; give one")
        for name in ("unlabeled", "student_features"):
            value = getattr(self, name)
            _check(value is None or (isinstance(value, str) and bool(value.strip())),
                   f"{name} must be a non-empty string, got {value!r}")
        _check(self.unlabeled != "rest" or self.train_fraction is not None
               or self.shots_per_class is not None,
               "unlabeled 'rest' means the train samples left out by train_fraction or "
               "shots_per_class; give one of them")
        mixed = [n for n in ("unlabeled", "train_fraction", "shots_per_class", "student_features")
                 if getattr(self, n) is not None]
        _check(self.data_free is None or not mixed,
               f"data_free trains on inputs synthesised from the teacher only; it cannot be "
               f"combined with {', '.join(mixed)}")

    def _validate_text(self) -> None:
        _check(isinstance(self.text_column, str) and bool(self.text_column.strip()),
               f"text_column must be a column name, got {self.text_column!r}")
        for name, low, high in (("vocab_size", 32, 1_000_000), ("max_length", 2, 8192)):
            value = getattr(self, name)
            _check(isinstance(value, int) and not isinstance(value, bool) and low <= value <= high,
                   f"{name} must be an integer in {low}..{high}, got {value!r}")
        _check(self.tokenizer is None or (isinstance(self.tokenizer, str)
                                          and bool(self.tokenizer.strip())),
               f"tokenizer must be a path to a tokenizer.json or its directory, "
               f"got {self.tokenizer!r}")
        _check(self.tokenizer_kind in ("wordpiece", "bpe"),
               f"unknown tokenizer_kind {self.tokenizer_kind!r}; known: bpe, wordpiece")


_UNITS = {"": 1, "B": 1, "K": 2**10, "M": 2**20, "G": 2**30, "T": 2**40}


def parse_bytes(value: str | int, name: str = "size") -> int:
    """``4G`` -> 4 * 2**30: sizes as people type them (binary units, optional ``B``/``iB``)."""
    if isinstance(value, int) and not isinstance(value, bool):
        _check(value >= 0, f"{name} must be >= 0 bytes, got {value}")
        return value
    text = str(value).strip().upper().removesuffix("IB").removesuffix("B")
    number, unit = (text[:-1], text[-1]) if text[-1:] in _UNITS else (text, "")
    try:
        size = float(number) * _UNITS[unit]
    except ValueError:
        size = -1.0
    _check(math.isfinite(size) and size >= 0,
           f"{name} must be a size such as 512M or 4G, got {value!r}")
    return int(size)

@dataclass
class TrainConfig:
    """How one student is trained."""

    epochs: int = 40
    batch_size: int = 64
    lr: float = 3e-3
    weight_decay: float = 1e-4
    optimizer: str = "adamw"  # adamw | sgd
    scheduler: str = "cosine"  # cosine | constant
    grad_clip: float = 5.0
    seed: int = 0
    device: str = "cpu"  # auto | cpu | cuda
    amp: bool = True  # mixed precision, only used on CUDA
    threads: int | None = None
    # epochs the LR and temperature schedules span (None: ``epochs``); a multi-fidelity search
    # trains a candidate part of the way, on the schedule of its full run
    schedule_epochs: int | None = None
    metric: str = "accuracy"  # validation metric that picks the best epoch (autokd.metrics)
    # training-time augmentation (``autokd.data.augment``: none, crop, crop_flip, rrc_flip) and
    # where the teacher logits of an augmented batch come from: ``online`` runs the teacher on
    # it, ``replay`` reads a cache of ``replay_k`` fixed draws per sample (``autokd.replay``),
    # shared by every run with the same ``replay_seed`` (trials of a search differ in ``seed``)
    augment: str = "none"
    aug_teacher: str = "replay"
    replay_k: int = 8
    replay_seed: int = 0

    def validate(self) -> TrainConfig:
        _check(isinstance(self.epochs, int) and self.epochs >= 1, "epochs must be an integer >= 1")
        _check(
            isinstance(self.batch_size, int) and self.batch_size >= 1,
            "batch_size must be an integer >= 1",
        )
        _finite("lr", self.lr, 1e-8, 10.0)
        _finite("weight_decay", self.weight_decay, 0.0, 1.0)
        _check(self.optimizer in ("adamw", "sgd"), f"unknown optimizer {self.optimizer!r}; known: adamw, sgd")
        _check(
            self.scheduler in ("cosine", "constant"),
            f"unknown scheduler {self.scheduler!r}; known: constant, cosine",
        )
        _check(self.device in ("auto", "cpu", "cuda"), f"unknown device {self.device!r}; known: auto, cpu, cuda")
        _check(self.threads is None or (isinstance(self.threads, int) and self.threads >= 1),
               "threads must be a positive integer")
        _check(self.schedule_epochs is None or (isinstance(self.schedule_epochs, int)
                                                and self.schedule_epochs >= self.epochs),
               "schedule_epochs must be an integer >= epochs")
        check_metric(self.metric)
        _check(isinstance(self.augment, str), f"augment must be a recipe name, got {self.augment!r}")
        _check(self.aug_teacher in ("online", "replay"),
               f"unknown aug_teacher {self.aug_teacher!r}; known: online, replay")
        _check(isinstance(self.replay_k, int) and 1 <= self.replay_k <= 256,
               f"replay_k must be an integer in 1..256, got {self.replay_k!r}")
        _check(isinstance(self.replay_seed, int), "replay_seed must be an integer")
        return self

#: where latency is measured: PyTorch eager, a frozen TorchScript trace, or the float ONNX file
#: under ONNX Runtime (``autokd.quant.deploy.runtime_cost``); ``auto`` is resolved by a command
RUNTIMES = ("torch", "torchscript", "onnxruntime")


@dataclass
class CostConfig:
    """How costs are measured.

    ``runtime`` is where latency is timed: eager PyTorch by default here (cheap, what the
    library's primitives always did); commands default to ONNX Runtime, which is what a tiny
    student deploys in (its eager latency is mostly Python dispatch). ``defer_runtime``: a
    search whose objectives and limits do not read latency times trials eagerly and measures
    only the front in ``runtime`` afterwards (an export costs about as much as a short trial).
    """

    batch_size: int = 64
    latency: bool = True
    warmup: int = 5
    repeats: int = 7  # timed blocks; the median is reported
    min_block_s: float = 0.02  # each timed block runs at least this long
    threads: int = 1
    device: str = "cpu"
    runtime: str = "torch"  # torch | torchscript | onnxruntime | auto (resolved before use)
    defer_runtime: bool = False

    def validate(self) -> CostConfig:
        _check(self.runtime in (*RUNTIMES, "auto"),
               f"unknown latency runtime {self.runtime!r}; known: {', '.join(RUNTIMES)}")
        _check(self.runtime != "onnxruntime" or self.device == "cpu",
               f"--latency-runtime onnxruntime times on the CPU; it cannot be combined with "
               f"--latency-device {self.device} (use torch or torchscript there)")
        return self

    @property
    def trial_runtime(self) -> str:
        """The runtime a measurement made now uses (eager when the runtime is deferred)."""
        return "torch" if self.defer_runtime else self.runtime

    @classmethod
    def for_search(cls, **overrides: object) -> CostConfig:
        """Cheaper timing for per-trial measurement (~25 ms for a small CNN): five 2 ms blocks.

        Why: a trial trains for seconds; spending 0.4 s timing it would make the controller's
        overhead dominate. Exports re-measure with the full default settings.
        """
        return cls(**{"warmup": 2, "repeats": 5, "min_block_s": 0.002, **overrides})

# objective name -> (metric key, direction)
OBJECTIVES: dict[str, tuple[str, str]] = {
    "accuracy": ("val_accuracy", "maximize"),
    "kd_loss": ("val_kd_loss", "minimize"),
    "flops": ("flops", "minimize"),
    "params": ("params", "minimize"),
    "bytes": ("bytes", "minimize"),
    "latency": ("latency_ms", "minimize"),
}


def objective_key(name: str, metric: str = "accuracy") -> str:
    """The metric key an objective reads: ``accuracy`` is the search's ``--metric`` on the
    validation split (``val_balanced_accuracy`` ...); the others are fixed (``OBJECTIVES``)."""
    return f"val_{metric}" if name == "accuracy" else OBJECTIVES[name][0]


# constraint option -> metric key
CONSTRAINTS: dict[str, str] = {
    "max_flops": "flops",
    "max_params": "params",
    "max_bytes": "bytes",
    "max_latency_ms": "latency_ms",
}
# minimum option -> what it bounds, on the validation split; known only after training, so a
# trial below one is trained, then recorded as infeasible (``autokd.objective``)
MINIMA: dict[str, str] = {
    "min_accuracy": "accuracy",  # the search's --metric (accuracy by default)
    "min_retention": "val_retention",
}
SCORE_TERMS = {"bytes": "bytes", "flops": "flops", "latency": "latency_ms"}
COST_KEYS = ("flops", "params", "bytes", "latency_ms")


@dataclass
class SearchSettings:
    """What a search optimises and under which hard limits."""

    objectives: list[str] = field(default_factory=lambda: ["accuracy", "flops"])
    score: bool = False
    score_weights: dict[str, float] = field(
        default_factory=lambda: {"bytes": 0.1, "flops": 0.1, "latency": 0.1})
    max_flops: float | None = None
    max_params: float | None = None
    max_bytes: float | None = None
    max_latency_ms: float | None = None
    min_accuracy: float | None = None  # validation value of ``metric`` a student must reach
    min_retention: float | None = None  # validation accuracy / the teacher's it must keep
    train: TrainConfig = field(default_factory=lambda: TrainConfig(threads=1))
    cost: CostConfig = field(default_factory=CostConfig.for_search)
    pareto_pruning: bool = True
    keep_weights: bool = True
    epochs: int | None = None  # overrides the space's epochs (quick runs, benchmarks)
    metric: str = "accuracy"  # what the accuracy objective, best epochs and pruning use
    # seconds between per-epoch checkpoints of a running trial (0: none); see autokd.checkpoints
    checkpoint_every: float = 30.0

    def validate(self) -> SearchSettings:
        if self.score:
            unknown = sorted(set(self.score_weights) - set(SCORE_TERMS))
            if unknown:
                raise ConfigError(f"unknown score term(s) {unknown}; known: "
                                  f"{', '.join(SCORE_TERMS)}")
            for term, weight in self.score_weights.items():  # nan/inf would make every score nan
                if not math.isfinite(weight) or weight < 0:
                    raise ConfigError(f"--score-weights {term} must be a number >= 0, got {weight}")
        else:
            if not self.objectives:
                raise ConfigError("give at least one objective")
            for name in self.objectives:
                if name not in OBJECTIVES:
                    raise ConfigError(f"unknown objective {name!r}; known: {', '.join(OBJECTIVES)}")
            if len(set(self.objectives)) != len(self.objectives):
                raise ConfigError("objectives must not repeat")
        check_metric(self.metric)
        self.cost.validate()
        _finite("--checkpoint-every", self.checkpoint_every, 0.0)
        for key in CONSTRAINTS:
            value = getattr(self, key)
            if value is not None and (not math.isfinite(value) or value <= 0):
                raise ConfigError(f"--{key.replace('_', '-')} must be a positive number, got {value}")
        for key in MINIMA:
            value = getattr(self, key)
            if value is not None and (isinstance(value, bool) or not isinstance(value, (int, float))
                                      or not 0.0 <= value <= 1.0):  # NaN fails the range too
                raise ConfigError(f"--{key.replace('_', '-')} must be a number in [0, 1], "
                                  f"got {value:g}")
        return self

    @property
    def directions(self) -> list[str]:
        if self.score:
            return ["minimize"]
        return [OBJECTIVES[o][1] for o in self.objectives]

    @property
    def objective_names(self) -> list[str]:
        return ["score"] if self.score else list(self.objectives)

    @property
    def needs_latency(self) -> bool:
        lat_obj = "latency" in self.objectives or (self.score and self.score_weights.get("latency"))
        return bool(lat_obj or self.max_latency_ms is not None)

    def limits(self) -> dict[str, float]:
        return {CONSTRAINTS[k]: getattr(self, k) for k in CONSTRAINTS if getattr(self, k) is not None}

    def minima(self) -> dict[str, float]:
        """The minima given (``min_accuracy``, ``min_retention``), by option name."""
        return {k: float(getattr(self, k)) for k in MINIMA if getattr(self, k) is not None}


#: The default ``--strategy``: multi-fidelity successive halving with the TPE sampler. Chosen by
#: measurement (``benchmarks/search_efficiency.py``; README "Which strategy, measured"): on
#: MNIST-1D, 16 seeds, its hypervolume-vs-CPU curve beat plain TPE (p = 0.03) and random
#: search (p = 0.002).
DEFAULT_STRATEGY = "asha"


@dataclass
class SearchConfig:
    """Everything ``autokd search`` takes (mirrors the CLI flags)."""

    data: DataConfig = field(default_factory=DataConfig)
    teacher: list[str] | None = None
    trust: bool = False
    space: str | None = None  # bundled name or YAML path; None: by data kind
    budget: str | int = 20
    #: None: a resumed study keeps the strategy it was started with, a new one gets
    #: ``DEFAULT_STRATEGY`` (so rerunning an old command after the default changed resumes it)
    strategy: str | None = None
    sampler: str = "tpe"
    pruner: str = "none"
    settings: SearchSettings = field(default_factory=SearchSettings)
    name: str | None = None
    results: str = "results"
    storage: str | None = None
    seed: int = 0
    device: str = "auto"
    baseline: bool = False
    #: ``--baseline-seeds N``: re-train KD and scratch on N seeds each (0: off; implies baseline)
    baseline_seeds: int = 0
    strategy_options: dict[str, Any] = field(default_factory=dict)
    jobs: int = 1  # local worker processes sharing the storage
    artifacts: str | None = None  # teacher artifact store; None: results/<name>/artifacts
    tuner: str = "tpe"  # --strategy nni: tpe, evolution, anneal or random
    #: recipe keys set on the space's ``distillation`` group (``--recipe KEY=V1,V2``); several
    #: values make a choice (``autokd.space.with_recipe``)
    recipe: dict[str, list[Any]] | None = None


def to_dict(obj: Any) -> dict[str, Any]:
    return dataclasses.asdict(obj)

def from_dict(cls: type, data: dict[str, Any] | None) -> Any:
    """Build a config dataclass from a dict, rejecting unknown keys with a clear message."""
    data = dict(data or {})
    names = {f.name for f in dataclasses.fields(cls)}
    unknown = sorted(set(data) - names)
    if unknown:
        raise ConfigError(f"unknown {cls.__name__} key(s): {', '.join(unknown)}; known: {', '.join(sorted(names))}")
    return cls(**data)

