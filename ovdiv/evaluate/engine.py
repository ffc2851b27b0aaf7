"""The evaluation engine behind ``ovdiv evaluate`` and :func:`ovdiv.evaluate`.

Work is split into units that are cached independently (see :mod:`ovdiv.evaluate.cache`):

1. **logits** — (member, dataset): the dataset is streamed from the prepared-data cache in chunks of
   ``chunk_size`` images; each chunk's logits ``(B, C)`` float32 is one cache file. An interrupted run
   resumes after the last whole chunk; ``--shard i/n`` computes chunks ``c % n == i`` only.
2. **features** — (member, dataset, n): penultimate and pooled stage features of the first
   ``cka_samples`` images, for CKA.
3. **attribution** — (pool, dataset, attribution setting): per chunk of the first
   ``attribution_samples`` images, every member's map for the target class (pool ensemble prediction,
   member prediction or label) is computed batch by batch, folded into the pool's pairwise attribution
   statistics (:class:`ovdiv.metrics.PoolStats`) and dropped; a few maps are kept for the report.

Scoring (:mod:`ovdiv.evaluate.scoring`) then runs on cached data only: member rows, and ensemble rows
for one ensemble or every k-subset of the pool, without running any model.
"""

from __future__ import annotations

import contextlib
import importlib
import logging
import os
import threading
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

from ovdiv.errors import ConfigError, MemberError
from ovdiv.evaluate.cache import EvalCache
from ovdiv.evaluate.ensemble import Ensemble
from ovdiv.evaluate.options import EvalOptions
from ovdiv.evaluate.results import EvalResult
from ovdiv.runtime import Member
from ovdiv.types import AttributionMethod, AttributionTarget, Progress, ProgressCallback, no_progress
from ovdiv.versions import tool_versions

__all__ = ["evaluate", "Evaluator"]

log = logging.getLogger("ovdiv.evaluate")

Chunk = tuple[int, int]
AttributionBatch = tuple[int, int, np.ndarray, np.ndarray, np.ndarray]
"""``(start, size, labels (B,), pool logits (M, B, C), targets (M, B))`` of one attribution batch."""


def fold_attribution_chunk(
    names: Sequence[str],
    num_classes: int,
    options: EvalOptions,
    start: int,
    batches: Sequence[AttributionBatch],
    chunk_maps: Iterable[Sequence[np.ndarray]],
    ex_sel: npt.NDArray[np.int64],
    on_images: Callable[[int], None] | None = None,
) -> tuple[Any, list[np.ndarray]]:
    """Fold one attribution chunk: every batch's member maps into fresh pairwise statistics, in batch order.

    Args:
        names: Pool member names.
        num_classes: Classes.
        options: Run options (attribution norm).
        start: First image of the chunk.
        batches: The chunk's :data:`AttributionBatch` es.
        chunk_maps: Per batch, every member's maps ``(B, 3, h, w)``.
        ex_sel: Chunk-local indices of the report's example maps to keep.
        on_images: Called with each batch's size once it is folded (progress).

    Returns:
        ``(statistics, kept example maps per batch)``: the same bytes wherever it runs (locally, or in a
        Ray task of the Ray executor).
    """
    from ovdiv.evaluate.scoring import new_attribution_stats, postprocess_maps

    stats = new_attribution_stats(names, num_classes, options)
    keep: list[np.ndarray] = []
    for (b, n_b, labels, lg, _targets), member_maps in zip(batches, chunk_maps, strict=True):
        check_finite_maps(names, member_maps, b)
        maps = _stack_maps(member_maps)
        stats.update(lg, labels, maps)
        local = ex_sel[(ex_sel >= b - start) & (ex_sel < b - start + n_b)] - (b - start)
        if local.size:
            keep.append(postprocess_maps(maps[:, local]))
        del maps
        if on_images is not None:
            on_images(n_b)
    return stats, keep


def check_finite_maps(names: Sequence[str], member_maps: Sequence[np.ndarray], start: int) -> None:
    """Raise one :class:`MemberError` naming every member whose attribution maps hold NaN/inf.

    A non-finite map (e.g. a 0/0 in a member's gradient graph) would otherwise flow into the pairwise
    attribution statistics and D_att; like non-finite logits (:meth:`Evaluator.check_finite`) it is an error.
    """
    bad = []
    for name, m in zip(names, member_maps, strict=True):
        a = np.asarray(m)
        finite = np.isfinite(a).reshape(a.shape[0], -1).all(axis=1) if a.ndim else np.isfinite(a).reshape(1)
        if not finite.all():
            bad.append(f"{name} ({int((~finite).sum())} of {finite.size} images from image {start})")
    if bad:
        raise MemberError(
            "non-finite (NaN/inf) gradient: attribution maps of member(s) " + "; ".join(bad),
            "its attributions cannot be trusted; run with --attribution none, or report the model",
        )


def make_explainer(method: AttributionMethod, member: Member, batch_size: int) -> Any:
    """The attribution object of ``method`` for one member (its VJP graph compiles once, on first use)."""
    attr: Any = importlib.import_module("ovdiv.attribution")
    cls = {
        AttributionMethod.SALIENCY: attr.Saliency,
        AttributionMethod.IG: attr.IntegratedGradients,
        AttributionMethod.SMOOTHGRAD: attr.SmoothGrad,
        AttributionMethod.INPUT_X_GRADIENT: attr.InputXGradient,
    }[method]
    return cls(member, batch_size=batch_size)


