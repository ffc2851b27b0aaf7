"""Runtime gradient check (issue 14 item 3): VJP graph vs finite differences of the member's own forward.

Independent references: analytic functions with known gradients (numpy), injected wrong VJP rules (the
check must fail and, in full mode, name the op type), and correct members of every format (it must pass).
"""

from __future__ import annotations

import json

import numpy as np
import openvino as ov
import pytest
import torch
import torchvision
from click.testing import CliRunner

import ovdiv
from ovdiv.attribution import VJP_RULES, Saliency, VJPModel, check_gradients
from ovdiv.attribution.gradcheck import check_vjp_functions, localise, ste_reference_model
from ovdiv.attribution.vjp_registry import VJPRuleSpec
from ovdiv.cli import cli
from ovdiv.errors import ConfigError, GradientCheckError


# ------------------------------------------------------------------------------------ the statistic itself
def _tanh_net(seed: int = 0):
    rng = np.random.default_rng(seed)
    w1 = rng.standard_normal((48, 20)) / 7
    w2 = rng.standard_normal((5, 20)) / 4

    def forward(x: np.ndarray, dtype=np.float32) -> np.ndarray:
        h = np.tanh(x.reshape(len(x), -1).astype(np.float64) @ w1)
        return (h @ w2.T).astype(dtype).astype(np.float32)

    def grad(x: np.ndarray, u: np.ndarray) -> np.ndarray:
        h = np.tanh(x.reshape(len(x), -1).astype(np.float64) @ w1)
        gh = (u.astype(np.float64) @ w2) * (1 - h**2)
        return (gh @ w1.T).reshape(x.shape).astype(np.float32)

    return forward, grad


def test_statistic_passes_exact_and_fails_wrong_gradients() -> None:
    forward, grad = _tanh_net()
    x = np.random.default_rng(1).standard_normal((2, 3, 4, 4)).astype(np.float32)
    ok = check_vjp_functions(forward, grad, x, 5)
    assert ok["ratio"] < 0.2 and ok["error"] < 1e-3, ok
    for wrong in (lambda x, u: 2 * grad(x, u), lambda x, u: grad(x, u)[:, ::-1].copy(), lambda x, u: 0 * grad(x, u)):
        bad = check_vjp_functions(forward, wrong, x, 5)
        assert bad["ratio"] > 2, bad


def test_tolerance_follows_measured_forward_noise() -> None:
    """A float16-rounded forward (noise ~1e-3 relative) must not raise a false alarm on the exact gradient."""
    forward, grad = _tanh_net()
    x = np.random.default_rng(2).standard_normal((2, 3, 4, 4)).astype(np.float32)
    exact = check_vjp_functions(forward, grad, x, 5)
    noisy = check_vjp_functions(lambda z: forward(z, np.float16), grad, x, 5)
    assert noisy["tolerance"] > exact["tolerance"] and noisy["ratio"] <= 1, (exact, noisy)


# ------------------------------------------------------------------------------------ deployed members
def _broken(rule: str, factor: float):
    spec = VJP_RULES[rule]

    def fn(ctx, node, grads, needs):
        import openvino.opset15 as ops

        out = spec.fn(ctx, node, grads, needs)
        return [None if g is None else ops.multiply(g, ctx.const(factor, like=g)).output(0) for g in out]

    return VJPRuleSpec(fn, spec.check)


@pytest.fixture(scope="module")
def images(tiny_pool) -> np.ndarray:
    return tiny_pool.images[:4]


@pytest.mark.parametrize("fmt", ["ir", "onnx"])
def test_no_false_alarm_on_tiny_members(tiny_pool, images, fmt) -> None:
    for name in tiny_pool.names[:3]:
        rep = check_gradients(getattr(tiny_pool, fmt)[name], images, "quick", name=name)
        assert rep.outcome == "passed" and rep.ratio < 0.5, rep
        assert rep.images == 2 and rep.directions == 3 and rep.seconds > 0
    rep = check_gradients(ovdiv.load_member(tiny_pool.ir["m0"]), images, "full")
    assert rep.outcome == "passed" and rep.suspects == [] and sum(o.reason is None for o in rep.ops) >= 5, rep


