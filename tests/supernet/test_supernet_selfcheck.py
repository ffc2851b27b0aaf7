"""nncf in a child process: search space, extraction parity and MAC counts without training; hostile env."""

from __future__ import annotations

import json
import textwrap
from pathlib import Path

import pytest
from click.testing import CliRunner

from ovdiv.cli import cli
from ovdiv.supernet import selfcheck

pytestmark = pytest.mark.nas

ROOT = Path(__file__).resolve().parents[2]
TINY = ROOT / "supernet_configs" / "resnet50_tiny.json"


def _check(res: dict, n_blocks: int) -> None:
    assert res["width_groups"] == 37 and res["skippable_blocks"] == n_blocks
    for name, s in res["subnets"].items():
        assert s["max_abs_diff"] <= 1e-6, name
        assert s["macs"] == s["nncf_macs"] and s["weights"] == s["nncf_weights"], name


def test_selfcheck_manual6() -> None:
    res = selfcheck(TINY, subnets=("B_0", "wB_1c", "min"))
    _check(res, 6)
    subs = res["subnets"]
    assert subs["max"]["macs"] > subs["B_0"]["macs"] > subs["min"]["macs"]
    assert subs["min"]["arch_spec"]["stem"] == 32


@pytest.mark.slow
def test_selfcheck_auto12(tmp_path: Path) -> None:
    raw = json.loads(TINY.read_text())
    del raw["bootstrapNAS"]["training"]["elasticity"]["depth"]
    raw["expected_search_space"] = {"width_groups": 37, "skippable_blocks": 12}
    cfg = tmp_path / "auto.json"
    cfg.write_text(json.dumps(raw))
    res = selfcheck(cfg, subnets=("min",))
    _check(res, 12)
    # auto blocks start at the previous block's residual add: skipping drops that block's final ReLU
    spec = res["subnets"]["min"]["arch_spec"]
    assert spec["stages"][0]["blocks"][0]["final_relu"] is False
    assert [b["name"] for b in res["search_space"]["blocks"]][:2] == ["layer1.1", "layer1.2"]


def test_hostile_environment_is_one_line(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A child whose nncf.torch was imported before legacy tracing was set must fail, not build an empty space."""
    site = tmp_path / "site"
    site.mkdir()
    (site / "sitecustomize.py").write_text(
        textwrap.dedent(
            """
            import os
            os.environ.pop("NNCF_TORCH_LEGACY_TRACING", None)
            import nncf.torch  # FunctionHook mode: BootstrapNAS would see an empty graph
            """
        )
    )
    monkeypatch.setenv("PYTHONPATH", str(site))
    res = CliRunner().invoke(cli, ["supernet", "info", str(TINY)])
    assert res.exit_code == 2, res.output
    lines = [ln for ln in res.output.splitlines() if ln.strip()]
    assert len(lines) == 1 and "empty search space" in lines[0], res.output


def test_child_errors_come_back_typed() -> None:
    from ovdiv.errors import ConfigError, SupernetError
    from ovdiv.supernet.isolation import SupernetChildError, run_isolated

    with pytest.raises(SupernetError, match="unknown supernet command"):
        run_isolated("nope", {})
    with pytest.raises(ConfigError, match="does not exist"):
        run_isolated("info", {"target": "/nonexistent/config.json"})
    with pytest.raises(SupernetChildError, match="TypeError"):
        run_isolated("info", {"target": str(TINY), "no_such_argument": 1})
