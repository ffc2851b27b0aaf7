"""Correlation study vs scipy.stats.pearsonr / spearmanr."""

from __future__ import annotations

import numpy as np
import pytest
import scipy.stats

import ovdiv.metrics as om
from ovdiv.errors import MetricInputError


def test_pearson_spearman_match_scipy():
    rng = np.random.default_rng(0)
    x = rng.normal(size=50)
    y = 0.5 * x + rng.normal(size=50)
    assert om.pearson(x, y) == pytest.approx(scipy.stats.pearsonr(x, y)[0], abs=1e-12)
    assert om.spearman(x, y) == pytest.approx(scipy.stats.spearmanr(x, y)[0], abs=1e-12)
    xt = np.round(x)  # ties -> average ranks
    assert om.spearman(xt, y) == pytest.approx(scipy.stats.spearmanr(xt, y)[0], abs=1e-12)


def test_nan_constant_and_short():
    assert np.isnan(om.pearson([1, 1, 1, 1], [1, 2, 3, 4]))
    assert np.isnan(om.spearman([1, 2], [1, 2]))
    assert om.pearson([1, 2, np.nan, 3], [2, 4, 5, 6]) == pytest.approx(1.0)


def test_correlation_study_per_dataset():
    rng = np.random.default_rng(1)
    rows = []
    for ds in ("clean", "lines1.6"):
        for _ in range(30):
            d = rng.uniform()
            rows.append(
                {
                    "dataset": ds,
                    "disagreement": d,
                    "mean_member_top1": rng.uniform(),
                    "improvement": d + 0.1 * rng.normal(),
                    "cka_mean": float("nan"),
                }
            )
    out = om.correlation_study(rows)
    assert {r["dataset"] for r in out} == {"clean", "lines1.6"}
    for r in out:
        sub = [x for x in rows if x["dataset"] == r["dataset"]]
        if r["metric"] == "cka_mean":
            assert r["n"] == 0 and np.isnan(r["pearson"])
            continue
        x = [s[r["metric"]] for s in sub]
        y = [s["improvement"] for s in sub]
        assert r["pearson"] == pytest.approx(scipy.stats.pearsonr(x, y)[0], abs=1e-12)
        assert r["spearman"] == pytest.approx(scipy.stats.spearmanr(x, y)[0], abs=1e-12)
        assert r["n"] == 30
    by_dict = om.correlation_study({"clean": [r for r in rows if r["dataset"] == "clean"]}, metrics=["disagreement"])
    assert len(by_dict) == 1 and by_dict[0]["pearson"] > 0.9
    with pytest.raises(MetricInputError, match="target"):
        om.correlation_study(rows, target="nope")
