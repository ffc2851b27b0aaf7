"""Contact sheets: a PNG that shows what a dataset spec means (clean images next to their corruptions).

Row 1 holds ``n`` clean images of the spec's base dataset; each further row holds the same images
(same indices, so the same per-image seeds) under one corruption/severity of the spec (a ``cbar`` spec
gives one row per expanded dataset, so ``cbar:plasma_noise@demo`` shows one corruption at all five
severities). Several specs share one sheet: each base dataset's clean row comes once, before its
first corrupted row. Images are upscaled to at least 128 px (nearest) so small ``demo`` images stay
legible, and each row is labelled with its spec. The sheet is as wide as the longest row actually
holds (a dataset with 3 images and ``n=8`` gives 3 columns, not 8 with 5 blank).
"""

from __future__ import annotations

import os
from collections.abc import Sequence
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
    spec: str | Sequence[str],
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
        spec: One spec or several (``cbar`` specs give one row per expanded dataset; at most
            ``max_rows`` corrupted rows in all).
        out: Output ``.png`` path (written atomically).
        n: Images per row (the first ``n`` of the dataset, ``subset="first"``).
        data_root: Data root for file datasets.
        seed: Dataset seed.
        workers: Worker threads.
        max_rows: Cap on corrupted rows (further rows are dropped; :attr:`SheetInfo.rows` lists those drawn).
        progress: Progress callback.

    Returns:
        :class:`SheetInfo`.
    """
    if n <= 0:
        raise DataError(f"--n must be positive, got {n}")
    specs = [spec] if isinstance(spec, str) else list(spec)
    if not specs:
        raise DataError("no dataset spec given for the contact sheet", "pass at least one spec, e.g. lines1.6@demo")
    rows: list[str] = []
    clean: set[str] = set()
    corrupted = 0
    for text in specs:
        parsed = parse_spec(text)
        base = parsed.root_base.canonical
        if base not in rows:
            rows.append(base)
            clean.add(base)
        if not parsed.is_clean:
            for variant in expand_spec(parsed):
                if variant not in rows and corrupted < max_rows:
                    rows.append(variant)
                    corrupted += 1
    images = []
    for row in rows:
        x, _ = load(row, limit=n, data_root=data_root, seed=seed, workers=workers, subset="first", progress=progress)
        images.append(np.asarray(x))
    if not any(len(b) for b in images):
        raise DataError(f"the dataset(s) {', '.join(specs)} hold no image", "check --data-root and the spec")
    side = max(b.shape[1] for b in images if len(b))
    scale = max(1, -(-128 // side))
    cell = side * scale
    cols = max(len(b) for b in images)  # <= n: size the sheet for the images there are
    width = _LABEL_W + cols * (cell + _PAD) + _PAD
    height = len(rows) * (cell + _PAD) + _PAD
    sheet = Image.new("RGB", (width, height), (255, 255, 255))
    draw = ImageDraw.Draw(sheet)
    for r, (name, batch) in enumerate(zip(rows, images, strict=True)):
        y0 = _PAD + r * (cell + _PAD)
        label = f"{name}\n(clean)" if name in clean else name
        draw.multiline_text((6, y0 + cell // 2 - 12), label, fill=(0, 0, 0))
        for c, img in enumerate(batch):
            tile = Image.fromarray(img).resize((cell, cell), Image.Resampling.NEAREST)
            sheet.paste(tile, (_LABEL_W + _PAD + c * (cell + _PAD), y0))
    out_path = Path(out)
    with atomic_path(out_path, suffix=".png") as tmp:
        sheet.save(tmp, format="PNG")
    return SheetInfo(path=out_path, rows=rows, n=cols)
