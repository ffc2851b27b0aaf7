"""Export torch models to self-checked ONNX / OpenVINO IR (FP32, FP16, INT8) with model cards.

Public API::

    export_model(model_or_checkpoint, out_dir, *, formats=("onnx", "ir"), precisions=("fp32",), calib=None,
                 bake_preprocessing=False, ...) -> list[ExportedArtifact]
    check_artifact(path, torch_model, images=None) -> dict      # re-run the self-check later
    TOLERANCES, relative_error, run_artifact

See :mod:`ovdiv.export.exporter` for the files written and :mod:`ovdiv.export.selfcheck` for the
tolerances and the error measure.
"""

from __future__ import annotations

from ovdiv.export.exporter import DEFAULT_CALIB_SIZE as DEFAULT_CALIB_SIZE
from ovdiv.export.exporter import FORMATS as FORMATS
from ovdiv.export.exporter import PRECISIONS as PRECISIONS
from ovdiv.export.exporter import ExportedArtifact as ExportedArtifact
from ovdiv.export.exporter import count_macs as count_macs
from ovdiv.export.exporter import export_model as export_model
from ovdiv.export.selfcheck import DEFAULT_MIN_INT8_AGREEMENT as DEFAULT_MIN_INT8_AGREEMENT
from ovdiv.export.selfcheck import TOLERANCES as TOLERANCES
from ovdiv.export.selfcheck import check_artifact as check_artifact
from ovdiv.export.selfcheck import relative_error as relative_error
from ovdiv.export.selfcheck import run_artifact as run_artifact

__all__ = [
    "DEFAULT_CALIB_SIZE",
    "DEFAULT_MIN_INT8_AGREEMENT",
    "FORMATS",
    "PRECISIONS",
    "TOLERANCES",
    "ExportedArtifact",
    "check_artifact",
    "count_macs",
    "export_model",
    "relative_error",
    "run_artifact",
]
