"""Whole-model parity on tiny versions of every family: FP32 IR, ONNX read directly, FP16-compressed IR
and NNCF INT8 IR (the last against an independent torch interpretation of the same IR, STE backward)."""

from __future__ import annotations

import numpy as np
import openvino as ov
import pytest
import torch
import torch.nn.functional as F
from scipy.stats import spearmanr

from ovdiv.attribution import VJPModel, unsupported_ops
from ovdiv.models import create_model

FAMILIES = ["tiny_resnet", "tiny_resnext", "tiny_mnasnet", "tiny_squeezenet", "tiny_deit"]


def _tiny(name: str, helpers) -> torch.nn.Module:
    torch.manual_seed(0)
    return helpers.randomize_bn(create_model(name, num_classes=10)).eval()


@pytest.mark.parametrize("name", FAMILIES)
def test_family_fp32_ir_saliency_matches_torch(name: str, helpers) -> None:
    model = _tiny(name, helpers)
    x = torch.randn(2, 3, 64, 64)
    ir = helpers.to_ir(model, x)
    assert unsupported_ops(ir) == []
    res = helpers.parity(model, x, model=ir)
    assert res["norm"] > 0
    assert res["ok"], f"{name}: rel L2 {res['err']:.3e} vs floor {res['floor']:.3e}"
    assert res["logits_err"] < 1e-4


@pytest.mark.parametrize(
    ("name", "dynamo"),
    [
        ("tiny_resnet", False),
        ("tiny_deit", False),
        ("tiny_deit", True),
        pytest.param("tiny_mnasnet", False, marks=pytest.mark.slow),
        pytest.param("tiny_resnext", True, marks=pytest.mark.slow),
        pytest.param("tiny_squeezenet", True, marks=pytest.mark.slow),
    ],
)
def test_family_onnx_read_directly(name: str, dynamo: bool, helpers, tmp_path) -> None:
    model = _tiny(name, helpers)
    x = torch.randn(2, 3, 64, 64)
    onnx_model = helpers.to_onnx(model, x, tmp_path / f"{name}.onnx", dynamo=dynamo)
    res = helpers.parity(model, x, model=onnx_model)
    assert res["ok"], f"{name}: rel L2 {res['err']:.3e} vs floor {res['floor']:.3e}"


@pytest.mark.slow
@pytest.mark.parametrize("fmt", ["ir", "onnx"])
def test_mobilenet_v3_small(fmt: str, helpers, tmp_path) -> None:
    """HSwish/HSigmoid (IR) and HardSigmoid/Multiply SE blocks (ONNX)."""
    import torchvision

    torch.manual_seed(0)
    model = helpers.randomize_bn(torchvision.models.mobilenet_v3_small(num_classes=10)).eval()
    x = torch.randn(2, 3, 64, 64)
    ir = helpers.to_ir(model, x) if fmt == "ir" else helpers.to_onnx(model, x, tmp_path / "m.onnx")
    res = helpers.parity(model, x, model=ir)
    assert res["ok"], (res["err"], res["floor"])


def test_fp16_compressed_ir_equals_fp16_rounded_weights(helpers, tmp_path) -> None:
    """FP16 IR weights are Constant(f16) -> Convert; the gradient matches torch on fp16-rounded weights."""
    model = _tiny("tiny_resnet", helpers)
    x = torch.randn(2, 3, 64, 64)
    ir_plain = helpers.to_ir(model, x)
    ov.save_model(ir_plain.clone(), tmp_path / "m16.xml", compress_to_fp16=True)
    ir16 = ov.Core().read_model(tmp_path / "m16.xml")
    converts = [
        op
        for op in ir16.get_ordered_ops()
        if op.get_type_name() == "Convert" and op.input_value(0).get_element_type() == ov.Type.f16
    ]
    assert converts, "expected f16 weight decompression in the FP16 IR"
    # The IR folded BN into the conv weights before rounding, so rounding torch's parameters does not
    # reproduce it exactly; instead compare with the FP32 IR whose constants are rounded to fp16.
    ir32 = ir_plain.clone()
    for op in ir32.get_ordered_ops():
        if op.get_type_name() == "Constant" and op.get_element_type() == ov.Type.f32:
            data = np.asarray(op.get_data())
            if data.size > 1:
                rounded = ov.opset15.constant(data.astype(np.float16).astype(np.float32))
                for target in list(op.output(0).get_target_inputs()):
                    target.replace_source_output(rounded.output(0))
    t = np.array([3, 7])
    _, g16 = VJPModel(ir16).gradient(x.numpy(), t)
    _, g32r = VJPModel(ir32).gradient(x.numpy(), t)
    assert helpers.rel_l2(g16, g32r) < 1e-5
    # and it is a different function from the unrounded model (so the comparison is not vacuous)
    _, g32 = VJPModel(ir_plain).gradient(x.numpy(), t)
    assert helpers.rel_l2(g16, g32) > 1e-4


