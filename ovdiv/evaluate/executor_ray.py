"""``ovdiv evaluate --executor ray``: the engine's work units in Ray actors that own the compiled models.

The engine (:mod:`ovdiv.evaluate.engine`) splits an evaluation into units: logits of (member, dataset,
chunk), CKA features of (member, dataset), the gradient check of a member and, for attribution, every
member's maps of one batch of a (pool, dataset, chunk) unit. :class:`RayEvaluator` is the engine with those
unit computations sent to Ray; everything else — cache keys, resume, shards, consensus, scoring — is the
engine's own code running in this (driver) process, and the fold of a chunk's attribution maps into
pairwise statistics is the engine's own function (:func:`~ovdiv.evaluate.engine.fold_attribution_chunk`)
running in a Ray task fed directly by the member actors:

* **Actors own models.** Each member gets ``R`` actors (:class:`MemberWorker`), each loading the artifact
  once and compiling it (and its VJP graph when attribution is on) on first use — never per batch. Logits
  are computed with the same ``Member.submit_batches`` over the same batch boundaries, maps with the same
  :func:`~ovdiv.evaluate.engine.attribute_batch`, so their bytes equal a local run's. Resources: ``num_cpus``
  a share of a node's CPUs, and an OpenVINO CPU actor compiles with as many threads (``INFERENCE_NUM_THREADS``
  = the integer part of its CPUs, at least 1, ``NUM_STREAMS=1``), so co-located actors do not oversubscribe
  the node (f32 bytes do not depend on the thread count: ``scripts/check_ov_threads.py``); ``num_gpus`` for
  a CUDA device (torch members), a custom ``intel_gpu`` resource for OpenVINO GPU devices (start such nodes
  with ``ray start --resources '{"intel_gpu": 1}'``).
* **Data**: a prepared dataset (the data cache's memmapped ``images.npy``) that an actor finds at the same
  path with the same manifest (probed once per actor and dataset) is read by the actor itself — the driver
  sends only the folder and the chunk's rows (:class:`SharedImages`); otherwise (in-memory data, a node
  without the shared folder) each chunk's images are ``ray.put`` once and shared through Ray's object store.
  Maps go from the actors to the chunk's fold task; logits, features and folded statistics come back to the
  driver.
* **The driver writes**: each finished unit is saved at once through the engine's atomic cache writes, so
  a killed driver resumes from the cache like a local run, and the files are the local engine's files.
* **Faults**: actors restart (``max_restarts``) and retry tasks lost with a worker or node
  (``max_task_retries``); a unit still lost is submitted again by the driver. An application error (a
  member that fails to compile or run) is never retried: it fails the run once with the local engine's
  :class:`~ovdiv.errors.OvdivError` line, unwrapped from Ray's ``RayTaskError``.

Needs ovdiv (same version) installed on every node, and the member artifacts readable at the same path on
every node (shared storage), as for ``--shard``.
"""

from __future__ import annotations

import contextlib
import logging
import math
import os
from collections import deque
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from ovdiv.errors import ConfigError, OvdivError
from ovdiv.evaluate.engine import AttributionBatch, Chunk, Evaluator, _ChunkRouter, attribute_batch, make_explainer
from ovdiv.raycluster import _root_cause, cluster_evidence, connect, is_lost, ray_get
from ovdiv.runtime import Member
from ovdiv.types import AttributionMethod, Progress

__all__ = [
    "MemberWorker",
    "RayEvaluator",
    "SharedDataUnavailable",
    "SharedImages",
    "actor_layout",
    "open_shared",
    "shared_images_of",
]

log = logging.getLogger("ovdiv.evaluate")

MAX_RESUBMITS = 5
ACTOR_RESTARTS = 4
TASK_RETRIES = 4
PLACEMENT_TIMEOUT_S = 300.0


class SharedDataUnavailable(OSError):
    """Raised in an actor sent :class:`SharedImages` it cannot read (restarted on a node without the folder).

    Not a user error: the driver switches that dataset to the object store and submits the unit again.
    """


