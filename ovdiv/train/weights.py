"""Building members from registry names and loading starting weights (``--pretrained PATH``)."""

from __future__ import annotations

import logging
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch
from torch import nn

from ovdiv.errors import CheckpointError

__all__ = ["build_member", "load_pretrained"]

log = logging.getLogger("ovdiv.train")


def build_member(
    arch: str, arch_args: Mapping[str, Any], num_classes: int, pretrained: str | Path | None = None
) -> nn.Module:
    """``create_model(arch, num_classes=..., **arch_args)``, then :func:`load_pretrained` when given."""
    from ovdiv.models import create_model

    model = create_model(arch, num_classes=num_classes, **dict(arch_args))
    if pretrained is not None:
        load_pretrained(model, pretrained)
    return model


def _state_dict_of(obj: Any, path: Path) -> dict[str, torch.Tensor]:
    if isinstance(obj, dict):
        for key in ("state_dict", "model", "model_state_dict"):
            if isinstance(obj.get(key), dict):
                return _state_dict_of(obj[key], path)
        if obj and all(isinstance(v, torch.Tensor) for v in obj.values()):
            return {str(k).removeprefix("module."): v for k, v in obj.items()}
    raise CheckpointError(f"{path} holds no state_dict", "pass an ovdiv checkpoint or a torch state_dict file")


def load_pretrained(model: nn.Module, path: str | Path) -> dict[str, list[str]]:
    """Copy matching weights from ``path`` into ``model`` (in place).

    ``path`` may be an ovdiv checkpoint (``ovdiv-checkpoint/1``), a ``{"state_dict"|"model": ...}``
    training checkpoint or a bare state dict (``module.`` prefixes of DDP are stripped). Tensors whose
    name or shape does not match are skipped — typically the classifier when ``num_classes`` differs —
    and logged.

    Args:
        model: Target network.
        path: Weights file (loaded with ``weights_only=True``).

    Returns:
        ``{"loaded": [...], "skipped": [...], "missing": [...]}`` parameter names.

    Raises:
        CheckpointError: Missing/unreadable file, or no tensor matched.
    """
    p = Path(path)
    if not p.is_file():
        raise CheckpointError(f"pretrained weights {p} do not exist", "pass an existing --pretrained file")
    try:
        obj = torch.load(p, map_location="cpu", weights_only=True)
    except Exception as exc:
        raise CheckpointError(f"cannot read pretrained weights {p}: {exc}") from exc
    src = _state_dict_of(obj, p)
    own = model.state_dict()
    take = {k: v for k, v in src.items() if k in own and own[k].shape == v.shape}
    if not take:
        raise CheckpointError(f"no tensor of {p} matches the model", "is it the same architecture?")
    skipped = sorted(k for k in src if k not in take)
    missing = sorted(k for k in own if k not in take)
    model.load_state_dict(take, strict=False)
    if skipped or missing:
        log.warning("pretrained %s: %d tensors loaded, skipped %s, left at init %s", p, len(take), skipped, missing)
    return {"loaded": sorted(take), "skipped": skipped, "missing": missing}