def attribute_batch(explainer: Any, images: np.ndarray, target: np.ndarray, params: dict[str, Any]) -> np.ndarray:
    """One member's attribution maps ``(B, 3, h, w)`` of one batch: the same call locally and in a Ray actor."""
    return np.asarray(explainer.attribute(images, target=target, **params))


def _as_ensemble(
    ens_or_pool: Ensemble | Sequence[Member] | Sequence[str | os.PathLike[str]],
    *,
    device: str,
    precision: str,
    backend: str | None,
) -> Ensemble:
    if isinstance(ens_or_pool, Ensemble):
        return ens_or_pool
    if isinstance(ens_or_pool, str | os.PathLike):
        ens_or_pool = [ens_or_pool]
    items = list(ens_or_pool)
    if items and all(isinstance(x, Member) for x in items):
        return Ensemble(items)  # type: ignore[arg-type]
    if any(isinstance(x, Member) for x in items):
        raise ConfigError("mix of loaded members and paths", "pass either Member objects or paths")
    return Ensemble.from_paths(items, device=device, precision=precision, backend=backend)  # type: ignore[arg-type]


def _stack_maps(maps: Sequence[np.ndarray]) -> npt.NDArray[np.float32]:
    """Stack per-member maps ``(B, 3, h_i, w_i)`` into ``(M, B, 3, H, W)``.

    Members with different input sizes give maps of different sizes; those are resized (bilinear,
    per channel) to the largest ``(H, W)`` so pairwise statistics compare the same image positions.
    """
    h = max(int(a.shape[-2]) for a in maps)
    w = max(int(a.shape[-1]) for a in maps)
    if all(a.shape[-2:] == (h, w) for a in maps):
        return np.stack(maps).astype(np.float32, copy=False)
    from PIL import Image

    out = np.empty((len(maps), maps[0].shape[0], maps[0].shape[1], h, w), dtype=np.float32)
    for i, a in enumerate(maps):
        if a.shape[-2:] == (h, w):
            out[i] = a
            continue
        for b in range(a.shape[0]):
            for c in range(a.shape[1]):
                img = Image.fromarray(np.ascontiguousarray(a[b, c], dtype=np.float32), mode="F")
                out[i, b, c] = np.asarray(img.resize((w, h), Image.Resampling.BILINEAR))
    return out


def pick_examples(member_pred: np.ndarray, labels: np.ndarray, ens_pred: np.ndarray, n: int) -> npt.NDArray[np.int64]:
    """Indices of ``n`` report examples that show the ensemble right and wrong, members agreeing and not.

    Samples fall in four cells: ensemble correct with unanimous members, wrong with members that disagree,
    correct with members that disagree, wrong with unanimous members. The cells are taken round-robin (each
    in index order; correct and wrong alternate), so every non-empty cell is represented and an empty
    cell's share goes to the others. The saliency grids of the report need both kinds: sorting the first
    images by correctness would hide every sample the ensemble gets wrong.

    Args:
        member_pred: ``(M, B)`` member top-1 predictions.
        labels: ``(B,)`` true labels.
        ens_pred: ``(B,)`` ensemble predictions.
        n: Number of examples wanted.

    Returns:
        ``min(n, B)`` sorted indices into ``[0, B)``.
    """
    b = len(labels)
    if n >= b:
        return np.arange(b, dtype=np.int64)
    wrong = ens_pred != labels
    split = (member_pred != member_pred[:1]).any(axis=0)
    cells = [np.flatnonzero(c) for c in (~wrong & ~split, wrong & split, ~wrong & split, wrong & ~split)]
    taken: list[int] = []
    for rank in range(b):
        taken += [int(c[rank]) for c in cells if rank < len(c)]
        if len(taken) >= n:
            break
    return np.sort(np.asarray(taken[:n], dtype=np.int64))


class _ChunkRouter:
    """Array-like target of :meth:`Member.submit_batches` routing global rows to per-chunk buffers.

    ``router[start:stop] = logits`` (from inference callbacks, possibly on several threads) copies into
    the buffer of the chunk holding ``[start, stop)`` and counts filled rows; :meth:`complete` lists the
    chunks whose rows have all arrived.
    """

    def __init__(self, chunks: Sequence[Chunk], num_classes: int) -> None:
        self.buffers = {c: np.empty((c[1] - c[0], num_classes), dtype=np.float32) for c in chunks}
        self._filled = dict.fromkeys(chunks, 0)
        self._starts = sorted(chunks)
        self._lock = threading.Lock()

    def __setitem__(self, key: slice, value: np.ndarray) -> None:
        start = int(key.start)
        n = value.shape[0]
        for c in self._starts:
            if c[0] <= start < c[1]:
                if start + n > c[1]:
                    raise ValueError(f"batch rows {start}:{start + n} cross chunk {c}")
                self.buffers[c][start - c[0] : start - c[0] + n] = value
                with self._lock:
                    self._filled[c] += n
                return
        raise KeyError(f"row {start} is in no pending chunk")

    def complete(self) -> list[Chunk]:
        """Chunks whose every row has been written."""
        with self._lock:
            return [c for c, f in self._filled.items() if f == c[1] - c[0] and c in self.buffers]


