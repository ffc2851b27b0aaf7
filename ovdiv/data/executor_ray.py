"""``ovdiv data prepare --executor ray``: the (spec, chunk) work units of :mod:`ovdiv.data.prepared` as Ray tasks.

Each chunk of ``batch_size`` images is one task running the same function as a local worker thread
(:func:`ovdiv.data.prepared._produce_chunk`: decode, crop, corrupt with per-image seeds, JPEG round-trip).
Chunks come back through Ray's object store and the driver writes them, in canonical order, through the
same memmap and atomic folder rename as a local run, so the prepared folder is identical whatever the
executor. A task lost with its worker or node is submitted again (its images do not depend on where it
runs); a real error (an unreadable image under ``strict``) fails the run once with its own message.

The data must be readable at the same path on every node (shared storage), as for ``--shard``.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator, Sequence
from typing import Any

from ovdiv.raycluster import import_ray, is_lost, ray_get

__all__ = ["iter_chunks_ray"]

log = logging.getLogger("ovdiv.data")

MAX_RESUBMITS = 5


def _produce(plan: Any, start: int, stop: int, strict: bool) -> Any:
    """The task body: one chunk of the plan (runs on a Ray worker)."""
    from ovdiv.data.prepared import _produce_chunk

    return _produce_chunk(plan, plan.indices[start:stop], strict)


def iter_chunks_ray(plan: Any, bounds: Sequence[tuple[int, int]], *, strict: bool) -> Iterator[tuple[int, Any]]:
    """Yield ``(stop, chunk)`` for every ``(start, stop)`` in ``bounds``, in order, computed by Ray tasks.

    Needs a connected Ray (:func:`ovdiv.raycluster.connect`). At most two tasks per cluster CPU are in flight,
    so the driver's memory stays bounded whatever the dataset size.
    """
    ray = import_ray()
    task = ray.remote(num_cpus=1, max_retries=3, retry_exceptions=False)(_produce)
    plan_ref = ray.put(plan)
    window = max(2, 2 * int(ray.cluster_resources().get("CPU", 1)))

    def submit(b: tuple[int, int]) -> Any:
        return task.remote(plan_ref, b[0], b[1], strict)

    pending: list[tuple[tuple[int, int], Any]] = []
    it = iter(bounds)
    for b in it:
        pending.append((b, submit(b)))
        if len(pending) >= window:
            break
    while pending:
        b, ref = pending.pop(0)
        chunk = None
        for attempt in range(MAX_RESUBMITS + 1):
            try:
                chunk = ray_get(ray, ref)
                break
            except Exception as exc:
                if not is_lost(ray, exc) or attempt == MAX_RESUBMITS:
                    raise
                log.warning("chunk %d:%d lost with its worker (%s); resubmitting", b[0], b[1], type(exc).__name__)
                ref = submit(b)
        nxt = next(it, None)
        if nxt is not None:
            pending.append((nxt, submit(nxt)))
        yield b[1], chunk
