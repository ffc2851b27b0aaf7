"""Smoke test of scripts/bench_subsets.py at a tiny size: one JSON line, exact fast path."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

SCRIPT = Path(__file__).resolve().parents[2] / "scripts" / "bench_subsets.py"


def test_bench_subsets_tiny():
    args = ["--members", "5", "--samples", "300", "--classes", "50", "--batch", "100"]
    args += ["--map-samples", "40", "--feature-samples", "100", "--check-samples", "64"]
    out = subprocess.run([sys.executable, str(SCRIPT), *args], capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr
    lines = out.stdout.strip().splitlines()
    assert len(lines) == 1
    res = json.loads(lines[0])
    assert res["subsets"] == 10 and res["samples"] == 300
    assert res["slice_max_abs_diff"] <= 1e-9
    assert res["score_s"] >= 0 and res["peak_rss_gb"] > 0
    assert res["metrics_per_row"] == 23
    assert res["intervals_resamples"] == 2000 and res["intervals_s"] >= 0 and res["intervals_peak_rss_gb"] > 0
    assert 0 < res["improvement_ci_width_median"] < 1
