"""Sibling hash distances (ovdiv.metrics.feature_hashes) vs imagehash's ImageHash subtraction and scipy's sem."""

from __future__ import annotations

import imagehash
import numpy as np
import pytest
from PIL import Image
from scipy import stats

from ovdiv.errors import MetricInputError
from ovdiv.metrics import FEATURE_HASH_METHODS, HASH_BITS, feature_hash_bits, sibling_hash_distances


def _images(seed: int, m: int, k: int, size: int = 40) -> np.ndarray:
    rng = np.random.default_rng(seed)
    base = rng.integers(0, 256, size=(k, size, size, 3))
    noise = rng.integers(-60, 61, size=(m, k, size, size, 3))
    return np.clip(base[None] + noise * np.arange(m)[:, None, None, None, None], 0, 255).astype(np.uint8)


def test_distances_match_imagehash_subtraction_and_scipy_sem():
    imgs = _images(0, 3, 5)
    d = sibling_hash_distances(imgs)
    funcs = {
        "ahash": imagehash.average_hash,
        "phash": imagehash.phash,
        "dhash": imagehash.dhash,
        "whash": imagehash.whash,
        "colorhash": lambda im: imagehash.colorhash(im, binbits=3),
    }
    assert set(d) == set(FEATURE_HASH_METHODS) and HASH_BITS["colorhash"] == 42
    for name, f in funcs.items():
        ref = np.zeros((3, 3, 5))
        for i in range(3):
            for j in range(3):
                for c in range(5):
                    ref[i, j, c] = f(Image.fromarray(imgs[i, c])) - f(Image.fromarray(imgs[j, c]))
        np.testing.assert_array_equal(d[name]["per_channel"], ref)
        np.testing.assert_allclose(d[name]["mean"], ref.mean(axis=2))
        np.testing.assert_allclose(d[name]["sem"][0, 1], stats.sem(ref[0, 1]))
        assert d[name]["bits"] == HASH_BITS[name]
    assert d["phash"]["mean"][0, 2] > 0  # noisier sibling -> different hashes
    bits = feature_hash_bits(imgs[0])
    assert bits["colorhash"].shape == (5, 42) and bits["ahash"].shape == (5, 64)


def test_identical_members_have_zero_distance_and_single_channel_sem_is_nan():
    imgs = np.repeat(_images(1, 1, 1), 2, axis=0)
    d = sibling_hash_distances(imgs)
    for name in FEATURE_HASH_METHODS:
        assert d[name]["mean"][0, 1] == 0.0 and np.isnan(d[name]["sem"][0, 1])


@pytest.mark.parametrize("bad", [np.zeros((2, 1, 16, 16, 3), np.float32), np.zeros((2, 1, 4, 4, 3), np.uint8)])
def test_bad_input_is_a_metric_error(bad):
    with pytest.raises(MetricInputError, match="uint8"):
        sibling_hash_distances(bad)
