"""Deployed members: load IR / ONNX / torch checkpoints with their model cards and run them.

``load_member(path, device=..., precision=..., backend=...)`` returns a :class:`Member`; see
:mod:`ovdiv.runtime.member` for the contract shared by the OpenVINO, ONNX Runtime and torch backends.
"""

from __future__ import annotations

from ovdiv.runtime.member import Member, PendingBatches, check_members, load_card, load_member
from ovdiv.runtime.preprocessing import check_images, normalize_images, resize_images

__all__ = [
    "Member",
    "PendingBatches",
    "load_member",
    "check_members",
    "load_card",
    "check_images",
    "normalize_images",
    "resize_images",
]
