"""Never silently wrong on non-finite gradients (issue 14, INT8 efficientvit_b0).

A FakeQuantize with an empty input range (``input_low == input_high``, from an all-constant calibration
activation) is a step, constant in ``x`` on either side: its derivative is 0. The STE slope
``(oh - ol) / (ih - il)`` is ``0/0`` there; these tests pin the rule, the gradient check's references, the
check's verdict on a NaN gradient and the evaluation's error on NaN attribution maps.
Reference: the definition in numpy (the STE of a non-empty range, 0 on an empty one) and central finite
differences of the model's own forward.
"""

from __future__ import annotations

import numpy as np
import openvino as ov
import openvino.opset15 as ops
import pytest

from ovdiv.attribution import VJP_RULES, Saliency, VJPModel, check_gradients
from ovdiv.attribution.gradcheck import _model_trials, check_ste_rules, ste_reference_model
from ovdiv.errors import MemberError
from ovdiv.evaluate.engine import check_finite_maps

SIZE = 8


def _fq_model(il: float, ih: float, ol: float, oh: float, *, dead: bool = True, seed: int = 0) -> ov.Model:
    """``x -> [x * (0, 1, 1) per channel] -> FQ(il, ih, ol, oh) -> + tanh(x) -> flatten -> W -> logits (N, 5)``.

    With ``dead``, channel 0 of the FQ input is exactly 0 (a dead channel), i.e. on an empty range [0, 0]: the
    efficientvit_b0 INT8 case (the Multiply passes a NaN cotangent on, unlike a ReLU's Select).
    """
    rng = np.random.default_rng(seed)
    x = ops.parameter([-1, 3, SIZE, SIZE], ov.Type.f32, name="x")
    mask = ops.constant(np.array([0.0, 1.0, 1.0], np.float32).reshape(1, 3, 1, 1))
    h = ops.multiply(x, mask).output(0) if dead else x.output(0)
    c = [ops.constant(np.full((1, 3, 1, 1), v, np.float32)) for v in (il, ih, ol, oh)]
    fq = ops.fake_quantize(h, *c, 256)
    s = ops.add(fq, ops.tanh(x))
    f = ops.reshape(s, ops.constant(np.array([0, -1], np.int64)), special_zero=True)
    w = ops.constant((rng.standard_normal((5, 3 * SIZE * SIZE)) * 0.1).astype(np.float32))
    return ov.Model([ops.result(ops.matmul(f, w, False, True))], [x], "fq_empty")


def _x(n: int = 2, seed: int = 1) -> np.ndarray:
    return np.random.default_rng(seed).standard_normal((n, 3, SIZE, SIZE)).astype(np.float32)


def _fq_rule_model(shape: list[int], il: np.ndarray, ih: np.ndarray, ol: np.ndarray, oh: np.ndarray) -> ov.Model:
    """``(x, u) -> the registry's FakeQuantize rule's dx`` on one FQ node."""
    from ovdiv.attribution.vjp_registry import RuleContext

    p = ops.parameter(shape, ov.Type.f32, name="x")
    pu = ops.parameter(shape, ov.Type.f32, name="u")
    fq = ops.fake_quantize(p, *(ops.constant(a) for a in (il, ih, ol, oh)), 256)
    gx = VJP_RULES["FakeQuantize"].fn(RuleContext(), fq, [pu.output(0)], [True, False, False, False, False])[0]
    return ov.Model([ops.result(gx)], [p, pu], "fq_rule")


def test_fq_rule_is_zero_on_an_empty_range_and_the_ste_elsewhere() -> None:
    """Single FQ node, per-channel ranges: channel 0 empty at 0 (x has exact zeros), 1 empty at 0.5, 2 normal."""
    il = np.array([0.0, 0.5, -1.0], np.float32).reshape(1, 3, 1, 1)
    ih = np.array([0.0, 0.5, 2.0], np.float32).reshape(1, 3, 1, 1)
    ol = np.array([0.0, -1.0, -3.0], np.float32).reshape(1, 3, 1, 1)
    oh = np.array([0.0, 1.0, 3.0], np.float32).reshape(1, 3, 1, 1)
    x = _x(2)
    x[:, 0, :4] = 0.0  # exactly on the empty range
    x[:, 1, 4:] = 0.5
    u = np.random.default_rng(3).standard_normal(x.shape).astype(np.float32)
    got = ov.Core().compile_model(_fq_rule_model(list(x.shape), il, ih, ol, oh), "CPU")([x, u])[0]
    assert np.isfinite(got).all()
    inside = (x >= il) & (x <= ih)
    slope = np.where(ih == il, 0.0, (oh - ol) / np.where(ih == il, 1.0, ih - il))
    np.testing.assert_allclose(got, np.where(inside, u * slope, 0.0), rtol=1e-6, atol=1e-7)
    assert np.abs(got[:, 2]).sum() > 0  # the non-degenerate channel is not zeroed (test not vacuous)


