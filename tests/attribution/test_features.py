"""Feature visualisation (ovdiv.attribution.features): parameterisation vs lucent/numpy, optimisation, IR vs torch.

The tiny members are ``tiny_resnet`` networks trained for a few Adam steps on the 32 px demo data, saved as
ovdiv checkpoints (torch autograd path) and converted to OpenVINO IR with the same card (VJP path). (The
Inception twin, whose torch ``stage<k>`` differs from the IR's, is exercised by the slow study test.)
"""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from click.testing import CliRunner

from ovdiv.attribution.features import (
    COLOR_CORRELATION_SVD_SQRT,
    FeatureVisConfig,
    init_spectrum,
    layer_objective,
    list_layers,
    objective_trend,
    spectrum_to_rgb,
    visualize_channels,
)
from ovdiv.errors import ConfigError, MemberError
from ovdiv.metrics import sibling_hash_distances

SIZE = 32
MEAN = (0.5, 0.45, 0.4)  # not ImageNet's: a path that ignored the card would show up
STD = (0.25, 0.2, 0.3)
IR_TOLERANCE = 2e-3  # max |rgb_IR - rgb_torch| after 24 Adam steps (f32 kernels differ; Adam amplifies little)


# ---------------------------------------------------------------------------------------------- parameterisation
def _numpy_rgb(spec: np.ndarray, h: int, w: int, decorrelate: bool = True) -> np.ndarray:
    """Direct float64 numpy implementation of Lucid's fft image + colour decorrelation + sigmoid."""
    fy = np.fft.fftfreq(h)[:, None]
    fx = np.fft.fftfreq(w)[: w // 2 + 2] if w % 2 else np.fft.fftfreq(w)[: w // 2 + 1]
    scale = 1.0 / np.maximum(np.sqrt(fx**2 + fy**2), 1.0 / max(h, w))
    c = (spec[..., 0] + 1j * spec[..., 1]).astype(np.complex128) * scale
    img = np.fft.irfftn(c, s=(h, w), axes=(-2, -1), norm="ortho")[..., :h, :w] / 4.0
    if decorrelate:
        m = COLOR_CORRELATION_SVD_SQRT.astype(np.float64)
        m = m / np.linalg.norm(m, axis=0).max()
        img = np.einsum("nchw,dc->ndhw", img, m)
    return 1.0 / (1.0 + np.exp(-img))


@pytest.mark.parametrize(("h", "w"), [(32, 32), (24, 33)])
def test_parameterisation_matches_direct_numpy(h, w):
    spec = init_spectrum([3, 7], h, w, sd=0.5, seed=11)
    ours = spectrum_to_rgb(spec, h, w).numpy()
    ref = _numpy_rgb(spec.numpy().astype(np.float64), h, w)
    assert ours.shape == (2, 3, h, w)
    np.testing.assert_allclose(ours, ref, atol=2e-6)
    plain = spectrum_to_rgb(spec, h, w, decorrelate=False).numpy()
    np.testing.assert_allclose(plain, _numpy_rgb(spec.numpy().astype(np.float64), h, w, False), atol=2e-6)
    assert np.abs(plain - ours).max() > 1e-2  # the decorrelation is not a no-op


@pytest.mark.parametrize(("h", "w"), [(32, 32), (24, 33)])
def test_parameterisation_matches_torch_lucent(h, w):
    """torch-lucent 0.1.8 (``pip install torch-lucent --no-deps``: its kornia<=0.4.1 pin conflicts with torch 2.x;
    the two modules used here need only torch and numpy)."""
    spatial = pytest.importorskip("lucent.optvis.param.spatial")
    color = pytest.importorskip("lucent.optvis.param.color")
    spec = init_spectrum([0, 1], h, w, sd=0.5, seed=5)
    params, image_f = spatial.fft_image((2, 3, h, w), sd=0.01, decay_power=1)
    with torch.no_grad():
        params[0].copy_(spec)
        theirs = color.to_valid_rgb(image_f, decorrelate=True)()
    np.testing.assert_allclose(spectrum_to_rgb(spec, h, w).numpy(), theirs.cpu().numpy(), atol=1e-6)


# ---------------------------------------------------------------------------------------------- tiny members
@pytest.fixture(scope="module")
def tiny_members(tmp_path_factory):
    import openvino as ov

    from ovdiv.cards import ModelCard, sha256_file
    from ovdiv.data import make_demo
    from ovdiv.models import create_model, save_checkpoint

    root = tmp_path_factory.mktemp("features")
    images, labels = make_demo(128, size=SIZE, seed=0, split="train")
    x = (
        torch.from_numpy(images).permute(0, 3, 1, 2).float() / 255 - torch.tensor(MEAN).view(1, 3, 1, 1)
    ) / torch.tensor(STD).view(1, 3, 1, 1)
    y = torch.from_numpy(labels).long()
    paths = {}
    for seed in (0, 1):
        torch.manual_seed(seed)
        net = create_model("tiny_resnet", num_classes=10)
        opt = torch.optim.Adam(net.parameters(), lr=3e-3)
        g = torch.Generator().manual_seed(seed)
        for _ in range(15):
            idx = torch.randint(0, len(x), (32,), generator=g)
            loss = torch.nn.functional.cross_entropy(net(x[idx]), y[idx])
            opt.zero_grad()
            loss.backward()
            opt.step()
        net.eval()
        pt = root / f"net{seed}.pt"
        save_checkpoint(
            pt, net, arch="tiny_resnet", arch_args={}, num_classes=10, input_size=(SIZE, SIZE), mean=MEAN, std=STD
        )
        xml = root / "ir" / f"net{seed}.xml"
        xml.parent.mkdir(exist_ok=True)
        ovm = ov.convert_model(net, example_input=torch.zeros(1, 3, SIZE, SIZE))
        ov.save_model(ovm, str(xml), compress_to_fp16=False)
        ModelCard(
            name=f"net{seed}_ir",
            format="ir",
            num_classes=10,
            input_size=(SIZE, SIZE),
            mean=MEAN,
            std=STD,
            sha256=sha256_file(xml),
        ).save(xml.with_suffix(".json"))
        paths[seed] = (pt, xml)
    return paths


def _vis(member, layer, channels, cfg, gradient="auto"):
    obj = layer_objective(member, layer, gradient=gradient)
    return visualize_channels(
        obj, channels, cfg, mean=member.card.mean, std=member.card.std, input_size=member.input_size
    )


def test_layers_agree_between_torch_and_ir(tiny_members):
    from ovdiv.runtime import load_member

    pt, xml = tiny_members[0]
    lt = {li.name: li.channels for li in list_layers(load_member(pt))}
    li = {li.name: li.channels for li in list_layers(load_member(xml))}
    assert lt == li and lt["penultimate"] == 64 and lt["stage2"] == 32


def test_objective_increases_and_runs_are_reproducible(tiny_members):
    from ovdiv.runtime import load_member

    m = load_member(tiny_members[0][0])
    cfg = FeatureVisConfig(steps=48, seed=3)
    r1 = _vis(m, "stages.1", [0, 5, 9, 17], cfg)  # a (non-leaf) module name
    trend = objective_trend(r1.objective, windows=4)
    assert np.all(np.diff(trend) > 0), trend  # mean over channels rises window by window
    assert r1.objective[-8:].mean() > r1.objective[:8].mean() + 0.1
    # same channel + seed -> identical images, also when the channel is optimised in another batch
    r2 = _vis(m, "stages.1", [5, 17], FeatureVisConfig(steps=48, seed=3, batch_size=1))
    np.testing.assert_allclose(r2.rgb, r1.rgb[[1, 3]], atol=1e-5)
    d_same = sibling_hash_distances(np.stack([r1.images[[1, 3]], r2.images]))
    d_diff = sibling_hash_distances(np.stack([r1.images[[0, 1]], r1.images[[2, 3]]]))
    for method in ("ahash", "phash", "dhash", "whash"):
        assert d_same[method]["mean"][0, 1] <= 1.0  # identical up to float noise
        assert d_diff[method]["mean"][0, 1] >= 10.0, (method, d_diff[method]["mean"][0, 1])


def test_minimize_lowers_the_activation(tiny_members):
    from ovdiv.runtime import load_member

    m = load_member(tiny_members[0][0])
    up = _vis(m, "stage2", [1, 2], FeatureVisConfig(steps=24, seed=0))
    down = _vis(m, "stage2", [1, 2], FeatureVisConfig(steps=24, seed=0, minimize=True))
    assert (-down.objective[-1]).mean() < up.objective[-1].mean()  # trace of a minimised run is sign-flipped


def test_ir_path_matches_torch_path(tiny_members):
    from ovdiv.runtime import load_member

    pt, xml = tiny_members[0]
    cfg = FeatureVisConfig(steps=24, seed=1)
    rt = _vis(load_member(pt), "stage2", [0, 3, 7], cfg)
    ri = _vis(load_member(xml), "stage2", [0, 3, 7], cfg)
    assert rt.info["gradient"] == "autograd" and ri.info["gradient"] == "vjp"
    np.testing.assert_allclose(ri.objective, rt.objective, rtol=1e-3, atol=1e-4)
    assert np.abs(ri.rgb - rt.rgb).max() < IR_TOLERANCE
    # a torch member forced through its converted graph's VJP model gives the same image too
    rv = _vis(load_member(pt), "penultimate", [4], cfg, gradient="vjp")
    ra = _vis(load_member(pt), "penultimate", [4], cfg, gradient="autograd")
    assert np.abs(rv.rgb - ra.rgb).max() < IR_TOLERANCE


def test_bad_layer_and_channel_are_clear_errors(tiny_members):
    from ovdiv.runtime import load_member

    m = load_member(tiny_members[0][1])
    with pytest.raises(MemberError, match=r"no layer 'stage9'.*known layers"):
        layer_objective(m, "stage9")
    obj = layer_objective(m, "stage1")
    with pytest.raises(ConfigError, match="invalid channel"):
        visualize_channels(obj, [obj.channels], FeatureVisConfig(steps=1), mean=MEAN, std=STD, input_size=(SIZE, SIZE))
    with pytest.raises(ConfigError, match="steps"):
        FeatureVisConfig(steps=0)


def test_cli_features_writes_images_sheet_json_and_report(tiny_members, tmp_path):
    from ovdiv.cli import cli

    (pt0, xml0), (pt1, _) = tiny_members[0], tiny_members[1]
    runner = CliRunner()
    res = runner.invoke(cli, ["features", str(pt0), "--list-layers"])
    assert res.exit_code == 0, res.output
    assert "penultimate" in res.output and "stage3" in res.output
    out = tmp_path / "out"
    args = ["features", str(pt0), str(pt1), str(xml0), "--layer", "stage2", "--channels", "0,3", "--steps", "6"]
    res = runner.invoke(cli, [*args, "--out", str(out)])
    assert res.exit_code == 0, res.output
    summary = json.loads((out / "features.json").read_text())
    assert summary["channels"] == [0, 3] and len(summary["members"]) == 3
    assert [m["gradient"] for m in summary["members"]] == ["autograd", "autograd", "vjp"]
    assert all(len(m["sha256"]) == 64 for m in summary["members"])
    assert (out / "net0" / "stage2_ch3.png").is_file() and (out / "sheet.png").is_file()
    ch = summary["hash_distances"]["colorhash"]
    assert ch["bits"] == 42 and len(ch["pairs"]) == 3
    html = (out / "report.html").read_text()
    assert "Neuron grid" in html and html.count("<img") == 6 and "colorhash" in html
    bad = runner.invoke(
        cli,
        [
            "features",
            str(pt0),
            "--layer",
            "stage2",
            "--channels",
            "0,999",
            "--steps",
            "2",
            "--out",
            str(tmp_path / "bad"),
        ],
    )
    assert bad.exit_code == 2 and "invalid or repeated channel" in bad.output
    assert not (tmp_path / "bad" / "features.json").exists()


def test_saliency_table_reads_pairs_from_evaluate_rows(tmp_path):
    from ovdiv.report.features import saliency_table

    rows = [
        {"ensemble": "a+b", "member": None, "dataset": "demo", "metric": "attribution_rmse", "value": 0.25},
        {"ensemble": "a+b", "member": None, "dataset": "demo", "metric": "hash_phash", "value": 20.5},
        {"ensemble": "a+b+c", "member": None, "dataset": "demo", "metric": "attribution_rmse", "value": 9.0},
        {"ensemble": None, "member": "a", "dataset": "demo", "metric": "top1", "value": 0.5},
    ]
    (tmp_path / "results.json").write_text(
        json.dumps({"rows": rows, "metadata": {"options": {"attribution": "smoothgrad"}}})
    )
    t = saliency_table(tmp_path, ["a", "b", "c"])
    assert t["rows"] == [{"pair": "a vs b", "dataset": "demo", "attribution_rmse": 0.25, "hash_phash": 20.5}]
    assert t["missing"] == ["a+c", "b+c"] and t["attribution"] == "smoothgrad"
    with pytest.raises(ConfigError, match="--size 2"):
        saliency_table(tmp_path, ["c", "d"])