class Evaluator:
    """One evaluation run (see module docstring); :func:`evaluate` is the public entry point."""

    def __init__(
        self,
        ensemble: Ensemble,
        options: EvalOptions,
        *,
        cache: EvalCache,
        data_root: str | os.PathLike[str] | None,
        data_cache_dir: str | os.PathLike[str] | None,
        progress: ProgressCallback,
    ) -> None:
        self.ens = ensemble
        self.opt = options
        self.cache = cache
        self.data_root = data_root
        self.data_cache_dir = data_cache_dir
        self.progress = progress
        self.timings: dict[str, float] = {}
        self._explainer_cache: list[Any] | None = None

    # ---- executor ---------------------------------------------------------------------------
    @contextlib.contextmanager
    def session(self) -> Iterator[None]:
        """Resources held while units run (the local engine holds none; the Ray executor its cluster and actors)."""
        yield

    def executor_evidence(self) -> dict[str, Any]:
        """``metadata["executor"]``: where the units ran."""
        return {"kind": "local"}

    # ---- helpers ----------------------------------------------------------------------------
    def _tick(self, stage: str, t0: float) -> None:
        self.timings[stage] = round(self.timings.get(stage, 0.0) + time.perf_counter() - t0, 4)

    def chunks(self, n: int, stop: int | None = None) -> list[Chunk]:
        """The chunk grid ``[(start, stop), ...]`` over ``n`` samples (optionally truncated at ``stop``)."""
        cs = self.opt.chunk_size
        out = [(s, min(s + cs, n)) for s in range(0, n, cs)]
        if stop is not None:
            out = [(s, min(e, stop)) for s, e in out if s < stop]
        return out

    def mine(self, index: int) -> bool:
        """Whether chunk ``index`` belongs to this shard."""
        return self.opt.shard is None or index % self.opt.shard[1] == self.opt.shard[0]

    def _member_key(self, m: Member, ds: Any) -> dict[str, Any]:
        return {
            "member": m.content_hash,
            "dataset": ds.manifest["manifest_hash"],
            "precision": str(m.precision),
            "device": m.device,
            "backend": str(m.backend),
            "chunk_size": self.opt.chunk_size,
        }

    # ---- logits -----------------------------------------------------------------------------
    def logits_dir(self, m: Member, ds: Any) -> Path:
        """Cache folder of (member, dataset) logits."""
        desc = {**self._member_key(m, ds), "kind": "logits", "name": m.name, "spec": ds.manifest.get("spec")}
        return self.cache.unit_dir("logits", self.cache.key(**self._member_key(m, ds)), desc)

    def run_logits(self, ds: Any, spec: str) -> None:
        """Compute the missing logits chunks of this shard for every (member, dataset) unit.

        Each member's missing chunks stream through one :meth:`Member.submit_batches` call, and the next
        member is submitted while the previous one's last requests still run, so the request queues never
        drain at chunk or member boundaries. A chunk is written to the cache as soon as its last batch
        has landed (and, on interruption, after the requests in flight have landed), so an interrupted
        run loses nothing that was complete.
        """
        pending: list[tuple[Any, Any]] = []  # (handle, flush) per submitted member
        submit_error: BaseException | None = None
        try:
            for m in self.ens:
                job = self._logits_job(m, ds, spec)
                if job is None:
                    continue
                batches, router, flush = job
                try:
                    pending.append((m.submit_batches(batches, router), flush))
                except BaseException:
                    flush()  # submit_batches waited for its requests: keep this member's complete chunks
                    raise
        except BaseException as exc:
            submit_error = exc
        errors: list[BaseException] = []
        for handle, flush in pending:  # wait for everything in flight, then keep every complete chunk
            try:
                handle.wait()
            except BaseException as exc:
                errors.append(exc)
            flush()
        if submit_error is not None:
            raise submit_error
        if errors:
            raise errors[0]

    def _logits_job(self, m: Member, ds: Any, spec: str) -> tuple[Iterator[tuple[int, np.ndarray]], Any, Any] | None:
        """``(batches, router, flush)`` for one member's missing chunks, or None when all are cached."""
        d = self.logits_dir(m, ds)
        grid = self.chunks(len(ds))
        todo = [c for i, c in enumerate(grid) if self.mine(i)]
        task = f"logits {m.name} @ {spec}"
        total = sum(e - s for s, e in todo)
        missing = []
        for s, e in todo:
            hit = (d / self.cache.chunk_name(s, e, "npy")).is_file()
            self.cache.count("logits", hit)
            if not hit:
                missing.append((s, e))
        done = total - sum(e - s for s, e in missing)
        self.progress(Progress(task, done, total, "cached" if not missing else ""))
        if not missing:
            return None
        router = _ChunkRouter(missing, m.num_classes)
        saved: set[Chunk] = set()

        def flush() -> None:
            nonlocal done
            for c in router.complete():
                if c not in saved:
                    self.cache.save_npy(d / self.cache.chunk_name(c[0], c[1], "npy"), router.buffers[c])
                    saved.add(c)
                    del router.buffers[c]
                    done += c[1] - c[0]
                    self.progress(Progress(task, done, total))

        def batches() -> Iterator[tuple[int, np.ndarray]]:
            for s, e in missing:
                for b, imgs, _ in ds.batches(self.opt.batch_size, start=s, stop=e):
                    flush()
                    yield b, np.asarray(imgs)

        return batches(), router, flush

    def logits_complete(self, m: Member, ds: Any) -> bool:
        """Every logits chunk of (member, dataset) is cached."""
        d = self.logits_dir(m, ds)
        return all((d / self.cache.chunk_name(s, e, "npy")).is_file() for s, e in self.chunks(len(ds)))

    def load_logits(self, m: Member, ds: Any, stop: int | None = None) -> npt.NDArray[np.float32] | None:
        """All cached logits ``(N, C)`` (or the first ``stop`` rows) of one unit; None if a chunk is missing."""
        d = self.logits_dir(m, ds)
        parts = []
        for s, e in self.chunks(len(ds), stop):
            full_e = min(s + self.opt.chunk_size, len(ds))
            arr = self.cache.load_npy(d / self.cache.chunk_name(s, full_e, "npy"))
            if arr is None:
                return None
            parts.append(arr[: e - s])
        if not parts:
            return np.empty((0, m.num_classes), np.float32)
        return np.concatenate(parts)

    def chunk_logits(self, ds: Any, s: int, e: int) -> npt.NDArray[np.float32]:
        """Pool logits ``(M, e - s, C)`` of one grid chunk (must be cached)."""
        out = []
        full_e = min(s + self.opt.chunk_size, len(ds))
        for m in self.ens:
            arr = self.cache.load_npy(self.logits_dir(m, ds) / self.cache.chunk_name(s, full_e, "npy"))
            if arr is None:
                raise MemberError(f"member {m.name}: logits of chunk {s}:{full_e} vanished from the cache")
            out.append(arr[: e - s])
        return np.stack(out)

    def check_finite(self, specs: Sequence[str], prepared: Sequence[Any]) -> None:
        """Raise one :class:`MemberError` naming every member with non-finite logits in the cached chunks."""
        report: list[str] = []
        for spec, ds in zip(specs, prepared, strict=True):
            bad = np.zeros(len(self.ens), dtype=np.int64)
            seen = 0
            for s, e in self.chunks(len(ds)):  # chunk by chunk: memory stays flat in N
                paths = [self.logits_dir(m, ds) / self.cache.chunk_name(s, e, "npy") for m in self.ens]
                if not all(p.is_file() for p in paths):
                    continue  # another shard's chunk, not computed yet
                bad += (~np.isfinite(self.chunk_logits(ds, s, e))).any(axis=2).sum(axis=1)
                seen += e - s
            report += [f"{m.name} ({b} of {seen} images on {spec})" for m, b in zip(self.ens, bad, strict=True) if b]
        if report:
            raise MemberError(
                "non-finite (NaN/inf) logits from member(s): " + "; ".join(report),
                "check the artifact and try --precision f32",
            )

    # ---- features ---------------------------------------------------------------------------
    def features_path(self, m: Member, ds: Any) -> Path:
        """Cache file of (member, dataset, n) CKA features."""
        n = min(self.opt.cka_samples, len(ds))
        key = {**self._member_key(m, ds), "kind": "features", "n": n}
        return self.cache.unit_dir("features", self.cache.key(**key), key) / "features.npz"

    def run_features(self, m: Member, ds: Any, spec: str) -> None:
        """Compute CKA features of the first ``cka_samples`` images (shard 0 does it)."""
        if self.opt.cka_samples <= 0 or (self.opt.shard is not None and self.opt.shard[0] != 0):
            return
        path = self.features_path(m, ds)
        if path.is_file():
            self.cache.count("features", True)
            return
        self.cache.count("features", False)
        n = min(self.opt.cka_samples, len(ds))
        self.progress(Progress(f"features {m.name} @ {spec}", 0, n))
        feats = self._member_features(m, np.asarray(ds.images[:n]))
        self.cache.save_npz(path, **feats)
        self.progress(Progress(f"features {m.name} @ {spec}", n, n))

    def _member_features(self, m: Member, images: np.ndarray) -> dict[str, np.ndarray]:
        """CKA features of one member on ``images`` (the unit computation; the Ray executor runs it in an actor)."""
        return m.features(images, batch_size=self.opt.batch_size)

    def load_features(self, m: Member, ds: Any) -> dict[str, np.ndarray] | None:
        """Cached CKA features of one member, or None."""
        if self.opt.cka_samples <= 0:
            return None
        return self.cache.load_npz(self.features_path(m, ds))

    # ---- attribution ------------------------------------------------------------------------
    def attribution_n(self, ds: Any) -> int:
        """Number of leading samples with attribution maps."""
        if self.opt.attribution is AttributionMethod.NONE or len(self.ens) < 2:
            return 0
        n = len(ds)
        return n if self.opt.attribution_samples is None else min(n, self.opt.attribution_samples)

    def attribution_dir(self, ds: Any) -> Path:
        """Cache folder of the pool's attribution statistics on one dataset."""
        key = {
            "kind": "attribution",
            "members": [self._member_key(m, ds) for m in self.ens],
            "method": str(self.opt.attribution),
            "params": self.opt.attribution_params,
            "target": str(self.opt.attribution_target),
            "norm": str(self.opt.attribution_norm),
            "consensus": str(self.opt.consensus[0]),
            "seed": self.opt.seed,
            "examples": self.opt.examples,
        }
        return self.cache.unit_dir("attribution", self.cache.key(**key), {**key, "names": self.ens.names})

    def _explainers(self) -> list[Any]:
        """One attribution object per member, built once per run (VJP models compile once, not per dataset)."""
        if self._explainer_cache is not None:
            return self._explainer_cache
        self._explainer_cache = [make_explainer(self.opt.attribution, m, self.opt.batch_size) for m in self.ens]
        return self._explainer_cache

    def run_gradient_check(self, ds: Any) -> dict[str, dict[str, Any]]:
        """Check every member's gradient graph on the first images of ``ds`` (before any attribution).

        Returns:
            Member name -> :meth:`GradientCheckReport.to_dict` (the results' evidence); empty when attribution
            or the check is off.

        Raises:
            GradientCheckError: a member's VJP disagrees with finite differences of its own forward (one
                error naming it, and the other failing members).
        """
        if self.opt.gradient_check == "off" or self.attribution_n(ds) == 0:
            return {}
        import json

        from ovdiv.atomic import write_json

        _, imgs, _ = next(ds.batches(4, start=0, stop=4))
        task = f"gradient check ({self.opt.gradient_check})"
        evidence: dict[str, dict[str, Any]] = {}
        reports: list[Any] = []
        for k, m in enumerate(self.ens):
            self.progress(Progress(task, k, len(self.ens)))
            # A passed check is cached with the member's other work (a fully cached run executes no model).
            key = {**self._member_key(m, ds), "kind": "gradient_check", "mode": self.opt.gradient_check}
            key.update(seed=self.opt.seed, versions=tool_versions())
            path = self.cache.unit_dir("gradient_check", self.cache.key(**key), {**key, "name": m.name}) / "check.json"
            if path.is_file():
                self.cache.count("gradient_check", True)
                evidence[m.name] = {**json.loads(path.read_text()), "cached": True}
                continue
            self.cache.count("gradient_check", False)
            rep = self._check_member_gradients(k, np.asarray(imgs))
            reports.append(rep)
            evidence[m.name] = rep.to_dict()
            if not rep.failed:  # passed or inconclusive (recorded as such in the evidence)
                write_json(path, rep.to_dict())
        self.progress(Progress(task, len(self.ens), len(self.ens)))
        failed = [r for r in reports if r.failed]
        if failed:
            from ovdiv.errors import GradientCheckError

            also = f"; also failed: {', '.join(r.member for r in failed[1:])}" if len(failed) > 1 else ""
            try:
                failed[0].raise_for_failure()
            except GradientCheckError as exc:
                raise GradientCheckError(exc.message + also, exc.hint) from None
        return evidence

    def _check_member_gradients(self, k: int, images: np.ndarray) -> Any:
        """Gradient-check report of member ``k`` on ``images`` (the Ray executor runs it in the member's actor)."""
        attr: Any = importlib.import_module("ovdiv.attribution")
        m = self.ens[k]
        return attr.check_gradients(
            self._explainers()[k], images, self.opt.gradient_check, name=m.name, seed=self.opt.seed
        )

    def _targets(self, logits: np.ndarray, labels: np.ndarray, start: int) -> np.ndarray:
        """Target classes ``(M, B)`` for one batch of pool logits ``(M, B, C)``."""
        t = self.opt.attribution_target
        m = logits.shape[0]
        if t is AttributionTarget.LABEL:
            return np.broadcast_to(labels.astype(np.int64), (m, len(labels)))
        if t is AttributionTarget.MEMBER:
            return logits.argmax(axis=2).astype(np.int64)
        from ovdiv.metrics import ensemble_predict

        pred = ensemble_predict(logits, self.opt.consensus[0], seed=self.opt.seed, index_offset=start)
        return np.broadcast_to(np.asarray(pred, np.int64), (m, len(labels)))

    def run_attribution(self, ds: Any, spec: str) -> None:
        """Fold attribution maps of this shard's chunks into cached pairwise statistics."""
        n_att = self.attribution_n(ds)
        if n_att == 0:
            return
        d = self.attribution_dir(ds)
        todo = [(i, c) for i, c in enumerate(self.chunks(len(ds), n_att)) if self.mine(i)]
        missing = [(i, c) for i, c in todo if not (d / self.cache.chunk_name(c[0], c[1], "npz")).is_file()]
        self.cache.count("attribution", False) if missing else None
        for _ in range(len(todo) - len(missing)):
            self.cache.count("attribution", True)
        if not missing:
            return
        task = f"attribution {self.opt.attribution} @ {spec}"
        total = sum(e - s for _, (s, e) in todo)
        done = total - sum(e - s for _, (s, e) in missing)

        def on_images(n: int) -> None:
            nonlocal done
            done += n
            self.progress(Progress(task, done, total))

        for (i, (s, e)), (stats, keep) in zip(missing, self._attribution_folds(ds, missing, on_images), strict=True):
            if keep:
                ex_sel, chunk_labels, chunk_ens, chunk_members = self.attribution_examples(ds, i, s, e)
                self.cache.save_npz(
                    d / "examples.npz",
                    images=np.concatenate([np.asarray(ds.images[s + j : s + j + 1]) for j in ex_sel]),
                    maps=np.concatenate(keep, axis=1).astype(np.float32),
                    labels=chunk_labels[ex_sel],
                    ensemble_pred=chunk_ens[ex_sel],
                    member_pred=chunk_members[:, ex_sel],
                    indices=(s + ex_sel).astype(np.int64),
                    members=np.asarray(self.ens.names),
                    dataset=np.asarray(spec),
                    method=np.asarray(str(self.opt.attribution)),
                )
            stats.save(d / self.cache.chunk_name(s, e, "npz"))

    def attribution_examples(
        self, ds: Any, i: int, s: int, e: int
    ) -> tuple[npt.NDArray[np.int64], np.ndarray, np.ndarray, np.ndarray]:
        """``(chunk-local indices of the report's example maps, labels, ensemble and member predictions)``.

        Examples come from the first chunk only; other chunks (or ``examples=0``) select none.
        """
        empty = np.empty(0, np.int64)
        if i != 0 or self.opt.examples <= 0:
            return empty, empty, empty, empty
        from ovdiv.metrics import ensemble_predict

        pool_logits = self.chunk_logits(ds, s, e)
        chunk_labels = np.asarray(ds.labels[s:e], np.int64)
        chunk_ens = np.asarray(
            ensemble_predict(pool_logits, self.opt.consensus[0], seed=self.opt.seed, index_offset=s), np.int64
        )
        chunk_members = pool_logits.argmax(axis=2).astype(np.int64)
        return (
            pick_examples(chunk_members, chunk_labels, chunk_ens, self.opt.examples),
            chunk_labels,
            chunk_ens,
            chunk_members,
        )

    def _attribution_folds(
        self, ds: Any, chunks: Sequence[tuple[int, Chunk]], on_images: Callable[[int], None]
    ) -> Iterator[tuple[Any, list[np.ndarray]]]:
        """Per ``(index, (start, stop))`` chunk, in order: its folded statistics and kept example maps.

        Locally the maps of each batch are computed and folded at once (:func:`fold_attribution_chunk`); the
        Ray executor folds each chunk in a task fed by the member actors.
        """
        for (i, (s, e)), (batches, chunk_maps) in zip(chunks, self._attribution_maps(ds, chunks), strict=True):
            ex_sel = self.attribution_examples(ds, i, s, e)[0]
            yield fold_attribution_chunk(
                self.ens.names, self.ens.num_classes, self.opt, s, batches, chunk_maps, ex_sel, on_images
            )

    def attribution_batches(self, ds: Any, s: int, e: int) -> list[AttributionBatch]:
        """The batches of attribution chunk ``[s, e)``: ``(start, size, labels, pool logits, targets (M, B))``."""
        pool_logits = self.chunk_logits(ds, s, e)
        out = []
        for b in range(s, e, self.opt.batch_size):
            n_b = min(b + self.opt.batch_size, e) - b
            labels = np.asarray(ds.labels[b : b + n_b])
            lg = pool_logits[:, b - s : b - s + n_b]
            out.append((b, n_b, labels, lg, self._targets(lg, labels, b)))
        return out

    def _attribution_maps(
        self, ds: Any, chunks: Sequence[tuple[int, Chunk]]
    ) -> Iterator[tuple[list[AttributionBatch], Iterator[list[np.ndarray]]]]:
        """Per ``(index, (start, stop))`` chunk: its batches, and per batch every member's maps ``(B, 3, h, w)``.

        The unit computation of attribution; computed lazily here, one batch at a time (the Ray executor
        overrides it to compute batches in member actors ahead of the fold).
        """
        explainers = self._explainers()
        params = self.opt.attribution_params

        def chunk(batches: list[AttributionBatch]) -> Iterator[list[np.ndarray]]:
            for b, n_b, _labels, _lg, targets in batches:
                imgs = np.asarray(ds.images[b : b + n_b])
                yield [attribute_batch(ex, imgs, targets[k], params) for k, ex in enumerate(explainers)]

        for _i, (s, e) in chunks:
            batches = self.attribution_batches(ds, s, e)
            yield batches, chunk(batches)

    def load_attribution(self, ds: Any) -> Any | None:
        """Merged pairwise attribution statistics of the pool on one dataset (None: off or incomplete)."""
        from ovdiv.evaluate.scoring import load_attribution_stats

        n_att = self.attribution_n(ds)
        if n_att == 0:
            return None
        d = self.attribution_dir(ds)
        paths = [d / self.cache.chunk_name(s, e, "npz") for s, e in self.chunks(len(ds), n_att)]
        if not all(p.is_file() for p in paths):
            return None
        return load_attribution_stats(paths)

    def attribution_complete(self, ds: Any) -> bool:
        """All attribution chunks are cached (or attribution is off)."""
        n_att = self.attribution_n(ds)
        d = self.attribution_dir(ds) if n_att else None
        return n_att == 0 or all(
            (d / self.cache.chunk_name(s, e, "npz")).is_file()  # type: ignore[operator]
            for s, e in self.chunks(len(ds), n_att)
        )

    def load_examples(self, ds: Any) -> dict[str, np.ndarray] | None:
        """The report's example maps of one dataset, if attribution ran."""
        if self.attribution_n(ds) == 0 or self.opt.examples == 0:
            return None
        return self.cache.load_npz(self.attribution_dir(ds) / "examples.npz")


