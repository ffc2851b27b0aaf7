"""Fixtures of the training tests: small demo arrays and tiny ensemble configs (CPU, seconds)."""

from __future__ import annotations

import copy
from typing import Any

import numpy as np
import pytest

from ovdiv.data import make_demo

TINY_BASE: dict[str, Any] = {
    "name": "t",
    "heuristic": "independent",
    "members": [{"name": "r", "arch": "tiny_resnet"}, {"name": "m", "arch": "tiny_mnasnet"}],
    "num_classes": 10,
    "input_size": [32, 32],
    "optimizer": {"name": "adabelief", "lr": 3e-3, "betas": [0.9, 0.999], "eps": 1e-8},
    "schedule": {"name": "constant"},
    "epochs": 3,
    "batch_size": 32,
    "transforms": {"train_crop": "none", "hflip": 0.0, "eval_crop_pct": None},
    "amp": False,
    "channels_last": False,
}


@pytest.fixture(scope="session")
def demo_arrays() -> tuple[tuple[np.ndarray, np.ndarray], tuple[np.ndarray, np.ndarray]]:
    """(train images, labels), (val images, labels): 128 + 64 demo images at 32 px."""
    train = make_demo(128, size=32, seed=0, split="train")
    val = make_demo(64, size=32, seed=0, split="test")
    return train, val


@pytest.fixture
def tiny_raw() -> dict[str, Any]:
    """A fresh copy of a 2-member tiny config dict (edit, then EnsembleConfig.from_dict)."""
    return copy.deepcopy(TINY_BASE)
