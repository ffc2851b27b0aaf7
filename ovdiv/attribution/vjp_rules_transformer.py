r"""VJP rules of the ops that vision transformers and MetaFormers add.

Roll (Swin shifted windows), ReduceL2 (SwinV2 cosine attention), Einsum (MaxViT and any ``torch.einsum``),
GroupNormalization (PoolFormer/MetaFormer, GN models).

Notation: ``g`` incoming gradient, ``x`` the op's input, ``y`` its output. Conventions follow torch
autograd (e.g. the gradient of a zero L2 norm is 0, as ``torch.linalg.vector_norm``'s backward).
"""

from __future__ import annotations

import re
from collections.abc import Sequence

import numpy as np
import openvino as ov
import openvino.opset15 as ops

from ovdiv.attribution.vjp_registry import Grads, RuleContext, normalize_axes, register_vjp
from ovdiv.errors import UnsupportedOpError

__all__: list[str] = []


def _g(grads: Grads) -> ov.Output:
    g = grads[0]
    if g is None:  # pragma: no cover - the builder only calls rules with a gradient
        raise RuntimeError("rule called without an incoming gradient")
    return g


# ---------------------------------------------------------------------------------------- Roll
@register_vjp("Roll")
def _roll(ctx: RuleContext, node: ov.Node, grads: Grads, needs: Sequence[bool]) -> list[ov.Output | None]:
    """A roll is a permutation: ``dx = Roll(g, -shift, axes)`` (shift may be computed at run time)."""
    shift = node.input_value(1)
    sv = ctx.static_value(shift)
    neg = ops.constant(-np.asarray(sv)).output(0) if sv is not None else ops.negative(shift).output(0)
    return [ops.roll(_g(grads), neg, node.input_value(2)).output(0), None, None]


# ---------------------------------------------------------------------------------------- ReduceL2
@register_vjp("ReduceL2")
def _reduce_l2(ctx: RuleContext, node: ov.Node, grads: Grads, needs: Sequence[bool]) -> list[ov.Output | None]:
    """``y = sqrt(sum x^2)``: ``dx = x g / y``, and 0 where ``y == 0`` (torch's norm backward)."""
    x, y, g = node.input_value(0), node.output(0), _g(grads)
    axes = normalize_axes(ctx.require_static(node, 1, "axes"), len(ctx.dims(x)))
    if not bool(node.get_attributes().get("keep_dims", False)) and axes:
        y = ops.unsqueeze(y, ctx.i64(axes)).output(0)
        g = ops.unsqueeze(g, ctx.i64(axes)).output(0)
    zero = ctx.const(0.0, like=y)
    is_zero = ops.equal(y, zero).output(0)
    safe = ops.select(is_zero, ctx.const(1.0, like=y), y).output(0)
    q = ops.select(is_zero, zero, ops.divide(g, safe)).output(0)
    return [ops.multiply(x, q).output(0), None]


# ---------------------------------------------------------------------------------------- Einsum
_TERM = re.compile(r"^(?:[A-Za-z]|\.\.\.)*$")


def _parse(equation: str) -> tuple[list[list[str]], list[str]] | str:
    """``"ab,bc->ac"`` -> ([["a","b"], ["b","c"]], ["a","c"]) with ``"..."`` as one label; or a reason."""
    eq = equation.replace(" ", "")
    if "->" not in eq:
        return "implicit-output equations are not supported"
    lhs, rhs = eq.split("->")
    terms = lhs.split(",")
    if not all(_TERM.match(t) for t in [*terms, rhs]):
        return f"cannot parse equation '{equation}'"

    def labels(t: str) -> list[str]:
        return re.findall(r"\.\.\.|[A-Za-z]", t)

    ins = [labels(t) for t in terms]
    out = labels(rhs)
    for t in ins:
        if len(set(t)) != len(t):
            return f"repeated index within an operand ('{equation}', a diagonal) is not supported"
    if any("..." in t for t in ins) and "..." not in out:
        return f"an ellipsis summed away ('{equation}') is not supported"
    return ins, out


def _check_einsum(node: ov.Node) -> str | None:
    res = _parse(str(node.get_attributes()["equation"]))
    return f"Einsum: {res}" if isinstance(res, str) else None


def _eq(ins: Sequence[Sequence[str]], out: Sequence[str]) -> str:
    return ",".join("".join(t) for t in ins) + "->" + "".join(out)


