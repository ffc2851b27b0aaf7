"""INT8 members compute their graph's own function: the CPU plugin's dynamic activation quantization is off.

By default the OpenVINO CPU plugin quantizes, on the fly, the activations of layers whose weights are int8/int4
constants (``DYNAMIC_QUANTIZATION_GROUP_SIZE`` > 0), a function the graph does not contain. ovdiv compiles
VJP models (forward and VJP) and members run at an explicit precision with it off, and records the setting.
Reference: the same network in numpy float64 (dequantized weights, exact gradient). The plugin default is
measured too, so the tests fail if the setting is dropped (not vacuous).
"""

from __future__ import annotations

import numpy as np
import openvino as ov
import openvino.opset15 as ops
import pytest

from ovdiv.attribution import VJP_RULES, Saliency, VJPModel, check_gradients
from ovdiv.attribution.gradcheck import check_ste_rules
from ovdiv.attribution.vjp_registry import VJPRuleSpec
from ovdiv.runtime import load_member
from ovdiv.runtime.openvino_member import dynamic_quantization_setting, precision_config
from ovdiv.types import Precision

SIZE = 8


def _int8_mlp(seed: int = 0) -> tuple[ov.Model, list[np.ndarray]]:
    """``x (N,3,8,8) -> flatten -> W1 (int8 x per-row scale) -> tanh -> W2 (int8) -> logits (N,10)``.

    The weight-decompression pattern (``Constant i8 -> Convert -> Multiply``) of NNCF INT8 IRs and of
    ``nncf.compress_weights``; K = 192 and 64 are above the plugin's default group size (32).
    """
    rng = np.random.default_rng(seed)
    x = ops.parameter([-1, 3, SIZE, SIZE], ov.Type.f32, name="x")
    h = ops.reshape(x, ops.constant(np.array([0, -1], np.int64)), special_zero=True).output(0)
    weights = []
    for k, n in ((3 * SIZE * SIZE, 64), (64, 10)):
        wq = rng.integers(-127, 128, (n, k)).astype(np.int8)
        sc = (rng.random((n, 1)) * 0.02 + 0.01).astype(np.float32)
        w = ops.multiply(ops.convert(ops.constant(wq), ov.Type.f32), ops.constant(sc))
        h = ops.matmul(h, w, False, True).output(0)
        if n != 10:
            h = ops.tanh(h).output(0)
        weights.append(wq.astype(np.float64) * sc.astype(np.float64))
    return ov.Model([ops.result(h)], [x], "int8_mlp"), weights


