"""Official ImageNet-C-bar: ``single_frequency_greyscale`` and ``cocentric_sine_waves`` (additive patterns).

``single_frequency_greyscale`` (``corrupt.SingleFrequencyGreyscale``): draws ``fm = U(−π, π)``,
``f2 = U(−|fm|, |fm|)``, ``freq = (fm, f2)[permutation(2)]``, ``phase = U(0, 2π)``; constant
``intensity = 19.6·s``. Per pixel (column x, row y): ``N = sin((x·freq0 + y·freq1) + phase)``, the same for
all channels; ``out = uint8(clip(image + intensity·N, 0, 255))``.

``cocentric_sine_waves`` (``corrupt.CocentricSineWaves``): draws ``offset = U(0, S, size=2)`` (offset[0] is
the centre's COLUMN), ``freq ν = U(0, 10)``, ``amplitude A = U(0, S/10)``, ``ring_width w = U(0, S/10)``;
constant ``intensity = [12.8·s]·3``. Per pixel, with ``dx = x − o0``, ``dy = y − o1``::

    a = arctan2(dx, dy)·ν                                        # column difference first
    D = ((sqrt(pow(dx, 2) + pow(dy, 2)) + sin(a)·A) mod w)/w − 0.5  # C pow, floor-mod
    out_c = uint8(clip(image_c + intensity_c·D, 0, 255))

``pow`` is glibc's (``np.float_power``), as the reference evaluates ``**`` on numpy scalars.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from ovdiv.data.corruptions.magnitude import float_parameter

__all__ = [
    "apply_cocentric_sine_waves",
    "apply_single_frequency_greyscale",
    "sample_cocentric_sine_waves",
    "sample_single_frequency_greyscale",
]


def sample_single_frequency_greyscale(rs: np.random.RandomState, severity: float, im_size: int) -> dict[str, Any]:
    """Draw the parameters in the reference order (``SingleFrequencyGreyscale.sample_parameters``)."""
    freq_mag = rs.uniform(low=-np.pi, high=np.pi)
    freq_2 = rs.uniform(low=-abs(freq_mag), high=abs(freq_mag))
    freq = np.array([freq_mag, freq_2])[rs.permutation(2)]
    phase = rs.uniform(low=0, high=2 * np.pi)
    return {"freq": freq, "phase": phase, "intensity": float_parameter(severity, 196)}


def apply_single_frequency_greyscale(image: np.ndarray, *, freq: Any, phase: float, intensity: float) -> np.ndarray:
    """Apply ``single_frequency_greyscale`` with given parameters to a uint8 ``(S, S, 3)`` image."""
    size = image.shape[0]
    f0, f1 = float(freq[0]), float(freq[1])
    coords = np.arange(size, dtype=np.float64)
    noise = np.sin((coords[None, :] * f0 + coords[:, None] * f1) + phase)
    out = image + (intensity * noise)[..., None]
    return np.clip(out, 0, 255).astype(np.uint8)


def sample_cocentric_sine_waves(rs: np.random.RandomState, severity: float, im_size: int) -> dict[str, Any]:
    """Draw the parameters in the reference order (``CocentricSineWaves.sample_parameters``)."""
    offset = rs.uniform(low=0, high=im_size, size=2)
    freq = rs.uniform(low=0, high=10)
    amplitude = rs.uniform(low=0, high=im_size / 10)
    ring_width = rs.uniform(low=0, high=im_size / 10)
    intensity = [float_parameter(severity, 128) for _ in range(3)]
    return {"offset": offset, "freq": freq, "amplitude": amplitude, "ring_width": ring_width, "intensity": intensity}


def apply_cocentric_sine_waves(
    image: np.ndarray, *, offset: Any, freq: float, amplitude: float, ring_width: float, intensity: Any
) -> np.ndarray:
    """Apply ``cocentric_sine_waves`` with given parameters to a uint8 ``(S, S, 3)`` image."""
    size = image.shape[0]
    coords = np.arange(size, dtype=np.float64)
    dx = (coords - float(offset[0]))[None, :]  # column offsets
    dy = (coords - float(offset[1]))[:, None]  # row offsets
    angle = np.arctan2(dx, dy) * freq
    dist = np.sqrt(np.float_power(dx, 2) + np.float_power(dy, 2))
    d = np.remainder(dist + np.sin(angle) * amplitude, ring_width) / ring_width
    d -= 1 / 2
    noise = np.stack([float(intensity[c]) * d for c in range(3)], axis=-1)
    return np.clip(image + noise, 0, 255).astype(np.uint8)
