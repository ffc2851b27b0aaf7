from __future__ import annotations

from click.testing import CliRunner

from ovdiv.cli import cli
from ovdiv.models import count_params


def test_models_list_table() -> None:
    res = CliRunner().invoke(cli, ["models", "list"], terminal_width=200)
    assert res.exit_code == 0, res.output
    for name in ("resnext50_32_4l", "deit_tiny_patch16_224", "tiny_squeezenet", "tiny_deit"):
        assert name in res.output
    assert "25.56 M" in res.output  # resnet50 at 1000 classes
    assert f"{count_params('tiny_resnet') / 1e3:.1f} k" in res.output


def test_models_list_filters() -> None:
    res = CliRunner().invoke(cli, ["models", "list", "resnext*", "--full"], terminal_width=200)
    assert res.exit_code == 0, res.output
    assert "resnext50_16_4" in res.output and "tiny_resnext" not in res.output and "resnet50" not in res.output
    res = CliRunner().invoke(cli, ["models", "list", "--tiny"], terminal_width=200)
    assert "tiny_mnasnet" in res.output and "mnasnet1_0" not in res.output
