"""Teachers: every load format, the trust gate, ensembles, fit checks, and the output cache.

Teachers here are tiny and mostly untrained: loading, caching and checking do not depend on
accuracy, and the few tests that do (scikit-learn on raw features) train in milliseconds.
"""

from __future__ import annotations

import os
import sys
import zipfile
from pathlib import Path
from typing import Any

import joblib
import numpy as np
import pytest
import torch
from sklearn.datasets import load_digits, load_wine
from sklearn.ensemble import RandomForestClassifier
from sklearn.linear_model import LogisticRegression
from torch import nn

from autokd import teachers
from autokd.config import TrainConfig
from autokd.data import DataSplits, load_data
from autokd.distill import KDConfig
from autokd.errors import AutokdError, TeacherError
from autokd.models import build_student
from autokd.teachers import Teacher, load_checkpoint, load_teacher, load_teachers, save_checkpoint
from autokd.train import distill

MOD = "autokd_test_teacher_module"  # the importable module written by ``function_module``


@pytest.fixture(scope="module")
def wine() -> DataSplits:
    return load_data("wine")


def _mlp(data: DataSplits, seed: int, classes: int | None = None) -> nn.Module:
    torch.manual_seed(seed)
    return build_student("mlp", {"depth": 1, "widths": 8}, data.input_shape,
                         classes or data.num_classes).eval()


@pytest.fixture
def ckpt(tmp_path: Path, wine: DataSplits) -> tuple[Path, nn.Module]:
    model = _mlp(wine, seed=1)
    return save_checkpoint(model, tmp_path / "teacher.pt", note="hello"), model


@pytest.fixture(autouse=True)
def isolated_cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """Each test gets its own disk and memory cache, so no test sees another's outputs."""
    root = tmp_path / "cache"
    monkeypatch.setenv("AUTOKD_CACHE", str(root))
    monkeypatch.setattr(teachers, "_OUTPUT_CACHE", {})
    return root


# -- formats -------------------------------------------------------------------------------
def test_autokd_checkpoint_loads_with_spec_meta_and_taps(ckpt, wine: DataSplits) -> None:
    path, model = ckpt
    teacher = load_teacher(path, data=wine)
    member = teacher.members[0]
    assert member.kind == "autokd" and member.meta == {"note": "hello"}
    assert teacher.feature_taps == ["layers.0"]
    with torch.no_grad():
        expected = model(wine.x_val)
    torch.testing.assert_close(teacher.logits(wine.x_val)[0], expected)
    reloaded, payload = load_checkpoint(path)
    assert payload["family"] == "mlp" and reloaded.spec == model.spec


@pytest.mark.parametrize("how", ["script", "trace"])
def test_torchscript_teacher(tmp_path: Path, wine: DataSplits, how: str) -> None:
    model = _mlp(wine, seed=2)
    example = wine.x_val[:4]
    scripted = torch.jit.script(model) if how == "script" else torch.jit.trace(model, example)
    path = tmp_path / f"{how}.pt"
    scripted.save(str(path))
    teacher = load_teacher(path, data=wine)
    assert teacher.members[0].kind == "torchscript"
    with torch.no_grad():
        torch.testing.assert_close(teacher.logits(wine.x_test)[0], model(wine.x_test))


_MODULE_SOURCE = '''
import torch
from torch import nn

SEED = {seed}


def build():
    torch.manual_seed(SEED)
    return nn.Sequential(nn.Linear(13, 6), nn.ReLU(), nn.Linear(6, 3))


def not_a_module():
    return 42
'''


def _write_module(folder: Path, seed: int, monkeypatch: pytest.MonkeyPatch) -> None:
    (folder / f"{MOD}.py").write_text(_MODULE_SOURCE.format(seed=seed))
    monkeypatch.syspath_prepend(str(folder))
    monkeypatch.delitem(sys.modules, MOD, raising=False)  # import this version, not a cached one


