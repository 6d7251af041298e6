"""``text:PATH`` data: reading CSV/JSON, the train-only tokenizer, fixed-length ids, the hash.

Every file is written by the test itself (sentences whose class depends on their topic words),
so nothing is downloaded and every expected count is known.
"""

from __future__ import annotations

import csv
import json
import logging
import random
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from autokd.cli import main
from autokd.config import DataConfig
from autokd.data import load_data
from autokd.data.splits import split_indices
from autokd.data.tokenize import SPECIAL_TOKENS, train_tokenizer
from autokd.data.validate import encode_labels
from autokd.errors import DataError

TOPICS = {"sport": ["goal", "match", "team", "coach", "score", "league"],
          "food": ["pizza", "salad", "chef", "taste", "spicy", "bread"],
          "tech": ["laptop", "code", "chip", "software", "robot", "server"]}
FILLER = ["the", "a", "was", "really", "today", "my", "and", "very", "new", "old", "with"]


def sentences(n: int = 90, seed: int = 0, unique: bool = False) -> list[tuple[str, str]]:
    """``(text, label)`` pairs, classes in turn; ``unique`` adds one word no other row has."""
    rng = random.Random(seed)
    rows = []
    for i in range(n):
        label = list(TOPICS)[i % len(TOPICS)]
        words = [rng.choice(FILLER) for _ in range(rng.randint(3, 9))]
        words += rng.sample(TOPICS[label], 2)
        rng.shuffle(words)
        if unique:
            words.append("zq" + "".join("abcdefghij"[int(d)] for d in f"{i:03d}"))
        rows.append((" ".join(words).capitalize() + ".", label))
    return rows


def write_csv(path: Path, rows: list[tuple], header: tuple = ("text", "label"),
              delimiter: str = ",") -> Path:
    with path.open("w", newline="", encoding="utf-8") as f:
        writer = csv.writer(f, delimiter=delimiter)
        writer.writerow(header)
        writer.writerows(rows)
    return path


def write_jsonl(path: Path, rows: list[tuple], keys: tuple = ("text", "label")) -> Path:
    path.write_text("".join(json.dumps(dict(zip(keys, r))) + "\n" for r in rows),
                    encoding="utf-8")
    return path


@pytest.fixture
def news(tmp_path: Path) -> Path:
    return write_csv(tmp_path / "news.csv", sentences())


def user_error(capsys: pytest.CaptureFixture, argv: list[str]) -> str:
    """Run the CLI; assert exit 2, one error line, no traceback; return that line."""
    try:
        code = main(argv)
    except SystemExit as exc:
        code = exc.code
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and err and "Traceback" not in "\n".join(err), err
    assert len(err) == 1 and err[0].startswith("autokd: error: "), err
    return err[0]


# --------------------------------------------------------------------------- reading files

def test_csv_loads_as_token_ids(news: Path) -> None:
    data = load_data(f"text:{news}", max_length=16)
    assert data.kind == "tokens" and data.input_shape == (16,) and data.num_classes == 3
    assert data.class_names == ["food", "sport", "tech"]  # sorted, as other sources
    assert data.x_train.dtype == data.x_test.dtype == torch.int64
    assert data.sizes() == {"train": 58, "val": 14, "test": 18}
    tokens = data.tokens
    assert tokens is not None and tokens.pad_id == 0 and tokens.cls_id == 2
    assert tokens.max_length == 16 and tokens.tokenizer == "wordpiece:4000"
    assert int(data.x_train.max()) < tokens.vocab_size
    assert (data.x_train[:, 0] == tokens.cls_id).all()
    assert data.normalizer == {} and data.denormalize(data.x_test) is data.x_test
    assert data.describe()["tokens"]["vocab_size"] == tokens.vocab_size


def test_jsonl_json_tsv_and_csv_of_the_same_rows_load_the_same(tmp_path: Path) -> None:
    rows = sentences()
    files = [write_csv(tmp_path / "a.csv", rows),
             write_csv(tmp_path / "a.tsv", rows, delimiter="\t"),
             write_jsonl(tmp_path / "a.jsonl", rows)]
    listed = tmp_path / "a.json"
    listed.write_text(json.dumps([{"text": t, "label": y} for t, y in rows]), encoding="utf-8")
    loaded = [load_data(f"text:{p}") for p in [*files, listed]]
    for other in loaded[1:]:
        assert other.split_hash == loaded[0].split_hash
        assert (other.x_test == loaded[0].x_test).all()


