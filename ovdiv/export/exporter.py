"""``export_model``: a torch model or ovdiv checkpoint -> checked ONNX / OpenVINO IR artifacts + model cards.

Files written into ``out_dir`` (``name`` defaults to the checkpoint's file stem):

==========================  ===================================================================
``<name>.onnx``             ONNX, fp32 (ONNX artifacts are always fp32; fp16/int8 apply to IR)
``<name>_fp32.xml/.bin``    OpenVINO IR, fp32 weights
``<name>_fp16.xml/.bin``    OpenVINO IR, weights compressed to fp16
``<name>_int8.xml/.bin``    OpenVINO IR, NNCF post-training INT8
``<artifact stem>.json``    the :class:`~ovdiv.cards.ModelCard` of each artifact
==========================  ===================================================================

Every artifact is checked against the torch model before anything is written to ``out_dir``
(:mod:`ovdiv.export.selfcheck`); the check record is stored in the card's ``export_check``. All files
are first written into a temporary folder inside ``out_dir`` and only moved into place (``.bin`` before
``.xml``, the card last) once every requested artifact passed, so an export never leaves half-written or
unchecked artifacts behind: on any error ``out_dir`` is unchanged.
"""

from __future__ import annotations

import copy
import logging
import os
import shutil
import tempfile
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn

from ovdiv.cards import IMAGENET_MEAN, IMAGENET_STD, ModelCard, card_path_for, sha256_file
from ovdiv.errors import ConfigError
from ovdiv.export.images import CalibSource, preprocess, random_images, resize_images, resolve_images
from ovdiv.export.onnx_format import DEFAULT_OPSET, UInt8Preprocess, export_onnx
from ovdiv.export.selfcheck import DEFAULT_MIN_INT8_AGREEMENT, check_artifact
from ovdiv.types import Progress, ProgressCallback
from ovdiv.versions import tool_versions

__all__ = ["ExportedArtifact", "export_model", "FORMATS", "PRECISIONS", "DEFAULT_CALIB_SIZE", "count_macs"]

log = logging.getLogger("ovdiv.export")

FORMATS = ("onnx", "ir")
PRECISIONS = ("fp32", "fp16", "int8")
DEFAULT_CALIB_SIZE = 300
_N_CHECK = 32


@dataclass(frozen=True)
class ExportedArtifact:
    """One exported, checked artifact.

    Attributes:
        path: ``.onnx`` or ``.xml`` file (the ``.bin`` sits next to an ``.xml``).
        format: ``"onnx"`` or ``"ir"``.
        precision: ``"fp32"``, ``"fp16"`` or ``"int8"``.
        card: Its model card (also written to ``card_path``).
        check: The self-check record (same as ``card.export_check``).
    """

    path: Path
    format: str
    precision: str
    card: ModelCard
    check: dict[str, Any] = field(default_factory=dict)

    @property
    def card_path(self) -> Path:
        """``<artifact stem>.json`` next to the artifact."""
        return card_path_for(self.path)


@dataclass
class _Source:
    model: nn.Module
    name: str
    input_size: tuple[int, int]
    num_classes: int
    mean: tuple[float, float, float]
    std: tuple[float, float, float]
    arch: str | None
    arch_args: dict[str, Any]
    recipe: dict[str, Any] | None
    class_names: list[str] | None
    extra: dict[str, Any]


def _as_list(value: str | Sequence[str], allowed: tuple[str, ...], what: str) -> list[str]:
    items = [value] if isinstance(value, str) else list(value)
    items = [str(v).strip().lower() for v in items if str(v).strip()]
    bad = [v for v in items if v not in allowed]
    if bad or not items:
        raise ConfigError(f"invalid {what} {bad or items!r}", f"choose from {', '.join(allowed)}")
    return list(dict.fromkeys(items))


def _triple(v: Sequence[float]) -> tuple[float, float, float]:
    a, b, c = (float(x) for x in v)
    return (a, b, c)


