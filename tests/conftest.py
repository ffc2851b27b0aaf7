"""Shared fixtures. Tests are deterministic, offline and CPU-only."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

# Keep the 2-core CI machine responsive and results reproducible.
os.environ.setdefault("OMP_NUM_THREADS", "2")

SHARED_REFERENCE = Path(__file__).resolve().parents[2] / "shared" / "reference"


@pytest.fixture
def shared_reference() -> Path:
    """``../shared/reference`` when present (skip otherwise; never copied into the repo)."""
    if not SHARED_REFERENCE.is_dir():
        pytest.skip("../shared/reference is not present in this checkout")
    return SHARED_REFERENCE
