"""Seeded numpy legacy ``RandomState`` streams, cheap to (re)create.

``np.random.RandomState(seed)`` first seeds MT19937 from OS entropy and then re-seeds it (~0.1-0.2 ms);
``RandomState.seed(seed)`` runs only the legacy ``init_genrand(seed)`` and resets the Gaussian cache, so it
yields the identical stream in ~1 µs. Streams are cached per thread, so concurrent callers never share one.
"""

from __future__ import annotations

import threading

import numpy as np

__all__ = ["global_stream", "private_stream"]

_local = threading.local()


def _stream(slot: str, seed: int) -> np.random.RandomState:
    rs = getattr(_local, slot, None)
    if rs is None:
        rs = np.random.RandomState(0)
        setattr(_local, slot, rs)
    rs.seed(seed)
    return rs


def global_stream(seed: int) -> np.random.RandomState:
    """The reference's global stream after ``np.random.seed(seed)`` (a per-thread instance, re-seeded)."""
    return _stream("global_rs", seed)


def private_stream(seed: int) -> np.random.RandomState:
    """A corruption's private ``np.random.RandomState(seed)`` (a second per-thread instance, re-seeded).

    Distinct from :func:`global_stream`'s instance, so drawing from it never disturbs the global stream.
    """
    return _stream("private_rs", seed)
