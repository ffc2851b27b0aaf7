"""The report with confidence intervals (results schema ovdiv-results/2, verdict schema ovdiv-verdict/2).

Results here are fabricated following the results contract: rows may carry ``ci_low``, ``ci_high``,
``ci_method``, ``ci_level`` and ``p_value``; ``metadata.ci`` records the settings; a top-level
``correlation`` list carries Pearson/Spearman with bootstrap intervals. Older results (schema 1, no
interval keys, saliency examples without member predictions) must still render.
"""

from __future__ import annotations

import itertools
import json
import re
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from scipy import stats

from ovdiv.report import figures, write_report

N_IMAGES = 1000


def _cp(k: int, n: int, level: float = 0.95) -> tuple[float, float]:
    """Clopper-Pearson bounds from the beta quantiles (independent of the code under test)."""
    a = 1 - level
    lo = 0.0 if k == 0 else float(stats.beta.ppf(a / 2, k, n - k + 1))
    hi = 1.0 if k == n else float(stats.beta.ppf(1 - a / 2, k + 1, n - k))
    return lo, hi


def make_ci_results(
    root: Path,
    *,
    members: list[str],
    datasets: list[str],
    schema: int = 2,
    diversity: tuple[str, ...] = ("disagreement", "q_statistic", "double_fault", "kl_divergence"),
    majority: bool = True,
    saliency: str | None = "new",
    seed: int = 0,
    bootstrap: int = 2000,
) -> Path:
    """A results folder with every 3-subset of ``members`` scored; intervals when ``schema == 2``."""
    rng = np.random.default_rng(seed)
    rows: list[dict[str, Any]] = []

    def row(ens: str | None, member: str | None, ds: str, metric: str, value: float, ci: Any = None) -> None:
        r: dict[str, Any] = {"ensemble": ens, "member": member, "dataset": ds, "metric": metric, "value": value}
        if schema == 2:
            if ci is None:
                r.update(ci_low=None, ci_high=None, ci_method=None, ci_level=None, p_value=None)
            else:
                r.update(ci)
        rows.append(r)

    def cp(acc: float) -> dict[str, Any]:
        lo, hi = _cp(round(acc * N_IMAGES), N_IMAGES)
        return {"ci_low": lo, "ci_high": hi, "ci_method": "clopper-pearson", "ci_level": 0.95}

    def boot(v: float, half: float, p: float | None = None) -> dict[str, Any]:
        if not bootstrap:  # bootstrap off: no interval, the test's p-value stays
            return {"ci_low": None, "ci_high": None, "ci_method": None, "ci_level": None, "p_value": p}
        return {
            "ci_low": v - half,
            "ci_high": v + half,
            "ci_method": "bootstrap-percentile",
            "ci_level": 0.95,
            "p_value": p,
        }

    for ds in datasets:
        accs = {}
        for m in members:
            accs[m] = round(float(rng.uniform(0.5, 0.9)) * N_IMAGES) / N_IMAGES
            row(None, m, ds, "top1", accs[m], cp(accs[m]))
            row(None, m, ds, "top5", 0.99, cp(0.99))
            row(None, m, ds, "nll", 0.5)
            row(None, m, ds, "ece", 0.05)
        for combo in itertools.combinations(members, 3):
            name = "+".join(combo)
            best = max(accs[m] for m in combo)
            acc = round((best + float(rng.normal(0.005, 0.01))) * N_IMAGES) / N_IMAGES
            imp = acc - best
            row(name, None, ds, "ensemble_top1", acc, cp(acc))
            row(name, None, ds, "improvement", imp, boot(imp, 0.008, float(rng.uniform(0, 1))))
            row(name, None, ds, "mean_member_top1", float(np.mean([accs[m] for m in combo])))
            if majority:
                row(name, None, ds, "ensemble_top1:majority", acc - 0.01, cp(acc - 0.01))
                row(name, None, ds, "improvement:majority", imp - 0.01, boot(imp - 0.01, 0.009))
            for metric in diversity:
                v = float(rng.uniform(0.1, 0.9))
                row(name, None, ds, metric, v, boot(v, 0.02))
    data: dict[str, Any] = {
        "schema": f"ovdiv-results/{schema}",
        "metadata": {
            "created": "2026-12-01T00:00:00Z",
            "device": "CPU",
            "precision": "f32",
            "versions": {"ovdiv": "0.2.0"},
            "members": [{"name": m, "params": 1000 * (i + 1)} for i, m in enumerate(members)],
            "datasets": [{"spec": ds, "manifest": {"n": N_IMAGES, "seed": 0}} for ds in datasets],
        },
        "rows": rows,
        "extras": {},
    }
    if schema == 2:
        data["metadata"]["ci"] = {
            "level": 0.95,
            "bootstrap": bootstrap,
            "method": "percentile",
            "seed": 0,
            "binomial": "clopper-pearson",
        }
        data["correlation"] = [
            {
                "dataset": ds,
                "metric": metric,
                "n_ensembles": len(list(itertools.combinations(members, 3))),
                "pearson": 0.412,
                "pearson_ci_low": 0.3,
                "pearson_ci_high": 0.52,
                "spearman": -0.25,
                "spearman_ci_low": -0.4,
                "spearman_ci_high": -0.1,
                "ci_method": "bootstrap-percentile",
                "ci_level": 0.95,
            }
            for ds in datasets
            for metric in diversity
        ]
    root.mkdir(parents=True, exist_ok=True)
    if saliency is not None:
        (root / "extras").mkdir()
        s, m = 12, len(members)
        labels = np.arange(s) % 10
        ens = labels.copy()
        member_pred = np.tile(labels, (m, 1))
        if saliency == "new":  # engine-style examples: every kind present, wrong ones late in index order
            ens[[9, 10, 11]] = (labels[[9, 10, 11]] + 1) % 10  # ensemble wrong
            member_pred[0, [3, 9]] = 7  # members split on a right (3) and a wrong (9) sample
            member_pred[:, [10, 11]] = ens[[10, 11]]  # all members wrong together
            member_pred[:, 9] = ens[9]
            member_pred[1, 9] = labels[9]  # one member right where the ensemble is wrong
        else:  # old examples: the first images, the wrong ones last
            ens[[10, 11]] = (labels[[10, 11]] + 1) % 10
        arrays = {
            "images": rng.integers(0, 255, (s, 16, 16, 3), dtype=np.uint8),
            "maps": rng.uniform(size=(m, s, 16, 16)).astype(np.float32),
            "members": np.array(members),
            "labels": labels,
            "ensemble_pred": ens,
            "indices": np.arange(100, 100 + s),
            "dataset": np.array(datasets[0]),
        }
        if saliency == "new":
            arrays["member_pred"] = member_pred
        np.savez(root / "extras" / "saliency_a.npz", **arrays)
        data["extras"] = {"saliency": {datasets[0]: "extras/saliency_a.npz"}}
    (root / "results.json").write_text(json.dumps(data))
    return root


