"""torchrun data parallelism on CPU (gloo): both ranks end with identical weights, DDP and explicit all-reduce paths."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

WORKER = Path(__file__).with_name("ddp_worker.py")


@pytest.mark.slow
@pytest.mark.parametrize("heuristic", ["gncl", "attribution_diversity"])
def test_two_process_training_keeps_ranks_in_sync(tmp_path, heuristic):
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    cmd = [
        sys.executable,
        "-m",
        "torch.distributed.run",
        "--standalone",
        "--nproc_per_node",
        "2",
        str(WORKER),
        str(tmp_path),
        heuristic,
    ]
    proc = subprocess.run(cmd, capture_output=True, text=True, env=env, check=False, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    r0 = torch.load(tmp_path / "rank0.pt", weights_only=True)
    r1 = torch.load(tmp_path / "rank1.pt", weights_only=True)
    params = [k for k in r0 if "running" not in k and "num_batches" not in k]
    for k in params:
        torch.testing.assert_close(r0[k], r1[k], rtol=0, atol=0)
    log = [json.loads(x) for x in (tmp_path / "metrics.jsonl").read_text().splitlines()]
    assert log[-1]["step"] == 3  # 128 images / (16 x 2 ranks) = 4 steps per epoch, capped at 3
