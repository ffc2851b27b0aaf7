"""Registers every implemented corruption with :mod:`.registry` (imported once by the package)."""

from __future__ import annotations

from ovdiv.data.corruptions import caustics, checkerboard, lines, perlin, plasma, sparkles, spectral, water_drop, waves
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
