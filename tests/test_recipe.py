"""The recipe as a weighted sum of named KD terms: shorthand expansion, ``terms``, the registry
driving CLI choices, YAML validation, DARTS filtering and report labels, and a new term added as
one class."""

from __future__ import annotations

from typing import ClassVar

import pytest
import torch
from torch import Tensor

from autokd.distill import (
    TERMS,
    Batch,
    DistillLoss,
    KDConfig,
    Term,
    names_of_kind,
    recipe_summary,
    register_term,
)
from autokd.errors import ConfigError, SpaceError
from autokd.space import SearchSpace

K = 5


@pytest.mark.parametrize(("kd", "weights"), [
    (KDConfig(), {"kl": 0.9, "ce": 0.09999999999999998}),
    (KDConfig(soft_loss="none", alpha=0.0), {"ce": 1.0}),
    (KDConfig(soft_loss="mse", alpha=1.0), {"mse": 1.0}),
    (KDConfig(alpha=0.5, hint_weight=0.5, relation="gram", relation_weight=2.0,
              attention_weight=1.0),
     {"kl": 0.5, "ce": 0.5, "fitnet": 0.5, "gram": 2.0, "attention": 1.0}),
    (KDConfig(terms={"kl": 0.7, "ce": 0.2, "rkd": 0.0, "fitnet": 1.0}),
     {"kl": 0.7, "ce": 0.2, "fitnet": 1.0}),
])
def test_shorthand_and_terms_expand_to_weights(kd: KDConfig, weights: dict[str, float]) -> None:
    assert kd.validate().weights() == weights


def test_teacher_and_feature_needs_come_from_the_terms() -> None:
    assert KDConfig().uses_teacher and not KDConfig().needs_features
    assert not KDConfig(soft_loss="none", alpha=0.0).uses_teacher
    assert KDConfig(terms={"ce": 1.0, "gram": 1.0}).needs_features
    kd = KDConfig(alpha=0.5, hint_weight=1.0, attention_weight=1.0)
    assert kd.without_features().weights() == {"kl": 0.5, "ce": 0.5}  # what DARTS trains with
    assert KDConfig(terms={"fitnet": 1.0}).without_features().weights() == {"ce": 1.0}


def test_terms_and_shorthand_give_the_same_loss() -> None:
    torch.manual_seed(0)
    logits, y, teacher = torch.randn(8, K), torch.arange(8) % K, torch.randn(8, K)
    shapes = ([(4, 6, 6), (8,)], [(6, 6, 6), (12,)])
    feats = ([torch.randn(8, 4, 6, 6), torch.randn(8, 8)],
             [torch.randn(8, 6, 6, 6), torch.randn(8, 12)])
    values = []
    for kd in (KDConfig(alpha=0.8, hint_weight=0.5, relation="rkd", relation_weight=1.0),
               KDConfig(terms={"kl": 0.8, "ce": 0.2, "fitnet": 0.5, "rkd": 1.0})):
        torch.manual_seed(1)  # same projection initialisation
        loss = DistillLoss(kd, K, *shapes)
        total, _ = loss(logits, y, teacher, progress=0.2, student_features=feats[0],
                        teacher_features=feats[1])
        values.append(total.item())
    assert values[0] == pytest.approx(values[1], rel=1e-6)


@pytest.mark.parametrize(("terms", "match"), [
    ({"kld": 1.0}, "did you mean 'kl'"),
    ({"kl": -1.0}, "terms.kl must be >= 0"),
    ({"kl": 0.0}, "weight > 0"),
    ({}, "non-empty"),
    ({"kl": float("nan")}, "must be a number"),
])
def test_bad_terms_fail_clearly(terms: dict[str, float], match: str) -> None:
    with pytest.raises(ConfigError, match=match):
        KDConfig(terms=terms).validate()


