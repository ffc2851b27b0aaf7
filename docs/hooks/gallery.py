"""MkDocs hook: the corruption gallery, made at build time by the code it documents.

Every corruption ovdiv implements gets one contact sheet: the clean ``demo`` images, then the same
images at each severity (official ImageNet-C-bar corruptions: their 5 magnitudes, i.e. the rows of
``ovdiv data show cbar:NAME@demo``; candidate-pool corruptions: the pool's 10 levels). The sheets are
written by :func:`ovdiv.data.write_contact_sheet`, the function behind ``ovdiv data show``, into a
temporary folder and added to the site as generated files together with the page ``guide/gallery.md``,
so the gallery can never show a picture of code that no longer exists and nothing is committed.
"""

from __future__ import annotations

import tempfile
from pathlib import Path
from typing import Any

from mkdocs.structure.files import File, Files

N_IMAGES = 3
_CACHE: dict[str, Any] = {}


def _sheets(out: Path) -> list[tuple[str, str, list[str], Path]]:
    from ovdiv.data import write_contact_sheet
    from ovdiv.data.corruptions import available, pool_levels, severity_table

    made = []
    for name in available():
        official = name in available(official_only=True)
        if official:
            specs = [f"cbar:{name}@demo"]
            levels = [f"{m:g}" for m in severity_table(name)]
            kind = "official ImageNet-C-bar, severities 1..5"
        else:
            levels = [f"{m:g}" for m in pool_levels(name)]
            specs = [f"{name}{m}@demo" for m in levels]
            kind = "candidate pool, its 10 levels"
        png = out / f"{name}.png"
        info = write_contact_sheet(specs, png, n=N_IMAGES, max_rows=len(levels))
        made.append((name, kind, info.rows, png))
    return made


def on_files(files: Files, config: Any) -> Files:
    """Add ``guide/gallery.md`` and its PNGs (generated once per process)."""
    if "sheets" not in _CACHE:
        tmp = Path(tempfile.mkdtemp(prefix="ovdiv-gallery-"))
        _CACHE["sheets"] = _sheets(tmp)
    sheets = _CACHE["sheets"]
    lines = [
        "# Corruption gallery",
        "",
        "Every corruption ovdiv implements, on the first three images of the embedded `demo` dataset: the",
        "clean images in the first row, then the same images (same per-image seeds) at each severity.",
        "Official ImageNet-C-bar corruptions show their five severities (what `cbar:NAME@BASE` expands to);",
        "the other corruptions of the 30-corruption candidate pool show the pool's ten levels on the",
        "0-10 magnitude scale (any magnitude in (0, 10] is accepted, e.g. the paper's `lines1.6`).",
        "",
        "These pictures are made while the documentation is built, by `ovdiv.data.write_contact_sheet`,",
        "the function behind `ovdiv data show` (see [Datasets and corruptions](data.md)). The demo images",
        "are 64 px; corruptions scale their pixel-sized parameters with the image size, as the reference does.",
        "",
    ]
    for name, kind, rows, png in sheets:
        uri = f"guide/gallery/{name}.png"
        files.append(File.generated(config, uri, abs_src_path=str(png)))
        severities = ", ".join(r.split("@")[0] for r in rows[1:])
        lines += [f"## {name}", "", f"{kind}: {severities}", "", f"![{name}](gallery/{name}.png)", ""]
    files.append(File.generated(config, "guide/gallery.md", content="\n".join(lines)))
    return files
