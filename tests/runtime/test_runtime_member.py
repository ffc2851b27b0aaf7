"""ovdiv.runtime: backends agree with torch, card preprocessing, CKA feature taps, validation errors."""

from __future__ import annotations

import logging
import shutil

import numpy as np
import pytest
import torch
from ovdiv_tests_tiny_members import (  # type: ignore[import-not-found]
    MEAN,
    NUM_CLASSES,
    SIZE,
    STD,
    MicroCNN,
    NaNNet,
    TwoHeads,
    export_ir,
    export_onnx,
    to_nchw,
)
from PIL import Image

import ovdiv
from ovdiv.cards import ModelCard
from ovdiv.errors import ConfigError, DataError, MemberError
from ovdiv.runtime import check_members, load_member

ATOL = 2e-5


def test_backends_agree_with_torch(tiny_pool):
    name = tiny_pool.names[2]
    ref = tiny_pool.torch_logits([name])[0]
    members = [
        load_member(tiny_pool.ir[name]),
        load_member(tiny_pool.onnx[name]),  # ONNX read by OpenVINO
        load_member(tiny_pool.onnx[name], backend="onnxruntime"),
    ]
    for m in members:
        got = m.predict(tiny_pool.images, batch_size=7)  # uneven batches through the async queue
        assert got.dtype == np.float32 and got.shape == (len(tiny_pool.images), NUM_CLASSES)
        np.testing.assert_allclose(got, ref, atol=ATOL, err_msg=f"{m.backend} {m.path}")
        assert m.name == name and m.num_classes == NUM_CLASSES and m.input_size == (SIZE, SIZE)
    assert [m.backend.value for m in members] == ["openvino", "openvino", "onnxruntime"]


def test_public_lazy_export(tiny_pool):
    m = ovdiv.load_member(str(tiny_pool.ir["m0"]), device="cpu")
    assert m.device == "CPU"
    assert "Ensemble" in dir(ovdiv) or hasattr(ovdiv, "Ensemble")


def test_preprocess_uses_card_and_resizes(tiny_pool):
    m = load_member(tiny_pool.ir["m0"])
    x = m.preprocess(tiny_pool.images[:5])
    np.testing.assert_allclose(x, to_nchw(tiny_pool.images[:5], MEAN, STD).numpy(), atol=1e-6)
    # images of another size are resized (PIL bilinear) to the card's input size before normalisation
    big = np.stack(
        [np.asarray(Image.fromarray(im).resize((48, 48), Image.Resampling.NEAREST)) for im in tiny_pool.images[:4]]
    )
    expect = np.stack([np.asarray(Image.fromarray(im).resize((SIZE, SIZE), Image.Resampling.BILINEAR)) for im in big])
    np.testing.assert_allclose(m.preprocess(big), to_nchw(expect).numpy(), atol=1e-6)
    np.testing.assert_allclose(m.predict(big), m.predict(expect), atol=1e-6)
    # a single HWC image is a batch of one
    assert m.predict(tiny_pool.images[0]).shape == (1, NUM_CLASSES)
    with pytest.raises(DataError, match="uint8"):
        m.predict(tiny_pool.images.astype(np.float32))


def _torch_features(model: MicroCNN, images: np.ndarray) -> dict[str, np.ndarray]:
    x = to_nchw(images)
    out, acts = {}, []
    with torch.no_grad():
        h = x
        for layer in model.features:
            h = layer(h)
            acts.append(h)
        pen = torch.flatten(model.pool(h), 1)
    out["penultimate"] = pen.numpy()
    # last activation per resolution after the first conv: ReLU@32 (idx 2), ReLU@16 (5), ReLU@8 (8)
    for k, i in enumerate((2, 5, 8), start=1):
        out[f"stage{k}"] = acts[i].mean(dim=(2, 3)).numpy()
    return out


def test_features_match_torch(tiny_pool):
    name = "m1"
    expect = _torch_features(tiny_pool.modules[name], tiny_pool.images[:20])
    for m in (load_member(tiny_pool.ir[name]), load_member(tiny_pool.onnx[name], backend="onnxruntime")):
        feats = m.features(tiny_pool.images[:20], batch_size=8)
        assert list(feats) == ["penultimate", "stage1", "stage2", "stage3"], m.backend
        for key, ref in expect.items():
            np.testing.assert_allclose(feats[key], ref, atol=1e-4, err_msg=f"{m.backend} {key}")
        assert list(m.features(tiny_pool.images[:4], layers=["penultimate"])) == ["penultimate"]
        with pytest.raises(MemberError, match=r"no feature layer\(s\) \['stage9'\]"):
            m.features(tiny_pool.images[:4], layers=["stage9"])


