"""The :class:`Member` abstraction and :func:`load_member`, the one entry point for deployed models.

A member is one deployed classifier (OpenVINO IR ``.xml`` + ``.bin``, ``.onnx``, or an ovdiv torch
checkpoint) together with its model card. Whatever the backend, a member:

* takes uint8 RGB images ``(N, H, W, 3)`` and applies the card's preprocessing
  (resize to the card's input size, ``(u/255 - mean)/std``, NHWC -> NCHW) before running the graph;
* returns float32 logits ``(N, C)`` from :meth:`Member.predict`, or streams ``(start, images)``
  batches into a caller's array with :meth:`Member.predict_batches` / :meth:`Member.submit_batches`
  (asynchronous for OpenVINO: several requests in flight, the call returns a :class:`PendingBatches`);
* gives the uncompiled graph for gradient-based attribution (:meth:`Member.read_model`; for a
  baked-preprocessing IR that graph takes uint8 NHWC, as stored);
* exposes intermediate features for CKA (:meth:`Member.features`): ``"penultimate"`` (input of the
  last MatMul / Gemm / Linear) and ``"stage<k>"`` (the last activation at each spatial resolution,
  spatially averaged), each flattened to ``(N, D)``;
* records what an auditor needs: backend, device, requested and effective inference precision,
  runtime version and the artifact's SHA-256 (:meth:`Member.info`).
"""

from __future__ import annotations

import abc
import hashlib
import logging
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import numpy.typing as npt

from ovdiv.cards import ModelCard, card_path_for, sha256_file
from ovdiv.errors import ConfigError, MemberError
from ovdiv.runtime.preprocessing import check_images, normalize_images, resize_images
from ovdiv.types import Backend, Precision, UInt8Images

if TYPE_CHECKING:
    import openvino as ov

__all__ = [
    "Member",
    "PendingBatches",
    "load_member",
    "load_card",
    "check_members",
    "DEVICES",
    "CHECKPOINT_SUFFIXES",
]

log = logging.getLogger("ovdiv.runtime")

DEVICES = ("CPU", "GPU", "AUTO")
CHECKPOINT_SUFFIXES = (".pt", ".pth", ".ckpt")
FloatArray32 = npt.NDArray[np.float32]


class PendingBatches:
    """Handle of submitted inference work; :meth:`wait` blocks until it has landed (and re-raises errors)."""

    def wait(self) -> None:
        """Block until every submitted batch is done (no-op for synchronous backends)."""


