"""The corruption registry: names, reference classes, severity tables, candidate-pool levels and aliases.

Severity tables are ``imagenet_c_bar/imagenet_c_bar.csv`` (official ImageNet-C-bar: severity index 1..5 ->
magnitude) and ``imagenet_c_bar/imagenet_new_corruptions.csv`` (the 30-corruption candidate pool on the
224-px scale, 10 levels each) of facebookresearch/augmentation-corruption, verbatim.
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np

from ovdiv.errors import DataError

__all__ = [
    "OFFICIAL_CBAR",
    "PAPER_SETTINGS",
    "Corruption",
    "available",
    "get",
    "parse_corruption_spec",
    "pool_levels",
    "register",
    "resolve_name",
    "severity_table",
]

SampleFn = Callable[[np.random.RandomState, float, int], dict[str, Any]]
ApplyFn = Callable[..., np.ndarray]

#: Official ImageNet-C-bar, in ``imagenet_c_bar.csv`` order: name -> magnitudes of severities 1..5.
_OFFICIAL_TABLE: dict[str, tuple[float, ...]] = {
    "caustic_refraction": (2.35, 3.2, 4.9, 6.6, 9.15),
    "inverse_sparkles": (1.0, 2.0, 4.0, 9.0, 10.0),
    "sparkles": (1.0, 2.0, 3.0, 5.0, 6.0),
    "perlin_noise": (4.6, 5.2, 5.8, 7.6, 8.8),
    "blue_noise_sample": (0.8, 1.6, 2.4, 4.0, 5.6),
    "plasma_noise": (4.75, 7.0, 8.5, 9.25, 10.0),
    "checkerboard_cutout": (2.0, 3.0, 4.0, 5.0, 6.0),
    "cocentric_sine_waves": (3.0, 5.0, 8.0, 9.0, 10.0),
    "single_frequency_greyscale": (1.0, 1.5, 2.0, 4.5, 5.0),
    "brownish_noise": (1.0, 2.0, 3.0, 4.0, 5.0),
}
OFFICIAL_CBAR: tuple[str, ...] = tuple(_OFFICIAL_TABLE)

#: The 30-corruption candidate pool (``imagenet_new_corruptions.csv``): name -> 10 magnitudes.
_POOL_TABLE: dict[str, tuple[float, ...]] = {
    "single_frequency_greyscale": (0.5, 1.0, 1.5, 2.0, 2.5, 3.0, 3.5, 4.0, 4.5, 5.0),
    "cocentric_sine_waves": (1.0, 2.0, 3.0, 4.0, 5.0, 6.0, 7.0, 8.0, 9.0, 10.0),
    "plasma_noise": (3.25, 4.0, 4.75, 5.5, 6.25, 7.0, 7.75, 8.5, 9.25, 10.0),
    "voronoi_noise": (3.25, 4.0, 4.75, 5.5, 6.25, 7.0, 7.75, 8.5, 9.25, 10.0),
    "caustic_noise": (3.25, 4.0, 4.75, 5.5, 6.25, 7.0, 7.75, 8.5, 9.25, 10.0),
    "sparkles": (1.0, 2.0, 3.0, 4.0, 5.0, 6.0, 7.0, 8.0, 9.0, 10.0),
    "inverse_sparkles": (1.0, 2.0, 3.0, 4.0, 5.0, 6.0, 7.0, 8.0, 9.0, 10.0),
    "checkerboard_cutout": (1.0, 2.0, 3.0, 4.0, 5.0, 6.0, 7.0, 8.0, 9.0, 10.0),
    "lines": (0.8, 1.6, 2.4, 3.2, 4.0, 4.8, 5.6, 6.4, 7.2, 8.0),
    "scatter": (0.5, 1.0, 1.5, 2.0, 2.5, 3.0, 3.5, 4.0, 4.5, 5.0),
    "chromatic_abberation": (1.0, 2.0, 3.0, 4.0, 5.0, 6.0, 7.0, 8.0, 9.0, 10.0),
    "transverse_chromatic_abberation": (1.0, 2.0, 3.0, 4.0, 5.0, 6.0, 7.0, 8.0, 9.0, 10.0),
    "caustic_refraction": (2.35, 3.2, 4.05, 4.9, 5.75, 6.6, 7.45, 8.3, 9.15, 10.0),
    "pinch_and_twirl_v2": (4.15, 4.8, 5.45, 6.1, 6.75, 7.4, 8.05, 8.7, 9.35, 10.0),
    "fish_eye_v2": (0.4, 0.8, 1.2, 1.6, 2.0, 2.4, 2.8, 3.2, 3.6, 4.0),
    "water_drop": (5.5, 6.0, 6.5, 7.0, 7.5, 8.0, 8.5, 9.0, 9.5, 10.0),
    "ripple": (3.25, 4.0, 4.75, 5.5, 6.25, 7.0, 7.75, 8.5, 9.25, 10.0),
    "bleach_bypass": (1.0, 2.0, 3.0, 4.0, 5.0, 6.0, 7.0, 8.0, 9.0, 10.0),
    "technicolor": (1.0, 2.0, 3.0, 4.0, 5.0, 6.0, 7.0, 8.0, 9.0, 10.0),
    "pseudocolor": (1.9, 2.8, 3.7, 4.6, 5.5, 6.4, 7.3, 8.2, 9.1, 10.0),
    "color_balance": (1.0, 2.0, 3.0, 4.0, 5.0, 6.0, 7.0, 8.0, 9.0, 10.0),
    "quadrilateral_no_bars": (1.0, 2.0, 3.0, 4.0, 5.0, 6.0, 7.0, 8.0, 9.0, 10.0),
    "perspective_no_bars": (1.0, 2.0, 3.0, 4.0, 5.0, 6.0, 7.0, 8.0, 9.0, 10.0),
    "perlin_noise": (4.6, 5.2, 5.8, 6.4, 7.0, 7.6, 8.2, 8.8, 9.4, 10.0),
    "blue_noise_sample": (0.8, 1.6, 2.4, 3.2, 4.0, 4.8, 5.6, 6.4, 7.2, 8.0),
    "blue_noise": (0.7, 1.4, 2.1, 2.8, 3.5, 4.2, 4.9, 5.6, 6.3, 7.0),
    "hue_shift": (1.0, 2.0, 3.0, 4.0, 5.0, 6.0, 7.0, 8.0, 9.0, 10.0),
    "circular_motion_blur": (2.35, 3.2, 4.05, 4.9, 5.75, 6.6, 7.45, 8.3, 9.15, 10.0),
    "color_dither": (3.0, 4.0, 5.0, 6.0, 7.0, 8.0, 9.0, 10.0, 11.0, 12.0),
    "brownish_noise": (1.0, 2.0, 3.0, 4.0, 5.0, 6.0, 7.0, 8.0, 9.0, 10.0),
}

#: The paper's four datasets ("ImageNet-C-bar" in the paper; only checkerboard_cutout is official C-bar).
PAPER_SETTINGS: dict[str, float] = {
    "lines": 1.6,
    "plasma_noise": 4.0,
    "checkerboard_cutout": 4.0,
    "water_drop": 7.0,
}

#: Spec aliases (``plasma4.0``) and the reference's ``transform_finder`` names -> canonical names.
_ALIASES: dict[str, str] = {
    "plasma": "plasma_noise",
    "checkerboard": "checkerboard_cutout",
    "waterdrop": "water_drop",
    "pinch_and_twirl": "pinch_and_twirl_v2",
    "fish_eye": "fish_eye_v2",
}


@dataclass(frozen=True)
class Corruption:
    """One registered corruption.

    Attributes:
        name: Canonical name (the candidate-pool CSV's spelling).
        reference_class: The class in ``imagenet_c_bar/corrupt.py`` it reproduces.
        sample: ``sample(rs, severity, im_size) -> params``: draws from the reference's global stream.
        apply: ``apply(image, **params) -> uint8``: the deterministic transform.
        official: Magnitudes of official ImageNet-C-bar severities 1..5, or None if not official.
        pool: The 10 candidate-pool magnitudes.
        max_severity: Largest accepted magnitude.
    """

    name: str
    reference_class: str
    sample: SampleFn
    apply: ApplyFn
    official: tuple[float, ...] | None
    pool: tuple[float, ...]
    max_severity: float


_REGISTRY: dict[str, Corruption] = {}


def register(name: str, reference_class: str, sample: SampleFn, apply: ApplyFn) -> Corruption:
    """Register an implemented corruption under its candidate-pool name (tables are filled in here)."""
    if name not in _POOL_TABLE:
        raise ValueError(f"{name!r} is not an ImageNet-C-bar candidate-pool corruption")
    pool = _POOL_TABLE[name]
    entry = Corruption(
        name=name,
        reference_class=reference_class,
        sample=sample,
        apply=apply,
        official=_OFFICIAL_TABLE.get(name),
        pool=pool,
        max_severity=max(10.0, pool[-1]),
    )
    _REGISTRY[name] = entry
    return entry


def available(*, official_only: bool = False) -> list[str]:
    """Names of the implemented corruptions (official ones in CSV order first, then the pool ones, sorted)."""
    official = [n for n in OFFICIAL_CBAR if n in _REGISTRY]
    if official_only:
        return official
    return official + sorted(n for n in _REGISTRY if n not in _OFFICIAL_TABLE)


def _valid_names_hint() -> str:
    return "valid: " + ", ".join(available()) + "; aliases: " + ", ".join(sorted(_ALIASES))


def resolve_name(alias: str) -> str:
    """Map a canonical name or alias (``plasma``, ``checkerboard``, ``waterdrop``, ``Lines``) to its name.

    Raises:
        DataError: Unknown name (the message lists the valid ones).
    """
    if not isinstance(alias, str):
        raise DataError(f"corruption name must be a string, got {type(alias).__name__}", _valid_names_hint())
    key = alias.strip().lower().replace("-", "_")
    key = _ALIASES.get(key, key)
    if key not in _REGISTRY:
        raise DataError(f"unknown corruption {alias!r}", _valid_names_hint())
    return key


def get(name: str) -> Corruption:
    """The :class:`Corruption` for a name or alias (DataError if unknown)."""
    return _REGISTRY[resolve_name(name)]


def severity_table(name: str) -> tuple[float, ...]:
    """Magnitudes of official ImageNet-C-bar severities 1..5 (e.g. plasma_noise: 4.75, 7, 8.5, 9.25, 10).

    Raises:
        DataError: Unknown name, or a corruption that is not part of official ImageNet-C-bar.
    """
    entry = get(name)
    if entry.official is None:
        raise DataError(
            f"{entry.name!r} is not an official ImageNet-C-bar corruption (it is a candidate-pool one)",
            f"official: {', '.join(OFFICIAL_CBAR)}; use pool_levels({entry.name!r}) for its 10 levels",
        )
    return entry.official


def pool_levels(name: str) -> tuple[float, ...]:
    """The 10 candidate-pool magnitudes of a corruption (``imagenet_new_corruptions.csv``)."""
    return get(name).pool


def check_severity(entry: Corruption, severity: Any) -> float:
    """Validate a magnitude: a finite real number in ``(0, max_severity]``; returns it as float."""
    if isinstance(severity, bool) or not isinstance(severity, int | float | np.integer | np.floating):
        raise DataError(f"severity for {entry.name!r} must be a number, got {severity!r}")
    value = float(severity)
    if not math.isfinite(value) or not 0.0 < value <= entry.max_severity:
        raise DataError(
            f"severity {severity!r} for {entry.name!r} is outside (0, {entry.max_severity:g}]",
            f"magnitudes are on the reference's 0-10 scale, e.g. pool levels {', '.join(f'{v:g}' for v in entry.pool)}",
        )
    return value


_SPEC_SEVERITY = re.compile(r"[_:\-]?(\d+(?:\.\d*)?|\.\d+)")


def parse_corruption_spec(spec: str) -> tuple[str, float]:
    """Split ``"lines1.6"`` / ``"plasma4.0"`` / ``"fish_eye_v22.0"`` into ``(canonical name, magnitude)``.

    The longest registered name or alias that prefixes the spec wins, and the rest must be a number
    (optionally after ``_``, ``-`` or ``:``). The severity is validated like :func:`corrupt` does.

    Raises:
        DataError: Unknown name, missing/unparsable severity, or a severity outside the valid range.
    """
    if not isinstance(spec, str):
        raise DataError(f"corruption spec must be a string, got {type(spec).__name__}")
    text = spec.strip().lower().replace("-", "_")
    candidates = sorted([*_REGISTRY, *(a for a, n in _ALIASES.items() if n in _REGISTRY)], key=len, reverse=True)
    for cand in candidates:
        if text.startswith(cand):
            match = _SPEC_SEVERITY.fullmatch(text[len(cand) :])
            if match:
                entry = get(cand)
                return entry.name, check_severity(entry, float(match.group(1)))
    if any(text.startswith(c) for c in candidates):
        raise DataError(f"corruption spec {spec!r} has no valid severity", "write <name><magnitude>, e.g. lines1.6")
    hint = "write <name><magnitude>, e.g. lines1.6; " + _valid_names_hint()
    raise DataError(f"unknown corruption in spec {spec!r}", hint)


def params_summary(params: Mapping[str, Any]) -> dict[str, Any]:
    """JSON-friendly copy of a parameter dict (numpy arrays/scalars -> lists/Python numbers)."""
    out: dict[str, Any] = {}
    for key, value in params.items():
        if isinstance(value, np.ndarray):
            out[key] = value.tolist()
        elif isinstance(value, np.generic):
            out[key] = value.item()
        elif isinstance(value, tuple):
            out[key] = list(value)
        else:
            out[key] = value
    return out
