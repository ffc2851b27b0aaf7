"""Evaluation results: tidy rows, run metadata, side data for the report, and their files.

A results directory written by ``ovdiv evaluate --out DIR`` (or :meth:`EvalResult.save`) holds:

``results.json``
    ``{"schema": "ovdiv-results/2", "metadata": {...}, "rows": [...], "extras": {...},
    "correlation": [...]}``. Files of schema ``ovdiv-results/1`` (no intervals, no correlation) still load.

    * ``metadata``: ``versions`` (ovdiv, numpy, torch, openvino, ...), ``created`` (ISO 8601 UTC),
      ``device``, ``precision`` (requested) and ``inference_precision`` (effective, per member in
      ``members``), ``backend``, ``members`` (one dict per member: ``name, path, sha256, weights_sha256,
      backend, device, precision, inference_precision, dynamic_quantization, runtime_version, num_classes,
      input_size, params, macs, architecture, card_found, card``), ``datasets`` (``[{spec, manifest}]``),
      ``ensembles`` (names scored), ``options`` (every option of the run), ``timings`` (seconds per
      stage), ``cache`` (hits and misses per unit kind), ``ci`` (``{"level": 0.95, "bootstrap": 2000,
      "method": "percentile" | "bca", "seed": int, "binomial": "clopper-pearson" | "wilson"}``;
      ``bootstrap`` 0 = bootstrap off).
    * ``rows``: ``{"ensemble": "a+b+c" | null, "member": "a" | null, "dataset": spec, "metric": name,
      "value": float | null}``. Member rows have ``ensemble = null``; ensemble rows ``member = null``.
      Non-finite values are written as ``null``. Metric names: see INTERFACES.md (``top1``, ``top5``,
      ``nll``, ``ece`` for members; ``ensemble_top1``, ``improvement``, ``disagreement``, ...,
      ``cka_mean`` for ensembles; a non-default consensus rule is a suffix ``ensemble_top1:majority``).
      Rows with a confidence interval also have ``ci_low``, ``ci_high`` (float), ``ci_method``
      (``clopper-pearson``, ``wilson``, ``bootstrap-percentile``, ``bootstrap-bca``) and ``ci_level``;
      ``improvement`` rows have ``p_value``: the exact one-sided McNemar p-value of "the ensemble's top-1
      beats its best member's" (which rows get what: :mod:`ovdiv.evaluate.scoring`). Rows without an
      interval omit these keys.
    * ``correlation``: the correlation study of each dataset, ``[{dataset, metric, n_ensembles, pearson,
      pearson_ci_low, pearson_ci_high, spearman, spearman_ci_low, spearman_ci_high, ci_method,
      ci_level}]`` (each diversity metric and ``mean_member_top1`` vs ``improvement`` across the scored
      ensembles; percentile-bootstrap intervals over image resamples; empty below 3 ensembles; see
      :func:`ovdiv.metrics.evidence.correlation_evidence`).
    * ``extras``: ``{"saliency": {spec: "extras/saliency_<slug>.npz"}, "cka": {spec: "extras/cka_<slug>.npz"}}``,
      paths relative to the results directory.

``results.csv``
    The same rows, columns ``ensemble, member, dataset, metric, value, ci_low, ci_high, ci_method,
    ci_level, p_value`` (empty cell = null).

``extras/saliency_<slug>.npz``
    Example attribution maps of one dataset: ``images`` uint8 ``(E, H, W, 3)`` (the inputs as fed,
    before resizing), ``maps`` float32 ``(M, E, h, w)`` (``|a|`` channel-max, each map divided by its
    max), ``labels`` int64 ``(E,)``, ``ensemble_pred`` int64 ``(E,)`` (the pool's prediction under the
    first consensus rule), ``member_pred`` int64 ``(M, E)`` (each member's prediction; absent in files
    written before it existed), ``indices`` int64 ``(E,)`` (sample indices in the dataset: samples the
    ensemble gets right and wrong, members agreeing and not, see ``engine.pick_examples``), ``members``
    ``(M,)`` str, ``dataset`` str, ``method`` str.

``extras/cka_<slug>.npz``
    Linear CKA between pool members: one float64 ``(M, M)`` matrix per layer key (``penultimate``,
    ``stage1``, ...; only layers every member has), ``members`` ``(M,)`` str, ``dataset`` str,
    ``n_samples`` int.

Files are written atomically; ``results.json`` is written last, so a folder without it holds no
result (an evaluation that fails writes nothing).
"""

