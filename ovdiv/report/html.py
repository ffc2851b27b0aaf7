"""The self-contained ``report.html`` of an evaluation (inline PNG figures, no network access).

Sections (each an ``<section id=...>``, in this order): ``summary``, ``evidence``, ``accuracy``
(paper Fig. 4), ``diversity`` (Δ vs diversity scatters, Fig. 5/6), ``correlation`` (Fig. 7),
``equitability`` (Table 2), ``calibration``, ``saliency`` (Fig. 2/11), ``cka`` (Fig. 12), ``policy``.
A section whose data the run did not compute says so and how to compute it.
"""

from __future__ import annotations

import base64
import html
import json
import math
import os
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np

from ovdiv.atomic import write_text
from ovdiv.evaluate.results import read_results_json
from ovdiv.report import figures
from ovdiv.versions import __version__

__all__ = ["SECTIONS", "DIVERSITY_METRICS", "render_report", "write_report"]

SECTIONS = (
    ("summary", "Summary"),
    ("evidence", "Run metadata and evidence"),
    ("accuracy", "Accuracy per dataset"),
    ("diversity", "Ensemble improvement vs diversity"),
    ("correlation", "Correlation of diversity with improvement"),
    ("equitability", "Shannon equitability"),
    ("calibration", "Calibration"),
    ("saliency", "Saliency maps"),
    ("cka", "Representation similarity (CKA)"),
    ("policy", "Policy verdict"),
)

# (row metric, axis label) — the diversity measures plotted against Δ; mean member accuracy too.
DIVERSITY_METRICS = (
    ("disagreement", "disagreement ↑"),
    ("q_statistic", "Q-statistic ↓"),
    ("correlation", "correlation ρ ↓"),
    ("double_fault", "double fault ↓"),
    ("pdr", "prediction disagreement ratio ↑"),
    ("kl_divergence", "KL divergence ↑"),
    ("shannon_equitability_correct", "equitability (ens. correct)"),
    ("shannon_equitability_wrong", "equitability (ens. wrong)"),
    ("attribution_diversity", "attribution diversity D_att ↑"),
    ("attribution_rmse", "saliency RMSE ↑"),
    ("hash_phash", "pHash distance ↑"),
    ("cka_mean", "mean CKA ↓"),
    ("mean_member_top1", "mean member top-1"),
)

_CSS = """
body{font-family:-apple-system,Segoe UI,Helvetica,Arial,sans-serif;margin:0;color:#1d1d1f;background:#fafafa}
header{background:#12355b;color:#fff;padding:18px 32px}
header h1{margin:0 0 4px 0;font-size:22px} header p{margin:0;opacity:.85;font-size:13px}
nav{background:#fff;border-bottom:1px solid #ddd;padding:8px 32px;font-size:13px;position:sticky;top:0}
nav a{margin-right:14px;color:#12355b;text-decoration:none} nav a:hover{text-decoration:underline}
main{padding:8px 32px 40px 32px;max-width:1400px}
section{background:#fff;border:1px solid #e2e2e2;border-radius:6px;padding:14px 20px;margin:16px 0;overflow-x:auto}
h2{font-size:17px;margin:4px 0 10px 0;color:#12355b} h3{font-size:14px;margin:14px 0 6px 0}
table{border-collapse:collapse;font-size:12px;margin:6px 0 10px 0}
th,td{border:1px solid #ddd;padding:3px 8px;text-align:right} th{background:#f0f3f7;text-align:center}
td.l,th.l{text-align:left} td.l:first-child{white-space:nowrap}
td.mono{font-family:Menlo,Consolas,monospace;font-size:11px;text-align:left}
img{max-width:100%;height:auto;display:block;margin:6px 0}
.note{color:#666;font-size:12px;margin:4px 0}
.pass{color:#0a7d28;font-weight:bold} .fail{color:#c0191d;font-weight:bold}
.badge{display:inline-block;padding:2px 10px;border-radius:10px;font-weight:bold;font-size:13px}
.badge.pass{background:#d9f2df} .badge.fail{background:#f9d9da} .badge.none{background:#eee;color:#555}
.scroll{max-height:420px;overflow:auto}
details{margin:4px 0} summary{cursor:pointer;font-weight:600;font-size:13px;padding:3px 0;color:#12355b}
details details{margin-left:18px} details details summary{font-weight:normal}
.ci{color:#666;font-size:11px;white-space:nowrap} .warn{color:#a35c00;font-weight:bold}
.callout{background:#fff4e0;border-left:4px solid #e69500;padding:6px 10px;font-size:13px;margin:6px 0}
"""


# ----------------------------------------------------------------------------------------------
# loading
# ----------------------------------------------------------------------------------------------
def _load_results(results_dir: Path) -> tuple[dict[str, Any], Path]:
    data, path = read_results_json(results_dir)
    return data, path.parent


@dataclass(frozen=True)
class _CI:
    """A row's confidence interval (results schema ``ovdiv-results/2``)."""

    low: float
    high: float
    method: str
    level: float


def _finite(v: Any) -> float | None:
    try:
        f = float(v)
    except (TypeError, ValueError):
        return None
    return f if math.isfinite(f) else None


def _row_ci(r: Mapping[str, Any]) -> _CI | None:
    """The interval of a row, or None when the row has none (older results, bootstrap off, undefined)."""
    lo, hi = _finite(r.get("ci_low")), _finite(r.get("ci_high"))
    if lo is None or hi is None:
        return None
    level = _finite(r.get("ci_level"))
    return _CI(lo, hi, str(r.get("ci_method") or "unknown method"), level or float("nan"))


