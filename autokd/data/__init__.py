"""Dataset sources, deterministic stratified splits, train-only normalisation, in-memory batches.

Every later stage (teacher, training, cost, report) must see the same tensors for the same
configuration and must be able to tell whether two runs used the same split. So loading is one
function, :func:`load_data`, returning a :class:`DataSplits` that carries a ``split_hash``;
every mistake in the user's data surfaces here as a one-line ``DataError`` rather than as a
shape error deep inside training.

Sources (``DataConfig.source``):

* ``digits`` (default), ``wine``, ``breast_cancer``: bundled with scikit-learn, no network.
* ``mnist1d``: generated locally by the ``mnist1d`` package (never its download path).
* ``npz:PATH``: arrays ``X`` and ``y``, or predefined ``X_train``/``y_train``/``X_test``/``y_test``
  (``X_val``/``y_val`` optional; without them validation is carved from train).
* ``csv:PATH`` with ``DataConfig.target``: numeric columns as floats, text/category/bool
  columns one-hot encoded.
* ``folder:DIR``: images in one sub-folder per class (optionally inside ``train|val|test``),
  decoded once into a uint8 cache on disk; data larger than ``memory_budget`` is streamed.
* ``text:PATH`` (CSV/TSV, JSON Lines or a JSON list) with ``DataConfig.text_column`` and
  ``target``: kind ``tokens``, int64 ids ``(N, max_length)`` from a tokenizer trained on the
  train split only (or ``DataConfig.tokenizer``); ``DataSplits.tokens`` describes them.

Choices worth knowing:

* Labels become ``0..K-1``. Integer labels that are not already contiguous (e.g. ``{3, 7, 9}``)
  are remapped in sorted order with a warning; ``class_names`` keeps the originals. Whole-number
  float labels are accepted; fractional ones are rejected (they look like regression targets).
* Missing values are an error naming the column: imputing silently would change the task.
* Every class needs at least 3 samples (one per split could exist), and the split is refused
  exactly when this seed's stratified cuts would fail or leave a class out of train; the error
  names the class and a per-class size that works for any seed.
* ``split_hash`` covers the source's identity (``digits``; for files the format and target, not
  the path, so moving a file keeps the hash), the data, the seed and fractions (left out
  when the npz fixes all three splits, since they then change nothing) and the split indices.

Layout, one idea per module: ``schema`` (kinds, split names, :class:`DataSplits`), ``sources``
(the ``SOURCES`` and ``FILE_FORMATS`` registries and the lookup), ``builtin``, ``npz`` and
``csv``, ``folder`` and ``text`` (the sources themselves), ``image_cache`` (decoded images on disk),
``validate``, ``splits``, ``normalize``, ``tokenize`` (texts to ids), ``load``, ``batches`` and
``stream`` (the memory budget and streamed splits). A new dataset or file format is one module that registers itself in ``SOURCES`` or
``FILE_FORMATS``, plus its name in the registering import below. Modules of this package import
only each other's submodules, never this ``__init__``.
"""

from __future__ import annotations

# Importing these registers their datasets and file formats; a new source adds its name here.
from autokd.data import builtin, csv, folder, npz, text  # noqa: F401
from autokd.data.batches import iterate_batches, make_loader
from autokd.data.load import load_data
from autokd.data.normalize import apply_normalizer
from autokd.data.schema import KINDS, SPLITS, DataSplits, TokenInfo
from autokd.data.sources import FILE_FORMATS, SOURCES, FileFormat, dataset_help, dataset_names

__all__ = [
    "FILE_FORMATS",
    "KINDS",
    "SOURCES",
    "SPLITS",
    "DataSplits",
    "FileFormat",
    "TokenInfo",
    "apply_normalizer",
    "dataset_help",
    "dataset_names",
    "iterate_batches",
    "load_data",
    "make_loader",
]