def _reference(weights: list[np.ndarray], x: np.ndarray, u: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Logits and ``u^T d logits / d x`` in float64 (numpy)."""
    w1, w2 = weights
    a = np.tanh(x.reshape(len(x), -1).astype(np.float64) @ w1.T)
    g = ((u.astype(np.float64) @ w2) * (1 - a**2)) @ w1
    return a @ w2.T, g.reshape(x.shape)


def _rel(a: np.ndarray, b: np.ndarray) -> float:
    return float(np.linalg.norm(np.asarray(a, np.float64) - b) / np.linalg.norm(b))


def test_vjp_model_computes_the_graphs_own_function() -> None:
    model, weights = _int8_mlp()
    rng = np.random.default_rng(1)
    x = rng.standard_normal((2, 3, SIZE, SIZE)).astype(np.float32)
    u = rng.standard_normal((2, 10)).astype(np.float32)
    ref_logits, ref_grad = _reference(weights, x, u)
    runner = VJPModel(model)
    assert runner.compile_config["DYNAMIC_QUANTIZATION_GROUP_SIZE"] == 0 and runner.dynamic_quantization == "off"
    assert int(runner._fwd.get_property("DYNAMIC_QUANTIZATION_GROUP_SIZE")) == 0
    logits, grad = runner.vjp(x, u)
    assert _rel(runner.forward(x), ref_logits) < 1e-5 and _rel(logits, ref_logits) < 1e-5
    assert _rel(grad, ref_grad) < 1e-5
    # The plugin default is a different function (so the checks above would fail without the setting).
    on = VJPModel(model, dynamic_quantization=True)
    assert on.dynamic_quantization == "plugin default"
    assert int(on._fwd.get_property("DYNAMIC_QUANTIZATION_GROUP_SIZE")) > 0
    assert _rel(on.forward(x), ref_logits) > 1e-3
    # Recorded with the gradient check's evidence.
    rep = check_gradients(Saliency(runner), x, "quick", name="mlp")
    assert rep.outcome == "passed" and rep.to_dict()["dynamic_quantization"] == "off", rep


def test_member_at_explicit_precision_runs_without_dynamic_quantization(tmp_path) -> None:
    model, weights = _int8_mlp()
    ov.save_model(model, tmp_path / "q.xml", compress_to_fp16=False)
    imgs = np.random.default_rng(2).integers(0, 256, (4, SIZE, SIZE, 3), dtype=np.uint8)
    f32 = load_member(tmp_path / "q.xml", precision="f32")
    assert f32.info()["dynamic_quantization"] == "off"
    ref, _ = _reference(weights, f32.preprocess(imgs), np.zeros((4, 10), np.float32))
    assert _rel(f32.predict(imgs), ref) < 1e-5
    plugin = load_member(tmp_path / "q.xml", precision="model")
    assert plugin.info()["dynamic_quantization"] == "plugin default"
    assert _rel(plugin.predict(imgs), ref) > 1e-3


@pytest.mark.parametrize(
    ("precision", "device", "expected"),
    [
        ("f32", "CPU", "off"),
        ("bf16", "CPU", "off"),
        ("model", "CPU", "plugin default"),
        ("f32", "GPU", "plugin default"),
    ],
)
def test_precision_config_records_dynamic_quantization(precision: str, device: str, expected: str) -> None:
    cfg = precision_config(Precision(precision), device)
    assert dynamic_quantization_setting(cfg, device) == expected
    assert ("DYNAMIC_QUANTIZATION_GROUP_SIZE" in cfg) == (expected == "off")


# ------------------------------------------------------------------------------------ gradient check on INT8
def _broken(rule: str, factor: float) -> VJPRuleSpec:
    spec = VJP_RULES[rule]

    def fn(ctx, node, grads, needs):  # type: ignore[no-untyped-def]
        out = spec.fn(ctx, node, grads, needs)
        return [None if g is None else ops.multiply(g, ctx.const(factor, like=g)).output(0) for g in out]

    return VJPRuleSpec(fn, spec.check)


@pytest.fixture(scope="module")
def int8_ir(tiny_pool) -> ov.Model:
    """An NNCF INT8 IR (OpenVINO backend) of a tiny deployed CNN: FakeQuantize + int8 weight decompression."""
    nncf = pytest.importorskip("nncf")
    ir = ov.Core().read_model(tiny_pool.ir["m0"])
    calib = [np.random.default_rng(i).standard_normal((1, 3, 32, 32)).astype(np.float32) for i in range(4)]
    return nncf.quantize(ir, nncf.Dataset(calib), subset_size=4)


def test_gradient_check_catches_a_wrong_rule_on_an_int8_ir(int8_ir, tiny_pool, monkeypatch) -> None:
    x = tiny_pool.images[:2].astype(np.float32).transpose(0, 3, 1, 2) / 255.0
    ok = check_gradients(VJPModel(int8_ir), x, "quick", name="q")
    assert ok.outcome == "passed" and ok.ratio is not None and ok.ratio < 0.5, ok
    monkeypatch.setitem(VJP_RULES, "Convolution", _broken("Convolution", 1.5))
    bad = check_gradients(VJPModel(int8_ir), x, "quick", name="q")
    assert bad.outcome == "failed" and "Convolution" in bad.suspects, bad


def test_gradient_check_catches_a_wrong_ste_rule(int8_ir, tiny_pool, monkeypatch) -> None:
    """The FakeQuantize rule is not in the check's clamp-affine reference graph; it is checked node by node."""
    x = tiny_pool.images[:2].astype(np.float32).transpose(0, 3, 1, 2) / 255.0
    checks = check_ste_rules(VJPModel(int8_ir).graph.forward, x[:1])
    assert len(checks) >= 2 and all(c.passed and c.error is not None and c.error < 1e-6 for c in checks), checks
    ok = check_gradients(VJPModel(int8_ir), x, "quick", name="q")
    assert ok.outcome == "passed" and f"{len(checks)} FakeQuantize node(s) checked" in ok.reference, ok
    for factor in (1.5, 0.0):
        monkeypatch.setitem(VJP_RULES, "FakeQuantize", _broken("FakeQuantize", factor))
        bad = check_gradients(VJPModel(int8_ir), x, "quick", name="q")
        assert bad.outcome == "failed" and bad.suspects == ["FakeQuantize"], bad
        assert "FakeQuantize" in bad.message()
