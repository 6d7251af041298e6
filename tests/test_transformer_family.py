"""The ``transformer`` family: builds on patches (2-D, 1-D) and token ids, masks padding, exposes
its tap groups, counts FLOPs exactly, reloads token students without the data, and searches."""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import pytest
import torch
from torch.nn.attention import SDPBackend, sdpa_kernel
from torch.utils.flop_counter import FlopCounterMode

from autokd.config import CostConfig, TrainConfig
from autokd.cost import count_flops, elementwise_flops, measure_cost, torch_flop_count
from autokd.data.schema import TokenInfo
from autokd.distill import KDConfig
from autokd.distill.hooks import FeatureHooks
from autokd.errors import ConfigError
from autokd.models import build_student, default_family, family_for, get_family
from autokd.models.transformer import TAP_GROUPS
from autokd.teachers import load_checkpoint, save_checkpoint
from tests._tokens import LENGTH, PAD, VOCAB, token_splits

K = 5
TOKENS = TokenInfo(vocab_size=VOCAB, pad_id=PAD, max_length=LENGTH, tokenizer="hand:40")
SPEC = {"layers": 2, "hidden": 16, "heads": 4, "mlp_ratio": 2}
# (spec, input shape, tokens): patches 2-D (dividing and padded), patches 1-D, token ids
CASES: list[tuple[dict[str, Any], tuple[int, ...], TokenInfo | None]] = [
    ({**SPEC, "patch": 2}, (1, 8, 8), None),
    ({**SPEC, "patch": 5, "pooling": "mean"}, (3, 8, 7), None),
    ({**SPEC, "patch": 4}, (1, 40), None),
    ({**SPEC, "patch": 8, "layers": 3}, (2, 37), None),
    ({**SPEC, "heads": 2}, (LENGTH,), TOKENS),
    ({**SPEC, "pooling": "mean", "layers": 1}, (LENGTH,), TOKENS),
]
IDS = [f"{'tokens' if t else 'patch'}-{'x'.join(map(str, s))}-{c.get('pooling', 'cls')}"
       for c, s, t in CASES]


def _input(shape: tuple[int, ...], tokens: TokenInfo | None, n: int = 4) -> torch.Tensor:
    """A batch; token rows are padded to lengths L, L-3, 2, 1 (the last: CLS alone)."""
    gen = torch.Generator().manual_seed(1)
    if tokens is None:
        return torch.randn(n, *shape, generator=gen)
    ids = torch.randint(1, tokens.vocab_size, (n, *shape), generator=gen)
    for row, keep in enumerate([shape[0], shape[0] - 3, 2, 1][:n]):
        ids[row, keep:] = tokens.pad_id
    return ids


def _sequence(shape: tuple[int, ...], spec: dict[str, Any], tokens: TokenInfo | None) -> int:
    """L: token count, or 1 + the number of (edge-padded) patches."""
    if tokens is not None:
        return shape[0]
    return 1 + math.prod(math.ceil(side / spec["patch"]) for side in shape[1:])


def _hand_macs(spec: dict[str, Any], shape: tuple[int, ...], tokens: TokenInfo | None) -> int:
    """Multiply-adds by hand: patch conv, q/k/v/out projections, QK^T and AV, MLP, head."""
    d, r, n = spec["hidden"], spec["mlp_ratio"], spec["layers"]
    seq = _sequence(shape, spec, tokens)
    patch = 0 if tokens else (seq - 1) * shape[0] * spec["patch"] ** (len(shape) - 1) * d
    layer = 4 * seq * d * d + 2 * seq * seq * d + 2 * seq * d * r * d
    return patch + n * layer + d * K


def _hand_params(spec: dict[str, Any], shape: tuple[int, ...], tokens: TokenInfo | None) -> int:
    d, r, n = spec["hidden"], spec["mlp_ratio"], spec["layers"]
    seq = _sequence(shape, spec, tokens)
    if tokens is not None:
        embed = tokens.vocab_size * d + seq * d
    else:
        embed = shape[0] * spec["patch"] ** (len(shape) - 1) * d + d + d + seq * d
    layer = 4 * (d * d + d) + 2 * 2 * d + (d * r * d + r * d) + (r * d * d + d)
    return embed + n * layer + 2 * d + d * K + K