class _Rows:
    """Index over tidy result rows ``{ensemble, member, dataset, metric, value}`` and their intervals."""

    def __init__(self, rows: Iterable[Mapping[str, Any]]) -> None:
        self.rows = [dict(r) for r in rows]
        self.member: dict[tuple[str, str, str], float] = {}
        self.ensemble: dict[tuple[str, str, str], float] = {}
        self.member_ci: dict[tuple[str, str, str], _CI] = {}
        self.ensemble_ci: dict[tuple[str, str, str], _CI] = {}
        self.ensemble_p: dict[tuple[str, str, str], float] = {}  # p-values of tests (e.g. McNemar on Δ)
        for r in self.rows:
            v = float("nan") if r.get("value") is None else float(r["value"])
            key_ds = str(r.get("dataset"))
            ci = _row_ci(r)
            if r.get("member") is not None:
                key = (r["member"], key_ds, r["metric"])
                self.member[key] = v
                if ci is not None:
                    self.member_ci[key] = ci
            elif r.get("ensemble") is not None:
                key = (r["ensemble"], key_ds, r["metric"])
                self.ensemble[key] = v
                if ci is not None:
                    self.ensemble_ci[key] = ci
                p = _finite(r.get("p_value"))
                if p is not None:
                    self.ensemble_p[key] = p
        self.datasets = list(dict.fromkeys(str(r.get("dataset")) for r in self.rows))
        self.members = list(dict.fromkeys(r["member"] for r in self.rows if r.get("member") is not None))
        self.ensembles = list(
            dict.fromkeys(r["ensemble"] for r in self.rows if r.get("ensemble") is not None and r.get("member") is None)
        )
        self.ensemble_metrics = list(dict.fromkeys(k[2] for k in self.ensemble))

    def m(self, member: str, dataset: str, metric: str) -> float:
        return self.member.get((member, dataset, metric), float("nan"))

    def e(self, ens: str, dataset: str, metric: str) -> float:
        return self.ensemble.get((ens, dataset, metric), float("nan"))

    def mci(self, member: str, dataset: str, metric: str) -> _CI | None:
        return self.member_ci.get((member, dataset, metric))

    def eci(self, ens: str, dataset: str, metric: str) -> _CI | None:
        return self.ensemble_ci.get((ens, dataset, metric))

    def ep(self, ens: str, dataset: str, metric: str) -> float | None:
        return self.ensemble_p.get((ens, dataset, metric))

    def methods(self, metrics: Iterable[str]) -> dict[str, set[tuple[str, float]]]:
        """``metric -> {(ci_method, ci_level)}`` over every row of the given metrics that has an interval."""
        wanted = set(metrics)
        out: dict[str, set[tuple[str, float]]] = {m: set() for m in wanted}
        for table in (self.member_ci, self.ensemble_ci):
            for (_, _, metric), ci in table.items():
                if metric in wanted:
                    out[metric].add((ci.method, ci.level))
        return out


# ----------------------------------------------------------------------------------------------
# html helpers
# ----------------------------------------------------------------------------------------------
def _esc(x: Any) -> str:
    return html.escape(str(x))


def _num(v: Any, digits: int = 4) -> str:
    if v is None:
        return "—"
    if isinstance(v, (int, np.integer)):
        return f"{int(v):,}"
    try:
        f = float(v)
    except (TypeError, ValueError):
        return _esc(v)
    return "—" if not math.isfinite(f) else f"{f:.{digits}f}"


def _table(
    header: Sequence[str],
    rows: Iterable[Sequence[Any]],
    *,
    left: int = 1,
    cls: str = "",
    text_cols: Iterable[int] = (),
) -> str:
    """An HTML table; the first ``left`` columns and the ``text_cols`` are left-aligned text."""
    lefts = set(range(left)) | set(text_cols)
    out = [f'<table class="{cls}"><tr>']
    out += [f'<th class="{"l" if i in lefts else ""}">{_esc(h)}</th>' for i, h in enumerate(header)]
    out.append("</tr>")
    for row in rows:
        out.append("<tr>")
        for i, cell in enumerate(row):
            klass = "l" if i in lefts else ""
            text = cell if isinstance(cell, _Raw) else (_esc(cell) if i < left else _num(cell))
            out.append(f'<td class="{klass}">{text}</td>')
        out.append("</tr>")
    out.append("</table>")
    return "".join(out)


class _Raw(str):
    """A table cell that is already HTML."""


def _img(png: bytes, alt: str) -> str:
    return f'<img alt="{_esc(alt)}" src="data:image/png;base64,{base64.b64encode(png).decode("ascii")}">'


def _note(text: str) -> str:
    return f'<p class="note">{_esc(text)}</p>'


def _with_ci(v: float, ci: _CI | None, *, p: float | None = None) -> Any:
    """A table cell ``0.712 [0.699, 0.725] p=0.012`` (3 decimals), or the bare value with neither."""
    if (ci is None and p is None) or not math.isfinite(v):
        return v
    extra = f"[{ci.low:.3f}, {ci.high:.3f}]" if ci is not None else ""
    if p is not None:
        extra += f" p={_pval(p)}"
    return _Raw(f'{v:.3f} <span class="ci">{extra.strip()}</span>')


def _pval(p: float | None) -> str:
    if p is None or not math.isfinite(p):
        return "—"
    return "<0.001" if p < 0.001 else f"{p:.3f}"


def _level(level: float | None) -> str:
    return "?" if level is None or not math.isfinite(level) else f"{100 * level:g} %"


_METHOD_WORDS = {
    "clopper-pearson": "exact binomial (Clopper-Pearson)",
    "wilson": "Wilson score",
    "bootstrap-percentile": "bootstrap, percentile",
    "bootstrap-bca": "bootstrap, BCa",
}


def _method_words(method: str, md_ci: Mapping[str, Any] | None = None, *, paired: bool = True) -> str:
    """Words for a ``ci_method``; a row's bootstrap is paired over images (with resamples and seed when known)."""
    words = _METHOD_WORDS.get(method, method)
    if method.startswith("bootstrap") and paired:
        words = words.replace("bootstrap", "paired bootstrap over images", 1)
        extra = []
        if md_ci and md_ci.get("bootstrap"):
            extra.append(f"{int(md_ci['bootstrap']):,} resamples")
        if md_ci and md_ci.get("seed") is not None:
            extra.append(f"seed {md_ci['seed']}")
        if extra:
            words += ", " + ", ".join(extra)
    return words


