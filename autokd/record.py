"""The typed records a study keeps: one per trial, one for the search's settings.

Why records: the fields of a trial (its candidate, costs, metrics, how it ended) were ~45 Optuna
user attributes spelled as string literals across many modules, and each was its own storage
write. A ``TrialRecord`` names every field once, with its type, and is stored as one JSON user
attribute (``RECORD_ATTR``), written a few times per trial instead of ~45. The search's settings
are one ``SearchRecord`` in one study attribute (``SEARCH_ATTR``), written by ``autokd search``
and read by workers, reports and exports; config.yaml is derived from it.

Studies written by autokd 0.1 keep their fields as separate attributes; ``TrialRecord.of`` and
``SearchRecord.of`` read both layouts, so old results resume, report and export unchanged.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass, field
from typing import Any

import optuna
from optuna.trial import FrozenTrial, TrialState

from autokd.paired import gain_summary

__all__ = [
    "BASELINE_ATTR",
    "RECORD_ATTR",
    "REQUEUED_ATTR",
    "SEARCH_ATTR",
    "SearchRecord",
    "TrialLog",
    "TrialRecord",
    "budget_used",
    "count_done",
    "feasible",
    "patch_trial",
    "recorded",
    "repeat_summary",
    "retry_attrs",
    "trial_share",
]

RECORD_ATTR = "autokd"  # trial user attribute holding the TrialRecord
SEARCH_ATTR = "autokd_search"  # study user attribute holding the SearchRecord
# study attributes that are results rather than settings (changed as a search goes on)
# scratch twins of front members: {trial: {val/test accuracy, "repeats": N-seed runs}}
# (layout in autokd.kd_gain; repeat_summary reads it)
BASELINE_ATTR = "baseline"
REQUEUED_ATTR = "requeued"  # trials already re-queued after a dead process


@dataclass
class TrialRecord:
    """Everything autokd records about one trial (None: not measured or not reached).

    Field order is the order of trials.csv columns.
    """

    # who ran it
    worker: str | None = None
    retry_of: int | None = None
    # multi-fidelity lineage (--strategy asha): rung index, the trial this one continued, the
    # epochs trained in all (the parent's and this trial's) and the epochs the schedules span
    rung: int | None = None
    resumed_from: int | None = None
    epochs_total: int | None = None
    schedule_epochs: int | None = None
    # teacher-assistant lineage (recipe ``assistant: auto``): the completed trial whose student
    # taught this one (None: the assistant was trained inside this trial), and the CPU seconds
    # of an assistant trained inside (counted in this trial's cpu_seconds too)
    assistant_of: int | None = None
    assistant_seconds: float | None = None
    # the candidate
    strategy: str | None = None
    family: str | None = None
    spec: dict[str, Any] | None = None
    recipe: dict[str, Any] | None = None
    train: dict[str, Any] | None = None
    dataset_hash: str | None = None
    teacher_hash: str | None = None
    metric: str | None = None  # the selection metric (--metric); None: accuracy (older studies)
    # costs, measured before training (autokd.cost.CostReport)
    params: int | None = None
    flops: int | None = None
    bytes: int | None = None
    latency_ms: float | None = None
    latency_ms_batch: float | None = None
    latency_batch_size: int | None = None
    latency_cv: float | None = None
    peak_memory_bytes: int | None = None
    seed: int | None = None
    constraints: list[float] | None = None
    pre_train_seconds: float | None = None
    infeasible: bool | None = None
    infeasible_reason: str | None = None
    # results (validation for selection; test only for reporting)
    val_accuracy: float | None = None
    val_nll: float | None = None
    val_kd_loss: float | None = None
    test_accuracy: float | None = None
    test_nll: float | None = None
    test_kd_loss: float | None = None
    val_balanced_accuracy: float | None = None
    val_macro_f1: float | None = None
    test_balanced_accuracy: float | None = None
    test_macro_f1: float | None = None
    val_per_class_accuracy: list[float | None] | None = None  # recall per class, class order
    test_per_class_accuracy: list[float | None] | None = None
    train_seconds: float | None = None
    best_epoch: int | None = None
    epochs_run: int | None = None
    retention: float | None = None
    val_retention: float | None = None
    params_compression: float | None = None
    flops_compression: float | None = None
    latency_speedup: float | None = None
    # an int8 recipe (quantize: int8): the val/test metrics above are the INT8 ONNX model's;
    # these are the fake-quantised float model's, and its logits' distance from the INT8 file's
    float_val_accuracy: float | None = None
    float_test_accuracy: float | None = None
    int8_max_abs_diff: float | None = None
    score: float | None = None
    checkpoint: str | None = None
    # what the whole trial cost (build, costing, training, evaluation), however it ended
    wall_seconds: float | None = None
    cpu_seconds: float | None = None
    # how it ended early
    prune_reason: str | None = None
    pruned_at_epoch: int | None = None
    resumed_epoch: int | None = None  # continued from its checkpoint after this epoch
    fail_reason: str | None = None
    # strategy-specific fields (darts_*, predicted_*, nni_*), kept as they are
    extra: dict[str, Any] = field(default_factory=dict)

    @classmethod
    def from_attrs(cls, attrs: dict[str, Any]) -> TrialRecord:
        """A record from a trial's user attributes (either layout; the compact one wins)."""
        flat = {k: v for k, v in attrs.items() if k != RECORD_ATTR}
        packed = attrs.get(RECORD_ATTR)
        if isinstance(packed, dict):
            flat.update({k: v for k, v in packed.items() if k != "extra"})
            flat.update(packed.get("extra") or {})
        known = {k: v for k, v in flat.items() if k in _TRIAL_FIELDS}
        extra = {k: v for k, v in flat.items() if k not in _TRIAL_FIELDS}
        return cls(**known, extra=extra)

    @classmethod
    def of(cls, trial: FrozenTrial | optuna.Trial) -> TrialRecord:
        return cls.from_attrs(dict(trial.user_attrs))

    def get(self, key: str, default: Any = None) -> Any:
        """A field or an extra field by name (metrics named in --where, objectives, ...)."""
        value = getattr(self, key) if key in _TRIAL_FIELDS else self.extra.get(key)
        return default if value is None else value

    def _recorded(self) -> dict[str, Any]:
        return {k: getattr(self, k) for k in _TRIAL_FIELDS if getattr(self, k) is not None}

    def fields(self) -> dict[str, Any]:
        """Every recorded (non-None) field, extras last: one row of trials.csv."""
        return {**self._recorded(), **self.extra}

    def packed(self) -> dict[str, Any]:
        """The stored form: non-None fields, extras under ``extra``."""
        out = self._recorded()
        if self.extra:
            out["extra"] = dict(self.extra)
        return out

    def update(self, **values: Any) -> TrialRecord:
        """Set fields (unknown names go to ``extra``); non-finite floats become None."""
        for key, value in values.items():
            if isinstance(value, float) and not math.isfinite(value):
                value = None
            if key in _TRIAL_FIELDS:
                setattr(self, key, value)
            else:
                self.extra[key] = value
        return self