def _resolve_source(
    model: nn.Module | str | os.PathLike[str],
    *,
    name: str | None,
    input_size: tuple[int, int] | None,
    num_classes: int | None,
    mean: Sequence[float] | None,
    std: Sequence[float] | None,
    recipe: Any,
) -> _Source:
    recipe_dict = recipe.to_dict() if hasattr(recipe, "to_dict") else (dict(recipe) if recipe is not None else None)
    if isinstance(model, str | os.PathLike):
        from ovdiv.models.checkpoint import load_checkpoint

        path = Path(model)
        net, meta = load_checkpoint(path)
        if num_classes is not None and num_classes != meta.num_classes:
            raise ConfigError(f"num_classes={num_classes} contradicts checkpoint {path} ({meta.num_classes} classes)")
        class_names = meta.extra.get("class_names")
        return _Source(
            model=net,
            name=name or path.stem,
            input_size=tuple(input_size) if input_size else meta.input_size,  # type: ignore[arg-type]
            num_classes=meta.num_classes,
            mean=_triple(mean) if mean is not None else meta.mean,
            std=_triple(std) if std is not None else meta.std,
            arch=meta.arch,
            arch_args=dict(meta.arch_args),
            recipe=recipe_dict if recipe_dict is not None else meta.recipe,
            class_names=list(class_names) if isinstance(class_names, list) else None,
            extra={"source_checkpoint": str(path), "source_checkpoint_sha256": sha256_file(path)},
        )
    if not isinstance(model, nn.Module):
        raise ConfigError(f"cannot export a {type(model).__name__}", "pass an nn.Module or a checkpoint path")
    if input_size is None:
        raise ConfigError(f"input_size is required to export a {type(model).__name__} module", "pass input_size=(H, W)")
    net = copy.deepcopy(model).float().cpu().eval()
    h, w = (int(v) for v in input_size)
    if num_classes is None:
        with torch.inference_mode():
            num_classes = int(net(torch.zeros(2, 3, h, w)).shape[-1])
    return _Source(
        model=net,
        name=name or type(model).__name__.lower(),
        input_size=(h, w),
        num_classes=int(num_classes),
        mean=_triple(mean) if mean is not None else IMAGENET_MEAN,
        std=_triple(std) if std is not None else IMAGENET_STD,
        arch=None,
        arch_args={},
        recipe=recipe_dict,
        class_names=None,
        extra={},
    )


