"""Hugging Face teachers (``hf:DIR``), the adapter's tap groups, ``hf`` students and their export.

One tiny BERT (4 layers, 32 wide) is fine-tuned on a keyword task and saved with its WordPiece
tokenizer once per session (``tests/_hf_fixture.py``, a few seconds); every test reads it.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

import pytest
import torch

pytest.importorskip("transformers")
pytest.importorskip("tokenizers")

from autokd.data import DataSplits
from autokd.data.schema import TokenInfo
from autokd.distill.hooks import FeatureHooks
from autokd.errors import ConfigError, ExportError, InitError, TeacherError
from autokd.models import build_student
from tests import _hf_fixture as fx


@pytest.fixture(scope="session")
def hf_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("hf") / "teacher"
    fx.save_teacher(root)
    return root


def _splits(x: torch.Tensor, y: torch.Tensor, num_classes: int = 2) -> DataSplits:
    n = len(x)
    a, b = n * 3 // 4, n * 7 // 8
    return DataSplits(
        name="keywords", kind="tokens", input_shape=(x.shape[1],), num_classes=num_classes,
        x_train=x[:a], y_train=y[:a], x_val=x[a:b], y_val=y[a:b], x_test=x[b:], y_test=y[b:],
        split_hash=f"kw{n}-{num_classes}", class_names=[str(i) for i in range(num_classes)],
        normalizer={}, tokens=TokenInfo(vocab_size=200, pad_id=0, max_length=x.shape[1],
                                        tokenizer="hf", cls_id=2))


@pytest.fixture(scope="session")
def data(hf_dir: Path) -> DataSplits:
    """The teacher's own sentences, tokenised with its saved tokenizer (most rows padded, some truncated)."""
    from transformers import AutoTokenizer

    texts, labels = fx.sentences(320, seed=0)
    tok = AutoTokenizer.from_pretrained(str(hf_dir), local_files_only=True)
    return _splits(fx.encode(tok, texts), torch.tensor(labels))


@pytest.fixture(scope="session")
def teacher(hf_dir: Path, data: DataSplits) -> Any:
    from autokd.teachers import load_teacher

    return load_teacher(f"hf:{hf_dir}", data=data)


def _copy(hf_dir: Path, tmp_path: Path) -> Path:
    out = tmp_path / "copy"
    shutil.copytree(hf_dir, out)
    return out


# -- teachers --------------------------------------------------------------------------------
def test_hf_teacher_logits_are_the_models_own(hf_dir: Path, data: DataSplits,
                                              teacher: Any) -> None:
    from transformers import AutoModelForSequenceClassification

    ref = AutoModelForSequenceClassification.from_pretrained(str(hf_dir)).eval()
    x = data.x_test
    with torch.no_grad():
        want = ref(input_ids=x, attention_mask=(x != 0).long()).logits
        got = teacher.module(x)
    assert (x == 0).any(), "the test split must hold padded rows"
    torch.testing.assert_close(got, want, rtol=0, atol=1e-6)
    assert teacher.members[0].kind == "hf" and teacher.feature_taps
    cached = teacher.outputs(data, "test")  # the logits cache serves hf teachers too
    torch.testing.assert_close(cached[0], want, rtol=0, atol=1e-6)
    assert teacher.accuracy(data, "test") > 0.8  # 2 classes: far above chance


