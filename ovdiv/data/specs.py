"""Dataset spec strings: parsing, canonical form and expansion (DESIGN.md §3).

Grammar (whitespace is not allowed)::

    spec      := base | corrupted | cbar
    base      := "imagenet" | "imagenetv2" | "imagefolder:" PATH | "demo" | "demo:test" | "demo:train"
    corrupted := NAME SEVERITY ["@" base]          e.g. lines1.6, plasma4.0@imagefolder:/x, lines1.6@demo
    cbar      := "cbar" [":" NAME [":" INDEX]] ["@" base]

``NAME`` is a corruption name or alias (``lines``, ``plasma`` -> ``plasma_noise``, ``checkerboard`` ->
``checkerboard_cutout``, ``waterdrop`` -> ``water_drop``, ... see :func:`ovdiv.data.corruptions.available`),
``SEVERITY`` its magnitude on the reference's 0..10 scale (not the 1..5 index). A corrupted spec without
``@base`` is on ``imagenet``. ``cbar`` stands for the official ImageNet-C-bar (10 corruptions x 5
severities = 50 datasets), ``cbar:NAME`` for one corruption's 5 severities and ``cbar:NAME:K`` for its
severity index ``K`` in 1..5; use :func:`expand_spec` to turn them into single-dataset specs.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any, Literal

from ovdiv.errors import DataError

__all__ = [
    "CBAR_CORRUPTIONS",
    "SPEC_KINDS",
    "DatasetSpec",
    "parse_spec",
    "expand_spec",
    "format_severity",
    "catalog",
]

CBAR_CORRUPTIONS: tuple[str, ...] = (
    "caustic_refraction",
    "inverse_sparkles",
    "sparkles",
    "perlin_noise",
    "blue_noise_sample",
    "plasma_noise",
    "checkerboard_cutout",
    "cocentric_sine_waves",
    "single_frequency_greyscale",
    "brownish_noise",
)
"""The ten official ImageNet-C-bar corruptions, in the benchmark CSV's order."""

SPEC_KINDS: tuple[tuple[str, str], ...] = (
    ("imagenet", "ImageNet-1k val, <root>/imagenet/val/<wnid>/*.JPEG (resize 256, center crop 224)"),
    ("imagenetv2", "ImageNetV2 matched-frequency, <root>/imagenetv2/<class index 0..999>/*.jpeg"),
    ("imagefolder:<path>", "any ImageFolder tree; classes = natural sort of folder names, or a --classes file"),
    ("demo", "embedded synthetic test split (10 classes, 64x64, 1000 images; no files needed)"),
    ("demo:train", "embedded synthetic training split (independent seed stream, 10000 images)"),
    ("<corruption><severity>[@<base>]", "corruption at that magnitude on <base> (default imagenet), e.g. lines1.6"),
    ("cbar[:<name>[:<1..5>]][@<base>]", "official ImageNet-C-bar: 10 corruptions x 5 severities (expands)"),
)
"""(syntax, meaning) of every spec kind, for ``ovdiv data list`` and docs."""

Kind = Literal["imagenet", "imagenetv2", "imagefolder", "demo", "corrupted", "cbar"]

_BASE_NAMES = ("imagenet", "imagenetv2", "demo", "demo:test", "demo:train")
_CORRUPTED_RE = re.compile(r"^[A-Za-z][A-Za-z0-9_\-]*?[_:\-]?(\d+(?:\.\d*)?|\.\d+)$")


def format_severity(severity: float) -> str:
    """Canonical text of a severity magnitude: shortest float repr (``1.6``, ``4.0``, ``4.75``)."""
    return repr(float(severity))


@dataclass(frozen=True)
class DatasetSpec:
    """A parsed dataset spec.

    Attributes:
        kind: ``imagenet``, ``imagenetv2``, ``imagefolder``, ``demo``, ``corrupted`` or ``cbar``.
        text: The spec as the user wrote it.
        path: Folder of an ``imagefolder`` spec (as written).
        split: ``"test"`` or ``"train"`` for ``demo``.
        corruption: Canonical corruption name (``corrupted``; ``cbar:NAME``).
        severity: Magnitude (``corrupted``).
        severity_index: 1..5 index (``cbar:NAME:K``), else None.
        base: The clean dataset a ``corrupted``/``cbar`` spec applies to.
    """

    kind: Kind
    text: str
    path: str | None = None
    split: str = "test"
    corruption: str | None = None
    severity: float | None = None
    severity_index: int | None = None
    base: DatasetSpec | None = None

    @property
    def canonical(self) -> str:
        """The canonical spec string (aliases resolved, severities as shortest float repr).

        Two specs that mean the same data have the same canonical string (``plasma4`` and
        ``plasma_noise4.0@imagenet`` are both ``plasma_noise4.0``); the prepared-data cache keys on it.
        """
        suffix = ""
        if self.base is not None and self.base.kind != "imagenet":
            suffix = "@" + self.base.canonical
        if self.kind == "imagefolder":
            return f"imagefolder:{self.path}"
        if self.kind == "demo":
            return "demo" if self.split == "test" else f"demo:{self.split}"
        if self.kind == "corrupted":
            assert self.corruption is not None and self.severity is not None
            return f"{self.corruption}{format_severity(self.severity)}{suffix}"
        if self.kind == "cbar":
            head = "cbar" if self.corruption is None else f"cbar:{self.corruption}"
            if self.severity_index is not None:
                head += f":{self.severity_index}"
            return head + suffix
        return self.kind

    @property
    def is_clean(self) -> bool:
        """True for specs without a corruption."""
        return self.kind in ("imagenet", "imagenetv2", "imagefolder", "demo")

    @property
    def root_base(self) -> DatasetSpec:
        """The clean dataset under any corruption (the spec itself when clean)."""
        return self if self.base is None else self.base.root_base

    def __str__(self) -> str:
        return self.canonical


