"""The hypervolume's scale: space cost ranges, accuracy range, reference point, early stopping."""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import pytest

from autokd.config import CostConfig
from autokd.cost import measure_cost
from autokd.data import load_data
from autokd.objective import ParetoStopper
from autokd.pareto import FrontScale
from autokd.pipeline import build_seeded
from autokd.scale import majority_accuracy, observed_scale, space_scale
from autokd.space import load_space

SCALE = FrontScale((0.1, 0.9), {"flops": (100.0, 10_000.0)})
NAMES = ["accuracy", "flops"]


def test_losses_are_linear_in_accuracy_and_log_in_cost() -> None:
    losses = SCALE.losses([[0.9, 100.0], [0.5, 1000.0], [0.1, 10_000.0]], NAMES)
    np.testing.assert_allclose(losses, [[0.0, 0.0], [0.5, 0.5], [1.0, 1.0]])


def test_ideal_point_fills_the_box_and_the_reference_adds_nothing() -> None:
    assert SCALE.hypervolume([[0.9, 100.0]], NAMES) == pytest.approx(1.0)
    # at the floor accuracy a student adds nothing, however cheap
    assert SCALE.hypervolume([[0.1, 100.0]], NAMES) == 0.0
    # the dearest candidate still counts (reference cost at 1 + margin)
    assert SCALE.hypervolume([[0.9, 10_000.0]], NAMES) == pytest.approx(0.1 / 1.1)
    assert SCALE.hypervolume([], NAMES) == 0.0


def test_three_objectives_by_hand() -> None:
    """Losses (0.5, 0.5, 0) below the reference (1, 1.1, 1.1): 0.5 * 0.6 * 1.1 of a 1.21 box;
    a second point at losses (0, 1, 1) adds its 1 * 0.1 * 0.1 box less the 0.5 * 0.1 * 0.1
    the first already holds; points past the floor or the dearest cost add nothing."""
    scale = FrontScale((0.1, 0.9), {"flops": (100.0, 10_000.0), "params": (10.0, 1000.0)})
    names = ["accuracy", "flops", "params"]
    assert scale.hypervolume([[0.5, 1000.0, 10.0]], names) == pytest.approx(0.33 / 1.21)
    both = [[0.5, 1000.0, 10.0], [0.9, 10_000.0, 1000.0]]
    assert scale.hypervolume(both, names) == pytest.approx((0.33 + 0.01 - 0.005) / 1.21)
    useless = [[0.05, 100.0, 10.0], [0.9, 100_000.0, 10.0]]  # loss 1.06; flops loss 1.5
    assert scale.hypervolume([*both, *useless], names) == pytest.approx(0.335 / 1.21)
    assert scale.gain(both, useless[0], names) == 0.0


def test_cost_matters_as_much_as_accuracy() -> None:
    """The old scale (cost / teacher cost) gave two fronts 1 % apart; this one tells a 10x
    cheaper student with the same accuracy from the dear one."""
    dear = SCALE.hypervolume([[0.8, 5000.0]], NAMES)
    cheap = SCALE.hypervolume([[0.8, 500.0]], NAMES)
    assert cheap - dear > 0.3
    teacher_flops = 1e6  # what the old normalisation divided by
    old = [(1 - 0.8) * (1 - f / teacher_flops) for f in (5000.0, 500.0)]
    assert old[1] - old[0] < 0.01


def test_gain_is_zero_for_a_dominated_point() -> None:
    front = [[0.8, 500.0], [0.6, 200.0]]
    assert SCALE.gain(front, [0.7, 600.0], NAMES) == pytest.approx(0.0, abs=1e-12)
    assert SCALE.gain(front, [0.85, 600.0], NAMES) > 0.01


def test_union_round_trip_and_description() -> None:
    other = FrontScale((0.2, 0.95), {"flops": (50.0, 2000.0), "params": (10.0, 99.0)})
    u = SCALE.union(other)
    assert u.accuracy == (0.1, 0.95)
    assert u.costs == {"flops": (50.0, 10_000.0), "params": (10.0, 99.0)}
    assert FrontScale.from_dict(u.to_dict()) == u
    text = SCALE.describe(NAMES)
    assert "reference point" in text and "1.1" in text and "10,000" in text


def test_fixed_cost_space_does_not_divide_by_zero() -> None:
    flat = FrontScale((0.1, 0.9), {"flops": (100.0, 100.0)})
    assert flat.hypervolume([[0.9, 100.0]], NAMES) == pytest.approx(1.0)


