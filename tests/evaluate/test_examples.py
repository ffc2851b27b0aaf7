"""The report's saved attribution examples show the ensemble right and wrong, members agreeing and not."""

from __future__ import annotations

import numpy as np
import pytest

from ovdiv.evaluate import ArrayDataset, EvalResult, evaluate
from ovdiv.evaluate.engine import pick_examples


def test_pick_examples_takes_every_cell_round_robin() -> None:
    labels = np.array([0, 0, 0, 0, 0, 0, 0, 0, 0, 0])
    ens = np.array([0, 0, 0, 1, 0, 1, 0, 0, 2, 0])
    members = np.array(
        [
            [0, 0, 0, 1, 0, 1, 0, 0, 2, 0],
            [0, 0, 0, 1, 1, 2, 0, 1, 2, 0],
        ]
    )
    # by hand: correct+agree {0,1,2,6,9}, wrong+split {5}, correct+split {4,7}, wrong+agree {3,8}
    assert pick_examples(members, labels, ens, 4).tolist() == [0, 3, 4, 5]
    assert pick_examples(members, labels, ens, 6).tolist() == [0, 1, 3, 4, 5, 7]  # rank 1: 1, 7, 8 -> cut
    assert pick_examples(members, labels, ens, 8).tolist() == [0, 1, 2, 3, 4, 5, 7, 8]
    assert pick_examples(members, labels, ens, 20).tolist() == list(range(10))
    # nobody wrong: the wrong cells' share goes to the correct ones
    assert pick_examples(members[:, :3], labels[:3], ens[:3], 2).tolist() == [0, 1]


def test_saved_examples_hold_wrong_and_split_samples(tiny_pool, tmp_path) -> None:
    from ovdiv.attribution import Saliency
    from ovdiv.evaluate.scoring import postprocess_maps
    from ovdiv.runtime import load_member

    names = ["m0", "m2", "m4"]
    data = ArrayDataset(tiny_pool.images[:48], tiny_pool.labels[:48], name="tiny")
    res = evaluate(
        [tiny_pool.ir[n] for n in names],
        [data],
        attribution="saliency",
        attribution_target="label",
        attribution_samples=48,
        cka_samples=0,
        examples=8,
        batch_size=16,
        chunk_size=48,
        cache_dir=tmp_path,
        out=tmp_path / "out",
    )
    ex = EvalResult.load(tmp_path / "out").load_extra("saliency", "tiny")
    assert ex is not None and res.complete
    z = tiny_pool.torch_logits(names, data.images)  # (M, N, C) straight from torch
    member_pred = z.argmax(2)
    ens_pred = z.mean(0).argmax(1)
    expected = pick_examples(member_pred, data.labels, ens_pred, 8)
    assert ex["indices"].tolist() == expected.tolist()
    wrong = ens_pred != data.labels
    assert wrong.any(), "the tiny pool should get some images wrong"
    assert (ex["labels"] != ex["ensemble_pred"]).any()  # a wrong sample is kept
    assert (ex["labels"] == ex["ensemble_pred"]).any()
    np.testing.assert_array_equal(ex["labels"], data.labels[expected])
    np.testing.assert_array_equal(ex["ensemble_pred"], ens_pred[expected])
    np.testing.assert_array_equal(ex["member_pred"], member_pred[:, expected])
    np.testing.assert_array_equal(ex["images"], data.images[expected])
    # each kept map is the map of its own image (the selection spans several batches)
    direct = np.stack(
        [
            Saliency(load_member(tiny_pool.ir[n])).attribute(data.images[expected], target=data.labels[expected])
            for n in names
        ]
    )
    assert ex["maps"] == pytest.approx(postprocess_maps(direct), abs=1e-4)