def test_hf_teacher_taps_follow_the_contract(teacher: Any, data: DataSplits) -> None:
    module, x = teacher.module, data.x_test[:6]
    groups = module.tap_groups
    assert set(groups) == {"features", "embedding", "hidden", "attention", "values"}
    assert len(groups["hidden"]) == len(groups["attention"]) == len(groups["values"]) == 4
    assert groups["values"][0] == "model.bert.encoder.layer.0.attention.self.value"
    order = ["embedding", "hidden", "attention", "values", "features"]
    module.enable_taps(set(order))
    try:
        assert module.model.config._attn_implementation == "eager"
        hooks = {g: FeatureHooks(module, groups[g]) for g in order}
        with torch.no_grad():
            logits = module(x)
        feats = {g: h.features for g, h in hooks.items()}
    finally:
        for h in hooks.values():
            h.remove()
        module.enable_taps(set())
    B, L, D, H = 6, x.shape[1], 32, 2
    assert feats["embedding"][0].shape == (B, L, D)
    assert all(h.shape == (B, L, D) for h in feats["hidden"] + feats["values"])
    assert all(f.shape == (B, D, L) for f in feats["features"])
    assert torch.equal(feats["features"][-1], feats["hidden"][-1].transpose(1, 2))
    real = x != 0  # (B, L)
    for a in feats["attention"]:
        assert a.shape == (B, H, L, L)
        rows = a.sum(-1)[real[:, None, :].expand(B, H, L)]  # real queries sum to 1
        torch.testing.assert_close(rows, torch.ones_like(rows))
        assert a.masked_select(~real[:, None, None, :]).abs().max() == 0  # padded keys
    with torch.no_grad():
        torch.testing.assert_close(module(x), logits)  # taps change nothing
    assert module.model.config._attn_implementation == "sdpa"  # fast path again
    with FeatureHooks(module, groups["hidden"]) as off, torch.no_grad():
        module(x)
        with pytest.raises(ConfigError, match="did not run"):
            off.features  # noqa: B018 - disabled groups are not computed
    with pytest.raises(ConfigError, match="no tap group"):
        module.enable_taps({"keys"})


def _corrupt_remote_code(d: Path) -> None:
    cfg = json.loads((d / "config.json").read_text())
    cfg["auto_map"] = {"AutoModelForSequenceClassification": "modeling_x.XModel"}
    (d / "config.json").write_text(json.dumps(cfg))


class _Evil:
    def __reduce__(self) -> tuple[Any, ...]:
        return (print, ("code ran",))


def _pickled_weights(d: Path) -> None:
    from safetensors.torch import load_file

    state = load_file(str(d / "model.safetensors"))
    (d / "model.safetensors").unlink()
    torch.save({**state, "extra": _Evil()}, d / "pytorch_model.bin")


def _base_model_only(d: Path) -> None:
    from transformers import BertModel

    for f in d.glob("*.safetensors"):
        f.unlink()
    BertModel(fx.bert_config()).save_pretrained(str(d))


def _no_weights(d: Path) -> None:
    (d / "model.safetensors").unlink()


@pytest.mark.parametrize(("corrupt", "message"), [
    (_corrupt_remote_code, r"runs its own Python code .*pass --trust"),
    (_pickled_weights, "holds pickled Python objects that could run code"),
    (_base_model_only, "not a fine-tuned sequence classifier"),
    (_no_weights, "holds no model weights"),
])
def test_hf_teacher_refuses_unsafe_or_unusable_dirs(hf_dir: Path, tmp_path: Path,
                                                     corrupt: Any, message: str) -> None:
    from autokd.teachers import load_teacher

    d = _copy(hf_dir, tmp_path)
    load_teacher(f"hf:{d}")  # the untouched copy loads
    corrupt(d)
    with pytest.raises(TeacherError, match=message) as err:
        load_teacher(f"hf:{d}")
    assert "\n" not in str(err.value)


def test_hf_teacher_with_pytorch_weights_loads_weights_only(hf_dir: Path, tmp_path: Path,
                                                            data: DataSplits,
                                                            teacher: Any) -> None:
    from safetensors.torch import load_file

    from autokd.teachers import load_teacher

    d = _copy(hf_dir, tmp_path)
    state = load_file(str(d / "model.safetensors"))
    (d / "model.safetensors").unlink()
    torch.save(state, d / "pytorch_model.bin")
    other = load_teacher(f"hf:{d}", data=data)
    with torch.no_grad():
        torch.testing.assert_close(other.module(data.x_test), teacher.module(data.x_test))


