from __future__ import annotations

import itertools
import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from ovdiv.errors import DataError
from ovdiv.evaluate.policy import Policy
from ovdiv.report import SECTIONS, write_report

MEMBERS = ["tiny_resnet", "tiny_mnasnet", "tiny_squeezenet", "tiny_deit"]
DATASETS = ["demo", "lines1.6@demo"]


def make_results(root: Path, *, n_members: int = 4, extras: bool = True) -> Path:
    rng = np.random.default_rng(0)
    members = MEMBERS[:n_members]
    rows = []
    for ds in DATASETS:
        accs = {}
        for m in members:
            accs[m] = float(rng.uniform(0.5, 0.9))
            for metric, value in (("top1", accs[m]), ("top5", 0.99), ("nll", 0.5), ("ece", 0.05)):
                rows.append({"ensemble": None, "member": m, "dataset": ds, "metric": metric, "value": value})
        for combo in itertools.combinations(members, 3):
            name = "+".join(combo)
            acc = max(accs[m] for m in combo) + float(rng.normal(0.01, 0.02))
            values = {
                "ensemble_top1": acc,
                "ensemble_top1:majority": acc - 0.01,
                "improvement": acc - max(accs[m] for m in combo),
                "improvement:majority": acc - 0.01 - max(accs[m] for m in combo),
                "mean_member_top1": float(np.mean([accs[m] for m in combo])),
                "disagreement": float(rng.uniform(0.1, 0.3)),
                "q_statistic": float(rng.uniform(0.3, 0.9)),
                "double_fault": float(rng.uniform(0.02, 0.1)),
                "kl_divergence": float(rng.uniform(0.1, 1)),
                "shannon_equitability_correct": float(rng.uniform(0, 0.3)),
                "shannon_equitability_wrong": float(rng.uniform(0.3, 0.9)),
                "attribution_diversity": float(rng.uniform(0.001, 0.01)),
                "ensemble_nll": 0.4,
                "ensemble_ece": 0.03,
            }
            rows += [
                {"ensemble": name, "member": None, "dataset": ds, "metric": k, "value": v} for k, v in values.items()
            ]
    data = {
        "schema": "ovdiv-results/1",
        "metadata": {
            "created": "2026-11-26T00:00:00Z",
            "device": "CPU",
            "precision": "f32",
            "versions": {"ovdiv": "0.1.0", "openvino": "2026.4"},
            "members": [
                {
                    "name": m,
                    "path": f"ir/{m}.xml",
                    "sha256": "ab" * 32,
                    "backend": "openvino",
                    "precision": "f32",
                    "params": 1000 * (i + 1),
                    "architecture": m,
                }
                for i, m in enumerate(members)
            ],
            "datasets": [
                {"spec": ds, "manifest": {"n": 100, "seed": 0, "manifest_hash": "cd" * 32}} for ds in DATASETS
            ],
            "options": {"attribution": "saliency"},
            "timings": {"inference": 1.5},
        },
        "rows": rows,
        "extras": {},
    }
    root.mkdir(parents=True, exist_ok=True)
    if extras:
        (root / "extras").mkdir()
        s = 5
        np.savez(
            root / "extras" / "saliency_demo.npz",
            images=rng.integers(0, 255, (s, 16, 16, 3), dtype=np.uint8),
            maps=rng.normal(size=(n_members, s, 3, 16, 16)).astype(np.float32),
            members=np.array(members),
            labels=np.array([0, 1, 2, 3, 4]),
            ensemble_pred=np.array([0, 1, 0, 3, 0]),
            dataset=np.array("demo"),
        )
        cka = rng.uniform(0.3, 1, (n_members, n_members))
        cka = (cka + cka.T) / 2
        np.fill_diagonal(cka, 1)
        np.savez(root / "extras" / "cka_demo.npz", penultimate=cka, members=np.array(members), dataset=np.array("demo"))
        data["extras"] = {"saliency": {"demo": "extras/saliency_demo.npz"}, "cka": {"demo": "extras/cka_demo.npz"}}
    (root / "results.json").write_text(json.dumps(data))
    return root


