"""``ovdiv features``: the interpretable-diversity study of sibling members (Whitaker & Whitley).

:func:`run_features` loads the members, visualises the same neurons of one layer in each
(:mod:`ovdiv.attribution.features`), compares siblings neuron by neuron with image-hash Hamming
distances (:func:`ovdiv.metrics.sibling_hash_distances`, their Tables III/IV) and writes, atomically,
into ``OUT``:

* ``<member>/<layer>_ch<k>.png`` — one image per member and channel;
* ``sheet.png`` — contact sheet, one row per neuron, one column per member;
* ``features.json`` — settings, evidence (each member's artifact SHA-256 and weights SHA-256, backend,
  gradient path), the objective trace summary, per-pair hash distances per channel with mean ± standard
  error, and (with ``saliency_results``) the saliency-map distances of their Table V;
* ``report.html`` — self-contained page: the neuron grid and the tables (:func:`render_features_report`).

Table V (saliency-map distances over a dataset) is not recomputed here: it is read from an
``ovdiv evaluate`` run over the same members with ``--attribution smoothgrad --size 2`` (every pair is a
2-member subset ``a+b``; rows ``attribution_rmse`` and ``hash_{ahash,phash,dhash,whash}``).
"""

from __future__ import annotations

import io
import json
import math
import os
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np

from ovdiv.atomic import write_bytes, write_json, write_text
from ovdiv.errors import ConfigError, MemberError
from ovdiv.metrics.feature_hashes import FEATURE_HASH_METHODS, HASH_BITS, sibling_hash_distances
from ovdiv.report.html import _CSS, _esc, _img, _note, _num, _Raw, _table
from ovdiv.types import ProgressCallback
from ovdiv.versions import __version__, tool_versions

__all__ = ["FeaturesRun", "member_layers", "render_features_report", "run_features", "saliency_table"]

SALIENCY_METRICS = ("attribution_rmse", "hash_ahash", "hash_phash", "hash_dhash", "hash_whash")


@dataclass
class FeaturesRun:
    """What :func:`run_features` wrote.

    Attributes:
        out_dir: The output folder.
        json_path: ``features.json``.
        report_path: ``report.html``.
        sheet_path: ``sheet.png``.
        summary: The JSON content.
    """

    out_dir: Path
    json_path: Path
    report_path: Path
    sheet_path: Path
    summary: dict[str, Any]


def _png(img: np.ndarray) -> bytes:
    from PIL import Image

    buf = io.BytesIO()
    Image.fromarray(np.ascontiguousarray(img), mode="RGB").save(buf, format="PNG")
    return buf.getvalue()


def _sheet(images: np.ndarray, pad: int = 2) -> np.ndarray:
    """``(M, K, S, S, 3)`` -> one ``(K rows, M columns)`` grid image with white gutters."""
    m, k, s = images.shape[0], images.shape[1], images.shape[2]
    out = np.full((k * (s + pad) + pad, m * (s + pad) + pad, 3), 255, np.uint8)
    for i in range(m):
        for j in range(k):
            y, x = pad + j * (s + pad), pad + i * (s + pad)
            out[y : y + s, x : x + s] = images[i, j]
    return out


def _pick_channels(spec: Sequence[int] | str | None, random_k: int | None, n: int, seed: int) -> list[int]:
    if random_k is not None:
        if spec not in (None, "all"):
            raise ConfigError("pass either --channels or --random, not both")
        if not 1 <= random_k <= n:
            raise ConfigError(f"--random {random_k}: the layer has {n} channels", f"pick 1..{n}")
        return sorted(int(c) for c in np.random.default_rng(seed).choice(n, size=random_k, replace=False))
    if spec is None or spec == "all":
        return list(range(n))
    if isinstance(spec, str):
        raise ConfigError(f"--channels {spec!r}: expected 'all' or comma-separated indices")
    chans = [int(c) for c in spec]
    bad = [c for c in chans if not 0 <= c < n]
    if bad or len(set(chans)) != len(chans):
        raise ConfigError(f"--channels: invalid or repeated channel(s) {bad or chans} for a layer of {n} channels")
    return chans


