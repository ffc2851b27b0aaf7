"""The tiny interpretable-diversity study end to end on CPU (slow): parent -> snapshot / prune-and-tune -> features.

Uses the shipped tiny twins (models/tiny/tiny_googlenet.json, models/ensembles/tiny/googlenet_*.json) with
their step counts cut down, then ``run_features`` compares the parent with each family on an Inception module.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]


@pytest.mark.slow
def test_tiny_study_end_to_end(tmp_path):
    from ovdiv.report.features import run_features
    from ovdiv.train import train_ensemble, train_member
    from ovdiv.train.config import EnsembleConfig

    parent = train_member(REPO / "models" / "tiny" / "tiny_googlenet.json", out_dir=tmp_path / "parent", max_steps=20)
    families = {}
    for name in ("googlenet_snapshot", "googlenet_prune_and_tune"):
        raw = json.loads((REPO / "models" / "ensembles" / "tiny" / f"{name}.json").read_text())
        if "snapshot" in raw:
            raw["members"][0]["pretrained"] = str(parent.checkpoint)
        else:
            raw["prune_and_tune"]["parent"] = str(parent.checkpoint)
        cfg = EnsembleConfig.from_dict(raw, source=name)
        res = train_ensemble(cfg, out_dir=tmp_path / name, max_steps=10)
        assert len(res.members) == 2
        families[name] = res.members
    for name, members in families.items():
        out = tmp_path / "features" / name
        run = run_features(
            [parent.checkpoint, *members],
            layer="inception4a",
            out_dir=out,
            random_k=3,
            config=__import__("ovdiv.attribution.features", fromlist=["x"]).FeatureVisConfig(steps=12, seed=0),
        )
        s = run.summary
        assert len(s["channels"]) == 3 and len(s["members"]) == 3
        assert all(m["layer"] == "inception4a" and m["shape"][0] == 112 for m in s["members"])
        ph = s["hash_distances"]["phash"]["pairs"]
        assert len(ph) == 3 and all(0 <= p["mean"] <= 64 for p in ph)
        html = run.report_path.read_text()
        assert "Neuron grid" in html and html.count("<img") == 9
        assert "Image-hash Hamming distances" in html and "colorhash (/42 bit)" in html
        assert (out / "sheet.png").is_file()
