"""Attribution methods: captum parity on IR members, the torch backend, inputs/targets, post-processing."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from captum.attr import InputXGradient as CInputXGradient
from captum.attr import IntegratedGradients as CIntegratedGradients
from captum.attr import NoiseTunnel
from captum.attr import Saliency as CSaliency

from ovdiv.attribution import (
    InputXGradient,
    IntegratedGradients,
    Saliency,
    SmoothGrad,
    VJPModel,
    as_torch_module,
    attribution_method,
    channel_max,
    normalize_maps,
    postprocess,
)
from ovdiv.errors import AttributionInputError, ConfigError, MemberError
from ovdiv.metrics.attribution import normalize_attributions
from ovdiv.models import create_model
from ovdiv.runtime.preprocessing import normalize_images

TOL = 5e-3  # issue 5: captum on the IR member vs captum on the torch model


@pytest.fixture(scope="module")
def tiny() -> tuple[torch.nn.Module, object, torch.Tensor, np.ndarray]:
    """tiny_resnet at 32 px, its IR, a batch and targets (module scope: converted once)."""
    import openvino as ov

    torch.manual_seed(0)
    model = create_model("tiny_resnet", num_classes=10).eval()
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, torch.nn.BatchNorm2d):
                m.running_var.uniform_(0.5, 1.5)
                m.running_mean.uniform_(-0.2, 0.2)
    x = torch.randn(4, 3, 32, 32)
    ir = ov.convert_model(model, example_input=x, input=[-1, 3, 32, 32])
    return model, ir, x, np.array([0, 3, 5, 9])


@pytest.fixture(scope="module")
def runner(tiny) -> VJPModel:
    return VJPModel(tiny[1])


def _rel(a: np.ndarray | torch.Tensor, b: np.ndarray | torch.Tensor) -> float:
    a = a.detach().numpy() if isinstance(a, torch.Tensor) else np.asarray(a)
    b = b.detach().numpy() if isinstance(b, torch.Tensor) else np.asarray(b)
    return float(np.linalg.norm(a - b) / np.linalg.norm(b))


# ------------------------------------------------------------------------------- captum on the IR module
@pytest.mark.parametrize("method", ["saliency", "input_x_gradient", "ig", "noise_tunnel"])
def test_captum_runs_unchanged_on_ir_member(method: str, tiny, runner) -> None:
    model, _, x, t = tiny
    om = as_torch_module(runner)

    def run(m: torch.nn.Module) -> torch.Tensor:
        tl = t.tolist()
        if method == "saliency":
            return CSaliency(m).attribute(x, target=tl, abs=False)
        if method == "input_x_gradient":
            return CInputXGradient(m).attribute(x, target=tl)
        if method == "ig":
            return CIntegratedGradients(m).attribute(x, target=tl, n_steps=8)
        torch.manual_seed(3)
        return NoiseTunnel(CSaliency(m)).attribute(x, nt_type="smoothgrad", nt_samples=4, stdevs=0.1, target=tl)

    assert _rel(run(om), run(model)) <= TOL


# ------------------------------------------------------------------------------- ovdiv methods vs captum
def test_saliency_matches_captum(tiny, runner) -> None:
    model, _, x, t = tiny
    sal = Saliency(runner)
    assert sal.backend == "openvino" and sal.inference_precision == "f32"
    for use_abs in (True, False):
        ours = sal.attribute(x.numpy(), target=t, abs=use_abs)
        ref = CSaliency(model).attribute(x, target=t.tolist(), abs=use_abs)
        assert ours.dtype == np.float32 and ours.shape == (4, 3, 32, 32)
        assert _rel(ours, ref) <= TOL
    assert (sal.attribute(x, target=t) >= 0).all()  # torch tensor input, abs by default


def test_input_x_gradient_matches_captum(tiny, runner) -> None:
    model, _, x, t = tiny
    ours = InputXGradient(runner).attribute(x.numpy(), target=t)
    assert _rel(ours, CInputXGradient(model).attribute(x, target=t.tolist())) <= TOL


@pytest.mark.parametrize("method", ["riemann_trapezoid", "gausslegendre", "riemann_left"])
def test_integrated_gradients_matches_captum(method: str, tiny, runner) -> None:
    model, _, x, t = tiny
    ours = IntegratedGradients(runner, batch_size=16).attribute(x.numpy(), target=t, n_steps=7, method=method)
    ref = CIntegratedGradients(model).attribute(x, target=t.tolist(), n_steps=7, method=method)
    assert _rel(ours, ref) <= TOL
    # completeness: sum of IG ~ f(x) - f(0) (loose: 7 steps)
    with torch.no_grad():
        delta = (model(x) - model(torch.zeros_like(x)))[np.arange(4), t].numpy()
    np.testing.assert_allclose(ours.reshape(4, -1).sum(1), delta, rtol=0.3, atol=0.05)


def test_smoothgrad_matches_captum_noise_tunnel(tiny, runner) -> None:
    model, _, x, t = tiny
    ours = SmoothGrad(runner).attribute(x.numpy(), target=t, nt_samples=4, stdevs=0.2, seed=11)
    torch.manual_seed(11)
    ref = NoiseTunnel(CSaliency(model)).attribute(x, nt_type="smoothgrad", nt_samples=4, stdevs=0.2, target=t.tolist())
    assert _rel(ours, ref) <= TOL
    # deterministic for a seed, different for another
    again = SmoothGrad(runner).attribute(x.numpy(), target=t, nt_samples=4, stdevs=0.2, seed=11)
    np.testing.assert_array_equal(ours, again)
    other = SmoothGrad(runner).attribute(x.numpy(), target=t, nt_samples=4, stdevs=0.2, seed=12)
    assert _rel(other, ours) > 1e-3


def test_smoothgrad_default_sigma_is_15_percent_of_the_input_range(tiny, runner) -> None:
    model, _, x, t = tiny
    x1, t1 = x[:1], t[:1]
    sigma = 0.15 * float(x1.max() - x1.min())
    ours = SmoothGrad(runner).attribute(x1.numpy(), target=t1, nt_samples=3, seed=5)
    torch.manual_seed(5)
    ref = NoiseTunnel(CSaliency(model)).attribute(
        x1, nt_type="smoothgrad", nt_samples=3, stdevs=sigma, target=[int(t1[0])]
    )
    assert _rel(ours, ref) <= TOL


def test_torch_module_backend_uses_captum(tiny, runner) -> None:
    model, _, x, t = tiny
    sal = Saliency(model)
    assert sal.backend == "torch" and sal.runner is None
    ours = sal.attribute(x.numpy(), target=t)
    np.testing.assert_allclose(ours, CSaliency(model).attribute(x, target=t.tolist()).numpy(), rtol=1e-6, atol=1e-9)
    assert _rel(Saliency(runner).attribute(x.numpy(), target=t), ours) <= TOL
    ig = IntegratedGradients(model).attribute(x.numpy(), target=t, n_steps=5)
    assert (
        _rel(ig, CIntegratedGradients(model).attribute(x, target=t.tolist(), n_steps=5, method="riemann_trapezoid"))
        < 1e-5
    )


# ------------------------------------------------------------------------------- inputs and targets
def test_uint8_images_are_preprocessed_with_imagenet_stats(tiny, runner) -> None:
    rng = np.random.default_rng(0)
    imgs = rng.integers(0, 256, (2, 32, 32, 3), dtype=np.uint8)
    sal = Saliency(runner)
    a = sal.attribute(imgs, target=[1, 2])
    b = sal.attribute(normalize_images(imgs, (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)), target=[1, 2])
    np.testing.assert_allclose(a, b, rtol=1e-6, atol=1e-9)


def test_target_none_is_top1_and_int_broadcasts(tiny, runner) -> None:
    _, _, x, _ = tiny
    sal = Saliency(runner)
    top1 = runner.forward(x.numpy()).argmax(1)
    np.testing.assert_array_equal(sal.attribute(x.numpy()), sal.attribute(x.numpy(), target=top1))
    np.testing.assert_array_equal(sal.attribute(x.numpy(), target=2), sal.attribute(x.numpy(), target=[2] * 4))


@pytest.mark.parametrize(
    ("inputs", "target", "match"),
    [
        ("ok", [1, 2], "one per input"),
        ("ok", [0, 1, 2, 10], r"\[0, 10\)"),
        ("ok", [0.5, 1, 2, 3], "int"),
        ("bad_shape", 1, "expected float"),
        ("bad_dtype", 1, "dtype"),
    ],
)
def test_bad_inputs_raise(inputs: str, target, match: str, tiny, runner) -> None:
    _, _, x, _ = tiny
    arr = {"ok": x.numpy(), "bad_shape": x.numpy()[:, :, :16], "bad_dtype": x.numpy().astype(np.int32)}[inputs]
    with pytest.raises(AttributionInputError, match=match):
        Saliency(runner).attribute(arr, target=target)


def test_bad_model_and_method_names() -> None:
    with pytest.raises(MemberError):
        Saliency(object())
    with pytest.raises(MemberError, match="does not exist"):
        Saliency("/nonexistent/model.xml")
    assert attribution_method("ig") is IntegratedGradients
    assert attribution_method("smoothgrad") is SmoothGrad
    with pytest.raises(ConfigError, match="valid methods"):
        attribution_method("gradcam")


# ------------------------------------------------------------------------------- members (runtime + export)
@pytest.fixture(scope="module")
def exported(tiny, tmp_path_factory) -> dict[str, object]:
    from ovdiv.export import export_model

    model = tiny[0]
    out = tmp_path_factory.mktemp("members")
    arts = export_model(model, out, name="tr", formats=("onnx", "ir"), precisions=("fp32",), input_size=(32, 32))
    baked = export_model(
        model,
        out / "baked",
        name="trb",
        formats=("ir",),
        precisions=("fp32",),
        input_size=(32, 32),
        bake_preprocessing=True,
    )
    return {"onnx": arts[0].path, "ir": arts[1].path, "baked": baked[0].path}


@pytest.mark.parametrize("kind", ["ir", "onnx", "baked"])
def test_member_saliency_matches_captum_on_torch(kind: str, tiny, exported) -> None:
    """Exported members (ovdiv.export, loaded with ovdiv.load_member) on uint8 images."""
    from ovdiv import load_member

    model = tiny[0]
    member = load_member(exported[kind])
    imgs = np.random.default_rng(1).integers(0, 256, (3, 32, 32, 3), dtype=np.uint8)
    t = np.array([2, 4, 6])
    ours = Saliency(member).attribute(imgs, target=t, abs=False)
    x = torch.from_numpy(member.preprocess(imgs))
    ref = CSaliency(model).attribute(x, target=t.tolist(), abs=False)
    assert _rel(ours, ref) <= TOL
    # a path works too (card next to it gives mean/std/input size)
    assert _rel(Saliency(str(exported[kind])).attribute(imgs, target=t, abs=False), ref) <= TOL


# ------------------------------------------------------------------------------- post-processing
def test_postprocess_hand_values_and_metrics_identity() -> None:
    a = np.array([[[[1.0, -3.0], [2.0, 0.0]], [[0.5, 1.0], [-4.0, 0.0]], [[0.0, 0.0], [0.0, 0.0]]]], np.float32)
    np.testing.assert_allclose(channel_max(np.abs(a)), [[[1.0, 3.0], [4.0, 0.0]]])
    np.testing.assert_allclose(postprocess(a, reduce="channel_max", norm="max"), [[[0.25, 0.75], [1.0, 0.0]]])
    np.testing.assert_allclose(postprocess(a, reduce="channel_max", norm="sum"), [[[0.125, 0.375], [0.5, 0.0]]])
    np.testing.assert_allclose(postprocess(a, abs=False), a)
    maps = np.random.default_rng(0).standard_normal((5, 3, 4, 4)).astype(np.float32)
    for norm in ("max", "sum", "none"):
        np.testing.assert_allclose(normalize_maps(maps, norm), normalize_attributions(maps[None], norm)[0], rtol=1e-6)
    zero = np.zeros((1, 3, 2, 2), np.float32)
    assert np.array_equal(normalize_maps(zero, "max"), zero)
    with pytest.raises(AttributionInputError):
        postprocess(maps, reduce="mean")


def test_torch_checkpoint_member_uses_captum(tiny, tmp_path) -> None:
    from ovdiv import load_member
    from ovdiv.models.checkpoint import save_checkpoint

    model = tiny[0]
    path = save_checkpoint(
        tmp_path / "tr.pt", model, arch="tiny_resnet", arch_args={}, num_classes=10, input_size=(32, 32)
    )
    member = load_member(path)
    sal = Saliency(member)
    assert sal.backend == "torch"
    imgs = np.random.default_rng(2).integers(0, 256, (2, 32, 32, 3), dtype=np.uint8)
    ours = sal.attribute(imgs, target=[1, 2], abs=False)
    ref = CSaliency(model).attribute(torch.from_numpy(member.preprocess(imgs)), target=[1, 2], abs=False)
    np.testing.assert_allclose(ours, ref.numpy(), rtol=1e-5, atol=1e-8)
