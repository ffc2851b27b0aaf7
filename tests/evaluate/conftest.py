"""Tiny deployed members (see ``tests/runtime/tiny_members.py``), built once per session."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

import pytest

_NAME = "ovdiv_tests_tiny_members"
if _NAME not in sys.modules:
    _spec = importlib.util.spec_from_file_location(
        _NAME, Path(__file__).resolve().parents[1] / "runtime" / "tiny_members.py"
    )
    assert _spec is not None and _spec.loader is not None
    _mod = importlib.util.module_from_spec(_spec)
    sys.modules[_NAME] = _mod
    _spec.loader.exec_module(_mod)
tiny = sys.modules[_NAME]


@pytest.fixture(scope="session")
def tiny_pool(tmp_path_factory: pytest.TempPathFactory):
    if getattr(tiny, "POOL", None) is None:  # shared by tests/runtime and tests/evaluate in one session
        tiny.POOL = tiny.build_pool(tmp_path_factory.mktemp("tiny_pool"))
    return tiny.POOL
