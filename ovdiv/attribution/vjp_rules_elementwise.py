"""VJP rules of elementwise ops: activations, arithmetic with numpy broadcasting, FakeQuantize (STE).

Notation: ``g`` incoming gradient, ``x`` the op's input, ``y`` its output. Tie conventions follow
torch autograd (e.g. ``Relu'(0) = 0``, ``Clamp`` strict like ``hardtanh``).
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np
import openvino as ov
import openvino.opset15 as ops

from ovdiv.attribution.vjp_registry import Grads, RuleContext, register_vjp

__all__: list[str] = []


def _g(grads: Grads) -> ov.Output:
    g = grads[0]
    if g is None:  # pragma: no cover - the builder only calls rules with a gradient
        raise RuntimeError("rule called without an incoming gradient")
    return g


def _mul(a: ov.Output, b: ov.Output) -> ov.Output:
    return ops.multiply(a, b).output(0)


def _select(mask: ov.Output, g: ov.Output, ctx: RuleContext) -> ov.Output:
    return ops.select(mask, g, ctx.const(0.0, like=g)).output(0)


# ---------------------------------------------------------------------------------------- unary
@register_vjp("Relu")
def _relu(ctx: RuleContext, node: ov.Node, grads: Grads, needs: Sequence[bool]) -> list[ov.Output | None]:
    # Mask from the *output* (y > 0 <=> x > 0, torch's convention too). Reading the input would tap
    # the middle of a fused chain (Conv -> FakeQuantize -> Add -> Relu) that the CPU plugin computes
    # differently for extra consumers (observed 10 % gradient error on an NNCF INT8 ResNet).
    y = node.output(0)
    return [_select(ops.greater(y, ctx.const(0.0, like=y)).output(0), _g(grads), ctx)]


@register_vjp("Clamp")
def _clamp(ctx: RuleContext, node: ov.Node, grads: Grads, needs: Sequence[bool]) -> list[ov.Output | None]:
    # hardtanh/ReLU6 convention: zero gradient at and beyond the bounds. lo < x < hi <=> lo < y < hi, and the
    # output is read for the same reason as in the Relu rule.
    y = node.output(0)
    a = node.get_attributes()
    lo, hi = float(a["min"]), float(a["max"])
    mask = ops.logical_and(ops.greater(y, ctx.const(lo, like=y)), ops.less(y, ctx.const(hi, like=y))).output(0)
    return [_select(mask, _g(grads), ctx)]


@register_vjp("Sigmoid")
def _sigmoid(ctx: RuleContext, node: ov.Node, grads: Grads, needs: Sequence[bool]) -> list[ov.Output | None]:
    y = node.output(0)
    return [_mul(_g(grads), _mul(y, ops.subtract(ctx.const(1.0, like=y), y).output(0)))]


@register_vjp("Tanh")
def _tanh(ctx: RuleContext, node: ov.Node, grads: Grads, needs: Sequence[bool]) -> list[ov.Output | None]:
    y = node.output(0)
    return [_mul(_g(grads), ops.subtract(ctx.const(1.0, like=y), _mul(y, y)).output(0))]


@register_vjp("Exp")
def _exp(ctx: RuleContext, node: ov.Node, grads: Grads, needs: Sequence[bool]) -> list[ov.Output | None]:
    return [_mul(_g(grads), node.output(0))]


@register_vjp("Log")
def _log(ctx: RuleContext, node: ov.Node, grads: Grads, needs: Sequence[bool]) -> list[ov.Output | None]:
    return [ops.divide(_g(grads), node.input_value(0)).output(0)]


@register_vjp("Sqrt")
def _sqrt(ctx: RuleContext, node: ov.Node, grads: Grads, needs: Sequence[bool]) -> list[ov.Output | None]:
    y = node.output(0)
    return [ops.divide(_g(grads), _mul(y, ctx.const(2.0, like=y))).output(0)]


@register_vjp("Erf")
def _erf(ctx: RuleContext, node: ov.Node, grads: Grads, needs: Sequence[bool]) -> list[ov.Output | None]:
    # d erf(x)/dx = 2/sqrt(pi) * exp(-x^2)
    x = node.input_value(0)
    e = ops.exp(ops.negative(_mul(x, x))).output(0)
    return [_mul(_g(grads), _mul(e, ctx.const(2.0 / math.sqrt(math.pi), like=x)))]


@register_vjp("Abs")
def _abs(ctx: RuleContext, node: ov.Node, grads: Grads, needs: Sequence[bool]) -> list[ov.Output | None]:
    return [_mul(_g(grads), ops.sign(node.input_value(0)).output(0))]


@register_vjp("Negative")
def _neg(ctx: RuleContext, node: ov.Node, grads: Grads, needs: Sequence[bool]) -> list[ov.Output | None]:
    return [ops.negative(_g(grads)).output(0)]


@register_vjp("Round", "Floor", "Ceiling", "Sign")
def _zero_grad(ctx: RuleContext, node: ov.Node, grads: Grads, needs: Sequence[bool]) -> list[ov.Output | None]:
    # Piecewise constant: zero gradient almost everywhere (torch convention).
    return [None] * node.get_input_size()


@register_vjp("HSwish")
def _hswish(ctx: RuleContext, node: ov.Node, grads: Grads, needs: Sequence[bool]) -> list[ov.Output | None]:
    # torch hardswish_backward: x < -3 -> 0; x <= 3 -> g (x/3 + 0.5); else g
    x, g = node.input_value(0), _g(grads)
    mid = ops.add(ops.divide(x, ctx.const(3.0, like=x)), ctx.const(0.5, like=x)).output(0)
    inner = ops.select(ops.less_equal(x, ctx.const(3.0, like=x)), mid, ctx.const(1.0, like=x)).output(0)
    slope = ops.select(ops.less(x, ctx.const(-3.0, like=x)), ctx.const(0.0, like=x), inner).output(0)
    return [_mul(g, slope)]


@register_vjp("HSigmoid")
def _hsigmoid(ctx: RuleContext, node: ov.Node, grads: Grads, needs: Sequence[bool]) -> list[ov.Output | None]:
    # torch hardsigmoid_backward: (-3 < x < 3) ? g / 6 : 0
    x, g = node.input_value(0), _g(grads)
    mask = ops.logical_and(ops.greater(x, ctx.const(-3.0, like=x)), ops.less(x, ctx.const(3.0, like=x))).output(0)
    return [_select(mask, _mul(g, ctx.const(1.0 / 6.0, like=g)), ctx)]


@register_vjp("HardSigmoid")
def _hard_sigmoid(ctx: RuleContext, node: ov.Node, grads: Grads, needs: Sequence[bool]) -> list[ov.Output | None]:
    # y = max(0, min(1, alpha x + beta)); dy/dx = alpha strictly inside (0, 1)
    x, g = node.input_value(0), _g(grads)
    alpha = ops.convert_like(node.input_value(1), x).output(0)
    beta = ops.convert_like(node.input_value(2), x).output(0)
    z = ops.add(_mul(x, alpha), beta).output(0)
    mask = ops.logical_and(ops.greater(z, ctx.const(0.0, like=x)), ops.less(z, ctx.const(1.0, like=x))).output(0)
    return [_select(mask, _mul(g, alpha), ctx), None, None]


@register_vjp("Swish")
def _swish(ctx: RuleContext, node: ov.Node, grads: Grads, needs: Sequence[bool]) -> list[ov.Output | None]:
    # y = x sigmoid(b x); dy/dx = s + b x s (1 - s)
    x, g = node.input_value(0), _g(grads)
    beta = ops.convert_like(node.input_value(1), x).output(0) if node.get_input_size() > 1 else ctx.const(1.0, like=x)
    s = ops.sigmoid(_mul(x, beta)).output(0)
    one_minus = ops.subtract(ctx.const(1.0, like=x), s).output(0)
    d = ops.add(s, _mul(_mul(beta, x), _mul(s, one_minus))).output(0)
    return [_mul(g, d)] + [None] * (node.get_input_size() - 1)


@register_vjp("Gelu")
def _gelu(ctx: RuleContext, node: ov.Node, grads: Grads, needs: Sequence[bool]) -> list[ov.Output | None]:
    x, g = node.input_value(0), _g(grads)
    mode = str(node.get_attributes().get("approximation_mode", "erf")).lower()
    half = ctx.const(0.5, like=x)
    one = ctx.const(1.0, like=x)
    if mode == "tanh":
        k, c = math.sqrt(2.0 / math.pi), 0.044715
        x2 = _mul(x, x)
        inner = _mul(ctx.const(k, like=x), ops.add(x, _mul(ctx.const(c, like=x), _mul(x2, x))).output(0))
        t = ops.tanh(inner).output(0)
        dinner = _mul(ctx.const(k, like=x), ops.add(one, _mul(ctx.const(3 * c, like=x), x2)).output(0))
        left = _mul(half, ops.add(one, t).output(0))
        right = _mul(_mul(half, x), _mul(ops.subtract(one, _mul(t, t)).output(0), dinner))
        d = ops.add(left, right).output(0)
    else:
        # Phi(x) + x phi(x)
        cdf = _mul(half, ops.add(one, ops.erf(_mul(x, ctx.const(1.0 / math.sqrt(2.0), like=x)))).output(0))
        e = ops.exp(_mul(_mul(x, x), ctx.const(-0.5, like=x))).output(0)
        pdf = _mul(e, ctx.const(1.0 / math.sqrt(2 * math.pi), like=x))
        d = ops.add(cdf, _mul(x, pdf)).output(0)
    return [_mul(g, d)]


@register_vjp("SoftPlus")
def _softplus(ctx: RuleContext, node: ov.Node, grads: Grads, needs: Sequence[bool]) -> list[ov.Output | None]:
    # y = log(1 + e^x); dy/dx = sigmoid(x)
    return [_mul(_g(grads), ops.sigmoid(node.input_value(0)).output(0))]


@register_vjp("Mish")
def _mish(ctx: RuleContext, node: ov.Node, grads: Grads, needs: Sequence[bool]) -> list[ov.Output | None]:
    # y = x tanh(softplus(x)); dy/dx = t + x sigmoid(x) (1 - t^2), t = tanh(softplus(x))
    x = node.input_value(0)
    t = ops.tanh(ops.softplus(x)).output(0)
    one = ctx.const(1.0, like=x)
    d = ops.add(t, _mul(_mul(x, ops.sigmoid(x).output(0)), ops.subtract(one, _mul(t, t)).output(0))).output(0)
    return [_mul(_g(grads), d)]


@register_vjp("Elu")
def _elu(ctx: RuleContext, node: ov.Node, grads: Grads, needs: Sequence[bool]) -> list[ov.Output | None]:
    # x > 0: 1; else alpha e^x = y + alpha (torch's elu_backward on the output)
    x, y = node.input_value(0), node.output(0)
    alpha = float(node.get_attributes()["alpha"])
    neg = ops.add(y, ctx.const(alpha, like=y)).output(0)
    slope = ops.select(ops.greater(x, ctx.const(0.0, like=x)), ctx.const(1.0, like=x), neg).output(0)
    return [_mul(_g(grads), slope)]


@register_vjp("Softmax")
def _softmax(ctx: RuleContext, node: ov.Node, grads: Grads, needs: Sequence[bool]) -> list[ov.Output | None]:
    # dx = y (g - sum(g y, axis))
    y, g = node.output(0), _g(grads)
    axis = int(node.get_attributes()["axis"])
    s = ops.reduce_sum(_mul(g, y), ctx.i64([axis]), keep_dims=True).output(0)
    return [_mul(y, ops.subtract(g, s).output(0))]


@register_vjp("LogSoftmax")
def _log_softmax(ctx: RuleContext, node: ov.Node, grads: Grads, needs: Sequence[bool]) -> list[ov.Output | None]:
    # dx = g - softmax(x) sum(g, axis)
    y, g = node.output(0), _g(grads)
    axis = int(node.get_attributes()["axis"])
    s = ops.reduce_sum(g, ctx.i64([axis]), keep_dims=True).output(0)
    return [ops.subtract(g, _mul(ops.exp(y).output(0), s)).output(0)]


@register_vjp("Convert")
def _convert(ctx: RuleContext, node: ov.Node, grads: Grads, needs: Sequence[bool]) -> list[ov.Output | None]:
    x = node.input_value(0)
    if not x.get_element_type().is_real():
        return [None]
    return [ops.convert(_g(grads), x.get_element_type()).output(0)]


# ---------------------------------------------------------------------------------------- binary
def _check_broadcast(node: ov.Node) -> str | None:
    spec = str(node.get_attributes().get("auto_broadcast", "numpy")).lower()
    return None if spec in ("numpy", "none") else f"auto_broadcast={spec} is not supported"


@register_vjp("Add", check=_check_broadcast)
def _add(ctx: RuleContext, node: ov.Node, grads: Grads, needs: Sequence[bool]) -> list[ov.Output | None]:
    g = _g(grads)
    return [ctx.sum_to(g, node.input_value(i)) if needs[i] else None for i in range(2)]


@register_vjp("Subtract", check=_check_broadcast)
def _sub(ctx: RuleContext, node: ov.Node, grads: Grads, needs: Sequence[bool]) -> list[ov.Output | None]:
    g = _g(grads)
    ga = ctx.sum_to(g, node.input_value(0)) if needs[0] else None
    gb = ctx.sum_to(ops.negative(g).output(0), node.input_value(1)) if needs[1] else None
    return [ga, gb]


@register_vjp("Multiply", check=_check_broadcast)
def _mul_rule(ctx: RuleContext, node: ov.Node, grads: Grads, needs: Sequence[bool]) -> list[ov.Output | None]:
    g = _g(grads)
    a, b = node.input_value(0), node.input_value(1)
    ga = ctx.sum_to(_mul(g, b), a) if needs[0] else None
    gb = ctx.sum_to(_mul(g, a), b) if needs[1] else None
    return [ga, gb]


@register_vjp("Divide", check=_check_broadcast)
def _div(ctx: RuleContext, node: ov.Node, grads: Grads, needs: Sequence[bool]) -> list[ov.Output | None]:
    # y = a / b: da = g / b; db = -g y / b
    g = _g(grads)
    a, b, y = node.input_value(0), node.input_value(1), node.output(0)
    ga = ctx.sum_to(ops.divide(g, b).output(0), a) if needs[0] else None
    gb = ctx.sum_to(ops.negative(ops.divide(_mul(g, y), b)).output(0), b) if needs[1] else None
    return [ga, gb]


@register_vjp("Power", check=_check_broadcast)
def _power(ctx: RuleContext, node: ov.Node, grads: Grads, needs: Sequence[bool]) -> list[ov.Output | None]:
    # y = a^b: da = g b a^(b-1); db = g y ln(a)
    g = _g(grads)
    a, b, y = node.input_value(0), node.input_value(1), node.output(0)
    ga = gb = None
    if needs[0]:
        bm1 = ops.subtract(b, ctx.const(1.0, like=b)).output(0)
        ga = ctx.sum_to(_mul(g, _mul(b, ops.power(a, bm1).output(0))), a)
    if needs[1]:
        gb = ctx.sum_to(_mul(g, _mul(y, ops.log(a).output(0))), b)
    return [ga, gb]


@register_vjp("SquaredDifference", check=_check_broadcast)
def _sqdiff(ctx: RuleContext, node: ov.Node, grads: Grads, needs: Sequence[bool]) -> list[ov.Output | None]:
    g = _g(grads)
    a, b = node.input_value(0), node.input_value(1)
    d = _mul(_mul(g, ops.subtract(a, b).output(0)), ctx.const(2.0, like=g))
    ga = ctx.sum_to(d, a) if needs[0] else None
    gb = ctx.sum_to(ops.negative(d).output(0), b) if needs[1] else None
    return [ga, gb]


@register_vjp("Maximum", "Minimum", check=_check_broadcast)
def _maxmin(ctx: RuleContext, node: ov.Node, grads: Grads, needs: Sequence[bool]) -> list[ov.Output | None]:
    # torch convention for ties: the gradient is split evenly between equal operands.
    g = _g(grads)
    a, b = node.input_value(0), node.input_value(1)
    cmp = ops.greater if node.get_type_name() == "Maximum" else ops.less
    half = _mul(g, ctx.const(0.5, like=g))
    eq = ops.equal(a, b).output(0)
    ga_full = ops.select(cmp(a, b), g, ops.select(eq, half, ctx.const(0.0, like=g))).output(0)
    gb_full = ops.select(cmp(b, a), g, ops.select(eq, half, ctx.const(0.0, like=g))).output(0)
    return [ctx.sum_to(ga_full, a) if needs[0] else None, ctx.sum_to(gb_full, b) if needs[1] else None]


@register_vjp("Select", check=_check_broadcast)
def _select_rule(ctx: RuleContext, node: ov.Node, grads: Grads, needs: Sequence[bool]) -> list[ov.Output | None]:
    g = _g(grads)
    c, t, e = node.input_value(0), node.input_value(1), node.input_value(2)
    zero = ctx.const(0.0, like=g)
    gt = ctx.sum_to(ops.select(c, g, zero).output(0), t) if needs[1] else None
    ge = ctx.sum_to(ops.select(c, zero, g).output(0), e) if needs[2] else None
    return [None, gt, ge]


@register_vjp("PRelu")
def _prelu(ctx: RuleContext, node: ov.Node, grads: Grads, needs: Sequence[bool]) -> list[ov.Output | None]:
    g = _g(grads)
    x, slope = node.input_value(0), node.input_value(1)
    dims = ctx.dims(x)
    sd = ctx.dims(slope)
    if len(sd) == 1 and len(dims) > 2 and sd[0] not in (None, 1):
        # per-channel slope on axis 1
        slope = ops.reshape(slope, ctx.i64([sd[0]] + [1] * (len(dims) - 2)), special_zero=False).output(0)
    s = ops.select(ops.greater(x, ctx.const(0.0, like=x)), ctx.const(1.0, like=x), slope).output(0)
    return [_mul(g, s), None]


# ---------------------------------------------------------------------------------------- FakeQuantize
def _check_fq(node: ov.Node) -> str | None:
    return _check_broadcast(node)


def fq_ste_scale(il: ov.Output, ih: ov.Output, ol: ov.Output, oh: ov.Output) -> ov.Output:
    """The STE slope ``(oh - ol) / (ih - il)`` of a FakeQuantize, 0 where the input range is empty (``ih == il``).

    The division runs on a denominator with the empty ranges replaced by 1, so no ``0/0`` or ``x/0`` is ever
    formed (a ``Select`` after a plain division would still see the NaN/inf in the discarded branch, harmless
    for the value but not for the reader).
    """
    den = ops.subtract(ih, il).output(0)
    zero = ops.convert_like(ops.constant(np.float32(0.0)), den).output(0)
    one = ops.convert_like(ops.constant(np.float32(1.0)), den).output(0)
    empty = ops.equal(den, zero).output(0)
    safe = ops.select(empty, one, den).output(0)
    return ops.select(empty, zero, ops.divide(ops.subtract(oh, ol), safe)).output(0)


@register_vjp("FakeQuantize", check=_check_fq)
def _fake_quantize(ctx: RuleContext, node: ov.Node, grads: Grads, needs: Sequence[bool]) -> list[ov.Output | None]:
    r"""Straight-through estimator (NNCF's quantizer backward).

    .. math:: \partial x = g \cdot \frac{o_h - o_l}{i_h - i_l} \cdot 1[i_l \le x \le i_h]

    An empty input range (``i_h == i_l``, e.g. from an all-constant calibration activation) makes the forward a
    step, constant in ``x`` on either side: the derivative there is 0, not ``0/0`` (see :func:`fq_ste_scale`).
    """
    g = _g(grads)
    x = node.input_value(0)
    il, ih, ol, oh = (ops.convert_like(node.input_value(i), x).output(0) for i in range(1, 5))
    lo = ops.minimum(il, ih).output(0)
    hi = ops.maximum(il, ih).output(0)
    inside = ops.logical_and(ops.greater_equal(x, lo), ops.less_equal(x, hi)).output(0)
    scale = fq_ste_scale(il, ih, ol, oh)
    scale_static = ctx.static_value(scale)
    gs = g if scale_static is not None and np.all(scale_static == 1.0) else _mul(g, scale)
    gx = ops.select(inside, gs, ctx.const(0.0, like=g)).output(0)
    return [ctx.sum_to(gx, x), None, None, None, None]
