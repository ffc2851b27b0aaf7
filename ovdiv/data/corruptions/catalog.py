"""Registers every implemented corruption with :mod:`.registry` (imported once by the package)."""

from __future__ import annotations

from ovdiv.data.corruptions import (
    caustics,
    checkerboard,
    color,
    geometry,
    lines,
    optics,
    perlin,
    plasma,
    sparkles,
    spectral,
    voronoi,
    warps,
    water_drop,
    waves,
)
from ovdiv.data.corruptions.registry import register

__all__: list[str] = []

# The paper's four.
register("lines", "corrupt.Lines", lines.sample_lines, lines.apply_lines)
register("plasma_noise", "corrupt.PlasmaNoise", plasma.sample_plasma_noise, plasma.apply_plasma_noise)
register(
    "checkerboard_cutout",
    "corrupt.CheckerBoardCutOut",
    checkerboard.sample_checkerboard_cutout,
    checkerboard.apply_checkerboard_cutout,
)
register("water_drop", "corrupt.WaterDrop", water_drop.sample_water_drop, water_drop.apply_water_drop)

# The rest of official ImageNet-C-bar.
register(
    "caustic_refraction",
    "corrupt.CausticRefraction",
    caustics.sample_caustic_refraction,
    caustics.apply_caustic_refraction,
)
register(
    "inverse_sparkles", "corrupt.InverseSparkles", sparkles.sample_inverse_sparkles, sparkles.apply_inverse_sparkles
)
register("sparkles", "corrupt.Sparkles", sparkles.sample_sparkles, sparkles.apply_sparkles)
register("perlin_noise", "corrupt.PerlinNoise", perlin.sample_perlin_noise, perlin.apply_perlin_noise)
register(
    "blue_noise_sample",
    "corrupt.BlueNoiseSample",
    spectral.sample_blue_noise_sample,
    spectral.apply_blue_noise_sample,
)
register(
    "cocentric_sine_waves",
    "corrupt.CocentricSineWaves",
    waves.sample_cocentric_sine_waves,
    waves.apply_cocentric_sine_waves,
)
register(
    "single_frequency_greyscale",
    "corrupt.SingleFrequencyGreyscale",
    waves.sample_single_frequency_greyscale,
    waves.apply_single_frequency_greyscale,
)
register("brownish_noise", "corrupt.BrownishNoise", spectral.sample_brownish_noise, spectral.apply_brownish_noise)

# Candidate pool (stretch).
register("caustic_noise", "corrupt.CausticNoise", caustics.sample_caustic_noise, caustics.apply_caustic_noise)
register("blue_noise", "corrupt.BlueNoise", spectral.sample_blue_noise, spectral.apply_blue_noise)
register("voronoi_noise", "corrupt.VoronoiNoise", voronoi.sample_voronoi_noise, voronoi.apply_voronoi_noise)
register("scatter", "corrupt.Scatter", warps.sample_scatter, warps.apply_scatter)
register(
    "chromatic_abberation",
    "corrupt.ChromaticAbberation",
    optics.sample_chromatic_abberation,
    optics.apply_chromatic_abberation,
)
register(
    "transverse_chromatic_abberation",
    "corrupt.TransverseChromaticAbberation",
    optics.sample_transverse_chromatic_abberation,
    optics.apply_transverse_chromatic_abberation,
)
register("pinch_and_twirl_v2", "corrupt.PinchAndTwirl", warps.sample_pinch_and_twirl_v2, warps.apply_pinch_and_twirl_v2)
register("fish_eye_v2", "corrupt.FishEye", warps.sample_fish_eye_v2, warps.apply_fish_eye_v2)
register("ripple", "corrupt.Ripple", warps.sample_ripple, warps.apply_ripple)
register("bleach_bypass", "corrupt.BleachBypass", color.sample_bleach_bypass, color.apply_bleach_bypass)
register("technicolor", "corrupt.Technicolor", color.sample_technicolor, color.apply_technicolor)
register("pseudocolor", "corrupt.Pseudocolor", color.sample_pseudocolor, color.apply_pseudocolor)
register("color_balance", "corrupt.ColorBalance", color.sample_color_balance, color.apply_color_balance)
register(
    "quadrilateral_no_bars",
    "corrupt.QuadrilateralNoBars",
    geometry.sample_quadrilateral_no_bars,
    geometry.apply_quadrilateral_no_bars,
)
register(
    "perspective_no_bars",
    "corrupt.PerspectiveNoBars",
    geometry.sample_perspective_no_bars,
    geometry.apply_perspective_no_bars,
)
register("hue_shift", "corrupt.HueShift", color.sample_hue_shift, color.apply_hue_shift)
register(
    "circular_motion_blur",
    "corrupt.CircularMotionBlur",
    optics.sample_circular_motion_blur,
    optics.apply_circular_motion_blur,
)
register("color_dither", "corrupt.ColorDither", color.sample_color_dither, color.apply_color_dither)