def test_other_columns_and_label_types(tmp_path: Path) -> None:
    rows = [(t, {"sport": 7, "food": 3, "tech": 9}[y], "x") for t, y in sentences()]
    path = write_csv(tmp_path / "n.csv", rows, header=("body", "topic", "extra"))
    data = load_data(f"text:{path}", text_column="body", target="topic")
    assert data.class_names == ["3", "7", "9"] and data.num_classes == 3
    flags = [(t, y == "sport") for t, y in sentences(60)]
    data = load_data(f"text:{write_jsonl(tmp_path / 'b.jsonl', flags)}")
    assert data.class_names == ["False", "True"]


def test_texts_that_look_missing_are_texts(tmp_path: Path) -> None:
    rows = [("NA" if i == 0 else t, y) for i, (t, y) in enumerate(sentences())]
    data = load_data(f"text:{write_csv(tmp_path / 'na.csv', rows)}")
    assert sum(data.sizes().values()) == 90


# --------------------------------------------------------------------------- splits

def test_the_split_is_stratified_and_deterministic(news: Path) -> None:
    a, b = load_data(f"text:{news}"), load_data(f"text:{news}")
    assert a.split_hash == b.split_hash and (a.x_val == b.x_val).all()
    for which in ("train", "val", "test"):
        counts = np.bincount(a.split(which)[1].numpy(), minlength=3)
        assert counts.max() - counts.min() <= 1, (which, counts)  # 30 per class, stratified
    c = load_data(f"text:{news}", seed=1)
    assert c.split_hash != a.split_hash and not (c.x_test == a.x_test).all()


def test_the_tokenizer_learns_from_train_texts_only(tmp_path: Path) -> None:
    rows = sentences(unique=True)
    cfg = DataConfig(source=f"text:{write_csv(tmp_path / 'u.csv', rows)}").validate()
    data = load_data(cfg)
    y, names = encode_labels(np.asarray([r[1] for r in rows]), "u")
    parts = split_indices(y, names, cfg, None)
    vocab = json.loads(data.meta["tokenizer_json"])["model"]["vocab"]
    unique = [r[0].split()[-1].rstrip(".") for r in rows]
    assert all(unique[i] in vocab for i in parts["train"])  # whole words: it saw them
    held_out = [unique[i] for s in ("val", "test") for i in parts[s]]
    assert held_out and not any(w in vocab for w in held_out)  # never an id of their own
    unk = SPECIAL_TOKENS.index("[UNK]")
    for x in (data.x_val, data.x_test):  # each held-out word became [UNK] or pieces
        pieces = {t for t, i in vocab.items() if t.startswith("##")}
        piece_ids = {vocab[t] for t in pieces}
        assert all(any(int(i) in piece_ids or int(i) == unk for i in row) for row in x)


def test_training_twice_gives_the_same_json() -> None:
    texts = [t for t, _ in sentences(300, seed=3)]
    for kind in ("wordpiece", "bpe"):
        first = train_tokenizer(texts, kind, 200).to_str()
        assert all(train_tokenizer(texts, kind, 200).to_str() == first for _ in range(5)), kind


def test_another_process_trains_the_same_tokenizer(news: Path) -> None:
    code = (f"from autokd.data import load_data; d = load_data('text:{news}'); "
            "print(d.split_hash, len(d.meta['tokenizer_json']))")
    root = Path(__file__).resolve().parents[1]
    there = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                           check=True, cwd=root, env={"PYTHONPATH": str(root),
                                                      "PATH": "/usr/bin:/bin"}).stdout
    here = load_data(f"text:{news}")
    assert there == f"{here.split_hash} {len(here.meta['tokenizer_json'])}\n"


# --------------------------------------------------------------------------- length and mask

def test_long_texts_are_cut_and_short_ones_padded(tmp_path: Path) -> None:
    rows = [(" ".join(["goal"] * (1 + i % 12)), "ab"[i % 2]) for i in range(40)]
    data = load_data(f"text:{write_csv(tmp_path / 'l.csv', rows)}", max_length=8)
    tokens = data.tokens
    sep = json.loads(data.meta["tokenizer_json"])["model"]["vocab"]["[SEP]"]
    x = data.x_train
    mask = x != tokens.pad_id
    lengths = mask.sum(1)
    assert lengths.max() == 8 and lengths.min() == 3  # [CLS] goal [SEP] .. cut at 8
    for row, valid, n in zip(x, mask, lengths):
        assert row[0] == tokens.cls_id and row[n - 1] == sep
        assert (row[n:] == tokens.pad_id).all() and valid[:n].all()