from __future__ import annotations

import csv
import io
import json
import math
import os
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from ovdiv.atomic import atomic_path, write_json, write_text
from ovdiv.errors import DataError

__all__ = ["RESULTS_SCHEMA", "READABLE_SCHEMAS", "CSV_FIELDS", "CI_FIELDS", "EvalResult", "read_results_json", "slug"]

RESULTS_SCHEMA = "ovdiv-results/2"
READABLE_SCHEMAS = ("ovdiv-results/1", RESULTS_SCHEMA)
"""Schemas :meth:`EvalResult.from_dict` accepts (version 1 files have no intervals)."""
ROW_FIELDS = ("ensemble", "member", "dataset", "metric", "value")
CI_FIELDS = ("ci_low", "ci_high", "ci_method", "ci_level", "p_value")
"""Optional row keys: interval bounds, its method and level, and a test's p-value."""
CSV_FIELDS = (*ROW_FIELDS, *CI_FIELDS)


def slug(text: str) -> str:
    """A filesystem-safe version of a dataset spec (``lines1.6@demo`` -> ``lines1.6_demo``)."""
    return re.sub(r"[^A-Za-z0-9._-]+", "_", text).strip("_") or "dataset"


def _clean(value: Any) -> float | None:
    if value is None:
        return None
    v = float(value)
    return v if math.isfinite(v) else None


def _row_out(r: Mapping[str, Any]) -> dict[str, Any]:
    """A row for the files: the five fields, then the interval keys the row has (non-finite -> null)."""
    out = {k: r.get(k) for k in ROW_FIELDS}
    out["value"] = _clean(r.get("value"))
    for k in CI_FIELDS:
        if k in r:
            out[k] = r[k] if k == "ci_method" else _clean(r[k])
    return out


def read_results_json(path: str | os.PathLike[str]) -> tuple[dict[str, Any], Path]:
    """The parsed ``results.json`` of a results folder (or the file itself) and the file's path.

    Only the envelope is checked here (a JSON object with a ``rows`` list); :meth:`EvalResult.from_dict`
    checks the rest.

    Raises:
        DataError: the file is missing, not JSON, or has no ``rows`` list.
    """
    p = Path(path)
    if p.is_dir():
        p = p / "results.json"
    try:
        data = json.loads(p.read_text(encoding="utf-8"))
    except FileNotFoundError as exc:
        raise DataError(f"results file {p} does not exist", "run `ovdiv evaluate --out DIR` first") from exc
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise DataError(f"results file {p} is not valid JSON ({exc})") from exc
    if not isinstance(data, dict) or not isinstance(data.get("rows"), list):
        raise DataError(f"results file {p} has no 'rows' list", "is it a results.json from `ovdiv evaluate`?")
    return data, p


