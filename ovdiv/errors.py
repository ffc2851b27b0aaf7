"""The ovdiv error hierarchy.

Every error a user can cause (bad paths, bad configs, bad arrays, unsupported models) is an
:class:`OvdivError` subclass whose message names the offending input and says how to fix it. The CLI
turns these into one red line and exit code 2; anything else is a bug and keeps its traceback.
"""

from __future__ import annotations

__all__ = [
    "OvdivError",
    "ConfigError",
    "DataError",
    "DatasetNotFoundError",
    "CorruptImageError",
    "CacheError",
    "ModelError",
    "CheckpointError",
    "MemberError",
    "ExportError",
    "ExportMismatchError",
    "UnsupportedOpError",
    "GradientCheckError",
    "AttributionInputError",
    "MetricInputError",
    "TrainingError",
    "SupernetError",
    "PolicyError",
    "NotAvailableError",
]


class OvdivError(Exception):
    """Base class of all errors ovdiv raises for bad input or an unusable environment.

    Args:
        message: What went wrong, naming the input.
        hint: Optional fix, appended as ``" (hint)"`` when the error is rendered.
    """

    exit_code: int = 2

    def __init__(self, message: str, hint: str | None = None) -> None:
        self.message = message
        self.hint = hint
        super().__init__(message if hint is None else f"{message} ({hint})")


class ConfigError(OvdivError):
    """A recipe, policy, supernet or CLI configuration is malformed (unknown key, bad value)."""


class DataError(OvdivError):
    """A dataset spec, folder or image cannot be used."""


class DatasetNotFoundError(DataError):
    """The data root or a dataset folder does not exist."""


class CorruptImageError(DataError):
    """An image file cannot be decoded."""


class CacheError(OvdivError):
    """The prepared-data or evaluation cache is unusable (unwritable, inconsistent)."""


class ModelError(OvdivError):
    """An architecture name or its arguments are invalid."""


class CheckpointError(ModelError):
    """A checkpoint is missing, corrupt or not an ovdiv checkpoint."""


class MemberError(OvdivError):
    """A deployed member (IR / ONNX / checkpoint) cannot be loaded or does not fit the ensemble."""


class ExportError(OvdivError):
    """Exporting a torch model to ONNX / OpenVINO IR failed."""


class ExportMismatchError(ExportError):
    """An exported artifact's outputs differ from the torch model beyond tolerance."""


class UnsupportedOpError(OvdivError):
    """A model contains operations without a gradient (VJP) rule on the gradient path."""


class GradientCheckError(OvdivError):
    """A member's gradient (VJP) graph disagrees with finite differences of its own forward graph."""


class AttributionInputError(OvdivError, ValueError):
    """Inputs or targets passed to an attribution method have the wrong shape, dtype or values."""


class MetricInputError(OvdivError, ValueError):
    """Arrays passed to a metric have the wrong shape, dtype or values."""


class TrainingError(OvdivError):
    """Training cannot start or continue (bad heuristic, missing data, diverged loss)."""


class SupernetError(OvdivError):
    """The BootstrapNAS super-network cannot be built, trained, searched or extracted."""


class PolicyError(OvdivError):
    """A certification policy file is malformed or refers to unknown metrics."""


class NotAvailableError(OvdivError):
    """A command or feature that this build of ovdiv does not provide (yet)."""