def make_verdict2() -> dict[str, Any]:
    """A verdict (schema 2) with one check that passes on the estimate but fails on its lower bound."""
    base = {"bound": None, "test": None, "alpha": None, "p_value": None, "passed_on_estimate": None}
    return {
        "schema": "ovdiv-verdict/2",
        "policy": "gate with bounds",
        "passed": False,
        "rules": [
            {"id": "gain", "description": "improvement ≥ 0.005 (lower 95 % bound)", "passed": False},
            {"id": "beats", "description": "ensemble beats best member (McNemar α=0.05)", "passed": True},
        ],
        "checks": [
            {
                **base,
                "rule": "gain",
                "description": "improvement ≥ 0.005 (lower 95 % bound)",
                "passed": False,
                "ensemble": "a+b+c",
                "member": None,
                "dataset": "lines1.6@demo",
                "value": 0.012,
                "baseline": None,
                "observed": 0.012,
                "min": 0.005,
                "max": None,
                "bound": "lower",
                "ci_low": 0.0031,
                "ci_high": 0.0209,
                "ci_level": 0.95,
                "passed_on_estimate": True,
                "note": "passes on the estimate 0.0120 but its lower 95 % bound 0.0031 is below 0.005",
            },
            {
                **base,
                "rule": "beats",
                "description": "ensemble beats best member (McNemar α=0.05)",
                "passed": True,
                "ensemble": "a+b+c",
                "member": None,
                "dataset": "demo",
                "value": 0.02,
                "baseline": None,
                "observed": 0.02,
                "min": 0.0,
                "max": None,
                "test": "mcnemar",
                "alpha": 0.05,
                "p_value": 0.0004,
                "ci_low": 0.011,
                "ci_high": 0.029,
                "ci_level": 0.95,
                "passed_on_estimate": True,
                "note": "",
            },
        ],
    }