@dataclass(frozen=True)
class SharedImages:
    """Rows ``start:stop`` of a prepared dataset's ``images.npy``, read by the actor from shared storage.

    Sent instead of the images when the actor found the same prepared folder (same ``manifest_hash``, same
    ``images.npy`` size) at the same path on its node (:func:`open_shared`).
    """

    folder: str
    manifest_hash: str
    nbytes: int
    start: int
    stop: int


def shared_images_of(ds: Any) -> SharedImages | None:
    """The whole of ``ds`` as :class:`SharedImages` when it is a prepared folder's memmap, else None."""
    import json

    images = getattr(ds, "images", None)
    folder = getattr(ds, "path", None)
    if not isinstance(images, np.memmap) or folder is None or images.filename is None:
        return None
    npy = Path(folder) / "images.npy"
    try:
        if not npy.samefile(images.filename):
            return None
        manifest = json.loads((Path(folder) / "manifest.json").read_text(encoding="utf-8"))
        nbytes = npy.stat().st_size
    except (OSError, ValueError):
        return None
    if manifest.get("manifest_hash") != ds.manifest.get("manifest_hash") or len(images) != manifest.get("n"):
        return None  # another dataset, or a view of part of the file: rows would not line up
    if not images.flags.c_contiguous:
        return None
    return SharedImages(str(Path(folder).resolve()), str(manifest["manifest_hash"]), nbytes, 0, len(images))


def open_shared(src: SharedImages) -> np.ndarray | None:
    """The memmapped images of ``src``'s folder on this node, or None when not there (or not the same).

    Cheap: reads ``manifest.json`` and stats ``images.npy``; the bytes are read only when a slice is used.
    ``$OVDIV_RAY_NO_SHARED`` (any non-empty value) on a node makes it answer None (tests; a node whose
    mount is slow).
    """
    import json

    if os.environ.get("OVDIV_RAY_NO_SHARED"):
        return None
    folder = Path(src.folder)
    try:
        manifest = json.loads((folder / "manifest.json").read_text(encoding="utf-8"))
        if manifest.get("manifest_hash") != src.manifest_hash or (folder / "images.npy").stat().st_size != src.nbytes:
            return None
        images = np.load(folder / "images.npy", mmap_mode="r")
    except (OSError, ValueError):
        return None
    return images if isinstance(images, np.ndarray) and len(images) >= src.stop else None