# -- building, forward, backward -------------------------------------------------------------
@pytest.mark.parametrize(("spec", "shape", "tokens"), CASES, ids=IDS)
def test_builds_runs_and_backpropagates(spec: dict[str, Any], shape: tuple[int, ...],
                                        tokens: TokenInfo | None) -> None:
    torch.manual_seed(0)
    model = build_student("transformer", spec, shape, K, tokens=tokens)
    assert model.kind == ("tokens" if tokens else "image" if len(shape) == 3 else "signal")
    out = model(_input(shape, tokens))
    assert out.shape == (4, K) and torch.isfinite(out).all()
    out.sum().backward()
    grads = {n: p.grad for n, p in model.named_parameters()}
    assert all(g is not None for g in grads.values())
    if tokens is not None:  # the padding row of the embedding never learns
        assert torch.count_nonzero(grads["embed.tokens.weight"][PAD]) == 0
        assert model.spec["vocab_size"] == VOCAB and model.spec["patch"] is None


def test_spec_is_normalised_and_token_students_rebuild_without_the_data(tmp_path: Path) -> None:
    model = build_student("transformer", {"hidden": 8, "heads": 2}, (LENGTH,), K, tokens=TOKENS)
    assert get_family("transformer").normalise(dict(model.spec)) == model.spec
    path = save_checkpoint(model.eval(), tmp_path / "student.pt")
    again, payload = load_checkpoint(path)  # (family, spec, input shape) only: no TokenInfo
    assert again.kind == "tokens" and payload["spec"]["pad_id"] == PAD
    x = _input((LENGTH,), TOKENS)
    assert torch.equal(again(x), model(x))


@pytest.mark.parametrize(("spec", "shape", "tokens", "match"), [
    ({"hidden": 30, "heads": 4}, (1, 40), None, "hidden 30 must be a multiple of heads 4"),
    ({"patch": 9}, (1, 8, 8), None, r"patch 9 is larger than the input \(1, 8, 8\)"),
    ({"pooling": "max"}, (1, 40), None, "pooling must be one of cls, mean"),
    ({"layers": 0}, (1, 40), None, "layers must be an integer"),
    ({"dropout": 1.0}, (1, 40), None, "dropout"),
    ({"pad_id": 0}, (1, 40), None, "pad_id is for token ids"),
    ({"vocab_size": 10}, (LENGTH,), None, "needs pad_id"),
    ({"vocab_size": 10, "pad_id": 10}, (LENGTH,), None, "pad_id must be an integer in 0..9"),
    ({"vocab_size": 10, "pad_id": 0}, (1, 40), None, r"need .*input"),
    ({}, (13,), None, r"need .*input.*tabular with shape \(13,\)"),
    ({}, (1, 40), TOKENS, r"need .*input.*tokens with shape \(1, 40\)"),
])
def test_bad_specs_and_inputs_are_one_clear_line(spec: dict[str, Any], shape: tuple[int, ...],
                                                 tokens: TokenInfo | None, match: str) -> None:
    with pytest.raises(ConfigError, match=match) as info:
        build_student("transformer", spec, shape, K, tokens=tokens)
    assert "\n" not in str(info.value)


def test_token_input_kind_is_checked_for_every_family() -> None:
    assert family_for("tokens").name == "transformer"
    assert default_family((LENGTH,), TOKENS) == "transformer"
    assert default_family((LENGTH,)) == "mlp"  # without TokenInfo a rank-1 sample is tabular
    for family in ("mlp", "cnn1d"):
        with pytest.raises(ConfigError, match=rf"{family} students need .*tokens with shape"):
            build_student(family, {}, (LENGTH,), K, tokens=TOKENS)
    with pytest.raises(ConfigError, match="unknown input kind 'text'"):
        get_family("mlp").check_input((LENGTH,), "text")


# -- attention: fused == explicit, padding, taps ---------------------------------------------
@pytest.mark.parametrize(("spec", "shape", "tokens"), CASES, ids=IDS)
def test_fused_and_explicit_attention_agree(spec: dict[str, Any], shape: tuple[int, ...],
                                            tokens: TokenInfo | None) -> None:
    torch.manual_seed(0)
    model = build_student("transformer", spec, shape, K, tokens=tokens).eval()
    with torch.no_grad():
        for p in model.parameters():  # far from init, so a wrong mask shows
            p.normal_(0, 0.3)
        x = _input(shape, tokens)
        fused = model(x)
        with sdpa_kernel(SDPBackend.MATH):
            math_backend = model(x)
        model.enable_taps({"attention"})
        explicit = model(x)
    assert torch.allclose(fused, explicit, atol=1e-5) and torch.allclose(math_backend, explicit,
                                                                         atol=1e-5)