def test_torch_member_and_off_mode(tiny_pool, images) -> None:
    rep = check_gradients(tiny_pool.modules["m1"], images, "quick", name="m1")
    assert rep.outcome == "passed" and "torch autograd" in rep.reference
    off = check_gradients(tiny_pool.ir["m1"], images, "off")
    assert off.outcome == "skipped" and not off.passed and not off.failed
    with pytest.raises(ConfigError, match="gradient-check"):
        check_gradients(tiny_pool.ir["m1"], images, "fast")


@pytest.mark.parametrize(("rule", "factor"), [("Relu", 2.0), ("Convolution", -1.0), ("MaxPool", 0.3)])
def test_injected_wrong_rule_is_caught_and_localised(tiny_pool, images, monkeypatch, rule, factor) -> None:
    monkeypatch.setitem(VJP_RULES, rule, _broken(rule, factor))
    path = tiny_pool.ir["m2"]
    quick = check_gradients(Saliency(path), images, "quick", name="m2")
    assert quick.outcome == "failed" and quick.ratio > 1, quick
    assert quick.suspects == [rule], quick.suspects  # a quick failure is localised automatically
    with pytest.raises(GradientCheckError, match=rf"member 'm2'.*vs tolerance.*{rule}"):
        quick.raise_for_failure()
    full = check_gradients(path, images, "full", name="m2")
    assert full.outcome == "failed" and full.suspects == [rule]
    d = full.to_dict()
    assert d["ops"] and all(o["op_type"] == rule for o in d["ops"]) and json.dumps(d)


