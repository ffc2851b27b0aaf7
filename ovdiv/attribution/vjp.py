r"""Build the VJP model of a deployed classifier: ``g: (x, u) -> (logits, u^T d logits / d x)``.

OpenVINO has no autodiff, so ovdiv differentiates the graph itself (DESIGN.md §5):

1. **Gradient path.** A forward sweep over ``model.get_ordered_ops()`` (topological order) marks every
   output that depends differentiably on the image Parameter (real element type, fed by a dependent
   input). Shape subgraphs, comparisons, integer outputs and constant subgraphs (f16
   ``Constant -> Convert``, int8 ``Constant -> Convert -> Multiply``, weight FakeQuantize) never need a
   gradient. A reverse sweep keeps only the ops between the Parameter and the logits.
2. **Reverse sweep.** Gradients reaching an output from several consumers (residuals) are summed; each
   op's rule (:mod:`ovdiv.attribution.vjp_registry`) emits OpenVINO opset nodes that read the incoming
   gradient and the forward tensors of the *same* graph, so one request yields logits and gradient.
3. ``ov.Model([logits, grad_x], [x, u])`` with ``u`` a new Parameter shaped like the logits (dynamic
   batch kept).

Before anything is built, :func:`unsupported_ops` lists every op on the gradient path without a rule;
:func:`build_vjp_model` raises :class:`~ovdiv.errors.UnsupportedOpError` naming them.
"""

from __future__ import annotations

import logging
from collections import Counter
from dataclasses import dataclass, field

import openvino as ov
import openvino.opset15 as ops
from openvino import passes

# Importing the rule modules registers their rules.
from ovdiv.attribution import (  # noqa: F401
    vjp_rules_elementwise,
    vjp_rules_nn,
    vjp_rules_resample,
    vjp_rules_shape,
    vjp_rules_transformer,
)
from ovdiv.attribution.vjp_registry import VJP_RULES, RuleContext
from ovdiv.errors import MemberError, UnsupportedOpError

__all__ = ["VJPGraph", "build_vjp_model", "gradient_path", "unsupported_ops"]

_log = logging.getLogger("ovdiv.attribution")

_OutKey = tuple[str, int]
_NO_RULE_NEEDED = {"Parameter", "Result", "Constant"}


def _key(out: ov.Output) -> _OutKey:
    return (out.get_node().get_name(), out.get_index())


def _image_parameter(model: ov.Model, wrt: int) -> ov.Node:
    params = model.get_parameters()
    if not 0 <= wrt < len(params):
        raise MemberError(f"model has {len(params)} input(s); cannot differentiate w.r.t. input {wrt}")
    p = params[wrt]
    if not p.get_element_type().is_real():
        raise MemberError(
            f"model input '{p.get_friendly_name()}' is {p.get_element_type()}, not a float tensor",
            "attribution needs a float NCHW input (export without baked uint8 preprocessing)",
        )
    return p


@dataclass
class GradientPath:
    """Which ops lie between the image Parameter and the logits.

    Attributes:
        ops: Ops on the gradient path, in topological order (Parameter/Constant/Result excluded).
        dependent: Output keys ``(node name, index)`` that depend differentiably on the input.
        logits: The logits output (source of the chosen Result).
    """

    ops: list[ov.Node]
    dependent: set[_OutKey]
    logits: ov.Output
    param: ov.Node
    needs: dict[str, list[bool]] = field(default_factory=dict)


def gradient_path(model: ov.Model, *, output: int = 0, wrt: int = 0) -> GradientPath:
    """Find the ops whose outputs depend on input ``wrt`` and reach result ``output``.

    Args:
        model: The forward model ``f: x -> logits``.
        output: Index of the Result holding the logits.
        wrt: Index of the image Parameter.

    Returns:
        The :class:`GradientPath`.
    """
    results = model.get_results()
    if not 0 <= output < len(results):
        raise MemberError(f"model has {len(results)} output(s); output {output} does not exist")
    param = _image_parameter(model, wrt)
    logits = results[output].input_value(0)
    ordered = model.get_ordered_ops()
    dependent: set[_OutKey] = {(param.get_name(), 0)}
    for node in ordered:
        if node.get_type_name() in _NO_RULE_NEEDED:
            continue
        if any(_key(node.input_value(i)) in dependent for i in range(node.get_input_size())):
            for k in range(node.get_output_size()):
                if node.get_output_element_type(k).is_real():
                    dependent.add((node.get_name(), k))
    # Reverse reachability from the logits through dependent edges.
    reach: set[str] = set()
    if _key(logits) in dependent:
        stack = [logits.get_node()]
        while stack:
            n = stack.pop()
            if n.get_name() in reach or n.get_type_name() in _NO_RULE_NEEDED:
                continue
            reach.add(n.get_name())
            for i in range(n.get_input_size()):
                src = n.input_value(i)
                if _key(src) in dependent:
                    stack.append(src.get_node())
    path = [n for n in ordered if n.get_name() in reach]
    needs = {n.get_name(): [_key(n.input_value(i)) in dependent for i in range(n.get_input_size())] for n in path}
    return GradientPath(path, dependent, logits, param, needs)


