"""Standard evaluation preprocessing on PIL images and the optional JPEG round-trip.

:func:`eval_transform` reproduces torchvision's ``Resize(256) + CenterCrop(224)`` on PIL images
byte for byte (ImageNet-C-bar was built with exactly that, DESIGN.md §3):

- ``Resize(r)``: the shorter side becomes ``r`` and the longer ``int(r * long / short)``, resampled
  with PIL's ``BILINEAR`` filter (area-aware, i.e. antialiased when downscaling); an image that
  already has that size is left alone.
- ``CenterCrop(c)``: offsets ``int(round((H - c) / 2))`` and ``int(round((W - c) / 2))``.

The output is ``uint8 (c, c, 3)`` RGB (HWC).
"""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np
import numpy.typing as npt
from PIL import Image

from ovdiv.errors import CorruptImageError

__all__ = ["eval_transform", "resize_for_crop", "open_rgb", "jpeg_roundtrip", "natural_key"]


def resize_for_crop(crop: int) -> int:
    """Shorter-side resize used before a center crop of ``crop`` px: 256 for 224 (ratio 0.875)."""
    return 256 if crop == 224 else round(crop / 0.875)


def open_rgb(path: str | Path) -> Image.Image:
    """Open and fully decode an image as RGB (like torchvision's ``pil_loader``).

    Raises:
        CorruptImageError: The file cannot be read or decoded (truncated, not an image, ...).
    """
    try:
        with open(path, "rb") as fh:
            img = Image.open(fh)
            return img.convert("RGB")
    except (OSError, SyntaxError, ValueError, Image.DecompressionBombError) as exc:
        raise CorruptImageError(f"cannot decode image {path}: {exc}", "delete or replace the file") from exc


def eval_transform(img: Image.Image, *, crop: int = 224, resize: int | None = None) -> npt.NDArray[np.uint8]:
    """Apply torchvision's ``Resize(resize) + CenterCrop(crop)`` to a PIL RGB image, as uint8 ``(crop, crop, 3)``.

    Args:
        img: PIL image (converted to RGB if needed).
        crop: Center-crop side.
        resize: Shorter-side size; default :func:`resize_for_crop` (256 for 224).
    """
    if img.mode != "RGB":
        img = img.convert("RGB")
    resize = resize_for_crop(crop) if resize is None else resize
    w, h = img.size
    short, long = (w, h) if w <= h else (h, w)
    new_short, new_long = resize, int(resize * long / short)
    new_w, new_h = (new_short, new_long) if w <= h else (new_long, new_short)
    if (new_w, new_h) != (w, h):
        img = img.resize((new_w, new_h), Image.Resampling.BILINEAR)
    if new_w < crop or new_h < crop:  # torchvision pads; cannot happen for resize >= crop
        raise ValueError(f"resize {resize} is smaller than crop {crop}")
    top = round((new_h - crop) / 2.0)
    left = round((new_w - crop) / 2.0)
    img = img.crop((left, top, left + crop, top + crop))
    return np.asarray(img, dtype=np.uint8).copy()


def jpeg_roundtrip(image: npt.NDArray[np.uint8], quality: int) -> npt.NDArray[np.uint8]:
    """Encode ``image`` (H,W,3 uint8) as JPEG and decode it again, like the published C-bar files.

    Uses Pillow with ``quality``, ``optimize=True`` and its default 4:2:0 chroma subsampling
    (``make_imagenet_c_bar.py`` saves with ``quality=85, optimize=True``).
    """
    buf = io.BytesIO()
    Image.fromarray(image).save(buf, format="JPEG", quality=int(quality), optimize=True)
    buf.seek(0)
    return np.asarray(Image.open(buf).convert("RGB"), dtype=np.uint8).copy()


def natural_key(name: str) -> tuple[tuple[int, int | str], ...]:
    """Sort key that orders digit runs numerically: ``"2" < "10"``, ``"img2" < "img10"``."""
    import re

    parts = re.split(r"(\d+)", name)
    return tuple((0, int(p)) if p.isdigit() else (1, p) for p in parts if p != "")
