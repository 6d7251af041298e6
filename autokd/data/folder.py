"""``folder:DIR`` sources: one sub-folder of images per class, optionally inside split folders.

Layouts:

* ``DIR/<class>/*.png|jpg|jpeg|bmp|webp`` (suffixes in any case; images in nested folders of
  a class count for it);
* ``DIR/train|val|test/<class>/...``: predefined splits. ``val`` or ``test`` may be missing;
  the missing one is carved from train as for any other source. Every class must appear in
  every split folder present, else the error names the class and the split.

Other files (``README.txt``, ``.DS_Store``) are ignored, but a folder holding only such files
is an error: it almost always means the images are elsewhere.

Images are decoded once with Pillow into a uint8 ``(N, C, S, S)`` array cached on disk (see
``autokd.data.image_cache``); a later load of the same folder with the same options maps that
file instead of decoding again. ``--channels auto`` keeps one channel when every image is
grayscale (modes ``1``, ``L``, ``LA``, ``I``, ``I;16``...) and makes everything else RGB; alpha
is dropped (not composited). Without ``--image-size`` every image must have the same size.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path

import numpy as np

from autokd.config import DataConfig
from autokd.data.image_cache import cached_images
from autokd.data.images import DecodeOptions, FolderScan
from autokd.data.schema import SPLITS, RawData
from autokd.data.sources import FILE_FORMATS, FileFormat
from autokd.errors import DataError

__all__ = ["IMAGE_SUFFIXES", "scan_folder"]

# One logger name for the whole data layer, so log lines and filters read ``autokd.data``.
logger = logging.getLogger("autokd.data")

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".webp")
_SHOWN = 3  # file names quoted in an error or in the record of skipped files


def scan_folder(root: Path) -> FolderScan:
    """List the images by class (and split), refusing the layouts that cannot be right."""
    if not root.exists():
        raise DataError(f"image folder not found: {str(root)!r}")
    if not root.is_dir():
        raise DataError(f"folder: path is a file, not a directory: {str(root)!r}")
    subdirs = _subdirs(root)
    split_dirs = [d for d in subdirs if d.name in SPLITS]
    if split_dirs and len(split_dirs) < len(subdirs):
        others = sorted(d.name for d in subdirs if d.name not in SPLITS)
        raise DataError(f"{str(root)!r} mixes split folders ({', '.join(d.name for d in split_dirs)})"
                        f" with other folders ({', '.join(others[:_SHOWN])}); use DIR/<class>/ "
                        "or DIR/train|val|test/<class>/")
    if not split_dirs:
        return _scan_classes(root, root, None)
    if "train" not in {d.name for d in split_dirs}:
        raise DataError(f"{str(root)!r} has split folders "
                        f"{', '.join(d.name for d in split_dirs)} but no train/ folder")
    scans = {d.name: _scan_classes(d, root, d.name) for d in sorted(split_dirs, key=_split_pos)}
    return _merge_splits(root, scans)


def _split_pos(d: Path) -> int:
    return SPLITS.index(d.name)


def _subdirs(path: Path) -> list[Path]:
    return sorted(p for p in path.iterdir() if p.is_dir() and not p.name.startswith("."))


def _is_image(path: Path) -> bool:
    return path.suffix.lower() in IMAGE_SUFFIXES


def _scan_classes(folder: Path, root: Path, split: str | None) -> FolderScan:
    """One class per sub-folder of ``folder``; errors name the folder that is wrong."""
    classes = _subdirs(folder)
    if not classes:
        loose = [p for p in folder.iterdir() if p.is_file()]
        what = f"{len([p for p in loose if _is_image(p)])} loose images" if loose else "nothing"
        raise DataError(f"no class folders in {str(folder)!r} (it holds {what}); put each "
                        f"class's images in {os.path.join(str(folder), '<class>')}/")
    files, labels, ignored = [], [], 0
    for c, cls in enumerate(classes):
        found = sorted(p for p in cls.rglob("*") if p.is_file())
        images = [p for p in found if _is_image(p)]
        if not found:
            raise DataError(f"class folder {str(cls)!r} is empty")
        if not images:
            names = ", ".join(p.name for p in found[:_SHOWN])
            raise DataError(f"class folder {str(cls)!r} holds no images ({len(found)} other "
                            f"files: {names}); known image types: {', '.join(IMAGE_SUFFIXES)}")
        ignored += len(found) - len(images)
        files += [p.relative_to(root).as_posix() for p in images]
        labels += [c] * len(images)
    names = [c.name for c in classes]
    split_of = [split] * len(files) if split else None
    return FolderScan(root, files, labels, names, split_of, ignored, [split] if split else [])


def _merge_splits(root: Path, scans: dict[str, FolderScan]) -> FolderScan:
    """Join split folders, refusing a class that one split has and another lacks."""
    train = scans["train"].class_names
    for split, scan in scans.items():
        for cls in sorted(set(train) - set(scan.class_names)):
            raise DataError(f"class {cls!r} is in train/ but missing from {split}/ in "
                            f"{str(root)!r}")
        for cls in sorted(set(scan.class_names) - set(train)):
            raise DataError(f"class {cls!r} is in {split}/ but missing from train/ in "
                            f"{str(root)!r}")
    out = FolderScan(root, [], [], list(train), [], 0, list(scans))
    for split, scan in scans.items():
        out.files += scan.files
        out.labels += scan.labels
        out.split_of += scan.split_of or []
        out.ignored += scan.ignored
    return out


def _load_folder(path: str, cfg: DataConfig) -> RawData:
    """Scan, decode through the cache, and hand ``load_data`` a memory map of the pixels."""
    opts = DecodeOptions(cfg.image_size, str(cfg.channels), bool(cfg.skip_bad_files))
    scan = scan_folder(Path(path))
    images = cached_images(scan, opts)
    keep = np.asarray(images.kept, dtype=np.int64)
    y = np.asarray(scan.labels, dtype=np.int64)[keep]
    meta: dict = {
        "identity": {"format": "folder", "content": images.content_hash, **opts.identity()},
        "class_names": scan.class_names,
        "scale": 1.0 / 255.0,
        "memmap_path": str(images.path),
        "x_digest": images.checksum,
        "predefined": _predefined(scan, keep),
    }
    if images.skipped:
        meta["skipped_files"] = {"count": len(images.skipped), "examples": images.skipped[:_SHOWN]}
    if scan.ignored:
        logger.info("%s: ignored %d non-image files", path, scan.ignored)
    return images.array, y, "image", meta


def _predefined(scan: FolderScan, keep: np.ndarray) -> dict[str, np.ndarray] | None:
    if not scan.split_of:
        return None
    split_of = np.asarray(scan.split_of)[keep]
    return {s: np.flatnonzero(split_of == s) for s in scan.splits if (split_of == s).any()}


FILE_FORMATS.register("folder", FileFormat(_load_folder, placeholder="DIR", order=20))