class MemberWorker:
    """The body of a member actor: one loaded member, compiled once, computing units on request.

    Args:
        path: The member's artifact.
        name: Its name (as in the driver, card overrides included).
        device: Device string.
        precision: Precision string.
        backend: Backend string.
        attribution: Attribution method (``none``: no explainer).
        batch_size: Images per inference request.
        threads: OpenVINO CPU threads of this actor (one stream), its declared CPUs; None: the plugin's default
            (the whole node).
    """

    def __init__(
        self,
        path: str,
        name: str,
        device: str,
        precision: str,
        backend: str,
        attribution: str,
        batch_size: int,
        threads: int | None = None,
    ) -> None:
        self.spec = (path, name, device, precision, backend)
        self.attribution = AttributionMethod(attribution)
        self.batch_size = batch_size
        self.threads = threads
        self._member: Member | None = None
        self._explainer: Any = None
        self._compiled = False
        self._shared: dict[str, np.ndarray | None] = {}
        if threads is not None and backend == "openvino" and device.upper().startswith("CPU"):
            from ovdiv.runtime.openvino_member import set_cpu_threads

            set_cpu_threads(threads)  # before any compile in this process: member, VJP graph, gradient check

    def probe_shared(self, src: SharedImages) -> bool:
        """Whether ``src``'s prepared folder is readable here with the same manifest (checked once per dataset)."""
        if src.manifest_hash not in self._shared:
            self._shared[src.manifest_hash] = open_shared(src)
        return self._shared[src.manifest_hash] is not None

    def _images(self, images: np.ndarray | SharedImages) -> np.ndarray:
        """The images of a unit: as sent, or read from the shared prepared folder."""
        if not isinstance(images, SharedImages):
            return images
        if not self.probe_shared(images):  # e.g. restarted on a node without the folder
            raise SharedDataUnavailable(f"prepared dataset {images.folder} is not readable on this node")
        arr = self._shared[images.manifest_hash]
        assert arr is not None
        return np.ascontiguousarray(arr[images.start : images.stop])

    def member(self) -> Member:
        """The loaded member (loaded on first use, then kept)."""
        if self._member is None:
            from ovdiv.runtime import load_member

            path, name, device, precision, backend = self.spec
            self._member = load_member(path, device=device, precision=precision, backend=backend, name=name)
        return self._member

    def explainer(self) -> Any:
        """The member's attribution object (its VJP graph compiles once, on first use)."""
        if self._explainer is None:
            self._explainer = make_explainer(self.attribution, self.member(), self.batch_size)
        return self._explainer

    def logits(self, images: np.ndarray | SharedImages, start: int) -> np.ndarray:
        """Logits ``(n, C)`` of one chunk: the engine's batches ``[start + j*bs, ...)`` through ``submit_batches``."""
        images = self._images(images)
        m = self.member()
        n = len(images)
        router = _ChunkRouter([(start, start + n)], m.num_classes)
        batches = ((start + j, images[j : j + self.batch_size]) for j in range(0, n, self.batch_size))
        m.submit_batches(batches, router).wait()
        self._compiled = True
        return router.buffers[(start, start + n)]

    def features(self, images: np.ndarray) -> dict[str, np.ndarray]:
        """CKA features of ``images`` (as :meth:`Member.features` in the local engine)."""
        return self.member().features(images, batch_size=self.batch_size)

    def gradient_check(self, images: np.ndarray, mode: str, seed: int) -> Any:
        """The member's gradient-check report (:func:`ovdiv.attribution.check_gradients`)."""
        from ovdiv.attribution import check_gradients

        return check_gradients(self.explainer(), images, mode, name=self.member().name, seed=seed)

    def attribute(
        self, images: np.ndarray | SharedImages, offset: int, n: int, target: np.ndarray, params: dict[str, Any]
    ) -> np.ndarray:
        """Maps of rows ``offset:offset+n`` of a chunk's images for ``target`` (one attribution batch)."""
        if isinstance(images, SharedImages):
            s = images.start + offset
            images, offset = self._images(SharedImages(images.folder, images.manifest_hash, images.nbytes, s, s + n)), 0
        return attribute_batch(self.explainer(), np.asarray(images[offset : offset + n]), target, params)

    def ping(self) -> bool:
        """True once the actor is placed and running."""
        return True

    def info(self) -> dict[str, Any]:
        """Where this actor runs and what its member actually executes with (evidence)."""
        import socket

        import ray

        ctx = ray.get_runtime_context()
        m = self.member()
        threads: int | None = None
        if self._compiled:
            with contextlib.suppress(Exception):  # OpenVINO members only
                threads = int(m.compiled.get_property("INFERENCE_NUM_THREADS"))  # type: ignore[attr-defined]
        if threads is None:
            threads = self.threads
        return {
            "node_id": ctx.get_node_id(),
            "host": socket.gethostname(),
            "ip": ray.util.get_node_ip_address(),
            "member": m.name,
            "device": m.device,
            "precision": str(m.precision),
            "inference_precision": m.inference_precision if self._compiled else None,
            "runtime_version": m.runtime_version,
            "threads": threads,
        }


def actor_threads(cpus: float) -> int:
    """OpenVINO CPU threads of an actor that declared ``cpus`` CPUs: their integer part, at least one."""
    return max(1, int(cpus))