def _ci_sentence(data: Mapping[str, Any], idx: _Rows, metrics: Sequence[tuple[str, str]]) -> str:
    """One sentence naming the interval method and level of each ``(metric, label)`` shown in a table.

    Metrics without any interval are named as point estimates, with the reason when the metadata gives
    one (older results schema, bootstrap off).
    """
    md_ci = (data.get("metadata") or {}).get("ci") or {}
    found = idx.methods(m for m, _ in metrics)
    by_how: dict[str, list[str]] = {}  # method description -> labels, in table order
    bare = []
    for metric, label in metrics:
        kinds = sorted(found.get(metric, set()))
        if kinds:
            how = " or ".join(f"{_level(lv)} {_method_words(m, md_ci)}" for m, lv in kinds)
            by_how.setdefault(how, []).append(label)
        else:
            bare.append(label)
    if not by_how:
        return _note(_no_ci_reason(data))
    text = "Intervals in brackets: " + "; ".join(f"{', '.join(ls)}: {how}" for how, ls in by_how.items()) + "."
    if bare:
        off = " (the bootstrap was off: --bootstrap 0)" if md_ci and not md_ci.get("bootstrap") else ""
        text += f" No interval for {', '.join(bare)}: point estimates{off}."
    return _note(text)


def _no_ci_reason(data: Mapping[str, Any]) -> str:
    schema = str(data.get("schema", "?"))
    md_ci = (data.get("metadata") or {}).get("ci")
    if schema == "ovdiv-results/1" or md_ci is None:
        return (
            f"Point estimates only: these results (schema {schema}) carry no confidence intervals; "
            "re-run `ovdiv evaluate` with this version to add them (--ci-level, --bootstrap)."
        )
    if not md_ci.get("bootstrap"):
        return "Point estimates only for the paired quantities: the bootstrap was off (--bootstrap 0)."
    return "Point estimates only: no row shown here has an interval."


# ----------------------------------------------------------------------------------------------
# sections
# ----------------------------------------------------------------------------------------------
def _summary(data: dict[str, Any], idx: _Rows, verdict: Mapping[str, Any] | None) -> str:
    md = data.get("metadata", {})
    badge = '<span class="badge none">no policy checked</span>'
    if verdict is not None:
        ok = bool(verdict.get("passed"))
        badge = f'<span class="badge {"pass" if ok else "fail"}">policy {"PASS" if ok else "FAIL"}</span>'
    parts = [f"<p>{badge}</p>"]
    delta_ci = any(k[2] == "improvement" for k in idx.ensemble_ci)
    rows = []
    for ds in idx.datasets:
        best_m = max(idx.members, key=lambda m: _nan_low(idx.m(m, ds, "top1")), default=None)
        best_e = max(idx.ensembles, key=lambda e: _nan_low(idx.e(e, ds, "ensemble_top1")), default=None)
        top_d = max(idx.ensembles, key=lambda e: _nan_low(idx.e(e, ds, "improvement")), default=None)
        ens_vals = [v for v in (idx.e(e, ds, "ensemble_top1") for e in idx.ensembles) if math.isfinite(v)]
        imps = [v for v in (idx.e(e, ds, "improvement") for e in idx.ensembles) if math.isfinite(v)]
        imp_cis = [c for c in (idx.eci(e, ds, "improvement") for e in idx.ensembles) if c is not None]
        row: list[Any] = [
            ds,
            _with_ci(idx.m(best_m, ds, "top1"), idx.mci(best_m, ds, "top1")) if best_m else float("nan"),
            _with_ci(idx.e(best_e, ds, "ensemble_top1"), idx.eci(best_e, ds, "ensemble_top1"))
            if best_e and ens_vals
            else float("nan"),
            float(np.mean(ens_vals)) if ens_vals else float("nan"),
            _with_ci(
                idx.e(top_d, ds, "improvement"), idx.eci(top_d, ds, "improvement"), p=idx.ep(top_d, ds, "improvement")
            )
            if top_d and imps
            else float("nan"),
            _Raw(_esc(f"{sum(v > 0 for v in imps)}/{len(imps)}" if imps else "—")),
        ]
        if delta_ci:
            row.append(_Raw(_esc(f"{sum(c.low > 0 for c in imp_cis)}/{len(imp_cis)}" if imp_cis else "—")))
        rows.append(row)
    header = ["dataset", "best member top-1", "best ensemble top-1", "mean ensemble top-1", "max Δ", "ensembles Δ>0"]
    if delta_ci:
        header.append("Δ lower bound > 0")
    parts.append(_table(header, rows))
    parts.append(
        _ci_sentence(data, idx, [("top1", "member top-1"), ("ensemble_top1", "ensemble top-1"), ("improvement", "Δ")])
    )
    notes = []
    if any(k[2] == "improvement" for k in idx.ensemble_p):
        notes.append("p = the p-value recorded with that Δ (McNemar exact test, ensemble vs best member)")
    if delta_ci:
        notes.append("'Δ lower bound > 0': ensembles whose interval for Δ lies above 0")
    if notes:
        parts.append(_note("Δ = ensemble top-1 − best member top-1 (averaging); " + "; ".join(notes) + "."))
    parts.append(
        _note(
            f"{len(idx.members)} members, {len(idx.ensembles)} ensembles, {len(idx.datasets)} datasets; "
            f"device {md.get('device', '?')}, inference precision {md.get('precision', '?')}."
        )
    )
    return "".join(parts)


def _nan_low(v: float) -> float:
    return v if math.isfinite(v) else -math.inf


