"""Data-free distillation (``--data-free N``): DeepInversion synthesis, its cache and wiring.

A tiny BN teacher (one conv stage, 3 epochs on digits) and few synthesis steps keep this fast;
what is checked is that the optimisation does what it claims (BN statistics and targets met,
far better than the noise it starts from), that it never reads the real train split, that it
is deterministic and cached under a hash that names it, and that the CLI, a search and a worker
joining it all see the same synthetic split.
"""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import pytest
import torch

from autokd import datafree
from autokd.cli import main
from autokd.config import CostConfig, DataConfig, SearchConfig, SearchSettings, TrainConfig
from autokd.data import DataSplits
from autokd.distill import KDConfig
from autokd.errors import ConfigError, DataError, StudyError, TeacherError
from autokd.models import build_student
from autokd.pipeline import run_distillation
from autokd.record import SearchRecord, count_done
from autokd.report.gather import report_data
from autokd.report.text import summary_rows
from autokd.search import run_search
from autokd.teachers import Teacher, _Member, load_teacher, save_checkpoint
from autokd.workers import WorkerOptions, run_worker
from tests._helpers import TINY_SPACE, update_search_record

FAST = datafree.Synthesis(steps=100, batch=64, lr=0.3)  # converges for the tiny teacher
CHEAP = datafree.Synthesis(steps=8, batch=64)  # determinism and plumbing need no convergence