def test_max_length_with_no_room_for_text_is_refused(news: Path) -> None:
    with pytest.raises(DataError, match="max_length 2 leaves no room for text"):
        load_data(f"text:{news}", max_length=2)


# --------------------------------------------------------------------------- given tokenizers

def test_a_tokenizer_json_file_is_used_as_is(tmp_path: Path, news: Path) -> None:
    trained = load_data(f"text:{news}")
    file = tmp_path / "tok.json"
    file.write_text(trained.meta["tokenizer_json"], encoding="utf-8")
    given = load_data(f"text:{news}", tokenizer=str(file))
    assert (given.x_train == trained.x_train).all() and (given.x_test == trained.x_test).all()
    assert given.tokens.tokenizer.startswith("sha256:")
    assert given.split_hash != trained.split_hash  # trained options are no longer part of it


def test_a_save_pretrained_directory_is_a_tokenizer(tmp_path: Path, news: Path) -> None:
    from transformers import PreTrainedTokenizerFast

    tok = train_tokenizer([t for t, _ in sentences()], "wordpiece", 300)
    PreTrainedTokenizerFast(tokenizer_object=tok, pad_token="[PAD]", unk_token="[UNK]",
                            cls_token="[CLS]", sep_token="[SEP]").save_pretrained(tmp_path / "hf")
    data = load_data(f"text:{news}", tokenizer=str(tmp_path / "hf"))
    assert data.tokens.pad_id == 0 and data.tokens.cls_id == 2
    assert data.tokens.vocab_size == tok.get_vocab_size()


def _word_level(extra: list[str]) -> object:
    from tokenizers import Tokenizer, models, pre_tokenizers

    words = sorted({w.lower().strip(".") for t, _ in sentences() for w in t.split()})
    tok = Tokenizer(models.WordLevel({w: i for i, w in enumerate(["[UNK]", *extra, *words])},
                                     unk_token="[UNK]"))
    tok.pre_tokenizer = pre_tokenizers.Whitespace()
    return tok


def test_the_pad_token_comes_from_the_tokenizer_config(tmp_path: Path, news: Path) -> None:
    from transformers import PreTrainedTokenizerFast

    tok = _word_level(["<blank>"])
    PreTrainedTokenizerFast(tokenizer_object=tok, pad_token="<blank>",
                            unk_token="[UNK]").save_pretrained(tmp_path / "wl")
    data = load_data(f"text:{news}", tokenizer=str(tmp_path / "wl"))
    assert data.tokens.pad_id == 1 and data.tokens.cls_id is None  # no [CLS] added
    assert (data.x_train[:, -1] == 1).any()
    tok.enable_padding(pad_id=0, pad_token="[UNK]")  # padding settings win over names
    tok.save(str(tmp_path / "padded.json"))
    assert load_data(f"text:{news}", tokenizer=str(tmp_path / "padded.json")).tokens.pad_id == 0


def test_a_given_tokenizer_ignores_training_options(news: Path, tmp_path: Path,
                                                    caplog: pytest.LogCaptureFixture) -> None:
    file = tmp_path / "tok.json"
    file.write_text(load_data(f"text:{news}").meta["tokenizer_json"], encoding="utf-8")
    with caplog.at_level(logging.WARNING, logger="autokd.data"):
        a = load_data(f"text:{news}", tokenizer=str(file), vocab_size=99)
    assert "vocab_size=99 ignored" in caplog.text
    assert a.split_hash == load_data(f"text:{news}", tokenizer=str(file)).split_hash


# --------------------------------------------------------------------------- the split hash

