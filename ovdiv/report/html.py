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
section{background:#fff;border:1px solid #e2e2e2;border-radius:6px;padding:14px 20px;margin:16px 0}
h2{font-size:17px;margin:4px 0 10px 0;color:#12355b} h3{font-size:14px;margin:14px 0 6px 0}
table{border-collapse:collapse;font-size:12px;margin:6px 0 10px 0}
th,td{border:1px solid #ddd;padding:3px 8px;text-align:right} th{background:#f0f3f7;text-align:center}
td.l,th.l{text-align:left} td.mono{font-family:Menlo,Consolas,monospace;font-size:11px;text-align:left}
img{max-width:100%;height:auto;display:block;margin:6px 0}
.note{color:#666;font-size:12px;margin:4px 0}
.pass{color:#0a7d28;font-weight:bold} .fail{color:#c0191d;font-weight:bold}
.badge{display:inline-block;padding:2px 10px;border-radius:10px;font-weight:bold;font-size:13px}
.badge.pass{background:#d9f2df} .badge.fail{background:#f9d9da} .badge.none{background:#eee;color:#555}
.scroll{max-height:420px;overflow:auto}
details{margin:4px 0} summary{cursor:pointer;font-weight:600;font-size:13px;padding:3px 0;color:#12355b}
"""


# ----------------------------------------------------------------------------------------------
# loading
# ----------------------------------------------------------------------------------------------
def _load_results(results_dir: Path) -> tuple[dict[str, Any], Path]:
    data, path = read_results_json(results_dir)
    return data, path.parent


class _Rows:
    """Index over tidy result rows ``{ensemble, member, dataset, metric, value}``."""

    def __init__(self, rows: Iterable[Mapping[str, Any]]) -> None:
        self.rows = [dict(r) for r in rows]
        self.member: dict[tuple[str, str, str], float] = {}
        self.ensemble: dict[tuple[str, str, str], float] = {}
        for r in self.rows:
            v = float("nan") if r.get("value") is None else float(r["value"])
            key_ds = str(r.get("dataset"))
            if r.get("member") is not None:
                self.member[(r["member"], key_ds, r["metric"])] = v
            elif r.get("ensemble") is not None:
                self.ensemble[(r["ensemble"], key_ds, r["metric"])] = v
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


def _table(header: Sequence[str], rows: Iterable[Sequence[Any]], *, left: int = 1, cls: str = "") -> str:
    out = [f'<table class="{cls}"><tr>']
    out += [f'<th class="{"l" if i < left else ""}">{_esc(h)}</th>' for i, h in enumerate(header)]
    out.append("</tr>")
    for row in rows:
        out.append("<tr>")
        for i, cell in enumerate(row):
            klass = "l" if i < left else ""
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
    rows = []
    for ds in idx.datasets:
        best_member = max((idx.m(m, ds, "top1") for m in idx.members), default=float("nan"), key=_nan_low)
        ens_vals = [idx.e(e, ds, "ensemble_top1") for e in idx.ensembles]
        ens_vals = [v for v in ens_vals if math.isfinite(v)]
        imps = [idx.e(e, ds, "improvement") for e in idx.ensembles]
        imps = [v for v in imps if math.isfinite(v)]
        rows.append(
            [
                ds,
                best_member,
                max(ens_vals) if ens_vals else float("nan"),
                float(np.mean(ens_vals)) if ens_vals else float("nan"),
                max(imps) if imps else float("nan"),
                f"{sum(v > 0 for v in imps)}/{len(imps)}" if imps else "—",
            ]
        )
    header = ["dataset", "best member top-1", "best ensemble top-1", "mean ensemble top-1", "max Δ", "ensembles Δ>0"]
    parts.append(_table(header, [[*r[:5], _Raw(_esc(r[5]))] for r in rows]))
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


def _shown_ensembles(idx: _Rows, limit: int = 4) -> list[str]:
    """All ensembles when few; otherwise the best and the worst by mean ensemble top-1."""
    if len(idx.ensembles) <= limit:
        return idx.ensembles
    score = {e: np.nanmean([idx.e(e, ds, "ensemble_top1") for ds in idx.datasets]) for e in idx.ensembles}
    ranked = sorted(idx.ensembles, key=lambda e: _nan_low(float(score[e])), reverse=True)
    return ranked[: limit // 2] + ranked[-(limit - limit // 2) :]


def _accuracy(idx: _Rows) -> str:
    shown = _shown_ensembles(idx)
    members = {m: [idx.m(m, ds, "top1") for ds in idx.datasets] for m in idx.members}
    ensembles = {f"ens {e}": [idx.e(e, ds, "ensemble_top1") for ds in idx.datasets] for e in shown}
    parts = [_img(figures.accuracy_bars(idx.datasets, members, ensembles), "accuracy per dataset")]
    if len(shown) < len(idx.ensembles):
        parts.append(_note(f"Showing the 2 best and 2 worst of {len(idx.ensembles)} ensembles by mean top-1."))
    rows = [[m, *members[m]] for m in idx.members] + [[f"ens {e}", *ensembles[f"ens {e}"]] for e in shown]
    top5 = [[m, *[idx.m(m, ds, "top5") for ds in idx.datasets]] for m in idx.members]
    parts.append(_table(["top-1", *idx.datasets], rows))
    if any(math.isfinite(v) for r in top5 for v in r[1:]):
        parts.append(_table(["member top-5", *idx.datasets], top5))
    return "".join(parts)


def _params_of(ens: str, params: Mapping[str, float]) -> float:
    vals = [params.get(m) for m in ens.split("+")]
    return float(sum(v for v in vals if v)) if all(v for v in vals) else float("nan")


def _consensus_suffixes(idx: _Rows) -> list[str]:
    sufs = {m.split(":", 1)[1] for m in idx.ensemble_metrics if m.startswith("improvement:")}
    return ["", *sorted(sufs)]


def _diversity(idx: _Rows, params: Mapping[str, float]) -> str:
    if len(idx.ensembles) < 2:
        if not idx.ensembles:
            return _note("No ensemble rows in these results.")
        ens = idx.ensembles[0]
        rows: list[list[Any]] = []
        for key, name in DIVERSITY_METRICS:
            vals = [idx.e(ens, ds, key) for ds in idx.datasets]
            if any(math.isfinite(v) for v in vals):
                rows.append([name, *vals])
        return _note(
            "One ensemble: scatter plots need several (use --pool P... --size k to score every k-subset)."
        ) + _table(
            ["metric", *idx.datasets],
            [["improvement Δ", *[idx.e(ens, ds, "improvement") for ds in idx.datasets]], *rows],
        )
    parts: list[str] = []
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
            if panels:
                title = f"{ds}, consensus {suffix or 'average'}"
                img = _img(figures.diversity_scatter(panels, title=title), f"improvement vs diversity {title}")
                state = " open" if not parts else ""  # the first figure open, the others one click away
                parts.append(f"<details{state}><summary>{_esc(title)}</summary>{img}</details>")
    if not parts:
        return _note("No diversity metrics in these results.")
    return _note("One figure per dataset and consensus rule; click a title to open it.") + "".join(parts)


def _correlation(idx: _Rows) -> str:
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
        f"Over {len(idx.ensembles)} ensembles per dataset; Δ = ensemble top-1 − best member top-1 (averaging)."
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
            dataset = str(z["dataset"]) if "dataset" in z else label
        captions = [
            f"y={int(y)} ens={int(p)} {'✓' if int(y) == int(p) else '✗'}" for y, p in zip(labels, ens, strict=True)
        ]
        order = np.argsort(labels != ens, kind="stable")  # correct first, then wrong
        take = order[: min(8, len(order))]
        png = figures.saliency_grid(
            images[take], maps[:, take], members, [captions[i] for i in take], title=f"{dataset}: |saliency| per member"
        )
        parts.append(f"<h3>{_esc(dataset)}</h3>" + _img(png, f"saliency grid {dataset}"))
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


def _policy(verdict: Mapping[str, Any] | None) -> str:
    if verdict is None:
        return _note("No policy was checked (ovdiv certify RESULTS --policy P, or evaluate --policy P).")
    ok = bool(verdict.get("passed"))
    parts = [
        f'<p><span class="badge {"pass" if ok else "fail"}">{_esc(verdict.get("policy", "policy"))}: '
        f"{'PASS' if ok else 'FAIL'}</span></p>"
    ]
    rows = [
        [
            r.get("id", ""),
            _Raw(_esc(r.get("description", ""))),
            _Raw(
                f'<span class="{"pass" if r.get("passed") else "fail"}">{"PASS" if r.get("passed") else "FAIL"}</span>'
            ),
        ]
        for r in verdict.get("rules", [])
    ]
    parts.append(_table(["rule", "check", "verdict"], rows))
    failed_rules = {r.get("id") for r in verdict.get("rules", []) if not r.get("passed")}
    failing = [c for c in verdict.get("checks", []) if not c.get("passed") and c.get("rule") in failed_rules]
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
            + _table(["rule", "dataset", "ensemble / member", "value", "baseline", "observed", "note"], rows)
            + "</div>"
        )
    return "".join(parts)


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
        "accuracy": _accuracy(idx),
        "diversity": _diversity(idx, params),
        "correlation": _correlation(idx),
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
