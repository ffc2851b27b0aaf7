"""Versions of ovdiv and the tools it drives, read from package metadata (no heavy imports)."""

from __future__ import annotations

from importlib import metadata

__all__ = ["__version__", "tool_versions"]

try:
    __version__ = metadata.version("ovdiv")
except metadata.PackageNotFoundError:  # running from a source tree that is not installed
    __version__ = "0.1.0+unknown"

_TOOLS = ("numpy", "torch", "torchvision", "openvino", "onnx", "onnxruntime", "nncf", "captum", "timm")


def tool_versions() -> dict[str, str]:
    """Map of tool name -> installed version (``"absent"`` when not installed), ovdiv included."""
    out = {"ovdiv": __version__}
    for name in _TOOLS:
        try:
            out[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            out[name] = "absent"
    return out
