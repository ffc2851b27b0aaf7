from __future__ import annotations

import numpy as np
import pytest

from ovdiv.data import DEMO_CLASSES, demo_images, make_demo
from ovdiv.data.synthetic import BLOCK, DEMO_ATTRIBUTES, demo_labels
from ovdiv.errors import DataError


def test_same_seed_same_bytes_and_shapes() -> None:
    a, la = make_demo(70)
    b, lb = make_demo(70)
    assert a.shape == (70, 64, 64, 3) and a.dtype == np.uint8
    assert la.dtype == np.int64 and la.shape == (70,)
    assert np.array_equal(a, b) and np.array_equal(la, lb)


def test_bytes_do_not_depend_on_how_images_are_requested() -> None:
    full, labels = make_demo(3 * BLOCK + 5)
    # shards at unaligned offsets
    for start, n in [(0, 1), (1, 7), (BLOCK - 3, 9), (2 * BLOCK + 1, BLOCK + 4)]:
        part, plab = make_demo(n, start=start)
        assert np.array_equal(part, full[start : start + n])
        assert np.array_equal(plab, labels[start : start + n])
    idx = np.array([100, 3, 3, 64, 31])
    imgs, labs = demo_images(idx)
    assert np.array_equal(imgs, full[idx]) and np.array_equal(labs, labels[idx])


def test_seed_split_and_size_change_the_images() -> None:
    a, _ = make_demo(20)
    assert not np.array_equal(a, make_demo(20, seed=1)[0])
    assert not np.array_equal(a, make_demo(20, split="train")[0])
    small, lab_small = make_demo(20, size=32)
    assert small.shape == (20, 32, 32, 3)
    assert np.array_equal(lab_small, make_demo(20)[1])  # labels do not depend on the size


def test_class_balance_every_group_of_ten() -> None:
    labels = demo_labels(1000)
    assert np.array_equal(np.bincount(labels, minlength=10), np.full(10, 100))
    for g in range(0, 1000, 10):
        assert sorted(labels[g : g + 10].tolist()) == list(range(10))
    # not a trivial periodic order
    assert not np.array_equal(labels[:10], labels[10:20])


def test_class_table_shares_every_attribute() -> None:
    assert len(DEMO_CLASSES) == 10 == len(set(DEMO_CLASSES))
    for k in range(3):
        values = [attr[k] for attr in DEMO_ATTRIBUTES]
        assert all(values.count(v) >= 2 for v in values), values
    assert len(set(DEMO_ATTRIBUTES)) == 10


def test_images_carry_class_signal() -> None:
    """Mean hue statistics differ between classes (a weak, cheap sanity check of the renderer)."""
    x, y = make_demo(400)
    red = x[..., 0].astype(float) - x[..., 2].astype(float)
    red_classes = [i for i, a in enumerate(DEMO_ATTRIBUTES) if a[2] == "red"]
    blue_classes = [i for i, a in enumerate(DEMO_ATTRIBUTES) if a[2] == "blue"]
    centre = red[:, 16:48, 16:48].mean(axis=(1, 2))
    assert centre[np.isin(y, red_classes)].mean() > centre[np.isin(y, blue_classes)].mean() + 20


def test_golden_statistics() -> None:
    """Pins the renderer: per-image channel means and labels of the first 16 images.

    Means (not a byte digest) because float32 sin/cos may differ by an ulp between CPUs, which can flip
    a rare byte by one; a deliberate change to the generator moves these by far more than the tolerance.
    """
    x, y = make_demo(16)
    assert y.tolist() == GOLDEN_LABELS
    np.testing.assert_allclose(x.reshape(16, -1, 3).mean(axis=1), np.array(GOLDEN_MEANS), atol=0.01)


def test_bad_arguments() -> None:
    with pytest.raises(DataError, match="split"):
        make_demo(3, split="val")  # type: ignore[arg-type]
    with pytest.raises(DataError, match="size"):
        make_demo(3, size=8)
    with pytest.raises(DataError):
        make_demo(-1)


GOLDEN_LABELS = [0, 2, 1, 9, 3, 7, 8, 5, 6, 4, 9, 7, 3, 6, 4, 0]
GOLDEN_MEANS = [
    [73.082, 55.984, 182.566], [131.324, 209.499, 112.035], [44.03, 51.195, 64.815], [249.475, 146.141, 159.163],
    [192.9, 80.054, 142.435], [175.668, 98.508, 67.28], [58.47, 149.616, 223.269], [71.25, 79.513, 89.47],
    [72.581, 92.769, 127.78], [83.658, 156.187, 88.509], [198.17, 141.864, 106.443], [90.036, 106.916, 39.567],
    [135.486, 55.8, 128.359], [82.831, 125.107, 57.919], [46.276, 133.136, 186.26], [68.267, 74.821, 135.874],
]  # fmt: skip
