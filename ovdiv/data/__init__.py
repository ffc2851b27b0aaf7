"""Datasets: spec strings, readers, standard preprocessing, the synthetic ``demo`` set, prepared-data cache.

Importing this package pulls in numpy only (PIL is imported by the readers when used); it never
imports torch or openvino.
"""

from __future__ import annotations

from ovdiv.data.seeding import image_seed, image_seeds, stream_seed
from ovdiv.data.synthetic import DEMO_CLASSES, make_demo

__all__ = ["DEMO_CLASSES", "image_seed", "image_seeds", "make_demo", "stream_seed"]
