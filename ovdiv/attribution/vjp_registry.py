"""The VJP rule registry and the helpers every rule uses.

A *rule* turns the incoming gradients of one forward op into the gradients of its inputs, emitting
new OpenVINO opset nodes that read the forward tensors of the *same* graph (so one inference request
gives both the logits and the gradient):

.. code-block:: text

    rule(ctx, node, grads, needs) -> input_grads
      grads[k]  : Output | None, gradient w.r.t. node.output(k) (None: nothing flows back)
      needs[i]  : bool, input i depends differentiably on the wrt-Parameter
      input_grads[i] : Output | None, gradient w.r.t. node.input_value(i)

Rules are registered by op type name (``node.get_type_name()``), e.g. ``"Convolution"``. A rule may
have a ``check(node) -> str | None`` that rejects configurations it does not implement (the reason
string is reported by :func:`ovdiv.attribution.vjp.unsupported_ops`).
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import openvino as ov
import openvino.opset15 as ops

from ovdiv.errors import UnsupportedOpError

__all__ = [
    "VJP_RULES",
    "RuleContext",
    "VJPRule",
    "VJPRuleSpec",
    "register_vjp",
]

_log = logging.getLogger("ovdiv.attribution")

Grads = Sequence[ov.Output | None]
VJPRule = Callable[["RuleContext", ov.Node, Grads, Sequence[bool]], Sequence[ov.Output | None]]
CheckFn = Callable[[ov.Node], str | None]


@dataclass(frozen=True)
class VJPRuleSpec:
    """A registered rule: the VJP function and an optional support check."""

    fn: VJPRule
    check: CheckFn | None = None


VJP_RULES: dict[str, VJPRuleSpec] = {}
"""Op type name -> rule. Extend with :func:`register_vjp`."""


def register_vjp(*type_names: str, check: CheckFn | None = None) -> Callable[[VJPRule], VJPRule]:
    """Register ``fn`` as the VJP rule of the op types ``type_names``.

    Args:
        *type_names: OpenVINO op type names (``node.get_type_name()``), e.g. ``"Relu"``.
        check: Optional ``check(node) -> reason | None``; a reason marks that node unsupported.
    """

    def deco(fn: VJPRule) -> VJPRule:
        for name in type_names:
            VJP_RULES[name] = VJPRuleSpec(fn, check)
        return fn

    return deco


def _evaluate_output(out: ov.Output, cache: dict[tuple[str, int], np.ndarray | None]) -> np.ndarray | None:
    """Evaluate a Parameter-free subgraph on the host with ``Node.evaluate`` (None if impossible).

    Iterative post-order walk with an explicit stack: the subgraph above ``out`` can be as deep as the whole
    network (a ``ShapeOf`` of a late activation reaches back to the Parameter), deeper than Python's
    recursion limit on large ONNX graphs (``efficientnet_v2_l``).
    """
    root = (out.get_node().get_name(), out.get_index())
    stack: list[tuple[ov.Output, bool]] = [(out, False)]
    while stack:
        cur, expanded = stack.pop()
        node = cur.get_node()
        key = (node.get_name(), cur.get_index())
        if not expanded:
            if key in cache:
                continue
            cache[key] = None  # guards cycles / repeated failures
            tname = node.get_type_name()
            if tname == "Constant":
                cache[key] = np.asarray(node.get_data())
                continue
            if tname in ("Parameter", "ReadValue"):
                continue
            stack.append((cur, True))
            # Reversed so that inputs are evaluated in order (input 0 first), like the recursive walk did.
            for i in reversed(range(node.get_input_size())):
                src = node.input_value(i)
                if (src.get_node().get_name(), src.get_index()) not in cache:
                    stack.append((src, False))
            continue
        _evaluate_node(node, cache)
    return cache[root]


def _evaluate_node(node: ov.Node, cache: dict[tuple[str, int], np.ndarray | None]) -> None:
    """Evaluate ``node`` from its inputs' cached values; cache all its outputs (left None if impossible)."""
    inputs = []
    for i in range(node.get_input_size()):
        src = node.input_value(i)
        v = cache.get((src.get_node().get_name(), src.get_index()))
        if v is None:
            return
        inputs.append(ov.Tensor(np.ascontiguousarray(v)))
    outs = []
    for k in range(node.get_output_size()):
        pshape = node.get_output_partial_shape(k)
        if not pshape.is_static:
            return
        outs.append(ov.Tensor(node.get_output_element_type(k), pshape.to_shape()))
    try:
        ok = node.evaluate(outs, inputs)
    except Exception:  # evaluate() is not implemented for every op/type combination
        ok = False
    if not ok:
        return
    for k, t in enumerate(outs):
        cache[(node.get_name(), k)] = np.array(t.data, copy=True)