def test_report_has_every_section_with_figures(tmp_path) -> None:
    root = make_results(tmp_path / "res")
    verdict = Policy.from_dict({"rules": [{"metric": "improvement", "min": 0.0}]}).check(root)
    out = write_report(root, verdict=verdict.to_dict())
    text = out.read_text()
    for sid, title in SECTIONS:
        assert f'<section id="{sid}">' in text
        assert title in text
    assert (
        text.count("data:image/png;base64,") >= 1 + 2 * 2 + 1 + 1
    )  # accuracy, scatters x2 consensus x2 ds, saliency, cka
    assert "http://" not in text and "https://" not in text  # self-contained
    assert "policy FAIL" in text or "policy PASS" in text
    assert "not computed" not in text.split('id="equitability"')[1].split("</section>")[0]


def test_report_without_extras_explains_missing_sections(tmp_path) -> None:
    root = make_results(tmp_path / "res", n_members=3, extras=False)  # one ensemble only
    text = write_report(root).read_text()
    assert "Attribution was off" in text
    assert "CKA was not computed" in text
    assert "scatter plots need several" in text
    assert "No policy was checked" in text


def test_report_bad_input(tmp_path) -> None:
    with pytest.raises(DataError, match="does not exist"):
        write_report(tmp_path)
    (tmp_path / "results.json").write_text('{"rows": 3}')
    with pytest.raises(DataError, match="rows"):
        write_report(tmp_path)


def test_report_cli(tmp_path) -> None:
    root = make_results(tmp_path / "res")
    proc = subprocess.run(
        [sys.executable, "-m", "ovdiv", "report", str(root)], capture_output=True, text=True, check=False
    )
    assert proc.returncode == 0, proc.stderr
    assert (root / "report.html").is_file()
    assert "report.html" in proc.stdout
    proc = subprocess.run(
        [sys.executable, "-m", "ovdiv", "report", str(tmp_path / "nothing")],
        capture_output=True,
        text=True,
        check=False,
    )
    assert proc.returncode == 2 and "Traceback" not in proc.stderr


def _chromium() -> str:
    exe = shutil.which("chromium") or shutil.which("chromium-browser")
    if exe is None:
        pytest.skip("Debian chromium is not installed (.ci/run installs it)")
    return exe


CHROMIUM_FLAGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--no-first-run",
    "--disable-component-update",
    "--disable-sync",
]


def test_report_renders_in_headless_chromium(tmp_path) -> None:
    exe = _chromium()
    root = make_results(tmp_path / "res")
    report = write_report(root)
    profile = tmp_path / "profile"
    env = {**os.environ, "HOME": str(tmp_path)}
    dom = subprocess.run(
        [exe, *CHROMIUM_FLAGS, f"--user-data-dir={profile}", "--dump-dom", report.as_uri()],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
        env=env,
    )
    assert dom.returncode == 0, dom.stderr[-2000:]
    for sid, _ in SECTIONS:
        assert f'id="{sid}"' in dom.stdout
    assert "ERROR:CONSOLE" not in dom.stderr
    shot = tmp_path / "shot.png"
    proc = subprocess.run(
        [
            exe,
            *CHROMIUM_FLAGS,
            f"--user-data-dir={profile}",
            "--window-size=1400,4000",
            f"--screenshot={shot}",
            report.as_uri(),
        ],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
        env=env,
    )
    assert proc.returncode == 0 and shot.is_file(), proc.stderr[-2000:]
    from PIL import Image

    img = np.asarray(Image.open(shot).convert("RGB"))
    assert img.shape[0] >= 3000
    # the page is not blank: the header colour and many distinct colours from the figures are present
    assert (np.abs(img.astype(int) - [18, 53, 91]).sum(-1) < 10).any()
    assert len(np.unique(img.reshape(-1, 3)[::97], axis=0)) > 200
    if os.environ.get("OVDIV_KEEP_SCREENSHOT"):
        shutil.copy(shot, os.environ["OVDIV_KEEP_SCREENSHOT"])
