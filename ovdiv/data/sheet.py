"""Contact sheets: a PNG that shows what a dataset spec means (clean images next to their corruptions).

Row 1 holds ``n`` clean images of the spec's base dataset; each further row holds the same images
(same indices, so the same per-image seeds) under one corruption/severity of the spec (a ``cbar`` spec
gives one row per expanded dataset). Images are upscaled to at least 128 px (nearest) so small
``demo`` images stay legible, and each row is labelled with its spec.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw

from ovdiv.atomic import atomic_path
from ovdiv.data.prepared import load
from ovdiv.data.specs import expand_spec, parse_spec
from ovdiv.errors import DataError
from ovdiv.types import ProgressCallback

__all__ = ["SheetInfo", "write_contact_sheet"]

_LABEL_W = 230
_PAD = 4


@dataclass(frozen=True)
class SheetInfo:
    """What :func:`write_contact_sheet` wrote: the PNG path, its row specs and the image count per row."""

    path: Path
    rows: list[str]
    n: int


def write_contact_sheet(
    spec: str,
    out: str | os.PathLike[str],
    *,
    n: int = 8,
    data_root: str | os.PathLike[str] | None = None,
    seed: int = 0,
    workers: int | None = None,
    max_rows: int = 12,
    progress: ProgressCallback | None = None,
) -> SheetInfo:
    """Write a PNG contact sheet for ``spec``: clean base images, then each corrupted variant.

    Args:
        spec: Any spec (``cbar`` specs give one row per expanded dataset, at most ``max_rows``).
        out: Output ``.png`` path (written atomically).
        n: Images per row (the first ``n`` of the dataset, ``subset="first"``).
        data_root: Data root for file datasets.
        seed: Dataset seed.
        workers: Worker threads.
        max_rows: Cap on corrupted rows.
        progress: Progress callback.

    Returns:
        :class:`SheetInfo`.
    """
    if n <= 0:
        raise DataError(f"--n must be positive, got {n}")
    parsed = parse_spec(spec)
    base = parsed.root_base
    variants = [] if parsed.is_clean else expand_spec(parsed)[:max_rows]
    rows = [base.canonical, *variants]
    images = []
    for row in rows:
        x, _ = load(row, limit=n, data_root=data_root, seed=seed, workers=workers, subset="first", progress=progress)
        images.append(np.asarray(x))
    side = images[0].shape[1]
    scale = max(1, -(-128 // side))
    cell = side * scale
    width = _LABEL_W + n * (cell + _PAD) + _PAD
    height = len(rows) * (cell + _PAD) + _PAD
    sheet = Image.new("RGB", (width, height), (255, 255, 255))
    draw = ImageDraw.Draw(sheet)
    for r, (name, batch) in enumerate(zip(rows, images, strict=True)):
        y0 = _PAD + r * (cell + _PAD)
        label = f"{name}\n(clean)" if r == 0 else name
        draw.multiline_text((6, y0 + cell // 2 - 12), label, fill=(0, 0, 0))
        for c, img in enumerate(batch):
            tile = Image.fromarray(img).resize((cell, cell), Image.Resampling.NEAREST)
            sheet.paste(tile, (_LABEL_W + _PAD + c * (cell + _PAD), y0))
    out_path = Path(out)
    with atomic_path(out_path, suffix=".png") as tmp:
        sheet.save(tmp, format="PNG")
    return SheetInfo(path=out_path, rows=rows, n=min(n, len(images[0])))