@dataclass
class EvalResult:
    """The outcome of :func:`ovdiv.evaluate`: tidy rows + run metadata + report side data.

    Attributes:
        rows: ``{ensemble, member, dataset, metric, value}`` dicts (see module docstring).
        metadata: Run metadata (see module docstring).
        extras: ``{"saliency": {spec: relpath}, "cka": {spec: relpath}}`` relative to the results folder.
        arrays: Side data not yet written, ``relpath -> {name: array}`` (written by :meth:`save`).
        complete: False for a ``--shard`` run whose other shards have not finished (then ``rows`` is empty).
        directory: The folder this result was saved to or loaded from, if any.
        correlation: The correlation study with bootstrap intervals (see module docstring).
    """

    rows: list[dict[str, Any]]
    metadata: dict[str, Any]
    extras: dict[str, dict[str, str]] = field(default_factory=dict)
    arrays: dict[str, dict[str, np.ndarray]] = field(default_factory=dict, repr=False)
    complete: bool = True
    directory: Path | None = None
    correlation: list[dict[str, Any]] = field(default_factory=list)

    # ---- queries ----------------------------------------------------------------------------
    @property
    def datasets(self) -> list[str]:
        """Dataset specs in row order."""
        return list(dict.fromkeys(r["dataset"] for r in self.rows))

    @property
    def members(self) -> list[str]:
        """Member names with member rows."""
        return list(dict.fromkeys(r["member"] for r in self.rows if r["member"] is not None))

    @property
    def ensembles(self) -> list[str]:
        """Ensemble names with ensemble rows."""
        return list(dict.fromkeys(r["ensemble"] for r in self.rows if r["ensemble"] is not None))

    def filter(
        self,
        *,
        dataset: str | None = None,
        metric: str | None = None,
        member: str | None = None,
        ensemble: str | None = None,
        kind: str | None = None,
    ) -> list[dict[str, Any]]:
        """Rows matching every given field; ``kind="member"|"ensemble"`` keeps one kind of row."""
        out = []
        for r in self.rows:
            if dataset is not None and r["dataset"] != dataset:
                continue
            if metric is not None and r["metric"] != metric:
                continue
            if member is not None and r["member"] != member:
                continue
            if ensemble is not None and r["ensemble"] != ensemble:
                continue
            if kind == "member" and r["member"] is None:
                continue
            if kind == "ensemble" and r["ensemble"] is None:
                continue
            out.append(r)
        return out

    def value(
        self, metric: str, *, dataset: str, member: str | None = None, ensemble: str | None = None
    ) -> float | None:
        """The value of one row (None when absent or null)."""
        for r in self.rows:
            if (r["metric"], r["dataset"], r["member"], r["ensemble"]) == (metric, dataset, member, ensemble):
                return r["value"]
        return None

    def best_ensembles(self, dataset: str, metric: str = "ensemble_top1", top: int = 10) -> list[dict[str, Any]]:
        """The ``top`` ensemble rows of ``metric`` on ``dataset``, best first (nulls last)."""
        rows = self.filter(dataset=dataset, metric=metric, kind="ensemble")
        return sorted(rows, key=lambda r: -math.inf if r["value"] is None else r["value"], reverse=True)[:top]

    def check(self, policy: Any) -> Any:
        """Check these results against a :class:`~ovdiv.evaluate.policy.Policy`; returns its verdict."""
        return policy.check(self)

    # ---- serialisation ------------------------------------------------------------------------
    def to_dict(self) -> dict[str, Any]:
        """The ``results.json`` document."""
        rows = [_row_out(r) for r in self.rows]
        corr = [{k: _clean(v) if isinstance(v, float) else v for k, v in c.items()} for c in self.correlation]
        return {
            "schema": RESULTS_SCHEMA,
            "complete": self.complete,
            "metadata": self.metadata,
            "rows": rows,
            "extras": self.extras,
            "correlation": corr,
        }

    def to_json(self, path: str | os.PathLike[str]) -> Path:
        """Atomically write ``results.json`` (and the side data in ``extras/`` next to it)."""
        p = Path(path)
        self._write_arrays(p.parent)
        write_json(p, self.to_dict())
        return p

    def to_csv(self, path: str | os.PathLike[str]) -> Path:
        """Atomically write the rows as CSV (columns :data:`CSV_FIELDS`; empty cell = null)."""
        buf = io.StringIO()
        w = csv.writer(buf, lineterminator="\n")
        w.writerow(CSV_FIELDS)
        for r in self.rows:
            o = _row_out(r)
            nums = ["" if o.get(k) is None else repr(o[k]) for k in ("value", "ci_low", "ci_high")]
            level, p = ("" if o.get(k) is None else repr(o[k]) for k in ("ci_level", "p_value"))
            names = [o["ensemble"] or "", o["member"] or "", o["dataset"], o["metric"]]
            w.writerow([*names, *nums, o.get("ci_method") or "", level, p])
        write_text(path, buf.getvalue())
        return Path(path)

    def save(self, out_dir: str | os.PathLike[str]) -> Path:
        """Write ``extras/``, ``results.csv`` and, last, ``results.json`` into ``out_dir``; return the folder."""
        out = Path(out_dir)
        out.mkdir(parents=True, exist_ok=True)
        self._write_arrays(out)
        self.to_csv(out / "results.csv")
        write_json(out / "results.json", self.to_dict())
        self.directory = out
        return out

    def _write_arrays(self, base: Path) -> None:
        for rel, arrays in self.arrays.items():
            with atomic_path(base / rel, suffix=".npz") as tmp, open(tmp, "wb") as fh:
                np.savez(fh, **arrays)  # type: ignore[arg-type]

    @classmethod
    def from_dict(
        cls, data: Mapping[str, Any], *, directory: Path | None = None, source: str = "results"
    ) -> EvalResult:
        """Rebuild a result from a ``results.json`` document."""
        if not isinstance(data, Mapping) or data.get("schema") not in READABLE_SCHEMAS:
            raise DataError(f"{source} is not an ovdiv results file (schema one of {list(READABLE_SCHEMAS)} expected)")
        rows = [
            {**{k: r.get(k) for k in ROW_FIELDS}, **{k: r[k] for k in CI_FIELDS if k in r}}
            for r in data.get("rows", [])
            if isinstance(r, Mapping)
        ]
        corr = data.get("correlation") or []
        return cls(
            correlation=[dict(c) for c in corr if isinstance(c, Mapping)],
            rows=rows,
            metadata=dict(data.get("metadata") or {}),
            extras=dict(data.get("extras") or {}),
            complete=bool(data.get("complete", True)),
            directory=directory,
        )

    @classmethod
    def load(cls, path: str | os.PathLike[str]) -> EvalResult:
        """Read a results folder (or its ``results.json``)."""
        data, p = read_results_json(path)
        return cls.from_dict(data, directory=p.parent, source=str(p))

    from_dir = load

    def load_extra(self, kind: str, dataset: str) -> dict[str, np.ndarray] | None:
        """Side data ``kind`` (``saliency``/``cka``) of ``dataset`` as arrays, or None."""
        rel = self.extras.get(kind, {}).get(dataset)
        if rel is None:
            return None
        if rel in self.arrays:
            return dict(self.arrays[rel])
        if self.directory is None:
            return None
        with np.load(self.directory / rel, allow_pickle=False) as z:
            return {k: z[k] for k in z.files}

    def summary(self, *, top: int = 10) -> dict[str, tuple[list[str], list[list[Any]]]]:
        """Per dataset a small table ``(header, rows)``: members, then the ``top`` ensembles by ``ensemble_top1``.

        Columns: name, top-1, Δ (ensemble improvement), disagreement, attribution diversity, CKA mean;
        cells are floats or None (absent).
        """
        header = ["member / ensemble", "top-1", "Δ", "disagreement", "D_att", "CKA"]
        cols = ["improvement", "disagreement", "attribution_diversity", "cka_mean"]
        out: dict[str, tuple[list[str], list[list[Any]]]] = {}
        for ds in self.datasets:
            body: list[list[Any]] = []
            for m in self.members:
                body.append([m, self.value("top1", dataset=ds, member=m), None, None, None, None])
            for r in self.best_ensembles(ds, top=top):
                e = r["ensemble"]
                body.append([e, r["value"], *[self.value(c, dataset=ds, ensemble=e) for c in cols]])
            out[ds] = (header, body)
        return out
