"""The CLI in pipelines: no terminal, --json, progress, NO_COLOR, exit codes (issue 19)."""

from __future__ import annotations

import json
import os
import pty
import re
import subprocess
import sys
from pathlib import Path

import pytest
from click.testing import CliRunner

from ovdiv.cli import cli
from ovdiv.cli_output import EXIT_CODES
from ovdiv.models import model_table

LONG_DATASET = "nosuchdataset_with_a_rather_long_name_that_an_80_column_table_would_truncate@demo"

NOTE = f"no matching results for ensemble_top1 on {LONG_DATASET}"


def _ovdiv(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    """Run the CLI as a pipeline would: a real process, stdout and stderr piped (no terminal)."""
    full_env = {**os.environ, "COLUMNS": "80", **(env or {})}
    full_env.pop("FORCE_COLOR", None)
    return subprocess.run(
        [sys.executable, "-m", "ovdiv", *args], capture_output=True, text=True, check=False, env=full_env
    )


@pytest.fixture
def results_and_policy(tmp_path: Path) -> tuple[Path, Path]:
    rows = [
        {"ensemble": None, "member": "a", "dataset": "demo", "metric": "top1", "value": 0.8},
        {"ensemble": None, "member": "b", "dataset": "demo", "metric": "top1", "value": 0.6},
        {"ensemble": "a+b", "member": None, "dataset": "demo", "metric": "ensemble_top1", "value": 0.7},
    ]
    results = tmp_path / "results.json"
    results.write_text(json.dumps({"schema": "ovdiv-results/1", "metadata": {}, "rows": rows, "extras": {}}))
    policy = tmp_path / "policy.json"
    rules = [
        {"id": "acc-demo", "dataset": "demo", "metric": "ensemble_top1", "min": 0.5},
        {
            "id": "a-rule-id-that-is-long-enough-to-be-cut-in-a-narrow-column",
            "dataset": LONG_DATASET,
            "metric": "ensemble_top1",
            "min": 0.1,
        },
        {
            "id": "beats-best",
            "dataset": "demo",
            "metric": "ensemble_top1",
            "min": 0.0,
            "relative_to": {"member": "best", "metric": "top1"},
        },
    ]
    policy.write_text(json.dumps({"name": "gate", "rules": rules}))
    return results, policy


def _check_full_verdict(text: str) -> None:
    assert NOTE in text  # the failing rule's reason, in full, on one line
    assert "a-rule-id-that-is-long-enough-to-be-cut-in-a-narrow-column" in text
    assert "…" not in text  # nothing truncated


def test_certify_failing_reasons_in_full_without_terminal(results_and_policy: tuple[Path, Path]) -> None:
    results, policy = results_and_policy
    res = CliRunner().invoke(cli, ["certify", str(results), "--policy", str(policy)])
    assert res.exit_code == 1, res.output
    _check_full_verdict(res.output)
    proc = _ovdiv("certify", str(results), "--policy", str(policy))
    assert proc.returncode == 1, proc.stderr
    _check_full_verdict(proc.stdout)
    assert proc.stderr == ""
    assert "\x1b[" not in proc.stdout  # no colour codes in a log


def test_certify_json_is_the_verdict_document(results_and_policy: tuple[Path, Path], tmp_path: Path) -> None:
    results, policy = results_and_policy
    verdict = tmp_path / "verdict.json"
    proc = _ovdiv("certify", str(results), "--policy", str(policy), "--json", "--verdict-out", str(verdict))
    assert proc.returncode == 1 and proc.stderr == ""
    doc = json.loads(proc.stdout)  # stdout is exactly one JSON document
    assert doc == json.loads(verdict.read_text())
    assert doc["passed"] is False
    assert [r["passed"] for r in doc["rules"]] == [True, False, False]
    notes = {c["rule"]: c["note"] for c in doc["checks"]}
    assert notes["a-rule-id-that-is-long-enough-to-be-cut-in-a-narrow-column"] == NOTE


def test_models_table_in_full_without_terminal() -> None:
    rows = model_table(None)
    res = CliRunner().invoke(cli, ["models", "list"])
    proc = _ovdiv("models", "list")
    assert res.exit_code == 0 and proc.returncode == 0
    for text in (res.output, proc.stdout):
        lines = text.splitlines()
        for r in rows:  # one line per model holding its name and its whole description
            assert any(r["name"] in ln and r["description"] in ln for ln in lines), r["name"]
        assert len(lines) <= len(rows) + 6  # title, borders, header: no word-per-line wrapping


def test_models_and_data_list_json() -> None:
    proc = _ovdiv("models", "list", "--json")
    assert proc.returncode == 0 and proc.stderr == ""
    assert json.loads(proc.stdout) == json.loads(json.dumps(model_table(None)))
    res = CliRunner().invoke(cli, ["data", "list", "--json"])
    assert res.exit_code == 0
    doc = json.loads(res.stdout)
    from ovdiv.data import catalog

    assert doc["corruptions"] == catalog()["corruptions"]
    assert {"spec": "demo", "meaning": dict(catalog()["kinds"])["demo"]} in doc["kinds"]


def test_evaluate_json_matches_the_results_files(tiny_pool, tmp_path: Path) -> None:
    ir = [str(tiny_pool.ir[n]) for n in ("m0", "m1", "m2")]
    out = tmp_path / "out"
    args = ["evaluate", "--ensemble", *ir, "--dataset", "demo", "--limit", "16", "--attribution", "none"]
    args += ["--cka-samples", "0", "--cache-dir", str(tmp_path / "cache"), "--out", str(out), "--json"]
    res = CliRunner().invoke(cli, args)
    assert res.exit_code == 0, res.output
    doc = json.loads(res.stdout)
    assert doc == json.loads((out / "results.json").read_text())
    import csv

    with open(out / "results.csv", newline="") as fh:
        csv_rows = list(csv.DictReader(fh))
    assert len(csv_rows) == len(doc["rows"])
    for c, j in zip(csv_rows, doc["rows"], strict=True):
        assert (c["ensemble"] or None, c["member"] or None, c["dataset"], c["metric"]) == (
            j["ensemble"], j["member"], j["dataset"], j["metric"],
        )  # fmt: skip
        assert (float(c["value"]) if c["value"] else None) == j["value"]


def test_progress_off_without_terminal_unless_asked(tmp_path: Path) -> None:
    args = ["data", "prepare", "demo", "--limit", "8", "--cache-dir", str(tmp_path)]
    quiet = _ovdiv(*args)
    assert quiet.returncode == 0 and quiet.stderr == ""
    loud = _ovdiv("--progress", *args[:-1], str(tmp_path / "other"))
    assert loud.returncode == 0
    assert "8/8" in loud.stderr  # plain progress lines on stderr
    assert "8/8" not in loud.stdout


def test_no_color_on_a_terminal(results_and_policy: tuple[Path, Path]) -> None:
    results, policy = results_and_policy

    def on_tty(env: dict[str, str]) -> bytes:
        main, sub = pty.openpty()
        e = {**os.environ, **env}
        e.pop("FORCE_COLOR", None)
        proc = subprocess.Popen(
            [sys.executable, "-m", "ovdiv", "certify", str(results), "--policy", str(policy)], stdout=sub, env=e
        )
        os.close(sub)
        chunks = []
        while True:
            try:
                data = os.read(main, 65536)
            except OSError:
                break
            if not data:
                break
            chunks.append(data)
        proc.wait()
        os.close(main)
        return b"".join(chunks)

    def colour_codes(out: bytes) -> list[int]:  # SGR foreground/background colour parameters
        params = [p for m in re.findall(rb"\x1b\[([0-9;]*)m", out) for p in m.split(b";") if p]
        return [int(p) for p in params if 30 <= int(p) <= 49 or 90 <= int(p) <= 107]

    coloured = on_tty({"TERM": "xterm-256color", "NO_COLOR": ""})
    plain = on_tty({"TERM": "xterm-256color", "NO_COLOR": "1"})
    assert colour_codes(coloured)  # a terminal gets colours by default
    assert not colour_codes(plain) and b"FAIL" in plain  # NO_COLOR: none (bold/italic may stay, per no-color.org)


def test_keyboard_interrupt_exits_130_with_one_line(monkeypatch: pytest.MonkeyPatch) -> None:
    import ovdiv.models

    def interrupted(*_a: object, **_k: object) -> None:
        raise KeyboardInterrupt

    monkeypatch.setattr(ovdiv.models, "model_table", interrupted)
    res = CliRunner().invoke(cli, ["models", "list"])
    assert res.exit_code == 130
    assert res.output.strip() == "interrupted"


def test_exit_codes_are_in_help() -> None:
    res = CliRunner().invoke(cli, ["--help"])
    assert res.exit_code == 0
    for code in EXIT_CODES:
        assert f"  {code} " in res.output
    assert set(EXIT_CODES) == {0, 1, 2, 130}