def member_layers(path: str | os.PathLike[str], *, gradient: str = "auto", device: str = "CPU") -> list[dict[str, Any]]:
    """``ovdiv features MEMBER --list-layers``: layer names, channel counts and shapes of one member."""
    from ovdiv.attribution.features import list_layers
    from ovdiv.runtime import load_member

    member = load_member(Path(path), device=device)
    try:
        return [{"name": li.name, "channels": li.channels, "shape": list(li.shape)} for li in list_layers(member)]
    finally:
        member.close()


def saliency_table(results: str | os.PathLike[str], names: Sequence[str]) -> dict[str, Any]:
    """Table V: per member pair and dataset, saliency RMSE and the four hash distances from an evaluate run.

    Args:
        results: ``ovdiv evaluate`` results folder (or ``results.json``) over the same members, run with
            ``--size 2`` so that every pair ``a+b`` is a scored subset.
        names: Member names.

    Returns:
        ``{"attribution": method, "rows": [{"pair", "dataset", metric: value...}], "missing": [...]}``.

    Raises:
        ConfigError: the run holds no attribution rows for any pair of these members.
    """
    from ovdiv.evaluate.results import read_results_json

    data, path = read_results_json(results)
    vals: dict[tuple[str, str], dict[str, float]] = {}
    for r in data.get("rows", []):
        if r.get("member") is None and r.get("ensemble") and r.get("metric") in SALIENCY_METRICS:
            vals.setdefault((str(r["ensemble"]), str(r["dataset"])), {})[r["metric"]] = (
                float("nan") if r.get("value") is None else float(r["value"])
            )
    rows, missing = [], []
    for i, a in enumerate(names):
        for b in names[i + 1 :]:
            found = False
            for (ens, ds), mets in vals.items():
                if set(ens.split("+")) == {a, b} and ens.count("+") == 1:
                    rows.append({"pair": f"{a} vs {b}", "dataset": ds, **mets})
                    found = True
            if not found:
                missing.append(f"{a}+{b}")
    if not rows:
        raise ConfigError(
            f"{path}: no saliency distances for any pair of {list(names)}",
            "run `ovdiv evaluate MEMBERS... --attribution smoothgrad --size 2` over the same members",
        )
    options = data.get("metadata", {}).get("options", {})
    return {"results": str(path), "attribution": options.get("attribution"), "rows": rows, "missing": missing}


