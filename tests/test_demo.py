"""The embedded demo end to end (tiny settings by default; the real one is `slow`)."""

from __future__ import annotations

import json
import time

import pytest

from ovdiv.demo import DEMO_DATASETS, run_demo
from ovdiv.report import SECTIONS


def _check_outputs(summary) -> dict:
    assert summary.report.is_file()
    html = summary.report.read_text()
    for sid, _ in SECTIONS:
        assert f'<section id="{sid}">' in html
    results = json.loads(summary.results.read_text())
    datasets = {r["dataset"] for r in results["rows"]}
    assert datasets == set(DEMO_DATASETS)
    ensembles = {r["ensemble"] for r in results["rows"] if r["ensemble"]}
    assert len(ensembles) == 10  # every 3-subset of the 5-member pool
    names = {m["name"] for m in results["metadata"]["members"]}
    assert "tiny_resnet_int8" in names and len(names) == 5
    assert any(r["metric"] == "attribution_diversity" and r["value"] is not None for r in results["rows"])
    verdict = json.loads(summary.verdict.read_text())
    assert verdict["passed"] == summary.passed
    assert (summary.out_dir / "members" / "tiny_resnet.onnx").is_file()
    return results


def test_demo_pipeline_smoke(tmp_path) -> None:
    summary = run_demo(tmp_path / "demo", train_images=256, eval_images=48, attribution_samples=8, epochs=1)
    _check_outputs(summary)
    # a second run resumes: nothing is retrained or re-exported, results are identical
    before = json.loads(summary.results.read_text())["rows"]
    again = run_demo(tmp_path / "demo", train_images=256, eval_images=48, attribution_samples=8, epochs=1)
    assert json.loads(again.results.read_text())["rows"] == before
    assert again.timings["export"] < 2.0


@pytest.mark.slow
def test_demo_default_settings_within_five_minutes(tmp_path) -> None:
    t0 = time.perf_counter()
    summary = run_demo(tmp_path / "demo")
    elapsed = time.perf_counter() - t0
    results = _check_outputs(summary)
    assert summary.passed, json.loads(summary.verdict.read_text())["rules"]
    best = {r["member"]: r["value"] for r in results["rows"] if r["dataset"] == "demo" and r["metric"] == "top1"}
    assert max(best.values()) > 0.7
    assert elapsed < 300, f"demo took {elapsed:.0f} s"