def _evidence(data: dict[str, Any]) -> str:
    md = data.get("metadata", {})
    parts = []
    versions = md.get("versions", {})
    general = [
        ("results schema", data.get("schema", "?")),
        ("created", md.get("created", "?")),
        ("device", md.get("device", "?")),
        ("inference precision", md.get("precision", "?")),
    ]
    general.append(("confidence intervals", _ci_settings(md.get("ci"))))
    general += [(f"{k} version", v) for k, v in versions.items()]
    parts.append(_table(["field", "value"], [(k, _Raw(_esc(v))) for k, v in general]))
    members = md.get("members", [])
    if members:
        rows = []
        for m in members:
            sha = str(m.get("sha256") or "")
            rows.append(
                [
                    m.get("name", "?"),
                    _Raw(_esc(m.get("architecture") or "")),
                    _Raw(_esc(m.get("backend") or "")),
                    _Raw(_esc(m.get("precision") or "")),
                    m.get("params"),
                    _Raw(f'<span class="mono" title="{_esc(sha)}">{_esc(sha[:16])}</span>'),
                    _Raw(_esc(m.get("path") or "")),
                ]
            )
        parts.append("<h3>Members</h3>")
        parts.append(_table(["member", "architecture", "backend", "precision", "params", "sha256", "artifact"], rows))
    datasets = md.get("datasets", [])
    if datasets:
        rows = []
        for d in datasets:
            man = d.get("manifest", {}) or {}
            rows.append(
                [
                    d.get("spec", "?"),
                    man.get("n"),
                    _Raw(_esc(man.get("seed", ""))),
                    _Raw(f'<span class="mono">{_esc(str(man.get("manifest_hash", ""))[:16])}</span>'),
                ]
            )
        parts.append("<h3>Datasets</h3>")
        parts.append(_table(["spec", "images", "seed", "manifest hash"], rows))
    checks = md.get("gradient_check") or {}
    if checks:
        rows = [
            [
                name,
                _Raw(_esc(c.get("mode", ""))),
                _Raw(_esc(c.get("outcome", ""))),
                c.get("error"),
                c.get("tolerance"),
                _Raw(f"{c.get('images', 0)} x {c.get('directions', 0)}"),
                c.get("seconds"),
                _Raw(_esc(", ".join(c.get("suspects") or []) or c.get("reason") or "")),
            ]
            for name, c in checks.items()
        ]
        parts.append("<h3>Gradient check (VJP vs finite differences of each member's own forward)</h3>")
        parts.append(
            _table(["member", "mode", "outcome", "error", "tolerance", "images x dirs", "seconds", "note"], rows)
        )
    options = md.get("options")
    if options:
        parts.append("<h3>Options</h3>")
        parts.append(f'<pre class="note">{_esc(json.dumps(options, indent=1, default=str))}</pre>')
    timings = md.get("timings")
    if timings:
        parts.append("<h3>Timings (s)</h3>")
        parts.append(_table(["stage", "seconds"], [(k, v) for k, v in timings.items()]))
    return "".join(parts)


def _ci_settings(ci: Any) -> str:
    """The run's interval settings (``metadata.ci``) in words, for the evidence table."""
    if not isinstance(ci, Mapping):
        return "none recorded (point estimates)"
    parts = [f"level {_level(_finite(ci.get('level')))}"]
    if ci.get("binomial"):
        parts.append(f"accuracies: {_method_words(str(ci['binomial']))}")
    if ci.get("bootstrap"):
        parts.append(f"paired quantities: bootstrap ({ci.get('method', '?')}), {int(ci['bootstrap']):,} resamples")
    else:
        parts.append("bootstrap off")
    if ci.get("seed") is not None:
        parts.append(f"seed {ci['seed']}")
    return "; ".join(parts)


