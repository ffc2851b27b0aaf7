"""``scripts/zoo_parity.py`` on a few small zoo models (slow: conversion + float64 torch references)."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import pytest

SCRIPT = Path(__file__).resolve().parents[2] / "scripts" / "zoo_parity.py"


def _load():
    spec = importlib.util.spec_from_file_location("zoo_parity", SCRIPT)
    assert spec is not None and spec.loader is not None
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


@pytest.mark.slow
def test_zoo_parity_small_models(tmp_path, capsys) -> None:
    zoo = _load()
    out = tmp_path / "zoo.jsonl"
    models = "timm:ghostnet_100,tv:squeezenet1_1"
    args = ["--models", models, "--formats", "fp32,onnx", "--size", "64", "--out", str(out)]
    assert zoo.main(args) == 0
    summary = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert summary["n"] == 4 and summary["wrong"] == []
    rows = [json.loads(line) for line in out.read_text().splitlines()]
    assert {r["status"] for r in rows} == {"ok"}, rows
    assert all(r["spearman"] >= zoo.SPEARMAN_OK for r in rows)
    # resumable: a second run measures nothing again
    assert zoo.main(args) == 0
    assert len(out.read_text().splitlines()) == 4


def test_wrong_criterion_needs_both_signals() -> None:
    """``wrong`` = Spearman < 0.999 AND rel L2 > 10x floor (one signal alone is not enough)."""
    import numpy as np

    zoo = _load()
    rng = np.random.default_rng(0)
    g64 = rng.standard_normal((1, 3, 8, 8))
    assert zoo._spearman(g64, g64) == pytest.approx(1.0)
    assert zoo._spearman(rng.standard_normal((1, 3, 8, 8)), g64) < zoo.SPEARMAN_OK
    assert zoo._rel(g64 * 1.5, g64) == pytest.approx(0.5)
    assert zoo.summary([{"model": "a", "format": "fp32", "status": "wrong"}])["wrong"] == ["a/fp32"]
