"""Registers every implemented corruption with :mod:`.registry` (imported once by the package)."""

from __future__ import annotations

from ovdiv.data.corruptions import checkerboard, lines, plasma, water_drop
from ovdiv.data.corruptions.registry import register

__all__: list[str] = []

register("lines", "corrupt.Lines", lines.sample_lines, lines.apply_lines)
register("plasma_noise", "corrupt.PlasmaNoise", plasma.sample_plasma_noise, plasma.apply_plasma_noise)
register(
    "checkerboard_cutout",
    "corrupt.CheckerBoardCutOut",
    checkerboard.sample_checkerboard_cutout,
    checkerboard.apply_checkerboard_cutout,
)
register("water_drop", "corrupt.WaterDrop", water_drop.sample_water_drop, water_drop.apply_water_drop)
