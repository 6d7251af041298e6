"""The decoded-image cache: each folder is decoded once into a uint8 ``.npy`` and then mapped.

Where: ``cache_dir()/data/`` (``$AUTOKD_CACHE/data``, default ``~/.cache/autokd/data``), next to
the teacher caches. The key is the folder's *content hash* plus the decode options, so a
changed, added or removed image, or another ``--image-size``, makes a new entry.

Content hash: sha256 over every image's relative path and the sha256 of its bytes. Reading
every byte again on each run would cost as much as a decode, so per-file digests are memoised
by ``(relative path, size, mtime_ns)``: a file whose size and modification time are both
unchanged is taken to be unchanged (the rule ``make`` and ``rsync`` use). Touching a file
re-reads it; replacing it with other bytes of the same size *and* the same mtime is not seen.

Safety: the ``.npy`` is written under a temporary name and renamed, then its sidecar
``.json`` (shape, dtype, sha256 of the file) is written the same way, so a killed decode
leaves no entry. On load the file's size and checksum are checked against the sidecar; a
mismatch logs a warning and the entry is rebuilt.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from autokd._io import atomic_write, cache_dir
from autokd.data.images import DecodeOptions, FolderScan, decode_image, is_gray, probe
from autokd.errors import DataError
from autokd.progress import ProgressMeter

__all__ = ["CachedImages", "cached_images", "content_hash", "set_progress"]

# One logger name for the whole data layer, so log lines and filters read ``autokd.data``.
logger = logging.getLogger("autokd.data")

ProgressFn = Callable[[int, int], None]
_VERSION = 1
_LOG_EVERY_S = 5.0
_progress: ProgressFn | None = None


def set_progress(fn: ProgressFn | None) -> ProgressFn | None:
    """Route decode progress ``fn(done, total)`` to a display; returns the previous hook.

    Why a hook: the data layer never prints; without one, a log line every few seconds.
    """
    global _progress
    previous, _progress = _progress, fn
    return previous


@dataclass
class CachedImages:
    """A decoded folder: the mapped pixels and which scanned files they are."""

    path: Path
    array: np.ndarray  # (N, C, S, S) uint8, memory-mapped read-only
    kept: list[int]  # positions in ``FolderScan.files`` of the rows of ``array``
    skipped: list[str]  # unreadable files left out (``--skip-bad-files``)
    content_hash: str
    checksum: str  # sha256 of the .npy file


def cached_images(scan: FolderScan, opts: DecodeOptions) -> CachedImages:
    """The cache entry for this folder and these options, decoding only when it is missing."""
    digest = content_hash(scan)
    key = hashlib.sha256(json.dumps({"v": _VERSION, "content": digest, **opts.identity()},
                                    sort_keys=True).encode()).hexdigest()[:24]
    npy = cache_dir() / "data" / f"{key}.npy"
    found = _open_entry(npy, scan)
    if found is None:
        skipped = _build_entry(npy, scan, opts)
        found = _open_entry(npy, scan)
        if found is None:  # pragma: no cover - only a concurrent writer could get here
            raise DataError(f"the image cache {str(npy)!r} could not be read back after writing")
        logger.info("decoded %d images of %s into %s (%d skipped)", len(found[1]), scan.root,
                    npy, len(skipped))
    array, kept, skipped, checksum = found
    return CachedImages(npy, array, kept, skipped, digest, checksum)


# -- content hash ---------------------------------------------------------------------------
def content_hash(scan: FolderScan) -> str:
    """sha256 over (relative path, file sha256) of every image, file digests memoised."""
    memo_path = cache_dir() / "data" / "memo" / (
        hashlib.sha256(str(scan.root.resolve()).encode()).hexdigest()[:24] + ".json")
    memo = _read_json(memo_path) or {}
    fresh: dict[str, list] = {}
    total = hashlib.sha256()
    for rel in scan.files:
        st = (scan.root / rel).stat()
        old = memo.get(rel)
        if old and old[0] == st.st_size and old[1] == st.st_mtime_ns:
            file_digest = old[2]
        else:
            file_digest = _file_sha256(scan.root / rel)
        fresh[rel] = [st.st_size, st.st_mtime_ns, file_digest]
        total.update(f"{rel}\0{file_digest}\n".encode())
    if fresh != memo:
        atomic_write(memo_path, lambda tmp: Path(tmp).write_text(json.dumps(fresh)))
    return total.hexdigest()[:24]


def _file_sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def _read_json(path: Path) -> dict | None:
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return None


# -- reading an entry -----------------------------------------------------------------------
def _open_entry(npy: Path, scan: FolderScan) -> tuple[np.ndarray, list[int], list[str], str] | None:
    """The mapped array if the entry is whole and matches its sidecar; else None (rebuild)."""
    side = _read_json(npy.with_suffix(".json"))
    if side is None or not npy.exists():
        if npy.exists() or npy.with_suffix(".json").exists():
            logger.warning("image cache %s is incomplete; decoding again", npy)
        return None
    try:
        checksum = _file_sha256(npy)
        array = np.load(npy, mmap_mode="r")
        ok = (checksum == side["sha256"] and list(array.shape) == side["shape"]
              and str(array.dtype) == side["dtype"])
    except (OSError, ValueError, KeyError, TypeError, EOFError):
        ok = False
    if not ok:
        logger.warning("image cache %s is corrupt (checksum or shape differs from its "
                       "sidecar); decoding again", npy)
        return None
    skipped = list(side.get("skipped", []))
    gone = set(skipped)
    kept = [i for i, rel in enumerate(scan.files) if rel not in gone]
    return array, kept, skipped, checksum


# -- building an entry ----------------------------------------------------------------------
def _build_entry(npy: Path, scan: FolderScan, opts: DecodeOptions) -> list[str]:
    """Decode every file into ``npy`` (tmp + rename), then write the sidecar; returns skips."""
    bad: dict[int, str] = {}
    modes, sizes = _probe_all(scan, opts, bad)
    channels = _channels(opts.channels, modes)
    size = opts.image_size or _common_size(scan, sizes)
    rows = [i for i in range(len(scan.files)) if i not in bad]
    shape = (len(rows), channels, size, size)

    def write(tmp: str) -> None:
        out = np.lib.format.open_memmap(tmp, mode="w+", dtype=np.uint8, shape=shape)
        done = _decode_into(out, scan, rows, channels, opts, bad)
        out.flush()
        del out
        if done != rows:  # files that failed only on full decode: compact the rows
            _compact(tmp, len(done))

    atomic_write(npy, write)
    skipped = sorted(scan.files[i] for i in bad)
    final = np.load(npy, mmap_mode="r")
    side = {"v": _VERSION, "shape": list(final.shape), "dtype": str(final.dtype),
            "sha256": _file_sha256(npy), "skipped": skipped, "root": str(scan.root)}
    del final
    atomic_write(npy.with_suffix(".json"), lambda tmp: Path(tmp).write_text(json.dumps(side)))
    return skipped


def _bad_file(scan: FolderScan, i: int, exc: BaseException, opts: DecodeOptions,
              bad: dict[int, str]) -> None:
    reason = str(exc).strip().splitlines()[0][:160] if str(exc).strip() else type(exc).__name__
    path = scan.root / scan.files[i]
    if not opts.skip_bad_files:
        raise DataError(f"cannot read image {str(path)!r}: {reason} (use --skip-bad-files to "
                        "leave unreadable files out)")
    logger.warning("skipping unreadable image %s: %s", path, reason)
    bad[i] = reason


_PIL_ERRORS: tuple[type[BaseException], ...] = (OSError, ValueError, SyntaxError, EOFError)


def _probe_all(scan: FolderScan, opts: DecodeOptions,
               bad: dict[int, str]) -> tuple[dict[int, str], dict[int, tuple[int, int]]]:
    modes, sizes = {}, {}
    for i, rel in enumerate(scan.files):
        try:
            modes[i], sizes[i] = probe(scan.root / rel)
        except _PIL_ERRORS as exc:
            _bad_file(scan, i, exc, opts, bad)
    if not modes:
        raise DataError(f"no readable images in {str(scan.root)!r} ({len(bad)} skipped)")
    return modes, sizes


def _channels(option: str, modes: dict[int, str]) -> int:
    if option != "auto":
        return int(option)
    return 1 if all(is_gray(m) for m in modes.values()) else 3


def _common_size(scan: FolderScan, sizes: dict[int, tuple[int, int]]) -> int:
    """Without ``--image-size`` all images must be one square size; the error shows two."""
    first = next(iter(sizes))
    for i, wh in sizes.items():
        if wh != sizes[first]:
            raise DataError(
                f"images differ in size: {scan.files[first]} is {_wh(sizes[first])}, "
                f"{scan.files[i]} is {_wh(wh)}; pass --image-size N to resize and centre-crop "
                "them all to N x N")
    w, h = sizes[first]
    if w != h:
        raise DataError(f"images are {_wh((w, h))}, not square; pass --image-size N to "
                        "resize and centre-crop them to N x N")
    return w


def _wh(wh: tuple[int, int]) -> str:
    return f"{wh[0]}x{wh[1]}"


def _decode_into(out: np.ndarray, scan: FolderScan, rows: list[int], channels: int,
                 opts: DecodeOptions, bad: dict[int, str]) -> list[int]:
    """Decode ``rows`` into consecutive rows of ``out``; returns the rows that decoded."""
    done: list[int] = []
    last, total = time.monotonic(), len(rows)
    with ProgressMeter(total, f"decode {scan.root.name}", "images") as meter:
        for n, i in enumerate(rows):
            try:
                out[len(done)] = decode_image(scan.root / scan.files[i], channels,
                                              opts.image_size)
                done.append(i)
            except _PIL_ERRORS as exc:
                _bad_file(scan, i, exc, opts, bad)
            meter.update(1)
            if _progress is not None:
                _progress(n + 1, total)
            elif time.monotonic() - last > _LOG_EVERY_S:
                last = time.monotonic()
                logger.info("decoding %s: %d/%d images", scan.root, n + 1, total)
    return done


def _compact(tmp: str, n: int) -> None:
    """Rewrite ``tmp`` with only its first ``n`` rows (the decoded ones come first), in chunks
    so a large folder never needs its pixels in memory."""
    if n == 0:
        raise DataError("no readable images left after skipping the unreadable ones")
    src = np.load(tmp, mmap_mode="r")
    part = tmp + ".part"
    dst = np.lib.format.open_memmap(part, mode="w+", dtype=np.uint8, shape=(n, *src.shape[1:]))
    for i in range(0, n, 4096):
        dst[i:i + 4096] = src[i:min(i + 4096, n)]
    dst.flush()
    del dst, src
    os.replace(part, tmp)
