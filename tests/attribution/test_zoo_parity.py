"""``scripts/zoo_parity.py`` on a few small zoo models (slow: conversion + float64 torch references)."""

from __future__ import annotations

import importlib.util
import json
import os
from pathlib import Path

import pytest

SCRIPT = Path(__file__).resolve().parents[2] / "scripts" / "zoo_parity.py"


def _load():
    spec = importlib.util.spec_from_file_location("zoo_parity", SCRIPT)
    assert spec is not None and spec.loader is not None
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


@pytest.mark.slow
def test_zoo_parity_small_models(tmp_path, capsys) -> None:
    zoo = _load()
    out = tmp_path / "zoo.jsonl"
    md = tmp_path / "zoo.md"
    models = "timm:ghostnet_100,tv:squeezenet1_1"
    args = ["--models", models, "--formats", "fp32,onnx,fp16", "--size", "64", "--out", str(out)]
    assert zoo.main([*args, "--gradient-check", "--markdown", str(md)]) == 0
    summary = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert summary["n"] == 6 and summary["wrong"] == []
    assert summary["gradient_check_false_alarms"] == [] and summary["gradient_check"] == {"passed": 6}, summary
    rows = [json.loads(line) for line in out.read_text().splitlines()]
    assert {r["status"] for r in rows} == {"ok"}, rows
    assert all(r["spearman"] >= zoo.SPEARMAN_OK for r in rows)
    assert all(r["gc_outcome"] == "passed" and r["gc_ratio"] <= 1.0 for r in rows), rows
    page = md.read_text()
    assert page.count("| `timm:ghostnet_100` |") == 3 and '"bench": "zoo_parity"' in page
    # resumable: a second run measures nothing again
    assert zoo.main(args) == 0
    assert len(out.read_text().splitlines()) == 6


@pytest.mark.slow
@pytest.mark.skipif(
    not os.environ.get("OVDIV_ZOO_SWEEP"), reason="hours on CPU: set OVDIV_ZOO_SWEEP=1 (and maybe =PATH)"
)
def test_zoo_sweep_acceptance(tmp_path, capsys) -> None:
    """Issue 14's acceptance on the whole sweep (every torchvision classifier, every timm family; fp32, onnx).

    ``OVDIV_ZOO_SWEEP=/path/sweep.jsonl`` resumes (or only re-reads) a sweep file.
    """
    zoo = _load()
    env = os.environ["OVDIV_ZOO_SWEEP"]
    out = Path(env) if env.endswith(".jsonl") else tmp_path / "zoo.jsonl"
    assert zoo.main(["--formats", "fp32,onnx", "--size", "64", "--gradient-check", "--out", str(out)]) == 0
    summary = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert summary["wrong"] == [] and summary["unsupported_ops"] == [], summary
    for fmt in ("fp32", "onnx"):
        assert set(summary["counts"][fmt]) <= {"ok", "convert-failed"}, summary["counts"]
    assert summary["gradient_check_false_alarms"] == [], summary


def test_markdown_page_and_summary_from_rows() -> None:
    """The page the sweep writes: every row, ratios, the check, not-run rows; the summary's check fields."""
    zoo = _load()
    rows = [
        {
            "model": "tv:a",
            "format": "fp32",
            "size": 64,
            "status": "ok",
            "rel_l2": 2e-6,
            "floor": 1e-6,
            "spearman": 1.0,
            "gc_outcome": "passed",
            "gc_ratio": 0.2,
            "gc_step": 0.001,
        },
        {
            "model": "tv:a",
            "format": "onnx",
            "size": 64,
            "status": "ok",
            "rel_l2": 3e-6,
            "floor": 1e-6,
            "spearman": 1.0,
            "gc_outcome": "failed",
            "gc_ratio": 1.5,
            "gc_step": 0.03,
        },
        {"model": "tv:b", "format": "onnx", "status": "convert-failed", "detail": "TypeError: x | y"},
        {"model": "tv:b", "format": "fp32", "status": "not-run"},
    ]
    summ = zoo.summary(rows)
    assert summ["gradient_check_false_alarms"] == ["tv:a/onnx"]
    assert summ["gradient_check_worst_ratio"] == {"case": "tv:a/onnx", "ratio": 1.5}
    assert summ["worst_rel_l2_over_floor"]["case"] == "tv:a/onnx" and summ["worst_rel_l2_over_floor"]["ratio"] == 3.0
    assert summ["counts"] == {"fp32": {"ok": 1, "not-run": 1}, "onnx": {"ok": 1, "convert-failed": 1}}
    page = zoo.markdown(rows, summ, "python scripts/zoo_parity.py", "a note")
    table = [line for line in page.splitlines() if line.startswith("| `")]
    assert len(table) == 4 and "| 2.00 |" in table[0] and "| 3.00 |" in table[1] and "check step 0.03" in table[1]
    assert "x \\| y" in table[2] and "| not-run |" in table[3]
    assert "a note" in page and page.rstrip().endswith("```")