_TRIAL_FIELDS = tuple(f.name for f in dataclasses.fields(TrialRecord) if f.name != "extra")


class TrialLog:
    """A running trial's record, changed in memory and written in one storage call.

    Why: each Optuna ``set_user_attr`` is a storage round trip (a database write for shared
    studies); a trial writes its record when something is worth keeping (its costs before
    training, its results, how it ended), not field by field.
    """

    def __init__(self, trial: optuna.Trial | Any) -> None:
        self.trial = trial
        self.record = TrialRecord.of(trial)

    def update(self, **values: Any) -> TrialLog:
        self.record.update(**values)
        return self

    def flush(self, **values: Any) -> None:
        """Apply ``values`` and write the whole record."""
        self.record.update(**values)
        self.trial.set_user_attr(RECORD_ATTR, self.record.packed())


def patch_trial(study: optuna.Study, trial_id: int, **values: Any) -> None:
    """Update fields of any trial by id through the storage (stale trials of other workers)."""
    storage = study._storage
    record = TrialRecord.from_attrs(storage.get_trial(trial_id).user_attrs).update(**values)
    storage.set_trial_user_attr(trial_id, RECORD_ATTR, record.packed())


def retry_attrs(number: int) -> dict[str, Any]:
    """User attributes of a re-queued trial: it retries trial ``number``."""
    return {RECORD_ATTR: {"retry_of": number}}


