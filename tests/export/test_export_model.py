from __future__ import annotations

import copy
import hashlib
import json

import numpy as np
import onnxruntime as ort
import openvino as ov
import pytest
import torch
from torch import nn

from ovdiv.cards import ModelCard, card_path_for
from ovdiv.data.synthetic import make_demo
from ovdiv.errors import CheckpointError, ConfigError, ExportMismatchError
from ovdiv.export import TOLERANCES, check_artifact, export_model, relative_error
from ovdiv.models import create_model, save_checkpoint

MEAN = (0.5, 0.45, 0.4)
STD = (0.25, 0.2, 0.3)


def _prep(images: np.ndarray, mean=MEAN, std=STD) -> np.ndarray:
    x = (images.astype(np.float32) / 255 - np.array(mean, np.float32)) / np.array(std, np.float32)
    return np.ascontiguousarray(x.transpose(0, 3, 1, 2))


def _torch(model: nn.Module, x: np.ndarray) -> np.ndarray:
    with torch.no_grad():
        return model.eval()(torch.from_numpy(x)).numpy()


@pytest.fixture(scope="module")
def demo_test() -> tuple[np.ndarray, np.ndarray]:
    return make_demo(64, split="test")


@pytest.fixture(scope="module")
def trained(tmp_path_factory, demo_test):
    """tiny_resnet trained for a few steps on demo:train, saved as an ovdiv checkpoint."""
    torch.manual_seed(0)
    imgs, labels = make_demo(256, split="train")
    x, y = torch.from_numpy(_prep(imgs)), torch.from_numpy(labels)
    model = create_model("tiny_resnet", num_classes=10)
    opt = torch.optim.Adam(model.parameters(), lr=3e-3)
    model.train()
    first = last = None
    for step in range(24):
        idx = torch.arange(step * 32, step * 32 + 32) % len(x)
        loss = nn.functional.cross_entropy(model(x[idx]), y[idx])
        opt.zero_grad()
        loss.backward()
        opt.step()
        first = loss.item() if first is None else first
        last = loss.item()
    assert last < first
    ckpt = tmp_path_factory.mktemp("ckpt") / "tiny.pt"
    recipe = {"name": "tiny", "epochs": 1}
    save_checkpoint(
        ckpt,
        model,
        arch="tiny_resnet",
        arch_args={},
        num_classes=10,
        input_size=(64, 64),
        mean=MEAN,
        std=STD,
        recipe=recipe,
        extra={"class_names": [f"c{i}" for i in range(10)]},
    )
    return ckpt, model.eval()


@pytest.fixture(scope="module")
def exported(tmp_path_factory, trained, demo_test):
    ckpt, _ = trained
    out = tmp_path_factory.mktemp("export")
    events = []
    arts = export_model(
        ckpt,
        out,
        formats=("onnx", "ir"),
        precisions=("fp32", "fp16", "int8"),
        calib=demo_test,
        calib_size=64,
        progress=events.append,
    )
    return out, arts, events


def test_export_writes_checked_artifacts_and_cards(exported, trained) -> None:
    out, arts, events = exported
    _, model = trained
    assert [(a.path.name, a.format, a.precision) for a in arts] == [
        ("tiny.onnx", "onnx", "fp32"),
        ("tiny_fp32.xml", "ir", "fp32"),
        ("tiny_fp16.xml", "ir", "fp16"),
        ("tiny_int8.xml", "ir", "int8"),
    ]
    names = sorted(p.name for p in out.iterdir())
    assert names == sorted(
        [
            "tiny.onnx",
            "tiny.json",
            "tiny_fp32.xml",
            "tiny_fp32.bin",
            "tiny_fp32.json",
            "tiny_fp16.xml",
            "tiny_fp16.bin",
            "tiny_fp16.json",
            "tiny_int8.xml",
            "tiny_int8.bin",
            "tiny_int8.json",
        ]
    )  # nothing else, no temp folder left behind
    assert events[-1].completed == events[-1].total == 4
    for a in arts:
        assert a.check["passed"] and a.card.export_check == a.check
        card = ModelCard.load(card_path_for(a.path))
        assert card == a.card  # round trip through JSON
        assert card.sha256 == hashlib.sha256(a.path.read_bytes()).hexdigest()
        if a.format == "ir":
            assert card.extra["bin_sha256"] == hashlib.sha256(a.path.with_suffix(".bin").read_bytes()).hexdigest()
        assert (card.input_size, card.layout, card.mean, card.std) == ((64, 64), "NCHW", MEAN, STD)
        assert (card.num_classes, card.architecture, card.arch_args) == (10, "tiny_resnet", {})
        assert card.recipe == {"name": "tiny", "epochs": 1} and card.class_names[3] == "c3"
        assert card.params == sum(p.numel() for p in model.parameters()) and card.macs > 1e6
        assert card.versions["openvino"] != "absent" and card.versions["torch"] != "absent"
        assert card.precision == a.precision and not card.baked_preprocessing
        assert card.extra["source_checkpoint_sha256"]
    fp32, fp16, int8 = arts[1].check, arts[2].check, arts[3].check
    assert arts[0].check["rel_err"] <= 1e-4 and fp32["rel_err"] <= 1e-4 and fp32["tolerance"] == TOLERANCES["fp32"]
    assert 1e-6 < fp16["rel_err"] <= TOLERANCES["fp16"]  # weights really rounded to fp16
    assert int8["metric"] == "top1_agreement" and int8["top1_agreement"] >= 0.9 and int8["n_images"] == 64
    assert arts[3].card.extra["int8"]["subset_size"] == 64


