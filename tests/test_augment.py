"""Training-time augmentation: the batched ops, the replay cache and the trainer's use of them.

What must hold: a draw is a small parameter row that re-applies exactly (the replay cache keeps
only those rows); replayed teacher logits are the teacher's logits on the re-augmented batch;
one cache serves every trial; online/replay/none all train; a resumed augmented run equals a
straight one; and misuse is one clear error.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch

from autokd import teachers
from autokd.cli import main
from autokd.config import TrainConfig
from autokd.data import DataSplits
from autokd.data.augment import AUGMENTS, PadCrop, ResizedCrop, blank_value, get_augment
from autokd.distill import KDConfig
from autokd.errors import ConfigError, SpaceError
from autokd.models import build_student
from autokd.replay import BatchAugmenter, clear_memory_cache, replay_cache
from autokd.space import load_space
from autokd.teachers import Teacher, load_teacher, save_checkpoint
from autokd.train import Trainer, TrainResult, distill

IMAGE, SIGNAL = (2, 8, 6), (3, 20)
ACTIVE = [n for n in AUGMENTS.names() if n != "none"]


def _batch(shape: tuple[int, ...], n: int = 6) -> torch.Tensor:
    return torch.randn(n, *shape, generator=torch.Generator().manual_seed(1))


def _shapes(name: str) -> list[tuple[int, ...]]:
    return [s for s, kind in ((IMAGE, "image"), (SIGNAL, "signal")) if kind in AUGMENTS.get(name).kinds]


# -- the ops --------------------------------------------------------------------------------
@pytest.mark.parametrize("name", ACTIVE)
def test_ops_are_seeded_shape_preserving_and_replay_exactly(name: str) -> None:
    aug = get_augment(name)
    for shape in _shapes(name):
        x = _batch(shape)
        a1, p1 = aug(x, torch.Generator().manual_seed(5), fill=-0.5)
        a2, p2 = aug(x, torch.Generator().manual_seed(5), fill=-0.5)
        a3, _ = aug(x, torch.Generator().manual_seed(6), fill=-0.5)
        assert a1.shape == x.shape and p1.shape == (len(x), aug.width(len(shape)))
        assert torch.equal(a1, a2) and torch.equal(p1, p2)
        assert not torch.equal(a1, a3)  # another seed, another draw
        assert torch.equal(aug.apply(x, p1, -0.5), a1)  # the stored row re-applies exactly
        # a sub-batch re-applied from its rows is the same as its slice of the whole batch
        assert torch.equal(aug.apply(x[2:5], p1[2:5], -0.5), a1[2:5])


def test_pad_crop_by_hand() -> None:
    x = torch.arange(16.0).view(1, 1, 4, 4)
    aug = PadCrop(flip=True, pad_fraction=0.25)  # pad 1
    centre = aug.apply(x, torch.tensor([[1.0, 1.0, 0.0]]), fill=-9)
    assert torch.equal(centre, x)
    corner = aug.apply(x, torch.tensor([[0.0, 2.0, 0.0]]), fill=-9)  # down by 1, left by 1
    want = torch.full((4, 4), -9.0)
    want[1:, :3] = x[0, 0, :3, 1:]
    assert torch.equal(corner[0, 0], want)
    flipped = aug.apply(x, torch.tensor([[1.0, 1.0, 1.0]]), fill=-9)
    assert torch.equal(flipped, x.flip(-1))
    sig = torch.arange(5.0).view(1, 1, 5)
    shifted = PadCrop(pad_fraction=0.2).apply(sig, torch.tensor([[0.0]]), fill=-1)
    assert shifted.tolist() == [[[-1.0, 0.0, 1.0, 2.0, 3.0]]]


def test_resized_crop_full_box_is_identity_and_flip_mirrors() -> None:
    x = _batch(IMAGE, 2)
    box = torch.tensor([[0.5, 0.5, 1.0, 1.0, 0.0], [0.5, 0.5, 1.0, 1.0, 1.0]])
    out = ResizedCrop().apply(x, box)
    torch.testing.assert_close(out[0], x[0], atol=1e-5, rtol=0)
    torch.testing.assert_close(out[1], x[1].flip(-1), atol=1e-5, rtol=0)
    rows = ResizedCrop().draw(500, IMAGE, torch.Generator().manual_seed(0))
    area = rows[:, 2] * rows[:, 3]
    assert area.max() <= 1.0 and area.min() >= 0.25 * 0.99  # the area range (before clamping)
    assert ((rows[:, 0] - rows[:, 2] / 2) >= -1e-6).all() and ((rows[:, 1] + rows[:, 3] / 2) <= 1 + 1e-6).all()


def test_recipes_refuse_data_they_do_not_fit() -> None:
    with pytest.raises(ConfigError, match="crop_flip.*tabular"):
        get_augment("crop_flip", "tabular")
    with pytest.raises(ConfigError, match="not meaningful for 1-D signals"):
        get_augment("rrc_flip", "signal")
    assert get_augment("crop", "signal").name == "crop"
    with pytest.raises(ConfigError, match="known: crop, crop_flip, none, rrc_flip"):
        get_augment("flip")
    with pytest.raises(ConfigError, match="aug_teacher"):
        TrainConfig(aug_teacher="offline").validate()
    with pytest.raises(ConfigError, match="replay_k"):
        TrainConfig(replay_k=0).validate()


# -- replay cache and trainer ---------------------------------------------------------------
@pytest.fixture(scope="module")
def teacher(digits: DataSplits, tmp_path_factory: pytest.TempPathFactory) -> Teacher:
    torch.manual_seed(0)
    model = build_student("cnn", {"depth": 1, "widths": [16]}, digits.input_shape, 10)
    result = distill(model, digits, None, KDConfig(soft_loss="none", alpha=0.0),
                     TrainConfig(epochs=5, lr=2e-2, batch_size=32, threads=1))
    path = tmp_path_factory.mktemp("teachers") / "t.pt"
    return load_teacher(save_checkpoint(result.model, path), data=digits)


class Counting:
    """A teacher that counts calls of ``logits`` (the replay cache's only use of it)."""

    def __init__(self, inner: Teacher) -> None:
        self.inner, self.calls = inner, 0
        self.hash, self.members = inner.hash, inner.members
        self.module, self.feature_taps = inner.module, inner.feature_taps

    def logits(self, x: torch.Tensor) -> torch.Tensor:
        self.calls += 1
        return self.inner.logits(x)

    def outputs(self, data: DataSplits, split: str) -> torch.Tensor:
        return self.inner.outputs(data, split)


@pytest.fixture()
def fresh_cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setenv("AUTOKD_CACHE", str(tmp_path))
    clear_memory_cache()
    yield tmp_path
    clear_memory_cache()


def _train(data: DataSplits, teacher: Any, epochs: int = 2, seed: int = 0,
           kd: KDConfig | None = None, **cfg: Any) -> TrainResult:
    torch.manual_seed(seed)
    student = build_student("cnn", {"depth": 1, "widths": [8]}, data.input_shape, 10)
    cfg = {"batch_size": 128, **cfg}
    return distill(student, data, teacher, kd or KDConfig(),
                   TrainConfig(epochs=epochs, seed=seed, threads=1, **cfg))


def test_replayed_logits_are_the_teachers_on_the_reaugmented_batch(
        digits: DataSplits, teacher: Teacher, fresh_cache: Path) -> None:
    aug = get_augment("crop_flip")
    cache = replay_cache(teacher, digits, aug, k=3, seed=7)
    assert cache.params.shape == (3, len(digits.x_train), 3)
    assert cache.logits.shape == (1, 3, len(digits.x_train), 10)
    idx = torch.randperm(len(digits.x_train), generator=torch.Generator().manual_seed(0))[:64]
    for epoch in (1, 2, 5):
        params, logits = cache.batch(epoch, idx)
        xa = aug.apply(digits.x_train[idx], params, blank_value(digits.normalizer))
        assert torch.equal(teacher.logits(xa), logits)
    # what the trainer gets per batch is the same pair
    cfg = TrainConfig(augment="crop_flip", replay_k=3, replay_seed=7)
    augmenter = BatchAugmenter(cfg, digits, teacher, True, torch.device("cpu"))
    augmenter.start_epoch(4)
    xa, logits = augmenter(digits.x_train[idx], idx, None)
    assert torch.equal(teacher.logits(xa), logits)
    # each sample cycles through its K draws, starting at its own offset
    draws = torch.stack([cache.draws(e, idx) for e in range(1, 4)])  # (3, B)
    assert (draws.sort(0).values == torch.arange(3)[:, None]).all()
    assert len(set(cache.draws(1, idx).tolist())) > 1
    # the clean logits are not what was replayed
    assert not torch.equal(cache.logits[:, 0], teacher.logits(digits.x_train))


def test_trials_share_one_cache_in_memory_and_on_disk(
        digits: DataSplits, teacher: Teacher, fresh_cache: Path) -> None:
    counting = Counting(teacher)
    per_draw = -(-len(digits.y_train) // 1024)  # the cache is built in chunks of 1024 samples
    _train(digits, counting, epochs=1, seed=0, augment="crop", replay_k=4)
    assert counting.calls == 4 * per_draw  # teacher calls per draw, none per training batch
    _train(digits, counting, epochs=1, seed=1, augment="crop", replay_k=4)
    assert counting.calls == 4 * per_draw  # the second trial reuses the first one's cache
    clear_memory_cache()  # a fresh worker process: the disk copy serves it
    _train(digits, counting, epochs=1, seed=2, augment="crop", replay_k=4)
    assert counting.calls == 4 * per_draw
    files = list((fresh_cache / "replay").glob("*.pt"))
    assert len(files) == 1
    files[0].write_bytes(b"truncated")  # a corrupt file is rebuilt, not trusted
    clear_memory_cache()
    _train(digits, counting, epochs=1, seed=2, augment="crop", replay_k=4)
    assert counting.calls == 8 * per_draw
    _train(digits, counting, epochs=1, seed=2, augment="crop", replay_k=5)
    assert counting.calls == 13 * per_draw  # another K is another cache


def test_online_runs_the_teacher_on_every_augmented_batch(
        digits: DataSplits, teacher: Teacher, fresh_cache: Path) -> None:
    counting = Counting(teacher)
    _train(digits, counting, epochs=2, augment="crop", aug_teacher="online")
    batches = -(-len(digits.x_train) // 128)
    assert counting.calls == 2 * batches


def test_none_online_and_replay_all_learn(digits: DataSplits, teacher: Teacher,
                                         fresh_cache: Path) -> None:
    accs = {}
    for aug, mode in (("none", "replay"), ("crop", "online"), ("crop", "replay"),
                      ("rrc_flip", "replay")):
        result = _train(digits, teacher, epochs=3, augment=aug, aug_teacher=mode, lr=2e-2,
                        batch_size=32)
        losses = [h["train_loss"] for h in result.history]
        assert losses[-1] < 0.9 * losses[0], (aug, mode, losses)
        accs[(aug, mode)] = result.test["accuracy"]
    assert min(accs.values()) > 0.15, accs  # 10 classes: chance is 0.1
    assert len(set(accs.values())) == len(accs)  # each mode trained on different targets


def test_scratch_training_augments_without_a_teacher(digits: DataSplits,
                                                     fresh_cache: Path) -> None:
    kd = KDConfig(soft_loss="none", alpha=0.0)
    plain = _train(digits, None, kd=kd, epochs=1)
    again = _train(digits, None, kd=kd, epochs=1, augment="crop")
    same = _train(digits, None, kd=kd, epochs=1, augment="crop")
    assert plain.val != again.val and again.val == same.val


@pytest.mark.parametrize("mode", ["online", "replay"])
def test_resumed_augmented_run_equals_a_straight_run(digits: DataSplits, teacher: Teacher,
                                                     fresh_cache: Path, mode: str) -> None:
    def fit(epochs: int, state: Any = None) -> Trainer:
        torch.manual_seed(0)
        student = build_student("cnn", {"depth": 1, "widths": [8]}, digits.input_shape, 10)
        cfg = TrainConfig(epochs=epochs, schedule_epochs=3, seed=4, batch_size=128, threads=1,
                          augment="crop_flip", aug_teacher=mode, replay_k=2)
        trainer = Trainer(student, digits, cfg, KDConfig(), teacher)
        trainer.keep_state = True
        if state is not None:
            trainer.resume(state)
        trainer.fit()
        return trainer

    straight = fit(3)
    resumed = fit(3, fit(1).state)
    assert straight.state.history == resumed.state.history
    for k, v in straight.state.student.items():
        assert torch.equal(v, resumed.state.student[k]), k


def test_online_needs_a_torch_teacher(digits: DataSplits, teacher: Teacher) -> None:
    class NoModule(Counting):
        def __init__(self, inner: Teacher) -> None:
            super().__init__(inner)
            self.module, self.members = None, [self]

    with pytest.raises(ConfigError, match="use aug_teacher: replay"):
        _train(digits, NoModule(teacher), augment="crop", aug_teacher="online")


def test_a_scikit_learn_teacher_replays_but_cannot_run_online(
        digits: DataSplits, tmp_path: Path, fresh_cache: Path) -> None:
    import joblib
    from sklearn.linear_model import LogisticRegression

    raw = digits.denormalize(digits.x_train).reshape(len(digits.x_train), -1).numpy()
    path = tmp_path / "lr.joblib"
    joblib.dump(LogisticRegression(max_iter=200).fit(raw, digits.y_train.numpy()), path)
    sk = load_teacher(path, trust=True, data=digits)
    with pytest.raises(ConfigError, match="not an nn.Module"):
        _train(digits, sk, augment="crop", aug_teacher="online")
    aug = get_augment("crop")
    cache = replay_cache(sk, digits, aug, k=2)
    xa = aug.apply(digits.x_train, cache.params[1], blank_value(digits.normalizer))
    # the denormalised augmented input (built in chunks: BLAS may round the last bit apart)
    torch.testing.assert_close(sk.logits(xa), cache.logits[:, 1], rtol=0, atol=1e-5)
    assert not torch.allclose(sk.logits(digits.x_train), cache.logits[:, 1], atol=1e-3)
    assert _train(digits, sk, epochs=1, augment="crop").epochs_run == 1


def test_feature_terms_under_replay_run_the_teacher_online(digits: DataSplits, teacher: Teacher,
                                                          fresh_cache: Path) -> None:
    seen: list[torch.Tensor] = []
    handle = teacher.module.register_forward_hook(lambda _m, inp, _o: seen.append(inp[0]))
    try:
        _train(digits, teacher, epochs=1, kd=KDConfig(hint_weight=0.5), augment="crop",
               replay_k=2)
    finally:
        handle.remove()
    batches = [x for x in seen if len(x) <= 128 and len(x) != 2]  # skip shape probes
    assert len(batches) == -(-len(digits.x_train) // 128)
    clean = {tuple(r.flatten().tolist()) for r in digits.x_train[:200]}
    assert any(tuple(r.flatten().tolist()) not in clean for r in batches[0])


# -- space and CLI --------------------------------------------------------------------------
def test_space_training_group_takes_augmentation(tmp_path: Path) -> None:
    yaml = ("family: cnn\narchitecture: {depth: 1, widths: [8]}\n"
            "training: {augment: {choice: [none, crop_flip, rrc_flip]}, "
            "aug_teacher: {choice: [online, replay]}, replay_k: 4}\n")
    path = tmp_path / "s.yaml"
    path.write_text(yaml)
    space = load_space(path)
    cand = space.from_params({"augment": "rrc_flip", "aug_teacher": "online"})
    cfg = cand.train_config(TrainConfig())
    assert (cfg.augment, cfg.aug_teacher, cfg.replay_k) == ("rrc_flip", "online", 4)
    for bad, match in (("training: {augment: {choice: [none, blur]}}", "unknown augmentation"),
                       ("training: {aug_teacher: offline}", "aug_teacher"),
                       ("training: {replay_k: 0}", "replay_k")):
        path.write_text(f"family: cnn\n{bad}\n")
        with pytest.raises(SpaceError, match=match):
            load_space(path)
    path.write_text("family: cnn1d\ntraining: {augment: {choice: [crop, crop_flip]}}\n")
    with pytest.raises(SpaceError, match="crop_flip.*not meaningful for 1-D signals"):
        load_space(path)
    path.write_text("family: cnn1d\ntraining: {augment: {choice: [none, crop]}}\n")
    assert load_space(path).from_params({"augment": "crop"}).train["augment"] == "crop"


@pytest.mark.parametrize("args, message", [
    (["--dataset", "wine", "--augment", "crop_flip"], "'crop_flip' needs image data"),
    (["--augment", "blur"], "unknown augmentation 'blur'"),
    (["--aug-teacher", "offline"], "unknown aug_teacher"),
    (["--replay-k", "0"], "replay_k must be"),
])
def test_cli_refuses_bad_augmentation_with_one_line(args: list[str], message: str,
                                                    capsys: pytest.CaptureFixture,
                                                    monkeypatch: pytest.MonkeyPatch) -> None:
    def refuse(*_a: Any, **_k: Any) -> None:
        raise AssertionError("a teacher was built before the options were checked")

    monkeypatch.setattr(teachers, "default_teacher", refuse)
    monkeypatch.setattr(teachers, "load_teachers", refuse)
    code = main(["distill", *args, "--epochs", "1"])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and len(err) == 1 and message in err[0], err


@pytest.mark.slow
def test_benchmark_quick_run(tmp_path: Path) -> None:
    """``benchmarks/augment.py --quick`` runs end to end and writes what it prints."""
    root = Path(__file__).resolve().parents[1]
    env = {**os.environ, "HOME": str(tmp_path), "TMPDIR": str(tmp_path), "AUTOKD_CACHE": "",
           "PYTHONPATH": os.pathsep.join([str(root), os.environ.get("PYTHONPATH", "")])}
    proc = subprocess.run([sys.executable, "benchmarks/augment.py", "--quick"], cwd=root,
                          env=env, capture_output=True, text=True, timeout=600, check=False)
    assert proc.returncode == 0, proc.stderr[-3000:]
    written = json.loads((tmp_path / "autokd-bench-quick" / "augment.json").read_text())
    assert json.loads(proc.stdout) == written
    for mode in ("none", "online", "replay"):
        assert written["test_accuracy"][mode]["n"] == 2
        assert written[f"{mode}_samples_per_s_median"] > 0
    cache = written["replay_cache"]
    assert cache["build_s"]["min"] > cache["disk_load_s"]["max"] > 0  # cold builds, then loads


@pytest.mark.slow
def test_a_search_samples_augmentation_and_its_trials_share_one_cache(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from tests._helpers import quick_study

    monkeypatch.setenv("AUTOKD_CACHE", str(tmp_path / "cache"))
    clear_memory_cache()
    space = ("family: cnn\narchitecture: {depth: 1, widths: {choice: [4, 8]}}\n"
             "training: {lr: 0.01, epochs: 1, augment: crop, aug_teacher: replay, replay_k: 2}\n")
    study = quick_study(tmp_path, "aug", space, budget=3, seed=0)
    done = [t for t in study.trials if t.state.name == "COMPLETE"]
    assert len(done) == 3
    assert len(list((tmp_path / "cache" / "replay").glob("*.pt"))) == 1  # one cache, 3 trials
    clear_memory_cache()


def test_search_refuses_an_augmentation_the_data_cannot_take(
        tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    """mbv2 takes images and signals, so its space may hold crop_flip; on signals that is one
    line and exit 2 before any teacher or trial, not a failure of every trial."""
    rng = np.random.default_rng(0)
    data = tmp_path / "sig.npz"
    np.savez(data, X=rng.normal(size=(60, 1, 16)).astype(np.float32),
             y=np.repeat(np.arange(3), 20))
    space = tmp_path / "s.yaml"
    space.write_text("family: mbv2\narchitecture: {stages: 1, depths: 1, widths: 8}\n"
                     "training: {augment: {choice: [none, crop_flip]}, epochs: 1}\n")
    code = main(["search", "--dataset", f"npz:{data}", "--space", str(space),
                 "--budget", "1", "--results", str(tmp_path / "r"), "--no-latency"])
    err = capsys.readouterr().err.strip()
    assert code == 2 and "Traceback" not in err and len(err.splitlines()) == 1
    assert "training.augment" in err and "not meaningful for 1-D" in err
