"""Applying a registered corruption to one image or a batch: seeds, validation, parameter round trips."""

from __future__ import annotations

import inspect
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from ovdiv.data.corruptions.registry import check_severity, get
from ovdiv.data.corruptions.rng import global_stream
from ovdiv.errors import DataError

__all__ = ["MIN_SIZE", "apply_parameters", "corrupt", "corrupt_batch", "sample_parameters"]

#: Smallest accepted image side (px).
MIN_SIZE = 8


def _check_seed(seed: Any) -> int:
    if isinstance(seed, bool) or not isinstance(seed, int | np.integer):
        raise DataError(f"corruption seed must be an integer in [0, 2**32), got {seed!r}")
    value = int(seed)
    if not 0 <= value < 2**32:
        raise DataError(f"corruption seed {value} is outside [0, 2**32)", "derive seeds with ovdiv.data.image_seed")
    return value


def _check_image(image: Any, what: str = "image") -> np.ndarray:
    if not isinstance(image, np.ndarray):
        raise DataError(f"{what} must be a numpy uint8 (H, W, 3) array, got {type(image).__name__}")
    if image.dtype != np.uint8:
        raise DataError(f"{what} must be uint8 (H, W, 3) RGB, got dtype {image.dtype}", "convert to uint8 first")
    if image.ndim != 3 or image.shape[2] != 3:
        raise DataError(f"{what} must have shape (H, W, 3), got {image.shape}")
    if image.shape[0] != image.shape[1] or image.shape[0] < MIN_SIZE:
        raise DataError(
            f"{what} must be square with side >= {MIN_SIZE} (the reference's im_size), got {image.shape[:2]}",
            "center-crop it first (ImageNet-C-bar corrupts the 224x224 crop)",
        )
    return np.ascontiguousarray(image)


def sample_parameters(name: str, severity: float, seed: int, *, im_size: int = 224) -> dict[str, Any]:
    """The reference's ``sample_parameters()`` after ``np.random.seed(seed)``, for an ``im_size`` image.

    Args:
        name: Corruption name or alias.
        severity: Magnitude on the reference's 0-10 scale (e.g. 1.6).
        seed: Integer in ``[0, 2**32)``.
        im_size: Image side the parameters are scaled to.

    Returns:
        The parameter dict (constants included), accepted by :func:`apply_parameters`.
    """
    entry = get(name)
    value = check_severity(entry, severity)
    return entry.sample(global_stream(_check_seed(seed)), value, int(im_size))


def apply_parameters(image: np.ndarray, name: str, params: Mapping[str, Any]) -> np.ndarray:
    """Apply a corruption with explicit parameters (e.g. a reference record's ``sampled_params``).

    Raises:
        DataError: Unknown name, a bad image, or parameter names that differ from the reference's.
    """
    entry = get(name)
    img = _check_image(image)
    expected = [
        p.name for p in inspect.signature(entry.apply).parameters.values() if p.kind is inspect.Parameter.KEYWORD_ONLY
    ]
    if set(params) != set(expected):
        raise DataError(
            f"parameters for {entry.name!r} must be exactly {sorted(expected)}, got {sorted(params)}",
            "use sample_parameters() to see a complete set",
        )
    return entry.apply(img, **dict(params))


def corrupt(image: np.ndarray, name: str, severity: float, seed: int) -> np.ndarray:
    """Corrupt one image exactly as the reference does after ``np.random.seed(seed)``.

    Args:
        image: uint8 ``(S, S, 3)`` RGB (HWC); pixel-scaled parameters follow ``S``. Not modified.
        name: Corruption name or alias (see :func:`available`).
        severity: Magnitude on the reference's 0-10 scale (``severity_table(name)[i]`` for an official
            severity index ``i + 1``).
        seed: Integer in ``[0, 2**32)``; the parameters are drawn from ``RandomState(seed)`` in the reference
            order.

    Returns:
        A new uint8 ``(S, S, 3)`` array.

    Raises:
        DataError: Unknown name, bad severity, bad seed or a non-uint8/non-square image.
    """
    entry = get(name)
    value = check_severity(entry, severity)
    img = _check_image(image)
    params = entry.sample(global_stream(_check_seed(seed)), value, img.shape[0])
    return entry.apply(img, **params)


def corrupt_batch(images: np.ndarray, name: str, severity: float, seeds: Sequence[int]) -> np.ndarray:
    """Corrupt ``images`` ``(N, S, S, 3)`` uint8 with one seed per image; equals ``corrupt`` image by image.

    Returns:
        A new uint8 ``(N, S, S, 3)`` array.
    """
    if not isinstance(images, np.ndarray) or images.ndim != 4:
        shape = getattr(images, "shape", None)
        raise DataError(f"images must be a uint8 (N, H, W, 3) array, got shape {shape}")
    seed_list = list(seeds)
    if len(seed_list) != len(images):
        raise DataError(f"corrupt_batch got {len(images)} images but {len(seed_list)} seeds", "pass one seed per image")
    entry = get(name)
    value = check_severity(entry, severity)
    checked = [_check_seed(s) for s in seed_list]
    out = np.empty_like(images)
    for i, seed in enumerate(checked):
        img = _check_image(images[i], what=f"images[{i}]")
        out[i] = entry.apply(img, **entry.sample(global_stream(seed), value, img.shape[0]))
    return out
