"""ovdiv checkpoints: a state dict plus everything needed to rebuild, feed and audit the model.

Format (``"ovdiv-checkpoint/1"``): one :func:`torch.save` file holding only plain containers, strings,
numbers and tensors, so it loads with ``torch.load(weights_only=True)`` -- nothing is ever unpickled
beyond tensors and builtins::

    {"format": "ovdiv-checkpoint/1", "arch": str, "arch_args": dict, "num_classes": int,
     "input_size": [H, W], "mean": [3 floats], "std": [3 floats], "recipe": dict | None,
     "extra": dict, "ovdiv_version": str, "created": ISO-8601 str, "state_dict": {name: Tensor}}

``arch_args``, ``recipe`` and ``extra`` must be JSON-serialisable (they are copied into model cards).

How the architecture is rebuilt (:func:`load_checkpoint`), in this order:

1. ``model=`` given: the caller's prebuilt module receives the weights; ``arch`` is only recorded.
2. ``arch`` is a registry name (:func:`ovdiv.models.create_model`): ``create_model(arch,
   num_classes=num_classes, **arch_args)``. This is the preferred way, also for modules that are not
   ovdiv's built-in architectures: register a builder that rebuilds the module from JSON arguments.
3. ``arch = "module:<importable.module>:<function>"``: the module is imported and
   ``function(num_classes=num_classes, **arch_args)`` builds the model. Only modules inside the ``ovdiv``
   package and functions with a ``num_classes`` parameter are accepted (a checkpoint must not be able to
   import or call arbitrary code); importing the module is also how builders registered there become known.

**Non-registry modules, e.g. an extracted BootstrapNAS subnet.** The subnet is a plain torchvision-style
ResNet whose convolutions are narrower and some blocks are ``nn.Identity``; it is fully described by a JSON
arch spec. The supernet area provides, in a module that does *not* import nncf at import time (its
package ``__init__`` neither), a builder such as::

    # ovdiv/supernet/subnet_arch.py   (torch only)
    def build_subnet(*, num_classes: int, spec: dict) -> nn.Module: ...

and saves with ``save_checkpoint(path, subnet, arch="module:ovdiv.supernet.subnet_arch:build_subnet",
arch_args={"spec": spec}, num_classes=..., input_size=...)``. Alternatively it decorates the builder with
``@register_model(family="resnet-subnet")`` and uses its registry name, but then the module must have been
imported before :func:`load_checkpoint` is called; the ``module:`` form imports it on demand. Either way
``ovdiv export CKPT`` and ``ovdiv.load_member(CKPT)`` work on the checkpoint without nncf.

Example:
    >>> from ovdiv.models import create_model, save_checkpoint, load_checkpoint
    >>> net = create_model("tiny_resnet", num_classes=10)
    >>> p = save_checkpoint(tmp / "a.pt", net, arch="tiny_resnet", arch_args={}, num_classes=10,
    ...                     input_size=(64, 64))
    >>> net2, meta = load_checkpoint(p)
"""

from __future__ import annotations

import datetime as _dt
import importlib
import inspect
import json
import os
import pickle
import re
import zipfile
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn

from ovdiv.atomic import atomic_path
from ovdiv.cards import IMAGENET_MEAN, IMAGENET_STD
from ovdiv.errors import CheckpointError, ModelError
from ovdiv.models._registry import create_model
from ovdiv.versions import __version__

__all__ = [
    "CHECKPOINT_FORMAT",
    "CheckpointMeta",
    "save_checkpoint",
    "load_checkpoint",
    "read_checkpoint_meta",
    "build_model",
]

CHECKPOINT_FORMAT = "ovdiv-checkpoint/1"
_MODULE_PREFIX = "module:"
_TRUSTED_PACKAGES = ("ovdiv",)


@dataclass(frozen=True)
class CheckpointMeta:
    """Everything in a checkpoint except the weights.

    Attributes:
        arch: Registry name, or ``"module:<ovdiv.module>:<function>"``.
        arch_args: Builder keyword arguments (JSON-serialisable).
        num_classes: Number of logits.
        input_size: ``(H, W)`` the model was trained for.
        mean: Per-channel normalisation mean in [0, 1] units.
        std: Per-channel normalisation std in [0, 1] units.
        recipe: The training recipe (dict form), if any.
        extra: Free-form JSON-serialisable metadata (epoch, metrics, subnet config, ...).
        ovdiv_version: ovdiv version that wrote the file.
        created: ISO-8601 UTC time of writing.
        path: Where it was read from (``None`` for metadata built in memory).
    """

    arch: str
    arch_args: dict[str, Any]
    num_classes: int
    input_size: tuple[int, int]
    mean: tuple[float, float, float] = IMAGENET_MEAN
    std: tuple[float, float, float] = IMAGENET_STD
    recipe: dict[str, Any] | None = None
    extra: dict[str, Any] = field(default_factory=dict)
    ovdiv_version: str = __version__
    created: str = ""
    path: Path | None = None