def test_saliency_is_finite_and_matches_finite_differences_on_an_empty_range() -> None:
    m = _fq_model(0.0, 0.0, 0.0, 0.0)
    x = _x(2)
    runner = VJPModel(m)
    u = np.random.default_rng(5).standard_normal((2, 5)).astype(np.float32)
    g = runner.vjp(x, u)[1]
    assert np.isfinite(g).all(), "empty-range FakeQuantize gave a non-finite gradient"
    # FQ(x * (0, 1, 1)) with an empty range at 0 and ol == oh == 0 is the constant 0: only d tanh(x) remains
    w = np.asarray(m.get_ordered_ops()[-2].input_value(1).get_node().get_data(), np.float64)
    ref = ((u.astype(np.float64) @ w).reshape(x.shape)) * (1 - np.tanh(x.astype(np.float64)) ** 2)
    np.testing.assert_allclose(g, ref, rtol=1e-4, atol=1e-6)
    sal = Saliency(m).attribute(x, target=[0, 1])
    assert np.isfinite(sal).all()


def test_ste_reference_and_rule_check_handle_an_empty_range() -> None:
    m = _fq_model(0.0, 0.0, 0.0, 0.0)
    ref, count = ste_reference_model(m)
    assert count == 1
    x = _x(2)
    f32 = {"INFERENCE_PRECISION_HINT": "f32"}
    out = ov.Core().compile_model(ref, "CPU", f32)([x])[0]
    np.testing.assert_allclose(out, ov.Core().compile_model(m, "CPU", f32)([x])[0], rtol=1e-5, atol=1e-6)
    checks = check_ste_rules(m, x[:1])
    assert len(checks) == 1 and checks[0].error is not None and checks[0].passed, checks
    rep = check_gradients(VJPModel(m), x, "quick", name="q")
    assert rep.outcome == "passed", rep


def test_ste_reference_matches_fq_on_an_empty_range_with_a_step() -> None:
    """Empty range at 0.25 with ol != oh: FQ (OpenVINO spec) is ol for x <= 0.25 and oh above; the reference too.

    The CPU plugin itself returns NaN for this FQ (measured, OpenVINO 2026.4): such a member's logits are
    non-finite and the evaluation stops on them; the reference follows the spec (numpy here).
    """
    m = _fq_model(0.25, 0.25, -1.0, 2.0, dead=False)
    ref, _ = ste_reference_model(m)
    x = _x(2)
    x[0, 0, 0, :3] = 0.25  # exactly on the range
    w = np.asarray(m.get_ordered_ops()[-2].input_value(1).get_node().get_data(), np.float64)
    fq = np.where(x > 0.25, 2.0, -1.0)
    want = (fq + np.tanh(x.astype(np.float64))).reshape(len(x), -1) @ w.T
    got = ov.Core().compile_model(ref, "CPU", {"INFERENCE_PRECISION_HINT": "f32"})([x])[0]
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-5)


def _nan_rule(ctx, node, grads, needs):  # type: ignore[no-untyped-def]
    """The pre-fix STE rule: slope (oh - ol) / (ih - il) without the empty-range guard (0/0 = NaN)."""
    g = grads[0]
    x = node.input_value(0)
    il, ih, ol, oh = (node.input_value(i) for i in range(1, 5))
    inside = ops.logical_and(ops.greater_equal(x, ops.minimum(il, ih)), ops.less_equal(x, ops.maximum(il, ih)))
    scale = ops.divide(ops.subtract(oh, ol), ops.subtract(ih, il))
    gx = ops.select(inside, ops.multiply(g, scale), ops.constant(np.float32(0.0))).output(0)
    return [gx, None, None, None, None]


