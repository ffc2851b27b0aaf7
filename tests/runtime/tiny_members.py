"""Tiny deployed members for runtime and evaluate tests (built once per session).

Loaded by ``tests/conftest.py`` as module ``ovdiv_tests_tiny_members`` (pytest's importlib mode has no package imports between test folders).

Micro CNNs (a few thousand parameters) trained for a few steps on the ``demo:train`` split at 32x32,
exported to OpenVINO IR (``ov.convert_model``) and ONNX (``torch.onnx.export``), each with a model card.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from torch import nn

from ovdiv.cards import ModelCard, sha256_file

SIZE = 32
NUM_CLASSES = 10
# mean/std of the cards (deliberately not ImageNet's, so a card that is ignored shows up)
MEAN = (0.5, 0.45, 0.4)
STD = (0.25, 0.2, 0.3)


class MicroCNN(nn.Module):
    """conv-bn-relu-pool x2, conv-relu, global pool, linear."""

    def __init__(self, width: int = 8, num_classes: int = NUM_CLASSES) -> None:
        super().__init__()
        self.features = nn.Sequential(
            nn.Conv2d(3, width, 3, padding=1),
            nn.BatchNorm2d(width),
            nn.ReLU(),
            nn.MaxPool2d(2),
            nn.Conv2d(width, 2 * width, 3, padding=1),
            nn.ReLU(),
            nn.MaxPool2d(2),
            nn.Conv2d(2 * width, 2 * width, 3, padding=1),
            nn.ReLU(),
        )
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(2 * width, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(torch.flatten(self.pool(self.features(x)), 1))


class TwoHeads(MicroCNN):
    """A detection-like graph: two outputs."""

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:  # type: ignore[override]
        f = self.features(x)
        return self.fc(torch.flatten(self.pool(f), 1)), f


class NaNNet(MicroCNN):
    """Logits become NaN for every image (sqrt of a negative, data dependent so nothing folds it away)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = super().forward(x)
        return y + torch.sqrt(x.mean(dim=(1, 2, 3)).abs()[:, None] * 0.0 - 1.0)


def to_nchw(images: np.ndarray, mean=MEAN, std=STD) -> torch.Tensor:
    x = torch.from_numpy(images).permute(0, 3, 1, 2).float() / 255.0
    return (x - torch.tensor(mean).view(1, 3, 1, 1)) / torch.tensor(std).view(1, 3, 1, 1)


def train_micro(model: nn.Module, seed: int, steps: int, images: np.ndarray, labels: np.ndarray) -> nn.Module:
    g = torch.Generator().manual_seed(seed)
    opt = torch.optim.Adam(model.parameters(), lr=3e-3)
    x_all, y_all = to_nchw(images), torch.from_numpy(labels)
    model.train()
    for _ in range(steps):
        idx = torch.randint(0, len(x_all), (64,), generator=g)
        loss = nn.functional.cross_entropy(model(x_all[idx]), y_all[idx])
        opt.zero_grad()
        loss.backward()
        opt.step()
    return model.eval()


def export_ir(model: nn.Module, path: Path, *, card: bool = True, mean=MEAN, std=STD, name: str | None = None) -> Path:
    import openvino as ov

    path.parent.mkdir(parents=True, exist_ok=True)
    ovm = ov.convert_model(model.eval(), example_input=torch.zeros(1, 3, SIZE, SIZE))
    ovm.reshape([-1, 3, SIZE, SIZE])
    ov.save_model(ovm, str(path), compress_to_fp16=False)
    if card:
        num = model.fc.out_features if hasattr(model, "fc") else NUM_CLASSES
        ModelCard(
            name=name or path.stem,
            format="ir",
            num_classes=num,
            input_size=(SIZE, SIZE),
            mean=mean,
            std=std,
            sha256=sha256_file(path),
            params=sum(p.numel() for p in model.parameters()),
            macs=1000,
            architecture="micro_cnn",
        ).save(path.with_suffix(".json"))
    return path


def export_onnx(model: nn.Module, path: Path, *, card: bool = True, name: str | None = None) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    torch.onnx.export(
        model.eval(),
        (torch.zeros(2, 3, SIZE, SIZE),),
        str(path),
        input_names=["x"],
        output_names=["logits"],
        dynamic_axes={"x": {0: "n"}, "logits": {0: "n"}},
        dynamo=False,
    )
    if card:
        ModelCard(
            name=name or path.stem,
            format="onnx",
            num_classes=model.fc.out_features,
            input_size=(SIZE, SIZE),
            mean=MEAN,
            std=STD,
            sha256=sha256_file(path),
        ).save(path.with_suffix(".json"))
    return path


@dataclass
class TinyPool:
    root: Path
    names: list[str]
    modules: dict[str, nn.Module]
    ir: dict[str, Path]
    onnx: dict[str, Path]
    images: np.ndarray
    labels: np.ndarray
    extra: dict[str, Path] = field(default_factory=dict)

    def torch_logits(self, names: list[str] | None = None, images: np.ndarray | None = None) -> np.ndarray:
        imgs = self.images if images is None else images
        with torch.no_grad():
            return np.stack([self.modules[n](to_nchw(imgs)).numpy() for n in (names or self.names)])


def build_pool(root: Path, n_members: int = 5, n_test: int = 96) -> TinyPool:
    from ovdiv.data import make_demo

    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # tiny convs: one thread is faster than two on a shared 2-core machine
    train_x, train_y = make_demo(512, size=SIZE, seed=0, split="train")
    test_x, test_y = make_demo(n_test, size=SIZE, seed=0, split="test")
    names, modules, ir, onnx = [], {}, {}, {}
    for i in range(n_members):
        name = f"m{i}"
        torch.manual_seed(100 + i)
        model = train_micro(MicroCNN(width=4 + 2 * (i % 3)), seed=i, steps=30 + 5 * i, images=train_x, labels=train_y)
        names.append(name)
        modules[name] = model
        ir[name] = export_ir(model, root / "ir" / f"{name}.xml")
        onnx[name] = export_onnx(model, root / "onnx" / f"{name}.onnx")
    torch.set_num_threads(threads)
    return TinyPool(root, names, modules, ir, onnx, test_x, test_y)
