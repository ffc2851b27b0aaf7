"""Issue 14 item 5: a member whose gradient path has an op without a VJP rule fails before any inference,
naming the op types with counts and suggesting ``--attribution none`` (library and ``ovdiv evaluate``)."""

from __future__ import annotations

import openvino as ov
import pytest
import torch
from click.testing import CliRunner
from ovdiv_tests_tiny_members import MicroCNN, export_ir  # type: ignore[import-not-found]

from ovdiv.attribution import Saliency, check_attributable
from ovdiv.cli import cli
from ovdiv.errors import UnsupportedOpError


class CumSumNet(MicroCNN):
    """MicroCNN with two CumSum ops (no VJP rule) on the gradient path."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        f = torch.cumsum(torch.cumsum(self.features(x), 3), 2) * 1e-2
        return self.fc(torch.flatten(self.pool(f), 1))


@pytest.fixture(scope="module")
def members(tmp_path_factory):
    root = tmp_path_factory.mktemp("preflight")
    torch.manual_seed(0)
    return export_ir(MicroCNN(), root / "good.xml"), export_ir(CumSumNet(), root / "cums.xml")


def test_library_names_ops_with_counts(members) -> None:
    good, bad = members
    check_attributable(good)  # supported: no error
    with pytest.raises(UnsupportedOpError) as err:
        check_attributable(bad)
    msg = str(err.value)
    assert "cums.xml" in msg and "CumSum x2" in msg and "--attribution none" in msg
    with pytest.raises(UnsupportedOpError, match=r"CumSum x2.*--attribution none"):
        Saliency(bad)  # the method itself refuses too (VJPModel), same op list


def test_cli_evaluate_fails_before_inference(members, tmp_path, monkeypatch) -> None:
    good, bad = members

    def no_compile(*args, **kwargs):  # pragma: no cover - must not be reached
        raise AssertionError("a model was compiled before the attribution pre-flight")

    monkeypatch.setattr(ov.Core, "compile_model", no_compile)
    out = tmp_path / "out"
    args = ["evaluate", "--pool", str(good), str(bad), "--size", "2", "--dataset", "demo", "--limit", "8"]
    res = CliRunner().invoke(cli, [*args, "--cache-dir", str(tmp_path / "cache"), "--out", str(out)])
    assert res.exit_code == 2, res.output
    assert "cums" in res.output and "CumSum x2" in res.output and "--attribution none" in res.output
    assert "Traceback" not in res.output
    assert not (out / "results.json").exists()