# ------------------------------------------------------------------------------------------- INT8
class _STE(torch.autograd.Function):
    """OpenVINO FakeQuantize forward, straight-through backward inside [il, ih]."""

    @staticmethod
    def forward(ctx, x, il, ih, ol, oh, levels):  # type: ignore[no-untyped-def]
        ctx.save_for_backward(x, il, ih, ol, oh)
        lo, hi = torch.minimum(il, ih), torch.maximum(il, ih)
        # OpenVINO's arithmetic form (scale multiplications). It matters: NNCF puts 0 on the grid, and
        # ``q / (L-1) * (oh-ol) + ol`` vs ``q * ((oh-ol)/(L-1)) + ol`` round that 0 to +-1e-8 differently,
        # flipping downstream ReLU masks (8 % saliency change with identical logits).
        q = torch.round((x - il) * ((levels - 1) / (ih - il))) * ((oh - ol) / (levels - 1)) + ol
        return torch.where(x <= lo, ol.expand_as(q), torch.where(x > hi, oh.expand_as(q), q))

    @staticmethod
    def backward(ctx, g):  # type: ignore[no-untyped-def]
        x, il, ih, ol, oh = ctx.saved_tensors
        m = ((x >= torch.minimum(il, ih)) & (x <= torch.maximum(il, ih))).to(g.dtype)
        return g * m * (oh - ol) / (ih - il), None, None, None, None, None


def run_ir_in_torch(model: ov.Model, x: torch.Tensor) -> torch.Tensor:
    """Independent oracle: interpret an (INT8) OpenVINO IR op by op in torch (dtype of ``x``)."""
    vals: dict[tuple[str, int], torch.Tensor] = {}
    dt = x.dtype

    def inp(n: ov.Node, i: int) -> torch.Tensor:
        o = n.input_value(i)
        return vals[(o.get_node().get_name(), o.get_index())]

    for n in model.get_ordered_ops():
        t, a = n.get_type_name(), n.get_attributes()
        if t == "Parameter":
            r = x
        elif t == "Constant":
            d = np.asarray(n.get_data())
            r = torch.from_numpy(d.copy()) if d.dtype.kind in "iub" else torch.from_numpy(d.astype(np.float64)).to(dt)
        elif t == "Convert":
            r = inp(n, 0).to(dt)
        elif t == "Multiply":
            r = inp(n, 0).to(dt) * inp(n, 1).to(dt)
        elif t == "Subtract":
            r = inp(n, 0).to(dt) - inp(n, 1).to(dt)
        elif t == "Add":
            r = inp(n, 0) + inp(n, 1)
        elif t == "Relu":
            r = torch.relu(inp(n, 0))
        elif t == "FakeQuantize":
            r = _STE.apply(*(inp(n, i) for i in range(5)), int(a["levels"]))
        elif t in ("Convolution", "GroupConvolution"):
            w, groups = inp(n, 1), 1
            if t == "GroupConvolution":
                groups = w.shape[0]
                w = w.reshape(-1, *w.shape[2:])
            assert list(a["pads_begin"]) == list(a["pads_end"])
            r = F.conv2d(inp(n, 0), w, None, list(a["strides"]), list(a["pads_begin"]), list(a["dilations"]), groups)
        elif t == "ReduceMean":
            r = inp(n, 0).mean([int(v) for v in inp(n, 1).reshape(-1)], keepdim=bool(a["keep_dims"]))
        elif t == "Reshape":
            src, shape = inp(n, 0), [int(v) for v in inp(n, 1)]
            r = src.reshape([src.shape[i] if v == 0 and a["special_zero"] else v for i, v in enumerate(shape)])
        elif t == "MatMul":
            aa, bb = inp(n, 0), inp(n, 1)
            r = (aa.transpose(-1, -2) if a["transpose_a"] else aa) @ (bb.transpose(-1, -2) if a["transpose_b"] else bb)
        elif t == "Result":
            return inp(n, 0)
        else:  # pragma: no cover - the test model only has the ops above
            raise NotImplementedError(t)
        vals[(n.get_name(), 0)] = r
    raise AssertionError("no Result")  # pragma: no cover


