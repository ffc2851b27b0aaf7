"""Official ImageNet-C-bar ``caustic_refraction`` (+ pool ``caustic_noise``), ``corrupt.CausticRefraction``.

Parameters (global stream, in order): ``time T = U(0.5, 2.0)``, ``size S_c = U(0.75, 1.25)·S``; constants
``eta = 4``, ``lens_scale = fp(s, S/2)``, ``lighting_amount λ = fp(s, 2)``, ``softening = 1``.

Caustic field per pixel (float64, glibc ``pow`` as on numpy scalars)::

    P = ((p / S_c) mod 1)·6.28318530718 − 250 for p = (y, x);  i = P;  c = 1.0
    for n in 0..4:  t = T·(1 − 3.5/(n+1))
                    i = P + (cos(t − i0) + sin(t + i1), sin(t − i1) + cos(t + i0))
                    c += 1/sqrt(pow(P0/(sin(i0 + t)/0.005), 2) + pow(P1/(cos(i1 + t)/0.005), 2))
    C = clip(pow(|1.17 − pow(c/5, 1.4)|, 8), 0, 1)

``caustic_noise``: ``out = uint8(clip(image + (25.5·s)·C, 0, 255))``.

``caustic_refraction``: ``N = gaussian_filter(stack(C, C, C), sigma=1)`` (scipy, all three axes, as the
reference); luma ``L = (N0·0.2126 + N1·0.7152) + N2·0.0722`` (0 outside); per pixel the normal
``n = (L(y+1,x) − L(y−1,x), L(y,x+1) − L(y,x−1), 1)/|n|``; unless ``n2 ≥ 0.999`` the refracted direction is
``inv([n; n×s; s]) · (cos φ, sin φ, 0)`` with ``θ = arccos n2``, ``φ = arcsin(sin θ/4)``,
``s = (e_z × n)/|e_z × n|`` (batched ``numpy.linalg.inv``); offset ``round(lens_scale·r, 3)[0:2]``; the
output is the reference bilinear sample of ``float32(image)/255`` at ``p + offset`` plus the lighting
terms ``(L(y,x−1) − L(y,x+1))·λ`` then ``(L(y+1,x) − L(y−1,x))·λ``, clipped to [0, 1], times 255, truncated.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from ovdiv.data.corruptions.blocks import row_blocks, spans
from ovdiv.data.corruptions.interpolation import BilinearZero
from ovdiv.data.corruptions.magnitude import float_parameter

__all__ = [
    "apply_caustic_noise",
    "apply_caustic_refraction",
    "caustic_field",
    "sample_caustic_noise",
    "sample_caustic_refraction",
]


def caustic_field(size: int, time: float, scale: float) -> np.ndarray:
    """The ``(size, size)`` caustic intensity ``C`` in [0, 1] (float64)."""
    coords = np.arange(size, dtype=np.float64)
    field = np.empty((size, size))
    for r0, r1 in row_blocks(size, size):
        p0 = np.broadcast_to((np.remainder(coords[r0:r1] / scale, 1) * 6.28318530718 - 250)[:, None], (r1 - r0, size))
        p1 = np.broadcast_to((np.remainder(coords / scale, 1) * 6.28318530718 - 250)[None, :], (r1 - r0, size))
        i0: np.ndarray = p0
        i1: np.ndarray = p1
        c: np.ndarray = np.ones((r1 - r0, size))
        for n in range(5):
            t = time * (1.0 - (3.5 / (n + 1)))
            i0, i1 = p0 + (np.cos(t - i0) + np.sin(t + i1)), p1 + (np.sin(t - i1) + np.cos(t + i0))
            with np.errstate(divide="ignore"):
                length = np.sqrt(
                    np.float_power(p0 / (np.sin(i0 + t) / 0.005), 2) + np.float_power(p1 / (np.cos(i1 + t) / 0.005), 2)
                )
                c = c + 1.0 / length
        c = c / 5.0
        c = 1.17 - np.float_power(c, 1.4)
        field[r0:r1] = np.clip(np.float_power(np.abs(c), 8.0), 0, 1)
    return field


def sample_caustic_refraction(rs: np.random.RandomState, severity: float, im_size: int) -> dict[str, Any]:
    """Draw the parameters in the reference order (``CausticRefraction.sample_parameters``)."""
    time = rs.uniform(low=0.5, high=2.0)
    size = rs.uniform(low=0.75, high=1.25) * im_size
    return {
        "time": time,
        "size": size,
        "eta": 4.0,
        "lens_scale": float_parameter(severity, 0.5 * im_size),
        "lighting_amount": float_parameter(severity, 2.0),
        "softening": 1,
    }


def apply_caustic_refraction(
    image: np.ndarray,
    *,
    time: float,
    size: float,
    eta: float,
    lens_scale: float,
    lighting_amount: float,
    softening: float,
) -> np.ndarray:
    """Apply ``caustic_refraction`` with given parameters to a uint8 ``(S, S, 3)`` image."""
    from scipy.ndimage import gaussian_filter  # the reference's blur, called identically

    im = image.shape[0]
    field = caustic_field(im, time, size)
    blurred = gaussian_filter(np.stack((field, field, field), axis=2), sigma=softening)
    luma = np.zeros((im + 2, im + 2))  # zero border: luma outside the image is 0
    luma[1:-1, 1:-1] = (blurred[..., 0] * 0.2126 + blurred[..., 1] * 0.7152) + blurred[..., 2] * 0.0722
    north = luma[1:-1, :-2]  # (y, x - 1)
    south = luma[1:-1, 2:]  # (y, x + 1)
    west = luma[:-2, 1:-1]  # (y - 1, x)
    east = luma[2:, 1:-1]  # (y + 1, x)

    n0 = (east - west).ravel()
    n1 = (south - north).ravel()
    norm = np.sqrt((n0 * n0 + n1 * n1) + 1.0 * 1.0)
    nz = 1.0 / norm
    nx = n0 / norm
    ny = n1 / norm
    bent = np.nonzero(~(np.abs(nz) >= 1.0 - 1e-3))[0]
    offset0 = np.zeros(im * im)
    offset1 = np.zeros(im * im)
    for i0, i1 in spans(bent.size):
        idx = bent[i0:i1]
        a, b, c = nx[idx], ny[idx], nz[idx]
        out_angle = np.arcsin(np.sin(np.arccos(c)) / eta)
        # spectator = cross((0, 0, 1), n) / |.| = (-n1, n0, 0) / sqrt((n1² + n0²) + 0)
        sp0, sp1, sp2 = 0.0 * c - 1.0 * b, 1.0 * a - 0.0 * c, 0.0 * b - 0.0 * a
        sn = np.sqrt((sp0 * sp0 + sp1 * sp1) + sp2 * sp2)
        sp0, sp1, sp2 = sp0 / sn, sp1 / sn, sp2 / sn
        # orthogonal = cross(n, spectator)
        or0, or1, or2 = b * sp2 - c * sp1, c * sp0 - a * sp2, a * sp1 - b * sp0
        rot = np.empty((idx.size, 3, 3))
        rot[:, 0, 0], rot[:, 0, 1], rot[:, 0, 2] = a, b, c
        rot[:, 1, 0], rot[:, 1, 1], rot[:, 1, 2] = or0, or1, or2
        rot[:, 2, 0], rot[:, 2, 1], rot[:, 2, 2] = sp0, sp1, sp2
        inv = np.linalg.inv(rot)
        cos_o, sin_o = np.cos(out_angle), np.sin(out_angle)
        r0 = (inv[:, 0, 0] * cos_o + inv[:, 0, 1] * sin_o) + inv[:, 0, 2] * 0.0
        r1 = (inv[:, 1, 0] * cos_o + inv[:, 1, 1] * sin_o) + inv[:, 1, 2] * 0.0
        offset0[idx] = np.round(r0 * lens_scale, 3)
        offset1[idx] = np.round(r1 * lens_scale, 3)

    rows, cols = np.divmod(np.arange(im * im), im)
    sampler = BilinearZero(image.astype(np.float32) / 255, margin=int(np.ceil(abs(lens_scale))) + 2)
    lighting_ns = ((north - south).ravel()) * lighting_amount
    lighting_ew = ((east - west).ravel()) * lighting_amount
    out = np.empty((im * im, 3), dtype=np.uint8)
    for i0, i1 in spans(im * im):
        values = sampler(rows[i0:i1] + offset0[i0:i1], cols[i0:i1] + offset1[i0:i1])
        values = values + lighting_ns[i0:i1]
        values = values + lighting_ew[i0:i1]
        values = np.clip(values, 0, 1)
        out[i0:i1] = np.clip((values * 255).astype(np.uint8), 0, 255).T
    return out.reshape(image.shape)


def sample_caustic_noise(rs: np.random.RandomState, severity: float, im_size: int) -> dict[str, Any]:
    """Draw the parameters in the reference order (``CausticNoise.sample_parameters``)."""
    time = rs.uniform(low=0.5, high=2.0)
    size = rs.uniform(low=0.75, high=1.25) * im_size
    return {"time": time, "size": size, "intensity": float_parameter(severity, 255)}


def apply_caustic_noise(image: np.ndarray, *, time: float, size: float, intensity: float) -> np.ndarray:
    """Apply ``caustic_noise`` (candidate pool) with given parameters to a uint8 ``(S, S, 3)`` image."""
    field = caustic_field(image.shape[0], time, size)
    return np.clip(image + (intensity * field)[..., None], 0, 255).astype(np.uint8)
