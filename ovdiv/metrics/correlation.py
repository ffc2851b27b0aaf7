"""Correlation study: how well does each diversity metric predict the ensemble improvement Δ?

The paper's Fig. 5-8: over all scored ensembles of one dataset, Pearson's r and Spearman's ρ between
each diversity metric (and the mean member accuracy) and ``improvement`` (Δ = Acc_ens − max_i Acc_i).
Spearman's ρ is Pearson's r of average ranks (ties get the mean of their ranks), as in
``scipy.stats.spearmanr``. Rows with a NaN in either variable are dropped; fewer than 3 remaining rows
or a constant variable gives NaN (no warning: a constant metric is a legitimate outcome of a study).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from typing import Any

import numpy as np
import numpy.typing as npt

from ovdiv.metrics._checks import _fail
from ovdiv.metrics.pool import _DIVERSITY_METRICS

__all__ = ["STUDY_METRICS", "pearson", "spearman", "correlation_study"]

F64 = npt.NDArray[np.float64]

STUDY_METRICS: tuple[str, ...] = ("mean_member_top1", *_DIVERSITY_METRICS)
"""Metrics correlated with Δ by default (those present in the rows)."""


def _pearson(x: F64, y: F64) -> float:
    if x.size < 3:
        return float("nan")
    xc, yc = x - x.mean(), y - y.mean()
    den = np.sqrt((xc * xc).sum() * (yc * yc).sum())
    if den == 0:
        return float("nan")
    return float(np.clip((xc * yc).sum() / den, -1.0, 1.0))


def _rank(x: F64) -> F64:
    order = np.argsort(x, kind="stable")
    xs = x[order]
    ranks = np.empty(x.size)
    # average rank of each run of equal values (1-based)
    starts = np.r_[0, np.flatnonzero(xs[1:] != xs[:-1]) + 1]
    ends = np.r_[starts[1:], x.size]
    avg = (starts + ends + 1) / 2.0
    ranks[order] = np.repeat(avg, ends - starts)
    return ranks


def _pairs(x: npt.ArrayLike, y: npt.ArrayLike) -> tuple[F64, F64]:
    a = np.asarray(x, dtype=np.float64).ravel()
    b = np.asarray(y, dtype=np.float64).ravel()
    if a.shape != b.shape:
        raise _fail("y", f"{a.size} values like x", f"{b.size}")
    ok = ~(np.isnan(a) | np.isnan(b))
    return a[ok], b[ok]


def pearson(x: npt.ArrayLike, y: npt.ArrayLike) -> float:
    """Pearson's r of paired values (NaN pairs dropped; NaN if < 3 pairs or a constant variable)."""
    a, b = _pairs(x, y)
    return _pearson(a, b)


def spearman(x: npt.ArrayLike, y: npt.ArrayLike) -> float:
    """Spearman's ρ: Pearson's r of average ranks (NaN pairs dropped; NaN if < 3 pairs or constant)."""
    a, b = _pairs(x, y)
    if a.size < 3:
        return float("nan")
    return _pearson(_rank(a), _rank(b))


def correlation_study(
    rows: Iterable[Mapping[str, Any]] | Mapping[str, Iterable[Mapping[str, Any]]],
    *,
    target: str = "improvement",
    metrics: Sequence[str] | None = None,
    group_by: str = "dataset",
) -> list[dict[str, Any]]:
    """Pearson and Spearman correlation of each metric with ``target`` across scored ensembles.

    Args:
        rows: :func:`~ovdiv.metrics.score_subsets` rows (each may carry a ``group_by`` key, e.g. the
            dataset), or ``{dataset: rows}``.
        target: The Y variable (default Δ, ``improvement``; e.g. ``improvement:majority``).
        metrics: Metrics to correlate (default: :data:`STUDY_METRICS` present in the rows).
        group_by: Row key that splits the study (rows without it form the group ``None``).

    Returns:
        One dict per (group, metric): ``{"dataset", "metric", "target", "pearson", "spearman", "n"}``
        (``n`` = ensembles with both values defined).
    """
    groups: dict[Any, list[Mapping[str, Any]]] = {}
    if isinstance(rows, Mapping):
        for name, rs in rows.items():
            groups[name] = list(rs)
    else:
        for r in rows:
            groups.setdefault(r.get(group_by), []).append(r)
    out: list[dict[str, Any]] = []
    for name, rs in groups.items():
        if rs and target not in rs[0]:
            raise _fail(
                "target", f"a metric of the rows (e.g. {sorted(k for k in rs[0] if k != 'members')[:5]})", target
            )
        names = list(metrics) if metrics is not None else [m for m in STUDY_METRICS if rs and m in rs[0]]
        y = np.array([float(r[target]) for r in rs])
        for metric in names:
            if rs and metric not in rs[0]:
                raise _fail("metrics", "metric names present in the rows", repr(metric))
            x = np.array([float(r[metric]) for r in rs])
            a, b = _pairs(x, y)
            out.append(
                {
                    "dataset": name,
                    "metric": metric,
                    "target": target,
                    "pearson": _pearson(a, b),
                    "spearman": _pearson(_rank(a), _rank(b)) if a.size >= 3 else float("nan"),
                    "n": int(a.size),
                }
            )
    return out