def _json_clean(value: Any, what: str) -> Any:
    """Round-trip through JSON: tuples -> lists, and a clear error for anything not serialisable."""
    try:
        return json.loads(json.dumps(value))
    except (TypeError, ValueError) as exc:
        raise CheckpointError(f"checkpoint {what} must be JSON-serialisable ({exc})") from exc


def _triple(value: Sequence[float], what: str) -> tuple[float, float, float]:
    vals = [float(v) for v in value]
    if len(vals) != 3:
        raise CheckpointError(f"checkpoint {what} must have 3 values (RGB), got {list(value)}")
    return (vals[0], vals[1], vals[2])


def save_checkpoint(
    path: str | os.PathLike[str],
    model: nn.Module,
    *,
    arch: str,
    arch_args: Mapping[str, Any],
    num_classes: int,
    input_size: tuple[int, int],
    mean: Sequence[float] = IMAGENET_MEAN,
    std: Sequence[float] = IMAGENET_STD,
    recipe: Mapping[str, Any] | None = None,
    extra: Mapping[str, Any] | None = None,
) -> Path:
    """Atomically write an ovdiv checkpoint.

    Args:
        path: Target file (conventionally ``.pt``); parent folders are created.
        model: The module; its ``state_dict()`` is stored (tensors moved to the CPU).
        arch: Registry name or ``"module:<ovdiv.module>:<function>"`` (see the module docstring).
        arch_args: Builder arguments that rebuild ``model`` (JSON-serialisable).
        num_classes: Number of logits.
        input_size: ``(H, W)`` input size.
        mean: Normalisation mean (RGB, [0, 1] units).
        std: Normalisation std (RGB, [0, 1] units).
        recipe: Training recipe as a dict (e.g. ``Recipe.to_dict()``).
        extra: Free-form JSON-serialisable metadata.

    Returns:
        The path written.

    Raises:
        CheckpointError: Metadata that is not JSON-serialisable or malformed.
    """
    if not isinstance(arch, str) or not arch:
        raise CheckpointError(f"checkpoint arch must be a non-empty string, got {arch!r}")
    h, w = (int(v) for v in input_size)
    state = {k: v.detach().cpu().clone() for k, v in model.state_dict().items()}
    payload: dict[str, Any] = {
        "format": CHECKPOINT_FORMAT,
        "arch": arch,
        "arch_args": _json_clean(dict(arch_args), "arch_args"),
        "num_classes": int(num_classes),
        "input_size": [h, w],
        "mean": list(_triple(mean, "mean")),
        "std": list(_triple(std, "std")),
        "recipe": None if recipe is None else _json_clean(dict(recipe), "recipe"),
        "extra": _json_clean(dict(extra or {}), "extra"),
        "ovdiv_version": __version__,
        "created": _dt.datetime.now(_dt.UTC).isoformat(timespec="seconds"),
        "state_dict": state,
    }
    target = Path(path)
    with atomic_path(target) as tmp:
        torch.save(payload, tmp)
    return target


def _read(path: str | os.PathLike[str], map_location: str | torch.device) -> dict[str, Any]:
    p = Path(path)
    if not p.exists():
        raise CheckpointError(f"checkpoint {p} does not exist", "check the path")
    if p.is_dir():
        raise CheckpointError(f"checkpoint {p} is a directory, not a file")
    if p.stat().st_size == 0:
        raise CheckpointError(f"checkpoint {p} is empty (0 bytes)", "save it again with ovdiv.models.save_checkpoint")
    try:
        payload = torch.load(p, map_location=map_location, weights_only=True)
    except pickle.UnpicklingError as exc:
        found = re.search(r"Unsupported global: GLOBAL ([\w.]+)", str(exc))
        if found is None:  # not a pickled object graph at all (text file, random bytes, ...)
            raise CheckpointError(f"checkpoint {p} is corrupt or not a torch file (unpickling failed)") from exc
        raise CheckpointError(
            f"checkpoint {p} holds Python objects that weights_only=True loading refuses ({found.group(1)})",
            "save it with ovdiv.models.save_checkpoint",
        ) from exc
    except (RuntimeError, EOFError, OSError, ValueError, zipfile.BadZipFile, KeyError, AttributeError) as exc:
        raise CheckpointError(f"checkpoint {p} is corrupt or not a torch file ({type(exc).__name__})") from exc
    if not isinstance(payload, dict) or payload.get("format") != CHECKPOINT_FORMAT:
        fmt = payload.get("format") if isinstance(payload, dict) else type(payload).__name__
        raise CheckpointError(
            f"checkpoint {p} is not an ovdiv checkpoint (format {fmt!r}, expected {CHECKPOINT_FORMAT!r})",
            "save it with ovdiv.models.save_checkpoint",
        )
    return payload


