"""VJP rules of network layers: convolutions, pooling, MatMul, normalisation, attention.

Binding pitfalls of the feasibility study (``reference/ovgrad/NOTES.md`` §6) implemented here:

* every backward weight is a *separate* Constant (:meth:`RuleContext.fresh`), never the forward's;
* ``ConvolutionBackpropData`` gets explicit pads plus
  ``output_padding = in - ((out - 1) s - p_b - p_e + (k - 1) d + 1)`` (auto_pad resolved from shapes);
* MaxPool uses the *mask* rule (first maximum in row-major window order, as torch), never the
  indices output, which forces a ~200x slower reference kernel on CPU.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from itertools import product

import numpy as np
import openvino as ov
import openvino.opset15 as ops

from ovdiv.attribution.vjp_registry import Grads, RuleContext, normalize_axes, register_vjp
from ovdiv.errors import UnsupportedOpError

__all__: list[str] = []


def _g(grads: Grads, k: int = 0) -> ov.Output:
    g = grads[k]
    if g is None:  # pragma: no cover
        raise RuntimeError("rule called without an incoming gradient")
    return g


def _resolve_pads(
    auto_pad: str,
    in_sz: Sequence[int],
    out_sz: Sequence[int],
    k: Sequence[int],
    s: Sequence[int],
    d: Sequence[int],
    pb: Sequence[int],
    pe: Sequence[int],
) -> tuple[list[int], list[int]]:
    """Explicit begin/end pads of a windowed op (auto_pad same_upper/same_lower/valid resolved)."""
    mode = auto_pad.lower()
    if mode == "valid":
        return [0] * len(in_sz), [0] * len(in_sz)
    if mode in ("same_upper", "same_lower"):
        pbs, pes = [], []
        for i in range(len(in_sz)):
            total = max((out_sz[i] - 1) * s[i] + (k[i] - 1) * d[i] + 1 - in_sz[i], 0)
            small = total // 2
            pbs.append(small if mode == "same_upper" else total - small)
            pes.append(total - small if mode == "same_upper" else small)
        return pbs, pes
    return [int(v) for v in pb], [int(v) for v in pe]


def _bprop_geometry(
    in_sz: Sequence[int],
    out_sz: Sequence[int],
    k: Sequence[int],
    s: Sequence[int],
    d: Sequence[int],
    pb: Sequence[int],
    pe: Sequence[int],
) -> tuple[list[int], list[int]]:
    """Pads-end and output_padding so that a transposed conv of ``out_sz`` gives exactly ``in_sz``.

    ``out_bp = (out - 1) s - p_b - p_e + (k - 1) d + 1`` and ``output_padding = in - out_bp``. When the
    forward window grid reaches past ``p_e`` (ceil-mode pooling) the end pad is enlarged instead.
    """
    pe2, op = [], []
    for i in range(len(in_sz)):
        out_bp = (out_sz[i] - 1) * s[i] - pb[i] - pe[i] + (k[i] - 1) * d[i] + 1
        pad_out = in_sz[i] - out_bp
        end = pe[i]
        if pad_out < 0:
            end = pe[i] - pad_out
            pad_out = 0
        pe2.append(end)
        op.append(pad_out)
    return pe2, op


def _conv_geometry(ctx: RuleContext, node: ov.Node, kernel: Sequence[int]) -> dict[str, list[int]]:
    a = node.get_attributes()
    x = node.input_value(0)
    xd = ctx.static_dims(x, node, "input", skip=(0,))
    yd = ctx.static_dims(node.output(0), node, "output", skip=(0,))
    in_sz, out_sz = xd[2:], yd[2:]
    s = [int(v) for v in a["strides"]]
    d = [int(v) for v in a.get("dilations", [1] * len(s))]
    auto = str(a.get("auto_pad", "explicit"))
    pb, pe = _resolve_pads(auto, in_sz, out_sz, kernel, s, d, a["pads_begin"], a["pads_end"])
    pe2, op = _bprop_geometry(in_sz, out_sz, kernel, s, d, pb, pe)
    return {"strides": s, "dilations": d, "pads_begin": pb, "pads_end": pe2, "output_padding": op}


def _conv_input_vjp(
    ctx: RuleContext,
    node: ov.Node,
    grads: Grads,
    needs: Sequence[bool],
    *,
    spatial_from: int,
    bprop: Callable[..., ov.Node],
    weights_error: str,
) -> list[ov.Output | None]:
    """Input gradient of a (group) convolution: ``bprop(g, W')`` with the forward weights' layout.

    Args:
        ctx: Rule context.
        node: The forward ``Convolution`` / ``GroupConvolution``.
        grads: Incoming gradients.
        needs: Which inputs need a gradient (the weights must not).
        spatial_from: First spatial axis of the weights (2 for ``Convolution``, 3 for ``GroupConvolution``).
        bprop: The backprop-data op builder (``ops.convolution_backprop_data`` or the group variant).
        weights_error: Message after ``'<name>': `` when the weights need a gradient.

    Returns:
        ``[dx, None]``.

    Raises:
        UnsupportedOpError: the weights are activation-valued (need a gradient).
    """
    if needs[1]:
        raise UnsupportedOpError(f"{node.get_type_name()} '{node.get_friendly_name()}': {weights_error}")
    w = node.input_value(1)
    kernel = ctx.static_dims(w, node, "weights", skip=())[spatial_from:]
    geo = _conv_geometry(ctx, node, kernel)
    gx = bprop(
        _g(grads),
        ctx.fresh(w),
        strides=geo["strides"],
        pads_begin=geo["pads_begin"],
        pads_end=geo["pads_end"],
        dilations=geo["dilations"],
        auto_pad="explicit",
        output_padding=geo["output_padding"],
    ).output(0)
    return [gx, None]


@register_vjp("Convolution")
def _conv(ctx: RuleContext, node: ov.Node, grads: Grads, needs: Sequence[bool]) -> list[ov.Output | None]:
    r"""``dx = ConvolutionBackpropData(g, W')``; forward ``W [C_out, C_in, k..]`` is the bprop layout."""
    return _conv_input_vjp(
        ctx,
        node,
        grads,
        needs,
        spatial_from=2,
        bprop=ops.convolution_backprop_data,
        weights_error="gradients through activation-valued weights are not supported",
    )


@register_vjp("GroupConvolution")
def _group_conv(ctx: RuleContext, node: ov.Node, grads: Grads, needs: Sequence[bool]) -> list[ov.Output | None]:
    """``dx = GroupConvolutionBackpropData(g, W')``; ``[G, C_out/G, C_in/G, k..]`` is the bprop layout."""
    return _conv_input_vjp(
        ctx,
        node,
        grads,
        needs,
        spatial_from=3,
        bprop=ops.group_convolution_backprop_data,
        weights_error="activation-valued weights are not supported",
    )


# ---------------------------------------------------------------------------------------- pooling
def _check_pool2d(node: ov.Node) -> str | None:
    ps = node.get_input_partial_shape(0)
    if ps.rank.is_dynamic or ps.rank.get_length() != 4:
        return f"{node.get_type_name()} rule supports 2-D pooling on rank-4 inputs only (got rank {ps.rank})"
    return None


def _pool_geometry(ctx: RuleContext, node: ov.Node) -> tuple[list[int], list[int], dict[str, list[int]], list[int]]:
    a = node.get_attributes()
    xd = ctx.static_dims(node.input_value(0), node, "input", skip=(0,))
    yd = ctx.static_dims(node.output(0), node, "output", skip=(0,))
    k = [int(v) for v in a["kernel"]]
    s = [int(v) for v in a["strides"]]
    d = [int(v) for v in a.get("dilations", [1] * len(k))]
    pb, pe = _resolve_pads(str(a.get("auto_pad", "explicit")), xd[2:], yd[2:], k, s, d, a["pads_begin"], a["pads_end"])
    return xd, yd, {"kernel": k, "strides": s, "dilations": d, "pads_begin": pb, "pads_end": pe}, k


@register_vjp("MaxPool", check=_check_pool2d)
def _max_pool(ctx: RuleContext, node: ov.Node, grads: Grads, needs: Sequence[bool]) -> list[ov.Output | None]:
    r"""Mask rule (first maximum of each window in row-major order, as torch's CPU kernel).

    For each kernel offset ``(i, j)`` a strided view ``v_ij`` of the ``-inf``-padded input is compared
    with ``y``; ``first_ij = (v_ij == y) & !taken`` and ``c_ij = select(first_ij, g, 0)``. Contributions
    are placed back at low resolution per stride phase (pad by the block shift, add), interleaved with
    ``Concat + DepthToSpace`` (or reshape + pad when the strides differ), then cropped to the input.
    """
    g = grads[0]
    if g is None:
        return [None]
    x, y = node.input_value(0), node.output(0)
    xd, yd, geo, k = _pool_geometry(ctx, node)
    (h, w), (ho, wo) = xd[2:], yd[2:]
    (sh, sw), (dh, dw) = geo["strides"], geo["dilations"]
    (pbh, pbw) = geo["pads_begin"]
    # Padded extent that holds every window of the output grid.
    hp = (ho - 1) * sh + (k[0] - 1) * dh + 1
    wp = (wo - 1) * sw + (k[1] - 1) * dw + 1
    lowest = ctx.const(np.finfo(np.float32).min, like=x)
    xp = ops.pad(x, ctx.i64([0, 0, pbh, pbw]), ctx.i64([0, 0, hp - h - pbh, wp - w - pbw]), "constant", lowest)
    taken: ov.Output | None = None
    # phase (ri, rj) -> list of (contribution, block shift qi, qj)
    phases: dict[tuple[int, int], list[tuple[ov.Output, int, int]]] = {}
    for i, j in product(range(k[0]), range(k[1])):
        oh, ow = i * dh, j * dw
        view = ops.slice(
            xp,
            ctx.i64([oh, ow]),
            ctx.i64([oh + (ho - 1) * sh + 1, ow + (wo - 1) * sw + 1]),
            ctx.i64([sh, sw]),
            ctx.i64([2, 3]),
        ).output(0)
        eq = ops.equal(view, y).output(0)
        if taken is None:
            first, taken = eq, eq
        else:
            first = ops.logical_and(eq, ops.logical_not(taken)).output(0)
            taken = ops.logical_or(taken, eq).output(0)
        c = ops.select(first, g, ctx.const(0.0, like=g)).output(0)
        phases.setdefault((oh % sh, ow % sw), []).append((c, oh // sh, ow // sw))
    qh = max(q for lst in phases.values() for _, q, _ in lst)
    qw = max(q for lst in phases.values() for _, _, q in lst)
    lh, lw = ho + qh, wo + qw  # low-resolution extent of every phase
    low: dict[tuple[int, int], ov.Output] = {}
    for ph, lst in phases.items():
        acc: ov.Output | None = None
        for c, qi, qj in lst:
            t = c
            if (qi, qj, qh - qi, qw - qj) != (0, 0, 0, 0):
                t = ops.pad(c, ctx.i64([0, 0, qi, qj]), ctx.i64([0, 0, qh - qi, qw - qj]), "constant").output(0)
            acc = t if acc is None else ops.add(acc, t).output(0)
        assert acc is not None
        low[ph] = acc
    if sh == 1 and sw == 1:
        full = low[(0, 0)]
    elif sh == sw:
        zero_low: ov.Output | None = None
        pieces = []
        for rh, rw in product(range(sh), range(sw)):
            if (rh, rw) in low:
                pieces.append(low[(rh, rw)])
            else:
                if zero_low is None:
                    zero_low = ops.pad(
                        ops.multiply(g, ctx.const(0.0, like=g)),
                        ctx.i64([0, 0, 0, 0]),
                        ctx.i64([0, 0, qh, qw]),
                        "constant",
                    ).output(0)
                pieces.append(zero_low)
        full = ops.depth_to_space(ops.concat(pieces, 1), "blocks_first", sh).output(0)
    else:
        full_acc: ov.Output | None = None
        for (rh, rw), t in low.items():
            t6 = ops.reshape(t, ctx.i64([0, 0, lh, 1, lw, 1]), special_zero=True).output(0)
            t6 = ops.pad(t6, ctx.i64([0, 0, 0, rh, 0, rw]), ctx.i64([0, 0, 0, sh - 1 - rh, 0, sw - 1 - rw]), "constant")
            t4 = ops.reshape(t6, ctx.i64([0, 0, lh * sh, lw * sw]), special_zero=True).output(0)
            full_acc = t4 if full_acc is None else ops.add(full_acc, t4).output(0)
        assert full_acc is not None
        full = full_acc
    # full covers padded rows [0, lh*sh); crop/extend to the input rows [pbh, pbh + h).
    gx = ops.pad(
        full, ctx.i64([0, 0, -pbh, -pbw]), ctx.i64([0, 0, pbh + h - lh * sh, pbw + w - lw * sw]), "constant"
    ).output(0)
    return [gx]


@register_vjp("AvgPool", check=_check_pool2d)
def _avg_pool(ctx: RuleContext, node: ov.Node, grads: Grads, needs: Sequence[bool]) -> list[ov.Output | None]:
    r"""``y = D^{-1} S x`` (S: window sums of real inputs, D: the op's divisor) so ``dx = S^T (g / D)``.

    ``1/D = AvgPool(1) / SumPool(1)`` evaluated on a ``[1, 1, H, W]`` ones image with the op's own
    attributes (exact for exclude_pad and ceil modes); ``S^T`` is a ones-kernel transposed conv.
    """
    x = node.input_value(0)
    xd, yd, geo, k = _pool_geometry(ctx, node)
    h, w = xd[2:]
    c = xd[1]
    a = node.get_attributes()
    ones = np.ones((1, 1, h, w), np.float32)
    avg1 = ops.avg_pool(
        ops.constant(ones),
        a["strides"],
        a["pads_begin"],
        a["pads_end"],
        a["kernel"],
        bool(a["exclude-pad"]) if "exclude-pad" in a else bool(a.get("exclude_pad", False)),
        str(a.get("rounding_type", "floor")).lower(),
        str(a.get("auto_pad", "explicit")).lower(),
    )
    pe_bp, op = _bprop_geometry(xd[2:], yd[2:], k, geo["strides"], [1, 1], geo["pads_begin"], geo["pads_end"])
    sum1 = ops.convolution(
        ops.constant(ones),
        ops.constant(np.ones((1, 1, *k), np.float32)),
        geo["strides"],
        geo["pads_begin"],
        pe_bp,
        [1, 1],
    )
    inv_d = ctx.evaluate_constant(ops.divide(avg1, sum1).output(0))
    ho, wo = yd[2:]
    g = ops.multiply(_g(grads), ctx.const(inv_d.reshape(1, 1, ho, wo), like=x)).output(0)
    g1 = ops.reshape(g, ctx.i64([-1, 1, ho, wo]), special_zero=False).output(0)
    gx = ops.convolution_backprop_data(
        g1,
        ops.constant(np.ones((1, 1, *k), np.float32)),
        strides=geo["strides"],
        pads_begin=geo["pads_begin"],
        pads_end=pe_bp,
        dilations=[1, 1],
        auto_pad="explicit",
        output_padding=op,
    ).output(0)
    return [ops.reshape(gx, ctx.i64([-1, c, h, w]), special_zero=False).output(0)]


def _adaptive_matrix(n_in: int, n_out: int) -> np.ndarray:
    """The torch adaptive average pooling matrix ``P [n_out, n_in]`` (start=floor, end=ceil)."""
    p = np.zeros((n_out, n_in), np.float32)
    for i in range(n_out):
        s = (i * n_in) // n_out
        e = -(-((i + 1) * n_in) // n_out)
        p[i, s:e] = 1.0 / (e - s)
    return p


@register_vjp("AdaptiveAvgPool", check=_check_pool2d)
def _adaptive_avg_pool(ctx: RuleContext, node: ov.Node, grads: Grads, needs: Sequence[bool]) -> list[ov.Output | None]:
    """Separable: ``dx = P_h^T g P_w`` with static pooling matrices."""
    xd = ctx.static_dims(node.input_value(0), node, "input", skip=(0,))
    yd = ctx.static_dims(node.output(0), node, "output", skip=(0,))
    ph = _adaptive_matrix(xd[2], yd[2])
    pw = _adaptive_matrix(xd[3], yd[3])
    t = ops.matmul(ops.constant(np.ascontiguousarray(ph.T)), _g(grads), False, False).output(0)
    gx = ops.matmul(t, ops.constant(pw), False, False).output(0)
    return [gx, None]


# ---------------------------------------------------------------------------------------- MatMul
@register_vjp("MatMul")
def _matmul(ctx: RuleContext, node: ov.Node, grads: Grads, needs: Sequence[bool]) -> list[ov.Output | None]:
    r"""``y = op(A) op(B)``: ``dA = g op(B)^T``, ``dB = op(A)^T g``.

    Results are transposed back when the operand was stored transposed and summed over broadcast batch
    axes. Constant operands are copied (CPU plugin shared-weight pitfall).
    """
    g = _g(grads)
    a_in, b_in = node.input_value(0), node.input_value(1)
    attrs = node.get_attributes()
    ta, tb = bool(attrs.get("transpose_a", False)), bool(attrs.get("transpose_b", False))
    if len(ctx.dims(a_in)) < 2 or len(ctx.dims(b_in)) < 2:
        raise UnsupportedOpError(f"MatMul '{node.get_friendly_name()}': 1-D operands are not supported")
    a = ctx.fresh(a_in) if not needs[0] else a_in
    b = ctx.fresh(b_in) if not needs[1] else b_in
    ga = gb = None
    if needs[0]:
        ga_full = ops.matmul(b, g, tb, True) if ta else ops.matmul(g, b, False, not tb)
        ga = ctx.sum_to(ga_full.output(0), a_in)
    if needs[1]:
        gb_full = ops.matmul(g, a, True, ta) if tb else ops.matmul(a, g, not ta, False)
        gb = ctx.sum_to(gb_full.output(0), b_in)
    return [ga, gb]


# ---------------------------------------------------------------------------------------- normalisation
def _check_mvn(node: ov.Node) -> str | None:
    if node.get_input_size() < 2:
        return "MVN-1 (axes as attribute) is not supported; re-export with a recent opset"
    return None


@register_vjp("MVN", check=_check_mvn)
def _mvn(ctx: RuleContext, node: ov.Node, grads: Grads, needs: Sequence[bool]) -> list[ov.Output | None]:
    r"""Layer/instance norm without affine.

    With ``c = x - mean(x)``, ``s = sqrt(mean(c^2))``:
    inside_sqrt ``y = c / sqrt(s^2 + eps)``: ``dx = (g - mean g - y mean(g y)) / sqrt(s^2 + eps)``;
    outside_sqrt ``y = c / (s + eps)``: ``dx = (g - mean g)/(s + eps) - c mean(g c) / (s (s + eps)^2)``.
    """
    x, y, g = node.input_value(0), node.output(0), _g(grads)
    axes = ctx.i64(normalize_axes(ctx.require_static(node, 1, "axes"), len(ctx.dims(x))))
    a = node.get_attributes()
    eps = ctx.const(float(a["eps"]), like=x)

    def mean(t: ov.Output) -> ov.Output:
        return ops.reduce_mean(t, axes, keep_dims=True).output(0)

    gc = ops.subtract(g, mean(g)).output(0)
    if not bool(a["normalize_variance"]):
        return [gc, None]
    c = ops.subtract(x, mean(x)).output(0)
    var = mean(ops.multiply(c, c).output(0))
    if str(a.get("eps_mode", "inside_sqrt")).lower() == "inside_sqrt":
        sigma = ops.sqrt(ops.add(var, eps)).output(0)
        gy = mean(ops.multiply(g, y).output(0))
        gx = ops.divide(ops.subtract(gc, ops.multiply(y, gy)), sigma).output(0)
    else:
        s = ops.sqrt(var).output(0)
        se = ops.add(s, eps).output(0)
        gcm = mean(ops.multiply(g, c).output(0))
        t1 = ops.divide(gc, se).output(0)
        t2 = ops.divide(ops.multiply(c, gcm), ops.multiply(s, ops.multiply(se, se))).output(0)
        gx = ops.subtract(t1, t2).output(0)
    return [gx, None]


@register_vjp("BatchNormInference")
def _batch_norm(ctx: RuleContext, node: ov.Node, grads: Grads, needs: Sequence[bool]) -> list[ov.Output | None]:
    """``dx = g gamma / sqrt(var + eps)`` on axis 1 (v0 and v5 input orders)."""
    v0 = node.get_type_info().version_id == "opset1"
    data_i, gamma_i, var_i = (2, 0, 4) if v0 else (0, 1, 4)
    x = node.input_value(data_i)
    gamma = ctx.static_value(node.input_value(gamma_i))
    var = ctx.static_value(node.input_value(var_i))
    if gamma is None or var is None:
        raise UnsupportedOpError(f"BatchNormInference '{node.get_friendly_name()}': non-constant gamma/variance")
    eps = float(node.get_attributes()["epsilon"])
    scale = (gamma.astype(np.float64) / np.sqrt(var.astype(np.float64) + eps)).astype(np.float32)
    rank = len(ctx.dims(x))
    scale_c = ctx.const(scale.reshape([1, -1] + [1] * (rank - 2)), like=x)
    res: list[ov.Output | None] = [None] * 5
    res[data_i] = ops.multiply(_g(grads), scale_c).output(0)
    return res


# ---------------------------------------------------------------------------------------- attention
def _check_sdpa(node: ov.Node) -> str | None:
    if bool(node.get_attributes().get("causal", False)):
        return "ScaledDotProductAttention with causal=True is not supported"
    return None


@register_vjp("ScaledDotProductAttention", check=_check_sdpa)
def _sdpa(ctx: RuleContext, node: ov.Node, grads: Grads, needs: Sequence[bool]) -> list[ov.Output | None]:
    r"""Scaled dot-product attention (non-causal, optional additive or boolean mask).

    Recompute ``P = softmax(Q K^T s + M)``; ``dV = P^T g``, ``dP = g V^T``,
    ``dS = P (dP - rowsum(dP P))``, ``dQ = dS K s``, ``dK = dS^T Q s``.
    """
    g = _g(grads)
    q, k, v = (node.input_value(i) for i in range(3))
    e = ctx.dims(q)[-1]
    if node.get_input_size() > 4:
        sv = ctx.static_value(node.input_value(4))
        # A scale computed at run time (torch ``c ** -0.5`` with ``c`` read from a dynamic-batch shape) is
        # used as the tensor it is.
        scale = float(np.asarray(sv).reshape(-1)[0]) if sv is not None else None
    else:
        if e is None:
            raise UnsupportedOpError(f"ScaledDotProductAttention '{node.get_friendly_name()}': dynamic head dim")
        scale = 1.0 / math.sqrt(e)
    sc = ctx.const(scale, like=q) if scale is not None else ops.convert_like(node.input_value(4), q).output(0)
    s = ops.multiply(ops.matmul(q, k, False, True), sc).output(0)
    if node.get_input_size() > 3:
        m = node.input_value(3)
        if m.get_element_type() == ov.Type.boolean:
            neg = ctx.const(-np.inf, like=q)
            s = ops.select(m, s, neg).output(0)
        else:
            s = ops.add(s, ops.convert_like(m, s)).output(0)
    p = ops.softmax(s, -1).output(0)
    res: list[ov.Output | None] = [None] * node.get_input_size()
    if needs[2]:
        res[2] = ctx.sum_to(ops.matmul(p, g, True, False).output(0), v)
    if needs[0] or needs[1]:
        dp = ops.matmul(g, v, False, True).output(0)
        rs = ops.reduce_sum(ops.multiply(dp, p), ctx.i64([-1]), keep_dims=True).output(0)
        ds = ops.multiply(ops.multiply(p, ops.subtract(dp, rs)), sc).output(0)
        if needs[0]:
            res[0] = ctx.sum_to(ops.matmul(ds, k, False, False).output(0), q)
        if needs[1]:
            res[1] = ctx.sum_to(ops.matmul(ds, q, True, False).output(0), k)
    return res