class Member(abc.ABC):
    """One deployed classifier with its card; subclasses implement one backend.

    Attributes:
        path: The artifact (``.xml``, ``.onnx`` or checkpoint).
        card: Its :class:`~ovdiv.cards.ModelCard` (read from ``<stem>.json`` or synthesised).
        card_found: False when no card was next to the artifact and defaults were used.
        device: ``CPU``, ``GPU`` or ``AUTO``.
        precision: The requested precision (``f32``, ``bf16``, ``f16`` or ``model``).
        inference_precision: What the runtime actually uses (e.g. the plugin default for ``model``).
        dynamic_quantization: The OpenVINO CPU plugin's on-the-fly activation quantization for int8/int4
            weights: ``off`` (explicit precision on CPU), ``plugin default`` (``model``, other devices) or ``n/a``
            (not OpenVINO).
        sha256: SHA-256 of the artifact file (the ``.xml`` for IR).
        weights_sha256: SHA-256 of the ``.bin`` for IR, else None.
        runtime_version: Version string of the executing runtime.
    """

    backend: Backend

    def __init__(
        self,
        path: Path,
        card: ModelCard,
        *,
        card_found: bool,
        device: str,
        precision: Precision,
        weights_path: Path | None = None,
    ) -> None:
        self.path = path
        self.card = card
        self.card_found = card_found
        self.device = device
        self.precision = precision
        self.inference_precision = "f32"
        self.dynamic_quantization = "n/a"
        self.runtime_version = ""
        self.sha256 = sha256_file(path)
        self.weights_sha256 = sha256_file(weights_path) if weights_path is not None else None
        if card.sha256 and card.sha256 != self.sha256:
            log.warning("member %s: card SHA-256 differs from the artifact's (stale card?)", path)

    # ---- identity ---------------------------------------------------------------------------
    @property
    def name(self) -> str:
        """Member name (the card's ``name``; the artifact stem by default)."""
        return self.card.name

    @property
    def num_classes(self) -> int:
        """Number of logits ``C``."""
        return int(self.card.num_classes)

    @property
    def input_size(self) -> tuple[int, int]:
        """``(H, W)`` the graph expects."""
        return (int(self.card.input_size[0]), int(self.card.input_size[1]))

    @property
    def baked(self) -> bool:
        """True when the graph takes uint8 NHWC images (preprocessing baked in)."""
        return self.card.baked_preprocessing or self.card.layout == "NHWC_U8"

    @property
    def content_hash(self) -> str:
        """SHA-256 over the artifact and its weights file: the member's identity in caches."""
        h = hashlib.sha256(self.sha256.encode())
        if self.weights_sha256:
            h.update(self.weights_sha256.encode())
        return h.hexdigest()

    def info(self) -> dict[str, Any]:
        """JSON-ready provenance of this member (goes into ``results.json``)."""
        return {
            "name": self.name,
            "path": str(self.path),
            "sha256": self.sha256,
            "weights_sha256": self.weights_sha256,
            "backend": str(self.backend),
            "device": self.device,
            "precision": str(self.precision),
            "inference_precision": self.inference_precision,
            "dynamic_quantization": self.dynamic_quantization,
            "runtime_version": self.runtime_version,
            "num_classes": self.num_classes,
            "input_size": list(self.input_size),
            "params": self.card.params,
            "macs": self.card.macs,
            "architecture": self.card.architecture,
            "card_found": self.card_found,
            "card": self.card.to_dict(),
        }

    def __repr__(self) -> str:
        return (
            f"{type(self).__name__}(name={self.name!r}, path={str(self.path)!r}, device={self.device!r}, "
            f"precision={str(self.precision)!r}, num_classes={self.num_classes})"
        )

    # ---- preprocessing ------------------------------------------------------------------------
    def preprocess(self, images: UInt8Images) -> FloatArray32:
        """uint8 ``(N, H, W, 3)`` -> float32 ``(N, 3, H', W')`` normalised network input.

        Always the float NCHW view (also for baked members, whose graph does this itself); attribution
        maps are taken w.r.t. this tensor.
        """
        imgs = resize_images(check_images(images), self.input_size)
        return normalize_images(imgs, self.card.mean, self.card.std)

    def model_input(self, images: UInt8Images) -> np.ndarray:
        """What this backend's graph is fed for ``images`` (default: :meth:`preprocess`)."""
        if self.baked:
            return np.ascontiguousarray(resize_images(check_images(images), self.input_size))
        return self.preprocess(images)

    # ---- inference ----------------------------------------------------------------------------
    @abc.abstractmethod
    def _infer(self, x: np.ndarray) -> FloatArray32:
        """Run the graph on one model-input batch; return float32 logits ``(N, C)``."""

    def predict_batches(self, batches: Iterable[tuple[int, UInt8Images]], out: np.ndarray) -> None:
        """Write logits of every ``(start, images)`` batch into ``out[start:start+len(images)]``.

        Backends with asynchronous execution (OpenVINO) keep several batches in flight.

        Args:
            batches: ``(start_index, uint8 (B, H, W, 3))`` pairs; ``start`` indexes ``out``.
            out: float32 ``(N, C)`` array (or anything supporting ``out[a:b] = logits``) receiving the logits.
        """
        self.submit_batches(batches, out).wait()

    def submit_batches(self, batches: Iterable[tuple[int, UInt8Images]], out: Any) -> PendingBatches:
        """Like :meth:`predict_batches` but returns once every batch is *submitted*.

        Asynchronous backends return while the last requests still run, so the next member's batches
        can be submitted without the device idling in between; call ``.wait()`` on the result before
        reading ``out``. Synchronous backends finish before returning.
        """
        for start, images in batches:
            out[start : start + len(images)] = self._infer(self.model_input(images))
        return PendingBatches()

    def predict(self, images: UInt8Images, *, batch_size: int = 64) -> FloatArray32:
        """Logits float32 ``(N, C)`` for uint8 images ``(N, H, W, 3)`` (card preprocessing applied)."""
        imgs = check_images(images)
        out = np.empty((len(imgs), self.num_classes), dtype=np.float32)
        self.predict_batches(((s, imgs[s : s + batch_size]) for s in range(0, len(imgs), batch_size)), out)
        return out

    def features(
        self, images: UInt8Images, layers: Sequence[str] | None = None, *, batch_size: int = 64
    ) -> dict[str, FloatArray32]:
        """Intermediate features for CKA, each float32 ``(N, D)``.

        Keys: ``"penultimate"`` (input of the classifier's last MatMul/Gemm/Linear) and ``"stage1"``,
        ``"stage2"``, ... (the last activation at each spatial resolution after the first convolution,
        averaged over H and W), in order of decreasing resolution.

        Args:
            images: uint8 ``(N, H, W, 3)``.
            layers: Keys to return (default: all).
            batch_size: Images per inference.

        Raises:
            MemberError: a requested layer does not exist in this member.
        """
        imgs = check_images(images)
        chunks: dict[str, list[FloatArray32]] = {}
        for s in range(0, len(imgs), batch_size):
            for key, value in self._features(self.model_input(imgs[s : s + batch_size])).items():
                chunks.setdefault(key, []).append(value)
        if layers is not None:
            unknown = [k for k in layers if k not in chunks]
            if unknown:
                raise MemberError(f"member {self.name} has no feature layer(s) {unknown}", f"available: {list(chunks)}")
            chunks = {k: chunks[k] for k in layers}
        return {k: np.concatenate(v).astype(np.float32, copy=False) for k, v in chunks.items()}

    @abc.abstractmethod
    def _features(self, x: np.ndarray) -> dict[str, FloatArray32]:
        """Features of one model-input batch (see :meth:`features`)."""

    def read_model(self) -> ov.Model:
        """The uncompiled OpenVINO model of this member (float NCHW input unless baked)."""
        raise MemberError(f"member {self.name}: backend {self.backend} has no OpenVINO model")

    def close(self) -> None:  # noqa: B027 - optional hook
        """Release runtime resources (compiled models, sessions)."""