def test_torch_checkpoint_member(tmp_path, tiny_pool):
    from ovdiv.models import create_model, save_checkpoint

    torch.manual_seed(0)
    model = create_model("tiny_resnext", num_classes=NUM_CLASSES).eval()
    ckpt = save_checkpoint(
        tmp_path / "rx.pt",
        model,
        arch="tiny_resnext",
        arch_args={},
        num_classes=NUM_CLASSES,
        input_size=(SIZE, SIZE),
        mean=MEAN,
        std=STD,
    )
    tm = load_member(ckpt)
    assert tm.backend.value == "torch" and not tm.card_found and tm.card.architecture == "tiny_resnext"
    ir = export_ir(model, tmp_path / "ir" / "rx.xml", name="rx")
    om = load_member(ir)
    imgs = tiny_pool.images[:16]
    np.testing.assert_allclose(tm.predict(imgs), om.predict(imgs), atol=1e-4)
    with torch.no_grad():
        np.testing.assert_allclose(tm.predict(imgs), model(to_nchw(imgs)).numpy(), atol=1e-5)
    ft, fo = tm.features(imgs), om.features(imgs)
    np.testing.assert_allclose(ft["penultimate"], fo["penultimate"], atol=1e-4)
    assert tm.read_model().outputs[0].get_partial_shape()[1].get_length() == NUM_CLASSES


def test_precision_and_provenance_recorded(tiny_pool):
    m = load_member(tiny_pool.ir["m0"], precision="f32")
    m.predict(tiny_pool.images[:2])
    info = m.info()
    assert info["inference_precision"] == "f32" and info["precision"] == "f32"
    assert info["sha256"] == m.sha256 and len(m.sha256) == 64 and info["weights_sha256"]
    assert info["runtime_version"].startswith("openvino")
    assert info["card"]["mean"] == list(MEAN)
    d = load_member(tiny_pool.ir["m0"], precision="model")
    d.predict(tiny_pool.images[:2])
    import openvino as ov

    default = ov.Core().get_property("CPU", "INFERENCE_PRECISION_HINT").to_string()
    assert d.inference_precision == default  # the plugin default is recorded, not assumed
    with pytest.raises(ConfigError, match="precision"):
        load_member(tiny_pool.ir["m0"], precision="int4")
    with pytest.raises(MemberError, match="onnxruntime backend runs precision"):
        load_member(tiny_pool.onnx["m0"], backend="onnxruntime", precision="bf16")
    with pytest.raises(MemberError, match="only on the openvino backend"):
        load_member(tiny_pool.ir["m0"], backend="onnxruntime")


def test_read_model_is_uncompiled_float_graph(tiny_pool):
    m = load_member(tiny_pool.ir["m0"])
    model = m.read_model()
    assert model.input(0).get_element_type().to_string() == "f32"
    assert len(model.outputs) == 1


def test_missing_card_defaults_with_warning(tmp_path, tiny_pool, caplog):
    p = export_ir(tiny_pool.modules["m0"], tmp_path / "nocard.xml", card=False)
    with caplog.at_level(logging.WARNING, logger="ovdiv.runtime"):
        m = load_member(p)
    assert "no model card" in caplog.text
    assert not m.card_found and m.card.input_size == (SIZE, SIZE) and m.num_classes == NUM_CLASSES
    assert m.card.mean == ModelCard(name="x", format="ir").mean  # ImageNet defaults
    x = tiny_pool.images[:4]
    with torch.no_grad():
        ref = tiny_pool.modules["m0"](to_nchw(x, m.card.mean, m.card.std)).numpy()
    np.testing.assert_allclose(m.predict(x), ref, atol=ATOL)