def test_localise_names_a_wrong_multiply_rule(monkeypatch) -> None:
    """Localisation alone, on an activation x activation Multiply (both inputs differentiable)."""

    class Gate(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.conv = torch.nn.Conv2d(3, 4, 3)
            self.fc = torch.nn.Linear(4, 3)

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            h = self.conv(x)
            return self.fc((h * torch.tanh(h)).mean((2, 3)))

    torch.manual_seed(0)
    x = torch.randn(1, 3, 9, 9)
    ir = ov.convert_model(Gate().eval(), example_input=x, input=[-1, 3, 9, 9])
    assert {c.op_type for c in localise(ir, x.numpy()) if not c.passed} == set()
    monkeypatch.setitem(VJP_RULES, "Multiply", _broken("Multiply", 1.5))
    bad = localise(ir, x.numpy())
    assert {c.op_type for c in bad if not c.passed} == {"Multiply"}, bad


def test_int8_member_checked_against_ste_reference(tiny_pool, images, tmp_path) -> None:
    nncf = pytest.importorskip("nncf")
    ir = ov.Core().read_model(tiny_pool.ir["m0"])
    calib = [np.random.default_rng(i).standard_normal((1, 3, 32, 32)).astype(np.float32) for i in range(4)]
    q = nncf.quantize(ir, nncf.Dataset(calib), subset_size=4)
    ref, count = ste_reference_model(q)
    assert count >= 2 and "FakeQuantize" not in {n.get_type_name() for n in ref.get_ordered_ops()}
    rep = check_gradients(VJPModel(q), images.astype(np.float32).transpose(0, 3, 1, 2) / 255.0, "full", name="q")
    assert rep.outcome == "passed" and "FakeQuantize" in rep.reference and rep.suspects == [], rep
    assert "dynamic activation quantization off" in rep.reference


def test_ste_reference_is_the_clamp_affine_map() -> None:
    """A per-channel FakeQuantize becomes ``ol + (clip(x, il, ih) - il) (oh - ol) / (ih - il)`` (numpy)."""
    import openvino.opset15 as ops

    rng = np.random.default_rng(0)
    il, ih = -rng.random((1, 3, 1, 1)).astype(np.float32), 1 + rng.random((1, 3, 1, 1)).astype(np.float32)
    ol, oh = np.float32(-0.5), np.float32(2.0)
    p = ops.parameter([1, 3, 4, 4], ov.Type.f32)
    fq = ops.fake_quantize(p, ops.constant(il), ops.constant(ih), ops.constant(ol), ops.constant(oh), 256)
    ref, count = ste_reference_model(ov.Model([ops.result(fq)], [p]))
    x = 2 * rng.standard_normal((1, 3, 4, 4)).astype(np.float32)
    got = ov.Core().compile_model(ref, "CPU")(x)[0]
    np.testing.assert_allclose(got, ol + (np.clip(x, il, ih) - il) * (oh - ol) / (ih - il), rtol=1e-5, atol=1e-6)
    assert count == 1


@pytest.mark.slow
@pytest.mark.parametrize("arch", ["resnet18", "squeezenet1_1"])
def test_no_false_alarm_on_random_relu_maxpool_cnns(tmp_path, arch) -> None:
    """Random-weight torchvision CNNs (ReLU kinks, max-pool windows) in FP32 IR, FP16-compressed IR and ONNX."""
    torch.manual_seed(0)
    model = getattr(torchvision.models, arch)(num_classes=10).eval()
    x = torch.randn(1, 3, 64, 64)
    ir = ov.convert_model(model, example_input=x, input=[-1, 3, 64, 64])
    ov.save_model(ir, tmp_path / "fp16.xml", compress_to_fp16=True)
    torch.onnx.export(model, (x,), str(tmp_path / "m.onnx"), opset_version=17, dynamo=False)
    imgs = np.random.default_rng(0).integers(0, 256, (2, 64, 64, 3), dtype=np.uint8)
    for m in (ir, tmp_path / "fp16.xml", tmp_path / "m.onnx"):
        rep = check_gradients(m, imgs, "quick", name=arch)
        assert rep.outcome == "passed" and rep.ratio < 0.6, (m, rep)


# ------------------------------------------------------------------------------------ evaluate + CLI
def test_evaluate_records_the_check_and_stops_on_failure(tiny_pool, tmp_path, monkeypatch) -> None:
    members = [tiny_pool.ir[n] for n in ("m0", "m1")]
    res = ovdiv.evaluate(members, "demo", limit=8, cka_samples=0, cache_dir=tmp_path / "c", examples=0)
    ev = res.metadata["gradient_check"]
    assert set(ev) == {"m0", "m1"} and all(v["outcome"] == "passed" and v["mode"] == "quick" for v in ev.values())
    assert res.metadata["options"]["gradient_check"] == "quick"
    monkeypatch.setitem(VJP_RULES, "Relu", _broken("Relu", 2.0))
    out = tmp_path / "out"
    with pytest.raises(GradientCheckError, match=r"member 'm0'.*also failed: m1"):
        ovdiv.evaluate(members, "demo", limit=8, cka_samples=0, cache_dir=tmp_path / "c2", examples=0, out=out)
    assert not out.exists()
    res = ovdiv.evaluate(
        members, "demo", limit=8, cka_samples=0, cache_dir=tmp_path / "c3", examples=0, gradient_check="off"
    )
    assert res.metadata["gradient_check"] == {}


def test_cli_gradient_check(tiny_pool, tmp_path, monkeypatch) -> None:
    members = [str(tiny_pool.ir[n]) for n in ("m0", "m1")]

    def run(*extra: str, out: str = "out"):
        args = ["evaluate", "--ensemble", *members, "--dataset", "demo", "--limit", "8", "--cka-samples", "0"]
        return CliRunner().invoke(
            cli, [*args, *extra, "--cache-dir", str(tmp_path / "cache"), "--out", str(tmp_path / out)]
        )

    r = run("--gradient-check", "full")
    assert r.exit_code == 0, r.output
    meta = json.loads((tmp_path / "out" / "results.json").read_text())["metadata"]
    assert meta["gradient_check"]["m0"]["mode"] == "full" and meta["gradient_check"]["m0"]["ops_checked"] >= 5
    monkeypatch.setitem(VJP_RULES, "Convolution", _broken("Convolution", 3.0))
    r = run(out="bad")
    assert r.exit_code == 2 and not (tmp_path / "bad").exists()
    lines = [ln for ln in r.output.splitlines() if ln.strip()]
    assert len(lines) == 1 and "gradient check failed" in lines[0] and "Convolution" in lines[0], r.output
    assert run("--gradient-check", "off", out="off").exit_code == 0
    assert run("--gradient-check", "sometimes").exit_code == 2


def test_report_evidence_shows_the_check() -> None:
    from ovdiv.report.html import _evidence

    md = {"gradient_check": {"m0": {"mode": "quick", "outcome": "passed", "error": 0.0123, "tolerance": 0.1}}}
    html = _evidence({"metadata": md})
    assert "Gradient check" in html and "m0" in html and "passed" in html and "0.0123" in html


def test_bisect_prefix_finds_where_a_wrong_gradient_enters(tiny_pool, monkeypatch) -> None:
    """In-context localisation (used when every rule passes alone): the first failing prefix is the bad op."""
    from ovdiv.attribution.gradcheck import bisect_prefix

    x = np.random.default_rng(0).standard_normal((1, 3, 32, 32)).astype(np.float32)
    forward = VJPModel(tiny_pool.ir["m0"]).graph.forward
    assert bisect_prefix(forward, x)[0] is None  # nothing fails
    monkeypatch.setitem(VJP_RULES, "Relu", _broken("Relu", 2.0))
    first, runs = bisect_prefix(forward, x)
    assert first is not None and first.op_type == "Relu" and not first.passed and 1 <= runs <= 8, first


class _OffsetTanh(torch.nn.Module):
    """Smooth logits on top of a large constant: f32 rounding of the forward, ``~ulp(offset) / h``, is the noise."""

    def __init__(self, offset: float) -> None:
        super().__init__()
        gen = torch.Generator().manual_seed(0)
        self.w1 = torch.nn.Parameter(torch.randn(3 * 8 * 8, 16, generator=gen) / 14)
        self.w2 = torch.nn.Parameter(torch.randn(16, 4, generator=gen) / 4)
        self.offset = offset

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.offset + torch.tanh(x.flatten(1) @ self.w1) @ self.w2 * 0.05


@pytest.mark.parametrize(("offset", "outcome"), [(0.0, "passed"), (1e3, "passed"), (1e8, "inconclusive")])
def test_rounding_noise_retries_larger_steps_then_is_inconclusive(offset, outcome) -> None:
    """LeViT's case: a smooth forward whose f32 rounding swamps the step-1e-3 difference.

    The check retries with larger steps (the smallest *measured* tolerance wins); where even those cannot beat
    the noise it says ``inconclusive`` -- not ``passed``, not ``failed`` (the run goes on, the evidence says so).
    """
    x = np.random.default_rng(0).standard_normal((2, 3, 8, 8)).astype(np.float32)
    rep = check_gradients(_OffsetTanh(offset), x, "quick", name="m")
    assert rep.outcome == outcome, rep
    assert rep.failed is False and rep.passed is (outcome == "passed")
    if offset == 0.0:
        assert rep.step == pytest.approx(1e-3)
    if offset == 1e3:  # at h = 1e-3 it would be inconclusive: the retry decided
        assert rep.step > 1e-3 and rep.tolerance <= 0.5, rep
    if outcome == "inconclusive":
        assert rep.reason and "too rough" in rep.reason and rep.to_dict()["outcome"] == "inconclusive"


@pytest.mark.parametrize(
    ("retry_ratios", "outcome"),
    [((0.67, 1.05), "inconclusive"), ((1.6, 1.05), "failed"), ((0.4, 0.5), "passed")],
)
def test_a_failure_at_a_retry_step_must_be_confirmed_by_every_retry_step(monkeypatch, retry_ratios, outcome) -> None:
    """efficientnet_v2_l's case: rough at h = 1e-3, ratio 1.01 at 3e-2 only -- noise, not a wrong rule.

    Canned trials per step (errors/tolerances chosen so 3e-2 has the smallest tolerance and decides): a wrong
    rule is off at every step (``failed``); a lone excess is ``inconclusive``; agreement below 1 ``passed``.
    """
    from ovdiv.attribution import gradcheck

    tol = {gradcheck.STEP: 0.9, gradcheck.RETRY_STEPS[0]: 0.3, gradcheck.RETRY_STEPS[1]: 0.2}
    ratio = {gradcheck.STEP: 0.1, gradcheck.RETRY_STEPS[0]: retry_ratios[0], gradcheck.RETRY_STEPS[1]: retry_ratios[1]}

    def canned(*args, step=gradcheck.STEP, **kwargs):
        t = np.full(6, tol[step])
        return gradcheck._Trials(t * ratio[step], t)

    monkeypatch.setattr(gradcheck, "_model_trials", canned)
    x = np.random.default_rng(0).standard_normal((2, 3, 8, 8)).astype(np.float32)
    rep = check_gradients(_OffsetTanh(0.0), x, "quick", name="m")
    assert rep.outcome == outcome, rep
    assert rep.step == pytest.approx(gradcheck.RETRY_STEPS[1])
    if outcome == "inconclusive":
        assert "one retry step only" in rep.reason and not rep.failed and not rep.passed


class _KinksNearX(torch.nn.Module):
    """A ReLU layer whose 256 pre-activations sit within ``3e-5..3e-4`` of their kink at ``x0`` (random sign).

    Central differences at ``h = 1e-3`` cross nearly every kink, at both ``h`` and ``2h``, so ``d(h)`` and ``d(2h)``
    agree with each other (the Richardson tolerance stays at its floor) and both miss the true derivative by about
    half: the check at ``1e-3`` alone fails a correct VJP. At ``1e-5`` almost no kink is crossed. (The pattern of
    timm ``mobilenetv2_050``'s FP16 IR: ratio 1.07 at ``1e-3``, 0.23 at ``1e-5``.)
    """

    def __init__(self, x0: torch.Tensor) -> None:
        super().__init__()
        gen = torch.Generator().manual_seed(0)
        n_in = x0[0].numel()
        self.w1 = torch.nn.Parameter(torch.randn(n_in, 256, generator=gen) / n_in**0.5)
        delta = torch.empty(256).uniform_(3e-5, 3e-4, generator=gen) * torch.sign(torch.randn(256, generator=gen))
        self.b1 = torch.nn.Parameter(delta - x0[0].flatten() @ self.w1.detach())
        self.w2 = torch.nn.Parameter(torch.randn(256, 10, generator=gen) / 16)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.relu(x.flatten(1) @ self.w1 + self.b1) @ self.w2


def test_a_failure_at_the_first_step_must_be_confirmed_at_smaller_steps(tmp_path, monkeypatch) -> None:
    """Kinks crossed within ``h`` are not a wrong rule: the check re-measures at smaller steps and passes.

    Without the re-measurement the correct VJP fails (``step_ratios["0.001"] > 1``); a wrong Relu rule still fails
    at every step, and is still localised.
    """
    from ovdiv.attribution import gradcheck

    x0 = torch.from_numpy(np.random.default_rng(0).standard_normal((1, 3, 8, 8)).astype(np.float32))
    ir = ov.convert_model(_KinksNearX(x0).eval(), example_input=x0, input=[-1, 3, 8, 8])
    x = np.concatenate([x0.numpy(), x0.numpy()])
    rep = check_gradients(ir, x, "quick", name="kinks")
    assert rep.step_ratios["0.001"] > 1.0, rep  # what the check alone at 1e-3 would have said
    assert rep.outcome == "passed" and rep.step in gradcheck.SMALL_STEPS and rep.ratio <= 1.0, rep
    assert set(rep.to_dict()["step_ratios"]) == {"0.001", "0.0001", "1e-05"} and not rep.suspects
    monkeypatch.setitem(VJP_RULES, "Relu", _broken("Relu", 2.0))
    bad = check_gradients(ir, x, "quick", name="kinks")
    assert bad.outcome == "failed" and all(r > 1.0 for r in bad.step_ratios.values()), bad
    assert bad.suspects == ["Relu"], bad.suspects