@dataclass
class SearchRecord:
    """Everything a search was run with, so a worker, a report or an export needs nothing else.

    Attributes:
        version: autokd version that wrote the record.
        objectives: Objective names, in the study's direction order (``["score"]`` in score mode).
        mode: ``pareto`` or ``score``.
        data: The ``DataConfig`` (as a dict) that loads the data.
        dataset: ``DataSplits.describe()`` of the split searched on.
        dataset_hash: Its split hash (a worker on other data refuses to start).
        teacher_ref: The teacher as the user named it (paths, ``module:function``).
        teacher_hash: The teacher's hash (a worker with another teacher refuses to start).
        teacher: The teacher's profile: accuracy and costs, measured once.
        teachers: Per teacher file: its reference and, once uploaded, its artifact id and sha.
        trust: Whether loading the teacher may run code.
        artifacts: Where teacher artifacts are stored for workers.
        space: Path of the space's YAML file; ``space_yaml`` is its content.
        space_name: The space's name; ``family`` its student family.
        settings: ``SearchSettings`` as a dict; ``limits`` the hard constraints it sets.
        budget: ``{"trials": N}`` or ``{"seconds": S}``, counted across workers.
        strategy, sampler, pruner, tuner, seed, strategy_options, device, baseline, baseline_seeds: As given to
            ``autokd search``.
        started_at: When the budget's clock started (a time budget ends for every worker at
            ``started_at + seconds``).
        scale: The hypervolume's ``FrontScale`` as a dict (the space's cost ranges, accuracy
            from the majority class to the teacher), fixed when the search started; empty in
            studies written before it existed.
        metric: The selection metric (``--metric``): what the accuracy objective, the scale's
            accuracy axis, best epochs and pruning use; ``accuracy`` in older studies.
        majority_accuracy: Validation accuracy of always predicting the most common training
            class: the usefulness floor's absolute part (``autokd.front``); None in older
            studies.
    """

    version: str = ""
    objectives: list[str] = field(default_factory=list)
    mode: str = "pareto"
    data: dict[str, Any] = field(default_factory=dict)
    dataset: dict[str, Any] = field(default_factory=dict)
    dataset_hash: str | None = None
    teacher_ref: str | None = None
    teacher_hash: str | None = None
    teacher: dict[str, Any] = field(default_factory=dict)
    teachers: list[dict[str, Any]] = field(default_factory=list)
    trust: bool = False
    artifacts: str | None = None
    space: str | None = None
    space_yaml: Any = None
    space_name: str | None = None
    family: str | None = None
    settings: dict[str, Any] = field(default_factory=dict)
    limits: dict[str, float] = field(default_factory=dict)
    budget: dict[str, Any] = field(default_factory=dict)
    strategy: str = "optuna"
    sampler: str = "tpe"
    pruner: str = "none"
    tuner: str = "tpe"
    seed: int = 0
    strategy_options: dict[str, Any] = field(default_factory=dict)
    device: str = "auto"
    baseline: bool = False
    baseline_seeds: int = 0
    started_at: float | None = None
    scale: dict[str, Any] = field(default_factory=dict)
    metric: str = "accuracy"
    majority_accuracy: float | None = None

    @classmethod
    def of(cls, study: optuna.Study) -> SearchRecord:
        """The study's record; an autokd 0.1 study's separate attributes are read the same."""
        return cls.from_attrs(dict(study.user_attrs))

    @classmethod
    def from_attrs(cls, attrs: dict[str, Any]) -> SearchRecord:
        raw = attrs.get(SEARCH_ATTR)
        if not isinstance(raw, dict):
            raw = _legacy_search(attrs)
        names = {f.name for f in dataclasses.fields(cls)}
        return cls(**{k: v for k, v in raw.items() if k in names})

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    def get(self, key: str, default: Any = None) -> Any:
        """A field by name; empty or unset fields give ``default``."""
        value = getattr(self, key, None)
        return default if value is None or value == {} or value == [] else value

    @property
    def exists(self) -> bool:
        """Whether a search has recorded its settings (a fresh study has not)."""
        return bool(self.dataset_hash)


