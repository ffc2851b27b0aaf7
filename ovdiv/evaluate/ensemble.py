"""An ensemble (or pool) of deployed members."""

from __future__ import annotations

import os
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

from ovdiv.runtime import Member, check_members, load_member
from ovdiv.types import Backend, Consensus, Precision, UInt8Images

__all__ = ["Ensemble", "ensemble_name"]


def ensemble_name(names: Sequence[str]) -> str:
    """Ensemble name: member names joined with ``+`` in pool order."""
    return "+".join(names)


class Ensemble:
    """Members that vote together; also the pool that :func:`ovdiv.evaluate` draws k-subsets from.

    Args:
        members: Loaded members; they must agree on the number of classes and have distinct names.

    Raises:
        MemberError: class counts differ (naming both members) or names collide.
    """

    def __init__(self, members: Sequence[Member]) -> None:
        check_members(list(members))
        self.members: list[Member] = list(members)

    @classmethod
    def from_paths(
        cls,
        paths: Sequence[str | os.PathLike[str]],
        *,
        device: str = "CPU",
        precision: str | Precision = "f32",
        backend: str | Backend | None = None,
    ) -> Ensemble:
        """Load every artifact with :func:`ovdiv.load_member` and form an ensemble."""
        return cls([load_member(Path(p), device=device, precision=precision, backend=backend) for p in paths])

    @property
    def names(self) -> list[str]:
        """Member names in pool order."""
        return [m.name for m in self.members]

    @property
    def name(self) -> str:
        """``a+b+c``."""
        return ensemble_name(self.names)

    @property
    def num_classes(self) -> int:
        """Number of classes shared by the members."""
        return self.members[0].num_classes

    def __len__(self) -> int:
        return len(self.members)

    def __iter__(self) -> Iterator[Member]:
        return iter(self.members)

    def __getitem__(self, i: int) -> Member:
        return self.members[i]

    def __repr__(self) -> str:
        return f"Ensemble({self.name!r}, {len(self)} members, {self.num_classes} classes)"

    def member_logits(self, images: UInt8Images, *, batch_size: int = 64) -> npt.NDArray[np.float32]:
        """Logits of every member, float32 ``(M, N, C)``."""
        return np.stack([m.predict(images, batch_size=batch_size) for m in self.members])

    def predict(
        self, images: UInt8Images, *, consensus: Consensus | str = "average", batch_size: int = 64
    ) -> npt.NDArray[np.int64]:
        """Ensemble predictions ``(N,)`` under a consensus rule (see :mod:`ovdiv.metrics`)."""
        from ovdiv.metrics import ensemble_predict

        return np.asarray(ensemble_predict(self.member_logits(images, batch_size=batch_size), consensus), np.int64)

    def info(self) -> list[dict[str, Any]]:
        """Provenance of every member (see :meth:`ovdiv.runtime.Member.info`)."""
        return [m.info() for m in self.members]