def run_features(
    members: Sequence[str | os.PathLike[str]],
    *,
    layer: str,
    out_dir: str | os.PathLike[str],
    channels: Sequence[int] | str | None = None,
    random_k: int | None = None,
    config: Any = None,
    gradient: str = "auto",
    device: str = "CPU",
    saliency_results: str | os.PathLike[str] | None = None,
    progress: ProgressCallback | None = None,
) -> FeaturesRun:
    """Visualise the same neurons of ``layer`` in every member; hash distances; images, JSON and report.

    Args:
        members: Member artifacts (``.xml``, ``.onnx``, torch checkpoints); siblings share a layer layout.
        layer: ``stage<k>``, ``penultimate``, a graph node name or a torch module name.
        out_dir: Output folder (created).
        channels: Channel indices, ``"all"`` or None (= all).
        random_k: Instead, ``K`` channels drawn without replacement (seeded by ``config.seed``).
        config: :class:`~ovdiv.attribution.features.FeatureVisConfig` (defaults: the study's settings).
        gradient: ``auto`` (torch autograd for checkpoints, VJP graph for IR/ONNX), ``vjp`` or ``autograd``.
        device: Device of the members / VJP models.
        saliency_results: An ``ovdiv evaluate --size 2`` results folder to tabulate Table V from.
        progress: Progress callback.

    Raises:
        MemberError: a member lacks the layer, or siblings' layers differ in channel count.
        ConfigError: invalid channels or settings.
    """
    from ovdiv.attribution.features import FeatureVisConfig, layer_objective, objective_trend, visualize_channels
    from ovdiv.runtime import check_members, load_member

    cfg = config or FeatureVisConfig()
    if gradient not in ("auto", "vjp", "autograd"):
        raise ConfigError(f"unknown gradient path {gradient!r}", "choose auto, vjp or autograd")
    out = Path(out_dir)
    loaded = [load_member(Path(p), device=device) for p in members]
    try:
        check_members(loaded)
        objectives = [layer_objective(m, layer, gradient=gradient) for m in loaded]  # type: ignore[arg-type]
        shapes = {m.name: tuple(o.shape) for m, o in zip(loaded, objectives, strict=True)}
        if len({s[0] for s in shapes.values()}) > 1:
            raise MemberError(
                f"layer {layer!r} has different channel counts in the members: {shapes}",
                "compare siblings that share a layer layout (a parent and its snapshots / pruned children)",
            )
        chans = _pick_channels(channels, random_k, objectives[0].channels, cfg.seed)
        results = []
        for i, (m, obj) in enumerate(zip(loaded, objectives, strict=True)):
            results.append(
                visualize_channels(
                    obj,
                    chans,
                    cfg,
                    mean=m.card.mean,
                    std=m.card.std,
                    input_size=m.input_size,
                    progress=progress,
                    task=f"features {m.name} ({i + 1}/{len(loaded)})",
                )
            )
        names = [m.name for m in loaded]
        evidence = [
            {
                **{k: m.info()[k] for k in ("name", "path", "sha256", "weights_sha256", "backend", "runtime_version")},
                **r.info,
                "seconds": r.seconds,
                "channels_per_second": len(chans) / r.seconds if r.seconds > 0 else None,
                "objective_first": r.objective[0].tolist(),
                "objective_last": r.objective[-1].tolist(),
                "objective_trend": objective_trend(r.objective).tolist(),
            }
            for m, r in zip(loaded, results, strict=True)
        ]
    finally:
        for m in loaded:
            m.close()
    images = np.stack([r.images for r in results])  # (M, K, S, S, 3)
    files: dict[str, list[str]] = {}
    for name, r in zip(names, results, strict=True):
        files[name] = []
        for c, img in zip(chans, r.images, strict=True):
            rel = f"{name}/{layer}_ch{c}.png"
            write_bytes(out / rel, _png(img))
            files[name].append(rel)
    sheet = out / "sheet.png"
    write_bytes(sheet, _png(_sheet(images)))
    hashes: dict[str, Any] = {}
    if len(names) > 1:
        dist = sibling_hash_distances(images)
        for method, d in dist.items():
            hashes[method] = {
                "bits": d["bits"],
                "pairs": [
                    {
                        "a": names[i],
                        "b": names[j],
                        "mean": float(d["mean"][i, j]),
                        "sem": None if math.isnan(d["sem"][i, j]) else float(d["sem"][i, j]),
                        "per_channel": d["per_channel"][i, j].tolist(),
                    }
                    for i in range(len(names))
                    for j in range(i + 1, len(names))
                ],
            }
    summary: dict[str, Any] = {
        "schema": "ovdiv-features/1",
        "created": datetime.now(UTC).isoformat(timespec="seconds"),
        "ovdiv": __version__,
        "versions": tool_versions(),
        "layer": layer,
        "channels": chans,
        "settings": {**cfg.to_dict(), "gradient": gradient, "device": device},
        "members": evidence,
        "files": files,
        "sheet": sheet.name,
        "hash_distances": hashes,
        "saliency": saliency_table(saliency_results, names) if saliency_results is not None else None,
    }
    json_path = out / "features.json"
    write_json(json_path, summary)
    report = out / "report.html"
    write_text(report, render_features_report(summary, out))
    return FeaturesRun(out, json_path, report, sheet, summary)


