from __future__ import annotations

import subprocess
import sys

from click.testing import CliRunner

from ovdiv import __version__
from ovdiv.cli import cli

GROUPS = ["demo", "data", "models", "train", "ensemble", "supernet", "export", "evaluate", "certify"]


def test_help_lists_every_command_group() -> None:
    result = CliRunner().invoke(cli, ["--help"])
    assert result.exit_code == 0
    for name in GROUPS:
        assert name in result.output


def test_version() -> None:
    result = CliRunner().invoke(cli, ["--version"])
    assert result.exit_code == 0
    assert __version__ in result.output


def test_python_dash_m_runs_the_cli() -> None:
    proc = subprocess.run([sys.executable, "-m", "ovdiv", "--help"], capture_output=True, text=True, check=False)
    assert proc.returncode == 0
    assert "evaluate" in proc.stdout


def test_user_error_is_one_line_exit_2_without_traceback(tmp_path) -> None:
    proc = subprocess.run(
        [sys.executable, "-m", "ovdiv", "certify", str(tmp_path / "missing.json"), "--policy", str(tmp_path / "p.json")],
        capture_output=True,
        text=True,
        check=False,
    )
    assert proc.returncode == 2
    assert "Traceback" not in proc.stderr
    assert proc.stderr.strip().count("\n") == 0, proc.stderr
    assert "error:" in proc.stderr
