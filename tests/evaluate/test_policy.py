from __future__ import annotations

import json
import math
import subprocess
import sys
from pathlib import Path

import pytest

from ovdiv.errors import PolicyError
from ovdiv.evaluate.policy import Policy

ROWS = [
    {"ensemble": None, "member": "a", "dataset": "lines1.6", "metric": "top1", "value": 0.40},
    {"ensemble": None, "member": "b", "dataset": "lines1.6", "metric": "top1", "value": 0.44},
    {"ensemble": None, "member": "c", "dataset": "lines1.6", "metric": "top1", "value": 0.30},
    {"ensemble": "a+b", "member": None, "dataset": "lines1.6", "metric": "ensemble_top1", "value": 0.46},
    {"ensemble": "a+c", "member": None, "dataset": "lines1.6", "metric": "ensemble_top1", "value": 0.41},
    {"ensemble": "a+b", "member": None, "dataset": "lines1.6", "metric": "improvement", "value": 0.02},
    {"ensemble": "a+c", "member": None, "dataset": "lines1.6", "metric": "improvement", "value": 0.01},
    {"ensemble": None, "member": "a", "dataset": "demo", "metric": "top1", "value": 0.9},
    {"ensemble": None, "member": "b", "dataset": "demo", "metric": "top1", "value": float("nan")},
]


def _results(tmp_path: Path, rows=ROWS) -> Path:
    path = tmp_path / "results.json"
    path.write_text(json.dumps({"schema": "ovdiv-results/1", "metadata": {}, "rows": rows}))
    return path


def _policy(tmp_path: Path, rules, name="p.json") -> Path:
    path = tmp_path / name
    path.write_text(json.dumps({"rules": rules}))
    return path


def test_absolute_rules_pass_and_fail() -> None:
    ok = Policy.from_dict({"rules": [{"dataset": "lines1.6", "metric": "ensemble_top1", "min": 0.40}]}).check(ROWS)
    assert ok.passed and ok.exit_code == 0
    assert [c.ensemble for c in ok.checks] == ["a+b", "a+c"]
    bad = Policy.from_dict({"rules": [{"dataset": "lines1.6", "metric": "ensemble_top1", "min": 0.45}]}).check(ROWS)
    assert not bad.passed and bad.exit_code == 1
    assert [c.passed for c in bad.checks] == [True, False]
    anyof = Policy.from_dict(
        {"rules": [{"dataset": "lines1.6", "metric": "ensemble_top1", "min": 0.45, "require": "any"}]}
    ).check(ROWS)
    assert anyof.passed


def test_relative_to_best_member_of_each_ensemble() -> None:
    rule = {
        "dataset": "lines1.6",
        "metric": "ensemble_top1",
        "min": 0.005,
        "relative_to": {"member": "best", "metric": "top1"},
    }
    verdict = Policy.from_dict({"rules": [rule]}).check(ROWS)
    by_ens = {c.ensemble: c for c in verdict.checks}
    assert by_ens["a+b"].baseline == pytest.approx(0.44)  # best of a, b (c is not in a+b)
    assert by_ens["a+b"].observed == pytest.approx(0.02)
    assert by_ens["a+c"].baseline == pytest.approx(0.40)
    assert by_ens["a+c"].passed and by_ens["a+b"].passed
    stricter = Policy.from_dict({"rules": [{**rule, "min": 0.015}]}).check(ROWS)
    assert [c.passed for c in stricter.checks] == [True, False]
    # default baseline metric: ensemble_ prefix dropped for member baselines
    named = Policy.from_dict(
        {"rules": [{"metric": "ensemble_top1", "ensemble": "a+b", "min": 0.0, "relative_to": {"member": "b"}}]}
    ).check(ROWS)
    assert named.checks[0].baseline == pytest.approx(0.44) and named.passed
    vs_ens = Policy.from_dict(
        {"rules": [{"metric": "ensemble_top1", "ensemble": "a+b", "min": 0.04, "relative_to": {"ensemble": "a+c"}}]}
    ).check(ROWS)
    assert vs_ens.checks[0].observed == pytest.approx(0.05) and vs_ens.passed