def evaluate(
    ens_or_pool: Ensemble | Sequence[Member] | Sequence[str | os.PathLike[str]],
    datasets: str | Sequence[Any] = ("demo",),
    *,
    attribution: str | None = "saliency",
    subset_size: int | None = None,
    limit: int | None = None,
    cache_dir: str | os.PathLike[str] | None = None,
    consensus: str | Sequence[str] = "average",
    attribution_target: str = "ensemble",
    attribution_norm: str = "max",
    attribution_samples: int | None = None,
    attribution_params: dict[str, Any] | None = None,
    cka_samples: int = 256,
    batch_size: int = 32,
    workers: int | None = None,
    shard: str | tuple[int, int] | None = None,
    device: str = "CPU",
    precision: str = "f32",
    backend: str | None = None,
    data_root: str | os.PathLike[str] | None = None,
    seed: int = 0,
    chunk_size: int = 512,
    examples: int = 16,
    ci_level: float = 0.95,
    bootstrap: int = 2000,
    ci_method: str = "percentile",
    binomial: str = "clopper-pearson",
    gradient_check: str = "quick",
    executor: str = "local",
    ray_address: str | None = None,
    out: str | os.PathLike[str] | None = None,
    progress: ProgressCallback | None = None,
) -> EvalResult:
    """Evaluate one ensemble, or every k-subset of a pool, on datasets of deployed-member inputs.

    Args:
        ens_or_pool: An :class:`Ensemble`, loaded members, or artifact paths (loaded with ``device``,
            ``precision``, ``backend``).
        datasets: Dataset specs (``demo``, ``lines1.6@demo``, ``imagenet``, ...; see :mod:`ovdiv.data`) or
            dataset objects such as :class:`~ovdiv.evaluate.datasets.ArrayDataset`.
        attribution: ``saliency`` (default), ``ig``, ``smoothgrad``, ``input_x_gradient`` or ``none``.
        subset_size: Score every ``k``-subset of the pool (None: the whole pool is one ensemble).
        limit: First N images of each dataset.
        cache_dir: Cache root (prepared data and evaluation work); default ``~/.cache/ovdiv``.
        consensus: Consensus rule(s); rules other than ``average`` add ``:rule``-suffixed rows; the first picks
            the attribution target of ``attribution_target="ensemble"``.
        attribution_target: ``ensemble`` (default), ``member`` or ``label``.
        attribution_norm: ``max`` (default), ``sum`` or ``none``.
        attribution_samples: Attribution on the first N images (default all).
        attribution_params: Extra keyword arguments for the attribution method.
        cka_samples: CKA features on the first N images (0 = off).
        batch_size: Images per inference request.
        workers: Data-preparation workers.
        shard: ``"i/n"``: compute only this shard's chunks; results appear once all shards are cached.
        device: Device for paths (``CPU``, ``GPU``, ``AUTO``).
        precision: Inference precision for paths (``f32`` default, ``bf16``, ``f16``, ``model``).
        backend: Backend for paths (``openvino`` default, ``onnxruntime``, ``torch``).
        data_root: Root of on-disk datasets (ImageNet etc.).
        seed: Dataset seed and majority-vote tie-break seed.
        chunk_size: Images per cached chunk (resume granularity).
        examples: Attribution maps kept per dataset for the report (from the first chunk: samples the
            ensemble gets right and wrong, members agreeing and not; see :func:`pick_examples`).
        ci_level: Confidence level of the intervals in the rows.
        bootstrap: Paired-bootstrap resamples over images (0: off; binomial intervals and McNemar remain).
        ci_method: Bootstrap interval method, ``percentile`` or ``bca``.
        binomial: Accuracy interval, ``clopper-pearson`` or ``wilson``.
        gradient_check: ``quick`` (default), ``full`` or ``off``: before any attribution, each member's VJP
            graph is checked against finite differences of its own forward on the first images of the first
            dataset (:func:`ovdiv.attribution.check_gradients`); outcomes go to ``metadata["gradient_check"]``.
        executor: ``local`` (default) or ``ray``: the same work units in Ray actors (one compiled model per
            actor), merged by this process into the same cache; results equal a local run's
            (:mod:`ovdiv.evaluate.executor_ray`). ``metadata["executor"]`` records where they ran.
        ray_address: Ray cluster for ``executor="ray"`` (None/``auto``: a running cluster, else a local Ray).
        out: Write ``results.json``, ``results.csv`` and ``extras/`` here.
        progress: Progress callback.

    Returns:
        An :class:`EvalResult` (``complete=False`` and no rows for a shard whose siblings are not done).

    Raises:
        OvdivError: bad members, datasets or options; NaN logits (naming each member);
            :class:`~ovdiv.errors.GradientCheckError` (a member's gradient graph is wrong). Nothing is
            written to ``out`` in that case.
    """
    t_start = time.perf_counter()
    progress = progress or no_progress
    opt = EvalOptions.build(
        subset_size=subset_size,
        consensus=consensus,
        attribution=attribution,
        attribution_target=attribution_target,
        attribution_norm=attribution_norm,
        attribution_samples=attribution_samples,
        attribution_params=attribution_params,
        cka_samples=cka_samples,
        limit=limit,
        batch_size=batch_size,
        workers=workers,
        shard=shard,
        seed=seed,
        chunk_size=chunk_size,
        examples=examples,
        ci_level=ci_level,
        bootstrap=bootstrap,
        ci_method=ci_method,
        binomial=binomial,
        gradient_check=gradient_check,
        executor=executor,
        ray_address=ray_address,
    )
    given: list[Any] = [datasets] if isinstance(datasets, str) or hasattr(datasets, "batches") else list(datasets)
    items: list[Any] = []
    for d in given:  # "cbar[:name]" expands to its datasets; other specs keep the user's spelling
        expanded = importlib.import_module("ovdiv.data").expand_spec(d) if isinstance(d, str) else [d]
        items.extend(expanded if len(expanded) > 1 or (isinstance(d, str) and d.startswith("cbar")) else [d])
    specs = [d if isinstance(d, str) else str(d.manifest["spec"]) for d in items]
    if not specs:
        raise ConfigError("no dataset given", "pass --dataset SPEC (e.g. demo or lines1.6@demo)")
    ens = _as_ensemble(ens_or_pool, device=device, precision=precision, backend=backend)
    k = opt.subset_size
    if k is not None and not 2 <= k <= len(ens):
        raise ConfigError(f"--size {k} is not between 2 and the pool size {len(ens)}")
    if opt.attribution is not AttributionMethod.NONE and len(ens) >= 2:
        # Before any data preparation or inference: a member without a gradient is a config error.
        check = importlib.import_module("ovdiv.attribution").check_attributable
        for m in ens:
            check(m)
    cache = EvalCache(cache_dir)
    ev_cls: type[Evaluator] = Evaluator
    if opt.executor == "ray":
        from ovdiv.evaluate.executor_ray import RayEvaluator

        ev_cls = RayEvaluator
    ev = ev_cls(ens, opt, cache=cache, data_root=data_root, data_cache_dir=cache_dir, progress=progress)
    with ev.session():
        prepared, grad_check = _run_units(ev, specs, items)
    metadata = _metadata(ev, specs, prepared, grad_check)
    return _finish(ev, specs, prepared, metadata, t_start=t_start, out=out)


