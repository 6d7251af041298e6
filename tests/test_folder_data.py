"""``folder:DIR`` image data: layouts, decode options, the disk cache, and streaming.

Every folder is written by the test itself (small PNGs and one JPEG/BMP/WEBP each), so nothing
is downloaded and every expected count is known.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
import textwrap
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from PIL import Image

from autokd.cli import main
from autokd.config import TrainConfig
from autokd.data import image_cache, load_data
from autokd.distill import KDConfig
from autokd.errors import DataError
from autokd.models import build_student
from autokd.teachers import load_teacher, save_checkpoint
from autokd.train import Trainer, seed_everything

SIZE = 16


def _image(rng: np.random.Generator, label: int, mode: str = "RGB", size: int = SIZE) -> Image:
    """A class-dependent pattern plus noise, so a tiny CNN can learn something."""
    base = np.zeros((size, size, 3), np.int64)
    base[..., label % 3] = 100 + 50 * (label // 3)
    pixels = np.clip(base + rng.integers(0, 80, (size, size, 3)), 0, 255).astype(np.uint8)
    img = Image.fromarray(pixels)
    return img.convert(mode) if mode != "RGB" else img


def make_folder(root: Path, per_class: int = 15, classes: int = 3, mode: str = "RGB",
                splits: dict[str, int] | None = None, seed: int = 0) -> Path:
    """``root/<class>/*.png`` or, given ``splits`` {name: per_class}, ``root/<split>/<class>/``."""
    rng = np.random.default_rng(seed)
    layout = splits or {"": per_class}
    for split, count in layout.items():
        for c in range(classes):
            folder = root / split / f"c{c}" if split else root / f"c{c}"
            folder.mkdir(parents=True, exist_ok=True)
            for i in range(count):
                _image(rng, c, mode).save(folder / f"{i:03d}.png")
    return root


@pytest.fixture(autouse=True)
def own_cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A cache per test, so counting decodes never depends on what another test left."""
    monkeypatch.setenv("AUTOKD_CACHE", str(tmp_path / "cache"))
    return tmp_path / "cache"


@pytest.fixture
def rgb(tmp_path: Path) -> Path:
    return make_folder(tmp_path / "rgb")


def user_error(capsys: pytest.CaptureFixture, argv: list[str]) -> str:
    """Run the CLI; assert exit 2, one error line, no traceback; return that line."""
    try:
        code = main(argv)
    except SystemExit as exc:
        code = exc.code
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and err and "Traceback" not in "\n".join(err), err
    if not err[0].startswith("usage:"):
        assert len(err) == 1 and err[0].startswith("autokd: error: "), err
    return err[-1]


# -- layouts and decode options --------------------------------------------------------------
def test_class_folders_load_as_rgb_images(rgb: Path) -> None:
    data = load_data(f"folder:{rgb}")
    assert data.kind == "image" and data.input_shape == (3, SIZE, SIZE)
    assert data.class_names == ["c0", "c1", "c2"] and sum(data.sizes().values()) == 45
    assert not data.streaming and data.x_train.dtype == torch.float32
    assert abs(float(data.x_train.mean())) < 0.1  # normalised on train


def test_grayscale_folder_keeps_one_channel_unless_told(tmp_path: Path) -> None:
    gray = make_folder(tmp_path / "gray", mode="L")
    assert load_data(f"folder:{gray}").input_shape == (1, SIZE, SIZE)
    assert load_data(f"folder:{gray}", channels="3").input_shape == (3, SIZE, SIZE)


def test_mixed_formats_and_alpha_become_rgb(tmp_path: Path) -> None:
    root = make_folder(tmp_path / "mixed", per_class=6, mode="L")
    rng = np.random.default_rng(1)
    _image(rng, 0).save(root / "c0" / "x.JPG", quality=95)
    _image(rng, 1).save(root / "c1" / "x.bmp")
    _image(rng, 2).save(root / "c2" / "x.webp")
    _image(rng, 2, "RGBA").save(root / "c2" / "alpha.PNG")
    (root / "c0" / "notes.txt").write_text("not an image")
    data = load_data(f"folder:{root}")
    assert data.input_shape == (3, SIZE, SIZE) and sum(data.sizes().values()) == 22
    assert load_data(f"folder:{root}", channels="1").input_shape == (1, SIZE, SIZE)


def test_image_size_resizes_and_crops(tmp_path: Path) -> None:
    root = make_folder(tmp_path / "sizes", per_class=5)
    rng = np.random.default_rng(2)
    _image(rng, 1, size=40).crop((0, 0, 40, 24)).save(root / "c1" / "wide.png")
    data = load_data(f"folder:{root}", image_size=8)
    assert data.input_shape == (3, 8, 8) and sum(data.sizes().values()) == 16


def test_predefined_split_folders_are_used(tmp_path: Path) -> None:
    root = make_folder(tmp_path / "split", splits={"train": 10, "val": 3, "test": 4})
    data = load_data(f"folder:{root}")
    assert data.sizes() == {"train": 30, "val": 9, "test": 12}
    assert data.meta["predefined_splits"] == ["test", "train", "val"]
    assert load_data(f"folder:{root}", seed=5).split_hash == data.split_hash  # fixed splits


def test_a_missing_split_folder_is_carved_from_train(tmp_path: Path) -> None:
    root = make_folder(tmp_path / "two", splits={"train": 12, "val": 3})
    sizes = load_data(f"folder:{root}").sizes()
    assert sizes["val"] == 9 and sizes["test"] > 0 and sizes["train"] + sizes["test"] == 36


def test_decode_options_change_the_split_hash(rgb: Path) -> None:
    base = load_data(f"folder:{rgb}").split_hash
    assert load_data(f"folder:{rgb}", channels="1").split_hash != base
    assert load_data(f"folder:{rgb}", image_size=8).split_hash != base
    assert load_data(f"folder:{rgb}", memory_budget="1K").split_hash == base


# -- bad input through the CLI ----------------------------------------------------------------
def _bad_layout(root: Path, case: str) -> tuple[Path, str]:
    """Build one broken folder; return it and a regex its error must match."""
    if case == "missing":
        return root / "nope", "image folder not found"
    if case == "file":
        root.mkdir()
        (root / "f.png").write_bytes(b"x")
        return root / "f.png", "path is a file, not a directory"
    if case == "loose images":
        root.mkdir()
        _image(np.random.default_rng(0), 0).save(root / "a.png")
        return root, r"no class folders in .* \(it holds 1 loose images\)"
    if case == "empty class":
        make_folder(root, per_class=3)
        (root / "c3").mkdir()
        return root, r"class folder .*c3' is empty"
    if case == "only other files":
        make_folder(root, per_class=3)
        (root / "c3").mkdir()
        (root / "c3" / "readme.txt").write_text("hi")
        return root, r"class folder .*c3' holds no images \(1 other files: readme.txt\)"
    if case == "class missing from a split":
        make_folder(root, splits={"train": 4, "val": 2}, classes=3)
        for f in (root / "val" / "c2").iterdir():
            f.unlink()
        (root / "val" / "c2").rmdir()
        return root, "class 'c2' is in train/ but missing from val/"
    if case == "mixed layout":
        make_folder(root / "train", per_class=3)
        make_folder(root / "dogs", per_class=3)
        return root, r"mixes split folders \(train\) with other folders \(dogs\)"
    if case == "sizes differ":
        make_folder(root, per_class=3)
        _image(np.random.default_rng(0), 0, size=20).save(root / "c0" / "big.png")
        return root, "images differ in size: .* pass --image-size N"
    if case == "corrupt":
        make_folder(root, per_class=3)
        (root / "c1" / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\nnot really")
        return root, r"cannot read image .*broken.png'.*--skip-bad-files"
    raise AssertionError(case)


BAD_CASES = ["missing", "file", "loose images", "empty class", "only other files",
             "class missing from a split", "mixed layout", "sizes differ", "corrupt"]


@pytest.mark.parametrize("case", BAD_CASES)
def test_bad_folders_are_one_line_errors(tmp_path: Path, capsys: pytest.CaptureFixture,
                                         case: str) -> None:
    root, pattern = _bad_layout(tmp_path / "bad", case)
    line = user_error(capsys, ["teacher", "train", "--dataset", f"folder:{root}",
                               "--out", str(tmp_path / "t.pt"), "--epochs", "1"])
    assert re.search(pattern, line), line


@pytest.mark.parametrize(("flag", "value", "pattern"), [
    ("--memory-budget", "12Q", "memory_budget must be a size such as 512M"),
    ("--channels", "2", "invalid choice"),
    ("--loader-workers", "-1", "loader_workers must be an integer >= 0"),
])
def test_bad_data_flags_are_refused(tmp_path: Path, capsys: pytest.CaptureFixture, rgb: Path,
                                    flag: str, value: str, pattern: str) -> None:
    line = user_error(capsys, ["teacher", "train", "--dataset", f"folder:{rgb}", flag, value,
                               "--out", str(tmp_path / "t.pt")])
    assert re.search(pattern, line), line


def test_skip_bad_files_records_the_skipped(rgb: Path) -> None:
    (rgb / "c1" / "broken.png").write_bytes(b"garbage")
    (rgb / "c2" / "cut.png").write_bytes((rgb / "c2" / "000.png").read_bytes()[:60])
    with pytest.raises(DataError, match="broken.png|cut.png"):
        load_data(f"folder:{rgb}")
    data = load_data(f"folder:{rgb}", skip_bad_files=True)
    skipped = data.describe()["skipped_files"]
    assert skipped["count"] == 2 and sum(data.sizes().values()) == 45
    assert sorted(skipped["examples"]) == ["c1/broken.png", "c2/cut.png"]


# -- the decoded cache -------------------------------------------------------------------------
@pytest.fixture
def decode_calls(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    calls: list[str] = []
    real = image_cache.decode_image

    def counting(path: Path, *args: Any) -> np.ndarray:
        calls.append(Path(path).name)
        return real(path, *args)

    monkeypatch.setattr(image_cache, "decode_image", counting)
    return calls


def test_second_load_reads_the_cache(rgb: Path, decode_calls: list[str],
                                     monkeypatch: pytest.MonkeyPatch) -> None:
    first = load_data(f"folder:{rgb}")
    assert len(decode_calls) == 45
    hashed: list[str] = []
    real = image_cache._file_sha256
    monkeypatch.setattr(image_cache, "_file_sha256",
                        lambda p: hashed.append(str(p)) or real(p))
    again = load_data(f"folder:{rgb}")
    assert len(decode_calls) == 45 and again.split_hash == first.split_hash
    assert [p for p in hashed if str(rgb) in p] == []  # unchanged files are not re-read
    assert torch.equal(again.x_val, first.x_val)


def test_a_changed_file_invalidates_the_cache(rgb: Path, decode_calls: list[str]) -> None:
    first = load_data(f"folder:{rgb}")
    _image(np.random.default_rng(9), 0).save(rgb / "c0" / "000.png")
    second = load_data(f"folder:{rgb}")
    assert len(decode_calls) == 90 and second.split_hash != first.split_hash


def test_a_corrupt_cache_is_rebuilt(rgb: Path, decode_calls: list[str], own_cache: Path,
                                    caplog: pytest.LogCaptureFixture) -> None:
    first = load_data(f"folder:{rgb}")
    (npy,) = (own_cache / "data").glob("*.npy")
    with open(npy, "r+b") as fh:
        fh.seek(-10, os.SEEK_END)
        fh.write(b"\xff" * 10)
    again = load_data(f"folder:{rgb}")
    assert "is corrupt" in caplog.text and len(decode_calls) == 90
    assert again.split_hash == first.split_hash and torch.equal(again.x_test, first.x_test)
    npy.with_suffix(".json").write_text("{")  # a torn sidecar: rebuilt as well
    load_data(f"folder:{rgb}")
    assert len(decode_calls) == 135


def test_an_interrupted_decode_leaves_no_entry(rgb: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    real, seen = image_cache.decode_image, []

    def dies(path: Path, *args: Any) -> np.ndarray:
        seen.append(path)
        if len(seen) == 20:
            raise KeyboardInterrupt
        return real(path, *args)

    monkeypatch.setattr(image_cache, "decode_image", dies)
    before = set((image_cache.cache_dir() / "data").glob("*"))
    with pytest.raises(KeyboardInterrupt):
        load_data(f"folder:{rgb}")
    added = set((image_cache.cache_dir() / "data").glob("*")) - before
    assert not [p for p in added if p.suffix in (".npy", ".json", ".tmp")]
    monkeypatch.setattr(image_cache, "decode_image", real)
    assert sum(load_data(f"folder:{rgb}").sizes().values()) == 45


# -- in memory vs streamed ---------------------------------------------------------------------
def test_streamed_batches_equal_in_memory_batches(rgb: Path) -> None:
    mem = load_data(f"folder:{rgb}")
    streamed = load_data(f"folder:{rgb}", memory_budget="1K", loader_workers=0)
    assert streamed.streaming and streamed.split_hash == mem.split_hash
    for a, b in zip(mem.batches("train", 8, shuffle=True, generator=torch.Generator().manual_seed(3)),
                    streamed.batches("train", 8, shuffle=True,
                                     generator=torch.Generator().manual_seed(3)), strict=True):
        assert all(torch.equal(p, q) for p, q in zip(a, b, strict=True))
    assert torch.equal(streamed.head("val", 4), mem.x_val[:4])


def _kd_run(data: Any, teacher_path: Path) -> tuple[dict[str, float], dict[str, torch.Tensor]]:
    seed_everything(0)
    student = build_student("cnn", {"depth": 1, "widths": [4]}, data.input_shape,
                            data.num_classes)
    teacher = load_teacher(teacher_path, data=data)
    result = Trainer(student, data, TrainConfig(epochs=2, batch_size=8, threads=1),
                     KDConfig(), teacher).fit()
    return result.val, {k: v.clone() for k, v in result.model.state_dict().items()}


def test_streamed_training_matches_in_memory(tmp_path: Path, rgb: Path) -> None:
    mem = load_data(f"folder:{rgb}")
    seed_everything(1)
    net = build_student("cnn", {"depth": 1, "widths": [8]}, mem.input_shape, mem.num_classes)
    teacher_path = save_checkpoint(net, tmp_path / "teacher.pt")
    val_mem, weights_mem = _kd_run(mem, teacher_path)
    streamed = load_data(f"folder:{rgb}", memory_budget="1K", loader_workers=0)
    val_str, weights_str = _kd_run(streamed, teacher_path)
    assert val_str["accuracy"] == val_mem["accuracy"]
    assert val_str["kd_loss"] == pytest.approx(val_mem["kd_loss"], abs=1e-6)
    for key, value in weights_mem.items():
        assert torch.allclose(value, weights_str[key], atol=1e-6), key


@pytest.mark.parametrize("budget", ["4G", "1K"])
def test_cached_teacher_logits_follow_the_batch(tmp_path: Path, rgb: Path, budget: str) -> None:
    data = load_data(f"folder:{rgb}", memory_budget=budget, loader_workers=0)
    seed_everything(2)
    net = build_student("cnn", {"depth": 1, "widths": [8]}, data.input_shape, data.num_classes)
    teacher = load_teacher(save_checkpoint(net, tmp_path / "teacher.pt"), data=data)
    trainer = Trainer(build_student("cnn", {"depth": 1, "widths": [4]}, data.input_shape,
                                    data.num_classes), data, TrainConfig(batch_size=8), KDConfig(),
                      teacher)
    trainer._t_taps = None  # no feature terms: no cached teacher taps
    cached = teacher.outputs(data, "train")  # (M, N, K)
    batches = list(trainer._shuffled_batches(cached, torch.Generator().manual_seed(0)))
    assert len(batches) == -(-data.sizes()["train"] // 8)
    for xb, _, tb, _, _ in batches:
        assert torch.allclose(tb, teacher.logits(xb), atol=1e-5)


def test_workers_run_with_sigint_ignored_and_exit(tmp_path: Path, rgb: Path) -> None:
    """A background job of a non-interactive shell starts with SIGINT ignored."""
    script = textwrap.dedent(f"""
        import multiprocessing, signal
        signal.signal(signal.SIGINT, signal.SIG_IGN)
        from autokd.data import load_data
        data = load_data("folder:{rgb}", memory_budget="1K", loader_workers=2)
        n = sum(len(y) for _, y, _ in data.batches("train", 4, shuffle=True))
        kept = sorted(p.pid for p in multiprocessing.active_children())
        n += sum(len(y) for _, y, _ in data.batches("train", 4, shuffle=True))
        again = sorted(p.pid for p in multiprocessing.active_children())
        for _ in data.batches("val", 2):
            break  # an abandoned iteration must stop its workers
        data.x_train.close()
        print(n, len(kept), int(kept == again), len(multiprocessing.active_children()))
    """)
    out = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True,
                         timeout=120, env={**os.environ, "PYTHONPATH": os.getcwd()}, check=False)
    assert out.returncode == 0, out.stderr
    n_train = load_data(f"folder:{rgb}").sizes()["train"]
    # the train split's two workers persist across epochs (the same processes serve the second
    # pass), an abandoned iteration stops its own, and close() ends the rest
    assert out.stdout.split() == [str(2 * n_train), "2", "1", "0"]


# -- end to end --------------------------------------------------------------------------------
@pytest.mark.slow
@pytest.mark.parametrize(("budget", "space"), [("4G", "cnn"), ("1K", "mbv2"), ("4G", "resnet")])
def test_search_report_export_on_a_folder(tmp_path: Path, budget: str, space: str,
                                          capsys: pytest.CaptureFixture) -> None:
    root = make_folder(tmp_path / "imgs", per_class=12)
    data = ["--dataset", f"folder:{root}", "--memory-budget", budget, "--loader-workers", "0"]
    teacher = tmp_path / "teacher.pt"
    assert main(["teacher", "train", *data, "--epochs", "2", "--out", str(teacher)]) == 0
    results = tmp_path / "results"
    assert main(["search", *data, "--teacher", str(teacher), "--space", space, "--budget", "2",
                 "--epochs", "1", "--no-latency", "--results", str(results), "--name", "imgs",
                 "--json"]) == 0
    assert main(["report", str(results / "imgs")]) == 0
    assert main(["export", str(results / "imgs"), "--formats", "pt,onnx"]) == 0
    capsys.readouterr()
    assert (results / "imgs" / "report.md").exists()
    assert list((results / "imgs").rglob("student.onnx"))


def test_decoding_a_folder_shows_progress_on_a_pipe(rgb: Path) -> None:
    """A long decode says how far it is: plain lines on a pipe, nothing once loaded from cache."""
    import io

    from autokd.progress import showing

    stream = io.StringIO()
    with showing(stream, tty=False, interval_s=0.0):
        load_data(f"folder:{rgb}")
    assert f"decode {rgb.name}" in stream.getvalue()
    again = io.StringIO()
    with showing(again, tty=False, interval_s=0.0):
        load_data(f"folder:{rgb}")
    assert "decode" not in again.getvalue()


@pytest.mark.parametrize("mode", ["replay", "online"])
def test_augmented_distillation_runs_on_streamed_data(tmp_path: Path, rgb: Path,
                                                      mode: str) -> None:
    """The replay cache is built chunk by chunk from the streamed split, so the split is never
    held whole; online mode runs the teacher on each streamed, augmented batch."""
    results = []
    for budget in ("4G", "1K"):
        data = load_data(f"folder:{rgb}", memory_budget=budget, loader_workers=0)
        seed_everything(2)
        net = build_student("cnn", {"depth": 1, "widths": [8]}, data.input_shape,
                            data.num_classes)
        teacher = load_teacher(save_checkpoint(net, tmp_path / f"t{budget}.pt"), data=data)
        student = build_student("cnn", {"depth": 1, "widths": [4]}, data.input_shape,
                                data.num_classes)
        cfg = TrainConfig(epochs=2, batch_size=8, augment="crop_flip", aug_teacher=mode)
        results.append(Trainer(student, data, cfg, KDConfig(), teacher).fit())
    assert results[0].epochs_run == results[1].epochs_run == 2
    assert results[0].val["accuracy"] == pytest.approx(results[1].val["accuracy"], abs=1e-6)