def _shown_ensembles(idx: _Rows, limit: int = 4) -> list[str]:
    """All ensembles when few; otherwise the best and the worst by mean ensemble top-1."""
    if len(idx.ensembles) <= limit:
        return idx.ensembles
    score = {e: np.nanmean([idx.e(e, ds, "ensemble_top1") for ds in idx.datasets]) for e in idx.ensembles}
    ranked = sorted(idx.ensembles, key=lambda e: _nan_low(float(score[e])), reverse=True)
    return ranked[: limit // 2] + ranked[-(limit - limit // 2) :]


def _accuracy(data: dict[str, Any], idx: _Rows) -> str:
    shown = _shown_ensembles(idx)
    members = {m: [idx.m(m, ds, "top1") for ds in idx.datasets] for m in idx.members}
    ensembles = {f"ens {e}": [idx.e(e, ds, "ensemble_top1") for ds in idx.datasets] for e in shown}
    m_ci = {m: [idx.mci(m, ds, "top1") for ds in idx.datasets] for m in idx.members}
    e_ci = {f"ens {e}": [idx.eci(e, ds, "ensemble_top1") for ds in idx.datasets] for e in shown}
    intervals = {
        name: ([c.low if c else math.nan for c in cis], [c.high if c else math.nan for c in cis])
        for name, cis in {**m_ci, **e_ci}.items()
        if any(cis)
    }
    kinds = sorted(set().union(*idx.methods(["top1", "ensemble_top1"]).values()))
    label = " or ".join(f"{_level(lv)} {_method_words(m)}" for m, lv in kinds) + " interval"
    png = figures.accuracy_bars(idx.datasets, members, ensembles, intervals=intervals or None, interval_label=label)
    parts = [_img(png, "accuracy per dataset")]
    if len(shown) < len(idx.ensembles):
        parts.append(_note(f"Showing the 2 best and 2 worst of {len(idx.ensembles)} ensembles by mean top-1."))
    series = {**members, **ensembles}
    cis = {**m_ci, **e_ci}
    rows = [[name, *[_with_ci(v, c) for v, c in zip(vals, cis[name], strict=True)]] for name, vals in series.items()]
    parts.append(_table(["top-1", *idx.datasets], rows))
    top5 = [[m, *[_with_ci(idx.m(m, ds, "top5"), idx.mci(m, ds, "top5")) for ds in idx.datasets]] for m in idx.members]
    has_top5 = any(math.isfinite(idx.m(m, ds, "top5")) for m in idx.members for ds in idx.datasets)
    if has_top5:
        parts.append(_table(["member top-5", *idx.datasets], top5))
    metrics = [("top1", "member top-1"), ("ensemble_top1", "ensemble top-1")]
    if has_top5:
        metrics.append(("top5", "member top-5"))
    parts.append(_ci_sentence(data, idx, metrics))
    return "".join(parts)


def _params_of(ens: str, params: Mapping[str, float]) -> float:
    vals = [params.get(m) for m in ens.split("+")]
    return float(sum(v for v in vals if v)) if all(v for v in vals) else float("nan")


def _consensus_suffixes(idx: _Rows) -> list[str]:
    sufs = {m.split(":", 1)[1] for m in idx.ensemble_metrics if m.startswith("improvement:")}
    return ["", *sorted(sufs)]


_WHISKERS_INLINE = 60  # more ensembles than this: the Δ whiskers go in a figure of their own, collapsed


def _diversity(data: dict[str, Any], idx: _Rows, params: Mapping[str, float]) -> str:
    if len(idx.ensembles) < 2:
        if not idx.ensembles:
            return _note("No ensemble rows in these results.")
        ens = idx.ensembles[0]
        rows: list[list[Any]] = []
        shown = [("improvement", "improvement Δ")]
        for key, name in DIVERSITY_METRICS:
            vals = [idx.e(ens, ds, key) for ds in idx.datasets]
            if any(math.isfinite(v) for v in vals):
                shown.append((key, name))
        for key, name in shown:
            rows.append(
                [
                    name,
                    *[
                        _with_ci(idx.e(ens, ds, key), idx.eci(ens, ds, key), p=idx.ep(ens, ds, key))
                        for ds in idx.datasets
                    ],
                ]
            )
        return (
            _note("One ensemble: scatter plots need several (use --pool P... --size k to score every k-subset).")
            + _table(["metric", *idx.datasets], rows)
            + _ci_sentence(data, idx, [(k, n.rstrip(" ↑↓")) for k, n in shown])
        )
    parts: list[str] = []
    whisker_sets = 0
    for suffix in _consensus_suffixes(idx):
        imp_key = "improvement" + (f":{suffix}" if suffix else "")
        acc_key = "ensemble_top1" + (f":{suffix}" if suffix else "")
        for ds in idx.datasets:
            ys = np.array([idx.e(e, ds, imp_key) for e in idx.ensembles])
            if not np.isfinite(ys).any():
                continue
            acc = [idx.e(e, ds, acc_key) for e in idx.ensembles]
            size = [_params_of(e, params) for e in idx.ensembles]
            panels = []
            for key, label in DIVERSITY_METRICS:
                xs = np.array([idx.e(e, ds, key) for e in idx.ensembles])
                if np.isfinite(xs).sum() >= 2:
                    panels.append((label, xs, ys, acc, size))
            if not panels:
                continue
            title = f"{ds}, consensus {suffix or 'average'}"
            cis = [idx.eci(e, ds, imp_key) for e in idx.ensembles]
            intervals = None
            label = "confidence interval"
            if any(cis):
                intervals = ([c.low if c else math.nan for c in cis], [c.high if c else math.nan for c in cis])
                kinds = sorted({(c.method, c.level) for c in cis if c})
                label = " or ".join(f"{_level(lv)} {_method_words(m)}" for m, lv in kinds) + " interval"
                whisker_sets += 1
            n_ci = sum(c is not None for c in cis)
            inline = n_ci <= _WHISKERS_INLINE
            img = _img(
                figures.diversity_scatter(
                    panels, title=title, intervals=intervals if inline else None, interval_label=label
                ),
                f"improvement vs diversity {title}",
            )
            if intervals is not None and not inline and not suffix:  # second figures: averaging only (size)
                whiskers = _img(
                    figures.diversity_scatter(panels, title=title, intervals=intervals, interval_label=label),
                    f"improvement vs diversity with intervals {title}",
                )
                img += (
                    f"<details><summary>the same with {_esc(label)} whiskers on Δ ({n_ci} ensembles)</summary>"
                    f"{whiskers}</details>"
                )
            state = " open" if not parts else ""  # the first figure open, the others one click away
            parts.append(f"<details{state}><summary>{_esc(title)}</summary>{img}</details>")
    if not parts:
        return _note("No diversity metrics in these results.")
    text = "One figure per dataset and consensus rule; click a title to open it."
    if whisker_sets and len(idx.ensembles) > _WHISKERS_INLINE:
        text += (
            f" With {len(idx.ensembles)} ensembles the interval whiskers on Δ would hide the points: each "
            "averaging figure has a second one with whiskers, one click further (other consensus rules: the "
            "intervals are in results.json)."
        )
    out = _note(text) + "".join(parts)
    if whisker_sets:
        out += _ci_sentence(data, idx, [("improvement", "Δ (whiskers)")])
    return out


def _correlation(data: dict[str, Any], idx: _Rows) -> str:
    given = data.get("correlation")
    if isinstance(given, list) and given:
        return _correlation_given(given)
    return _correlation_computed(idx)


def _correlation_given(entries: list[Any]) -> str:
    """The correlation tables from the results' own ``correlation`` entries (with bootstrap intervals).

    One table per coefficient (Pearson, Spearman), metrics x datasets, so the intervals fit the page.
    """
    by: dict[tuple[str, str], Mapping[str, Any]] = {}
    for c in entries:
        if isinstance(c, Mapping) and c.get("dataset") is not None and c.get("metric") is not None:
            by[(str(c["dataset"]), str(c["metric"]))] = c
    datasets = list(dict.fromkeys(d for d, _ in by))
    labels = dict(DIVERSITY_METRICS)
    metrics = [k for k, _ in DIVERSITY_METRICS if any((d, k) in by for d in datasets)]
    metrics += [m for m in dict.fromkeys(m for _, m in by) if m not in labels]
    parts = []
    for kind, title in (("pearson", "Pearson r"), ("spearman", "Spearman ρ")):
        rows = []
        for key in metrics:
            row: list[Any] = [labels.get(key, key)]
            for ds in datasets:
                c = by.get((ds, key), {})
                v = _finite(c.get(kind))
                lo, hi = _finite(c.get(f"{kind}_ci_low")), _finite(c.get(f"{kind}_ci_high"))
                ci = _CI(lo, hi, "", math.nan) if lo is not None and hi is not None else None
                row.append(_with_ci(v if v is not None else math.nan, ci))
            rows.append(row)
        parts.append(_table([f"{title} with Δ", *datasets], rows))
    n = sorted({int(c["n_ensembles"]) for c in by.values() if _finite(c.get("n_ensembles")) is not None})
    kinds = sorted({(str(c.get("ci_method") or ""), _finite(c.get("ci_level"))) for c in by.values()})
    hows = [f"{_level(lv)} {_method_words(m, paired=False)}" for m, lv in kinds if m]
    if hows:
        method = f"Intervals in brackets: {' or '.join(hows)} (as recorded in the results)."
    else:
        method = "Point estimates only: the results carry no intervals for the correlations."
    over = f"Over {', '.join(map(str, n))} ensembles per dataset; " if n else ""
    return "".join(parts) + _note(f"{over}Δ = ensemble top-1 − best member top-1 (averaging). {method}")


def _correlation_computed(idx: _Rows) -> str:
    """Pearson/Spearman computed here from the rows (results without a ``correlation`` list: no intervals)."""
    from scipy import stats

    if len(idx.ensembles) < 3:
        return _note("Correlations need at least 3 scored ensembles (use --pool P... --size k).")
    rows = []
    for key, label in DIVERSITY_METRICS:
        row: list[Any] = [label]
        seen = False
        for ds in idx.datasets:
            x = np.array([idx.e(e, ds, key) for e in idx.ensembles])
            y = np.array([idx.e(e, ds, "improvement") for e in idx.ensembles])
            ok = np.isfinite(x) & np.isfinite(y)
            if ok.sum() >= 3 and np.ptp(x[ok]) > 0 and np.ptp(y[ok]) > 0:
                row += [float(stats.pearsonr(x[ok], y[ok])[0]), float(stats.spearmanr(x[ok], y[ok])[0])]
                seen = True
            else:
                row += [float("nan"), float("nan")]
        if seen:
            rows.append(row)
    if not rows:
        return _note("No diversity metric varies across the scored ensembles.")
    header = ["metric vs Δ"] + [f"{ds} {kind}" for ds in idx.datasets for kind in ("Pearson", "Spearman")]
    return _table(header, rows) + _note(
        f"Over {len(idx.ensembles)} ensembles per dataset; Δ = ensemble top-1 − best member top-1 (averaging). "
        "Point estimates only: these results carry no correlation intervals, so the report computed the "
        "coefficients from the rows (scipy.stats.pearsonr / spearmanr)."
    )


def _equitability(idx: _Rows) -> str:
    keys = ("shannon_equitability_correct", "shannon_equitability_wrong")
    if not any(k in idx.ensemble_metrics for k in keys):
        return _note("Shannon equitability was not computed in this run.")
    shown = idx.ensembles if len(idx.ensembles) <= 12 else _shown_ensembles(idx, 12)
    header = ["ensemble"] + [f"{ds} {w}" for ds in idx.datasets for w in ("correct", "wrong")]
    rows = [[e, *[idx.e(e, ds, k) for ds in idx.datasets for k in keys]] for e in shown]
    if len(idx.ensembles) > 1:
        rows.append(
            [
                f"mean of {len(idx.ensembles)}",
                *[float(np.nanmean([idx.e(e, ds, k) for e in idx.ensembles])) for ds in idx.datasets for k in keys],
            ]
        )
    return _table(header, rows) + _note(
        "E = H / ln(min(M, C)) of the members' predicted labels per sample, averaged over the samples the "
        "ensemble classifies correctly / wrongly (paper Table 2). 0 = all members agree."
    )


def _calibration(idx: _Rows) -> str:
    rows = []
    for m in idx.members:
        rows.append([m, *[v for ds in idx.datasets for v in (idx.m(m, ds, "nll"), idx.m(m, ds, "ece"))]])
    for e in _shown_ensembles(idx):
        vals = [v for ds in idx.datasets for v in (idx.e(e, ds, "ensemble_nll"), idx.e(e, ds, "ensemble_ece"))]
        rows.append([f"ens {e}", *vals])
    if not any(math.isfinite(v) for r in rows for v in r[1:]):
        return _note("Calibration metrics were not computed in this run.")
    header = ["model"] + [f"{ds} {k}" for ds in idx.datasets for k in ("NLL", "ECE")]
    return _table(header, rows) + _note("ECE: 15 equal-width confidence bins, top-label.")


def _extras_paths(data: dict[str, Any], base: Path, key: str) -> list[tuple[str, Path]]:
    ex = (data.get("extras") or {}).get(key)
    if not ex:
        return []
    items = ex.items() if isinstance(ex, Mapping) else [("", ex)]
    return [(str(k), base / str(v)) for k, v in items if (base / str(v)).is_file()]


_GRID_ROWS = 8


def _grid_rows(wrong: np.ndarray, split: np.ndarray | None, k: int = _GRID_ROWS) -> list[int]:
    """Up to ``k`` sample indices showing the ensemble right and wrong, members unanimous and split.

    Round-robin over the cells (correct, unanimous), (wrong, split), (correct, split), (wrong, unanimous)
    (two cells, correct and wrong, when member predictions are unknown), each in index order; the rows
    come back grouped from best to worst: correct and unanimous, correct and split, wrong and split,
    wrong and unanimous.
    """
    if split is None:
        cells = [np.flatnonzero(~wrong), np.flatnonzero(wrong)]
    else:
        cells = [np.flatnonzero(c) for c in (~wrong & ~split, wrong & split, ~wrong & split, wrong & ~split)]
    taken: list[tuple[int, int]] = []  # (display group, index)
    group = [0, 2, 1, 3] if split is not None else [0, 1]
    for rank in range(len(wrong)):
        taken += [(group[j], int(c[rank])) for j, c in enumerate(cells) if rank < len(c)]
        if len(taken) >= k:
            break
    return [i for _, i in sorted(taken[:k])]


def _saliency(data: dict[str, Any], base: Path) -> str:
    paths = _extras_paths(data, base, "saliency")
    if not paths:
        return _note("Attribution was off for this run (use --attribution saliency).")
    parts = []
    for label, path in paths:
        with np.load(path, allow_pickle=False) as z:
            images, maps = z["images"], z["maps"]
            members = [str(s) for s in z["members"]]
            labels = z["labels"] if "labels" in z else np.full(len(images), -1)
            ens = z["ensemble_pred"] if "ensemble_pred" in z else np.full(len(images), -1)
            member_pred = z.get("member_pred")
            indices = z["indices"] if "indices" in z else np.arange(len(images))
            dataset = str(z["dataset"]) if "dataset" in z else label
        wrong = np.asarray(labels) != np.asarray(ens)
        split = None
        if member_pred is not None and member_pred.shape == (len(members), len(images)):
            split = (member_pred != member_pred[:1]).any(axis=0)
        else:
            member_pred = None
        take = _grid_rows(wrong, split)
        captions = []
        for i in take:
            mark = "✗ ens wrong" if wrong[i] else "✓ ens right"
            text = f"#{int(indices[i])} y={int(labels[i])} ens={int(ens[i])}\n{mark}"
            if split is not None and member_pred is not None:
                right = int((member_pred[:, i] == labels[i]).sum())
                text += f"\nmembers {'split' if split[i] else 'agree'}, {right}/{len(members)} right"
            captions.append(text)
        png = figures.saliency_grid(
            images[take],
            maps[:, take],
            members,
            captions,
            title=f"{dataset}: |saliency| per member",
            wrong=[bool(wrong[i]) for i in take],
        )
        n_wrong = int(wrong[take].sum())
        text = (
            f"{len(take) - n_wrong} sample(s) the ensemble classifies correctly and {n_wrong} it gets wrong "
            f"(red), of {len(images)} saved examples ({int(wrong.sum())} wrong among them)"
        )
        if split is not None:
            text += f"; members disagree on {int(split[take].sum())} of the rows shown."
        else:
            text += (
                "; these results predate the saved member predictions, so the examples are the first images "
                "of the dataset and whether members disagree is not shown."
            )
        if not wrong.any():
            text += " No saved example is classified wrongly by the ensemble."
        parts.append(f"<h3>{_esc(dataset)}</h3>" + _img(png, f"saliency grid {dataset}") + _note(text))
    return "".join(parts)


def _cka(data: dict[str, Any], base: Path) -> str:
    paths = _extras_paths(data, base, "cka")
    if not paths:
        return _note("CKA was not computed in this run (use --cka-samples N).")
    panels = []
    others: set[str] = set()
    for label, path in paths:
        with np.load(path, allow_pickle=False) as z:
            members = [str(s) for s in z["members"]]
            dataset = str(z["dataset"]) if "dataset" in z else label
            for key in z.files:
                if z[key].dtype.kind not in "fiu":
                    continue
                mat = np.asarray(z[key], dtype=float)
                if mat.ndim != 2 or mat.shape != (len(members), len(members)):
                    continue
                if key == "penultimate":
                    panels.append((f"{dataset}: penultimate", mat, members))
                else:
                    others.add(key)
    if not panels:
        return _note("The CKA side data holds no penultimate member x member matrix.")
    note = (
        "Linear CKA between members' penultimate features (1 = identical representations up to rotation and "
        "isotropic scaling)."
    )
    if others:
        note += f" Per-stage matrices ({', '.join(sorted(others))}) are in the extras/cka_*.npz files."
    return _img(figures.cka_heatmaps(panels[:9]), "CKA heatmaps") + _note(note)


_CHECK_ROWS = 200


def _flagged(c: Mapping[str, Any]) -> bool:
    """A check that passes on the point estimate but fails on its confidence bound or test."""
    return c.get("passed_on_estimate") is True and not c.get("passed")


def _criterion(c: Mapping[str, Any]) -> str:
    crit = []
    if c.get("min") is not None:
        crit.append(f"≥ {_num(c['min'])}")
    if c.get("max") is not None:
        crit.append(f"≤ {_num(c['max'])}")
    text = " and ".join(crit) or "—"
    if c.get("bound"):
        text += f" on the {c['bound']} bound"
    if c.get("test"):
        alpha = _finite(c.get("alpha"))
        test = {"mcnemar": "McNemar"}.get(str(c["test"]), str(c["test"]))
        text += f"; {test} test" + (f" at α={alpha:g}" if alpha is not None else "")
    return text


def _policy(verdict: Mapping[str, Any] | None) -> str:
    if verdict is None:
        return _note("No policy was checked (ovdiv certify RESULTS --policy P, or evaluate --policy P).")
    ok = bool(verdict.get("passed"))
    parts = [
        f'<p><span class="badge {"pass" if ok else "fail"}">{_esc(verdict.get("policy", "policy"))}: '
        f"{'PASS' if ok else 'FAIL'}</span></p>"
    ]
    checks = [c for c in verdict.get("checks", []) if isinstance(c, Mapping)]
    flagged_by_rule: dict[str, int] = {}
    for c in checks:
        if _flagged(c):
            flagged_by_rule[str(c.get("rule"))] = flagged_by_rule.get(str(c.get("rule")), 0) + 1
    if flagged_by_rule:
        n = sum(flagged_by_rule.values())
        parts.append(
            '<p class="callout">⚠ '
            + _esc(
                f"{n} check(s) pass on the point estimate but not on the confidence bound or test "
                f"(rule(s) {', '.join(sorted(flagged_by_rule))}): the data do not support them at the stated "
                "level, so they count as failed."
            )
            + "</p>"
        )
    rows = []
    for r in verdict.get("rules", []):
        passed = bool(r.get("passed"))
        cell = f'<span class="{"pass" if passed else "fail"}">{"PASS" if passed else "FAIL"}</span>'
        k = flagged_by_rule.get(str(r.get("id")), 0)
        if k:
            cell += f' <span class="warn">⚠ {k} pass only on the estimate</span>'
        rows.append([r.get("id", ""), _Raw(_esc(r.get("description", ""))), _Raw(cell)])
    parts.append(_table(["rule", "check", "verdict"], rows, text_cols=(1, 2)))
    evidence = any(
        c.get("bound") or c.get("test") or _finite(c.get("ci_low")) is not None or c.get("p_value") is not None
        for c in checks
    )
    if evidence:
        parts.append(_policy_checks(checks))
        return "".join(parts)
    failed_rules = {r.get("id") for r in verdict.get("rules", []) if not r.get("passed")}
    failing = [c for c in checks if not c.get("passed") and c.get("rule") in failed_rules]
    if failing:
        parts.append("<h3>Failing checks of failing rules</h3>")
        rows = [
            [
                c.get("rule", ""),
                _Raw(_esc(c.get("dataset") or "")),
                _Raw(_esc(c.get("ensemble") or c.get("member") or "")),
                c.get("value"),
                c.get("baseline"),
                c.get("observed"),
                _Raw(_esc(c.get("note") or "")),
            ]
            for c in failing[:100]
        ]
        parts.append(
            '<div class="scroll">'
            + _table(
                ["rule", "dataset", "ensemble / member", "value", "baseline", "observed", "note"],
                rows,
                text_cols=(1, 2, 6),
            )
            + "</div>"
        )
    parts.append(_note("No check of this policy uses a confidence bound or a test: verdicts on point estimates."))
    return "".join(parts)


def _policy_checks(checks: list[Mapping[str, Any]]) -> str:
    """Every check with its estimate, interval, criterion and verdict; flagged and failing ones first."""
    order = sorted(range(len(checks)), key=lambda i: (not _flagged(checks[i]), bool(checks[i].get("passed")), i))
    rows = []
    for i in order[:_CHECK_ROWS]:
        c = checks[i]
        lo, hi = _finite(c.get("ci_low")), _finite(c.get("ci_high"))
        interval = (
            _Raw(f'<span class="ci">{_esc(_level(_finite(c.get("ci_level"))))} [{lo:.4f}, {hi:.4f}]</span>')
            if lo is not None and hi is not None
            else _Raw("—")
        )
        if c.get("passed"):
            verdict = '<span class="pass">PASS</span>'
        elif _flagged(c):
            verdict = '<span class="fail">FAIL</span> <span class="warn">⚠ passes on the estimate</span>'
        else:
            verdict = '<span class="fail">FAIL</span>'
        rows.append(
            [
                c.get("rule", ""),
                _Raw(_esc(c.get("dataset") or "")),
                _Raw(_esc(c.get("ensemble") or c.get("member") or "")),
                c.get("observed"),
                interval,
                _Raw(_esc(_criterion(c))),
                _Raw(_esc(_pval(_finite(c.get("p_value"))) if c.get("p_value") is not None else "—")),
                _Raw(verdict),
                _Raw(_esc(c.get("note") or "")),
            ]
        )
    header = ["rule", "dataset", "ensemble / member", "estimate", "interval", "criterion", "p-value", "verdict", "note"]
    shown = min(len(checks), _CHECK_ROWS)
    more = f" Showing {shown} of {len(checks)} checks (verdict.json has them all)." if shown < len(checks) else ""
    return (
        "<h3>Checks: estimate, interval and verdict</h3>"
        + '<div class="scroll">'
        + _table(header, rows, text_cols=(1, 2, 5, 7, 8))
        + "</div>"
        + _note(
            "Estimate: the checked quantity (the value, or value − baseline for a relative rule); interval: its "
            "confidence interval at the level shown. A rule on a bound passes only when that bound meets the "
            "criterion, a rule with a test only when the test rejects at α. Checks that pass on the estimate "
            f"but not on the bound or test come first, then the failing ones.{more}"
        )
    )


# ----------------------------------------------------------------------------------------------
# entry points
# ----------------------------------------------------------------------------------------------
def render_report(data: dict[str, Any], base: Path, *, verdict: Mapping[str, Any] | None = None) -> str:
    """Render the report HTML for a results dict whose side files live under ``base``."""
    idx = _Rows(data["rows"])
    params: dict[str, float] = {}
    for m in data.get("metadata", {}).get("members", []):
        if m.get("name") and m.get("params"):
            params[m["name"]] = float(m["params"])
    body = {
        "summary": _summary(data, idx, verdict),
        "evidence": _evidence(data),
        "accuracy": _accuracy(data, idx),
        "diversity": _diversity(data, idx, params),
        "correlation": _correlation(data, idx),
        "equitability": _equitability(idx),
        "calibration": _calibration(idx),
        "saliency": _saliency(data, base),
        "cka": _cka(data, base),
        "policy": _policy(verdict),
    }
    nav = "".join(f'<a href="#{sid}">{_esc(title)}</a>' for sid, title in SECTIONS)
    sections = "".join(f'<section id="{sid}"><h2>{_esc(title)}</h2>{body[sid]}</section>' for sid, title in SECTIONS)
    created = datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC")
    return (
        "<!DOCTYPE html><html lang='en'><head><meta charset='utf-8'>"
        "<meta name='viewport' content='width=device-width, initial-scale=1'>"
        f"<title>ovdiv report</title><style>{_CSS}</style></head><body>"
        f"<header><h1>ovdiv report: design diversity of a deployed ensemble</h1>"
        f"<p>ovdiv {_esc(__version__)} · rendered {created}</p></header>"
        f"<nav>{nav}</nav><main>{sections}</main></body></html>"
    )


def write_report(
    results_dir: str | os.PathLike[str],
    *,
    out: str | os.PathLike[str] | None = None,
    verdict: Mapping[str, Any] | None = None,
) -> Path:
    """Write ``report.html`` for an evaluation's results folder.

    Args:
        results_dir: Folder holding ``results.json`` (and its ``extras/``), or the JSON file itself.
        out: Output path; default ``<results_dir>/report.html``.
        verdict: A policy verdict dict (``Verdict.to_dict()``); default: ``verdict.json`` in the folder
            when present.

    Returns:
        The path of the written report.
    """
    data, base = _load_results(Path(results_dir))
    if verdict is None and (base / "verdict.json").is_file():
        verdict = json.loads((base / "verdict.json").read_text(encoding="utf-8"))
    target = Path(out) if out is not None else base / "report.html"
    write_text(target, render_report(data, base, verdict=verdict))
    return target
