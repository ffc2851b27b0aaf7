"""Bit-exact, vectorised re-implementations of the ImageNet-C-bar corruptions (numpy only).

Faithful ports of ``imagenet_c_bar/corrupt.py`` of facebookresearch/augmentation-corruption (Mintun,
Kirillov & Xie, NeurIPS 2021; MIT licence), written from the algorithm descriptions, not copied. Each
corruption draws its parameters from numpy's legacy ``RandomState(seed)`` in the reference's order (the
reference protocol is ``np.random.seed(seed)`` then ``transform(image)``), computes in float64 in the
reference's operation order and truncates to uint8, so outputs equal the original code's byte for byte,
while running whole-array numpy kernels instead of per-pixel Python loops.

The paper's four datasets ("Lines (1.6)", "Plasma (4.0)", "Checkerboard (4.0)", "Waterdrop (7.0)") come
from the 30-corruption *candidate pool*; among them **only checkerboard_cutout is part of official
ImageNet-C-bar** (4.0 = its severity 3 of 5). Official ImageNet-C-bar is the 10 corruptions of
:data:`OFFICIAL_CBAR` at the 5 magnitudes of :func:`severity_table`.

A severity is the *magnitude* on the reference's 0-10 scale (``lines`` 1.6), not the 1..5 index. Images of
any square size ``S >= 8`` are accepted; pixel-scaled parameters follow ``S`` like the reference's
``im_size``.

Example:
    >>> from ovdiv.data.corruptions import corrupt, parse_corruption_spec
    >>> name, sev = parse_corruption_spec("plasma4.0")          # ("plasma_noise", 4.0)
    >>> out = corrupt(image_uint8_224x224x3, name, sev, seed=0)  # doctest: +SKIP
"""

from __future__ import annotations

from ovdiv.data.corruptions import catalog as _catalog  # noqa: F401  (registers the corruptions)
from ovdiv.data.corruptions.registry import (
    OFFICIAL_CBAR,
    PAPER_SETTINGS,
    Corruption,
    available,
    get,
    parse_corruption_spec,
    pool_levels,
    resolve_name,
    severity_table,
)
from ovdiv.data.corruptions.transform import apply_parameters, corrupt, corrupt_batch, sample_parameters

__all__ = [
    "OFFICIAL_CBAR",
    "PAPER_SETTINGS",
    "Corruption",
    "apply_parameters",
    "available",
    "corrupt",
    "corrupt_batch",
    "get",
    "parse_corruption_spec",
    "pool_levels",
    "resolve_name",
    "sample_parameters",
    "severity_table",
]