def test_hf_teacher_bad_paths_and_mismatched_data(hf_dir: Path, tmp_path: Path,
                                                  data: DataSplits) -> None:
    from autokd.cli import main
    from autokd.teachers import load_teacher

    with pytest.raises(TeacherError, match="teacher directory not found"):
        load_teacher(f"hf:{tmp_path / 'missing'}")
    (tmp_path / "plain").mkdir()
    with pytest.raises(TeacherError, match="not a Hugging Face model directory"):
        load_teacher(f"hf:{tmp_path / 'plain'}")
    three = _splits(data.x_train, data.y_train % 3, num_classes=3)
    with pytest.raises(TeacherError, match="classifies 2 labels, but keywords has 3 classes"):
        load_teacher(f"hf:{hf_dir}", data=three)
    with pytest.raises(TeacherError, match="reads token ids"):
        load_teacher(f"hf:{hf_dir}", data=dataclass_replace(data, kind="tabular", tokens=None))
    assert main(["distill", "--teacher", f"hf:{tmp_path / 'missing'}", "--epochs", "1"]) == 2


def dataclass_replace(obj: Any, **kw: Any) -> Any:
    import dataclasses

    return dataclasses.replace(obj, **kw)


def test_missing_transformers_is_one_line_naming_the_extra(monkeypatch: pytest.MonkeyPatch,
                                                          hf_dir: Path) -> None:
    import sys

    from autokd.teachers import load_teacher

    monkeypatch.setitem(sys.modules, "transformers", None)  # import transformers -> ImportError
    with pytest.raises(TeacherError, match=r"pip install 'autokd\[hf\]'"):
        load_teacher(f"hf:{hf_dir}")


# -- hf students -----------------------------------------------------------------------------
def _student(hf_dir: Path, data: DataSplits, **spec: Any) -> Any:
    torch.manual_seed(1)
    return build_student("hf", {"base": str(hf_dir), **spec}, data.input_shape,
                         data.num_classes, tokens=data.tokens)


def test_hf_student_is_the_teachers_class_with_fewer_layers(hf_dir: Path, data: DataSplits,
                                                            tmp_path: Path) -> None:
    s = _student(hf_dir, data, layers=2)
    assert type(s.model).__name__ == "BertForSequenceClassification"
    assert s.model.config.num_hidden_layers == 2 and s.model.config.hidden_size == 32
    assert s.spec["vocab_size"] == 200 and s.spec["pad_id"] == 0 and s.pad_id == 0
    assert s.feature_taps == ["taps.features.0", "taps.features.1"]
    assert s(data.x_test[:3]).shape == (3, 2)
    narrow = _student(hf_dir, data, layers=1, hidden_scale=0.5, intermediate_scale=0.5)
    assert (narrow.model.config.hidden_size, narrow.model.config.intermediate_size) == (16, 32)
    # the spec holds the teacher's config: the student rebuilds without the directory
    moved = tmp_path / "gone"
    spec = {**s.spec, "base": str(moved)}
    again = build_student("hf", spec, data.input_shape, data.num_classes)
    again.load_state_dict(s.state_dict())
    torch.testing.assert_close(again.eval()(data.x_test), s.eval()(data.x_test))
    assert build_student("hf", {"base": str(hf_dir)}, data.input_shape,
                         2).spec["layers"] == 2  # default: half the teacher's depth
    with pytest.raises(ConfigError, match=r"layers must be an integer in 1\.\.4"):
        _student(hf_dir, data, layers=5)
    with pytest.raises(ConfigError, match="pass --teacher hf:DIR"):
        build_student("hf", {}, data.input_shape, 2)