def _section(text: str, sid: str) -> str:
    return text.split(f'<section id="{sid}">')[1].split("</section>")[0]


class _Capture:
    """Wraps a figures function: records its arguments, returns a tiny PNG (no drawing)."""

    def __init__(self) -> None:
        self.calls: list[tuple[tuple[Any, ...], dict[str, Any]]] = []

    def __call__(self, *args: Any, **kwargs: Any) -> bytes:
        self.calls.append((args, kwargs))
        return b"\x89PNG fake"


MEMBERS4 = ["a", "b", "c", "d"]
DATASETS2 = ["demo", "lines1.6@demo"]


def test_report_shows_intervals_and_method_sentences(tmp_path, monkeypatch) -> None:
    root = make_ci_results(tmp_path / "res", members=MEMBERS4, datasets=DATASETS2)
    data = json.loads((root / "results.json").read_text())
    bars, scatter, grid = _Capture(), _Capture(), _Capture()
    monkeypatch.setattr(figures, "accuracy_bars", bars)
    monkeypatch.setattr(figures, "diversity_scatter", scatter)
    monkeypatch.setattr(figures, "saliency_grid", grid)
    text = write_report(root, verdict=make_verdict2()).read_text()

    # summary: the best member's top-1 with its Clopper-Pearson interval, recomputed here
    top1 = {r["member"]: r["value"] for r in data["rows"] if r["metric"] == "top1" and r["dataset"] == "demo"}
    best = max(top1, key=lambda m: top1[m])
    lo, hi = _cp(round(top1[best] * N_IMAGES), N_IMAGES)
    summary = _section(text, "summary")
    assert f'{top1[best]:.3f} <span class="ci">[{lo:.3f}, {hi:.3f}]</span>' in summary
    assert "Δ lower bound &gt; 0" in summary and " p=" in summary
    for sid in ("summary", "accuracy"):
        assert "95 % exact binomial (Clopper-Pearson)" in _section(text, sid), sid
    assert "95 % paired bootstrap over images, percentile, 2,000 resamples, seed 0" in summary
    assert (
        "level 95 %; accuracies: exact binomial (Clopper-Pearson); paired quantities: bootstrap (percentile), "
        "2,000 resamples; seed 0" in _section(text, "evidence")
    )

    # accuracy figure: every member and shown ensemble gets its interval per dataset
    ((args, kwargs),) = bars.calls
    intervals = kwargs["intervals"]
    assert set(intervals) == set(MEMBERS4) | {f"ens {e}" for e in ("a+b+c", "a+b+d", "a+c+d", "b+c+d")}
    for k, ds in enumerate(DATASETS2):
        r = next(r for r in data["rows"] if r["member"] == "c" and r["dataset"] == ds and r["metric"] == "top1")
        assert intervals["c"][0][k] == r["ci_low"] and intervals["c"][1][k] == r["ci_high"]
    acc = _section(text, "accuracy")
    assert acc.count('class="ci"') == (4 + 4) * 2 + 4 * 2  # top-1 of members and ensembles, member top-5

    # scatters: Δ whiskers inline (4 ensembles), one figure per dataset and consensus rule
    assert len(scatter.calls) == 2 * 2
    for _, kwargs in scatter.calls:
        lo_, hi_ = kwargs["intervals"]
        assert len(lo_) == 4 and all(a < b for a, b in zip(lo_, hi_, strict=True))
        assert "95 % paired bootstrap" in kwargs["interval_label"]
    assert "Δ (whiskers): 95 % paired bootstrap" in _section(text, "diversity")

    # correlation: the results' own coefficients and intervals
    corr = _section(text, "correlation")
    assert '0.412 <span class="ci">[0.300, 0.520]</span>' in corr
    assert '-0.250 <span class="ci">[-0.400, -0.100]</span>' in corr
    assert "Intervals in brackets: 95 % bootstrap, percentile (as recorded" in corr and "Over 4 ensembles" in corr

    # policy: estimate, interval, criterion and the pass-on-estimate flag
    policy = _section(text, "policy")
    assert "1 check(s) pass on the point estimate but not on the confidence bound" in policy
    assert "⚠ passes on the estimate" in policy and "⚠ 1 pass only on the estimate" in policy
    assert "[0.0031, 0.0209]" in policy and "≥ 0.0050 on the lower bound" in policy
    assert "McNemar test at α=0.05" in policy and "&lt;0.001" in policy
    assert policy.index("passes on the estimate 0.0120") < policy.index("McNemar test")  # flagged first

    # saliency: right and wrong samples, members agreeing and split, labelled
    ((args, kwargs),) = grid.calls
    _, maps, _, captions = args
    assert len(captions) == 8 and maps.shape[:2] == (4, 8)
    wrong = kwargs["wrong"]
    assert sum(wrong) == 3 and not all(wrong)  # all three wrong samples (#109-#111) are shown
    assert any("✗ ens wrong" in c and "members split, 1/4 right" in c for c in captions)
    assert any("✓ ens right" in c and "members split, 3/4 right" in c for c in captions)
    assert any("✗ ens wrong" in c and "members agree, 0/4 right" in c for c in captions)
    assert [c.split()[0] for c in captions] == ["#100", "#101", "#102", "#104", "#103", "#109", "#110", "#111"]
    assert "5 sample(s) the ensemble classifies correctly and 3 it gets wrong" in _section(text, "saliency")


