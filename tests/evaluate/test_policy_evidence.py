"""Policies on statistical evidence: confidence bounds, McNemar tests, old results files."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from ovdiv.errors import PolicyError
from ovdiv.evaluate.policy import Policy
from ovdiv.evaluate.results import EvalResult, read_results_json


def _ci(lo: float, hi: float, method: str = "bootstrap-percentile", p: float | None = None) -> dict:
    out = {"ci_low": lo, "ci_high": hi, "ci_method": method, "ci_level": 0.95}
    if p is not None:
        out["p_value"] = p
    return out


def _row(ens: str | None, member: str | None, metric: str, value: float, ci: dict | None = None) -> dict:
    return {"ensemble": ens, "member": member, "dataset": "lines1.6", "metric": metric, "value": value, **(ci or {})}


ROWS = [
    _row(None, "a", "top1", 0.40, _ci(0.37, 0.43, "clopper-pearson")),
    _row(None, "b", "top1", 0.44, _ci(0.41, 0.47, "clopper-pearson")),
    _row("a+b", None, "ensemble_top1", 0.452, _ci(0.42, 0.48, "clopper-pearson")),
    # Δ = 0.452 − 0.44 = 0.012: passes "≥ +0.5 pt" on the estimate, not on the lower bound
    _row("a+b", None, "improvement", 0.012, _ci(-0.003, 0.027, p=0.08)),
    _row("a+b", None, "improvement_vs_mean", 0.032, _ci(0.015, 0.05)),
    _row("a+b", None, "ensemble_ece", 0.05),
]

BEATS_BEST = {
    "id": "beats-best",
    "dataset": "lines1.6",
    "metric": "ensemble_top1",
    "min": 0.005,
    "relative_to": {"member": "best", "metric": "top1"},
}


def _check(rule: dict, rows=ROWS):
    return Policy.from_dict({"rules": [rule]}).check(rows)


def test_relative_rule_passes_on_estimate_but_fails_on_lower_bound() -> None:
    plain = _check(BEATS_BEST)
    assert plain.passed
    v = _check({**BEATS_BEST, "bound": "lower"})
    assert not v.passed and v.exit_code == 1
    (c,) = v.checks
    assert c.passed_on_estimate is True and c.passed is False
    assert c.observed == pytest.approx(0.012)
    assert (c.ci_low, c.ci_high, c.ci_level, c.bound) == (-0.003, 0.027, 0.95, "lower")  # the improvement row's
    assert "passes on the estimate 0.0120 but its 95% lower bound -0.0030 is not >= 0.005" in c.note
    d = v.to_dict()
    assert d["schema"] == "ovdiv-verdict/2"
    assert d["checks"][0]["passed_on_estimate"] is True and d["checks"][0]["bound"] == "lower"
    assert "lower confidence bound" in v.rules[0]["description"]


def test_bounds_on_absolute_rules_and_mean_baseline() -> None:
    assert _check({"dataset": "lines1.6", "metric": "ensemble_top1", "min": 0.41, "bound": "lower"}).passed
    v = _check({"dataset": "lines1.6", "metric": "ensemble_top1", "min": 0.43, "bound": "lower"})
    assert not v.passed and v.checks[0].passed_on_estimate
    assert _check({"dataset": "lines1.6", "metric": "improvement", "max": 0.03, "bound": "upper"}).passed
    assert not _check({"dataset": "lines1.6", "metric": "improvement", "max": 0.02, "bound": "upper"}).passed
    mean_rule = {**BEATS_BEST, "min": 0.01, "relative_to": {"member": "mean", "metric": "top1"}, "bound": "lower"}
    v = _check(mean_rule)
    assert v.passed and v.checks[0].ci_low == 0.015  # the improvement_vs_mean row's interval


def test_estimate_failure_is_not_rescued_by_the_bound() -> None:
    v = _check({"dataset": "lines1.6", "metric": "ensemble_top1", "min": 0.46, "bound": "lower"})
    c = v.checks[0]
    assert not v.passed and c.passed_on_estimate is False and "passes on the estimate" not in c.note


def test_mcnemar_test_rule() -> None:
    rule = {"dataset": "lines1.6", "metric": "improvement", "min": 0.0, "test": "mcnemar", "alpha": 0.05}
    v = _check(rule)
    c = v.checks[0]
    assert not v.passed and c.p_value == 0.08 and c.alpha == 0.05 and c.test == "mcnemar"
    assert "McNemar p = 0.08 is not < alpha = 0.05" in c.note and "passes on the estimate" in c.note
    assert _check({**rule, "alpha": 0.1}).passed
    assert _check({**BEATS_BEST, "min": 0.0, "test": "mcnemar", "alpha": 0.1}).passed  # via the improvement row
    no_alpha = {k: v for k, v in rule.items() if k != "alpha"}
    assert Policy.from_dict({"rules": [no_alpha]}).rules[0].alpha == 0.05


def test_missing_evidence_fails_with_a_reason() -> None:
    bare = [{k: r[k] for k in ("ensemble", "member", "dataset", "metric", "value")} for r in ROWS]
    v = _check({**BEATS_BEST, "bound": "lower"}, bare)
    assert not v.passed and "no lower confidence bound" in v.checks[0].note and "--bootstrap 0" in v.checks[0].note
    v = _check({"dataset": "lines1.6", "metric": "improvement", "min": 0.0, "test": "mcnemar"}, bare)
    assert not v.passed and "no McNemar p-value" in v.checks[0].note


@pytest.mark.parametrize(
    ("rule", "message"),
    [
        ({"metric": "improvement", "max": 0.1, "bound": "lower"}, "bound 'lower' but not exactly a 'min'"),
        ({"metric": "improvement", "min": 0.0, "max": 0.1, "bound": "upper"}, "bound 'upper'"),
        ({"metric": "improvement", "min": 0.0, "alpha": 0.05}, "'alpha' without 'test'"),
        ({"metric": "ensemble_top1", "min": 0.0, "test": "mcnemar"}, "McNemar test applies to 'improvement'"),
        ({"metric": "improvement", "min": 0.0, "bound": "low"}, "invalid at rules/0/bound"),
        ({"metric": "improvement", "min": 0.0, "test": "mcnemar", "alpha": 1.5}, "invalid at rules/0/alpha"),
    ],
)
def test_malformed_evidence_rules(rule, message) -> None:
    with pytest.raises(PolicyError, match=message):
        Policy.from_dict({"rules": [rule]})


def test_unsupported_paired_difference_is_a_clear_error() -> None:
    rule = {**BEATS_BEST, "relative_to": {"member": "a", "metric": "top1"}, "bound": "lower"}
    with pytest.raises(PolicyError, match="lack intervals for the difference ensemble_top1 − member a top1"):
        _check(rule)


def test_v1_results_file_loads_everywhere(tmp_path) -> None:
    v1 = {
        "schema": "ovdiv-results/1",
        "complete": True,
        "metadata": {"options": {}},
        "rows": [{k: r[k] for k in ("ensemble", "member", "dataset", "metric", "value")} for r in ROWS],
        "extras": {},
    }
    (tmp_path / "results.json").write_text(json.dumps(v1))
    res = EvalResult.load(tmp_path)
    assert len(res.rows) == len(ROWS) and res.correlation == [] and "ci_low" not in res.rows[0]
    data, _ = read_results_json(tmp_path)
    assert data["schema"] == "ovdiv-results/1"
    assert Policy.from_dict({"rules": [BEATS_BEST]}).check(tmp_path).passed
    assert not Policy.from_dict({"rules": [{**BEATS_BEST, "bound": "lower"}]}).check(tmp_path).passed
    # re-saved, it becomes a version-2 file with the same rows
    res.save(tmp_path / "v2")
    doc = json.loads((tmp_path / "v2" / "results.json").read_text())
    assert doc["schema"] == "ovdiv-results/2" and doc["correlation"] == []


def test_v2_rows_round_trip_with_intervals(tmp_path) -> None:
    corr = [{"dataset": "lines1.6", "metric": "disagreement", "n_ensembles": 3, "pearson": 0.5, "pearson_ci_low": 0.1}]
    res = EvalResult(rows=[dict(r) for r in ROWS], metadata={}, correlation=corr)
    res.save(tmp_path)
    back = EvalResult.load(tmp_path)
    assert back.rows == [dict(r) for r in ROWS] and back.correlation == corr
    lines = (tmp_path / "results.csv").read_text().splitlines()
    assert lines[0] == "ensemble,member,dataset,metric,value,ci_low,ci_high,ci_method,ci_level,p_value"
    assert lines[4] == "a+b,,lines1.6,improvement,0.012,-0.003,0.027,bootstrap-percentile,0.95,0.08"
    assert lines[6] == "a+b,,lines1.6,ensemble_ece,0.05,,,,,"


def test_certify_cli_fails_on_lower_bound_and_says_why(tmp_path) -> None:
    res = EvalResult(rows=[dict(r) for r in ROWS], metadata={})
    res.save(tmp_path / "res")
    policy = tmp_path / "p.json"
    policy.write_text(json.dumps({"name": "gate", "rules": [{**BEATS_BEST, "bound": "lower"}]}))
    run = subprocess.run(
        [sys.executable, "-m", "ovdiv", "certify", str(tmp_path / "res"), "--policy", str(policy)],
        capture_output=True,
        text=True,
        env={**os.environ, "COLUMNS": "250"},
    )
    assert run.returncode == 1, run.stdout + run.stderr
    out = run.stdout
    assert "passes on estimate" in out and "lower bound -0.0030 is not >= 0.005" in out
    assert "95% [-0.0030, 0.0270]" in out and "FAIL" in out
    policy.write_text(json.dumps({"rules": [BEATS_BEST]}))
    ok = subprocess.run(
        [sys.executable, "-m", "ovdiv", "certify", str(tmp_path / "res"), "--policy", str(policy)], capture_output=True
    )
    assert ok.returncode == 0
    Path(policy).write_text(json.dumps({"rules": [{**BEATS_BEST, "relative_to": {"member": "a"}, "bound": "lower"}]}))
    bad = subprocess.run(
        [sys.executable, "-m", "ovdiv", "certify", str(tmp_path / "res"), "--policy", str(policy)],
        capture_output=True,
        text=True,
    )
    assert bad.returncode == 2 and "lack intervals" in bad.stdout + bad.stderr and "Traceback" not in bad.stderr


VS_MEMBER = [
    *ROWS,
    # Acc_ens − Acc_a = 0.052 (interval clear of 0.005), Acc_ens − Acc_b = 0.012 (lower bound below it)
    {**_row("a+b", "a", "improvement_vs_member", 0.052, _ci(0.03, 0.07, p=0.001))},
    {**_row("a+b", "b", "improvement_vs_member", 0.012, _ci(-0.004, 0.028, p=0.09))},
]


def test_named_member_baseline_uses_the_improvement_vs_member_row() -> None:
    rule = {**BEATS_BEST, "relative_to": {"member": "a", "metric": "top1"}, "bound": "lower"}
    v = _check(rule, VS_MEMBER)
    assert v.passed and v.checks[0].ci_low == 0.03 and v.checks[0].observed == pytest.approx(0.052)
    v = _check({**rule, "relative_to": {"member": "b", "metric": "top1"}}, VS_MEMBER)
    assert not v.passed and v.checks[0].passed_on_estimate is True
    assert "lower bound -0.0040 is not >= 0.005" in v.checks[0].note
    test_rule = {**BEATS_BEST, "min": 0.0, "relative_to": {"member": "b", "metric": "top1"}, "test": "mcnemar"}
    v = _check(test_rule, VS_MEMBER)
    assert not v.passed and v.checks[0].p_value == 0.09
    assert _check({**test_rule, "relative_to": {"member": "a", "metric": "top1"}}, VS_MEMBER).passed
    worst = {**rule, "relative_to": {"member": "worst", "metric": "top1"}}
    with pytest.raises(PolicyError, match="lack intervals"):
        _check(worst, VS_MEMBER)
