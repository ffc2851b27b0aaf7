"""Candidate-pool geometric warps: ``ripple``, ``scatter``, ``pinch_and_twirl_v2``, ``fish_eye_v2``.

All are inverse warps sampled with the reference bilinear sampler (zero fill, float64; :mod:`.interpolation`).

* ``ripple`` (``corrupt.Ripple``): ``amplitudes = [0.0025·s·S]·2`` (no draw), ``wavelengths = U(0.1, 0.3,
  size=2)·S``, ``phases = U(0, 2π, size=2)``; ``q = p + A·sin((2π·p)/λ + φ)`` per axis (row, column).
* ``scatter`` (``corrupt.Scatter``): ``seed σ = U(0, 10)`` (a float), ``radius r = fp(s, S/10)``; with
  ``H(a, b) = (sin(12.9898·sin(a·σ) + 78.233·cos(b·σ))·43758.5453) mod 1``:
  ``x' = min(max(0, x + r·(2H(x, y) − 1)), S − 1)``, ``y' = min(max(0, y + r·(2H(y, x) − 1)), S − 1)``;
  cast without clip.
* ``pinch_and_twirl_v2`` (``corrupt.PinchAndTwirl``): ``n² `` draws ``choice([1, −1])·fp(s, π/2)`` (n = 5 at
  S = 224, else 3), ``amount κ = fp(s, 0.4) + 0.1``; blocks of side ``S//n`` visited column-block-major, each
  warped from the CURRENT float32 image (later blocks see earlier ones): inside the inscribed disc,
  ``t = pow(sin((π·0.5)·d), −κ)``, ``a = angle·pow(1 − d, 2)``, rotate-and-scale about the centre.
* ``fish_eye_v2`` (``corrupt.FishEye``): ``seed``; ``int(0.01·224²)`` (for S = 224) lenses of radius
  ``max(0.05·S, 3)`` at ``RandomState(seed).uniform(0, S, size=2)``, applied in order to the current float32
  image with the reference's refraction formula (``eta = fp(s, 2) + 1``).
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np

from ovdiv.data.corruptions.blocks import spans
from ovdiv.data.corruptions.interpolation import BilinearZero, bilinear_points
from ovdiv.data.corruptions.magnitude import float_parameter
from ovdiv.data.corruptions.rng import private_stream

__all__ = [
    "apply_fish_eye_v2",
    "apply_pinch_and_twirl_v2",
    "apply_ripple",
    "apply_scatter",
    "sample_fish_eye_v2",
    "sample_pinch_and_twirl_v2",
    "sample_ripple",
    "sample_scatter",
]


def _sample_grid(image: np.ndarray, q0: np.ndarray, q1: np.ndarray) -> np.ndarray:
    """Bilinear samples for full ``(S, S)`` coordinate grids -> float64 ``(S, S, C)``."""
    size = image.shape[0]
    q0 = np.broadcast_to(q0, (size, size)).ravel()
    q1 = np.broadcast_to(q1, (size, size)).ravel()
    low = min(float(q0.min()), float(q1.min()))
    high = max(float(q0.max()), float(q1.max()))
    margin = int(min(4.0 * size, max(0.0, -low, high - (size - 1)))) + 2  # beyond it: the sampler's fallback
    sampler = BilinearZero(image, margin=margin)
    out = np.empty((size * size, image.shape[2]))
    for i0, i1 in spans(size * size):
        out[i0:i1] = sampler(q0[i0:i1], q1[i0:i1]).T
    return out.reshape(size, size, image.shape[2])


def sample_ripple(rs: np.random.RandomState, severity: float, im_size: int) -> dict[str, Any]:
    """Draw the parameters in the reference order (``Ripple.sample_parameters``)."""
    amplitudes = np.array([float_parameter(severity, 0.025) for _ in range(2)]) * im_size
    wavelengths = rs.uniform(low=0.1, high=0.3, size=2) * im_size
    phases = rs.uniform(low=0, high=2 * np.pi, size=2)
    return {"amplitudes": amplitudes, "wavelengths": wavelengths, "phases": phases}


def apply_ripple(image: np.ndarray, *, wavelengths: Any, phases: Any, amplitudes: Any) -> np.ndarray:
    """Apply ``ripple`` with given parameters to a uint8 ``(S, S, 3)`` image."""
    size = image.shape[0]
    lam = np.asarray(wavelengths, dtype=np.float64)
    phi = np.asarray(phases, dtype=np.float64)
    amp = np.asarray(amplitudes, dtype=np.float64)
    coords = np.arange(size, dtype=np.float64)
    q0 = coords + amp[0] * np.sin(2 * np.pi * coords / lam[0] + phi[0])
    q1 = coords + amp[1] * np.sin(2 * np.pi * coords / lam[1] + phi[1])
    out = _sample_grid(image, q0[:, None], q1[None, :])
    return np.clip(out, 0, 255).astype(np.uint8)


def sample_scatter(rs: np.random.RandomState, severity: float, im_size: int) -> dict[str, Any]:
    """Draw the parameters in the reference order (``Scatter.sample_parameters``)."""
    seed = rs.uniform(low=0.0, high=10.0)
    return {"seed": seed, "radius": float_parameter(severity, im_size / 10)}


def apply_scatter(image: np.ndarray, *, seed: float, radius: float) -> np.ndarray:
    """Apply ``scatter`` with given parameters to a uint8 ``(S, S, 3)`` image."""
    size = image.shape[0]
    coords = np.arange(size, dtype=np.float64)
    sin_a = np.sin(coords * seed)
    cos_b = np.cos(coords * seed)

    def hash2(a_sin: np.ndarray, b_cos: np.ndarray) -> np.ndarray:
        return np.remainder(np.sin(12.9898 * a_sin + 78.233 * b_cos) * 43758.5453, 1)

    y = coords[:, None]
    x = coords[None, :]
    x_offset = radius * (-1.0 + hash2(sin_a[None, :], cos_b[:, None]) * 2)  # H(x, y)
    y_offset = radius * (-1.0 + hash2(sin_a[:, None], cos_b[None, :]) * 2)  # H(y, x)
    x_new = np.minimum(np.maximum(0, x + x_offset), size - 1)
    y_new = np.minimum(np.maximum(0, y + y_offset), size - 1)
    out = _sample_grid(image, y_new, x_new)
    with np.errstate(invalid="ignore"):
        return out.astype(np.uint8)


def sample_pinch_and_twirl_v2(rs: np.random.RandomState, severity: float, im_size: int) -> dict[str, Any]:
    """Draw the parameters in the reference order (``PinchAndTwirl.sample_parameters``)."""
    num_per_axis = 5 if im_size == 224 else 3
    angles = np.array(
        [rs.choice([1, -1]) * float_parameter(severity, np.pi / 2) for _ in range(num_per_axis**2)]
    ).reshape(num_per_axis, num_per_axis)
    amount = float_parameter(severity, 0.4) + 0.1
    return {"num_per_axis": num_per_axis, "angles": angles, "amount": amount}


def apply_pinch_and_twirl_v2(image: np.ndarray, *, num_per_axis: int, angles: Any, amount: float) -> np.ndarray:
    """Apply ``pinch_and_twirl_v2`` with given parameters to a uint8 ``(S, S, 3)`` image."""
    size = image.shape[0]
    ang = np.asarray(angles, dtype=np.float64)
    out = image.astype(np.float32)
    grid = size // num_per_axis
    radius = grid / 2
    local = np.arange(grid)
    for i in range(num_per_axis):
        for j in range(num_per_axis):
            left, up = i * grid, j * grid
            c0, c1 = up + radius, left + radius
            ys = np.repeat(up + local, grid).astype(np.float64)
            xs = np.tile(left + local, grid).astype(np.float64)
            dx = ys - c0
            dy = xs - c1
            dist = np.sqrt(dx * dx + dy * dy)
            warp = ~((dist > radius) | (np.round(dist, 3) == 0.0))
            d = dist[warp] / radius
            t = np.float_power(np.sin(np.pi * 0.5 * d), -amount)
            wx = dx[warp] * t
            wy = dy[warp] * t
            a = ang[i, j] * np.float_power(1 - d, 2)
            q0 = ys.copy()
            q1 = xs.copy()
            q0[warp] = c0 + (wx * np.cos(a) - wy * np.sin(a))
            q1[warp] = c1 + (wx * np.sin(a) + wy * np.cos(a))
            values = bilinear_points(out, q0, q1)
            out[up : up + grid, left : left + grid] = values.T.reshape(grid, grid, -1)
    return np.clip(out, 0, 255).astype(np.uint8)


def sample_fish_eye_v2(rs: np.random.RandomState, severity: float, im_size: int) -> dict[str, Any]:
    """Draw the parameters in the reference order (``FishEye.sample_parameters``)."""
    seed = int(rs.randint(low=0, high=2**32))
    density = 0.01 * 224**2 / (im_size**2)
    eta = float_parameter(severity, 2.0) + 1.0
    radius = max(0.05 * im_size, 3)
    return {"seed": seed, "density": density, "eta": eta, "radius": radius}


def _refract_axis(delta: np.ndarray, sq: np.ndarray, z: np.ndarray, z2: np.ndarray, r: float) -> np.ndarray:
    angle = np.arccos(delta / np.sqrt(sq + z2))
    angle_1 = np.pi / 2 - angle
    angle_2 = np.arcsin(np.sin(angle_1) * r)
    angle_2 = np.pi / 2 - angle - angle_2
    return np.tan(angle_2) * z


def apply_fish_eye_v2(image: np.ndarray, *, density: float, eta: float, radius: float, seed: int) -> np.ndarray:
    """Apply ``fish_eye_v2`` with given parameters to a uint8 ``(S, S, 3)`` image."""
    size = image.shape[0]
    rs = private_stream(seed)
    num = int(density * size**2)
    out = image.astype(np.float32)
    a = b = radius
    a2 = math.pow(a, 2)
    b2 = math.pow(b, 2)
    r = 1.0 / eta
    for _ in range(num):
        center = rs.uniform(low=0, high=size, size=2)
        left = max(int(np.floor(center[1] - radius)), 0)
        right = min(int(np.ceil(center[1] + radius)), size)
        up = max(int(np.floor(center[0] - radius)), 0)
        down = min(int(np.ceil(center[0] + radius)), size)
        if right <= left or down <= up:
            continue
        ys = np.repeat(np.arange(up, down), right - left).astype(np.float64)
        xs = np.tile(np.arange(left, right), down - up).astype(np.float64)
        dx = ys - center[0]
        dy = xs - center[1]
        x2 = np.float_power(dx, 2)
        y2 = np.float_power(dy, 2)
        inside = ~(y2 >= (b2 - b2 * x2 / a2))
        q0 = ys.copy()
        q1 = xs.copy()
        if inside.any():
            dxi, dyi, x2i, y2i = dx[inside], dy[inside], x2[inside], y2[inside]
            z = np.sqrt((1.0 - x2i / a2 - y2i / b2) * (a * b))
            z2 = np.float_power(z, 2)
            q0[inside] = ys[inside] - _refract_axis(dxi, x2i, z, z2, r)
            q1[inside] = xs[inside] - _refract_axis(dyi, y2i, z, z2, r)
        values = bilinear_points(out, q0, q1)
        out[up:down, left:right] = values.T.reshape(down - up, right - left, -1)
    return np.clip(out, 0, 255).astype(np.uint8)