def test_padding_is_masked_and_an_all_padding_row_stays_finite() -> None:
    torch.manual_seed(0)
    x = _input((LENGTH,), TOKENS)
    for pooling in ("cls", "mean"):
        model = build_student("transformer", {**SPEC, "pooling": pooling}, (LENGTH,), K,
                              tokens=TOKENS).eval()
        for taps in (set(), {"attention"}):  # fused and explicit paths
            model.enable_taps(taps)
            with torch.no_grad():
                out = model(x)
                pad_row = model.embed.tokens.weight[PAD].clone()
                model.embed.tokens.weight[PAD].normal_()  # what a padded position carries
                assert torch.allclose(model(x), out, atol=1e-6)  # ... never reaches the output
                model.embed.tokens.weight[PAD] = pad_row
                other = x.clone()
                other[1, LENGTH - 3:] = 3  # row 1's padded tail becomes real tokens
                changed = model(other)
                assert torch.equal(changed[[0, 2, 3]], out[[0, 2, 3]])  # rows are independent
                assert not torch.allclose(changed[1], out[1])
                assert torch.isfinite(model(torch.full((2, LENGTH), PAD))).all()


def test_tap_groups_have_the_contract_shapes() -> None:
    torch.manual_seed(0)
    model = build_student("transformer", {**SPEC, "layers": 3}, (LENGTH,), K,
                          tokens=TOKENS).eval()
    assert set(model.tap_groups) == set(TAP_GROUPS)
    assert model.feature_taps == model.tap_groups["features"]
    model.enable_taps(set(TAP_GROUPS))
    x = _input((LENGTH,), TOKENS)
    b, length, d, h = 4, LENGTH, SPEC["hidden"], SPEC["heads"]
    want = {"features": (b, d, length), "embedding": (b, length, d), "hidden": (b, length, d),
            "attention": (b, h, length, length), "values": (b, length, d)}
    for group, paths in model.tap_groups.items():
        with FeatureHooks(model, paths) as hooks, torch.no_grad():
            model(x)
            feats = hooks.features
        assert len(feats) == (1 if group == "embedding" else 3)
        assert all(tuple(f.shape) == want[group] for f in feats), group
        if group == "attention":
            valid = (x != PAD)[:, None, None, :]  # (B, 1, 1, L) keys
            for att in feats:
                assert torch.allclose(att.sum(-1), torch.ones(b, h, length), atol=1e-6)
                assert torch.count_nonzero(att.masked_select(~valid.expand_as(att))) == 0
                assert (att.masked_select(valid.expand_as(att)) > 0).all()
        if group == "hidden":  # the last layer's stream, normed, is what the head pools
            assert torch.allclose(model.head(model.norm(feats[-1])[:, 0]), model(x), atol=1e-6)


def test_taps_off_computes_no_attention_probabilities() -> None:
    model = build_student("transformer", SPEC, (1, 40), K).eval()
    calls: list[str] = []
    for name in [*model.tap_groups["attention"], *model.tap_groups["features"]]:
        module = model.get_submodule(name)
        module.register_forward_hook(lambda m, i, o, name=name: calls.append(name))
    x = torch.randn(2, 1, 40)
    model(x)
    assert calls == []  # as built: the bare encoder, no probe runs
    model.enable_taps({"features"})
    model(x)
    assert calls == model.tap_groups["features"]
    calls.clear()
    model.enable_taps(set())
    model(x)
    assert calls == []
    model.enable_taps({"attention"})
    model(x)
    assert sorted(calls) == sorted(model.tap_groups["attention"])
    with pytest.raises(ConfigError, match="unknown tap group.*attn.*known: features"):
        model.enable_taps({"attn"})


# -- costs ---------------------------------------------------------------------------------
@pytest.mark.parametrize(("spec", "shape", "tokens"), CASES, ids=IDS)
def test_flops_and_params_are_exact(spec: dict[str, Any], shape: tuple[int, ...],
                                    tokens: TokenInfo | None) -> None:
    model = build_student("transformer", spec, shape, K, tokens=tokens)
    flops = count_flops(model, shape)
    assert flops == _hand_macs(model.spec, shape, tokens)
    # torch's counter at dispatch level, math backend, on a padded batch of 4
    counter = FlopCounterMode(display=False)
    with sdpa_kernel(SDPBackend.MATH), counter, torch.no_grad():
        model.eval()(_input(shape, tokens))
    assert counter.get_total_flops() // 2 == 4 * flops
    assert torch_flop_count(model, shape) == flops  # the fused kernel, via its formula
    model.enable_taps({"attention"})  # the explicit path counts the same contractions
    assert count_flops(model, shape) == flops
    explicit_elementwise = elementwise_flops(model, shape)
    model.enable_taps(set())
    assert elementwise_flops(model, shape) == explicit_elementwise  # softmax + mask, both paths
    report = measure_cost(model, shape, latency=False)
    assert report.params == _hand_params(model.spec, shape, tokens) == sum(
        p.numel() for p in model.parameters())


