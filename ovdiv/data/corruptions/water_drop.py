"""``water_drop`` — concentric ripple warp in a disc (``corrupt.WaterDrop``; NOT in official ImageNet-C-bar).

The paper's "Waterdrop (7.0)" is this candidate-pool corruption at magnitude 7.0.

Parameters (global stream, in order): ``center = U(0.25, 0.75, size=2)·im_size`` (row, col),
``wavelength λ = U(0.05, 0.2)·im_size``, ``phase φ = U(0, 2π)``; constants ``radius R = im_size // 2``
and ``amplitude α = 0.025·s``.

Inverse warp per output pixel p = (y, x), vectorised: ``δ = p − c``, ``d = sqrt(δ0² + δ1²)``; if ``d > R``
the source is p, else ``A = α·sin(((d/λ)·π)·2 − φ)``, times ``λ/d`` when ``d ≠ 0``, and ``q = p + A·δ``.
The output is the reference bilinear sample at q with zero fill outside (:mod:`.interpolation`), clipped
and truncated to uint8.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from ovdiv.data.corruptions.blocks import spans
from ovdiv.data.corruptions.interpolation import BilinearZero
from ovdiv.data.corruptions.magnitude import float_parameter

__all__ = ["apply_water_drop", "sample_water_drop"]


def sample_water_drop(rs: np.random.RandomState, severity: float, im_size: int) -> dict[str, Any]:
    """Draw the parameters in the reference order (``WaterDrop.sample_parameters``)."""
    center = rs.uniform(low=0.25, high=0.75, size=2) * im_size
    radius = im_size // 2
    amplitude = float_parameter(severity, 0.25)
    wavelength = rs.uniform(low=0.05, high=0.2) * im_size
    phase = rs.uniform(low=0.0, high=2 * np.pi)
    return {"center": center, "radius": radius, "amplitude": amplitude, "wavelength": wavelength, "phase": phase}


def apply_water_drop(
    image: np.ndarray, *, center: Any, radius: float, amplitude: float, wavelength: float, phase: float
) -> np.ndarray:
    """Apply ``water_drop`` with given parameters to a uint8 ``(S, S, 3)`` image."""
    im_size = image.shape[0]
    c0, c1 = float(center[0]), float(center[1])
    coords = np.arange(im_size, dtype=np.float64)
    d0_axis = coords - c0
    d1_axis = coords - c1
    dist = np.sqrt(d0_axis[:, None] * d0_axis[:, None] + d1_axis[None, :] * d1_axis[None, :])
    rows, cols = np.nonzero(dist <= radius)  # outside the disc the source is the pixel itself: a copy
    out = image.copy()
    sampler = BilinearZero(image)
    for i0, i1 in spans(rows.size):
        r, c = rows[i0:i1], cols[i0:i1]
        d = dist[r, c]
        d0 = d0_axis[r]
        d1 = d1_axis[c]
        amount = amplitude * np.sin(d / wavelength * np.pi * 2 - phase)
        with np.errstate(divide="ignore", invalid="ignore"):
            amount = np.where(d != 0.0, amount * (wavelength / d), amount)
        values = sampler(r + amount * d0, c + amount * d1)
        out[r, c] = np.clip(values, 0, 255).astype(np.uint8).T
    return out