def test_validation_errors(tmp_path, tiny_pool):
    with pytest.raises(MemberError, match="does not exist"):
        load_member(tmp_path / "nope.xml")
    # missing .bin
    d = tmp_path / "nobin"
    d.mkdir()
    shutil.copy(tiny_pool.ir["m0"], d / "m0.xml")
    with pytest.raises(MemberError, match=r"weights file m0\.bin is missing"):
        load_member(d / "m0.xml")
    # an .xml that is not IR
    bad = tmp_path / "bad.xml"
    bad.write_text("<html><body>not a model</body></html>")
    bad.with_suffix(".bin").write_bytes(b"")
    with pytest.raises(MemberError, match="is not an OpenVINO IR"):
        load_member(bad)
    # detection-like: two outputs (IR and ONNX Runtime)
    torch.manual_seed(0)
    two = TwoHeads()
    for path, backend in (
        (export_ir(two, tmp_path / "det.xml", card=False), None),
        (export_onnx(two, tmp_path / "det.onnx", card=False), "onnxruntime"),
    ):
        with pytest.raises(MemberError, match=r"det .* has 2 outputs"):
            load_member(path, backend=backend)

    # one output that is not [N, C]
    class Spatial(MicroCNN):
        def forward(self, x):
            return self.features(x)

    with pytest.raises(MemberError, match=r"not \[N, C\] logits"):
        load_member(export_ir(Spatial(), tmp_path / "seg.xml", card=False))
    # unsupported file type
    (tmp_path / "w.h5").write_bytes(b"x")
    with pytest.raises(MemberError, match="unsupported file type"):
        load_member(tmp_path / "w.h5")


def test_check_members_class_counts_and_names(tmp_path, tiny_pool):
    torch.manual_seed(0)
    other = export_ir(MicroCNN(num_classes=7), tmp_path / "seven.xml")
    a, b = load_member(tiny_pool.ir["m0"]), load_member(other)
    with pytest.raises(MemberError, match=r"members m0 \(10 classes\) and seven \(7 classes\) disagree"):
        check_members([a, b])
    with pytest.raises(MemberError, match="two members are named 'm0'"):
        check_members([a, load_member(tiny_pool.onnx["m0"])])
    card = ModelCard.load(tiny_pool.ir["m0"].with_suffix(".json"))
    card.num_classes = 12
    d = tmp_path / "stale"
    d.mkdir()
    for suffix in (".xml", ".bin"):
        shutil.copy(tiny_pool.ir["m0"].with_suffix(suffix), d / f"m0{suffix}")
    card.save(d / "m0.json")
    with pytest.raises(MemberError, match=r"card m0\.json says 12 classes but the graph outputs 10"):
        load_member(d / "m0.xml")


def test_nan_logits_pass_through(tmp_path, tiny_pool):
    torch.manual_seed(0)
    m = load_member(export_ir(NaNNet(), tmp_path / "nan.xml"))
    assert np.isnan(m.predict(tiny_pool.images[:3])).all()  # the engine reports it per member


def test_baked_preprocessing_ir_takes_uint8(tmp_path, tiny_pool):
    import openvino as ov
    from openvino.preprocess import PrePostProcessor

    card = ModelCard.load(tiny_pool.ir["m0"].with_suffix(".json"))
    model = ov.Core().read_model(str(tiny_pool.ir["m0"]))
    ppp = PrePostProcessor(model)
    ppp.input(0).tensor().set_element_type(ov.Type.u8).set_layout(ov.Layout("NHWC"))
    ppp.input(0).model().set_layout(ov.Layout("NCHW"))
    ppp.input(0).preprocess().convert_element_type(ov.Type.f32).mean([255 * v for v in card.mean]).scale(
        [255 * v for v in card.std]
    )
    ov.save_model(ppp.build(), str(tmp_path / "baked.xml"), compress_to_fp16=False)
    baked = load_member(tmp_path / "baked.xml")  # no card: layout inferred from the uint8 input
    assert baked.baked and baked.card.layout == "NHWC_U8"
    assert baked.model_input(tiny_pool.images[:4]).dtype == np.uint8
    ref = tiny_pool.torch_logits(["m0"], tiny_pool.images[:24])[0]
    np.testing.assert_allclose(baked.predict(tiny_pool.images[:24]), ref, atol=ATOL)
    plain = load_member(tiny_pool.ir["m0"])
    np.testing.assert_allclose(
        baked.features(tiny_pool.images[:8])["stage2"], plain.features(tiny_pool.images[:8])["stage2"], atol=1e-5
    )