def actor_layout(n_members: int, node_cpus: Sequence[float]) -> tuple[int, float]:
    """``(actors per member, CPUs declared per actor)`` for a cluster with ``node_cpus``.

    One actor is sized like a node (OpenVINO's CPU plugin uses every core it sees), and each member gets as
    many actors as the cluster holds members' worth of nodes. The declared CPUs are then lowered (Ray's
    scheduling is logical) so that every actor fits on the cluster even with one node lost: otherwise the
    fold, which needs every member's maps of a batch, could wait forever for an actor that cannot be placed.
    """
    if not node_cpus:
        return 1, 1.0
    smallest = max(min(node_cpus), 1e-3)
    replicas = max(1, math.floor(sum(node_cpus) / (n_members * smallest)))
    n_actors = n_members * replicas
    spare = max(1, len(node_cpus) - 1)
    per = min(smallest, smallest / math.ceil(n_actors / spare))
    return replicas, math.floor(per * 1e4) / 1e4  # rounded down: k actors of ``per`` must fit in k * per CPUs


class RayEvaluator(Evaluator):
    """The evaluation engine with its units computed in Ray actors (module docstring)."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._ray: Any = None
        self._actors: list[list[Any]] = []
        self._evidence: dict[str, Any] = {"kind": "ray"}
        self._transport: dict[str, dict[int, SharedImages | None]] = {}  # manifest_hash -> actor index -> source
        self._data_evidence: dict[str, dict[str, Any]] = {}  # dataset spec -> transport used
        self._spec_of: dict[str, str] = {}  # manifest_hash -> dataset spec

    # ---- session: cluster + actors -----------------------------------------------------------
    @contextlib.contextmanager
    def session(self) -> Iterator[None]:
        """Connect to Ray, create the member actors, and record the evidence before leaving."""
        with connect(self.opt.ray_address) as sess:
            self._ray = sess.ray
            cluster = cluster_evidence(sess.ray)
            replicas, cpus = actor_layout(len(self.ens), cluster["node_cpus"])
            self._actors = [[self._new_actor(m, cpus) for _ in range(replicas)] for m in self.ens]
            pings = [a.ping.remote() for row in self._actors for a in row]
            ready, _ = sess.ray.wait(pings, num_returns=len(pings), timeout=PLACEMENT_TIMEOUT_S)
            if len(ready) < len(pings):
                raise ConfigError(
                    f"Ray placed only {len(ready)} of {len(pings)} member actors ({cpus} CPUs each) within "
                    f"{PLACEMENT_TIMEOUT_S:.0f} s on a cluster of {cluster['nodes']} node(s), {cluster['cpus']} CPUs",
                    "add nodes or check `ray status` (GPU members need GPU or intel_gpu resources)",
                )
            self._evidence = {
                "kind": "ray",
                "address": sess.address,
                "nodes": cluster["nodes"],
                "cpus": cluster["cpus"],
                "gpus": cluster["gpus"],
                "actors_per_member": replicas,
                "cpus_per_actor": cpus,
                "threads_per_actor": actor_threads(cpus),
            }
            try:
                yield
                self._collect_evidence()
                self._evidence["data_transport"] = dict(sorted(self._data_evidence.items()))
            finally:
                for row in self._actors:
                    for a in row:
                        with contextlib.suppress(Exception):
                            sess.ray.kill(a)
                self._actors = []
                self._ray = None
                self._transport = {}

    def _new_actor(self, m: Member, cpus: float) -> Any:
        ray = self._ray
        opts: dict[str, Any] = {
            "num_cpus": cpus,
            "max_restarts": ACTOR_RESTARTS,
            "max_task_retries": TASK_RETRIES,
            "scheduling_strategy": "SPREAD",  # members' actors on different nodes: more CPUs, less lost at once
        }
        dev = m.device.upper()
        if dev.startswith("GPU"):
            if str(m.backend) == "openvino":
                opts["resources"] = {"intel_gpu": 0.25}
            else:
                opts["num_gpus"] = 0.25
        cls = ray.remote(MemberWorker).options(**opts)
        return cls.remote(
            str(m.path), m.name, m.device, str(m.precision), str(m.backend), str(self.opt.attribution),
            self.opt.batch_size, actor_threads(cpus),
        )  # fmt: skip

    def _collect_evidence(self) -> None:
        """Per node: members, device and effective precision; the driver's members take the actors' precision."""
        infos = self._call_all([(k, a) for k, row in enumerate(self._actors) for a in row], "info")
        per_node: dict[str, dict[str, Any]] = {}
        for (k, _), info in zip(((k, a) for k, row in enumerate(self._actors) for a in row), infos, strict=True):
            node = per_node.setdefault(
                info["node_id"], {"node_id": info["node_id"], "ip": info["ip"], "host": info["host"], "members": []}
            )
            node["members"].append(
                {key: info[key] for key in ("member", "device", "precision", "inference_precision", "threads")}
            )
            if info["inference_precision"] is not None:
                self.ens[k].inference_precision = info["inference_precision"]
        for node in per_node.values():
            node["members"].sort(key=lambda d: d["member"])
        self._evidence["per_node"] = sorted(per_node.values(), key=lambda d: (d["ip"], d["node_id"]))

    def executor_evidence(self) -> dict[str, Any]:
        """``metadata["executor"]``: ``kind``, ``address``, ``nodes``, ``cpus``, actors, ``per_node`` devices."""
        return dict(self._evidence)

    # ---- data transport ---------------------------------------------------------------------
    def _sources(self, ds: Any) -> dict[int, SharedImages | None]:
        """Per actor (flat index): the dataset's :class:`SharedImages` when that actor reads it itself, else None.

        A prepared dataset (memmapped ``images.npy`` of the data cache) is probed once per actor per dataset:
        actors that see the same folder at the same path read their chunks from it; the others (and every
        actor for in-memory data) get the images through Ray's object store.
        """
        whole = shared_images_of(ds)
        key = str(ds.manifest["manifest_hash"])
        if key not in self._transport:
            flat = [a for row in self._actors for a in row]
            ok = [False] * len(flat)
            if whole is not None:
                ok = self._call_all([(0, a) for a in flat], "probe_shared", whole)
            self._transport[key] = {j: (whole if good else None) for j, good in enumerate(ok)}
            n_shared = sum(bool(x) for x in ok)
            kind = "shared" if n_shared == len(flat) else "object-store" if n_shared == 0 else "mixed"
            self._data_evidence[str(ds.manifest.get("spec", key))] = {
                "transport": kind,
                "shared_actors": n_shared,
                "actors": len(flat),
            }
            self._spec_of[key] = str(ds.manifest.get("spec", key))
            log.info(
                "dataset %s: images %s (%d of %d actors read the shared folder)", key[:12], kind, n_shared, len(flat)
            )
        return self._transport[key]

    def _shared_miss(self, exc: BaseException) -> bool:
        """True (after switching every dataset to the object store) when ``exc`` is an actor's shared-read miss."""
        if not isinstance(_root_cause(self._ray, exc), SharedDataUnavailable):
            return False
        log.warning("an actor could not read the shared data folder; using the object store from now on")
        for key, sources in self._transport.items():
            if any(v is not None for v in sources.values()):
                for j in sources:
                    sources[j] = None
                self._data_evidence[self._spec_of[key]]["fell_back_to_object_store"] = True
        return True

    def _flat(self, k: int, j: int) -> int:
        return sum(len(r) for r in self._actors[:k]) + j % len(self._actors[k])

    # ---- submitting with fault handling -----------------------------------------------------
    def _actor(self, k: int, j: int) -> Any:
        row = self._actors[k]
        return row[j % len(row)]

    def _get(self, ref: Any, resubmit: Any) -> Any:
        """The value of ``ref``; lost work is submitted again with ``resubmit()``, real errors raise once."""
        for attempt in range(MAX_RESUBMITS + 1):
            try:
                return ray_get(self._ray, ref)
            except OvdivError:
                raise
            except Exception as exc:
                if attempt < MAX_RESUBMITS and self._shared_miss(exc):
                    ref = resubmit()
                    continue
                if not is_lost(self._ray, exc) or attempt == MAX_RESUBMITS:
                    raise
                log.warning("a unit was lost with its worker (%s); submitting it again", type(exc).__name__)
                ref = resubmit()
        raise AssertionError("unreachable")

    def _call_all(self, targets: Sequence[tuple[int, Any]], method: str, *args: Any) -> list[Any]:
        refs = [getattr(a, method).remote(*args) for _, a in targets]
        return [
            self._get(ref, lambda a=a: getattr(a, method).remote(*args))
            for ref, (_, a) in zip(refs, targets, strict=True)
        ]

    # ---- logits -----------------------------------------------------------------------------
    def run_logits(self, ds: Any, spec: str) -> None:
        """Every missing (member, chunk) logits unit of this shard, in actors; the driver writes each one."""
        ray = self._ray
        grid = self.chunks(len(ds))
        units: list[tuple[int, int, Chunk]] = []
        total = 0
        for k, m in enumerate(self.ens):
            d = self.logits_dir(m, ds)
            for i, (s, e) in enumerate(grid):
                if not self.mine(i):
                    continue
                total += 1
                hit = (d / self.cache.chunk_name(s, e, "npy")).is_file()
                self.cache.count("logits", hit)
                if not hit:
                    units.append((i, k, (s, e)))
        task = f"logits @ {spec} (ray, {len(self.ens)} members)"
        done = total - len(units)
        self.progress(Progress(task, done, total, "cached" if not units else ""))
        if not units:
            return
        units.sort()  # chunk-major: a chunk's images are put once and shared by its members' units
        window = max(2, 2 * sum(len(r) for r in self._actors))
        images: dict[int, Any] = {}
        left: dict[int, int] = {}
        for i, _, _ in units:
            left[i] = left.get(i, 0) + 1
        inflight: dict[Any, tuple[int, int, Chunk, int]] = {}
        sources = self._sources(ds)

        def submit(i: int, k: int, c: Chunk, attempt: int) -> None:
            shared = sources[self._flat(k, i)]
            if shared is not None:
                arg: Any = SharedImages(shared.folder, shared.manifest_hash, shared.nbytes, c[0], c[1])
            else:
                if i not in images:
                    images[i] = ray.put(np.ascontiguousarray(ds.images[c[0] : c[1]]))
                arg = images[i]
            ref = self._actor(k, i).logits.remote(arg, c[0])
            inflight[ref] = (i, k, c, attempt)

        todo = iter(units)
        while True:
            while len(inflight) < window:
                u = next(todo, None)
                if u is None:
                    break
                submit(*u, 0)
            if not inflight:
                break
            ready, _ = ray.wait(list(inflight), num_returns=1)
            ref = ready[0]
            i, k, c, attempt = inflight.pop(ref)
            try:
                arr = ray_get(ray, ref)
            except OvdivError:
                raise
            except Exception as exc:
                if attempt < MAX_RESUBMITS and self._shared_miss(exc):
                    submit(i, k, c, attempt + 1)
                    continue
                if not is_lost(ray, exc) or attempt >= MAX_RESUBMITS:
                    raise
                log.warning("logits chunk %d of %s lost (%s); submitting it again", i, self.ens[k].name, exc)
                submit(i, k, c, attempt + 1)
                continue
            m = self.ens[k]
            self.cache.save_npy(self.logits_dir(m, ds) / self.cache.chunk_name(c[0], c[1], "npy"), arr)
            done += 1
            self.progress(Progress(task, done, total))
            left[i] -= 1
            if left[i] == 0:
                images.pop(i, None)

    # ---- features and gradient check --------------------------------------------------------
    def _member_features(self, m: Member, images: np.ndarray) -> dict[str, np.ndarray]:
        k = self.ens.names.index(m.name)
        ref_images = self._ray.put(images)
        return self._get(
            self._actor(k, 0).features.remote(ref_images), lambda: self._actor(k, 0).features.remote(ref_images)
        )

    def _check_member_gradients(self, k: int, images: np.ndarray) -> Any:
        mode, seed = self.opt.gradient_check, self.opt.seed
        return self._get(
            self._actor(k, 0).gradient_check.remote(images, mode, seed),
            lambda: self._actor(k, 0).gradient_check.remote(images, mode, seed),
        )

    # ---- attribution ------------------------------------------------------------------------
    def _attribution_folds(
        self, ds: Any, chunks: Sequence[tuple[int, Chunk]], on_images: Callable[[int], None]
    ) -> Iterator[tuple[Any, list[np.ndarray]]]:
        """Maps from the member actors, folded per chunk in a Ray task; chunks come back in order.

        Each batch's maps (one task per member, round-robin over the member's actors) go straight from the
        actors to the chunk's fold task (:func:`~ovdiv.evaluate.engine.fold_attribution_chunk`, the local
        engine's fold) through the object store; the driver receives only the chunk's statistics and kept
        example maps. At most ``max(2, actors per member)`` chunks are in flight.
        """
        ray = self._ray
        params = dict(self.opt.attribution_params)
        replicas = max(len(r) for r in self._actors)
        window = max(2, replicas)
        fold = ray.remote(num_cpus=0, max_retries=TASK_RETRIES, retry_exceptions=False)(_fold_task)
        names, n_cls = list(self.ens.names), self.ens.num_classes
        counter = iter(range(1 << 62))
        sources = self._sources(ds)

        def submit(i: int, s: int, e: int) -> Any:
            batches = self.attribution_batches(ds, s, e)
            img_ref: Any = None
            map_refs = []
            for b, n_b, _labels, _lg, targets in batches:
                j = next(counter)
                row = []
                for k in range(len(self.ens)):
                    shared = sources[self._flat(k, j)]
                    if shared is not None:
                        arg: Any = SharedImages(shared.folder, shared.manifest_hash, shared.nbytes, s, e)
                    else:
                        if img_ref is None:
                            img_ref = ray.put(np.ascontiguousarray(ds.images[s:e]))
                        arg = img_ref
                    row.append(
                        self._actor(k, j).attribute.remote(arg, b - s, n_b, np.ascontiguousarray(targets[k]), params)
                    )
                map_refs.append(row)
            ex_sel = self.attribution_examples(ds, i, s, e)[0]
            return fold.remote(names, n_cls, self.opt, s, batches, map_refs, ex_sel)

        pending: deque[tuple[int, Chunk, Any]] = deque()
        todo = iter(chunks)
        while True:
            while len(pending) < window:
                nxt = next(todo, None)
                if nxt is None:
                    break
                i, (s, e) = nxt
                pending.append((i, (s, e), submit(i, s, e)))
            if not pending:
                return
            i, (s, e), ref = pending.popleft()
            folded = self._get(ref, lambda i=i, s=s, e=e: submit(i, s, e))
            on_images(e - s)
            yield folded


def _fold_task(
    names: list[str],
    num_classes: int,
    options: Any,
    start: int,
    batches: list[AttributionBatch],
    map_refs: list[list[Any]],
    ex_sel: np.ndarray,
) -> tuple[Any, list[np.ndarray]]:
    """Ray task: fetch each batch's member maps in order and fold the chunk (the local engine's fold)."""
    import ray

    from ovdiv.evaluate.engine import fold_attribution_chunk

    def maps() -> Iterator[list[np.ndarray]]:
        for refs in map_refs:
            yield ray.get(refs)

    return fold_attribution_chunk(names, num_classes, options, start, batches, maps(), ex_sel)