def test_labels_come_from_the_terms() -> None:
    assert KDConfig().summary() == "kl a=0.90 T=4.0 constant"
    assert KDConfig(soft_loss="none", alpha=0.0).summary() == "scratch"
    kd = KDConfig(soft_loss="mse", alpha=0.5, hint_weight=0.5, relation="rkd",
                  relation_weight=1.0)
    assert kd.summary() == "mse a=0.50 hint=0.5:uniform rkd=1.0"
    assert KDConfig(terms={"kl": 0.7, "ce": 0.2}).summary() == "kl=0.7 ce=0.2 T=4.0 constant"
    assert recipe_summary({"soft_loss": "kl", "alpha": 0.3, "extra_key": 1}).startswith("kl a=0.30")
    assert recipe_summary("not a recipe") == ""


def test_yaml_terms_are_parameters_and_rebuild_the_recipe() -> None:
    import optuna

    space = SearchSpace.from_dict({
        "family": "mlp",
        "architecture": {"depth": 1},
        "distillation": {"terms": {"kl": {"float": [0.5, 1.0]}, "ce": 0.1,
                                   "gram": {"choice": [0.0, 1.0]}}},
    })
    assert [p.name for p in space.group("distillation")] == ["terms.kl", "terms.ce", "terms.gram"]
    cand = space.sample(optuna.trial.FixedTrial({"terms.kl": 0.75, "terms.gram": 1.0}))
    assert cand.kd.weights() == {"kl": 0.75, "ce": 0.1, "gram": 1.0}
    again = space.from_params(cand.params)
    assert again.kd.weights() == cand.kd.weights()


@pytest.mark.parametrize(("distillation", "match"), [
    ({"terms": {"kll": 1.0}}, "did you mean 'kl'"),
    ({"terms": {"kl": 0.5}, "alpha": 0.5}, "terms replaces alpha"),
    ({"terms": [1, 2]}, "mapping of KD term"),
    ({"terms": {"kl": {"choice": [-1.0, 1.0]}}}, "terms.kl must be >= 0"),
])
def test_bad_yaml_terms_name_the_key(distillation: dict, match: str) -> None:
    with pytest.raises(SpaceError, match=match):
        SearchSpace.from_dict({"family": "mlp", "distillation": distillation})


def test_a_new_term_is_one_class(monkeypatch: pytest.MonkeyPatch) -> None:
    """Register a logit-L1 term: recipes, validation, the loss and labels pick it up."""
    monkeypatch.setattr(TERMS, "_items", dict(TERMS._items))  # undone after the test

    @register_term("l1logit")
    class L1LogitLoss(Term):
        """Absolute logit difference (a toy term for this test)."""

        kind: ClassVar[str] = "soft"
        importance_weighted: ClassVar[bool] = True

        seen_steps: ClassVar[list[int]] = []

        def forward(self, batch: Batch) -> Tensor:
            self.seen_steps.append(batch.step)
            return (batch.logits - batch.target_logits()).abs().mean(dim=-1)

    assert "l1logit" in names_of_kind("soft")
    kd = KDConfig(soft_loss="l1logit", alpha=0.5).validate()  # the shorthand knows it too
    logits, y, teacher = torch.randn(4, K), torch.arange(4) % K, torch.randn(4, K)
    total, parts = DistillLoss(kd, K)(logits, y, teacher, progress=0.0, step=7)
    assert L1LogitLoss.seen_steps == [7]  # the batch record carries the step
    assert parts["l1logit"] == pytest.approx((logits - teacher).abs().mean().item(), rel=1e-6)
    assert kd.summary() == "l1logit a=0.50"
    assert total.item() == pytest.approx(0.5 * parts["l1logit"] + 0.5 * parts["ce"], rel=1e-6)


def test_cli_choices_come_from_the_registry() -> None:
    from autokd.cli import build_parser

    parser = build_parser()
    distill = parser._subparsers._group_actions[0].choices["distill"]
    actions = {a.dest: a for a in distill._actions}
    assert actions["soft_loss"].choices == [*names_of_kind("soft"), "none"]
    assert actions["relation"].choices == ["none", *names_of_kind("relation")]
    assert all(name in actions["terms"].help for name in TERMS.names())