def test_space_scale_spans_the_corners_of_the_space() -> None:
    data = load_data("digits")
    space = load_space("cnn")
    scale = space_scale(space, data, 0.97, ["accuracy", "flops", "params"], CostConfig(latency=False))
    lo, hi = scale.costs["flops"]
    assert 0 < lo < hi and hi / lo > 10  # the cnn space spans over an order of magnitude
    # a random candidate of the space lies inside the range
    import optuna

    study = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=123))
    for _ in range(5):
        cand = space.sample(study.ask())
        flops = measure_cost(build_seeded(cand.family, cand.spec, data, 0), data.input_shape,
                             latency=False).flops
        assert lo <= flops <= hi
    assert scale.accuracy[0] == pytest.approx(majority_accuracy(data))
    assert 0.05 < scale.accuracy[0] < 0.2  # digits: ten balanced classes
    assert scale.accuracy[1] == 0.97 and scale.source == "space"


def test_observed_scale_uses_chance_and_the_trials_seen() -> None:
    scale = observed_scale([[0.5, 300.0], [0.7, 900.0]], NAMES, 0.95, num_classes=4)
    assert scale.accuracy == (0.25, 0.95)
    assert scale.costs == {"flops": (300.0, 900.0)}
    assert scale.source == "observed" and "trials seen" in scale.describe()


def _stopper(front: list[tuple[dict[str, float], float]], flops: float, **kw: Any) -> ParetoStopper:
    return ParetoStopper(front, {"flops": flops}, ["flops"], epochs=20, scale=SCALE, **kw)


def test_stopper_stops_when_even_the_optimistic_point_adds_too_little() -> None:
    stop = _stopper([({"flops": 200.0}, 0.85)], flops=5000.0)
    assert not any(stop.should_stop(e, 0.5) for e in range(1, 6))  # warm-up
    assert stop.should_stop(6, 0.5)
    assert "hypervolume" in (stop.reason or "")


def test_stopper_keeps_a_cheaper_candidate_that_adds_volume() -> None:
    """A cheaper candidate with lower accuracy extends the front: the dominance rule kept it too,
    the gain rule must not stop it."""
    stop = _stopper([({"flops": 5000.0}, 0.85)], flops=150.0)
    assert not any(stop.should_stop(e, 0.5) for e in range(1, 20))


def test_stopper_min_gain_is_the_knob() -> None:
    """The same candidate is stopped under a high threshold and kept under a zero one."""
    front = [({"flops": 200.0}, 0.85)]
    lenient = _stopper(front, flops=150.0, min_gain=0.0)
    strict = _stopper(front, flops=150.0, min_gain=0.5)
    epochs = range(1, 8)
    assert not any(lenient.should_stop(e, 0.6) for e in epochs)
    assert any(strict.should_stop(e, 0.6) for e in epochs)
    assert math.isfinite(lenient.base) and lenient.base > 0


def test_space_counts_are_cached_per_space_and_input(tmp_path: Any, monkeypatch: Any) -> None:
    """The second search of a space reads its counts from the cache (no model is built), a
    damaged cache entry is counted again, and another input shape is another entry."""
    import autokd.scale as scale_module

    monkeypatch.setenv("AUTOKD_CACHE", str(tmp_path))
    data, space = load_data("digits"), load_space("mlp")
    first = space_scale(space, data, 0.97, NAMES, CostConfig(latency=False))
    entries = list((tmp_path / "scales").glob("*.json"))
    assert len(entries) == 1

    def no_build(*_: Any, **__: Any) -> None:
        raise AssertionError("counted again")

    monkeypatch.setattr(scale_module, "build_seeded", no_build)
    assert space_scale(space, data, 0.97, NAMES, CostConfig(latency=False)) == first
    entries[0].write_text("{not json")  # damaged: counted again, not trusted
    monkeypatch.setattr(scale_module, "build_seeded", build_seeded)
    assert space_scale(space, data, 0.97, NAMES, CostConfig(latency=False)) == first
    wine = load_data("wine")
    space_scale(space, wine, 0.97, NAMES, CostConfig(latency=False))
    assert len(list((tmp_path / "scales").glob("*.json"))) == 2


def test_latency_range_is_timed_where_the_trials_are(tmp_path: Any, monkeypatch: Any) -> None:
    """A search that ranks by ONNX Runtime latency gets a latency range measured there too,
    not in eager PyTorch (a tiny student's eager latency is several times its ORT latency)."""
    import autokd.scale as scale_module

    monkeypatch.setenv("AUTOKD_CACHE", str(tmp_path))
    seen: list[str] = []
    real = scale_module.runtime_cost

    def spy(model: Any, shape: Any, cfg: CostConfig) -> Any:
        seen.append(cfg.trial_runtime)
        return real(model, shape, cfg)

    monkeypatch.setattr(scale_module, "runtime_cost", spy)
    cost = CostConfig.for_search(runtime="onnxruntime")
    scale = space_scale(load_space("mlp"), load_data("digits"), 0.97, ["accuracy", "latency"],
                        cost)
    assert seen == ["onnxruntime", "onnxruntime"]  # the cheapest and the dearest candidate
    lo, hi = scale.costs["latency"]
    assert 0 < lo <= hi