@pytest.mark.parametrize(("mapping", "picked"), [
    ("uniform", [1, 3]), ("bottom_up", [0, 1]), ("top_down", [2, 3]), ("learned", [1, 3]),
])
def test_teacher_init_copies_exactly_the_mapped_layers(hf_dir: Path, data: DataSplits,
                                                       teacher: Any, mapping: str,
                                                       picked: list[int]) -> None:
    from autokd.models import get_family

    s = _student(hf_dir, data, layers=2)
    t_bert, s_bert = teacher.module.model.bert, s.model.bert
    assert not torch.equal(s_bert.encoder.layer[0].output.dense.weight,
                           t_bert.encoder.layer[picked[0]].output.dense.weight)
    get_family("hf").teacher_init(s, teacher.module, mapping)
    for i, j in enumerate(picked):
        s_state = s_bert.encoder.layer[i].state_dict()
        t_state = t_bert.encoder.layer[j].state_dict()
        assert s_state.keys() == t_state.keys()
        for key in s_state:
            assert torch.equal(s_state[key], t_state[key]), (i, j, key)
        other = next(k for k in range(4) if k not in picked)
        assert not torch.equal(s_state["output.dense.weight"],
                               t_bert.encoder.layer[other].state_dict()["output.dense.weight"])
    for name in ("embeddings", "pooler"):
        for key, v in getattr(s_bert, name).state_dict().items():
            assert torch.equal(v, getattr(t_bert, name).state_dict()[key]), key
    assert torch.equal(s.model.classifier.weight, teacher.module.model.classifier.weight)


def test_teacher_init_refuses_other_shapes(hf_dir: Path, data: DataSplits,
                                           teacher: Any) -> None:
    from autokd.models import get_family

    init = get_family("hf").teacher_init
    narrow = _student(hf_dir, data, layers=2, hidden_scale=0.5)
    with pytest.raises(InitError, match="student hidden_size 16 != teacher hidden_size 32"):
        init(narrow, teacher.module, "uniform")
    with pytest.raises(InitError, match="intermediate_size 32 != teacher intermediate_size 64"):
        init(_student(hf_dir, data, intermediate_scale=0.5), teacher.module, "uniform")
    with pytest.raises(InitError, match="hf:DIR models only"):
        init(_student(hf_dir, data), torch.nn.Linear(2, 2), "uniform")
    assert issubclass(InitError, ConfigError)


# -- what the teacher's directory gives the search ---------------------------------------------
def test_hf_space_fixes_the_base_and_keeps_layers_within_the_teacher(hf_dir: Path) -> None:
    from autokd.hf_teacher import hf_space, hf_student_spec, teacher_dir
    from autokd.space import load_space

    space = load_space("hf")
    assert teacher_dir(["a.pt", f"hf:{hf_dir}"]) == str(hf_dir)
    fixed = hf_space(space, [f"hf:{hf_dir}"])
    layers = next(p for p in fixed.params if p.name == "layers")
    assert max(layers.options()) == 4 < max(next(p for p in space.params
                                                 if p.name == "layers").options())
    cand = fixed.from_params({k: p.options()[-1] for p in fixed.params
                              for k in [p.name] if p.kind != "fixed" and p.kind != "float"}
                             | {p.name: p.low for p in fixed.params if p.kind == "float"})
    assert cand.spec["base"] == str(hf_dir) and cand.spec["layers"] == 4
    with pytest.raises(TeacherError, match="pass --teacher hf:DIR"):
        hf_space(space, ["teacher.pt"])
    assert hf_space(load_space("mlp"), None).family == "mlp"
    assert hf_student_spec("hf", {"layers": 1}, [f"hf:{hf_dir}"]) == {"layers": 1,
                                                                    "base": str(hf_dir)}
    assert hf_student_spec("mlp", {"depth": 1}, [f"hf:{hf_dir}"]) == {"depth": 1}



def test_hf_space_starts_full_width_students_from_the_teacher(hf_dir: Path) -> None:
    """``init`` is searched where the teacher's layers fit, and left random where they cannot."""
    from autokd.hf_teacher import hf_space
    from autokd.space import load_space

    space = hf_space(load_space("hf"), [f"hf:{hf_dir}"])
    given = {"layers": 2, "soft_loss": "mse", "alpha": 0.9, "lr": 1e-3, "init": "teacher"}
    full = space.from_params(given | {"hidden_scale": 1.0, "intermediate_scale": 1.0})
    assert full.kd.init == "teacher" and "init" in full.params
    for scales in ((0.5, 1.0), (1.0, 0.5)):  # InitError for every such student: not offered
        narrow = space.from_params(given | dict(zip(("hidden_scale", "intermediate_scale"),
                                                    scales, strict=True)))
        assert narrow.kd.init == "random" and "init" not in narrow.params


