"""Shared fixtures. Tests are deterministic, offline and CPU-only."""

from __future__ import annotations

import importlib.util
import os
import sys
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


# tests/runtime/tiny_members.py as module ``ovdiv_tests_tiny_members`` (importlib mode: no package imports
# between test folders); tests/runtime and tests/evaluate import their members from it.
_TINY_NAME = "ovdiv_tests_tiny_members"
if _TINY_NAME not in sys.modules:
    _spec = importlib.util.spec_from_file_location(
        _TINY_NAME, Path(__file__).resolve().parent / "runtime" / "tiny_members.py"
    )
    assert _spec is not None and _spec.loader is not None
    _mod = importlib.util.module_from_spec(_spec)
    sys.modules[_TINY_NAME] = _mod
    _spec.loader.exec_module(_mod)
tiny = sys.modules[_TINY_NAME]


@pytest.fixture(scope="session")
def tiny_pool(tmp_path_factory: pytest.TempPathFactory):
    """Tiny deployed members (see ``tests/runtime/tiny_members.py``), built once per session."""
    if getattr(tiny, "POOL", None) is None:  # shared by tests/runtime and tests/evaluate in one session
        tiny.POOL = tiny.build_pool(tmp_path_factory.mktemp("tiny_pool"))
    return tiny.POOL