def test_the_split_hash_follows_the_tokenizer_and_length(tmp_path: Path, news: Path) -> None:
    base = load_data(f"text:{news}").split_hash
    moved = tmp_path / "elsewhere" / "copy.csv"
    moved.parent.mkdir()
    moved.write_bytes(news.read_bytes())
    same = [load_data(f"text:{moved}"), load_data(f"text:{news}", memory_budget="1G")]
    assert all(d.split_hash == base for d in same)
    changed = [load_data(f"text:{news}", max_length=32),
               load_data(f"text:{news}", vocab_size=64),
               load_data(f"text:{news}", tokenizer_kind="bpe")]
    hashes = {d.split_hash for d in changed}
    assert base not in hashes and len(hashes) == 3
    roomier = load_data(f"text:{news}", vocab_size=5000)  # more than this corpus fills
    assert (roomier.x_train == same[0].x_train).all() and roomier.split_hash != base


# --------------------------------------------------------------------------- the CLI

def _bad(tmp_path: Path, case: str) -> tuple[list[str], str]:
    """Data flags for one bad input, and the pattern its error line must match."""
    good = write_csv(tmp_path / "good.csv", sentences())
    src = [f"text:{good}"]
    if case == "missing file":
        return [f"text:{tmp_path / 'nope.csv'}"], "text file not found: .*nope.csv"
    if case == "empty file":
        (tmp_path / "e.jsonl").write_text("\n\n")
        return [f"text:{tmp_path / 'e.jsonl'}"], "text file .*e.jsonl' is empty"
    if case == "header only":
        (tmp_path / "h.csv").write_text("text,label\n")
        return [f"text:{tmp_path / 'h.csv'}"], "a header but 0 rows"
    if case == "no text column":
        return [*src, "--text-column", "body"], \
            "text column 'body' not in .*; columns: text, label; choose one with text_column"
    if case == "no target column":
        return [*src, "--target", "labels"], \
            "target column 'labels' not in .*did you mean 'label'.*columns: text, label"
    if case == "one class":
        path = write_csv(tmp_path / "one.csv", [(t, "x") for t, _ in sentences()])
        return [f"text:{path}"], r"only one class \('x'\)"
    if case == "blank texts":
        rows = [("   " if i in (4, 9, 20, 30, 40, 50) else t, y)
                for i, (t, y) in enumerate(sentences())]
        return [f"text:{write_csv(tmp_path / 'b.csv', rows)}"], \
            r"6 empty or blank texts in column 'text' .*\(rows 5, 10, 21, 31, 41, \.\.\.\)"
    if case == "blank jsonl texts":
        rows = [("" if i == 3 else t, y) for i, (t, y) in enumerate(sentences())]
        return [f"text:{write_jsonl(tmp_path / 'b.jsonl', rows)}"], "1 empty or blank .*line 4\\)"
    if case == "missing labels":
        rows = [(t, "" if i == 7 else y) for i, (t, y) in enumerate(sentences())]
        return [f"text:{write_csv(tmp_path / 'l.csv', rows)}"], \
            r"1 missing labels in column 'label' .*\(row 8\)"
    if case == "not utf-8":
        (tmp_path / "u.csv").write_bytes(b"text,label\nhello there,a\n\xff\xfebad,b\n")
        return [f"text:{tmp_path / 'u.csv'}"], "is not UTF-8: byte 0xff at offset 25 \\(line 3\\)"
    if case == "bad json line":
        path = write_jsonl(tmp_path / "j.jsonl", sentences())
        path.write_text(path.read_text() + "{oops\n")
        return [f"text:{path}"], "line 91 is not valid JSON"
    if case == "suffix":
        (tmp_path / "d.txt").write_text("x")
        return [f"text:{tmp_path / 'd.txt'}"], "must end in .csv, .tsv, .jsonl"
    if case == "not a tokenizer":
        (tmp_path / "t.json").write_text('{"hello": 1}')
        return [*src, "--tokenizer", str(tmp_path / "t.json")], \
            "t.json' is not a tokenizer.json that tokenizers can read"
    if case == "no tokenizer in dir":
        (tmp_path / "empty").mkdir()
        return [*src, "--tokenizer", str(tmp_path / "empty")], "no tokenizer.json in .*empty"
    if case == "no pad token":
        _word_level([]).save(str(tmp_path / "nopad.json"))
        return [*src, "--tokenizer", str(tmp_path / "nopad.json")], \
            "nopad.json has no pad token .*add_special_tokens"
    if case == "vocab size":
        return [*src, "--vocab-size", "3"], "vocab_size must be an integer in 32..1000000, got 3"
    if case == "max length":
        return [*src, "--max-length", "0"], "max_length must be an integer in 2..8192, got 0"
    if case == "max length no room":
        return [*src, "--max-length", "2"], "max_length 2 leaves no room for text"
    raise AssertionError(case)


