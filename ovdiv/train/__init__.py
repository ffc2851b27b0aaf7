"""Training in PyTorch: members from recipes, diversity-enforcing joint ensembles, low-cost ensembles.

Public API::

    train_member(recipe, *, out_dir, data=None, pretrained=None, ...) -> TrainResult
    train_ensemble(config, *, out_dir, data=None, ...) -> EnsembleResult
    load_ensemble_config(path) -> EnsembleConfig
    # losses over member logits (M, B, C) and labels (B,) — ovdiv.train.losses:
    independent_loss, gncl_loss, gncl_masked_loss, balanced_loss, attribution_diversity_loss,
    consensus_logits, gncl_penalty, attribution_penalty, saliency_maps

Importing this package imports torch (it is an L2 package).
"""

from __future__ import annotations

from ovdiv.train.config import HEURISTICS, EnsembleConfig, load_ensemble_config
from ovdiv.train.data import DataSource
from ovdiv.train.engine import RunOptions, read_metrics
from ovdiv.train.ensemble import EnsembleResult, train_ensemble
from ovdiv.train.losses import (
    attribution_diversity_loss,
    attribution_penalty,
    balanced_loss,
    consensus_logits,
    gncl_loss,
    gncl_masked_loss,
    gncl_penalty,
    independent_loss,
    saliency_maps,
)
from ovdiv.train.member import TrainResult, train_member

__all__ = [
    "HEURISTICS",
    "DataSource",
    "EnsembleConfig",
    "EnsembleResult",
    "RunOptions",
    "TrainResult",
    "attribution_diversity_loss",
    "attribution_penalty",
    "balanced_loss",
    "consensus_logits",
    "gncl_loss",
    "gncl_masked_loss",
    "gncl_penalty",
    "independent_loss",
    "load_ensemble_config",
    "read_metrics",
    "saliency_maps",
    "train_ensemble",
    "train_member",
]