def test_gradient_check_fails_on_a_non_finite_gradient(monkeypatch) -> None:
    """With the old 0/0 rule the member's saliency is NaN: the check must say ``failed``, non-finite gradient."""
    from ovdiv.attribution.vjp_registry import VJPRuleSpec

    spec = VJP_RULES["FakeQuantize"]
    monkeypatch.setitem(VJP_RULES, "FakeQuantize", VJPRuleSpec(_nan_rule, spec.check))
    m = _fq_model(0.0, 0.0, 0.0, 0.0)
    x = _x(2)
    u = np.ones((2, 5), np.float32)
    assert not np.isfinite(VJPModel(m).vjp(x, u)[1]).all()  # the bug is reproduced (test not vacuous)
    rep = check_gradients(VJPModel(m), x, "quick", name="q")
    assert rep.outcome == "failed" and rep.reason is not None and "non-finite gradient" in rep.reason, rep
    with pytest.raises(Exception, match="non-finite gradient"):
        rep.raise_for_failure()


def test_one_non_finite_trial_is_not_out_voted_by_the_median() -> None:
    """6 of 9 trials fine, one VJP value NaN: ``_Trials.nonfinite`` (the verdict's input) is set."""
    x = _x(3)
    w = np.random.default_rng(0).standard_normal((5, x[0].size)).astype(np.float32)

    def forward(xx: np.ndarray) -> np.ndarray:
        return (xx.reshape(len(xx), -1) @ w.T).astype(np.float32)

    def vjp(xx: np.ndarray, uu: np.ndarray) -> np.ndarray:
        g = (uu @ w).reshape(xx.shape).astype(np.float32)
        g[2, 0, 0, 0] = np.nan
        return g

    t = _model_trials(forward, vjp, x, 5, directions=3, rng=np.random.default_rng(0))
    assert np.isfinite(np.median(t.error / t.tolerance)) and np.median(t.error / t.tolerance) <= 1.0  # median: fine
    assert t.nonfinite and t.nonfinite_grad == 1


def test_non_finite_attribution_maps_raise_a_member_error() -> None:
    ok = np.zeros((4, 3, 2, 2), np.float32)
    bad = ok.copy()
    bad[2, 0, 0, 0] = np.nan
    check_finite_maps(["a", "b"], [ok, ok], 0)
    with pytest.raises(MemberError, match=r"non-finite.*gradient.*member\(s\) b \(1 of 4 images") as e:
        check_finite_maps(["a", "b"], [ok, bad], 8)
    assert "--attribution none" in str(e.value)


def _nan_relu():  # type: ignore[no-untyped-def]
    """The Relu rule times NaN: every member's saliency is NaN (a 0/0 somewhere in its gradient graph)."""
    from ovdiv.attribution.vjp_registry import VJPRuleSpec

    spec = VJP_RULES["Relu"]

    def fn(ctx, node, grads, needs):  # type: ignore[no-untyped-def]
        out = spec.fn(ctx, node, grads, needs)
        return [None if g is None else ops.multiply(g, ctx.const(float("nan"), like=g)).output(0) for g in out]

    return VJPRuleSpec(fn, spec.check)


def test_evaluate_stops_on_non_finite_gradients(tiny_pool, tmp_path, monkeypatch) -> None:
    """Quick check: failed, "non-finite gradient"; check off: the maps' own check names the member."""
    import ovdiv
    from ovdiv.errors import GradientCheckError

    members = [tiny_pool.ir[n] for n in ("m0", "m1")]
    monkeypatch.setitem(VJP_RULES, "Relu", _nan_relu())
    kw = dict(limit=8, cka_samples=0, examples=0)
    with pytest.raises(GradientCheckError, match=r"member 'm0'.*non-finite gradient"):
        ovdiv.evaluate(members, "demo", cache_dir=tmp_path / "c1", **kw)
    out = tmp_path / "out"
    with pytest.raises(MemberError, match=r"non-finite \(NaN/inf\) gradient.*m0 \(.*--attribution none") as e:
        ovdiv.evaluate(members, "demo", cache_dir=tmp_path / "c2", gradient_check="off", out=out, **kw)
    assert "m1" in str(e.value) and not out.exists()
