"""Gradient attributions of deployed classifiers (OpenVINO IR / ONNX via VJP graphs) and torch models.

Public API::

    Saliency, IntegratedGradients, SmoothGrad, InputXGradient   # captum semantics, .attribute()
    VJPModel, as_torch_module                                   # compiled (x, u) -> (logits, grad)
    build_vjp_model, unsupported_ops, VJP_RULES, register_vjp   # the graph builder and its registry
    check_attributable                                          # fail before inference on ops without a rule
    postprocess, normalize_maps, channel_max                    # map post-processing (same math as D_att)
    check_gradients, GradientCheckReport                        # runtime VJP vs finite-difference check

See DESIGN.md §5 "How gradients of a deployed model are computed".
"""

from __future__ import annotations

from ovdiv.attribution.gradcheck import GRADIENT_CHECK_MODES, GradientCheckReport, OpCheck, check_gradients
from ovdiv.attribution.methods import (
    GradientAttribution,
    InputXGradient,
    IntegratedGradients,
    Saliency,
    SmoothGrad,
    attribution_method,
    check_attributable,
)
from ovdiv.attribution.postprocess import channel_max, normalize_maps, postprocess
from ovdiv.attribution.runner import OVTorchModule, VJPModel, as_torch_module, float_input_view, read_model
from ovdiv.attribution.vjp import VJPGraph, build_vjp_model, gradient_path, unsupported_ops
from ovdiv.attribution.vjp_registry import VJP_RULES, RuleContext, register_vjp

__all__ = [
    "GRADIENT_CHECK_MODES",
    "VJP_RULES",
    "GradientCheckReport",
    "OpCheck",
    "check_gradients",
    "GradientAttribution",
    "InputXGradient",
    "IntegratedGradients",
    "OVTorchModule",
    "RuleContext",
    "Saliency",
    "SmoothGrad",
    "VJPGraph",
    "VJPModel",
    "as_torch_module",
    "attribution_method",
    "build_vjp_model",
    "check_attributable",
    "channel_max",
    "float_input_view",
    "gradient_path",
    "normalize_maps",
    "postprocess",
    "read_model",
    "register_vjp",
    "unsupported_ops",
]