def test_missing_evidence_and_nan_fail() -> None:
    verdict = Policy.from_dict({"rules": [{"dataset": "imagenet", "metric": "ensemble_top1", "min": 0.1}]}).check(ROWS)
    assert not verdict.passed
    assert "no matching results" in verdict.checks[0].note
    nan = Policy.from_dict({"rules": [{"dataset": "demo", "metric": "top1", "member": "*", "min": 0.5}]}).check(ROWS)
    assert not nan.passed
    assert [c.member for c in nan.checks if not c.passed] == ["b"]
    missing_base = Policy.from_dict(
        {"rules": [{"metric": "improvement", "min": 0, "relative_to": {"member": "zzz"}}]}
    ).check(ROWS)
    assert not missing_base.passed and "zzz" in missing_base.checks[0].note


@pytest.mark.parametrize(
    ("policy", "match"),
    [
        ({"rules": [{"metric": "top1", "mni": 0.3}]}, "mni"),
        ({"rules": [{"metric": "top1"}]}, "min"),
        ({"rules": []}, "rules"),
        ({"rulez": [{"metric": "top1", "min": 0}]}, "rulez"),
        ({"rules": [{"metric": "top1", "min": 0.5, "max": 0.1}]}, "min 0.5 > max 0.1"),
        ({"rules": [{"metric": "top1", "min": "high"}]}, "rules/0/min"),
        ({"rules": [{"id": "x", "metric": "a", "min": 0}, {"id": "x", "metric": "b", "min": 0}]}, "duplicate"),
        ({"rules": [{"metric": "a", "min": 0, "relative_to": {"member": "a", "ensemble": "b"}}]}, "relative_to"),
    ],
)
def test_malformed_policies_raise(policy, match) -> None:
    with pytest.raises(PolicyError, match=match):
        Policy.from_dict(policy)


def test_verdict_json_round_trip(tmp_path) -> None:
    verdict = Policy.from_dict({"rules": [{"metric": "top1", "member": "*", "dataset": "demo", "min": 0.5}]}).check(
        ROWS
    )
    data = json.loads(verdict.to_json(tmp_path / "v.json").read_text())
    assert data["passed"] is False
    assert data["checks"][1]["value"] is None  # NaN -> null
    assert not any(isinstance(v, float) and math.isnan(v) for c in data["checks"] for v in c.values())


def test_example_policy_is_valid() -> None:
    import ovdiv.evaluate.policy as mod

    Policy.from_file(Path(mod.__file__).with_name("example_policy.json"))


def _certify(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "ovdiv", "certify", *args], capture_output=True, text=True, check=False
    )


def test_cli_exit_codes(tmp_path) -> None:
    results = _results(tmp_path)
    good = _policy(tmp_path, [{"dataset": "lines1.6", "metric": "ensemble_top1", "min": 0.4}], "good.json")
    proc = _certify(str(results), "--policy", str(good), "--verdict-out", str(tmp_path / "v.json"))
    assert proc.returncode == 0, proc.stderr
    assert "PASS" in proc.stdout
    assert json.loads((tmp_path / "v.json").read_text())["passed"] is True

    bad = _policy(tmp_path, [{"dataset": "lines1.6", "metric": "ensemble_top1", "min": 0.45}], "bad.json")
    proc = _certify(str(tmp_path), "--policy", str(bad))  # a results folder works too
    assert proc.returncode == 1
    assert "FAIL" in proc.stdout and "a+c" in proc.stdout

    typo = _policy(tmp_path, [{"metric": "top1", "minn": 0.4}], "typo.json")
    proc = _certify(str(results), "--policy", str(typo))
    assert proc.returncode == 2
    assert "minn" in proc.stderr and "Traceback" not in proc.stderr
    assert proc.stderr.strip().count("\n") == 0

    (tmp_path / "broken.json").write_text("{")
    proc = _certify(str(results), "--policy", str(tmp_path / "broken.json"))
    assert proc.returncode == 2 and "not valid JSON" in proc.stderr

    proc = _certify(str(tmp_path / "nope.json"), "--policy", str(good))
    assert proc.returncode == 2 and "does not exist" in proc.stderr