BAD = ["missing file", "empty file", "header only", "no text column", "no target column",
       "one class", "blank texts", "blank jsonl texts", "missing labels", "not utf-8",
       "bad json line", "suffix", "not a tokenizer", "no tokenizer in dir", "no pad token",
       "vocab size", "max length", "max length no room"]


@pytest.mark.parametrize("case", BAD)
def test_bad_text_inputs_are_one_line_errors(tmp_path: Path, capsys: pytest.CaptureFixture,
                                             case: str) -> None:
    flags, pattern = _bad(tmp_path, case)
    line = user_error(capsys, ["teacher", "train", "--dataset", *flags,
                               "--out", str(tmp_path / "t.pt"), "--epochs", "1"])
    assert re.search(pattern, line), line


def test_augmenting_text_is_refused(news: Path, tmp_path: Path,
                                    capsys: pytest.CaptureFixture) -> None:
    line = user_error(capsys, ["distill", "--dataset", f"text:{news}", "--augment", "crop",
                               "--epochs", "1"])
    assert "token ids do not support; use augment: none" in line
    from autokd.data.augment import get_augment

    assert not get_augment("none", "tokens").active


def test_without_tokenizers_the_error_names_the_extra(news: Path, tmp_path: Path,
                                                     capsys: pytest.CaptureFixture,
                                                     monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "tokenizers", None)  # import tokenizers -> ImportError
    line = user_error(capsys, ["teacher", "train", "--dataset", f"text:{news}",
                               "--out", str(tmp_path / "t.pt")])
    assert line.endswith("text data needs the tokenizers package: pip install 'autokd[text]'")


def test_every_data_command_takes_the_text_flags() -> None:
    from autokd.cli import build_parser

    parser = build_parser()
    flags = ["--text-column", "body", "--target", "y", "--vocab-size", "100", "--max-length",
             "9", "--tokenizer", "t.json", "--tokenizer-kind", "bpe"]
    for argv in (["search"], ["distill"], ["teacher", "train", "--out", "x"],
                 ["latency-table"], ["evaluate", "a.onnx"]):
        args = parser.parse_args([*argv, *flags])
        assert (args.text_column, args.vocab_size, args.max_length, args.tokenizer,
                args.tokenizer_kind) == ("body", 100, 9, "t.json", "bpe"), argv


def test_text_options_round_trip_through_the_recorded_config(news: Path) -> None:
    from autokd.config import from_dict, to_dict

    cfg = DataConfig(source=f"text:{news}", text_column="text", vocab_size=100, max_length=12,
                     tokenizer_kind="bpe").validate()
    again = from_dict(DataConfig, json.loads(json.dumps(to_dict(cfg)))).validate()
    assert again == cfg and load_data(again).split_hash == load_data(cfg).split_hash


def test_loading_text_logs_a_summary(news: Path, caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.INFO, logger="autokd.data"):
        load_data(f"text:{news}", max_length=16)
    assert re.search(r"tokenized 90 texts: vocabulary \d+, wordpiece:4000, max_length 16",
                     caplog.text)
    assert re.search(r"loaded text:.*\(tokens\): sizes \{'train': 58", caplog.text)


def test_the_generated_topics_task_is_deterministic_and_learnable() -> None:
    from sklearn.linear_model import LogisticRegression

    a, b = load_data("text_topics", num_samples=240), load_data("text_topics", num_samples=240)
    assert a.split_hash == b.split_hash and a.meta["generated"] and a.num_classes == 4
    assert load_data("text_topics", num_samples=240, seed=1).split_hash != a.split_hash
    vocab = a.tokens.vocab_size

    def bag(x: torch.Tensor) -> np.ndarray:  # word counts: the class is in the words
        return np.stack([np.bincount(row, minlength=vocab) for row in x.numpy()])

    model = LogisticRegression(max_iter=1000).fit(bag(a.x_train), a.y_train.numpy())
    assert model.score(bag(a.x_test), a.y_test.numpy()) > 0.9
    with pytest.raises(DataError, match="num_samples must be an integer >= 12"):
        load_data("text_topics", num_samples=5)
