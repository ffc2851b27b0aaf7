"""The architecture registry: named builder functions and one factory (timm-style).

A builder is a function ``fn(*, num_classes: int, **arch_args) -> nn.Module`` decorated with
:func:`register_model`. :func:`create_model` looks the name up, drops ``None`` keyword arguments,
rejects keyword arguments the builder does not take (naming them and the valid ones) and calls it.

Example:
    >>> from ovdiv.models import create_model, list_models
    >>> net = create_model("tiny_resnet", num_classes=10)
    >>> "resnext50_32_2" in list_models("resnext*")
    True
"""

from __future__ import annotations

import difflib
import fnmatch
import inspect
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, TypeVar

import torch
from torch import nn

from ovdiv.errors import ModelError

__all__ = [
    "ModelInfo",
    "register_model",
    "create_model",
    "list_models",
    "model_info",
    "is_registered",
    "count_params",
    "model_table",
]

Builder = Callable[..., nn.Module]
F = TypeVar("F", bound=Builder)


@dataclass(frozen=True)
class ModelInfo:
    """What the registry knows about one architecture name.

    Attributes:
        name: Registry name (``create_model(name, ...)``).
        family: Architecture family (``"resnet"``, ``"resnext"``, ``"mnasnet"``, ``"squeezenet"``, ``"deit"``...).
        input_size: Default ``(H, W)`` input size.
        description: One line: what it is, which paper variant.
        is_tiny: True for the small CPU variants used by tests and the demo.
        default_num_classes: Number of classes used when none is given (1000 full-size, 10 tiny).
        defaults: The builder's keyword arguments and their defaults (``num_classes`` excluded).
        module: Python module that defines the builder.
    """

    name: str
    family: str
    input_size: tuple[int, int]
    description: str
    is_tiny: bool = False
    default_num_classes: int = 1000
    defaults: dict[str, Any] = field(default_factory=dict)
    module: str = ""


_BUILDERS: dict[str, Builder] = {}
_INFOS: dict[str, ModelInfo] = {}
_PARAMS_CACHE: dict[tuple[str, int], int] = {}


def register_model(
    *,
    family: str,
    input_size: tuple[int, int] = (224, 224),
    description: str = "",
    tiny: bool = False,
    name: str | None = None,
) -> Callable[[F], F]:
    """Register a builder under its function name (or ``name``).

    Args:
        family: Architecture family.
        input_size: Default ``(H, W)`` input size.
        description: One-line description (defaults to the first docstring line).
        tiny: Whether this is a small CPU variant.
        name: Registry name; defaults to the function's ``__name__``.

    Returns:
        A decorator that records the builder and returns it unchanged.

    Raises:
        ModelError: If the name is already taken by a different function, or the builder does not take
            a keyword argument ``num_classes``.
    """

    def decorator(fn: F) -> F:
        key = name or fn.__name__
        if key in _BUILDERS and _BUILDERS[key] is not fn:
            same = getattr(_BUILDERS[key], "__qualname__", None) == fn.__qualname__ and (
                _BUILDERS[key].__module__ == fn.__module__
            )
            if not same:  # re-import of the same module (e.g. importlib.reload) is fine
                raise ModelError(
                    f"model name {key!r} is already registered by {_BUILDERS[key].__module__}",
                    "choose another name",
                )
        sig = inspect.signature(fn)
        if "num_classes" not in sig.parameters:
            raise ModelError(f"builder {fn.__module__}.{fn.__qualname__} must take a `num_classes` keyword argument")
        defaults = {
            p.name: p.default
            for p in sig.parameters.values()
            if p.name != "num_classes"
            and p.kind in (p.KEYWORD_ONLY, p.POSITIONAL_OR_KEYWORD)
            and p.default is not inspect.Parameter.empty
        }
        default_nc = sig.parameters["num_classes"].default
        doc = (fn.__doc__ or "").strip().splitlines()
        _BUILDERS[key] = fn
        _INFOS[key] = ModelInfo(
            name=key,
            family=family,
            input_size=(int(input_size[0]), int(input_size[1])),
            description=description or (doc[0] if doc else ""),
            is_tiny=tiny,
            default_num_classes=int(default_nc) if isinstance(default_nc, int) else (10 if tiny else 1000),
            defaults=defaults,
            module=fn.__module__,
        )
        return fn

    return decorator


