"""Candidate-pool ``voronoi_noise`` (``corrupt.VoronoiNoise``): a Worley F1 cell pattern.

Parameters (global stream, in order): ``seed σ = U(0, 10)`` (a float multiplier), ``density ρ = U(0.5, 0.9)``,
``size S_v = U(0.05, 0.2)·S``, ``u = U()``; ``intensity = 25.5·s``, negated when ``u > 0.5``.

Per pixel, with ``v = (x, y)/S_v + 1`` (COLUMN first), ``g = floor(v)``, ``f = v mod 1``:
``dist = min(1, min_{i,j ∈ {−1,0,1}} |(i, j) + h(g + (i, j)) − f|)`` where the cell hash is
``h(a) = (sin(w)·sqrt(w)·σ·0.0025) mod 1`` with ``w = matmul([[13.85, 47.77], [99.41, 88.48]], a)``;
``r = smoothstep(0, 1, dist·ρ) − 0.5`` (glibc ``pow``); ``out = uint8(clip(image + intensity·r, 0, 255))``.
The hash is evaluated once per distinct cell with numpy's own 2x2 ``matmul`` (as the reference calls it).
"""

from __future__ import annotations

from typing import Any

import numpy as np

from ovdiv.data.corruptions.blocks import row_blocks
from ovdiv.data.corruptions.magnitude import float_parameter

__all__ = ["apply_voronoi_noise", "sample_voronoi_noise"]

_HASH = np.array([[13.85, 47.77], [99.41, 88.48]])


def sample_voronoi_noise(rs: np.random.RandomState, severity: float, im_size: int) -> dict[str, Any]:
    """Draw the parameters in the reference order (``VoronoiNoise.sample_parameters``)."""
    seed = rs.uniform(low=0, high=10)
    density = rs.uniform(low=0.5, high=0.9)
    size = rs.uniform(low=0.05, high=0.2) * im_size
    intensity = float_parameter(severity, 255)
    if rs.uniform() > 0.5:
        intensity = -intensity
    return {"seed": seed, "density": density, "size": size, "intensity": intensity}


def apply_voronoi_noise(image: np.ndarray, *, size: float, seed: float, density: float, intensity: float) -> np.ndarray:
    """Apply ``voronoi_noise`` with given parameters to a uint8 ``(S, S, 3)`` image."""
    im = image.shape[0]
    coords = np.arange(im, dtype=np.float64)
    v = coords / size + 1  # the same for columns (x) and rows (y)
    cell = np.floor_divide(v, 1)
    frac = np.remainder(v, 1)
    first = int(cell.min()) - 1
    cells = np.arange(first, int(cell.max()) + 2, dtype=np.float64)
    # hash[a, b] for cell (column a, row b), via the reference's own matmul per distinct cell.
    n = len(cells)
    h0 = np.empty((n, n))
    h1 = np.empty((n, n))
    for ia, a in enumerate(cells):
        for ib, b in enumerate(cells):
            w = np.matmul(_HASH, np.array([[a], [b]]))
            h = np.remainder(np.sin(w) * np.sqrt(w) * seed * 0.0025, 1)
            h0[ia, ib], h1[ia, ib] = h[0, 0], h[1, 0]
    cell_idx = cell.astype(np.int64) - first
    noise = np.empty((im, im))
    for r0, r1 in row_blocks(im, im):
        gy = cell_idx[r0:r1, None]
        fy = frac[r0:r1, None]
        gx = cell_idx[None, :]
        fx = frac[None, :]
        dist = np.ones((r1 - r0, im))
        for i in (-1, 0, 1):
            for j in (-1, 0, 1):
                e0 = (i + h0[gx + i, gy + j]) - fx
                e1 = (j + h1[gx + i, gy + j]) - fy
                dist = np.minimum(np.sqrt(e0 * e0 + e1 * e1), dist)
        x = np.clip(dist * density, 0, 1)
        x = (x - 0) / (1 - 0)
        noise[r0:r1] = np.clip(3 * np.float_power(x, 2) - 2 * np.float_power(x, 3), 0, 1) - 0.5
    return np.clip(image + (intensity * noise)[..., None], 0, 255).astype(np.uint8)