# ---------------------------------------------------------------------------------------------- report
def features_section(summary: dict[str, Any], base: Path) -> str:
    """HTML of the study: settings, neuron grid (row = neuron, column = member), Tables III/IV and V."""
    names = [m["name"] for m in summary["members"]]
    layer = summary["layer"]
    parts = [
        _note(
            f"layer {layer}; {len(summary['channels'])} channel(s); {summary['settings']['steps']} Adam steps, "
            f"lr {summary['settings']['lr']}, seed {summary['settings']['seed']}; Fourier parameterisation with "
            "colour decorrelation (Lucid/Lucent); random jitter/scale/rotate each step."
        )
    ]
    ev_rows = [
        [
            m["name"],
            m["backend"],
            m["gradient"],
            _Raw(f'<span class="mono">{_esc(str(m["sha256"])[:16])}…</span>'),
            float(np.mean(m["objective_first"])),
            float(np.mean(m["objective_last"])),
            m["channels_per_second"],
        ]
        for m in summary["members"]
    ]
    parts.append("<h3>Members</h3>")
    parts.append(
        _table(
            ["member", "backend", "gradient", "sha256", "objective (step 1)", "objective (last)", "channels/s"],
            ev_rows,
            left=4,
        )
    )
    parts.append("<h3>Neuron grid (one row per neuron, one column per member)</h3>")
    header = ["neuron", *names]
    grid_rows = []
    for k, c in enumerate(summary["channels"]):
        cells: list[Any] = [f"{layer}:{c}"]
        for name in names:
            p = base / summary["files"][name][k]
            cells.append(_Raw(_img(p.read_bytes(), f"{name} {layer}:{c}") if p.is_file() else "missing"))
        grid_rows.append(cells)
    parts.append(f'<div class="scroll">{_table(header, grid_rows)}</div>')
    hashes = summary.get("hash_distances") or {}
    if hashes:
        parts.append("<h3>Image-hash Hamming distances of the visualisations (mean ± standard error over neurons)</h3>")
        pairs = [(p["a"], p["b"]) for p in hashes[FEATURE_HASH_METHODS[0]]["pairs"]]
        rows = []
        for n, (a, b) in enumerate(pairs):
            row: list[Any] = [f"{a} vs {b}"]
            for method in FEATURE_HASH_METHODS:
                p = hashes[method]["pairs"][n]
                sem = "—" if p["sem"] is None else f"{p['sem']:.2f}"
                row.append(_Raw(f"{p['mean']:.2f} ± {sem}"))
            rows.append(row)
        head = ["pair", *(f"{m} (/{HASH_BITS[m]} bit)" for m in FEATURE_HASH_METHODS)]
        parts.append(_table(head, rows))
    else:
        parts.append(_note("one member: no sibling distances (pass two or more members)."))
    sal = summary.get("saliency")
    parts.append("<h3>Saliency-map distances over the dataset (Table V)</h3>")
    if sal:
        parts.append(_note(f"from {sal['results']} (attribution: {sal.get('attribution')})"))
        srows = [[r["pair"], r["dataset"], *(r.get(k, float("nan")) for k in SALIENCY_METRICS)] for r in sal["rows"]]
        parts.append(_table(["pair", "dataset", "RMSE", "ahash", "phash", "dhash", "whash"], srows, left=2))
        if sal.get("missing"):
            parts.append(_note(f"pairs without rows in that run: {', '.join(sal['missing'])}"))
    else:
        parts.append(
            _note(
                "not computed: run `ovdiv evaluate MEMBERS... --attribution smoothgrad --size 2 --out R`, then "
                "`ovdiv features ... --saliency-results R`."
            )
        )
    return "".join(parts)


def render_features_report(summary: dict[str, Any], base: Path) -> str:
    """The self-contained ``report.html`` of a features run (images inlined)."""
    body = features_section(summary, base)
    return (
        "<!DOCTYPE html><html lang='en'><head><meta charset='utf-8'>"
        f"<title>ovdiv features</title><style>{_CSS} td img{{width:96px;margin:0}}</style></head><body>"
        f"<header><h1>ovdiv features: feature visualisations of sibling members</h1>"
        f"<p>ovdiv {_esc(__version__)} · {_esc(summary.get('created', ''))}</p></header>"
        f'<main><section id="features"><h2>Interpretable diversity</h2>{body}</section>'
        f'<section id="settings"><h2>Settings</h2><pre>{_esc(json.dumps(summary["settings"], indent=1))}</pre>'
        f"{_note('numbers: ' + _num(len(summary['channels']), 0) + ' neurons')}</section></main></body></html>"
    )