def test_hf_teacher_dir_is_the_text_tokenizer(hf_dir: Path) -> None:
    import dataclasses

    from autokd.config import DataConfig
    from autokd.hf_teacher import hf_data_config

    if "tokenizer" not in {f.name for f in dataclasses.fields(DataConfig)}:
        pytest.skip("DataConfig has no tokenizer field yet (text: data)")
    cfg = DataConfig(source="text:reviews.csv")
    assert hf_data_config(cfg, [f"hf:{hf_dir}"]).tokenizer == str(hf_dir)
    own = dataclasses.replace(cfg, tokenizer="tok.json")
    assert hf_data_config(own, [f"hf:{hf_dir}"]).tokenizer == "tok.json"
    assert hf_data_config(cfg, ["t.pt"]).tokenizer is None


# -- export ----------------------------------------------------------------------------------
@pytest.fixture
def trained_student(hf_dir: Path, data: DataSplits, teacher: Any) -> Any:
    from autokd.models import get_family

    s = _student(hf_dir, data, layers=2)
    get_family("hf").teacher_init(s, teacher.module, "uniform")
    return s.eval()


def test_hf_onnx_takes_ids_and_mask_and_matches_pytorch(hf_dir: Path, data: DataSplits,
                                                        tmp_path: Path) -> None:
    import onnxruntime as ort

    from autokd.export import FORMATS, applicable_formats, run_artifact
    from autokd.export.verify import verify_artifacts

    # large random weights: logits that depend on the mask (the trained teacher's saturate)
    student = _student(hf_dir, data, layers=2).eval()
    with torch.no_grad():
        for p in student.parameters():
            p.add_(torch.randn(p.shape, generator=torch.Generator().manual_seed(p.numel())) * 0.3)
    x = data.x_test
    with torch.no_grad():
        unmasked = student.model(input_ids=x, attention_mask=torch.ones_like(x)).logits
        assert float((unmasked - student(x)).abs().max()) > 1e-3
    fmt = FORMATS.get("hf_onnx")
    path = tmp_path / fmt.filename
    fmt.write(student, path, {}, data.head("test", 2))
    sess = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    assert [i.name for i in sess.get_inputs()] == ["input_ids", "attention_mask"]
    x = data.x_test
    assert (x == 0).any(1).any() and not (x == 0).any(1).all()  # padded and full rows
    with torch.no_grad():
        ref = student(x)
    for ids in (x, x[:, :10]):  # dynamic batch and sequence length
        out = sess.run(None, {"input_ids": ids.numpy(),
                              "attention_mask": (ids != 0).long().numpy()})[0]
        with torch.no_grad():
            want = student(ids) if ids.shape[1] != x.shape[1] else ref
        assert float((torch.from_numpy(out) - want).abs().max()) <= 1e-4
    report = verify_artifacts(student, {"hf_onnx": path}, data)
    assert report["hf_onnx"]["max_abs_diff"] <= 1e-4
    runner = run_artifact(path, "hf_onnx")
    torch.testing.assert_close(runner(x), ref, rtol=0, atol=1e-4)
    assert applicable_formats(None, student)[-2:] == ("hf_onnx", "hf")


