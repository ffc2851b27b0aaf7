"""The content-addressed evaluation cache.

Every stored item lives under ``<cache_dir>/evaluate/<kind>/<key[:2]>/<key>/`` where ``key`` is the
SHA-256 of a JSON description of everything that determines its content (member artifact hashes,
dataset manifest hash, precision, device, backend and the options that matter for that kind).
Kinds:

* ``logits`` — one member on one dataset: ``chunk_<start>_<stop>.npy`` float32 ``(stop-start, C)``.
* ``features`` — one member's CKA features on the first ``n`` samples: ``features.npz``.
* ``attribution`` — a pool on one dataset under one attribution setting: ``chunk_<start>_<stop>.npz``
  (pairwise attribution statistics of the chunk) and ``examples.npz`` (the report's example maps).

Files are written atomically (temporary sibling + rename), so an interrupted run leaves only whole
chunks behind and the next run resumes after them; shards running in parallel share the cache.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
from pathlib import Path
from typing import Any

import numpy as np

from ovdiv.atomic import atomic_path, write_json
from ovdiv.errors import CacheError

__all__ = ["EvalCache", "default_cache_dir", "CACHE_VERSION"]

log = logging.getLogger("ovdiv.evaluate")
CACHE_VERSION = 1


def default_cache_dir() -> Path:
    """``$OVDIV_CACHE`` or ``$XDG_CACHE_HOME/ovdiv`` (``~/.cache/ovdiv``), as for prepared data."""
    env = os.environ.get("OVDIV_CACHE")
    if env:
        return Path(env)
    xdg = os.environ.get("XDG_CACHE_HOME")
    return (Path(xdg) if xdg else Path.home() / ".cache") / "ovdiv"


class EvalCache:
    """Content-addressed store of per-member and per-pool evaluation work.

    Args:
        cache_dir: Root cache folder (``evaluate/`` is created inside it).
    """

    def __init__(self, cache_dir: str | os.PathLike[str] | None = None) -> None:
        self.root = Path(cache_dir if cache_dir is not None else default_cache_dir()) / "evaluate"
        try:
            self.root.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise CacheError(
                f"cache folder {self.root} cannot be created ({exc})", "pass a writable --cache-dir"
            ) from exc
        self.hits: dict[str, int] = {}
        self.misses: dict[str, int] = {}

    @staticmethod
    def key(**parts: Any) -> str:
        """SHA-256 of the canonical JSON of ``parts`` (plus the cache format version)."""
        blob = json.dumps({"cache_version": CACHE_VERSION, **parts}, sort_keys=True, default=str)
        return hashlib.sha256(blob.encode()).hexdigest()

    def unit_dir(self, kind: str, key: str, describe: dict[str, Any] | None = None) -> Path:
        """The folder of one unit; writes ``unit.json`` (its description) on first use."""
        d = self.root / kind / key[:2] / key
        d.mkdir(parents=True, exist_ok=True)
        if describe is not None and not (d / "unit.json").exists():
            write_json(d / "unit.json", describe)
        return d

    @staticmethod
    def chunk_name(start: int, stop: int, ext: str) -> str:
        """``chunk_<start>_<stop>.<ext>`` with zero-padded indices."""
        return f"chunk_{start:010d}_{stop:010d}.{ext}"

    def count(self, kind: str, hit: bool) -> None:
        """Record a cache hit or miss of ``kind``."""
        table = self.hits if hit else self.misses
        table[kind] = table.get(kind, 0) + 1

    @staticmethod
    def save_npy(path: Path, array: np.ndarray) -> None:
        """Atomically write one array."""
        with atomic_path(path, suffix=".npy") as tmp, open(tmp, "wb") as fh:
            np.save(fh, array)

    @staticmethod
    def load_npy(path: Path) -> np.ndarray | None:
        """Read one array; None (and the file is removed) when missing or unreadable."""
        if not path.is_file():
            return None
        try:
            return np.load(path, allow_pickle=False)
        except (OSError, ValueError) as exc:
            log.warning("cache entry %s is unreadable (%s); recomputing it", path, exc)
            path.unlink(missing_ok=True)
            return None

    @staticmethod
    def save_npz(path: Path, **arrays: Any) -> None:
        """Atomically write several arrays."""
        with atomic_path(path, suffix=".npz") as tmp, open(tmp, "wb") as fh:
            np.savez(fh, **arrays)

    @staticmethod
    def load_npz(path: Path) -> dict[str, np.ndarray] | None:
        """Read an ``.npz`` fully; None (and the file is removed) when missing or unreadable."""
        if not path.is_file():
            return None
        try:
            with np.load(path, allow_pickle=False) as z:
                return {k: z[k] for k in z.files}
        except (OSError, ValueError, EOFError) as exc:
            log.warning("cache entry %s is unreadable (%s); recomputing it", path, exc)
            path.unlink(missing_ok=True)
            return None

    def stats(self) -> dict[str, dict[str, int]]:
        """Hits and misses per kind in this run."""
        return {"hits": dict(self.hits), "misses": dict(self.misses)}