def _corruptions_api() -> Any:
    from ovdiv.data import corruptions

    return corruptions


def _parse_base(text: str, whole: str) -> DatasetSpec:
    if text.startswith("imagefolder:"):
        path = text[len("imagefolder:") :]
        if not path:
            raise DataError(f"dataset spec {whole!r}: imagefolder needs a path", "write imagefolder:/path/to/tree")
        return DatasetSpec(kind="imagefolder", text=whole, path=path)
    if text in ("imagenet", "imagenetv2"):
        return DatasetSpec(kind=text, text=whole)  # type: ignore[arg-type]
    if text in ("demo", "demo:test", "demo:train"):
        return DatasetSpec(kind="demo", text=whole, split="train" if text == "demo:train" else "test")
    raise DataError(
        f"unknown base dataset {text!r} in spec {whole!r}",
        "use imagenet, imagenetv2, imagefolder:<path>, demo or demo:train (see `ovdiv data list`)",
    )


def parse_spec(text: str) -> DatasetSpec:
    """Parse a dataset spec string (grammar in the module docstring).

    Args:
        text: e.g. ``"imagenet"``, ``"lines1.6"``, ``"plasma4.0@imagefolder:/x"``, ``"cbar:sparkles"``.

    Returns:
        The parsed :class:`DatasetSpec`.

    Raises:
        DataError: Unknown kind or corruption name (the message lists the valid ones), a severity
            outside 0..10, or a severity index outside 1..5.
    """
    if not isinstance(text, str) or not text.strip():
        raise DataError(f"empty dataset spec {text!r}", "use e.g. demo, imagenet or lines1.6 (see `ovdiv data list`)")
    text = text.strip()
    if text in _BASE_NAMES or text.startswith("imagefolder:"):
        return _parse_base(text, text)
    head, _, base_text = text.partition("@")
    base = _parse_base(base_text, text) if base_text else DatasetSpec(kind="imagenet", text="imagenet")
    if base_text and not base.is_clean:
        raise DataError(f"dataset spec {text!r}: the base after '@' must be a clean dataset")
    c = _corruptions_api()
    if head == "cbar" or head.startswith("cbar:"):
        parts = head.split(":")
        if len(parts) > 3 or any(p == "" for p in parts):
            raise DataError(f"malformed spec {text!r}", "use cbar, cbar:<name> or cbar:<name>:<1..5>")
        name = c.resolve_name(parts[1]) if len(parts) >= 2 else None
        if name is not None and name not in CBAR_CORRUPTIONS:
            raise DataError(
                f"{name!r} in spec {text!r} is not an official ImageNet-C-bar corruption",
                f"use one of {', '.join(CBAR_CORRUPTIONS)}, or write {name}<severity> for any magnitude",
            )
        index = None
        if len(parts) == 3:
            if not parts[2].isdigit() or not 1 <= int(parts[2]) <= 5:
                raise DataError(f"severity index {parts[2]!r} in spec {text!r} is outside 1..5")
            index = int(parts[2])
        return DatasetSpec(kind="cbar", text=text, corruption=name, severity_index=index, base=base)
    if not _CORRUPTED_RE.match(head):
        raise DataError(
            f"unknown dataset spec {text!r}",
            "use imagenet, imagenetv2, imagefolder:<path>, demo, demo:train, <corruption><severity>[@base] "
            "or cbar[:<name>] (see `ovdiv data list`)",
        )
    name, severity = c.parse_corruption_spec(head)  # validates the name and the magnitude range
    severity = float(severity)
    return DatasetSpec(kind="corrupted", text=text, corruption=name, severity=severity, base=base)


def expand_spec(text: str | DatasetSpec) -> list[str]:
    """Expand a spec into single-dataset canonical specs.

    ``cbar`` -> the 50 official ImageNet-C-bar datasets (corruption-major, severities 1..5 in order),
    ``cbar:NAME`` -> its 5, ``cbar:NAME:K`` -> 1; any other spec -> ``[canonical]``.

    Example:
        ``expand_spec("cbar:plasma@demo") == ["plasma_noise4.75@demo", "plasma_noise7.0@demo",
        "plasma_noise8.5@demo", "plasma_noise9.25@demo", "plasma_noise10.0@demo"]``
    """
    spec = parse_spec(text) if isinstance(text, str) else text
    if spec.kind != "cbar":
        return [spec.canonical]
    c = _corruptions_api()
    names = CBAR_CORRUPTIONS if spec.corruption is None else (spec.corruption,)
    assert spec.base is not None
    suffix = "" if spec.base.kind == "imagenet" else "@" + spec.base.canonical
    out: list[str] = []
    for name in names:
        table = c.severity_table(name)
        indices = range(1, len(table) + 1) if spec.severity_index is None else (spec.severity_index,)
        out.extend(f"{name}{format_severity(table[k - 1])}{suffix}" for k in indices)
    return out


def catalog() -> dict[str, Any]:
    """What specs can name: ``{"kinds": [(syntax, meaning)], "corruptions": [{name, official, severities}]}``.

    ``severities`` is the official 1..5 magnitude table for ImageNet-C-bar corruptions, else None
    (any magnitude 0..10 is accepted).
    """
    c = _corruptions_api()
    rows = []
    for name in c.available():
        try:
            table: list[float] | None = [float(m) for m in c.severity_table(name)]
        except Exception:  # not an official C-bar corruption
            table = None
        rows.append({"name": name, "official": name in CBAR_CORRUPTIONS, "severities": table})
    return {"kinds": list(SPEC_KINDS), "corruptions": rows}