def count_macs(model: nn.Module, input_size: tuple[int, int]) -> int | None:
    """Multiply-accumulates of one forward pass on one image (torch's FLOP counter / 2; ``None`` if it fails)."""
    from torch.utils.flop_counter import FlopCounterMode

    try:
        counter = FlopCounterMode(display=False)
        with counter, torch.inference_mode():
            model(torch.zeros(1, 3, *input_size))
        return int(counter.get_total_flops() // 2)
    except Exception:  # a counting failure must not fail an export
        log.debug("MAC counting failed", exc_info=True)
        return None


def _uses_attention(model: nn.Module) -> bool:
    return any("attention" in type(m).__name__.lower() for m in model.modules())


def export_model(
    model: nn.Module | str | os.PathLike[str],
    out_dir: str | os.PathLike[str],
    *,
    name: str | None = None,
    formats: str | Sequence[str] = ("onnx", "ir"),
    precisions: str | Sequence[str] = ("fp32",),
    input_size: tuple[int, int] | None = None,
    num_classes: int | None = None,
    calib: CalibSource | None = None,
    bake_preprocessing: bool = False,
    recipe: Any = None,
    extra_card: Mapping[str, Any] | None = None,
    progress: ProgressCallback | None = None,
    mean: Sequence[float] | None = None,
    std: Sequence[float] | None = None,
    calib_size: int = DEFAULT_CALIB_SIZE,
    min_int8_agreement: float = DEFAULT_MIN_INT8_AGREEMENT,
    int8_preset: str = "mixed",
    int8_transformer: bool | None = None,
    tolerances: Mapping[str, float] | None = None,
    opset: int = DEFAULT_OPSET,
    onnx_exporter: str = "auto",
) -> list[ExportedArtifact]:
    """Export a torch model to checked ONNX / OpenVINO IR artifacts with model cards.

    Args:
        model: An ``nn.Module`` (float32 NCHW input) or the path of an ovdiv checkpoint.
        out_dir: Output folder (created).
        name: Artifact base name (default: checkpoint stem, or the module's class name).
        formats: ``"onnx"`` and/or ``"ir"``.
        precisions: ``"fp32"``, ``"fp16"``, ``"int8"`` (IR); ONNX is always written in fp32.
        input_size: ``(H, W)``; required for a module, taken from the checkpoint otherwise.
        num_classes: Number of logits (checked against the checkpoint; inferred for a module).
        calib: Calibration images (uint8 ``(N, H, W, 3)``, ``(images, labels)`` or a callable returning
            either); required for ``int8``. Also used as self-check images.
        bake_preprocessing: Make the artifacts take uint8 NHWC RGB images (card layout ``NHWC_U8``).
        recipe: Training recipe (``Recipe`` or dict) to record in the cards (default: the checkpoint's).
        extra_card: Merged into each card's ``extra``.
        progress: Progress callback (task ``"export"``, one unit per artifact).
        mean: Normalisation mean override (default: checkpoint's, else ImageNet).
        std: Normalisation std override.
        calib_size: Use at most this many calibration images.
        min_int8_agreement: Minimum top-1 agreement of INT8 with torch FP32 on the calibration images.
        int8_preset: ``"mixed"`` (default) or ``"performance"``.
        int8_transformer: Quantize as a transformer (default: when the model has attention modules).
        tolerances: Override of the fp32/fp16 ``rel_err`` tolerances (:data:`ovdiv.export.TOLERANCES`).
        opset: ONNX opset (>= 17).
        onnx_exporter: ``"auto"``, ``"dynamo"`` or ``"torchscript"``.

    Returns:
        One :class:`ExportedArtifact` per file written, ONNX first, then IR in precision order.

    Raises:
        ConfigError: Bad formats/precisions, INT8 without calibration data, missing input size.
        CheckpointError: Missing/corrupt checkpoint.
        ExportError: A conversion failed.
        ExportMismatchError: An artifact disagrees with the torch model (nothing is written).
    """
    fmts = _as_list(formats, FORMATS, "export format(s)")
    precs = _as_list(precisions, PRECISIONS, "precision(s)")
    if fmts == ["onnx"] and "fp32" not in precs:
        raise ConfigError(f"ONNX export is fp32 only, got precisions {precs}", "add --format ir for fp16/int8")
    if calib_size < 1:
        raise ConfigError(f"calib_size must be >= 1, got {calib_size}")
    needs_int8 = "ir" in fmts and "int8" in precs
    if needs_int8 and calib is None:
        raise ConfigError("INT8 export needs calibration images", "pass --calib SPEC (e.g. --calib demo) or calib=")
    src = _resolve_source(
        model, name=name, input_size=input_size, num_classes=num_classes, mean=mean, std=std, recipe=recipe
    )
    net = src.model.float().cpu().eval()
    calib_imgs = resolve_images(calib)
    if calib_imgs is not None:
        calib_imgs = resize_images(calib_imgs[:calib_size], src.input_size)
    check_imgs = calib_imgs[:_N_CHECK] if calib_imgs is not None else random_images(16, src.input_size, seed=0)
    h, w = src.input_size
    tol = dict(tolerances or {})

    jobs: list[tuple[str, str]] = [("onnx", "fp32")] if "onnx" in fmts else []
    if "onnx" in fmts and precs != ["fp32"] and "ir" not in fmts:
        log.info("ONNX artifacts are fp32; precisions %s apply to IR only", precs)
    if "ir" in fmts:
        jobs += [("ir", p) for p in precs]
    total = len(jobs)
    report = progress or (lambda _: None)
    report(Progress("export", 0, total, src.name))

    params = sum(p.numel() for p in net.parameters())
    macs = count_macs(net, src.input_size)
    versions = tool_versions()
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{src.name}.export-", dir=out))
    staged: list[ExportedArtifact] = []
    try:
        float_example = torch.from_numpy(preprocess(random_images(2, (h, w), seed=1), (h, w), src.mean, src.std))
        uint8_example = torch.from_numpy(random_images(2, (h, w), seed=1))

        def card_for(path: Path, fmt: str, precision: str, extra: dict[str, Any]) -> ModelCard:
            card_extra = {**src.extra, **extra, **dict(extra_card or {})}
            if path.suffix == ".xml":
                card_extra["bin_sha256"] = sha256_file(path.with_suffix(".bin"))
            return ModelCard(
                name=path.stem,
                format=fmt,
                precision=precision,
                num_classes=src.num_classes,
                input_size=src.input_size,
                layout="NHWC_U8" if bake_preprocessing else "NCHW",
                mean=src.mean,
                std=src.std,
                baked_preprocessing=bake_preprocessing,
                class_names=src.class_names,
                architecture=src.arch,
                arch_args=src.arch_args,
                recipe=src.recipe,
                sha256=sha256_file(path),
                params=params,
                macs=macs,
                versions=versions,
                extra=card_extra,
            )

        def finish(path: Path, fmt: str, precision: str, extra: dict[str, Any]) -> None:
            card = card_for(path, fmt, precision, extra)
            images = calib_imgs if precision == "int8" else check_imgs
            check = check_artifact(
                path,
                net,
                images,
                card=card,
                tolerance=tol.get(precision),
                min_int8_agreement=min_int8_agreement,
            )
            card.export_check = check
            card.save(card_path_for(path))
            staged.append(ExportedArtifact(path=path, format=fmt, precision=precision, card=card, check=check))
            log.info("%s %s: %s=%s", path.name, precision, check["metric"], _fmt(check[check["metric"]]))
            report(Progress("export", len(staged), total, path.name))

        if "onnx" in fmts:
            onnx_path = tmp / f"{src.name}.onnx"
            if bake_preprocessing:
                wrapped = UInt8Preprocess(net, src.mean, src.std).eval()
                info = export_onnx(wrapped, onnx_path, uint8_example, opset=opset, exporter=onnx_exporter)
            else:
                info = export_onnx(net, onnx_path, float_example, opset=opset, exporter=onnx_exporter)
            finish(onnx_path, "onnx", "fp32", {"onnx": info})

        if "ir" in fmts:
            from ovdiv.export import openvino_format as ovf

            ov_fp32 = ovf.convert_to_openvino(net, float_example)

            def bake(m: Any) -> Any:
                return ovf.bake_preprocessing(m, src.mean, src.std) if bake_preprocessing else m

            for precision in precs:
                xml = tmp / f"{src.name}_{precision}.xml"
                extra: dict[str, Any] = {"converted_from": "torch (openvino.convert_model)"}
                if precision == "int8":
                    if calib_imgs is None:  # unreachable: checked before any work
                        raise ConfigError("INT8 export needs calibration images")
                    transformer = _uses_attention(net) if int8_transformer is None else int8_transformer
                    calib_x = preprocess(calib_imgs, src.input_size, src.mean, src.std)
                    q, settings = ovf.quantize_int8(ov_fp32, calib_x, transformer=transformer, preset=int8_preset)
                    ovf.save_ir(bake(q), xml, compress_to_fp16=False)
                    extra["int8"] = settings
                else:
                    ovf.save_ir(bake(ov_fp32), xml, compress_to_fp16=precision == "fp16")
                    extra["weights"] = "fp16 (compress_to_fp16)" if precision == "fp16" else "fp32"
                finish(xml, "ir", precision, extra)

        final = [_move(a, tmp, out) for a in staged]
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return final


def _fmt(v: Any) -> str:
    return f"{v:.3g}" if isinstance(v, float) else str(v)


def _move(a: ExportedArtifact, tmp: Path, out: Path) -> ExportedArtifact:
    """Move one artifact (``.bin`` first, then ``.xml``/``.onnx``, the card last) from ``tmp`` into ``out``."""
    target = out / a.path.name
    if a.path.suffix == ".xml":
        os.replace(a.path.with_suffix(".bin"), target.with_suffix(".bin"))
    os.replace(a.path, target)
    os.replace(card_path_for(a.path), card_path_for(target))
    return ExportedArtifact(path=target, format=a.format, precision=a.precision, card=a.card, check=a.check)