def test_many_ensembles_put_whiskers_one_click_away(tmp_path, monkeypatch) -> None:
    members = [f"m{i:02d}" for i in range(14)]
    root = make_ci_results(
        tmp_path / "res", members=members, datasets=["demo"], diversity=("disagreement",), majority=False, saliency=None
    )
    scatter = _Capture()
    monkeypatch.setattr(figures, "diversity_scatter", scatter)
    text = write_report(root).read_text()
    div = _section(text, "diversity")
    assert [c[1]["intervals"] is None for c in scatter.calls] == [True, False]  # plain, then with whiskers
    assert len(scatter.calls[1][1]["intervals"][0]) == 364
    assert re.search(r"<details><summary>the same with 95 % [^<]* whiskers on Δ \(364 ensembles\)", div)
    assert div.count("<details open>") == 1 and "one click further" in div


def test_old_results_still_render(tmp_path, monkeypatch) -> None:
    root = make_ci_results(tmp_path / "res", members=MEMBERS4, datasets=DATASETS2, schema=1, saliency="old")
    grid = _Capture()
    monkeypatch.setattr(figures, "saliency_grid", grid)
    verdict = {
        "schema": "ovdiv-verdict/1",
        "policy": "old",
        "passed": False,
        "rules": [{"id": "r", "description": "improvement ≥ 0", "passed": False}],
        "checks": [{"rule": "r", "passed": False, "dataset": "demo", "ensemble": "a+b+c", "value": -0.01}],
    }
    text = write_report(root, verdict=verdict).read_text()
    assert 'class="ci"' not in text
    assert "none recorded (point estimates)" in _section(text, "evidence")
    assert "Point estimates only: these results (schema ovdiv-results/1) carry no confidence intervals" in (
        _section(text, "summary")
    )
    assert "computed the coefficients from the rows" in _section(text, "correlation")
    policy = _section(text, "policy")
    assert "Failing checks of failing rules" in policy and "verdicts on point estimates" in policy
    ((args, kwargs),) = grid.calls
    assert sum(kwargs["wrong"]) == 2 and len(args[3]) == 8  # the two wrong samples (last of 12) are shown
    assert "predate the saved member predictions" in _section(text, "saliency")