def _run_units(ev: Evaluator, specs: Sequence[str], items: Sequence[Any]) -> tuple[list[Any], dict[str, Any]]:
    """Prepare the datasets and compute every missing unit of this shard; returns ``(datasets, gradient check)``."""
    opt, ens, progress = ev.opt, ev.ens, ev.progress
    t0 = time.perf_counter()
    prepared = []
    for spec, item in zip(specs, items, strict=True):
        if not isinstance(item, str):
            prepared.append(item)
            continue
        prepare = importlib.import_module("ovdiv.data").prepare
        prepared.append(
            prepare(
                spec,
                limit=opt.limit,
                data_root=ev.data_root,
                cache_dir=ev.data_cache_dir,
                seed=opt.seed,
                workers=opt.workers,
                progress=progress,
                executor=opt.executor,
            )
        )
    ev._tick("prepare", t0)

    t0 = time.perf_counter()
    for spec, ds in zip(specs, prepared, strict=True):
        ev.run_logits(ds, spec)
    ev._tick("logits", t0)
    ev.check_finite(specs, prepared)  # before attribution, which would take targets from NaN logits
    t0 = time.perf_counter()
    grad_check = ev.run_gradient_check(prepared[0]) if prepared else {}
    ev._tick("gradient_check", t0)

    for spec, ds in zip(specs, prepared, strict=True):
        t0 = time.perf_counter()
        if len(ens) >= 2:
            for m in ens:
                ev.run_features(m, ds, spec)
        ev._tick("features", t0)
        t0 = time.perf_counter()
        ev.run_attribution(ds, spec)
        ev._tick("attribution", t0)
    return prepared, grad_check