def _unknown_model(name: str) -> ModelError:
    close = difflib.get_close_matches(name, list(_BUILDERS), n=3)
    hint = f"did you mean {', '.join(close)}?" if close else "see `ovdiv models list`"
    return ModelError(f"unknown architecture {name!r}", hint)


def is_registered(name: str) -> bool:
    """Whether ``name`` is a registered architecture."""
    return name in _BUILDERS


def list_models(pattern: str | None = None, *, tiny: bool | None = None) -> list[str]:
    """Sorted registered names, optionally filtered.

    Args:
        pattern: Shell-style wildcard (``"resnext*"``); ``None`` lists all.
        tiny: If given, keep only tiny (True) or only full-size (False) architectures.

    Returns:
        Registry names in alphabetical order.
    """
    names = sorted(_BUILDERS)
    if pattern is not None:
        names = [n for n in names if fnmatch.fnmatchcase(n, pattern)]
    if tiny is not None:
        names = [n for n in names if _INFOS[n].is_tiny == tiny]
    return names


def model_info(name: str) -> ModelInfo:
    """The :class:`ModelInfo` of a registered architecture.

    Raises:
        ModelError: If ``name`` is not registered (with close matches).
    """
    try:
        return _INFOS[name]
    except KeyError:
        raise _unknown_model(name) from None


def create_model(name: str, *, num_classes: int | None = None, **kwargs: Any) -> nn.Module:
    """Build a registered architecture.

    Args:
        name: Registry name (see :func:`list_models`).
        num_classes: Number of output logits; ``None`` uses the architecture's default.
        **kwargs: Builder arguments (``None`` values are dropped, so callers may pass optional CLI values
            straight through).

    Returns:
        The model, in training mode, on the CPU, float32, randomly initialised (nothing is ever downloaded).

    Raises:
        ModelError: Unknown name, unknown keyword argument, or a value the builder rejects.
    """
    if name not in _BUILDERS:
        raise _unknown_model(name)
    fn = _BUILDERS[name]
    kwargs = {k: v for k, v in kwargs.items() if v is not None}
    params = inspect.signature(fn).parameters
    takes_var_kw = any(p.kind is p.VAR_KEYWORD for p in params.values())
    if not takes_var_kw:
        unknown = sorted(set(kwargs) - set(params))
        if unknown:
            valid = sorted(p for p in params if p != "num_classes")
            raise ModelError(f"architecture {name!r} has no argument(s) {unknown}", f"valid arguments: {valid}")
    nc = _INFOS[name].default_num_classes if num_classes is None else num_classes
    if not isinstance(nc, int) or isinstance(nc, bool) or nc < 1:
        raise ModelError(f"num_classes must be a positive int, got {nc!r} for architecture {name!r}")
    try:
        return fn(num_classes=nc, **kwargs)
    except (TypeError, ValueError) as exc:
        raise ModelError(f"cannot build architecture {name!r} with {kwargs}: {exc}") from exc


def count_params(name: str, num_classes: int | None = None, **kwargs: Any) -> int:
    """Number of parameters of an architecture, computed on the ``meta`` device (no memory, fast).

    Args:
        name: Registry name.
        num_classes: Number of classes (architecture default when ``None``).
        **kwargs: Builder arguments.

    Returns:
        Total number of parameter elements.
    """
    nc = model_info(name).default_num_classes if num_classes is None else num_classes
    key = (name, nc)
    if not kwargs and key in _PARAMS_CACHE:
        return _PARAMS_CACHE[key]
    with torch.device("meta"):
        model = create_model(name, num_classes=nc, **kwargs)
    n = sum(p.numel() for p in model.parameters())
    if not kwargs:
        _PARAMS_CACHE[key] = n
    return n


def model_table(pattern: str | None = None, *, tiny: bool | None = None) -> list[dict[str, Any]]:
    """One row per registered architecture, for listings (``ovdiv models list``).

    Args:
        pattern: Shell-style wildcard on the name.
        tiny: Keep only tiny (True) or full-size (False) architectures.

    Returns:
        Dicts with ``name``, ``family``, ``params`` (at the default number of classes), ``num_classes``,
        ``input_size`` ``(H, W)``, ``tiny`` and ``description``.
    """
    rows = []
    for name in list_models(pattern, tiny=tiny):
        info = _INFOS[name]
        rows.append(
            {
                "name": name,
                "family": info.family,
                "params": count_params(name),
                "num_classes": info.default_num_classes,
                "input_size": info.input_size,
                "tiny": info.is_tiny,
                "description": info.description,
            }
        )
    return rows