def unsupported_ops(model: ov.Model, *, output: int = 0, wrt: int = 0) -> list[str]:
    """Op types on the gradient path that have no VJP rule (or a configuration the rule rejects).

    Args:
        model: The forward model.
        output: Index of the logits Result.
        wrt: Index of the image Parameter.

    Returns:
        Sorted list of strings: ``"Type"`` for a missing rule, ``"Type (reason)"`` for a rejected
        configuration, with a ``" x<count>"`` suffix when the op occurs more than once. Empty when the
        model is supported.
    """
    gp = gradient_path(model, output=output, wrt=wrt)
    bad: Counter[str] = Counter()
    for node in gp.ops:
        spec = VJP_RULES.get(node.get_type_name())
        if spec is None:
            bad[node.get_type_name()] += 1
        elif spec.check is not None and (reason := spec.check(node)) is not None:
            bad[f"{node.get_type_name()} ({reason})"] += 1
    return sorted(f"{k} x{v}" if v > 1 else k for k, v in bad.items())


def _folded_twin(model: ov.Model) -> dict[str, ov.Node]:
    """Friendly name -> node of a ConstantFolding-ed clone (values of ONNX shape/axes subgraphs).

    A blanket ConstantFolding of the *working* model is deliberately avoided: it would also fold f16/int8
    weight-decompression subgraphs and change how the plugin runs the forward.
    """
    twin = model.clone()
    pm = passes.Manager()
    pm.register_pass(passes.ConstantFolding())
    pm.run_passes(twin)
    table: dict[str, ov.Node] = {}
    dup: set[str] = set()
    for n in twin.get_ordered_ops():
        name = n.get_friendly_name()
        if name in table:
            dup.add(name)
        table[name] = n
    for name in dup:
        table.pop(name, None)
    return table


@dataclass
class VJPGraph:
    """The built VJP model and what went into it.

    Attributes:
        model: ``ov.Model`` with inputs ``[x, u]`` and outputs ``[logits, grad_x]``.
        forward: The (cloned) forward model the VJP graph was built on.
        op_counts: Op type -> count on the gradient path.
    """

    model: ov.Model
    forward: ov.Model
    op_counts: dict[str, int]


def build_vjp_model(model: ov.Model, *, output: int = 0, wrt: int = 0) -> VJPGraph:
    r"""Build ``g: (x, u) -> (logits, u^T \partial logits / \partial x)`` from ``f: x -> logits``.

    Args:
        model: Forward model read with ``openvino.Core().read_model`` (.xml or .onnx). C/H/W of the
            input must be static (the batch may be dynamic); it is not modified (a clone is used).
        output: Index of the logits Result.
        wrt: Index of the image Parameter.

    Returns:
        :class:`VJPGraph`; its ``model`` takes ``x`` (like the forward input) and ``u`` (shaped like the
        logits, e.g. one-hot targets ``(N, C)``) and returns ``(logits (N, C), grad_x (N, 3, H, W))``.

    Raises:
        UnsupportedOpError: An op on the gradient path has no rule (all offending types listed), or a
            rule needs a static value/shape the model does not provide.
    """
    fwd = model.clone()
    bad = unsupported_ops(fwd, output=output, wrt=wrt)
    if bad:
        raise UnsupportedOpError(
            f"no gradient (VJP) rule for op(s) on the gradient path: {', '.join(bad)}",
            "these ops cannot be differentiated by ovdiv: rerun with --attribution none (attribution='none') "
            "or use a torch checkpoint of the member",
        )
    gp = gradient_path(fwd, output=output, wrt=wrt)
    ctx = RuleContext(_folded_twin(fwd))
    logits = gp.logits
    u = ops.parameter(logits.get_partial_shape(), logits.get_element_type(), name="ovdiv_vjp_u")
    pending: dict[_OutKey, list[ov.Output]] = {}
    if _key(logits) in gp.dependent:
        pending[_key(logits)] = [u.output(0)]
    for node in reversed(gp.ops):
        grads: list[ov.Output | None] = []
        for k in range(node.get_output_size()):
            terms = pending.pop((node.get_name(), k), None)
            grads.append(RuleContext.add_all(terms) if terms else None)
        if all(g is None for g in grads):
            continue
        spec = VJP_RULES[node.get_type_name()]
        needs = gp.needs[node.get_name()]
        in_grads = spec.fn(ctx, node, grads, needs)
        for i, gi in enumerate(in_grads):
            if gi is None or not needs[i]:
                continue
            pending.setdefault(_key(node.input_value(i)), []).append(gi)
    terms = pending.pop((gp.param.get_name(), 0), None)
    x = gp.param.output(0)
    grad = RuleContext.add_all(terms) if terms else ctx.zeros_like(x)
    if grad.get_element_type() != x.get_element_type():
        grad = ops.convert(grad, x.get_element_type()).output(0)
    r_logits = ops.result(logits)
    r_grad = ops.result(grad)
    vjp = ov.Model([r_logits, r_grad], [gp.param, u], "ovdiv_vjp")
    counts = Counter(n.get_type_name() for n in gp.ops)
    _log.debug("built VJP model over %d ops: %s", len(gp.ops), dict(counts))
    return VJPGraph(vjp, fwd, dict(counts))