def test_wrong_criterion_needs_both_signals() -> None:
    """``wrong`` = Spearman < 0.999 AND rel L2 > 10x floor (one signal alone is not enough)."""
    import numpy as np

    zoo = _load()
    rng = np.random.default_rng(0)
    g64 = rng.standard_normal((1, 3, 8, 8))
    assert zoo._spearman(g64, g64) == pytest.approx(1.0)
    assert zoo._spearman(rng.standard_normal((1, 3, 8, 8)), g64) < zoo.SPEARMAN_OK
    assert zoo._rel(g64 * 1.5, g64) == pytest.approx(0.5)
    assert zoo.summary([{"model": "a", "format": "fp32", "status": "wrong"}])["wrong"] == ["a/fp32"]


def _bn_token_model():
    """BatchNorm2d then ``flatten(2).transpose(1, 2)`` (LeViT / EfficientFormer stem-to-token), then a head."""
    import torch

    torch.manual_seed(0)
    bn = torch.nn.BatchNorm2d(3)
    with torch.no_grad():
        bn.running_mean.uniform_(-0.2, 0.2)
        bn.running_var.uniform_(0.5, 1.5)
        bn.weight.uniform_(0.5, 1.5)
        bn.bias.uniform_(-0.2, 0.2)

    class Tokens(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.bn = bn
            self.head = torch.nn.Linear(6 * 5 * 3, 4)

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return self.head(self.bn(x).flatten(2).transpose(1, 2).flatten(1))

    return Tokens().eval()


def _bn_token_grad_by_hand(model, x, target: int):
    """The same gradient written out: head row, un-transposed, times the folded BN scale (numpy, float64)."""
    _, c, h, w = x.shape
    row = model.head.weight.detach().double().numpy()[target]  # (h*w*c,) in token-major order
    bn = model.bn
    scale = (bn.weight.double() / (bn.running_var.double() + bn.eps).sqrt()).detach().numpy()
    return row.reshape(h * w, c).T.reshape(1, c, h, w) * scale.reshape(1, c, 1, 1)


def test_torch_batchnorm_backward_bug_is_real() -> None:
    """The torch bug the reference works around: BN backward with a batch-1 grad of batch stride C.

    If this starts failing, torch fixed it and ``zoo_parity._grad`` could run at batch 1 again.
    """
    import torch

    bn = _bn_token_model().bn.double()
    x = torch.randn(1, 3, 6, 5, dtype=torch.float64, requires_grad=True)
    go = torch.randn(1, 3, 6, 5, dtype=torch.float64)
    scale = (bn.weight / (bn.running_var + bn.eps).sqrt()).detach().reshape(1, 3, 1, 1)
    odd = torch.empty_strided((1, 3, 6, 5), (3, 1, 15, 3), dtype=torch.float64).copy_(go)
    (g_ok,) = torch.autograd.grad(bn(x), x, go)
    (g_odd,) = torch.autograd.grad(bn(x), x, odd)
    assert torch.allclose(g_ok, go * scale)
    assert not torch.allclose(g_odd, go * scale)


def test_reference_grad_immune_to_batchnorm_stride_bug() -> None:
    """``zoo_parity._grad`` (the torch reference) is right on BN -> flatten -> transpose at batch 1.

    Before the fix it ran torch autograd at batch 1 and returned a gradient ~1.4 rel L2 off (f32 and f64
    alike), which made ovdiv's correct LeViT / EfficientFormer gradients show as ``wrong``.
    """
    import copy

    import numpy as np
    import torch

    zoo = _load()
    model = _bn_token_model()
    x = torch.randn(1, 3, 6, 5, generator=torch.Generator().manual_seed(1))
    want = _bn_token_grad_by_hand(model, x, 2)
    g32 = zoo._grad(model, x, 2)
    g64 = zoo._grad(copy.deepcopy(model).double(), x.double(), 2)
    np.testing.assert_allclose(g64, want, rtol=1e-10, atol=1e-12)
    np.testing.assert_allclose(g32, want, rtol=1e-5, atol=1e-6)


def test_ovdiv_gradient_bn_tokens_batch1() -> None:
    """ovdiv's VJP graph of the same pattern (converted IR, batch 1 and 2) matches the hand gradient."""
    import numpy as np
    import openvino as ov
    import torch

    from ovdiv.attribution import VJPModel

    model = _bn_token_model()
    x = torch.randn(2, 3, 6, 5, generator=torch.Generator().manual_seed(1))
    ir = ov.convert_model(model, example_input=x[:1], input=[-1, 3, 6, 5])
    runner = VJPModel(ir)
    want = _bn_token_grad_by_hand(model, x, 2)
    for n in (1, 2):
        _, g = runner.gradient(x[:n].numpy(), [2] * n)
        for i in range(n):
            np.testing.assert_allclose(g[i : i + 1], want, rtol=1e-5, atol=1e-6)


def test_torch_member_saliency_immune_to_batchnorm_stride_bug() -> None:
    """ovdiv's torch backend (nn.Module members) is right on BN -> flatten -> transpose at batch 1 too.

    Fails without the batch-of-two workaround in ``_TorchBackend.gradients`` (torch's own gradient is
    ~1.4 rel L2 off there).
    """
    import numpy as np
    import torch

    from ovdiv.attribution.methods import _TorchBackend

    model = _bn_token_model()
    x = np.random.default_rng(0).standard_normal((1, 3, 6, 5)).astype(np.float32)
    backend = _TorchBackend(model, None, (0.0, 0.0, 0.0), (1.0, 1.0, 1.0))
    got = backend.gradients(x, np.array([2]))
    want = _bn_token_grad_by_hand(model, torch.from_numpy(x), 2)
    assert got.shape == (1, 3, 6, 5)
    np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-6)