def test_latency_is_measured_for_token_and_patch_students() -> None:
    cfg = CostConfig(warmup=1, repeats=5, batch_size=4, min_block_s=0.001)
    for shape, tokens in (((LENGTH,), TOKENS), ((1, 8, 8), None)):
        model = build_student("transformer", SPEC, shape, K, tokens=tokens)
        report = measure_cost(model, shape, cfg, latency=True)
        assert report.latency_ms is not None and report.latency_ms > 0
        assert report.latency_ms_batch is not None and report.peak_memory_bytes


# -- training, the teacher recipe, the space, search ----------------------------------------
def test_trains_on_token_data_through_the_pipeline() -> None:
    from autokd.pipeline import run_distillation

    data = token_splits()
    run = run_distillation(data, None, "transformer", {"hidden": 16, "heads": 2},
                           KDConfig(soft_loss="none", alpha=0.0),
                           TrainConfig(epochs=2, lr=3e-3, batch_size=32),
                           CostConfig(latency=False))
    assert run.model.kind == "tokens" and run.spec["vocab_size"] == VOCAB
    assert 0.0 <= run.train.test["accuracy"] <= 1.0 and run.cost.flops > 0


def test_teacher_train_cli_on_mnist1d(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    from autokd.cli import main

    out = tmp_path / "teacher.pt"
    assert main(["teacher", "train", "--family", "transformer", "--dataset", "mnist1d",
                 "--num-samples", "200", "--epochs", "1", "--out", str(out), "--device", "cpu",
                 "--json", "--latency-batch", "2"]) == 0
    summary = json.loads(capsys.readouterr().out)
    recipe = get_family("transformer").teacher
    assert summary["family"] == "transformer" and summary["spec"]["layers"] == recipe.spec["layers"]
    model, _ = load_checkpoint(out)
    assert model.kind == "signal" and len(model.blocks) == 6


def test_space_loads_and_samples_buildable_students() -> None:
    import optuna

    from autokd.space import SPACES_DIR, load_space

    text = (SPACES_DIR / "transformer.yaml").read_text()
    assert text.startswith("# ") and "Covers:" in text
    space = load_space("transformer")
    assert space.family == "transformer"
    init = next(p for p in space.params if p.name == "init")
    assert init.choices == ("random", "teacher")
    study = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=0))
    for _ in range(12):
        cand = space.sample(study.ask())
        assert cand.kd.validate().init in ("random", "teacher")
        for shape in ((1, 40), (1, 8, 8)):  # one list of patches fits both built-in datasets
            model = build_student(cand.family, cand.spec, shape, 10)
            assert model(torch.randn(2, *shape)).shape == (2, 10)


@pytest.mark.slow
def test_tiny_search_with_the_transformer_space(tmp_path: Path,
                                                monkeypatch: pytest.MonkeyPatch) -> None:
    import optuna

    from autokd.cli import main
    from autokd.record import TrialRecord

    monkeypatch.setenv("AUTOKD_CACHE", str(tmp_path / "cache"))
    teacher = tmp_path / "teacher.pt"
    common = ["--dataset", "mnist1d", "--num-samples", "200"]
    assert main(["teacher", "train", "--family", "transformer", *common, "--epochs", "1",
                 "--out", str(teacher), "--device", "cpu", "--json", "--latency-batch", "2"]) == 0
    assert main(["search", "--space", "transformer", *common, "--budget", "2",
                 "--epochs", "1", "--teacher", str(teacher), "--no-latency", "--json",
                 "--results", str(tmp_path), "--name", "tf"]) == 0
    study = optuna.load_study(study_name="tf", storage=f"sqlite:///{tmp_path / 'tf' / 'study.db'}")
    finished = [t for t in study.trials if t.state.is_finished()]
    assert finished and {TrialRecord.of(t).get("family") for t in finished} == {"transformer"}
    trained = [t for t in finished if not TrialRecord.of(t).get("infeasible")]
    assert len(trained) == 2 and all(t.state == optuna.trial.TrialState.COMPLETE
                                     for t in trained)