def _metadata(
    ev: Evaluator, specs: Sequence[str], prepared: Sequence[Any], grad_check: dict[str, Any]
) -> dict[str, Any]:
    """The run's evidence (``results.json``'s ``metadata`` before timings and cache statistics)."""
    ens, opt = ev.ens, ev.opt
    return {
        "versions": tool_versions(),
        "created": datetime.now(UTC).isoformat(timespec="seconds"),
        "device": sorted({m.device for m in ens})[0] if len({m.device for m in ens}) == 1 else "mixed",
        "precision": ",".join(sorted({str(m.precision) for m in ens})),
        "inference_precision": ",".join(sorted({m.inference_precision for m in ens})),
        "backend": ",".join(sorted({str(m.backend) for m in ens})),
        "members": ens.info(),
        "datasets": [{"spec": s, "manifest": dict(ds.manifest)} for s, ds in zip(specs, prepared, strict=True)],
        "pool": ens.name,
        "options": opt.to_dict(),
        "ci": opt.ci_metadata(),
        "gradient_check": grad_check,
        "executor": ev.executor_evidence(),
    }


def _finish(
    ev: Evaluator,
    specs: Sequence[str],
    prepared: Sequence[Any],
    metadata: dict[str, Any],
    *,
    t_start: float,
    out: str | os.PathLike[str] | None,
) -> EvalResult:
    """Score the cached units (or report an incomplete shard) and write ``out``."""
    from ovdiv.evaluate.scoring import score_dataset

    ens, opt, cache = ev.ens, ev.opt, ev.cache
    complete = (
        all(ev.logits_complete(m, ds) for ds in prepared for m in ens)
        and all(ev.attribution_complete(ds) for ds in prepared)
        and (
            len(ens) < 2
            or opt.cka_samples == 0
            or all(ev.features_path(m, ds).is_file() for ds in prepared for m in ens)
        )
    )
    if not complete:
        ev.timings["total"] = round(time.perf_counter() - t_start, 4)
        metadata["timings"] = ev.timings
        metadata["cache"] = cache.stats()
        log.info("shard %s done; other shards' chunks are not cached yet", opt.to_dict()["shard"])
        return EvalResult(rows=[], metadata=metadata, complete=False)

    t0 = time.perf_counter()
    rows: list[dict[str, Any]] = []
    extras: dict[str, dict[str, str]] = {}
    arrays: dict[str, dict[str, np.ndarray]] = {}
    correlation: list[dict[str, Any]] = []
    for spec, ds in zip(specs, prepared, strict=True):
        feats = [ev.load_features(m, ds) for m in ens] if len(ens) >= 2 else None
        labels = np.asarray(ds.labels)
        ds_rows, ds_arrays, ds_corr = score_dataset(
            spec,
            names=ens.names,
            num_classes=ens.num_classes,
            chunks=((ev.chunk_logits(ds, s, e), labels[s:e]) for s, e in ev.chunks(len(ds))),
            options=opt,
            attribution_stats=ev.load_attribution(ds),
            features=feats,
            examples=ev.load_examples(ds),
        )
        rows.extend(ds_rows)
        correlation.extend(ds_corr)
        for kind, arrs in ds_arrays.items():
            from ovdiv.evaluate.results import slug

            rel = f"extras/{kind}_{slug(spec)}.npz"
            arrays[rel] = arrs
            extras.setdefault(kind, {})[spec] = rel
    ev._tick("scoring", t0)
    ev.timings["total"] = round(time.perf_counter() - t_start, 4)
    metadata["timings"] = ev.timings
    metadata["cache"] = cache.stats()
    metadata["ensembles"] = list(dict.fromkeys(r["ensemble"] for r in rows if r["ensemble"] is not None))
    result = EvalResult(rows=rows, metadata=metadata, extras=extras, arrays=arrays, correlation=correlation)
    if out is not None:
        result.save(out)
    return result