def test_artifacts_match_torch_in_independent_runtimes(exported, trained) -> None:
    out, _, _ = exported
    _, model = trained
    rng = np.random.default_rng(5)
    core = ov.Core()
    for n in (3, 5):  # dynamic batch
        x = _prep(rng.integers(0, 256, (n, 64, 64, 3), dtype=np.uint8))
        ref = _torch(model, x)
        sess = ort.InferenceSession(str(out / "tiny.onnx"), providers=["CPUExecutionProvider"])
        y = sess.run(None, {sess.get_inputs()[0].name: x})[0]
        assert np.abs(y - ref).max() <= 1e-4 * np.abs(ref).max()
        compiled = core.compile_model(str(out / "tiny_fp32.xml"), "CPU", {"INFERENCE_PRECISION_HINT": "f32"})
        y = compiled(x)[0]
        assert np.abs(y - ref).max() <= 1e-4 * np.abs(ref).max()
    m = core.read_model(str(out / "tiny_fp32.xml"))
    assert m.inputs[0].partial_shape.to_string() == "[?,3,64,64]"


def test_fp16_and_int8_are_really_compressed(exported) -> None:
    out, _, _ = exported
    core = ov.Core()
    size = {p: (out / f"tiny_{p}.bin").stat().st_size for p in ("fp32", "fp16", "int8")}
    assert size["fp16"] < 0.6 * size["fp32"]
    types = lambda p: {op.get_type_name() for op in core.read_model(str(out / f"tiny_{p}.xml")).get_ops()}  # noqa: E731
    assert "FakeQuantize" in types("int8") and "FakeQuantize" not in types("fp32")
    consts = [op for op in core.read_model(str(out / "tiny_fp16.xml")).get_ops() if op.get_type_name() == "Constant"]
    assert any(c.get_output_element_type(0) == ov.Type.f16 for c in consts)


