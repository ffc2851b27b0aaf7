"""Array aliases, string enums and the progress-callback protocol shared by every layer.

Only the standard library and numpy are imported here.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from enum import StrEnum

import numpy as np
import numpy.typing as npt

__all__ = [
    "UInt8Images",
    "FloatArray",
    "IntArray",
    "BoolArray",
    "Consensus",
    "Precision",
    "Backend",
    "AttributionMethod",
    "AttributionNorm",
    "AttributionTarget",
    "Progress",
    "ProgressCallback",
    "no_progress",
]

UInt8Images = npt.NDArray[np.uint8]
"""uint8 images, ``(N, H, W, 3)`` RGB (or one ``(H, W, 3)`` image)."""
FloatArray = npt.NDArray[np.floating]
IntArray = npt.NDArray[np.integer]
BoolArray = npt.NDArray[np.bool_]


class Consensus(StrEnum):
    """How an ensemble turns member outputs into one prediction (DESIGN.md §5)."""

    AVERAGE = "average"  # mean of logits, then argmax (the paper's "averaging")
    AVERAGE_PROBS = "average_probs"  # mean of softmax probabilities
    MAJORITY = "majority"  # plurality vote, seeded random tie-break
    MEDIAN = "median"  # element-wise median of probabilities
    GEOMETRIC = "geometric"  # mean of log-probabilities


class Precision(StrEnum):
    """Inference precision of a deployed member; always explicit and recorded."""

    F32 = "f32"
    BF16 = "bf16"
    F16 = "f16"
    MODEL = "model"  # run as stored (e.g. INT8 IR as quantized); plugin default otherwise


class Backend(StrEnum):
    """Runtime that executes a member."""

    OPENVINO = "openvino"
    ONNXRUNTIME = "onnxruntime"
    TORCH = "torch"


class AttributionMethod(StrEnum):
    """Input-attribution methods (captum semantics)."""

    NONE = "none"
    SALIENCY = "saliency"
    IG = "ig"
    SMOOTHGRAD = "smoothgrad"
    INPUT_X_GRADIENT = "input_x_gradient"


class AttributionNorm(StrEnum):
    """Per-map normalisation of ``|a|`` before attribution diversity."""

    MAX = "max"
    SUM = "sum"
    NONE = "none"


class AttributionTarget(StrEnum):
    """Which class each member's attribution is computed for."""

    ENSEMBLE = "ensemble"
    MEMBER = "member"
    LABEL = "label"


@dataclass(frozen=True)
class Progress:
    """One progress event: ``completed`` of ``total`` units of ``task`` (``total`` None = unknown)."""

    task: str
    completed: int
    total: int | None = None
    detail: str = ""


ProgressCallback = Callable[[Progress], None]
"""Library code reports progress through this; the CLI renders it with rich."""


def no_progress(_: Progress) -> None:
    """A :data:`ProgressCallback` that ignores every event."""
