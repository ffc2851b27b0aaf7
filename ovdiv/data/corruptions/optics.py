"""Candidate-pool spline-interpolation corruptions (scipy.ndimage, imported lazily, called as the reference).

* ``chromatic_abberation`` (``corrupt.ChromaticAbberation``): ``angles α = U(0, 2π, size=3)``;
  ``shift_c = (cos α_c·d, sin α_c·d)``, ``d = fp(s, S/10)``;
  ``out_c = scipy.ndimage.shift(image_c, shift_c, prefilter=False)`` (cubic B-spline smoothing, zero fill,
  round-half-up uint8 output).
* ``transverse_chromatic_abberation``: ``scales = [1, 1 + σ/2, 1 + σ][permutation(3)]``, ``σ = s/20``;
  ``out_c`` = centre crop of ``scipy.ndimage.zoom(image_c, scale_c, prefilter=False)``.
* ``circular_motion_blur`` (no draws, ``amount = 1.5·s`` degrees): 21 ``scipy.ndimage.rotate`` copies of
  ``float32(image)/255`` at angles ``(2i/20 − 1)·amount``, weighted by ``exp(−2·pow(2i/20 − 1, 2))`` and
  accumulated into float32 with numpy >= 2 promotion, divided by the weight sum, ``uint8(clip(·255))``.

These depend on scipy's implementation (SPEC_MORE.md §7); the references were made with scipy 1.17.1.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from ovdiv.data.corruptions.magnitude import float_parameter

__all__ = [
    "apply_chromatic_abberation",
    "apply_circular_motion_blur",
    "apply_transverse_chromatic_abberation",
    "sample_chromatic_abberation",
    "sample_circular_motion_blur",
    "sample_transverse_chromatic_abberation",
]


def sample_chromatic_abberation(rs: np.random.RandomState, severity: float, im_size: int) -> dict[str, Any]:
    """Draw the parameters in the reference order (``ChromaticAbberation.sample_parameters``)."""
    angles = rs.uniform(low=0, high=2 * np.pi, size=3)
    dists = np.array([float_parameter(severity, im_size / 10) for _ in range(3)])
    shifts = np.array([[np.cos(a) * d, np.sin(a) * d] for a, d in zip(angles, dists, strict=True)])
    return {"rgb_shifts": shifts}


def apply_chromatic_abberation(image: np.ndarray, *, rgb_shifts: Any) -> np.ndarray:
    """Apply ``chromatic_abberation`` with given parameters to a uint8 ``(S, S, 3)`` image."""
    from scipy.ndimage import shift

    shifts = np.asarray(rgb_shifts, dtype=np.float64)
    out = image.copy()
    for c in range(3):
        out[:, :, c] = shift(image[:, :, c], shifts[c], prefilter=False)
    return out


def sample_transverse_chromatic_abberation(rs: np.random.RandomState, severity: float, im_size: int) -> dict[str, Any]:
    """Draw the parameters in the reference order (``TransverseChromaticAbberation.sample_parameters``)."""
    scale = float_parameter(severity, 0.5)
    scales = np.array([1.0, 1.0 + scale / 2, 1.0 + scale])
    return {"scales": scales[rs.permutation(3)]}


def apply_transverse_chromatic_abberation(image: np.ndarray, *, scales: Any) -> np.ndarray:
    """Apply ``transverse_chromatic_abberation`` with given parameters to a uint8 ``(S, S, 3)`` image."""
    from scipy.ndimage import zoom

    size = image.shape[0]
    factors = np.asarray(scales, dtype=np.float64)
    out = image.copy()
    for c in range(3):
        zoomed = zoom(image[:, :, c], factors[c], prefilter=False)
        edge = (zoomed.shape[0] - size) // 2
        out[:, :, c] = zoomed[edge : edge + size, edge : edge + size]
    return out


def sample_circular_motion_blur(rs: np.random.RandomState, severity: float, im_size: int) -> dict[str, Any]:
    """No random draws; ``amount = 1.5·s`` degrees."""
    return {"amount": float_parameter(severity, 15)}


def apply_circular_motion_blur(image: np.ndarray, *, amount: float) -> np.ndarray:
    """Apply ``circular_motion_blur`` with given parameters to a uint8 ``(S, S, 3)`` image."""
    from scipy.ndimage import rotate

    num = 21
    scaled = image.astype(np.float32) / 255
    out = np.zeros_like(scaled)
    factors = []
    for i in range(num):
        angle = (2 * i / (num - 1) - 1) * amount
        factor = np.exp(-2 * (2 * i / (num - 1) - 1) ** 2)
        out += factor * rotate(scaled, angle, reshape=False)
        factors.append(factor)
    out /= sum(factors)
    return np.clip(out * 255, 0, 255).astype(np.uint8)