def test_hf_save_pretrained_dir_reloads_with_transformers(trained_student: Any,
                                                          data: DataSplits,
                                                          tmp_path: Path) -> None:
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    from autokd.export import FORMATS
    from autokd.export.formats import sha256_path
    from autokd.export.verify import verify_artifacts

    fmt = FORMATS.get("hf")
    path = tmp_path / fmt.filename
    fmt.write(trained_student, path, {"class_names": ["neg", "pos"]}, data.head("test", 2))
    model = AutoModelForSequenceClassification.from_pretrained(str(path)).eval()
    tok = AutoTokenizer.from_pretrained(str(path))
    texts, _ = fx.sentences(8, seed=5)
    ids = fx.encode(tok, texts)
    with torch.no_grad():
        got = model(input_ids=ids, attention_mask=(ids != tok.pad_token_id).long()).logits
        torch.testing.assert_close(got, trained_student(ids), rtol=0, atol=1e-5)
    assert model.config.id2label == {0: "neg", 1: "pos"} and model.config.num_hidden_layers == 2
    assert verify_artifacts(trained_student, {"hf": path}, data)["hf"]["max_abs_diff"] <= 1e-5
    digest = sha256_path(path)
    (path / "config.json").write_text((path / "config.json").read_text() + " ")
    assert sha256_path(path) != digest  # a changed file changes the folder's hash


def test_hf_formats_refuse_other_students(data: DataSplits) -> None:
    from autokd.export import applicable_formats

    mlp = build_student("mlp", {"depth": 1}, (16,), 2)
    assert applicable_formats(None, mlp) == ("pt", "torchscript", "pt2", "onnx")
    with pytest.raises(ExportError, match="cannot hold a mlp student"):
        applicable_formats(("pt", "hf"), mlp)


# -- end to end ------------------------------------------------------------------------------
def _text_source_registered() -> bool:
    from autokd.data.sources import FILE_FORMATS

    return "text" in FILE_FORMATS


@pytest.mark.slow
@pytest.mark.skipif(not _text_source_registered(), reason="needs the text:PATH data source")
def test_hf_end_to_end(hf_dir: Path, tmp_path: Path) -> None:
    """search -> report -> export with a Hugging Face teacher on a CSV of sentences."""
    import csv

    from transformers import AutoModelForSequenceClassification

    from autokd.cli import main

    texts, labels = fx.sentences(240, seed=3)
    file = tmp_path / "reviews.csv"
    with open(file, "w", newline="") as fh:
        w = csv.writer(fh)
        w.writerow(["text", "label"])
        w.writerows(zip(texts, labels))
    results = tmp_path / "results"
    assert main(["search", "--dataset", f"text:{file}", "--text-column", "text", "--target",
                 "label", "--max-length", str(fx.MAX_LENGTH), "--teacher", f"hf:{hf_dir}",
                 "--space", "hf", "--budget", "2", "--epochs", "2", "--name", "hf",
                 "--results", str(results), "--no-latency", "--json"]) == 0
    config = (results / "hf" / "config.yaml").read_text()
    assert f"tokenizer: {hf_dir}" in config  # the teacher's directory tokenised the text
    assert main(["report", str(results / "hf")]) == 0
    out = tmp_path / "export"
    assert main(["export", str(results / "hf"), "--out", str(out), "--json"]) == 0
    card = json.loads((out / "model_card.json").read_text())
    for name in ("student.pt", "student.onnx", "student.hf.onnx", "hf_model"):
        assert name in card["artifacts"], name
    assert all(v["max_abs_diff"] <= 1e-4 for v in card["verification"].values()
               if isinstance(v, dict))
    model = AutoModelForSequenceClassification.from_pretrained(str(out / "hf_model"))
    assert model.config.num_hidden_layers <= 4
    assert (out / "hf_model" / "tokenizer.json").exists()


def test_every_format_of_an_hf_student_verifies(trained_student: Any, data: DataSplits,
                                                tmp_path: Path) -> None:
    """pt, TorchScript and one-input ONNX work through the adapter; the hf formats beside."""
    from autokd.export import applicable_formats, write_artifacts
    from autokd.export.verify import verify_artifacts

    formats = applicable_formats(None, trained_student)
    assert formats == ("pt", "torchscript", "onnx", "hf_onnx", "hf")
    files = write_artifacts(trained_student, tmp_path, formats, {"class_names": ["a", "b"]},
                            data.head("test", 2))
    report = verify_artifacts(trained_student, files, data)
    assert all(report[f]["max_abs_diff"] <= 1e-4 for f in formats)