def test_torch_member_vjp_immune_to_batchnorm_stride_bug() -> None:
    """The gradient check's torch path (``_TorchBackend.vjp``) gets the same batch-of-one workaround."""
    import numpy as np
    import torch

    from ovdiv.attribution.methods import _TorchBackend

    model = _bn_token_model()
    x = np.random.default_rng(1).standard_normal((1, 3, 6, 5)).astype(np.float32)
    u = np.zeros((1, 4), np.float32)
    u[0, 1] = 1.0
    backend = _TorchBackend(model, None, (0.0, 0.0, 0.0), (1.0, 1.0, 1.0))
    want = _bn_token_grad_by_hand(model, torch.from_numpy(x), 1)
    np.testing.assert_allclose(backend.vjp(x, u), want, rtol=1e-4, atol=1e-6)
    x2 = np.concatenate([x, -x])  # batch 2 goes straight through: row 0 unchanged
    np.testing.assert_allclose(backend.vjp(x2, np.concatenate([u, u]))[:1], want, rtol=1e-4, atol=1e-6)


def test_kinks_counts_relu_flips_and_maxpool_near_ties(tmp_path) -> None:
    """``_kinks`` sees a ReLU whose input is > 0 in float64 but rounds to 0 in f32, and a near-tied window."""
    import numpy as np
    import openvino as ov
    import torch

    zoo = _load()

    class Kinky(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.relu = torch.nn.ReLU()
            self.pool = torch.nn.MaxPool2d(2)
            self.head = torch.nn.Linear(3 * 2 * 2, 2)

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            big = x.amax(dim=(1, 2, 3), keepdim=True)  # data-dependent: not folded by the converter
            return self.head(self.pool(self.relu((x + big) - big)).flatten(1))

    x = torch.full((1, 3, 4, 4), -1.0)
    x[0, 0, 0, :3] = 1e-9  # (1e-9 + 0.5) - 0.5 is 1e-9 in float64, 0 in float32: three ReLU sign flips
    x[0, 1, 0, 0], x[0, 1, 1, 1] = 0.5, 0.5 + 1e-7  # a window whose two largest differ by 2e-7 relative
    model = Kinky().eval()
    path = tmp_path / "k.xml"
    ov.save_model(ov.convert_model(model, example_input=x), path)
    assert zoo._kinks(model, x, str(path)) == {"relu_sign_flips": 3, "clamp_kink_flips": 0, "maxpool_near_ties": 1}
    # the same crossing through a ReLU6 (a Clamp node in the graph) and at its upper bound
    model.relu = torch.nn.ReLU6()
    x[0, 2, 3, 3] = 8.0  # big = 8
    x[0, 2, 0, :2] = float(np.nextafter(np.float32(6), np.float32(0)))  # 6 - 2**-21: (x + 8) - 8 is 6 in f32
    ov.save_model(ov.convert_model(model, example_input=x), path)
    assert zoo._kinks(model, x, str(path)) == {"relu_sign_flips": 0, "clamp_kink_flips": 5, "maxpool_near_ties": 1}


def _fold_model():
    """Conv -> BatchNorm subclass with an activation (foldable); a BN after a pool; a conv with two consumers."""
    import torch
    from torch import nn

    try:
        from timm.layers import BatchNormAct2d

        bn_act = BatchNormAct2d(4, act_layer=nn.ReLU)
    except ImportError:  # a local subclass doing BN + activation like timm's

        class _BNAct(nn.BatchNorm2d):
            def forward(self, x):  # type: ignore[override]
                return torch.relu(super().forward(x))

        bn_act = _BNAct(4)

    class M(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.conv1 = nn.Conv2d(3, 4, 3, padding=1, bias=False)
            self.bn1 = bn_act  # folded into conv1
            self.pool = nn.AvgPool2d(2)
            self.bn2 = nn.BatchNorm2d(4)  # not after a conv: kept
            self.conv2 = nn.Conv2d(4, 4, 1)
            self.bn3 = nn.BatchNorm2d(4)  # conv2's output also feeds the residual: not foldable

        def forward(self, x):
            h = self.bn2(self.pool(self.bn1(self.conv1(x))))
            c = self.conv2(h)
            return self.bn3(c) + c

    zoo = _load()
    return zoo, zoo._reinit(M().eval())


def test_fp16_reference_folds_batchnorm_exactly() -> None:
    """``fold_batchnorms``: conv -> BatchNormAct folded (activation kept), other BNs exact identities of themselves."""
    import copy

    import torch

    zoo, model = _fold_model()
    x = torch.randn(1, 3, 8, 8, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        want = copy.deepcopy(model).double()(x.double())
    folded = copy.deepcopy(model)
    info = zoo.fold_batchnorms(folded, x)
    assert info == {"bn_folded": 1, "bn_unfolded": 2, "bn_unused": 0}
    # the two-consumer conv is untouched; the folded conv is not
    assert torch.equal(folded.conv2.weight, model.conv2.weight.double())
    assert not torch.equal(folded.conv1.weight, model.conv1.weight.double())
    with torch.no_grad():
        got = folded(x.double())
        # the folded BatchNormAct is an exact identity followed by its activation (bit for bit, float64)
        z = torch.randn(2, 4, 5, 5, dtype=torch.float64, generator=torch.Generator().manual_seed(1))
        assert torch.equal(folded.bn1(z), torch.relu(z))
    assert folded.bn1.eps == 0.0 and torch.equal(folded.bn1.weight, torch.ones(4, dtype=torch.float64))
    # the fold is computed in float32 (as OpenVINO does): the same function to f32 rounding
    assert float((got - want).abs().max() / want.abs().max()) < 1e-6


def test_fp16_reference_matches_fp16_ir_logits(tmp_path) -> None:
    """The f16-rounded reference computes the ``compress_to_fp16`` IR's function (logits to f32 precision)."""
    import openvino as ov
    import torch

    zoo, model = _fold_model()
    x = torch.randn(1, 3, 8, 8, generator=torch.Generator().manual_seed(0))
    path, ref = zoo._convert(model, x, "fp16", str(tmp_path))
    ir = ov.Core().compile_model(path, "CPU", {"INFERENCE_PRECISION_HINT": "f32"})(x.numpy())[0]
    with torch.no_grad():
        ref64 = ref.double()(x.double()).numpy()
        unrounded = model.double()(x.double()).numpy()
    assert ref.zoo_fold["bn_folded"] == 1
    assert zoo._logits_rel(ir, ref64) < 1e-5
    # and the f16 rounding is visible: the unrounded model is far from the IR by comparison
    assert zoo._logits_rel(ir, unrounded) > 10 * zoo._logits_rel(ir, ref64)


def test_fp16_reference_keeps_what_openvino_keeps_in_f32() -> None:
    """A LayerScale of 1e-5 (f16 subnormal) stays f32 in the IR, so the reference does not round it."""
    import numpy as np
    import torch

    zoo = _load()
    tiny, normal = np.full(8, 1e-5, np.float32), np.linspace(-1, 1, 64, dtype=np.float32) + 1e-3
    assert zoo._ov_keeps_f32([tiny, normal]) == [True, False]
    model = torch.nn.Sequential(torch.nn.Linear(8, 8)).eval()
    with torch.no_grad():
        model[0].bias.copy_(torch.from_numpy(tiny))
        model[0].weight.copy_(torch.from_numpy(normal).reshape(8, 8))
    ref = zoo.fp16_reference(model, torch.randn(1, 8))
    assert ref.zoo_fold["f32_kept"] == 1
    assert torch.equal(ref[0].bias, model[0].bias)  # kept: not rounded (1e-5 is not an f16 value)
    assert torch.equal(ref[0].weight, model[0].weight.half().float())
    assert not torch.equal(ref[0].weight, model[0].weight)


class _PoolNet:
    """Tiny ReLU + max-pool CNN: module and functional ReLUs, a ceil-mode padded overlapping pool, a reused ReLU."""

    @staticmethod
    def make():
        import torch

        torch.manual_seed(0)

        class Net(torch.nn.Module):
            def __init__(self) -> None:
                super().__init__()
                self.c1 = torch.nn.Conv2d(3, 4, 3, padding=1)
                self.relu = torch.nn.ReLU(inplace=True)
                self.p1 = torch.nn.MaxPool2d(3, 2, padding=1, ceil_mode=True)
                self.c2 = torch.nn.Conv2d(4, 4, 3)
                self.head = torch.nn.Linear(4 * 2 * 2, 5)

            def forward(self, x: torch.Tensor) -> torch.Tensor:
                y = self.p1(self.relu(self.c1(x)))
                y = torch.nn.functional.relu(self.c2(y))
                y = self.relu(torch.nn.functional.max_pool2d(y, 2, ceil_mode=True))
                return self.head(y.flatten(1))

        return Net().eval()


def _save_ir(model, x, path):
    import openvino as ov

    ir = ov.convert_model(model, example_input=x, input=[-1, *x.shape[1:]])
    ov.save_model(ir, path, compress_to_fp16=False)
    return str(path)


def test_aligned_reference_is_torch_autograd_without_flips(tmp_path) -> None:
    """No kink crossed: the aligned reference is plain torch float64 autograd (bit for bit) and counts no flip."""
    import copy

    import numpy as np
    import torch

    zoo = _load()
    model = _PoolNet.make()
    x = torch.randn(1, 3, 9, 9, generator=torch.Generator().manual_seed(1))
    al = zoo.aligned_reference(model, x, _save_ir(model, x, tmp_path / "m.xml"), 1)
    assert al["aligned_nodes"] == 5  # relu, pool, relu, pool, relu (the module ReLU called twice)
    assert al["aligned_relu_flips"] == 0 and al["aligned_pool_flips"] == 0 and al["aligned_pool_ties"] == 0
    assert al["aligned_relu_units"] == 4 * 81 + 4 * 9 + 4 * 4 and al["aligned_pool_windows"] == 4 * 25 + 4 * 4
    assert al["aligned_match_err"] < 1e-5 and al["aligned_other_kinks"] == {}
    g64 = zoo._grad(copy.deepcopy(model).double(), x.double(), 1)
    np.testing.assert_array_equal(al["g64"], g64)
    assert zoo._rel(al["g32"], g64) < 1e-5
    np.testing.assert_allclose(al["logits"], al["ov_logits"], rtol=1e-5, atol=1e-6)


def test_aligned_grad_follows_forced_kink_flips() -> None:
    """Kinks taken from a shifted forward give the gradient of the piece that forward is on.

    Constant bumps on the pre-activations (one ReLU unit switched off, one pool element raised above its
    window's maximum) move the forward to a neighbouring linear piece without changing its derivative there;
    torch's own autograd of the bumped model is the independent answer. ``_aligned_grad`` of the *unbumped*
    model with the bumped forward's ReLU outputs / pool inputs must equal it, and differ from the plain one.
    """
    import copy

    import numpy as np
    import torch

    zoo = _load()
    model = _PoolNet.make().double()
    x = torch.randn(1, 3, 9, 9, generator=torch.Generator().manual_seed(1), dtype=torch.float64)
    calls = zoo._torch_kink_values(model, x)
    z1 = calls[0][1][0]  # first ReLU output (C, H, W)
    bump = torch.zeros(1, 4, 9, 9, dtype=torch.float64)
    on = np.argwhere(z1 > 0)
    c, i, j = on[0]  # switch this unit off
    bump[0, c, i, j] = -(float(z1[c, i, j]) + 1.0)
    # raise a positive non-maximal element of a pool-1 window (window (1, 1) covers rows/cols 1..3) above all
    win = z1[:, 1:4, 1:4]
    cc = int(np.argmax((win > 0).sum(axis=(1, 2)) >= 2))
    ii, jj = [int(v) for v in np.argwhere(win[cc] > 0)[0]]
    if win[cc, ii, jj] == win[cc].max():
        ii, jj = [int(v) for v in np.argwhere(win[cc] > 0)[1]]
    bump[0, cc, 1 + ii, 1 + jj] = float(win[cc].max()) + 1.0
    bumped = copy.deepcopy(model)
    bumped.c1.register_forward_hook(lambda m, i, o: o + bump)
    values = [v for _, v, _ in zoo._torch_kink_values(bumped, x)]
    flips = zoo._kink_flips(calls, values)
    assert flips["aligned_relu_flips"] >= 1 and flips["aligned_pool_flips"] >= 1, flips
    want = zoo._grad(bumped, x, 1)
    _, got = zoo._aligned_grad(model, x, 1, values)
    np.testing.assert_allclose(got, want, rtol=1e-12, atol=1e-14)
    assert zoo._rel(got, zoo._grad(model, x, 1)) > 1e-3  # the flips do move the gradient
    _, same = zoo._aligned_grad(model, x, 1, [v for _, v, _ in calls])
    np.testing.assert_array_equal(same, zoo._grad(model, x, 1))


def _tie_net():
    import torch

    class Tie(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.relu = torch.nn.ReLU()
            self.pool = torch.nn.MaxPool2d(2)
            self.head = torch.nn.Linear(3 * 2 * 2, 2)
            with torch.no_grad():
                self.head.weight.copy_(torch.arange(24, dtype=torch.float32).reshape(2, 12) / 10 + 0.1)

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            big = x.amax(dim=(1, 2, 3), keepdim=True)  # data-dependent: not folded by the converter
            return self.head(self.pool(self.relu((x + big) - big)).flatten(1))

    return Tie().eval()


def test_aligned_reference_explains_real_f32_kink_flips(tmp_path) -> None:
    """A real OpenVINO-f32-vs-torch-f64 disagreement: ovdiv matches the aligned reference, not the raw one.

    ``(x + 4) - 4`` in f32 maps 1e-9 to 0 (three ReLU units off in OpenVINO, on in float64) and 0.5 and the
    next f32 above it to the same 0.5 (a tie: OpenVINO takes the window's first element, float64 the
    second). ovdiv's gradient is the deployed model's; the status rule relabels the row ``ok``.
    """
    import copy

    import numpy as np
    import torch

    from ovdiv.attribution import VJPModel

    zoo = _load()
    model = _tie_net()
    x = torch.full((1, 3, 4, 4), -1.0)
    x[0, 2, 3, 3] = 4.0
    x[0, 0, 0, :3] = 1e-9
    x[0, 1, 0, 0], x[0, 1, 1, 1] = 0.5, float(np.nextafter(np.float32(0.5), np.float32(1)))
    path = _save_ir(model, x, tmp_path / "t.xml")
    al = zoo.aligned_reference(model, x, path, 0)
    assert al["aligned_relu_flips"] == 3 and al["aligned_pool_flips"] == 1 and al["aligned_pool_ties"] == 1, al
    g64 = zoo._grad(copy.deepcopy(model).double(), x.double(), 0)
    g32 = zoo._grad(model, x, 0)
    _, g = VJPModel(path).gradient(x.numpy(), [0])
    assert zoo._rel(g, g64) > 0.1 and zoo._rel(g, al["g64"]) < 1e-6
    # by hand: the head's weights at each window's OpenVINO argmax, zero where OpenVINO's ReLU is off
    want = np.zeros((1, 3, 4, 4))
    w = model.head.weight.detach().double().numpy()[0].reshape(3, 2, 2)
    want[0, 1, 0, 0] = w[1, 0, 0]  # the tie: first element
    want[0, 2, 3, 3] = w[2, 1, 1]
    np.testing.assert_allclose(al["g64"], want, rtol=1e-12, atol=1e-15)
    # torch float32 rounds (x + 4) - 4 as OpenVINO does: the raw floor is as large as ovdiv's error (the kinks
    # inflate the floor, as on vgg11_bn at 224 px), and the aligned floor is f32 rounding again
    assert zoo._rel(g32, g64) > 0.1 and al["g32"] == pytest.approx(al["g64"], rel=1e-6, abs=1e-7)
    raw_wrong = zoo._spearman(g, g64) < zoo.SPEARMAN_OK and zoo._rel(g, g64) > 10 * zoo._rel(g32, g64)
    fields = zoo._aligned_fields(model, x, path, 0, g, raw_wrong)
    assert fields["kinks_aligned"] is True and fields["rel_l2_aligned"] < 1e-6 and fields["floor_aligned"] < 1e-6
    assert fields["status_raw"] == "ok" and "status" not in fields
    bad = zoo._aligned_fields(model, x, path, 0, np.roll(g, 1), True)
    assert bad["kinks_aligned"] is False and "status" not in bad and bad["status_raw"] == "wrong"
    raw_wrong = zoo._aligned_fields(model, x, path, 0, g, True)
    assert raw_wrong["status"] == "ok" and raw_wrong["status_raw"] == "wrong"


def test_match_kinks_refuses_unmatched_nodes() -> None:
    """A graph ReLU with no torch call of its shape and values, or a count mismatch: no alignment."""
    import numpy as np

    zoo = _load()
    a = np.ones((1, 2, 3, 3))
    with pytest.raises(zoo.AlignError, match="torch calls vs graph nodes"):
        zoo._match_kinks([("relu", a, None)], [])
    with pytest.raises(zoo.AlignError, match="matches no torch call"):
        zoo._match_kinks([("relu", a, None)], [("relu", a + 0.5)])
    with pytest.raises(zoo.AlignError, match="matches no torch call"):
        zoo._match_kinks([("relu", a, None)], [("relu", np.ones((1, 2, 9)))])
    got, err = zoo._match_kinks([("relu", a, None), ("relu", 2 * a, None)], [("relu", 2 * a), ("relu", a)])
    assert got[0] is not None and float(got[0].max()) == 1.0 and err == 0.0


def test_page_and_summary_show_kink_aligned_rows() -> None:
    """A row relabelled by the aligned reference is listed as such, with its aligned figures, on the page."""
    zoo = _load()
    row = {
        "model": "tv:v",
        "format": "onnx",
        "size": 224,
        "status": "ok",
        "status_raw": "wrong",
        "kinks_aligned": True,
        "rel_l2": 4.3e-2,
        "floor": 3.6e-4,
        "spearman": 0.9975,
        "rel_l2_aligned": 1.6e-6,
        "floor_aligned": 5.6e-7,
        "spearman_aligned": 1.0,
        "aligned_relu_flips": 0,
        "aligned_pool_flips": 2,
    }
    summ = zoo.summary([row, {"model": "tv:w", "format": "onnx", "status": "wrong", "aligned_detail": "x"}])
    assert summ["wrong"] == ["tv:w/onnx"] and summ["wrong_raw_explained_by_kinks"] == ["tv:v/onnx"]
    assert summ["worst_rel_l2_over_floor_aligned"] == {"case": "tv:v/onnx", "ratio": 2.86, "spearman": 1.0}
    line = next(ln for ln in zoo.markdown([row], summ).splitlines() if ln.startswith("| `tv:v`"))
    assert "| 1.60e-06 |" in line and "0 ReLU / 2 max-pool flip(s)" in line and "explained by the kinks" in line
    assert "aligned relL2 1.6e-06" in zoo._fmt_row(row)


def test_aligned_fields_keep_raw_status_when_alignment_fails() -> None:
    """No ReLU / max-pool call to align: no relabelling, ``aligned_detail`` says why."""
    import numpy as np
    import torch

    zoo = _load()
    model = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(12, 2)).eval()
    got = zoo._aligned_fields(model, torch.ones(1, 3, 2, 2), "unused.xml", 0, np.ones((1, 3, 2, 2)), True)
    assert set(got) == {"aligned_detail"} and "no ReLU / max-pool call" in got["aligned_detail"]