def _legacy_search(attrs: dict[str, Any]) -> dict[str, Any]:
    """An autokd 0.1 study: 13 attributes, plus ``search_config`` for workers."""
    config = attrs.get("search_config") or {}
    space = config.get("space") or {}
    out = {k: attrs[k] for k in ("objectives", "mode", "dataset", "dataset_hash", "teacher_hash",
                                 "teacher", "teacher_ref", "space", "space_name", "family",
                                 "settings", "limits", "budget") if k in attrs}
    out.update({k: config[k] for k in ("data", "teachers", "trust", "strategy", "sampler",
                                       "pruner", "tuner", "seed", "strategy_options",
                                       "artifacts", "started_at") if k in config})
    if "yaml" in space:
        out["space_yaml"] = space["yaml"]
    out.setdefault("space", space.get("source"))
    return out


def recorded(trial: FrozenTrial, key: str) -> Any:
    """One field of a trial's record, read without building the whole record.

    Why: budget checks and the front read one field of every trial after every trial.
    """
    packed = trial.user_attrs.get(RECORD_ATTR)
    if isinstance(packed, dict) and key in packed:
        return packed[key]
    return trial.user_attrs.get(key)


def feasible(trial: FrozenTrial) -> bool:
    """Constraint values <= 0 are feasible (relative excess over each limit)."""
    values = list(trial.constraints.values()) or recorded(trial, "constraints") or []
    return all(v <= 0 for v in values)


def trial_share(trial: FrozenTrial, by_number: dict[int, FrozenTrial]) -> float:
    """How much of a trial budget one trial uses: a plain trial is one training; an ASHA rung is
    the epochs it trained over its candidate's full epochs (a continuation counts only its
    increment). Why: so ``--budget N`` buys about N full trainings under every strategy, and
    comparing strategies at one budget compares them at about one CPU cost."""
    epochs, horizon = recorded(trial, "epochs_total"), recorded(trial, "schedule_epochs")
    if not epochs or not horizon:
        return 1.0
    start, parent = 0, recorded(trial, "resumed_from")
    if parent is not None and not recorded(trial, "resume_fallback"):
        before = by_number.get(int(parent))
        start = int(recorded(before, "epochs_total") or 0) if before is not None else 0
    return max(0, int(epochs) - start) / int(horizon)


def budget_used(study: optuna.Study, trials: list[FrozenTrial] | None = None,
                running: bool = False) -> float:
    """Full trainings' worth of the trials that count towards a trial budget (trained:
    complete or pruned, not infeasible; see ``trial_share``); ``running`` adds the trials in
    flight, a claimed one not yet planned as a whole training."""
    trials = study.get_trials(deepcopy=False) if trials is None else trials
    by_number = {t.number: t for t in trials}
    return sum(trial_share(t, by_number) for t in trials
               if _trained(t) or (running and t.state == TrialState.RUNNING))


def _trained(trial: FrozenTrial) -> bool:
    """A trial that counts towards a budget: trained (complete or pruned), not infeasible."""
    return trial.state in (TrialState.COMPLETE, TrialState.PRUNED) and not recorded(
        trial, "infeasible")


def count_done(study: optuna.Study, trials: list[FrozenTrial] | None = None) -> int:
    """Finished trials that count towards the budget (``_trained``), one each."""
    return sum(map(_trained, study.get_trials(deepcopy=False) if trials is None else trials))


def repeat_summary(entry: dict[str, Any] | None) -> dict[str, Any] | None:
    """A front member's N-seed KD gain on test data (``autokd.paired.gain_summary``) from its
    ``BASELINE_ATTR`` entry, over the seeds both arms finished; None before two pairs exist."""
    rep = (entry or {}).get("repeats") or {}
    kd, scratch = rep.get("kd") or {}, rep.get("scratch") or {}
    seeds = [str(s) for s in rep.get("seeds", []) if str(s) in kd and str(s) in scratch]
    if len(seeds) < 2:
        return None
    out = gain_summary([kd[s]["test_accuracy"] for s in seeds],
                       [scratch[s]["test_accuracy"] for s in seeds])
    lr, scratch_lr = rep.get("lr"), rep.get("scratch_lr")
    out.update(requested=len(rep.get("seeds", [])), lr=lr, scratch_lr=scratch_lr,
               scratch_lr_factor=scratch_lr / lr if lr and scratch_lr else None)
    return out