def test_tampered_bin_is_caught(exported, trained, tmp_path) -> None:
    out, _, _ = exported
    _, model = trained
    for suffix in (".xml", ".bin", ".json"):
        (tmp_path / f"t{suffix}").write_bytes((out / f"tiny_fp32{suffix}").read_bytes())
    assert check_artifact(tmp_path / "t.xml", model)["passed"]  # untouched copy passes
    weights = np.fromfile(tmp_path / "t.bin", dtype=np.float32)
    weights[: len(weights) // 2] *= 1.5
    weights.tofile(tmp_path / "t.bin")
    with pytest.raises(ExportMismatchError, match="fp32 outputs differ from torch by rel_err"):
        check_artifact(tmp_path / "t.xml", model)


def test_weights_changed_after_export_are_caught(exported, trained, demo_test) -> None:
    out, _, _ = exported
    _, model = trained
    changed = copy.deepcopy(model)
    with torch.no_grad():
        changed.fc.weight.add_(0.05)
    for art in ("tiny.onnx", "tiny_fp16.xml"):
        assert check_artifact(out / art, model, demo_test[0][:16])["passed"]
        with pytest.raises(ExportMismatchError):
            check_artifact(out / art, changed, demo_test[0][:16])


def test_int8_minimum_agreement_is_enforced(exported, trained, demo_test) -> None:
    out, _, _ = exported
    _, model = trained
    rec = check_artifact(out / "tiny_int8.xml", model, demo_test[0], min_int8_agreement=0.5)
    assert rec["passed"] and rec["min_agreement"] == 0.5
    with pytest.raises(ExportMismatchError, match="INT8 top-1 agreement"):
        check_artifact(out / "tiny_int8.xml", model, demo_test[0], min_int8_agreement=1.01)


def test_mismatch_during_export_leaves_nothing(trained, tmp_path, monkeypatch) -> None:
    from ovdiv.export import openvino_format

    _, model = trained
    other = create_model("tiny_resnet", num_classes=10)  # different weights
    real = openvino_format.convert_to_openvino
    monkeypatch.setattr(openvino_format, "convert_to_openvino", lambda m, x: real(other.eval(), x))
    out = tmp_path / "out"
    with pytest.raises(ExportMismatchError):
        export_model(model, out, name="m", formats=("onnx", "ir"), input_size=(64, 64), onnx_exporter="torchscript")
    assert list(out.iterdir()) == []  # the (good) ONNX was not published either


def test_bake_preprocessing(trained, tmp_path, demo_test) -> None:
    _, model = trained
    arts = export_model(
        model,
        tmp_path,
        name="baked",
        formats=("onnx", "ir"),
        precisions=("fp32", "fp16"),
        input_size=(64, 64),
        mean=MEAN,
        std=STD,
        bake_preprocessing=True,
        calib=demo_test,
        onnx_exporter="torchscript",
    )
    imgs = demo_test[0][:6]
    ref = _torch(model, _prep(imgs))
    assert [a.path.name for a in arts] == ["baked.onnx", "baked_fp32.xml", "baked_fp16.xml"]
    for a in arts:
        assert a.card.layout == "NHWC_U8" and a.card.baked_preprocessing and a.check["input"] == "uint8 NHWC"
        assert a.check["n_images"] == 32 and a.check["images"] == "given"
    compiled = ov.Core().compile_model(str(tmp_path / "baked_fp32.xml"), "CPU", {"INFERENCE_PRECISION_HINT": "f32"})
    assert compiled.inputs[0].element_type == ov.Type.u8
    assert compiled.inputs[0].partial_shape.to_string() == "[?,64,64,3]"
    y = compiled(imgs)[0]
    assert np.abs(y - ref).max() <= 1e-4 * np.abs(ref).max()
    sess = ort.InferenceSession(str(tmp_path / "baked.onnx"), providers=["CPUExecutionProvider"])
    y = sess.run(None, {sess.get_inputs()[0].name: imgs})[0]
    assert np.abs(y - ref).max() <= 1e-4 * np.abs(ref).max()
    # the normalisation really is inside the graph: a card claiming other statistics fails the check
    card = ModelCard.load(tmp_path / "baked_fp32.json")
    card.layout, card.baked_preprocessing = "NCHW", False
    with pytest.raises(Exception):  # noqa: B017 - float input into a uint8 graph, or wrong numbers
        check_artifact(tmp_path / "baked_fp32.xml", model, imgs, card=card)


def test_export_argument_errors(trained, tmp_path, demo_test) -> None:
    ckpt, model = trained
    with pytest.raises(ConfigError, match="INT8 export needs calibration images"):
        export_model(ckpt, tmp_path, formats="ir", precisions=("fp32", "int8"))
    with pytest.raises(ConfigError, match="invalid export format"):
        export_model(ckpt, tmp_path, formats=("tflite",))
    with pytest.raises(ConfigError, match="invalid precision"):
        export_model(ckpt, tmp_path, precisions=("bf16",))
    with pytest.raises(ConfigError, match="ONNX export is fp32 only"):
        export_model(ckpt, tmp_path, formats="onnx", precisions="fp16")
    with pytest.raises(ConfigError, match="input_size is required"):
        export_model(model, tmp_path, formats="onnx")
    with pytest.raises(ConfigError, match="contradicts checkpoint"):
        export_model(ckpt, tmp_path, num_classes=3)
    with pytest.raises(ConfigError, match="uint8 RGB images"):
        export_model(ckpt, tmp_path, formats="ir", precisions="int8", calib=demo_test[0].astype(np.float32))
    with pytest.raises(CheckpointError, match="does not exist"):
        export_model(tmp_path / "missing.pt", tmp_path)
    assert list(tmp_path.iterdir()) == []


def test_relative_error_definition() -> None:
    ref = np.array([[1.0, -4.0], [2.0, 0.0]])
    y = np.array([[1.5, -4.0], [2.0, 0.2]])
    assert relative_error(y, ref) == pytest.approx(0.5 / 4.0)
    assert relative_error(np.zeros((1, 2)), np.zeros((1, 2))) == 0.0
    with pytest.raises(ExportMismatchError, match="shape"):
        relative_error(np.zeros((2, 3)), np.zeros((2, 2)))
    assert json.loads(json.dumps(TOLERANCES)) == {"fp32": 1e-4, "fp16": 1e-2}