def _lines(fig: Any) -> list[Any]:
    from matplotlib.collections import LineCollection

    return [c for ax in fig.axes for c in ax.collections if isinstance(c, LineCollection)]


def test_figures_draw_interval_whiskers(monkeypatch) -> None:
    captured: list[Any] = []
    monkeypatch.setattr(figures, "_png", lambda fig: captured.append(fig) or b"")
    figures.accuracy_bars(
        ["d1", "d2"],
        {"m": [0.6, 0.7]},
        {"ens": [0.8, float("nan")]},
        intervals={"m": ([0.55, 0.66], [0.65, 0.74]), "ens": ([0.75, 0.1], [0.85, 0.2])},
    )
    segs = [s for lc in _lines(captured[-1]) for s in lc.get_segments()]
    spans = sorted((round(float(s[0][1]), 6), round(float(s[1][1]), 6)) for s in segs)
    assert spans == [(0.55, 0.65), (0.66, 0.74), (0.75, 0.85)]  # no whisker on the NaN bar
    assert captured[-1].axes[0].get_title(loc="right") == "whiskers: confidence interval"

    xs = np.array([0.1, 0.2, 0.3, 0.4])
    ys = np.array([0.01, -0.02, 0.0, 0.005])
    lo, hi = ys - np.array([0.005, 0.005, 0.01, np.nan]), ys + 0.005
    figures.diversity_scatter(
        [("disagreement", xs, ys, [0.7] * 4, [1, 2, 3, 4])], title="t", intervals=(lo, hi), interval_label="95 % x"
    )
    colours = {}
    for lc in _lines(captured[-1]):
        for seg, c in zip(
            lc.get_segments(), np.broadcast_to(lc.get_colors(), (len(lc.get_segments()), 4)), strict=True
        ):
            colours[round(float(seg[0][0]), 6)] = (tuple(np.round(seg[:, 1], 6)), tuple(np.round(c[:3], 3)))
    assert colours[0.1][0] == (0.005, 0.015) and colours[0.1][1] == pytest.approx((0.102, 0.588, 0.255), abs=0.01)
    assert colours[0.2][1] == pytest.approx((0.843, 0.098, 0.11), abs=0.01)  # below 0: red
    assert colours[0.3][1] == pytest.approx((0.533, 0.533, 0.533), abs=0.01)  # contains 0: grey
    assert 0.4 not in colours  # NaN bound: no whisker
    assert "whiskers: 95 % x of Δ" in captured[-1]._suptitle.get_text()


def test_bootstrap_off_keeps_binomial_intervals_and_p_values(tmp_path) -> None:
    root = make_ci_results(tmp_path / "res", members=MEMBERS4, datasets=["demo"], saliency=None, bootstrap=0)
    data = json.loads((root / "results.json").read_text())
    text = write_report(root).read_text()
    summary = _section(text, "summary")
    imp = max((r for r in data["rows"] if r["metric"] == "improvement"), key=lambda r: r["value"])
    assert f'{imp["value"]:.3f} <span class="ci">p={imp["p_value"]:.3f}</span>' in summary
    assert "Δ lower bound" not in summary and "p = the p-value recorded with that Δ" in summary
    assert "No interval for Δ: point estimates (the bootstrap was off: --bootstrap 0)." in summary
    assert "member top-1, ensemble top-1: 95 % exact binomial (Clopper-Pearson)" in summary
    assert "bootstrap off" in _section(text, "evidence")
