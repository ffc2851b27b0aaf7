"""Images for calibration and self-checks: resolve the ``calib`` argument, preprocess like the runtime.

Preprocessing of uint8 ``(N, H, W, 3)`` RGB images into the float32 NCHW network input, the same as
:mod:`ovdiv.runtime` applies for deployed members: PIL bilinear resize of each image to the card's
``(H, W)`` when the sizes differ, then ``x = (u / 255 - mean) / std`` per channel, then NHWC -> NCHW.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import numpy as np
import numpy.typing as npt
from PIL import Image

from ovdiv.errors import ConfigError
from ovdiv.types import UInt8Images

__all__ = ["CalibSource", "resolve_images", "resize_images", "preprocess", "random_images"]

CalibSource = UInt8Images | tuple[UInt8Images, Any] | Callable[[], Any]
"""uint8 ``(N, H, W, 3)`` images, an ``(images, labels)`` pair, or a zero-argument callable returning either
(e.g. ``functools.partial(ovdiv.data.load, "demo", limit=300)``)."""


def resolve_images(calib: CalibSource | None, *, what: str = "calibration data") -> UInt8Images | None:
    """Materialise ``calib`` into uint8 ``(N, H, W, 3)`` images (``None`` stays ``None``).

    Raises:
        ConfigError: Not uint8, wrong shape, or empty.
    """
    if calib is None:
        return None
    data = calib() if callable(calib) else calib
    if isinstance(data, tuple):
        if not data:
            raise ConfigError(f"{what}: got an empty tuple", "pass images or (images, labels)")
        data = data[0]
    arr = np.asarray(data)
    if arr.ndim == 3:
        arr = arr[None]
    if arr.dtype != np.uint8 or arr.ndim != 4 or arr.shape[-1] != 3:
        raise ConfigError(
            f"{what} must be uint8 RGB images (N, H, W, 3), got {arr.dtype} {arr.shape}",
            "pass e.g. the images of ovdiv.data.load(spec)",
        )
    if len(arr) == 0:
        raise ConfigError(f"{what} holds no images")
    return arr


def resize_images(images: UInt8Images, size: tuple[int, int]) -> UInt8Images:
    """PIL bilinear resize of uint8 ``(N, H, W, 3)`` images to ``size = (H, W)`` (no-op when equal)."""
    h, w = size
    if images.shape[1:3] == (h, w):
        return images
    out = np.empty((len(images), h, w, 3), np.uint8)
    for i, img in enumerate(images):
        out[i] = np.asarray(Image.fromarray(np.ascontiguousarray(img)).resize((w, h), Image.Resampling.BILINEAR))
    return out


def preprocess(
    images: UInt8Images, size: tuple[int, int], mean: Sequence[float], std: Sequence[float]
) -> npt.NDArray[np.float32]:
    """uint8 ``(N, H', W', 3)`` -> float32 ``(N, 3, H, W)``: resize, ``(u/255 - mean)/std``, NHWC -> NCHW."""
    x = resize_images(images, size).astype(np.float32) / np.float32(255.0)
    x = (x - np.asarray(mean, np.float32)) / np.asarray(std, np.float32)
    return np.ascontiguousarray(x.transpose(0, 3, 1, 2))


def random_images(n: int, size: tuple[int, int], seed: int = 0) -> UInt8Images:
    """Seeded uniform-noise uint8 images ``(n, H, W, 3)`` for self-checks without data."""
    rng = np.random.default_rng(seed)
    return rng.integers(0, 256, size=(n, size[0], size[1], 3), dtype=np.uint8)
