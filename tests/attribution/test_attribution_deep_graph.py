"""Very deep graphs: building the VJP graph must not depend on Python's recursion limit.

``tv:efficientnet_v2_l`` read from ONNX raised ``RecursionError``: a rule asked for the static value of a
``ShapeOf``-driven input, and the host-side evaluation walked the ``ShapeOf``'s ancestry (the whole network,
back to the Parameter) recursively, one Python frame per op.
"""

from __future__ import annotations

import sys

import numpy as np
import openvino as ov
import openvino.opset15 as ops

from ovdiv.attribution import build_vjp_model
from ovdiv.attribution.vjp_registry import RuleContext

DEPTH = 3000  # > sys.getrecursionlimit() (1000 by default): the recursive walk fails, the iterative one not


def _deep_chain(depth: int) -> ov.Model:
    """``x -> (h * 0.999 -> tanh) x depth/2 -> StridedSlice(h, [0, 1], ShapeOf(h))``: ends computed at run time."""
    x = ops.parameter([2, 5], np.float32, name="x")
    h = x.output(0)
    for i in range(depth):
        h = ops.tanh(h).output(0) if i % 2 else ops.multiply(h, ops.constant(np.float32(0.999))).output(0)
    begin = ops.constant(np.array([0, 1], np.int64))
    strides = ops.constant(np.array([1, 1], np.int64))
    y = ops.strided_slice(h, begin, ops.shape_of(h), strides, [0, 0], [0, 0])
    return ov.Model([ops.result(y)], [x], "deep_chain")


def test_vjp_of_a_graph_deeper_than_the_recursion_limit() -> None:
    assert sys.getrecursionlimit() < DEPTH
    graph = build_vjp_model(_deep_chain(DEPTH))
    compiled = ov.Core().compile_model(graph.model, "CPU", {"INFERENCE_PRECISION_HINT": "f32"})
    rng = np.random.default_rng(0)
    x = rng.normal(size=(2, 5)).astype(np.float32)
    u = rng.normal(size=(2, 4)).astype(np.float32)
    logits, grad = (np.asarray(t) for t in compiled([x, u]).values())
    # Independent reference: the chain's forward and backward in float64 numpy.
    h = x.astype(np.float64)
    acts = []
    for i in range(DEPTH):
        acts.append(h)
        h = np.tanh(h) if i % 2 else h * 0.999
    np.testing.assert_allclose(logits, h[:, 1:], rtol=1e-4, atol=1e-6)
    g = np.zeros_like(h)
    g[:, 1:] = u
    for i in reversed(range(DEPTH)):
        g = g * (1.0 - np.tanh(acts[i]) ** 2) if i % 2 else g * 0.999
    assert np.abs(g).max() > 1e-3
    np.testing.assert_allclose(grad, g, rtol=1e-3, atol=1e-6)


def test_static_value_of_a_deep_constant_subgraph() -> None:
    v = ops.constant(np.array([1.0, 2.0], np.float32)).output(0)
    for _ in range(DEPTH):
        v = ops.add(v, ops.constant(np.float32(1.0))).output(0)
    got = RuleContext().static_value(v)
    assert got is not None
    np.testing.assert_array_equal(got, np.array([1.0, 2.0], np.float32) + DEPTH)
