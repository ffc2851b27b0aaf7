"""``ovdiv evaluate``: happy paths and one clear error line (exit 2, no results file) per bad input."""

from __future__ import annotations

import json
import shutil

import pytest
import torch
from click.testing import CliRunner
from ovdiv_tests_tiny_members import MicroCNN, NaNNet, TwoHeads, export_ir  # type: ignore[import-not-found]

from ovdiv.cli import cli


@pytest.fixture(scope="module")
def bad_members(tiny_pool, tmp_path_factory):
    root = tmp_path_factory.mktemp("bad")
    torch.manual_seed(0)
    out = {
        "seven": export_ir(MicroCNN(num_classes=7), root / "seven.xml"),
        "det": export_ir(TwoHeads(), root / "det.xml"),
        "nan": export_ir(NaNNet(), root / "nan.xml"),
    }
    nobin = root / "nobin"
    nobin.mkdir()
    shutil.copy(tiny_pool.ir["m1"], nobin / "m1.xml")
    out["nobin"] = nobin / "m1.xml"
    notir = root / "notir.xml"
    notir.write_text("<?xml version='1.0'?><config><item>1</item></config>")
    notir.with_suffix(".bin").write_bytes(b"\0" * 8)
    out["notir"] = notir
    return out


def _run(args, tmp_path):
    runner = CliRunner()
    return runner.invoke(cli, [*args, "--cache-dir", str(tmp_path / "cache"), "--out", str(tmp_path / "out")])


def test_cli_ensemble_and_pool(tiny_pool, tmp_path):
    ir = [str(tiny_pool.ir[n]) for n in ("m0", "m1", "m2")]
    res = _run(
        [
            "evaluate",
            "--ensemble",
            *ir,
            "--dataset",
            "demo",
            "--limit",
            "32",
            "--attribution",
            "none",
            "--cka-samples",
            "16",
            "--consensus",
            "average",
            "--consensus",
            "majority",
            "--bootstrap",
            "0",
            "--ci-level",
            "0.9",
        ],
        tmp_path,
    )
    assert res.exit_code == 0, res.output
    assert "m0+m1+m2" in res.output and "results.json" in res.output
    doc = json.loads((tmp_path / "out" / "results.json").read_text())
    metrics = {r["metric"] for r in doc["rows"]}
    assert {"ensemble_top1", "ensemble_top1:majority", "cka_mean", "top1"} <= metrics
    assert doc["metadata"]["datasets"][0]["spec"] == "demo" and doc["metadata"]["datasets"][0]["manifest"]["n"] == 32
    # --bootstrap 0: binomial intervals (at --ci-level) and McNemar p-values remain, no bootstrap intervals
    assert doc["metadata"]["ci"]["bootstrap"] == 0 and doc["metadata"]["ci"]["level"] == 0.9
    by = {(r["metric"], r["member"]): r for r in doc["rows"]}
    assert (
        by[("top1", "m0")]["ci_level"] == 0.9 and by[("ensemble_top1:majority", None)]["ci_method"] == "clopper-pearson"
    )
    assert "ci_low" not in by[("improvement", None)] and 0 <= by[("improvement:majority", None)]["p_value"] <= 1
    args = ["evaluate", "--pool", *ir, "--size", "2", "--dataset", "demo", "--limit", "32"]
    res = _run([*args, "--attribution", "none", "--cka-samples", "16"], tmp_path)
    assert res.exit_code == 0, res.output
    doc = json.loads((tmp_path / "out" / "results.json").read_text())
    assert sorted({r["ensemble"] for r in doc["rows"] if r["ensemble"]}) == ["m0+m1", "m0+m2", "m1+m2"]
    imp = [r for r in doc["rows"] if r["metric"] == "improvement"]
    assert all(r["ci_method"] == "bootstrap-percentile" and r["ci_low"] <= r["value"] <= r["ci_high"] for r in imp)
    corr = {c["metric"]: c for c in doc["correlation"]}
    assert corr["disagreement"]["n_ensembles"] == 3 and corr["disagreement"]["ci_level"] == 0.95
    assert (
        (tmp_path / "out" / "results.csv")
        .read_text()
        .startswith("ensemble,member,dataset,metric,value,ci_low,ci_high,ci_method,ci_level,p_value\n")
    )
    assert doc["metadata"]["cache"]["misses"] == {}  # logits and features came from the first command's cache


@pytest.mark.parametrize(
    ("bad", "message"),
    [
        ("seven", r"members m0 \(10 classes\) and seven \(7 classes\) disagree on the number of classes"),
        ("det", r"det \(.*det\.xml\) has 2 outputs; ovdiv needs one \[N, C\] logits output"),
        ("nobin", r"weights file m1\.bin is missing"),
        ("notir", r"notir\.xml is not an OpenVINO IR"),
        ("nan", r"non-finite \(NaN/inf\) logits from member\(s\): nan \(16 of 16 images on demo\)"),
        ("spec", r"error: .*nosuchset"),
    ],
)
def test_cli_bad_input(bad, message, tiny_pool, bad_members, tmp_path):
    members = [str(tiny_pool.ir["m0"])] + ([str(bad_members[bad])] if bad != "spec" else [str(tiny_pool.ir["m1"])])
    dataset = "nosuchset" if bad == "spec" else "demo"
    # NaN runs with the default saliency: the NaN check must come before attribution uses the logits
    extra = [] if bad == "nan" else ["--attribution", "none"]
    res = _run(["evaluate", "--ensemble", *members, "--dataset", dataset, "--limit", "16", *extra], tmp_path)
    assert res.exit_code == 2, res.output
    lines = [ln for ln in res.output.splitlines() if ln.strip()]
    errors = [ln for ln in lines if ln.startswith("error:")]
    assert len(errors) == 1 and "Traceback" not in res.output, res.output
    import re

    assert re.search(message, errors[0]), errors[0]
    assert not (tmp_path / "out" / "results.json").exists()
    assert not (tmp_path / "out" / "results.csv").exists()


def test_cli_usage_errors(tiny_pool, tmp_path):
    ir = str(tiny_pool.ir["m0"])
    res = _run(["evaluate", "--dataset", "demo"], tmp_path)
    assert res.exit_code == 2 and "no members given" in res.output
    res = _run(["evaluate", "--ensemble", ir, "--size", "2", "--dataset", "demo"], tmp_path)
    assert res.exit_code == 2 and "--size needs --pool" in res.output
    res = _run(["evaluate", "--ensemble", ir, "--pool", ir, "--dataset", "demo"], tmp_path)
    assert res.exit_code == 2 and "either --ensemble or --pool" in res.output
    res = _run(["evaluate", "--ensemble", ir, "--dataset", "demo", "--ci-level", "1.5"], tmp_path)
    assert res.exit_code == 2 and "--ci-level 1.5 is not in [0.5, 1)" in res.output
    res = _run(["evaluate", "--ensemble", ir, "--dataset", "demo", "--bootstrap", "-1"], tmp_path)
    assert res.exit_code == 2 and "--bootstrap must be >= 0" in res.output