@register_vjp("Einsum", check=_check_einsum)
def _einsum(ctx: RuleContext, node: ov.Node, grads: Grads, needs: Sequence[bool]) -> list[ov.Output | None]:
    r"""The VJP of operand ``i`` is another einsum: ``out, (operands j != i) -> labels of i``.

    Labels that occur only in operand ``i`` (summed away in the forward) are broadcast back. The
    ellipsis must have the same static shape in every operand that has it (no ellipsis broadcasting).
    """
    parsed = _parse(str(node.get_attributes()["equation"]))
    if isinstance(parsed, str):  # pragma: no cover - refused by the check
        raise UnsupportedOpError(f"Einsum '{node.get_friendly_name()}': {parsed}")
    ins, out = parsed
    g = _g(grads)
    operands = [node.input_value(i) for i in range(node.get_input_size())]
    ell_shapes = []
    for t, o in zip(ins, operands, strict=True):
        if "..." in t:
            d = ctx.dims(o)
            n_ell = len(d) - (len(t) - 1)
            p = t.index("...")
            ell_shapes.append(d[p : p + n_ell])
    if ell_shapes and any(s != ell_shapes[0] for s in ell_shapes[1:]):
        raise UnsupportedOpError(
            f"Einsum '{node.get_friendly_name()}': ellipsis dims differ between operands {ell_shapes}",
            "broadcasting ellipsis dims is not supported by the gradient rule",
        )
    res: list[ov.Output | None] = []
    for i, t in enumerate(ins):
        if not needs[i]:
            res.append(None)
            continue
        others = [j for j in range(len(ins)) if j != i]
        present = set(out).union(*(set(ins[j]) for j in others))
        kept = [lab for lab in t if lab in present]
        lonely = [k for k, lab in enumerate(t) if lab not in present]
        srcs = [g] + [operands[j] if needs[j] else ctx.fresh(operands[j]) for j in others]
        eq = _eq([out] + [ins[j] for j in others], kept)
        gi = ops.einsum(srcs, eq).output(0)
        if lonely:
            if "..." in t:
                raise UnsupportedOpError(
                    f"Einsum '{node.get_friendly_name()}': an index summed within one operand next to an ellipsis"
                )
            gi = ops.broadcast(ops.unsqueeze(gi, ctx.i64(lonely)), ops.shape_of(operands[i])).output(0)
        res.append(gi)
    return res


# ---------------------------------------------------------------------------------------- GroupNormalization
@register_vjp("GroupNormalization")
def _group_norm(ctx: RuleContext, node: ov.Node, grads: Grads, needs: Sequence[bool]) -> list[ov.Output | None]:
    r"""``y = scale_c \hat{x} + bias_c`` with ``\hat{x} = (x - \mu_g) / \sqrt{\sigma_g^2 + \epsilon}`` per group.

    With ``h = g \cdot scale_c`` viewed as ``[N, G, -1]``:
    ``dx = (h - mean(h) - \hat{x} mean(h \hat{x})) / \sqrt{\sigma^2 + \epsilon}``.
    """
    if len(needs) > 1 and (needs[1] or needs[2]):
        raise UnsupportedOpError(
            f"GroupNormalization '{node.get_friendly_name()}': activation-valued scale/bias are not supported"
        )
    x, g = node.input_value(0), _g(grads)
    a = node.get_attributes()
    groups = int(a["num_groups"])
    eps = float(a["epsilon"])
    rank = len(ctx.dims(x))
    scale = ops.convert_like(node.input_value(1), x).output(0)
    scale = ops.reshape(scale, ctx.i64([1, -1] + [1] * (rank - 2)), special_zero=False).output(0)
    h = ops.multiply(g, scale).output(0)
    grouped = ctx.i64([0, groups, -1])
    xg = ops.reshape(x, grouped, special_zero=True).output(0)
    hg = ops.reshape(h, grouped, special_zero=True).output(0)
    ax = ctx.i64([2])

    def mean(t: ov.Output) -> ov.Output:
        return ops.reduce_mean(t, ax, keep_dims=True).output(0)

    c = ops.subtract(xg, mean(xg)).output(0)
    var = mean(ops.multiply(c, c).output(0))
    rstd = ops.divide(ctx.const(1.0, like=x), ops.sqrt(ops.add(var, ctx.const(eps, like=x)))).output(0)
    xhat = ops.multiply(c, rstd).output(0)
    inner = ops.subtract(ops.subtract(hg, mean(hg)), ops.multiply(xhat, mean(ops.multiply(hg, xhat)))).output(0)
    dx = ops.reshape(ops.multiply(inner, rstd), ops.shape_of(x), special_zero=False).output(0)
    return [dx, None, None]
