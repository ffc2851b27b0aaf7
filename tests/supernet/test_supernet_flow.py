"""The whole BootstrapNAS flow once on CPU: train (resume) -> search -> extract (B_0, max) -> info.

Tiny config (torchvision ResNet-50 at 32x32, 10 classes, 2 steps per stage) on the ``demo`` data.
Each step runs in its own child process (~20-60 s each on 2 shared cores), hence ``slow``.
"""

from __future__ import annotations

import csv
import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from click.testing import CliRunner
from torchvision.models import resnet50

from ovdiv.cli import cli
from ovdiv.supernet import extract, info

pytestmark = [pytest.mark.nas, pytest.mark.slow]

ROOT = Path(__file__).resolve().parents[2]
TINY = ROOT / "supernet_configs" / "resnet50_tiny.json"


def _ok(args: list[str]) -> str:
    res = CliRunner().invoke(cli, args, catch_exceptions=False)
    assert res.exit_code == 0, res.output
    return res.output


@pytest.fixture(scope="module")
def flow(tmp_path_factory: pytest.TempPathFactory) -> dict:
    d = tmp_path_factory.mktemp("supernet")
    torch.manual_seed(0)
    weights = d / "resnet50_1000.pth"
    torch.save(resnet50().state_dict(), weights)  # a 1000-class file: fc is re-initialised for 10 classes
    run = d / "run"
    _ok(["supernet", "train", str(TINY), "--out", str(run), "--pretrained", str(weights), "--max-epochs", "2"])
    meta_partial = json.loads((run / "run.json").read_text())
    _ok(["supernet", "train", str(TINY), "--out", str(run), "--resume"])
    _ok(["supernet", "search", str(run), "--num-evals", "8", "--population", "4"])
    b0 = extract(run, out=d / "x", subnet="B_0", formats=("onnx", "ir"))
    out_max = _ok(["supernet", "extract", str(run), "--subnet", "max", "--out", str(d / "x"), "--format", "ir"])
    return {"dir": d, "run": run, "weights": weights, "partial": meta_partial, "b0": b0, "out_max": out_max}


def test_train_resume(flow: dict) -> None:
    run = flow["run"]
    assert flow["partial"]["status"] == "partial" and flow["partial"]["epochs_done"] == 2
    meta = json.loads((run / "run.json").read_text())
    assert meta["status"] == "trained" and meta["epochs_done"] == meta["total_epochs"] == 4
    assert [h["epoch"] for h in meta["history"]] == [1, 2, 3, 4]
    assert [h["stage"] for h in meta["history"]] == [1, 2, 3, 4]
    assert meta["pretrained"]["source"] == str(flow["weights"].resolve()) and meta["pretrained"]["fc_reinitialised"]
    assert meta["search_space"] == {"width_groups": 37, "skippable_blocks": 6}
    for f in ("supernet_last.pth", "supernet_best.pth", "last_elasticity.pth", "last_model_weights.pth"):
        assert (run / "checkpoints" / f).is_file(), f
    assert (run / "logs").is_dir() and (run / "search_space.json").is_file()
    # the super-network weights are a valid torchvision ResNet-50 (NOTES §7)
    sd = torch.load(run / "checkpoints" / "last_model_weights.pth", weights_only=True)
    missing, _ = resnet50(num_classes=10).load_state_dict(sd, strict=False)
    assert not missing


def test_search_outputs(flow: dict) -> None:
    s = flow["run"] / "search"
    rows = list(csv.DictReader((s / "search_progression.csv").open()))
    assert len(rows) == 8 and {r["generation"] for r in rows} == {"1", "2"}
    assert all(float(r["macs_M"]) > 0 and 0 <= float(r["top1"]) <= 100 for r in rows)
    assert (s / "search_progression.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    best = json.loads((s / "best_subnet.json").read_text())
    assert best["satisfies_ref_acc"] and best["macs_M"] <= min(float(r["macs_M"]) for r in rows) + 1e-6


def test_extract_b0_parity(flow: dict) -> None:
    b0 = flow["b0"]
    assert b0["subnet"] == "B_0" and b0["summary"]["blocks_per_stage"] == [2, 2, 4, 3]
    assert b0["max_abs_diff_vs_supernet"] <= 1e-6
    assert b0["torch_reload_max_abs_diff"] <= 1e-6
    # reload from checkpoint reproduces the live network's subnet outputs (max and min subnets)
    assert b0["reload_max_abs_diff"]["max"] <= 1e-6 and b0["reload_max_abs_diff"]["min"] <= 1e-6
    assert b0["macs"] == b0["nncf_macs"] and b0["weights"] == b0["nncf_weights"]
    ref = np.load(b0["reference_file"])
    scale = float(np.abs(ref["supernet"]).max())
    fmts = {a["format"]: a for a in b0["artifacts"]}
    assert set(fmts) == {"onnx", "ir"}
    for a in fmts.values():
        assert a["check"]["passed"] and a["max_abs_diff_vs_supernet"] <= 1e-4 * max(1.0, scale)
    card = json.loads(Path(b0["card"]).read_text())
    assert (
        card["extra"]["supernet"]["subnet"] == "B_0" and card["macs"] == b0["macs"] and card["params"] == b0["params"]
    )
    ir_card = json.loads(Path(fmts["ir"]["card"]).read_text())
    assert ir_card["extra"]["supernet"]["macs_224"] == b0["macs_224"]


def test_extracted_checkpoint_loads_without_nncf(flow: dict) -> None:
    b0 = flow["b0"]
    code = (
        "import sys, numpy as np, torch\n"
        "from ovdiv.models import load_checkpoint\n"
        f"m, meta = load_checkpoint({b0['checkpoint']!r})\n"
        f"ref = np.load({b0['reference_file']!r})\n"
        "with torch.no_grad(): out = m.eval()(torch.from_numpy(ref['input'])).numpy()\n"
        "assert not any(k == 'nncf' or k.startswith('nncf.') for k in sys.modules), 'nncf imported'\n"
        "print(float(np.abs(out - ref['supernet']).max()))\n"
    )
    res = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert float(res.stdout.strip().splitlines()[-1]) <= 1e-6


def test_extract_max_and_info(flow: dict) -> None:
    assert "resnet50_tiny_max" in flow["out_max"]
    assert (flow["dir"] / "x" / "resnet50_tiny_max_fp32.xml").is_file()
    res = info(flow["run"])
    assert {"max", "min", "B_0", "wB_1c", "best"} <= set(res["subnets"])
    assert all(s["equal"] for s in res["subnets"].values())
    assert res["subnets"]["B_0"]["macs"] == flow["b0"]["macs_224"]
    assert res["index_direction"]["spearman_macs_vs_paper_top1"]["ascending"] > 0