class RuleContext:
    """Helpers shared by the rules (static values, weight copies, broadcasting, constants).

    Args:
        folded: Friendly name -> node of a ``ConstantFolding``-ed clone of the forward model, used to
            read values of shape/axes subgraphs (e.g. ONNX ``Range(ShapeOf)``) that are constant only
            after folding.
    """

    def __init__(self, folded: dict[str, ov.Node] | None = None) -> None:
        self._folded = folded or {}
        self._eval_cache: dict[tuple[str, int], np.ndarray | None] = {}
        self._fresh_cache: dict[tuple[str, int], ov.Output] = {}

    # ------------------------------------------------------------------ static values
    def static_value(self, out: ov.Output) -> np.ndarray | None:
        """The value of ``out`` if it is known at build time (a constant subgraph), else None."""
        v = _evaluate_output(out, self._eval_cache)
        if v is not None:
            return v
        node = out.get_node()
        twin = self._folded.get(node.get_friendly_name())
        if twin is not None and twin.get_type_name() == "Constant" and out.get_index() == 0:
            return np.asarray(twin.get_data())
        return None

    def evaluate_constant(self, out: ov.Output) -> np.ndarray:
        """Value of a Parameter-free subgraph, computed on the host or (fallback) by the CPU plugin in f32."""
        v = self.static_value(out)
        if v is not None:
            return v
        model = ov.Model([ops.result(out)], [], "ovdiv_const_eval")
        compiled = ov.Core().compile_model(model, "CPU", {"INFERENCE_PRECISION_HINT": "f32"})
        return np.array(compiled({})[0], copy=True)

    def require_static(self, node: ov.Node, index: int, what: str) -> np.ndarray:
        """Static value of input ``index`` of ``node`` or :class:`UnsupportedOpError` naming it."""
        v = self.static_value(node.input_value(index))
        if v is None:
            raise UnsupportedOpError(
                f"{node.get_type_name()} '{node.get_friendly_name()}': its {what} (input {index}) is not a "
                "build-time constant, so no gradient rule applies",
                "reshape the model to a static [-1, C, H, W] input or re-export it",
            )
        return v

    # ------------------------------------------------------------------ shapes
    @staticmethod
    def dims(out: ov.Output) -> list[int | None]:
        """Static dims of ``out`` (None for dynamic ones). Requires a static rank."""
        ps = out.get_partial_shape()
        if ps.rank.is_dynamic:
            raise UnsupportedOpError(
                f"{out.get_node().get_type_name()} '{out.get_node().get_friendly_name()}' has a dynamic rank",
                "reshape the model to a static [-1, C, H, W] input",
            )
        return [d.get_length() if d.is_static else None for d in ps]

    def static_dims(self, out: ov.Output, node: ov.Node, what: str, skip: Sequence[int] = (0,)) -> list[int]:
        """Dims of ``out`` that must be static (except axes in ``skip``, returned as -1)."""
        dims = self.dims(out)
        res = []
        for i, d in enumerate(dims):
            if d is None and i not in skip:
                raise UnsupportedOpError(
                    f"{node.get_type_name()} '{node.get_friendly_name()}': {what} has dynamic dim {i} "
                    f"(shape {out.get_partial_shape()})",
                    "reshape the model to a static [-1, C, H, W] input (only the batch may be dynamic)",
                )
            res.append(-1 if d is None else d)
        return res

    # ------------------------------------------------------------------ constants
    @staticmethod
    def const(value: Any, like: ov.Output | None = None, dtype: Any = np.float32) -> ov.Output:
        """A Constant of ``value`` (element type of ``like`` when given)."""
        if like is not None:
            et = like.get_element_type()
            arr = np.asarray(value, dtype=np.float16 if et == ov.Type.f16 else np.float32)
            if et not in (ov.Type.f16, ov.Type.f32):
                return ops.convert(ops.constant(np.asarray(value, dtype=np.float32)), et).output(0)
            return ops.constant(arr).output(0)
        return ops.constant(np.asarray(value, dtype=dtype)).output(0)

    @staticmethod
    def i64(value: Any) -> ov.Output:
        """An int64 Constant."""
        return ops.constant(np.asarray(value, dtype=np.int64)).output(0)

    def zeros_like(self, out: ov.Output) -> ov.Output:
        """Zeros shaped like ``out`` (dynamic batch safe: ``Broadcast(0, ShapeOf(out))``)."""
        return ops.broadcast(self.const(0.0, like=out), ops.shape_of(out)).output(0)

    def fresh(self, out: ov.Output) -> ov.Output:
        """A *separate copy* of a constant-valued weight for use by a backward op.

        The CPU plugin gives silently wrong results when the same weight Constant feeds both a forward
        Convolution/MatMul and its backward op with square weights (feasibility study §6.1), so every
        backward weight gets its own Constant: a copy of a Constant, ``Convert(copy)`` of an f16
        decompression, or the folded f32 value of any other constant chain (int8 decompression,
        weight FakeQuantize).
        """
        key = (out.get_node().get_name(), out.get_index())
        if key in self._fresh_cache:
            return self._fresh_cache[key]
        node = out.get_node()
        res: ov.Output | None = None
        if node.get_type_name() == "Constant":
            res = ops.constant(np.array(node.get_data(), copy=True)).output(0)
        elif node.get_type_name() == "Convert" and node.input_value(0).get_node().get_type_name() == "Constant":
            src = node.input_value(0).get_node()
            res = ops.convert(ops.constant(np.array(src.get_data(), copy=True)), out.get_element_type()).output(0)
        else:
            v = self.static_value(out)
            if v is None:
                # Activation x activation: the forward tensor itself is the right operand.
                res = out
            else:
                res = ops.constant(np.array(v, copy=True)).output(0)
                if res.get_element_type() != out.get_element_type():
                    res = ops.convert(res, out.get_element_type()).output(0)
        self._fresh_cache[key] = res
        return res

    # ------------------------------------------------------------------ broadcasting
    def sum_to(self, g: ov.Output, target: ov.Output) -> ov.Output:
        """Reduce a numpy-broadcast gradient ``g`` back to the shape of ``target``.

        Leading axes that broadcasting added are summed away; aligned axes where ``target`` has a static
        1 and ``g`` does not are summed with keep_dims. A final ``Reshape(ShapeOf(target))`` makes the
        shape exact even with a dynamic batch.
        """
        gd = self.dims(g)
        td = self.dims(target)
        lead = len(gd) - len(td)
        out = g
        if lead > 0:
            out = ops.reduce_sum(out, self.i64(list(range(lead))), keep_dims=False).output(0)
            gd = gd[lead:]
        axes = [i for i, (a, b) in enumerate(zip(gd, td, strict=True)) if b == 1 and a != 1]
        if axes:
            out = ops.reduce_sum(out, self.i64(axes), keep_dims=True).output(0)
        if lead > 0 or axes or gd != td or any(d is None for d in td):
            out = ops.reshape(out, ops.shape_of(target), special_zero=False).output(0)
        return out

    @staticmethod
    def add_all(terms: Sequence[ov.Output]) -> ov.Output:
        """Sum of gradient contributions (fan-out)."""
        acc = terms[0]
        for t in terms[1:]:
            acc = ops.add(acc, t).output(0)
        return acc


def normalize_axes(axes: Sequence[int] | np.ndarray, rank: int) -> list[int]:
    """Map negative axes to ``[0, rank)`` and sort."""
    return sorted(int(a) + rank if int(a) < 0 else int(a) for a in np.asarray(axes).reshape(-1))
