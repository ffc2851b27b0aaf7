"""Attribution (saliency) diversity between members (paper Eq. 7; Whitaker & Whitley).

Shapes: ``maps (M, N, ...)``: member i's attribution of sample n, typically ``(M, N, 3, H, W)`` w.r.t.
the network input; any per-sample shape works for D_att and RMSE. Hashes need ``(M, N, 3, H, W)``
(channel-max is taken) or ``(M, N, H, W)``.

Post-processing (:func:`normalize_attributions`): ``|a|``, then per map ``norm="max"`` divides by the
map's maximum, ``"sum"`` by its sum, ``"none"`` leaves it; an all-zero map stays zero (0/0 := 0).

* ``D_att = mean_n mean_{pixels} Var_i a_i`` (population variance across the M members). Because
  ``Var_i a_i = (1/(2M²)) Σ_i Σ_k (a_i − a_k)²``, the D_att of any subset S follows exactly from the
  pool's pairwise ``SSD[i, k] = Σ_n mean_pixels (a_i − a_k)²``: ``D_att(S) = Σ_{i<k ∈ S} SSD[i, k] / (|S|² N)``.
* Per-pair RMSE ``mean_n sqrt(mean_pixels (a_i − a_k)²)``.
* Per-pair Hamming distance (0..64) of 64-bit image hashes (``imagehash``: average, perceptual,
  difference and wavelet hash, ``hash_size=8``) of the channel-max map ``m = max_channel a``, converted
  to an 8-bit grey image as ``round(255 · m / max(m))`` (all-zero map -> all-zero image), averaged over
  samples. ``imagehash`` and PIL are imported only when hashes are computed.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import numpy.typing as npt

from ovdiv.metrics._checks import _check_float, _check_nonempty, _fail
from ovdiv.types import AttributionNorm

__all__ = [
    "HASH_METHODS",
    "normalize_attributions",
    "channel_max",
    "to_uint8_image",
    "attribution_diversity",
    "attribution_diversity_from_ssd",
    "attribution_rmse",
    "pairwise_ssd",
    "image_hashes",
    "hash_distances",
]

F64 = npt.NDArray[np.float64]
HASH_METHODS: tuple[str, ...] = ("ahash", "phash", "dhash", "whash")


def _norm(norm: Any) -> AttributionNorm:
    try:
        return AttributionNorm(norm)
    except ValueError:
        raise _fail("norm", f"one of {[n.value for n in AttributionNorm]}", repr(norm)) from None


def _check_maps(maps: Any, name: str = "maps", min_ndim: int = 3) -> npt.NDArray[np.floating]:
    a = _check_float(maps, name, tuple(range(min_ndim, 7)), what="(M, N, ...) attribution maps")
    if a.shape[0] == 0:
        raise _fail(name, "(M, N, ...) with M >= 1", f"shape {a.shape}")
    return a


def _normalize(maps: npt.NDArray[np.floating], norm: AttributionNorm, lead: int = 2) -> F64:
    a = np.abs(np.asarray(maps, dtype=np.float64))
    if norm is AttributionNorm.NONE:
        return a
    axes = tuple(range(lead, a.ndim))
    d = a.max(axis=axes, keepdims=True) if norm is AttributionNorm.MAX else a.sum(axis=axes, keepdims=True)
    out: F64 = a / np.where(d == 0, 1.0, d)
    return out


def normalize_attributions(maps: npt.ArrayLike, norm: AttributionNorm | str = "max") -> F64:
    """``|a|`` normalised per map (``max`` / ``sum`` / ``none``), float64, same shape ``(M, N, ...)``.

    Args:
        maps: ``(M, N, ...)`` attributions (per-sample dims are normalised together).
        norm: Normalisation; an all-zero map stays zero.
    """
    return _normalize(_check_maps(maps), _norm(norm))


def channel_max(maps: npt.ArrayLike) -> F64:
    """Maximum over the channel axis ``-3`` of ``(..., 3, H, W)`` maps -> ``(..., H, W)`` float64."""
    a = _check_float(maps, "maps", (3, 4, 5), what="(..., 3, H, W)")
    out: F64 = np.asarray(a, dtype=np.float64).max(axis=-3)
    return out


def to_uint8_image(saliency: npt.ArrayLike) -> npt.NDArray[np.uint8]:
    """8-bit grey image of a non-negative ``(H, W)`` map: ``round(255 · m / max(m))`` (zero map -> zeros)."""
    m = _check_float(saliency, "saliency", 2, what="(H, W)").astype(np.float64)
    if m.size and m.min() < 0:
        raise _fail("saliency", "a non-negative map (apply abs first)", f"minimum {m.min():g}")
    top = m.max() if m.size else 0.0
    scaled = m / top if top > 0 else np.zeros_like(m)
    out: npt.NDArray[np.uint8] = np.rint(255.0 * scaled).astype(np.uint8)
    return out


def _ssd_update(a: F64) -> tuple[F64, F64, F64]:
    """Pairwise ``(M, M)`` batch sums of mean squared differences and of RMSEs of maps ``(M, B, P)``.

    Also returns the per-sample values ``(B, M(M−1)/2)`` of ``mean_pixels (a_i − a_k)²`` (pairs ``i < k`` in
    ``numpy.triu_indices(M, 1)`` order) that the paired bootstrap of D_att resamples.
    Direct differences are used (not Gram matrices), so identical maps give exactly 0.
    """
    m = a.shape[0]
    ssd = np.zeros((m, m), dtype=np.float64)
    rmse = np.zeros((m, m), dtype=np.float64)
    per_sample = np.zeros((a.shape[1], m * (m - 1) // 2), dtype=np.float64)
    p = 0
    for i in range(m):
        for k in range(i + 1, m):
            d = a[i] - a[k]
            msd = np.einsum("bp,bp->b", d, d) / a.shape[2]
            per_sample[:, p] = msd
            p += 1
            ssd[i, k] = ssd[k, i] = msd.sum()
            rmse[i, k] = rmse[k, i] = np.sqrt(msd).sum()
    return ssd, rmse, per_sample


def _flat(maps: npt.NDArray[np.floating], norm: AttributionNorm) -> F64:
    a = _normalize(maps, norm)
    return a.reshape(a.shape[0], a.shape[1], -1)


def attribution_diversity(maps: npt.ArrayLike, norm: AttributionNorm | str = "max") -> float:
    """Attribution diversity ``D_att = mean_n mean_pixels Var_i a_i`` (paper Eq. 7).

    Args:
        maps: ``(M, N, ...)`` attribution maps of M members for N samples.
        norm: Per-map normalisation of ``|a|`` (``max`` default, ``sum``, ``none``).

    Returns:
        D_att >= 0 (0 for ``M = 1``).
    """
    a = _flat(_check_maps(maps), _norm(norm))
    _check_nonempty(a.shape[1], "maps")
    return float(a.var(axis=0).mean())


def pairwise_ssd(maps: npt.ArrayLike, norm: AttributionNorm | str = "max") -> F64:
    """``(M, M)`` ``SSD[i, k] = Σ_n mean_pixels (a_i − a_k)²`` of normalised maps."""
    a = _flat(_check_maps(maps), _norm(norm))
    return _ssd_update(a)[0]


def attribution_diversity_from_ssd(ssd: npt.ArrayLike, n_samples: int, members: npt.ArrayLike | None = None) -> float:
    """Exact D_att of a subset from pairwise SSD sums: ``Σ_{i<k ∈ S} SSD[i, k] / (|S|² N)``.

    Args:
        ssd: ``(M, M)`` from :func:`pairwise_ssd` (or summed over batches).
        n_samples: N, the number of samples summed in ``ssd``.
        members: Indices of the subset S (default all).
    """
    s = _check_float(np.asarray(ssd, dtype=np.float64), "ssd", 2, what="(M, M)")
    idx = np.arange(s.shape[0]) if members is None else np.asarray(members, dtype=np.int64)
    sub = s[np.ix_(idx, idx)]
    k = idx.size
    if n_samples <= 0:
        raise _fail("n_samples", "an int >= 1", repr(n_samples))
    return float(np.triu(sub, 1).sum() / (k * k * n_samples))


def attribution_rmse(maps: npt.ArrayLike, norm: AttributionNorm | str = "max") -> F64:
    """Per-pair RMSE between normalised maps, ``mean_n sqrt(mean_pixels (a_i − a_k)²)``, ``(M, M)``."""
    a = _flat(_check_maps(maps), _norm(norm))
    _check_nonempty(a.shape[1], "maps")
    out: F64 = _ssd_update(a)[1] / a.shape[1]
    return out


def _hash_bits(images2d: F64) -> npt.NDArray[np.bool_]:
    """``(B, H, W)`` non-negative maps -> ``(4, B, 64)`` hash bits (ahash, phash, dhash, whash)."""
    import imagehash
    from PIL import Image

    funcs = (imagehash.average_hash, imagehash.phash, imagehash.dhash, imagehash.whash)
    out = np.zeros((4, images2d.shape[0], 64), dtype=bool)
    for b, m in enumerate(images2d):
        img = Image.fromarray(to_uint8_image(m), mode="L")
        for j, f in enumerate(funcs):
            out[j, b] = np.asarray(f(img, hash_size=8).hash).astype(bool).ravel()  # type: ignore[operator]
    return out


def _hash_update(bits: npt.NDArray[np.bool_]) -> F64:
    """``(M, 4, B, 64)`` hash bits -> ``(4, M, M)`` sums over the batch of Hamming distances."""
    m = bits.shape[0]
    out = np.zeros((4, m, m), dtype=np.float64)
    for i in range(m):
        for k in range(i + 1, m):
            d = (bits[i] != bits[k]).sum(axis=2).sum(axis=1)
            out[:, i, k] = out[:, k, i] = d
    return out


def _channel_max_maps(a: F64, has_channels: bool) -> F64:
    out: F64 = a.max(axis=-3) if has_channels else a
    return out


def image_hashes(maps: npt.ArrayLike, norm: AttributionNorm | str = "max") -> npt.NDArray[np.bool_]:
    """64-bit hashes of each member's channel-max map: ``(M, 4, N, 64)`` bools, methods :data:`HASH_METHODS`.

    Args:
        maps: ``(M, N, 3, H, W)`` (channel max is taken) or ``(M, N, H, W)`` attributions; H, W >= 8.
        norm: Normalisation applied to ``|a|`` before the channel max.
    """
    a = _check_maps(maps, min_ndim=4)
    if a.ndim not in (4, 5) or a.shape[-1] < 8 or a.shape[-2] < 8:
        raise _fail("maps", "(M, N, 3, H, W) or (M, N, H, W) maps with H, W >= 8", f"shape {a.shape}")
    s = _channel_max_maps(_normalize(a, _norm(norm)), a.ndim == 5)
    return np.stack([_hash_bits(s[i]) for i in range(s.shape[0])])


def hash_distances(maps: npt.ArrayLike, norm: AttributionNorm | str = "max") -> dict[str, F64]:
    """Mean Hamming distance (0..64) between members' image hashes, per method: ``{name: (M, M)}``.

    Args:
        maps: ``(M, N, 3, H, W)`` or ``(M, N, H, W)`` attributions (module docstring for the conversion).
        norm: Normalisation of ``|a|``.
    """
    bits = image_hashes(maps, norm)
    _check_nonempty(bits.shape[2], "maps")
    sums = _hash_update(bits) / bits.shape[2]
    return {name: sums[j] for j, name in enumerate(HASH_METHODS)}