def _meta_from_payload(payload: Mapping[str, Any], p: Path) -> CheckpointMeta:
    try:
        h, w = (int(v) for v in payload["input_size"])
        meta = CheckpointMeta(
            arch=str(payload["arch"]),
            arch_args=dict(payload["arch_args"]),
            num_classes=int(payload["num_classes"]),
            input_size=(h, w),
            mean=_triple(payload["mean"], "mean"),
            std=_triple(payload["std"], "std"),
            recipe=None if payload.get("recipe") is None else dict(payload["recipe"]),
            extra=dict(payload.get("extra") or {}),
            ovdiv_version=str(payload.get("ovdiv_version", "")),
            created=str(payload.get("created", "")),
            path=p,
        )
    except (KeyError, TypeError, ValueError) as exc:
        raise CheckpointError(f"checkpoint {p} has malformed metadata ({type(exc).__name__}: {exc})") from exc
    if not isinstance(payload.get("state_dict"), Mapping):
        raise CheckpointError(f"checkpoint {p} has no state_dict")
    return meta


def read_checkpoint_meta(path: str | os.PathLike[str]) -> CheckpointMeta:
    """Read a checkpoint's metadata without building the model.

    Raises:
        CheckpointError: Missing, corrupt or non-ovdiv file.
    """
    return _meta_from_payload(_read(path, "cpu"), Path(path))


def build_model(arch: str, arch_args: Mapping[str, Any], num_classes: int) -> nn.Module:
    """Build the (untrained) module a checkpoint's ``arch`` / ``arch_args`` describe.

    Args:
        arch: Registry name or ``"module:<ovdiv.module>:<function>"``.
        arch_args: Builder keyword arguments.
        num_classes: Number of logits.

    Returns:
        A freshly initialised module.

    Raises:
        ModelError: Unknown architecture, untrusted or missing module/function, bad arguments.
    """
    if not arch.startswith(_MODULE_PREFIX):
        return create_model(arch, num_classes=num_classes, **dict(arch_args))
    target = arch[len(_MODULE_PREFIX) :]
    mod_name, _, fn_name = target.partition(":")
    if not mod_name or not fn_name:
        raise ModelError(f"arch {arch!r} must look like 'module:<package.module>:<function>'")
    if mod_name.split(".")[0] not in _TRUSTED_PACKAGES:
        raise ModelError(
            f"arch {arch!r} names module {mod_name!r} outside {_TRUSTED_PACKAGES}",
            "only ovdiv's own builders may be imported from a checkpoint; register the builder instead",
        )
    try:
        module = importlib.import_module(mod_name)
    except ImportError as exc:
        raise ModelError(f"arch {arch!r}: cannot import {mod_name!r} ({exc})") from exc
    fn = getattr(module, fn_name, None)
    if not callable(fn):
        raise ModelError(f"arch {arch!r}: module {mod_name!r} has no function {fn_name!r}")
    try:
        takes_num_classes = "num_classes" in inspect.signature(fn).parameters
    except (TypeError, ValueError):
        takes_num_classes = False
    if not takes_num_classes:  # only model builders, never arbitrary ovdiv functions
        raise ModelError(f"arch {arch!r}: {fn_name!r} is not a model builder (no `num_classes` argument)")
    try:
        model = fn(num_classes=num_classes, **dict(arch_args))
    except (TypeError, ValueError) as exc:
        raise ModelError(f"arch {arch!r}: cannot build with {dict(arch_args)} ({exc})") from exc
    if not isinstance(model, nn.Module):
        raise ModelError(f"arch {arch!r}: builder returned {type(model).__name__}, not an nn.Module")
    return model


def load_checkpoint(
    path: str | os.PathLike[str],
    *,
    map_location: str | torch.device = "cpu",
    model: nn.Module | None = None,
    strict: bool = True,
) -> tuple[nn.Module, CheckpointMeta]:
    """Load an ovdiv checkpoint safely (``weights_only=True``) and rebuild its model.

    Args:
        path: Checkpoint file written by :func:`save_checkpoint`.
        map_location: Where tensors are loaded.
        model: Optional prebuilt module to load the weights into (skips rebuilding from ``arch``).
        strict: Require the state-dict keys to match exactly.

    Returns:
        ``(model, meta)``; the model is in eval mode.

    Raises:
        CheckpointError: Missing/corrupt/non-ovdiv file, or weights that do not fit the architecture.
        ModelError: The architecture cannot be built.
    """
    p = Path(path)
    payload = _read(p, map_location)
    meta = _meta_from_payload(payload, p)
    net = model if model is not None else build_model(meta.arch, meta.arch_args, meta.num_classes)
    try:
        net.load_state_dict(payload["state_dict"], strict=strict)
    except RuntimeError as exc:
        first = str(exc).strip().splitlines()[0]
        raise CheckpointError(
            f"checkpoint {p}: weights do not fit architecture {meta.arch!r} with {meta.arch_args} ({first})"
        ) from exc
    net.to(map_location)
    net.eval()
    return net, meta