def test_int8_nncf_ir_ste_saliency(helpers, tmp_path) -> None:
    """NNCF INT8 IR: FakeQuantize on activations + int8 weight decompression.

    Checked: the VJP model's logits equal the compiled INT8 forward (both compiled with fp32 fake-quant
    semantics, LP_TRANSFORMS_MODE=NO); the STE saliency matches an independent torch interpretation of the
    same IR (FakeQuantize forward in OpenVINO's arithmetic, STE backward) within the noise floor of that
    interpretation in fp32 vs fp64 (rel. L2 <= 2 x floor + 1e-5, and < 5 %), Spearman >= 0.99; finite and
    correlated with the FP32 model's saliency.
    """
    nncf = pytest.importorskip("nncf")
    model = _tiny("tiny_resnet", helpers)
    x = torch.randn(4, 3, 64, 64)
    ir = helpers.to_ir(model, x)
    calib = [np.random.default_rng(i).standard_normal((1, 3, 64, 64)).astype(np.float32) for i in range(8)]
    q = nncf.quantize(ir, nncf.Dataset(calib), subset_size=8)
    ov.save_model(q, tmp_path / "int8.xml")
    q = ov.Core().read_model(tmp_path / "int8.xml")
    types = {op.get_type_name() for op in q.get_ordered_ops()}
    assert "FakeQuantize" in types and unsupported_ops(q) == []
    runner = VJPModel(q)
    assert runner.fake_quantized and runner.compile_config.get("LP_TRANSFORMS_MODE") == "NO"
    t = np.array([1, 2, 3, 4])
    logits, g = runner.gradient(x.numpy(), t)
    assert np.isfinite(g).all() and np.abs(g).max() > 0
    np.testing.assert_allclose(logits, runner.forward(x.numpy()), atol=1e-5)

    def oracle(xin: torch.Tensor) -> tuple[np.ndarray, np.ndarray]:
        xx = xin.clone().requires_grad_()
        y = run_ir_in_torch(q, xx)
        (gr,) = torch.autograd.grad(y.gather(1, torch.as_tensor(t)[:, None]).sum(), xx)
        return y.detach().numpy(), gr.numpy()

    y32, ref = oracle(x)
    _, ref64 = oracle(x.double())
    assert np.abs(y32 - logits).max() < 1e-2
    err, floor = helpers.rel_l2(g, ref), helpers.rel_l2(ref, ref64)
    sal_ov, sal_ref = np.abs(g).max(1), np.abs(ref).max(1)
    rho = min(spearmanr(sal_ov[i].ravel(), sal_ref[i].ravel())[0] for i in range(len(t)))
    assert err <= 2 * floor + helpers.EPS and err < 0.05 and rho > 0.99, (err, floor, rho)
    _, g32 = VJPModel(ir).gradient(x.numpy(), t)
    sal32 = np.abs(g32).max(1)
    rho32 = min(spearmanr(sal_ov[i].ravel(), sal32[i].ravel())[0] for i in range(len(t)))
    assert rho32 > 0.5, rho32
