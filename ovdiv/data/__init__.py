"""Datasets: spec strings, readers, standard preprocessing, the synthetic ``demo`` set, prepared-data cache.

Public API::

    load(spec, *, limit=None, data_root=None, cache_dir=None, seed=0, workers=None, progress=None)
        -> (images uint8 (N,H,W,3), labels int64 (N,))
    prepare(spec, ...) -> PreparedDataset          # cached uint8 memmap + labels + manifest
    parse_spec(text) -> DatasetSpec; expand_spec(text) -> list[str]   # "cbar" -> 50 specs
    image_seed(dataset_seed, index) -> int          # per-image seed (documented in ovdiv.data.seeding)
    make_demo(n, *, size=64, seed=0, split="test") -> (images, labels); DEMO_CLASSES

Importing this package pulls in numpy and Pillow only; never torch or openvino.
"""

from __future__ import annotations

from ovdiv.data.prepared import (
    CACHE_ENV,
    DatasetPlan,
    PreparedDataset,
    default_cache_dir,
    load,
    plan,
    prepare,
    prepare_many,
)
from ovdiv.data.seeding import image_seed, image_seeds, stream_seed
from ovdiv.data.sheet import SheetInfo, write_contact_sheet
from ovdiv.data.sources import DATA_ENV
from ovdiv.data.specs import CBAR_CORRUPTIONS, SPEC_KINDS, DatasetSpec, catalog, expand_spec, parse_spec
from ovdiv.data.synthetic import DEMO_CLASSES, DEMO_SIZES, demo_images, make_demo

__all__ = [
    "CACHE_ENV",
    "CBAR_CORRUPTIONS",
    "DATA_ENV",
    "DEMO_CLASSES",
    "DEMO_SIZES",
    "SPEC_KINDS",
    "DatasetPlan",
    "DatasetSpec",
    "PreparedDataset",
    "default_cache_dir",
    "demo_images",
    "expand_spec",
    "image_seed",
    "image_seeds",
    "load",
    "make_demo",
    "parse_spec",
    "plan",
    "prepare",
    "prepare_many",
    "SheetInfo",
    "catalog",
    "write_contact_sheet",
    "stream_seed",
]
