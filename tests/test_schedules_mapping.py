"""Temperature schedules and layer mapping (DESIGN.md §2)."""

from __future__ import annotations

import math

import pytest
import torch

from autokd.distill import KDConfig
from autokd.distill.mapping import LearnedMapping, global_pool, map_layers
from autokd.distill.schedules import SCHEDULES, temperature_at
from autokd.errors import ConfigError


def _kd(schedule: str, temperature: float = 4.0, decay: float = 3.0) -> KDConfig:
    return KDConfig(t_schedule=schedule, temperature=temperature, t_decay=decay).validate()


def test_the_recipe_accepts_exactly_the_registered_schedules() -> None:
    assert sorted(SCHEDULES.names()) == ["constant", "exp", "linear"]
    for name in SCHEDULES.names():
        _kd(name)
    with pytest.raises(ConfigError, match="known: constant, exp, linear"):
        _kd("cosine")


@pytest.mark.parametrize("progress", [0.0, 0.3, 1.0])
def test_constant_schedule(progress: float) -> None:
    assert temperature_at(_kd("constant"), progress) == 4.0


def test_exp_schedule_endpoints_and_floor() -> None:
    kd = _kd("exp", temperature=4.0, decay=0.5)
    assert temperature_at(kd, 0.0) == pytest.approx(4.0)
    assert temperature_at(kd, 1.0) == pytest.approx(4.0 * math.exp(-0.5))  # 2.43, above 1
    # 4·e^{-3} = 0.199 would sharpen the targets; the schedule floors it at 1
    assert temperature_at(_kd("exp", temperature=4.0, decay=3.0), 1.0) == 1.0


def test_linear_schedule_endpoints_and_midpoint() -> None:
    kd = _kd("linear", temperature=5.0)
    assert temperature_at(kd, 0.0) == 5.0
    assert temperature_at(kd, 0.5) == pytest.approx(3.0)
    assert temperature_at(kd, 1.0) == pytest.approx(1.0)


def test_progress_is_clamped_and_must_be_finite() -> None:
    kd = _kd("linear", temperature=5.0)
    assert temperature_at(kd, 1.0 + 1e-9) == pytest.approx(1.0)
    assert temperature_at(kd, -0.1) == 5.0
    with pytest.raises(ConfigError):
        temperature_at(kd, float("nan"))


# (n_student, n_teacher) -> expected 0-indexed teacher layer per student layer, worked by hand
# from the 1-indexed rules: uniform ⌊l·L_T/L_S⌋, bottom_up l, top_down L_T − L_S + l.
MAPS = {
    "uniform": {(2, 4): [1, 3], (3, 4): [0, 1, 3], (4, 4): [0, 1, 2, 3], (1, 3): [2]},
    "bottom_up": {(2, 4): [0, 1], (3, 4): [0, 1, 2], (4, 4): [0, 1, 2, 3], (1, 3): [0]},
    "top_down": {(2, 4): [2, 3], (3, 4): [1, 2, 3], (4, 4): [0, 1, 2, 3], (1, 3): [2]},
}


@pytest.mark.parametrize(
    ("strategy", "sizes"), [(s, n) for s, table in MAPS.items() for n in table]
)
def test_map_layers_hand_values(strategy: str, sizes: tuple[int, int]) -> None:
    assert map_layers(*sizes, strategy) == MAPS[strategy][sizes]


@pytest.mark.parametrize("strategy", list(MAPS))
def test_map_layers_stays_in_range_when_student_is_deeper(strategy: str) -> None:
    mapped = map_layers(5, 2, strategy)
    assert len(mapped) == 5
    assert all(0 <= j < 2 for j in mapped)
    assert mapped == sorted(mapped)  # depth order is preserved


def test_map_layers_rejects_learned_unknown_and_empty() -> None:
    with pytest.raises(ConfigError, match="LearnedMapping"):
        map_layers(2, 4, "learned")
    with pytest.raises(ConfigError, match="known: bottom_up, top_down, uniform"):
        map_layers(2, 4, "diagonal")
    with pytest.raises(ConfigError):
        map_layers(0, 4, "uniform")


def test_global_pool_shapes() -> None:
    assert global_pool(torch.ones(2, 3, 4, 5)).shape == (2, 3)
    assert global_pool(torch.ones(2, 3, 7)).shape == (2, 3)
    assert global_pool(torch.ones(2, 6)).shape == (2, 6)
    h = torch.arange(8.0).reshape(1, 2, 2, 2)
    assert global_pool(h).tolist() == [[1.5, 5.5]]


def test_learned_mapping_starts_uniform_and_has_a_projection_per_pair() -> None:
    lm = LearnedMapping([4, 6], [3, 5, 7])
    assert torch.allclose(lm.weights(), torch.full((2, 3), 1 / 3))
    assert lm.proj[1][2].weight.shape == (7, 6)  # student layer 1 (C=6) -> teacher layer 2 (C=7)


def test_learned_mapping_hand_value() -> None:
    # one student layer (C=1), two teacher layers (C=1); projections set to identity
    lm = LearnedMapping([1], [1, 1])
    with torch.no_grad():
        for p in lm.proj[0]:
            p.weight.fill_(1.0)
            p.bias.zero_()
        lm.logits.copy_(torch.tensor([[0.0, math.log(3.0)]]))  # weights 1/4, 3/4
    h_s = torch.full((1, 1, 2, 2), 2.0)  # pools to 2
    h_t = [torch.full((1, 1, 2, 2), 1.0), torch.full((1, 1), 5.0)]  # pool to 1 and 5
    expected = 0.25 * (1 - 2) ** 2 + 0.75 * (5 - 2) ** 2
    assert lm([h_s], h_t).item() == pytest.approx(expected)


def test_learned_mapping_trains_its_weights_and_rejects_wrong_counts() -> None:
    torch.manual_seed(0)
    lm = LearnedMapping([3], [2, 2])
    s = torch.randn(4, 3, 5, 5, requires_grad=True)
    loss = lm([s], [torch.randn(4, 2, 3, 3), torch.randn(4, 2)]).mean()
    loss.backward()
    assert lm.logits.grad is not None and lm.logits.grad.abs().sum() > 0
    assert s.grad is not None
    with pytest.raises(ConfigError):
        lm([s, s], [torch.randn(4, 2), torch.randn(4, 2)])
