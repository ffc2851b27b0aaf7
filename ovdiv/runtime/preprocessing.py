"""Card-driven image preprocessing shared by every backend.

A deployed member eats either float32 NCHW images normalised with its card's mean/std
(``layout="NCHW"``) or raw uint8 NHWC RGB (``layout="NHWC_U8"``, preprocessing baked into the graph).
Both start from the same uint8 ``(N, H, W, 3)`` batch:

* resize to the card's ``(H, W)`` when the images differ (PIL bilinear, per image), then
* ``x = (u / 255 - mean) / std`` per channel and ``NHWC -> NCHW`` for float members.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import numpy.typing as npt

from ovdiv.errors import DataError
from ovdiv.types import UInt8Images

__all__ = ["check_images", "resize_images", "normalize_images"]


def check_images(images: npt.ArrayLike, *, what: str = "images") -> UInt8Images:
    """Return ``images`` as a uint8 ``(N, H, W, 3)`` array (a single ``(H, W, 3)`` image gets N=1).

    Raises:
        DataError: wrong dtype or shape.
    """
    arr = np.asarray(images)
    if arr.ndim == 3:
        arr = arr[None]
    if arr.dtype != np.uint8:
        raise DataError(f"{what}: expected uint8 RGB images, got dtype {arr.dtype}", "pass uint8 (N, H, W, 3) arrays")
    if arr.ndim != 4 or arr.shape[-1] != 3:
        raise DataError(f"{what}: expected shape (N, H, W, 3), got {arr.shape}", "pass uint8 (N, H, W, 3) arrays")
    return arr


def resize_images(images: UInt8Images, size: tuple[int, int]) -> UInt8Images:
    """Resize uint8 ``(N, H, W, 3)`` images to ``size = (H', W')`` (no-op when already that size).

    Uses PIL's bilinear filter (antialiased when shrinking), image by image.
    """
    h, w = size
    if images.shape[1:3] == (h, w):
        return images
    from PIL import Image

    out = np.empty((images.shape[0], h, w, 3), dtype=np.uint8)
    for i, img in enumerate(images):
        out[i] = np.asarray(Image.fromarray(np.ascontiguousarray(img)).resize((w, h), Image.Resampling.BILINEAR))
    return out


def normalize_images(images: UInt8Images, mean: Sequence[float], std: Sequence[float]) -> npt.NDArray[np.float32]:
    """uint8 ``(N, H, W, 3)`` -> float32 ``(N, 3, H, W)``, ``(u / 255 - mean) / std`` per channel."""
    m = np.asarray(mean, dtype=np.float32).reshape(1, 3, 1, 1)
    s = np.asarray(std, dtype=np.float32).reshape(1, 3, 1, 1)
    x = images.transpose(0, 3, 1, 2).astype(np.float32)
    x *= np.float32(1.0 / 255.0)
    x -= m
    x /= s
    return np.ascontiguousarray(x)
