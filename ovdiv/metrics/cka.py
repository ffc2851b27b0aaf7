"""Centred kernel alignment between representations (Kornblith et al. 2019; Nguyen et al. 2021).

Shapes: features ``X (n, p)``, ``Y (n, q)`` (rows = the same n samples; spatial maps should be
averaged or flattened by the caller).

* :func:`linear_cka`: ``||Yᶜᵀ Xᶜ||²_F / (||Xᶜᵀ Xᶜ||_F ||Yᶜᵀ Yᶜ||_F)`` with column-centred features.
* :class:`MinibatchCKA`: the unbiased minibatch estimator. Per batch of ``n >= 4`` samples, with linear
  kernels ``K = X Xᵀ``, ``L = Y Yᵀ`` and their diagonals zeroed (``K̃``, ``L̃``)::

      HSIC₁(K, L) = [tr(K̃ L̃) + (1ᵀK̃1)(1ᵀL̃1) / ((n−1)(n−2)) − 2/(n−2) · 1ᵀK̃L̃1] / (n(n−3))

  and ``CKA = Σ_b HSIC₁(K_b, L_b) / sqrt(Σ_b HSIC₁(K_b, K_b) · Σ_b HSIC₁(L_b, L_b))``; memory is
  independent of the number of batches. It accumulates a layer x layer matrix for two members.

Constant features (a zero centred Gram matrix) make CKA 0/0: NaN with a :class:`MetricWarning`.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import numpy.typing as npt

from ovdiv.metrics._checks import _check_float, _fail, _warn

__all__ = ["linear_cka", "hsic_unbiased", "MinibatchCKA"]

F64 = npt.NDArray[np.float64]


def _as_features(x: Any, name: str, n: int | None = None) -> F64:
    a: F64 = np.asarray(
        _check_float(x, name, (1, 2, 3, 4), what="(n, p) (or (n, ...) which is flattened)"), dtype=np.float64
    )
    if a.ndim == 1:
        a = a[:, None]
    elif a.ndim > 2:
        a = a.reshape(a.shape[0], -1)
    if n is not None and a.shape[0] != n:
        raise _fail(name, f"features of the same {n} samples (n, ...)", f"shape {a.shape}")
    return a


def linear_cka(x: npt.ArrayLike, y: npt.ArrayLike) -> float:
    """Linear CKA of two feature matrices over the same samples.

    Args:
        x: ``(n, p)`` features (higher ranks are flattened per sample).
        y: ``(n, q)`` features of the same n samples.

    Returns:
        CKA in [0, 1]; NaN with a :class:`MetricWarning` if either representation is constant.
    """
    a = _as_features(x, "x")
    b = _as_features(y, "y", a.shape[0])
    if a.shape[0] < 2:
        raise _fail("x", "features of at least 2 samples", f"shape {a.shape}")
    a = a - a.mean(axis=0)
    b = b - b.mean(axis=0)
    num = np.linalg.norm(b.T @ a) ** 2
    den = np.linalg.norm(a.T @ a) * np.linalg.norm(b.T @ b)
    if den == 0:
        _warn("linear CKA is undefined for constant features (zero centred Gram matrix); NaN returned")
        return float("nan")
    return float(num / den)


def _hsic1(k: F64, lm: F64) -> float:
    """Unbiased HSIC₁ of two Gram matrices (diagonals are zeroed here)."""
    n = k.shape[0]
    kt = k.copy()
    lt = lm.copy()
    np.fill_diagonal(kt, 0.0)
    np.fill_diagonal(lt, 0.0)
    one_k = kt.sum(axis=0)
    one_l = lt.sum(axis=0)
    term1 = float((kt * lt).sum())  # tr(K̃ L̃) with symmetric matrices
    term2 = float(one_k.sum() * one_l.sum()) / ((n - 1) * (n - 2))
    term3 = 2.0 / (n - 2) * float(one_k @ one_l)  # 1ᵀ K̃ L̃ 1
    return (term1 + term2 - term3) / (n * (n - 3))


def hsic_unbiased(x: npt.ArrayLike, y: npt.ArrayLike) -> float:
    """Unbiased HSIC₁ (Song et al. 2012) with linear kernels, for one batch of ``n >= 4`` samples.

    Args:
        x: ``(n, p)`` features.
        y: ``(n, q)`` features.
    """
    a = _as_features(x, "x")
    b = _as_features(y, "y", a.shape[0])
    if a.shape[0] < 4:
        raise _fail("x", "a batch of at least 4 samples (unbiased HSIC)", f"{a.shape[0]} samples")
    return _hsic1(a @ a.T, b @ b.T)


class MinibatchCKA:
    """Streaming unbiased minibatch linear CKA between the layers of two members.

    ``update(xs, ys)`` takes one batch of features per layer of member X (``xs[l]: (n, p_l)``) and of
    member Y (``ys[l]: (n, q_l)``); ``compute()`` returns the ``(Lx, Ly)`` CKA matrix. Batches must have
    ``n >= 4`` samples. State: three float64 arrays of sums of HSIC₁ values; ``merge`` adds shards.

    Args:
        n_layers_x: Number of layers of member X.
        n_layers_y: Number of layers of member Y.
    """

    higher_is_better = False  # lower CKA = more diverse representations

    def __init__(self, n_layers_x: int = 1, n_layers_y: int = 1) -> None:
        if n_layers_x < 1 or n_layers_y < 1:
            raise _fail("n_layers_x/n_layers_y", "ints >= 1", f"{n_layers_x}, {n_layers_y}")
        self.n_layers_x = n_layers_x
        self.n_layers_y = n_layers_y
        self.reset()

    def reset(self) -> None:
        """Forget all batches."""
        self.xy = np.zeros((self.n_layers_x, self.n_layers_y), dtype=np.float64)
        self.xx = np.zeros(self.n_layers_x, dtype=np.float64)
        self.yy = np.zeros(self.n_layers_y, dtype=np.float64)
        self.n_batches = 0

    def update(self, xs: Sequence[npt.ArrayLike] | npt.ArrayLike, ys: Sequence[npt.ArrayLike] | npt.ArrayLike) -> None:
        """Add one batch: ``xs`` / ``ys`` are lists of per-layer features (or one array for one layer)."""
        lx = [xs] if isinstance(xs, np.ndarray) else list(xs)  # type: ignore[arg-type]
        ly = [ys] if isinstance(ys, np.ndarray) else list(ys)  # type: ignore[arg-type]
        if len(lx) != self.n_layers_x or len(ly) != self.n_layers_y:
            raise _fail(
                "xs/ys", f"{self.n_layers_x} and {self.n_layers_y} layer feature arrays", f"{len(lx)} and {len(ly)}"
            )
        fx = [_as_features(a, f"xs[{i}]") for i, a in enumerate(lx)]
        n = fx[0].shape[0]
        fy = [_as_features(a, f"ys[{i}]", n) for i, a in enumerate(ly)]
        fx = [_as_features(a, f"xs[{i}]", n) for i, a in enumerate(fx)]
        if n < 4:
            raise _fail("xs", "a batch of at least 4 samples (unbiased HSIC)", f"{n} samples")
        gx = [a @ a.T for a in fx]
        gy = [b @ b.T for b in fy]
        for i, k in enumerate(gx):
            self.xx[i] += _hsic1(k, k)
            for j, lm in enumerate(gy):
                self.xy[i, j] += _hsic1(k, lm)
        for j, lm in enumerate(gy):
            self.yy[j] += _hsic1(lm, lm)
        self.n_batches += 1

    def merge(self, other: MinibatchCKA) -> None:
        """Add the state of another accumulator (a shard of the same layers)."""
        if (other.n_layers_x, other.n_layers_y) != (self.n_layers_x, self.n_layers_y):
            raise _fail("other", f"a MinibatchCKA of {self.n_layers_x}x{self.n_layers_y} layers", "different layers")
        self.xy += other.xy
        self.xx += other.xx
        self.yy += other.yy
        self.n_batches += other.n_batches

    def compute(self) -> F64:
        """``(Lx, Ly)`` CKA matrix; NaN (with a warning) where a layer's HSIC sum is not positive."""
        den = np.sqrt(np.clip(self.xx, 0, None)[:, None] * np.clip(self.yy, 0, None)[None, :])
        bad = ~(den > 0)
        if bad.any():
            _warn("minibatch CKA is undefined for constant (or empty) features; NaN returned")
        with np.errstate(invalid="ignore", divide="ignore"):
            out: F64 = np.where(bad, np.nan, self.xy / np.where(bad, 1.0, den))
        return out
