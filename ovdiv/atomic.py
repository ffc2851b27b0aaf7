"""Atomic file writes: write to a temporary sibling, fsync, then rename over the target.

A reader never sees a half-written file: it sees the old file, no file, or the complete new one.
"""

from __future__ import annotations

import contextlib
import json
import os
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import IO, Any

__all__ = ["atomic_path", "atomic_open", "write_json", "write_text", "write_bytes"]


@contextlib.contextmanager
def atomic_path(target: str | os.PathLike[str], suffix: str = "") -> Iterator[Path]:
    """Yield a temporary path next to ``target``; rename it onto ``target`` if the block succeeds.

    Args:
        target: Final file path. Its parent folder is created.
        suffix: Suffix of the temporary file (some writers insist on an extension, e.g. ``.npy``).

    Yields:
        A path in the same folder as ``target`` (same filesystem, so the rename is atomic).
    """
    target = Path(target)
    target.parent.mkdir(parents=True, exist_ok=True)
    # Not tempfile.mkstemp: its 0600 mode would survive the rename. O_EXCL + 0o666 honours the umask.
    tmp = target.parent / f".{target.name}.{os.getpid()}.{uuid.uuid4().hex[:12]}{suffix}.tmp"
    os.close(os.open(tmp, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o666))
    try:
        yield tmp
        if tmp.exists():
            with open(tmp, "rb+") as fh:
                os.fsync(fh.fileno())
        os.replace(tmp, target)
    finally:
        if tmp.exists():
            tmp.unlink()


@contextlib.contextmanager
def atomic_open(target: str | os.PathLike[str], mode: str = "w", **kwargs: Any) -> Iterator[IO[Any]]:
    """Open a temporary file for writing; it replaces ``target`` only when the block succeeds."""
    with atomic_path(target) as tmp, open(tmp, mode, **kwargs) as fh:
        yield fh


def write_json(target: str | os.PathLike[str], obj: Any, *, indent: int | None = 2) -> None:
    """Atomically write ``obj`` as JSON (sorted keys are not forced; insertion order is kept)."""
    with atomic_open(target, "w", encoding="utf-8") as fh:
        json.dump(obj, fh, indent=indent, allow_nan=True)
        fh.write("\n")


def write_text(target: str | os.PathLike[str], text: str) -> None:
    """Atomically write a text file (UTF-8)."""
    with atomic_open(target, "w", encoding="utf-8") as fh:
        fh.write(text)


def write_bytes(target: str | os.PathLike[str], data: bytes) -> None:
    """Atomically write a binary file."""
    with atomic_open(target, "wb") as fh:
        fh.write(data)