# ----------------------------------------------------------------------------------------------
# cards
# ----------------------------------------------------------------------------------------------
def load_card(
    path: Path,
    *,
    fmt: str,
    static_input: Sequence[int] | None,
    num_outputs: int | None,
    layout: str | None = None,
) -> tuple[ModelCard, bool]:
    """The card next to ``path``, or defaults from the graph's static shapes (with a logged warning).

    Args:
        path: Artifact path; the card is ``path.with_suffix(".json")``.
        fmt: ``"ir"``, ``"onnx"`` or ``"torch"`` (card ``format`` of a synthesised card).
        static_input: The graph's input shape ``[N, C, H, W]`` (or ``[N, H, W, C]`` with ``layout``
            ``"NHWC_U8"``); entries < 1 mean dynamic.
        num_outputs: Static number of logits, or None when dynamic.
        layout: ``"NHWC_U8"`` when the graph takes uint8 NHWC input.

    Returns:
        ``(card, found)``.

    Raises:
        MemberError: malformed card, or no card and the graph's shapes are dynamic.
    """
    cpath = card_path_for(path)
    if cpath.is_file():
        try:
            card = ModelCard.load(cpath)
        except ConfigError as exc:
            raise MemberError(f"member {path}: {exc.message}", "re-export the member or fix its card") from exc
        if num_outputs is not None and card.num_classes != num_outputs:
            raise MemberError(
                f"member {path}: card {cpath.name} says {card.num_classes} classes but the graph outputs {num_outputs}",
                "re-export the member",
            )
        return card, True
    lay = layout or "NCHW"
    hw: tuple[int, int] | None = None
    if static_input is not None and len(static_input) == 4:
        dims = list(static_input)
        h, w = (dims[1], dims[2]) if lay == "NHWC_U8" else (dims[2], dims[3])
        if h > 0 and w > 0:
            hw = (int(h), int(w))
    if hw is None or num_outputs is None:
        raise MemberError(
            f"member {path}: no model card ({cpath.name}) and the graph's input/output shapes are dynamic",
            "write a model card next to the artifact (ovdiv export does)",
        )
    log.warning(
        "member %s: no model card %s; assuming ImageNet mean/std, input %dx%d, layout %s",
        path,
        cpath.name,
        hw[0],
        hw[1],
        lay,
    )
    card = ModelCard(
        name=path.stem,
        format=fmt,
        num_classes=int(num_outputs),
        input_size=hw,
        layout=lay,
        baked_preprocessing=lay == "NHWC_U8",
    )
    return card, False


# ----------------------------------------------------------------------------------------------
# loading
# ----------------------------------------------------------------------------------------------
def _parse_precision(precision: str | Precision) -> Precision:
    try:
        return Precision(str(precision).lower())
    except ValueError:
        raise ConfigError(f"unknown precision {precision!r}", f"choose one of {[p.value for p in Precision]}") from None