@pytest.fixture
def function_module(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    _write_module(tmp_path, 0, monkeypatch)
    yield tmp_path
    sys.modules.pop(MOD, None)


def test_module_function_with_state_dict(function_module: Path, wine: DataSplits) -> None:
    torch.manual_seed(123)
    trained = nn.Sequential(nn.Linear(13, 6), nn.ReLU(), nn.Linear(6, 3)).eval()
    weights = function_module / "weights.pt"
    torch.save(trained.state_dict(), weights)
    teacher = load_teacher(f"{MOD}:build@{weights}", trust=True, data=wine)
    assert teacher.members[0].kind == "module"
    with torch.no_grad():
        torch.testing.assert_close(teacher.logits(wine.x_val)[0], trained(wine.x_val))
    plain = load_teacher(f"{MOD}:build", trust=True, data=wine)
    assert plain.hash != teacher.hash  # other weights, other cache key


def test_module_function_errors(function_module: Path, wine: DataSplits, tmp_path: Path) -> None:
    with pytest.raises(TeacherError, match="--trust"):
        load_teacher(f"{MOD}:build", data=wine)
    with pytest.raises(TeacherError, match=r"not a torch nn\.Module"):
        load_teacher(f"{MOD}:not_a_module", trust=True)
    with pytest.raises(TeacherError, match="cannot build teacher"):
        load_teacher(f"{MOD}:missing_function", trust=True)
    wrong = tmp_path / "wrong.pt"
    torch.save(nn.Linear(4, 2).state_dict(), wrong)
    with pytest.raises(TeacherError, match="does not fit"):
        load_teacher(f"{MOD}:build@{wrong}", trust=True)


def test_module_function_hash_follows_the_code(tmp_path: Path, wine: DataSplits,
                                              monkeypatch: pytest.MonkeyPatch) -> None:
    """Editing the function changes the teacher, so its cached outputs must not be reused."""
    _write_module(tmp_path, 0, monkeypatch)
    first = load_teacher(f"{MOD}:build", trust=True, data=wine)
    before = first.outputs(wine, "val").clone()
    _write_module(tmp_path, 1, monkeypatch)  # same name, new code
    second = load_teacher(f"{MOD}:build", trust=True, data=wine)
    assert second.hash != first.hash
    assert not torch.allclose(second.outputs(wine, "val"), before)
    sys.modules.pop(MOD, None)


def _raw_split(data: DataSplits, split: str) -> np.ndarray:
    """The raw features of a split, recovered only from the normaliser's statistics."""
    x = data.split(split)[0]
    return data.denormalize(x).reshape(len(x), -1).numpy()


def test_denormalize_recovers_raw_features(wine: DataSplits, digits: DataSplits) -> None:
    for data, raw in ((wine, load_wine().data), (digits, load_digits().data)):
        back = _raw_split(data, "test")[:50]  # (50, D)
        nearest = np.abs(back[:, None, :] - raw[None, :, :]).max(-1).min(1)  # (50,)
        assert nearest.max() < 1e-3, data.name


@pytest.fixture(scope="module")
def sklearn_models() -> dict[str, object]:
    """Estimators a user fits on the raw sklearn features (never on autokd's normalised ones)."""
    wine_raw, digits_raw = load_wine(), load_digits()
    logreg = LogisticRegression(max_iter=5000).fit(wine_raw.data, wine_raw.target)
    forest = RandomForestClassifier(n_estimators=15, random_state=0)
    return {"wine": logreg, "digits": forest.fit(digits_raw.data, digits_raw.target)}


@pytest.mark.parametrize("name", ["wine", "digits"])
def test_sklearn_teacher_sees_raw_features(tmp_path: Path, sklearn_models: dict, name: str,
                                           wine: DataSplits, digits: DataSplits) -> None:
    data, est = {"wine": wine, "digits": digits}[name], sklearn_models[name]
    path = tmp_path / "est.joblib"
    joblib.dump(est, path)
    teacher = load_teacher(path, trust=True, data=data)
    assert teacher.members[0].kind == "sklearn" and teacher.module is None
    expected = np.log(np.clip(est.predict_proba(_raw_split(data, "test")), 1e-7, None))
    np.testing.assert_allclose(teacher.outputs(data, "test")[0].numpy(), expected, atol=1e-5)
    assert teacher.accuracy(data, "test") > 0.9  # fed normalised features it would not be
    ensemble = load_teachers([str(path), str(path)], trust=True, data=data)
    torch.testing.assert_close(ensemble.outputs(data, "test")[1], teacher.outputs(data, "test")[0])


def test_sklearn_teacher_needs_trust_and_predict_proba(tmp_path: Path, wine: DataSplits) -> None:
    path = tmp_path / "est.joblib"
    est = LogisticRegression(max_iter=500).fit(wine.x_train.numpy(), wine.y_train.numpy())
    joblib.dump(est, path)
    with pytest.raises(TeacherError, match="--trust"):
        load_teacher(path, data=wine)
    no_proba = tmp_path / "plain.joblib"
    joblib.dump({"not": "an estimator"}, no_proba)
    with pytest.raises(TeacherError, match="predict_proba"):
        load_teacher(no_proba, trust=True, data=wine)


# -- the trust gate ------------------------------------------------------------------------
class _Payload:
    """Unpickling this runs code: it creates the marker file named in ``path``."""

    def __init__(self, path: Path) -> None:
        self.path = path

    def __reduce__(self) -> tuple:
        return (os.system, (f"touch {self.path}",))


def test_pickle_that_runs_code_is_refused_without_trust(tmp_path: Path, wine: DataSplits) -> None:
    marker = tmp_path / "pwned"
    evil = tmp_path / "evil.pt"
    torch.save({"format": "autokd-model", "state_dict": _Payload(marker)}, evil)
    with pytest.raises(TeacherError, match="--trust"):
        load_teacher(evil, data=wine)
    with pytest.raises(TeacherError, match="--trust"):
        load_checkpoint(evil)
    assert not marker.exists()


def test_pickled_module_loads_only_with_trust(tmp_path: Path, wine: DataSplits) -> None:
    model = _mlp(wine, seed=3)
    path = tmp_path / "whole.pt"
    torch.save(model.layers, path)  # a pickled nn.Sequential, not a state dict
    with pytest.raises(TeacherError, match="--trust"):
        load_teacher(path, data=wine)
    with pytest.raises(TeacherError, match="outputs shape"):  # 8 hidden units, not 3 classes
        load_teacher(path, trust=True, data=wine)
    assert load_teacher(path, trust=True).members[0].kind == "pickled-module"


# -- ensembles -----------------------------------------------------------------------------
def test_ensemble_outputs_and_hash(tmp_path: Path, wine: DataSplits) -> None:
    paths = [save_checkpoint(_mlp(wine, seed=s), tmp_path / f"t{s}.pt") for s in (1, 2)]
    ensemble = load_teachers([str(p) for p in paths], data=wine)
    singles = [load_teacher(p, data=wine) for p in paths]
    out = ensemble.outputs(wine, "train")
    assert out.shape == (2, len(wine.x_train), wine.num_classes)
    for i, single in enumerate(singles):
        torch.testing.assert_close(out[i], single.outputs(wine, "train")[0])
    assert len({ensemble.hash, singles[0].hash, singles[1].hash}) == 3
    probs = torch.softmax(out, -1).mean(0)  # (N, K)
    expected = (probs.argmax(1) == wine.y_train).float().mean().item()
    assert ensemble.accuracy(wine, "train") == pytest.approx(expected)


def test_distillation_from_two_teachers(tmp_path: Path, wine: DataSplits) -> None:
    paths = [str(save_checkpoint(_mlp(wine, seed=s), tmp_path / f"t{s}.pt")) for s in (1, 2)]
    ensemble = load_teachers(paths, data=wine)
    weights = {}
    for weighting in ("mean", "confidence"):
        student = _mlp(wine, seed=9).train()
        result = distill(student, wine, ensemble, KDConfig(teacher_weighting=weighting),
                         TrainConfig(epochs=2, batch_size=32))
        assert np.isfinite(result.val["kd_loss"]) and result.epochs_run == 2
        weights[weighting] = torch.cat([p.flatten() for p in result.model.parameters()])
    assert not torch.equal(weights["mean"], weights["confidence"])  # the weighting matters


# -- fit checks and damaged files ------------------------------------------------------------
def test_wrong_number_of_classes_is_rejected(tmp_path: Path, wine: DataSplits) -> None:
    good = save_checkpoint(_mlp(wine, seed=1), tmp_path / "good.pt")
    bad = save_checkpoint(_mlp(wine, seed=1, classes=5), tmp_path / "bad.pt")
    with pytest.raises(TeacherError, match=r"outputs shape \(8, 5\).*3 classes"):
        load_teacher(bad, data=wine)
    with pytest.raises(TeacherError, match="3 classes"):
        load_teachers([str(good), str(bad)], data=wine)


class _NaNNet(nn.Module):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.full((len(x), 3), float("nan"))


def test_teacher_that_fails_on_the_data_is_rejected(tmp_path: Path, wine: DataSplits) -> None:
    other = nn.Sequential(nn.Linear(20, 3))  # expects 20 features; wine has 13
    path = tmp_path / "other.pt"
    torch.jit.script(other).save(str(path))
    with pytest.raises(TeacherError, match=r"fails on a batch of shape \(8, 13\)"):
        load_teacher(path, data=wine)
    nan_path = tmp_path / "nan.pt"
    torch.jit.script(_NaNNet()).save(str(nan_path))
    with pytest.raises(TeacherError, match="NaN"):
        load_teacher(nan_path, data=wine)


@pytest.mark.parametrize("keep", [0, 1, 40, 0.5, -10])
def test_truncated_checkpoint_gives_a_clear_error(ckpt, keep: float, tmp_path: Path) -> None:
    blob = ckpt[0].read_bytes()
    cut = tmp_path / "cut.pt"
    cut.write_bytes(blob[: int(len(blob) * keep) if isinstance(keep, float) else keep])
    with pytest.raises(TeacherError, match=r"cut\.pt") as info:
        load_teacher(cut)
    assert "\n" not in str(info.value)


def test_files_that_are_no_model_give_clear_errors(tmp_path: Path, ckpt) -> None:
    text = tmp_path / "notes.pt"
    text.write_text("this is not a model\n")
    with pytest.raises(TeacherError, match="not a PyTorch checkpoint or TorchScript"):
        load_teacher(text)
    fake_script = tmp_path / "fake_script.pt"
    with zipfile.ZipFile(fake_script, "w") as zf:
        zf.writestr("archive/code/__torch__.py", "garbage")
    with pytest.raises(TeacherError, match="not a loadable TorchScript"):
        load_teacher(fake_script)
    scripted = tmp_path / "scripted.pt"
    torch.jit.script(nn.Linear(13, 3)).save(str(scripted))
    (tmp_path / "cut_script.pt").write_bytes(scripted.read_bytes()[:-200])
    with pytest.raises(TeacherError):
        load_teacher(tmp_path / "cut_script.pt")
    weights_only = tmp_path / "weights_only.pt"
    torch.save(nn.Linear(13, 3).state_dict(), weights_only)
    with pytest.raises(TeacherError, match="not an autokd checkpoint"):
        load_teacher(weights_only)
    with pytest.raises(TeacherError, match="not found"):
        load_teacher(tmp_path / "missing.pt")
    with pytest.raises(TeacherError, match="directory"):
        load_teacher(tmp_path)
    with pytest.raises(TeacherError, match="no teacher"):
        Teacher([])  # an empty ensemble is a user error too
    assert issubclass(TeacherError, AutokdError)


# -- output cache --------------------------------------------------------------------------
def test_outputs_cached_in_memory_and_on_disk(ckpt, wine: DataSplits, isolated_cache: Path,
                                             monkeypatch: pytest.MonkeyPatch) -> None:
    teacher = load_teacher(ckpt[0], data=wine)
    member = teacher.members[0]
    calls: list[int] = []
    real = type(member).logits

    def counting(self, x: torch.Tensor, batch: int = 1024, **kw: Any) -> torch.Tensor:
        calls.append(len(x))
        return real(self, x, batch, **kw)

    monkeypatch.setattr(type(member), "logits", counting)
    first = teacher.outputs(wine, "val")
    assert teacher.outputs(wine, "val") is first and calls == [len(wine.x_val)]  # memory
    files = list((isolated_cache / "outputs").glob(f"{teacher.hash}-{wine.split_hash}-val.pt"))
    assert len(files) == 1
    monkeypatch.setattr(teachers, "_OUTPUT_CACHE", {})
    torch.testing.assert_close(teacher.outputs(wine, "val"), first)
    assert len(calls) == 1  # from disk, not recomputed
    files[0].write_bytes(b"corrupt")
    monkeypatch.setattr(teachers, "_OUTPUT_CACHE", {})
    torch.testing.assert_close(teacher.outputs(wine, "val"), first)
    assert len(calls) == 2  # recomputed, and the cache file is repaired
    assert torch.load(files[0], weights_only=True).shape == first.shape
