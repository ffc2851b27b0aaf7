"""Model cards: the JSON file ``<artifact stem>.json`` next to every deployed member.

A card records what a runtime needs to feed the member correctly (input size, layout, mean/std,
whether preprocessing is baked into the graph) and what an auditor needs to trust it (precision,
SHA-256 of the artifact, source recipe, tool versions). Written by :mod:`ovdiv.export`, read by
:mod:`ovdiv.runtime`. Standard library + numpy only (layer L0).
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ovdiv.atomic import write_json
from ovdiv.errors import ConfigError

__all__ = ["ModelCard", "IMAGENET_MEAN", "IMAGENET_STD", "sha256_file", "card_path_for", "CARD_SCHEMA"]

IMAGENET_MEAN: tuple[float, float, float] = (0.485, 0.456, 0.406)
IMAGENET_STD: tuple[float, float, float] = (0.229, 0.224, 0.225)
CARD_SCHEMA = "ovdiv-model-card/1"


def sha256_file(path: str | os.PathLike[str], *, chunk: int = 1 << 20) -> str:
    """SHA-256 hex digest of a file, read in chunks."""
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        while block := fh.read(chunk):
            h.update(block)
    return h.hexdigest()


def card_path_for(artifact: str | os.PathLike[str]) -> Path:
    """The card path of an artifact: ``dir/name.xml`` -> ``dir/name.json``."""
    p = Path(artifact)
    return p.with_suffix(".json")


@dataclass
class ModelCard:
    """Everything needed to run and audit one deployed member.

    Attributes:
        name: Member name (defaults to the artifact stem).
        format: ``"ir"``, ``"onnx"`` or ``"torch"``.
        precision: Weight precision of the artifact: ``"fp32"``, ``"fp16"`` or ``"int8"``.
        num_classes: Number of logits ``C``.
        input_size: ``(H, W)`` the model expects.
        layout: ``"NCHW"`` (float, normalised) or ``"NHWC_U8"`` (uint8 RGB, preprocessing baked in).
        mean: Per-channel mean in [0, 1] units applied after scaling uint8 by 1/255.
        std: Per-channel std in [0, 1] units.
        baked_preprocessing: True when scaling/normalisation/layout conversion is inside the graph.
        class_names: Optional class names, index -> name.
        architecture: Architecture name in the ovdiv registry (or free text).
        arch_args: Builder arguments of the architecture.
        recipe: The training recipe the weights came from (free-form dict), if known.
        sha256: SHA-256 of the artifact file (``.xml`` for IR; the ``.bin`` is in ``extra["bin_sha256"]``).
        params: Number of parameters, if known.
        macs: Multiply-accumulates per image at ``input_size``, if known.
        versions: Tool versions at export time (ovdiv, torch, openvino, nncf, onnx).
        export_check: Result of the export self-check (max abs/rel error, top-1 agreement, ...).
        extra: Anything else (e.g. supernet subnet config).
    """

    name: str
    format: str
    precision: str = "fp32"
    num_classes: int = 1000
    input_size: tuple[int, int] = (224, 224)
    layout: str = "NCHW"
    mean: tuple[float, float, float] = IMAGENET_MEAN
    std: tuple[float, float, float] = IMAGENET_STD
    baked_preprocessing: bool = False
    class_names: list[str] | None = None
    architecture: str | None = None
    arch_args: dict[str, Any] = field(default_factory=dict)
    recipe: dict[str, Any] | None = None
    sha256: str | None = None
    params: int | None = None
    macs: int | None = None
    versions: dict[str, str] = field(default_factory=dict)
    export_check: dict[str, Any] = field(default_factory=dict)
    extra: dict[str, Any] = field(default_factory=dict)
    schema: str = CARD_SCHEMA

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready dict."""
        d = dataclasses.asdict(self)
        d["input_size"] = list(self.input_size)
        d["mean"] = list(self.mean)
        d["std"] = list(self.std)
        return d

    @classmethod
    def from_dict(cls, d: dict[str, Any], *, source: str = "model card") -> ModelCard:
        """Build a card from a dict, rejecting unknown keys with a clear error."""
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(d) - known)
        if unknown:
            raise ConfigError(f"{source}: unknown key(s) {unknown}", f"valid keys: {sorted(known)}")
        for key in ("name", "format"):
            if key not in d:
                raise ConfigError(f"{source}: missing required key {key!r}")
        d = dict(d)
        try:
            if "input_size" in d:
                h, w = (int(v) for v in d["input_size"])
                d["input_size"] = (h, w)
            for key in ("mean", "std"):
                if key in d:
                    a, b, c = (float(v) for v in d[key])
                    d[key] = (a, b, c)
            if "num_classes" in d:
                d["num_classes"] = int(d["num_classes"])
        except (TypeError, ValueError) as exc:
            raise ConfigError(
                f"{source}: malformed value ({exc})", "input_size is [H, W]; mean/std are 3 floats"
            ) from exc
        if d.get("layout", "NCHW") not in ("NCHW", "NHWC_U8"):
            raise ConfigError(f"{source}: layout must be 'NCHW' or 'NHWC_U8', got {d['layout']!r}")
        return cls(**d)

    def save(self, path: str | os.PathLike[str]) -> Path:
        """Atomically write the card as JSON and return its path."""
        write_json(path, self.to_dict())
        return Path(path)

    @classmethod
    def load(cls, path: str | os.PathLike[str]) -> ModelCard:
        """Read a card; malformed JSON or unknown keys raise :class:`ConfigError` naming the file."""
        p = Path(path)
        try:
            data = json.loads(p.read_text(encoding="utf-8"))
        except FileNotFoundError as exc:
            raise ConfigError(f"model card {p} does not exist") from exc
        except json.JSONDecodeError as exc:
            raise ConfigError(f"model card {p} is not valid JSON ({exc})", "re-export the member") from exc
        if not isinstance(data, dict):
            raise ConfigError(f"model card {p} must hold a JSON object")
        return cls.from_dict(data, source=f"model card {p}")