def _parse_backend(backend: str | Backend | None, path: Path) -> Backend:
    suffix = path.suffix.lower()
    if backend is None:
        return Backend.TORCH if suffix in CHECKPOINT_SUFFIXES else Backend.OPENVINO
    try:
        b = Backend(str(backend).lower())
    except ValueError:
        raise ConfigError(f"unknown backend {backend!r}", f"choose one of {[x.value for x in Backend]}") from None
    if suffix in CHECKPOINT_SUFFIXES and b is not Backend.TORCH:
        raise MemberError(f"member {path}: a torch checkpoint runs only on the torch backend", "use --backend torch")
    if suffix == ".xml" and b is not Backend.OPENVINO:
        raise MemberError(f"member {path}: an OpenVINO IR runs only on the openvino backend", "use --backend openvino")
    if suffix == ".onnx" and b is Backend.TORCH:
        raise MemberError(f"member {path}: an ONNX model cannot run on the torch backend", "use openvino/onnxruntime")
    return b


def load_member(
    path: str | Path,
    *,
    device: str = "CPU",
    precision: str | Precision = "f32",
    backend: str | Backend | None = None,
    name: str | None = None,
) -> Member:
    """Load one deployed member with its model card.

    Args:
        path: ``.xml`` (with its ``.bin``), ``.onnx``, or an ovdiv torch checkpoint (``.pt``/``.pth``/``.ckpt``).
        device: ``CPU``, ``GPU`` or ``AUTO`` (OpenVINO); torch maps GPU to CUDA; ONNX Runtime runs on CPU.
        precision: Inference precision ``f32`` (default), ``bf16``, ``f16`` or ``model`` (leave the runtime's
            default, e.g. an INT8 IR as quantized; the effective precision is recorded).
        backend: ``openvino`` (default for IR/ONNX), ``onnxruntime`` or ``torch`` (default for checkpoints).
        name: Override the member name (default: the card's name, i.e. the artifact stem).

    Returns:
        A :class:`Member`.

    Raises:
        MemberError: the artifact is missing, unreadable, or not a single-input ``[N, C]``-output classifier.
        ConfigError: unknown precision, backend or device.
    """
    p = Path(path)
    if not p.is_file():
        raise MemberError(f"member {p} does not exist", "check the path")
    prec = _parse_precision(precision)
    dev = str(device).upper()
    if dev not in DEVICES and not dev.startswith(("GPU.", "AUTO:", "HETERO:", "MULTI:")):
        raise ConfigError(f"unknown device {device!r}", f"choose one of {list(DEVICES)}")
    b = _parse_backend(backend, p)
    suffix = p.suffix.lower()
    if suffix not in (".xml", ".onnx", *CHECKPOINT_SUFFIXES):
        raise MemberError(
            f"member {p}: unsupported file type {suffix!r}", "pass an OpenVINO IR .xml, an .onnx or a torch checkpoint"
        )
    member: Member
    if b is Backend.OPENVINO:
        from ovdiv.runtime.openvino_member import OpenVINOMember

        member = OpenVINOMember(p, device=dev, precision=prec)
    elif b is Backend.ONNXRUNTIME:
        from ovdiv.runtime.onnxruntime_member import OnnxRuntimeMember

        member = OnnxRuntimeMember(p, device=dev, precision=prec)
    else:
        from ovdiv.runtime.torch_member import TorchMember

        member = TorchMember(p, device=dev, precision=prec)
    if name:
        member.card.name = name
    return member


def check_members(members: Sequence[Member]) -> None:
    """Check that members can form an ensemble: same class count, distinct names.

    Raises:
        MemberError: naming the two members that disagree.
    """
    if not members:
        raise MemberError("no members given", "pass at least one .xml / .onnx / checkpoint")
    first = members[0]
    for m in members[1:]:
        if m.num_classes != first.num_classes:
            raise MemberError(
                f"members {first.name} ({first.num_classes} classes) and {m.name} ({m.num_classes} classes) "
                "disagree on the number of classes",
                "an ensemble needs members trained on the same label set",
            )
    seen: dict[str, Member] = {}
    for m in members:
        if m.name in seen:
            raise MemberError(
                f"two members are named {m.name!r} ({seen[m.name].path} and {m.path})",
                "rename one artifact or set a distinct 'name' in its model card",
            )
        seen[m.name] = m
