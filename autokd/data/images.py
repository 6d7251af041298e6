"""Images to pixels: the decode options, one file's decode, and the record of a scanned folder.

Why apart from ``folder``: the on-disk cache (``image_cache``) decodes files and the folder
source reads the cache; both lean on these pieces, which lean on neither.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

__all__ = ["DecodeOptions", "FolderScan", "decode_image", "is_gray", "probe"]

_GRAY_MODES = {"1", "L", "LA", "La", "I", "F"}  # plus every "I;16*" variant
_WIDE_MODES = ("I", "F")  # 16/32-bit grayscale: rescaled from 0..65535 to 0..255


@dataclass(frozen=True)
class DecodeOptions:
    """What turns files into pixels; a different value is a different dataset."""

    image_size: int | None = None
    channels: str = "auto"
    skip_bad_files: bool = False

    def identity(self) -> dict[str, object]:
        return {"image_size": self.image_size, "channels": self.channels,
                "skip_bad_files": self.skip_bad_files}


@dataclass
class FolderScan:
    """The image files of a folder, their class and (with split folders) their split.

    ``files`` are paths relative to the root with ``/`` separators, sorted, so the order (and
    every hash built on it) is the same on any machine.
    """

    root: Path
    files: list[str]
    labels: list[int]
    class_names: list[str]
    split_of: list[str] | None = None  # None: no split folders
    ignored: int = 0  # non-image files seen
    splits: list[str] = field(default_factory=list)


def probe(path: Path) -> tuple[str, tuple[int, int]]:
    """Mode and (width, height) from the header only: cheap, so a first pass can see them all."""
    from PIL import Image

    with Image.open(path) as img:
        return img.mode, img.size


def is_gray(mode: str) -> bool:
    return mode in _GRAY_MODES or mode.startswith("I;16")


def decode_image(path: Path, channels: int, size: int | None) -> np.ndarray:
    """One image as uint8 ``(C, S, S)``: mode to L/RGB (alpha dropped), resize, centre crop.

    Raises whatever Pillow raises for a bad file; the caller names the file.
    """
    from PIL import Image, ImageOps

    with Image.open(path) as img:
        img.load()
        img = _to_8bit(img)
        img = img.convert("L" if channels == 1 else "RGB")
        if size is not None and img.size != (size, size):
            # shorter side to ``size``, then the centre square (torchvision's Resize+CenterCrop)
            img = ImageOps.fit(img, (size, size), Image.Resampling.BILINEAR)
        arr = np.asarray(img, dtype=np.uint8)
    return arr[None] if arr.ndim == 2 else arr.transpose(2, 0, 1)  # (C, H, W)


def _to_8bit(img: object) -> object:
    """16/32-bit grayscale to 8 bits by range (Pillow's own convert would clip at 255)."""
    from PIL import Image

    mode = img.mode  # type: ignore[attr-defined]
    if mode.startswith("I;16") or mode in _WIDE_MODES:
        arr = np.asarray(img, dtype=np.float64)
        top = 255.0 if mode == "F" or arr.max(initial=0) <= 255 else 65535.0
        return Image.fromarray(np.clip(np.rint(arr * 255.0 / top), 0, 255).astype(np.uint8))
    return img
