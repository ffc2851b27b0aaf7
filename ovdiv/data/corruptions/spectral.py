"""Official ImageNet-C-bar ``blue_noise_sample`` and ``brownish_noise`` (+ pool ``blue_noise``): FFT noise.

Shared generator (``gen_noise``): with a private ``rs = RandomState(seed)``, phases
``Φ = rs.uniform(0, 2π, size=(S, S//2))``, mirrored to ``Q = [Φ | Φ[::-1, ::-1]]`` (odd ``S``: a middle
column ``[c | 0 | c[::-1]]`` drawn as ``rs.uniform(0, 2π, size=(S//2, 1))``), spectrum ``F = P·(cos Q + i·sin Q)``
rolled by ``S//2`` on both axes, ``n = Re(ifft2(F))``, normalised by its population std. Amplitudes ``P``
(centre ``S/2``, ``r = sqrt((x − S/2)² + (y − S/2)²)``): ``r`` for blue noise, ``1/(pow(r, 2) + 1)`` (glibc
``pow`` of the rounded root) for brownish noise.

* ``blue_noise_sample`` (``corrupt.BlueNoiseSample``): draws ``seed``; ``threshold = 0.3·s − 2.5``; pixels
  with ``n ≤ threshold`` become black, the others keep their exact value.
* ``brownish_noise`` (``corrupt.BrownishNoise``): draws ``seed``; ``intensity = 6.4·s``; one noise per channel
  (R, G, B in order from the same ``rs``); ``out = uint8(clip(image + intensity·n_c, 0, 255))``.
* ``blue_noise`` (``corrupt.BlueNoise``, pool only): as brownish with amplitude ``r``, ``intensity = 19.6·s``.

The inverse FFT is numpy's pocketfft (the reference calls ``scipy.fftpack.ifft2``; SPEC_MORE §2.6 and the
reference records show identical uint8 outputs).
"""

from __future__ import annotations

import functools
from typing import Any

import numpy as np

from ovdiv.data.corruptions.magnitude import float_parameter
from ovdiv.data.corruptions.rng import private_stream

__all__ = [
    "apply_blue_noise",
    "apply_blue_noise_sample",
    "apply_brownish_noise",
    "sample_blue_noise",
    "sample_blue_noise_sample",
    "sample_brownish_noise",
]


@functools.lru_cache(maxsize=8)
def _radius(size: int) -> np.ndarray:
    center = size / 2
    coords = np.arange(size, dtype=np.float64) - center
    r = np.sqrt(coords[None, :] * coords[None, :] + coords[:, None] * coords[:, None])
    r.setflags(write=False)
    return r


@functools.lru_cache(maxsize=8)
def _brownish_power(size: int) -> np.ndarray:
    power = 1 / (np.float_power(_radius(size), 2) + 1)
    power.setflags(write=False)
    return power


def _gen_noise(rs: np.random.RandomState, power: np.ndarray) -> np.ndarray:
    size = power.shape[0]
    phases = rs.uniform(low=0, high=2 * np.pi, size=(size, size // 2))
    if size % 2 == 0:
        phases = np.concatenate((phases, phases[::-1, ::-1]), axis=1)
    else:
        center_freq = rs.uniform(low=0, high=2 * np.pi, size=(size // 2, 1))
        center_freq = np.concatenate((center_freq, np.array([[0.0]]), center_freq[::-1, :]), axis=0)
        phases = np.concatenate((phases, center_freq, phases[::-1, ::-1]), axis=1)
    spectrum = np.empty(phases.shape, dtype=np.complex128)
    spectrum.real = power * np.cos(phases)
    spectrum.imag = power * np.sin(phases)
    spectrum = np.roll(spectrum, size // 2, axis=0)
    spectrum = np.roll(spectrum, size // 2, axis=1)
    noise = np.real(np.fft.ifft2(spectrum))
    return noise / np.std(noise)


def sample_blue_noise_sample(rs: np.random.RandomState, severity: float, im_size: int) -> dict[str, Any]:
    """Draw the parameters in the reference order (``BlueNoiseSample.sample_parameters``)."""
    seed = int(rs.randint(low=0, high=2**32))
    return {"seed": seed, "threshold": float_parameter(severity, 3.0) - 2.5}


def apply_blue_noise_sample(image: np.ndarray, *, seed: int, threshold: float) -> np.ndarray:
    """Apply ``blue_noise_sample`` with given parameters to a uint8 ``(S, S, 3)`` image."""
    noise = _gen_noise(private_stream(seed), _radius(image.shape[0]))
    return image * (noise > threshold)[..., None]


def _additive(image: np.ndarray, seed: int, intensity: float, power: np.ndarray) -> np.ndarray:
    rs = private_stream(seed)
    noise = np.stack([_gen_noise(rs, power) for _ in range(3)], axis=2)
    return np.clip(image + intensity * noise, 0, 255).astype(np.uint8)


def sample_brownish_noise(rs: np.random.RandomState, severity: float, im_size: int) -> dict[str, Any]:
    """Draw the parameters in the reference order (``BrownishNoise.sample_parameters``)."""
    seed = int(rs.randint(low=0, high=2**32))
    return {"seed": seed, "intensity": float_parameter(severity, 64)}


def apply_brownish_noise(image: np.ndarray, *, seed: int, intensity: float) -> np.ndarray:
    """Apply ``brownish_noise`` with given parameters to a uint8 ``(S, S, 3)`` image."""
    return _additive(image, seed, intensity, _brownish_power(image.shape[0]))


def sample_blue_noise(rs: np.random.RandomState, severity: float, im_size: int) -> dict[str, Any]:
    """Draw the parameters in the reference order (``BlueNoise.sample_parameters``)."""
    seed = int(rs.randint(low=0, high=2**32))
    return {"seed": seed, "intensity": float_parameter(severity, 196)}


def apply_blue_noise(image: np.ndarray, *, seed: int, intensity: float) -> np.ndarray:
    """Apply ``blue_noise`` (candidate pool) with given parameters to a uint8 ``(S, S, 3)`` image."""
    return _additive(image, seed, intensity, _radius(image.shape[0]))
