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
