"""Post-processing of attribution maps (abs, channel reduction, per-map normalisation).

The normalisation math is *the same code* as the attribution-diversity metric's
(:func:`ovdiv.metrics.attribution.normalize_attributions`, :func:`ovdiv.metrics.attribution.channel_max`),
so maps shown in reports and maps scored by ``D_att`` agree exactly. Numpy only.
"""

from __future__ import annotations

import numpy as np
import numpy.typing as npt

from ovdiv.errors import AttributionInputError
from ovdiv.metrics.attribution import channel_max as _metrics_channel_max
from ovdiv.metrics.attribution import normalize_attributions
from ovdiv.types import AttributionNorm

__all__ = ["channel_max", "normalize_maps", "postprocess"]


def _as_maps(maps: npt.ArrayLike, name: str = "maps") -> npt.NDArray[np.floating]:
    a = np.asarray(maps)
    if a.ndim < 2 or not np.issubdtype(a.dtype, np.floating):
        raise AttributionInputError(f"{name}: expected float (N, ...) maps, got dtype {a.dtype} shape {a.shape}")
    return a


def normalize_maps(maps: npt.ArrayLike, norm: AttributionNorm | str = "max") -> npt.NDArray[np.float32]:
    """``|a|`` normalised per sample: ``max`` divides by the map's maximum, ``sum`` by its sum.

    Args:
        maps: ``(N, ...)`` attributions, e.g. ``(N, 3, H, W)`` or channel-reduced ``(N, H, W)``.
        norm: ``"max"`` (default), ``"sum"`` or ``"none"`` (abs only). An all-zero map stays zero.

    Returns:
        float32 array shaped like ``maps``.
    """
    a = _as_maps(maps)
    out: npt.NDArray[np.float32] = normalize_attributions(a[None], norm)[0].astype(np.float32)
    return out


def channel_max(maps: npt.ArrayLike) -> npt.NDArray[np.float32]:
    """``(N, 3, H, W) -> (N, H, W)``: maximum over channels (apply to ``|a|`` for saliency maps)."""
    a = _as_maps(maps)
    if a.ndim != 4:
        raise AttributionInputError(f"maps: expected (N, 3, H, W), got shape {a.shape}")
    out: npt.NDArray[np.float32] = _metrics_channel_max(a).astype(np.float32)
    return out


def postprocess(
    maps: npt.ArrayLike, *, abs: bool = True, reduce: str = "none", norm: AttributionNorm | str = "none"
) -> npt.NDArray[np.float32]:
    """Saliency-map post-processing in the order used by the paper's figures and D_att.

    ``m = |a|`` (if ``abs``), then ``reduce="channel_max"`` takes the max over channels, then per-map
    normalisation ``norm`` (``max`` / ``sum`` / ``none``; normalisation implies ``|.|``).

    Args:
        maps: float ``(N, 3, H, W)`` attributions.
        abs: Take the absolute value first.
        reduce: ``"none"`` or ``"channel_max"``.
        norm: Per-map normalisation.

    Returns:
        float32 ``(N, 3, H, W)`` or ``(N, H, W)`` maps.
    """
    a = np.asarray(_as_maps(maps), dtype=np.float32)
    if abs:
        a = np.abs(a)
    if reduce == "channel_max":
        a = channel_max(a)
    elif reduce != "none":
        raise AttributionInputError(f"reduce: expected 'none' or 'channel_max', got {reduce!r}")
    if AttributionNorm(norm) is not AttributionNorm.NONE:
        a = normalize_maps(a, norm)
    return a