@pytest.fixture(scope="module")
def bn_teacher_path(digits: DataSplits, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A two-stage BN cnn, ~90 % on digits after a few seconds of training."""
    run = run_distillation(digits, None, "cnn", {"depth": 2, "widths": [8, 16]},
                           KDConfig(soft_loss="none", alpha=0.0),
                           TrainConfig(epochs=8, lr=1e-2, seed=0), CostConfig(latency=False))
    return save_checkpoint(run.model, tmp_path_factory.mktemp("datafree") / "teacher.pt")


@pytest.fixture(scope="module")
def bn_teacher(bn_teacher_path: Path, digits: DataSplits) -> Teacher:
    return load_teacher(bn_teacher_path, data=digits)


@pytest.fixture()
def fresh_cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setenv("AUTOKD_CACHE", str(tmp_path / "cache"))
    return tmp_path / "cache"


def _bn_loss(teacher: Teacher, x: torch.Tensor) -> float:
    """Sum over BN layers of the distance of the batch's statistics from the running ones."""
    losses: list[float] = []

    def hook(m: torch.nn.Module, inputs: tuple[torch.Tensor, ...], _out: object) -> None:
        h = inputs[0]
        dims = [d for d in range(h.ndim) if d != 1]
        losses.append(float((h.mean(dims) - m.running_mean).norm()
                            + (h.var(dims, unbiased=False) - m.running_var).norm()))

    handles = [b.register_forward_hook(hook) for b in datafree.bn_layers(teacher)]
    with torch.no_grad():
        teacher.module.eval()(x)
    for h in handles:
        h.remove()
    return sum(losses)


def test_synthesis_matches_bn_statistics_and_targets(digits: DataSplits, bn_teacher: Teacher,
                                                     fresh_cache: Path) -> None:
    syn = datafree.synthesize(digits, bn_teacher, 128, seed=0, cfg=FAST)
    assert syn.x_train.shape == (128, *digits.input_shape) and torch.isfinite(syn.x_train).all()
    assert torch.bincount(syn.y_train, minlength=10).tolist() == [13] * 8 + [12] * 2
    info = syn.meta["data_free"]
    assert info["target_hit_rate"] >= 0.9 and info["n"] == 128 and info["steps"] == FAST.steps
    hit = (bn_teacher.logits(syn.x_train)[0].argmax(1) == syn.y_train).float().mean()
    assert hit.item() == pytest.approx(info["target_hit_rate"], abs=1e-3)
    noise = torch.randn((64, *digits.input_shape), generator=torch.Generator().manual_seed(0))
    # the noise synthesis starts from scores badly; the optimised inputs reach real data's level
    assert _bn_loss(bn_teacher, syn.x_train[:64]) < 0.3 * _bn_loss(bn_teacher, noise)
    assert _bn_loss(bn_teacher, syn.x_train[:64]) < 2 * _bn_loss(bn_teacher, digits.x_val[:64])
    # val and test are the real splits, untouched; the description says what train is
    assert syn.x_val is digits.x_val and syn.y_test is digits.y_test
    assert syn.describe()["sizes"]["train"] == 128 and "data_free" in syn.describe()


def test_the_real_train_split_is_never_read(digits: DataSplits, bn_teacher: Teacher,
                                            tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("AUTOKD_CACHE", str(tmp_path / "a"))
    clean = datafree.synthesize(digits, bn_teacher, 40, seed=3, cfg=CHEAP)
    poisoned = dataclasses.replace(digits, x_train=torch.full_like(digits.x_train, float("nan")),
                                   y_train=torch.full_like(digits.y_train, -7))
    monkeypatch.setenv("AUTOKD_CACHE", str(tmp_path / "b"))  # recomputed, not read from a
    again = datafree.synthesize(poisoned, bn_teacher, 40, seed=3, cfg=CHEAP)
    assert torch.equal(clean.x_train, again.x_train) and torch.equal(clean.y_train, again.y_train)
    assert not any(t is digits.x_train for t in vars(clean).values())


def test_deterministic_cached_and_hashed(digits: DataSplits, bn_teacher: Teacher,
                                         fresh_cache: Path, caplog: pytest.LogCaptureFixture) -> None:
    a = datafree.synthesize(digits, bn_teacher, 32, seed=1, cfg=CHEAP)
    files = list((fresh_cache / "datafree").iterdir())
    assert [f.name for f in files] == [f"{a.split_hash}.pt"]
    b = datafree.synthesize(digits, bn_teacher, 32, seed=1, cfg=CHEAP)  # from the cache
    assert torch.equal(a.x_train, b.x_train) and a.split_hash == b.split_hash
    files[0].write_bytes(b"not a tensor file")  # a corrupt entry is recomputed, same inputs
    c = datafree.synthesize(digits, bn_teacher, 32, seed=1, cfg=CHEAP)
    assert torch.equal(a.x_train, c.x_train) and "ignoring unusable data-free cache" in caplog.text
    hashes = {a.split_hash, digits.split_hash,
              datafree.synthesize(digits, bn_teacher, 32, seed=2, cfg=CHEAP).split_hash,
              datafree.synthesize(digits, bn_teacher, 33, seed=1, cfg=CHEAP).split_hash,
              datafree.synthesize(digits, bn_teacher, 32, seed=1,
                                  cfg=dataclasses.replace(CHEAP, bn_weight=0.0)).split_hash}
    assert len(hashes) == 5


def test_teachers_without_batch_norm_are_refused(digits: DataSplits, tmp_path: Path,
                                                 capsys: pytest.CaptureFixture[str]) -> None:
    plain = build_student("cnn", {"depth": 1, "widths": [4], "batch_norm": False},
                          digits.input_shape, digits.num_classes)
    path = save_checkpoint(plain, tmp_path / "plain.pt")
    with pytest.raises(TeacherError, match="BatchNorm layers .* has none"):
        datafree.synthesize(digits, load_teacher(path, data=digits), 8, seed=0)
    sk = Teacher([_Member("forest.joblib", "sklearn", "0" * 16, estimator=object())])
    with pytest.raises(TeacherError, match="needs a PyTorch teacher with BatchNorm.*sklearn"):
        datafree.bn_layers(sk)
    code = main(["distill", "--dataset", "digits", "--teacher", str(path), "--data-free", "8"])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and len(err) == 1 and "BatchNorm" in err[0]


@pytest.mark.parametrize(("argv", "needle"), [
    (["--data-free", "0"], "expected a positive integer"),
    (["--data-free", "many"], "expected a positive integer"),
])
def test_bad_data_free_flags(argv: list[str], needle: str,
                             capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exc:
        main(["distill", "--dataset", "digits", *argv])
    assert exc.value.code == 2 and needle in capsys.readouterr().err


@pytest.mark.parametrize("flags", [["--unlabeled", "digits"], ["--train-fraction", "0.5"],
                                   ["--shots-per-class", "3"]])
def test_data_free_refuses_the_real_data_options(flags: list[str],
                                                 capsys: pytest.CaptureFixture[str]) -> None:
    """Real training inputs (a pool, a labelled subset) would break "no training data"."""
    code = main(["distill", "--dataset", "digits", "--data-free", "10", *flags])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and len(err) == 1 and "cannot be combined" in err[0]


def test_bad_values_at_library_level(digits: DataSplits, bn_teacher: Teacher,
                                     monkeypatch: pytest.MonkeyPatch) -> None:
    with pytest.raises(ConfigError, match="data_free must be an integer"):
        DataConfig(data_free=0).validate()
    with pytest.raises(ConfigError, match="data_free must be an integer"):
        DataConfig(data_free=True).validate()
    with pytest.raises(ConfigError, match="--data-free must be an integer"):
        datafree.synthesize(digits, bn_teacher, 0, seed=0)
    with pytest.raises(DataError, match="token ids"):
        datafree.synthesize(dataclasses.replace(digits, kind="tokens"), bn_teacher, 8, seed=0)
    monkeypatch.setenv("AUTOKD_DATAFREE_STEPS", "lots")
    with pytest.raises(ConfigError, match="AUTOKD_DATAFREE_STEPS"):
        datafree.synthesize(digits, bn_teacher, 8, seed=0)


def test_distill_cli_learns_from_synthetic_inputs(bn_teacher_path: Path, fresh_cache: Path,
                                                  monkeypatch: pytest.MonkeyPatch,
                                                  capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.setenv("AUTOKD_DATAFREE_STEPS", "40")
    code = main(["distill", "--dataset", "digits", "--teacher", str(bn_teacher_path),
                 "--data-free", "128", "--epochs", "10", "--lr", "1e-2",
                 "--student", "cnn:depth=2,widths=8/16", "--json"])
    out = json.loads(capsys.readouterr().out)
    assert code == 0
    assert out["dataset"]["sizes"] == {"train": 128, "val": 270, "test": 360}
    assert out["dataset"]["data_free"]["steps"] == 40
    assert out["student"]["test_accuracy"] > 0.2  # chance is 0.1: it learnt from them


def test_search_and_worker_share_the_synthetic_split(bn_teacher_path: Path, tmp_path: Path,
                                                     monkeypatch: pytest.MonkeyPatch) -> None:
    import yaml

    monkeypatch.setenv("AUTOKD_DATAFREE_STEPS", "15")
    monkeypatch.setenv("AUTOKD_CACHE", str(tmp_path / "cache-a"))
    (tmp_path / "tiny.yaml").write_text(yaml.safe_dump({**TINY_SPACE, "training": {
        "lr": 0.005, "epochs": 1}}))
    settings = SearchSettings(cost=CostConfig.for_search(latency=False), pareto_pruning=False)
    cfg = SearchConfig(data=DataConfig(data_free=48), teacher=[str(bn_teacher_path)],
                       space=str(tmp_path / "tiny.yaml"), budget=1, name="df",
                       results=str(tmp_path / "a"), device="cpu", settings=settings)
    outcome = run_search(cfg)
    study = outcome.study
    record = SearchRecord.of(study)
    assert record.data["data_free"] == 48 and record.dataset["sizes"]["train"] == 48
    rows = dict(summary_rows(report_data(study, outcome.paths)))
    assert "train 48 synthesised from the teacher (--data-free)" in rows["dataset"]
    (cached,) = (tmp_path / "cache-a" / "datafree").iterdir()
    assert cached.stem == record.dataset_hash
    # another machine: its own cache, so it synthesises again, and gets the same inputs
    monkeypatch.setenv("AUTOKD_CACHE", str(tmp_path / "cache-b"))
    update_search_record(study, budget={"trials": 2, "seconds": None})
    out = run_worker(WorkerOptions("df", storage=f"sqlite:///{tmp_path / 'a' / 'df' / 'study.db'}",
                                   results=str(tmp_path / "b"), device="cpu", seed=1))
    assert out.ran == 1 and count_done(out.study) == 2
    mine = torch.load(tmp_path / "cache-b" / "datafree" / cached.name, weights_only=True)
    assert torch.equal(mine["x"], torch.load(cached, weights_only=True)["x"])
    monkeypatch.setenv("AUTOKD_DATAFREE_STEPS", "16")  # other inputs: refused, not mixed in
    update_search_record(study, budget={"trials": 3, "seconds": None})
    with pytest.raises(StudyError, match="data differs.*AUTOKD_DATAFREE_STEPS"):
        run_worker(WorkerOptions("df", storage=f"sqlite:///{tmp_path / 'a' / 'df' / 'study.db'}",
                                 results=str(tmp_path / "b"), device="cpu", seed=1))


@pytest.mark.slow
def test_benchmark_quick_runs_every_arm_and_resumes(bn_teacher_path: Path, tmp_path: Path,
                                                    fresh_cache: Path,
                                                    monkeypatch: pytest.MonkeyPatch) -> None:
    """``benchmarks/data_free.py --quick`` (in process, with the tiny teacher): every arm runs,
    the file is what it returns, and a rerun resumes instead of training again."""
    import sys

    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))
    import _common
    import data_free

    monkeypatch.setattr(_common, "QUICK_OUT_DIR", tmp_path)
    argv = ["--quick", "--teacher", str(bn_teacher_path)]
    doc = data_free.main(argv)
    assert json.loads((tmp_path / "data_free.json").read_text()) == json.loads(
        json.dumps(doc, default=str))
    run = doc["runs"]["digits/0"]
    assert run["n"] == 64 and set(data_free.ARMS) <= set(run)
    summary = doc["summary"]["digits"]
    assert summary["data_free"]["n"] == 1 and "teacher" in summary["text"]
    monkeypatch.setattr(data_free, "one_seed", lambda *a: pytest.fail("reran a finished seed"))
    assert data_free.main(argv)["runs"] == doc["runs"]
