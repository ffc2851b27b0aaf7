"""VJP rules of data-movement and reduction ops.

Reshape, transpose, concat/split, slice, gather, broadcast, tile, pad, reduce.

Shapes that depend on the batch go through ``ShapeOf`` so the VJP model keeps a dynamic batch; axes,
permutations, split lengths and slice bounds must be build-time constants.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import openvino as ov
import openvino.opset15 as ops

from ovdiv.attribution.vjp_registry import Grads, RuleContext, normalize_axes, register_vjp
from ovdiv.errors import UnsupportedOpError

__all__: list[str] = []

_INT_MAX = np.iinfo(np.int64).max


def _g(grads: Grads, k: int = 0) -> ov.Output:
    g = grads[k]
    if g is None:  # pragma: no cover
        raise RuntimeError("rule called without an incoming gradient")
    return g


@register_vjp("Reshape", "Squeeze", "Unsqueeze")
def _reshape(ctx: RuleContext, node: ov.Node, grads: Grads, needs: Sequence[bool]) -> list[ov.Output | None]:
    x = node.input_value(0)
    gx = ops.reshape(_g(grads), ops.shape_of(x), special_zero=False).output(0)
    return [gx] + [None] * (node.get_input_size() - 1)


@register_vjp("Transpose")
def _transpose(ctx: RuleContext, node: ov.Node, grads: Grads, needs: Sequence[bool]) -> list[ov.Output | None]:
    raw = [int(p) for p in ctx.require_static(node, 1, "permutation").reshape(-1)]
    rank = len(ctx.dims(node.input_value(0)))
    # empty perm = reverse; negative entries count from the end
    perm = [p + rank if p < 0 else p for p in raw] if raw else list(range(rank))[::-1]
    return [ops.transpose(_g(grads), ctx.i64(np.argsort(perm))).output(0), None]


@register_vjp("Concat")
def _concat(ctx: RuleContext, node: ov.Node, grads: Grads, needs: Sequence[bool]) -> list[ov.Output | None]:
    # Static lengths: one VariadicSplit. Dynamic lengths (ONNX reshapes through ShapeOf): Slices with
    # bounds computed from ShapeOf of the inputs.
    n = node.get_input_size()
    rank = len(ctx.dims(node.output(0)))
    axis = normalize_axes([int(node.get_attributes()["axis"])], rank)[0]
    lengths = [ctx.dims(node.input_value(i))[axis] for i in range(n)]
    g = _g(grads)
    if all(d is not None for d in lengths):
        parts = ops.variadic_split(g, ctx.i64(axis), ctx.i64(lengths))
        return [parts.output(i) if needs[i] else None for i in range(n)]
    res: list[ov.Output | None] = []
    start: ov.Output = ctx.i64([0])
    for i in range(n):
        d = lengths[i]
        length = (
            ctx.i64([d])
            if d is not None
            else ops.gather(ops.shape_of(node.input_value(i)), ctx.i64([axis]), ctx.i64(0)).output(0)
        )
        stop = ops.add(start, length).output(0)
        res.append(ops.slice(g, start, stop, ctx.i64([1]), ctx.i64([axis])).output(0) if needs[i] else None)
        start = stop
    return res


@register_vjp("Split", "VariadicSplit")
def _split(ctx: RuleContext, node: ov.Node, grads: Grads, needs: Sequence[bool]) -> list[ov.Output | None]:
    x = node.input_value(0)
    rank = len(ctx.dims(x))
    axis = normalize_axes(ctx.require_static(node, 1, "axis"), rank)[0]
    pieces = [g if g is not None else ctx.zeros_like(node.output(k)) for k, g in enumerate(grads)]
    gx = ops.concat(pieces, axis).output(0) if len(pieces) > 1 else pieces[0]
    return [gx] + [None] * (node.get_input_size() - 1)


@register_vjp("Slice")
def _slice(ctx: RuleContext, node: ov.Node, grads: Grads, needs: Sequence[bool]) -> list[ov.Output | None]:
    # dx = SliceScatter(zeros_like(x), g, start, stop, step, axes): slices never overlap.
    x = node.input_value(0)
    args = [node.input_value(i) for i in range(1, node.get_input_size())]
    gx = ops.slice_scatter(ctx.zeros_like(x), _g(grads), *args).output(0)
    return [gx] + [None] * len(args)


def _check_strided_slice(node: ov.Node) -> str | None:
    a = node.get_attributes()
    for key in ("new_axis_mask", "ellipsis_mask"):
        if any(int(v) for v in a.get(key, [])):
            return f"StridedSlice with {key} is not supported"
    return None


@register_vjp("StridedSlice", check=_check_strided_slice)
def _strided_slice(ctx: RuleContext, node: ov.Node, grads: Grads, needs: Sequence[bool]) -> list[ov.Output | None]:
    # Rewritten as Slice semantics (begin/end masks -> full range, shrink axes -> unit slices + Unsqueeze).
    x = node.input_value(0)
    rank = len(ctx.dims(x))
    begin = ctx.require_static(node, 1, "begin").astype(np.int64).reshape(-1)
    end = ctx.require_static(node, 2, "end").astype(np.int64).reshape(-1)
    stride = (
        ctx.require_static(node, 3, "strides").astype(np.int64).reshape(-1)
        if node.get_input_size() > 3
        else np.ones_like(begin)
    )
    a = node.get_attributes()
    bm = [int(v) for v in a.get("begin_mask", [])]
    em = [int(v) for v in a.get("end_mask", [])]
    sm = [int(v) for v in a.get("shrink_axis_mask", [])]
    starts, stops, steps, axes, shrink = [], [], [], [], []
    for i in range(min(len(begin), rank)):
        s = int(stride[i])
        b = int(begin[i]) if not (i < len(bm) and bm[i]) else (0 if s > 0 else -1)
        if i < len(sm) and sm[i]:
            starts.append(b)
            stops.append(b + 1 if b != -1 else _INT_MAX)
            steps.append(1)
            axes.append(i)
            shrink.append(i)
            continue
        e = int(end[i]) if not (i < len(em) and em[i]) else (_INT_MAX if s > 0 else -_INT_MAX)
        starts.append(b)
        stops.append(e)
        steps.append(s)
        axes.append(i)
    g = _g(grads)
    if shrink:
        g = ops.unsqueeze(g, ctx.i64(shrink)).output(0)
    gx = ops.slice_scatter(ctx.zeros_like(x), g, ctx.i64(starts), ctx.i64(stops), ctx.i64(steps), ctx.i64(axes)).output(
        0
    )
    return [gx] + [None] * (node.get_input_size() - 1)


def _check_gather(node: ov.Node) -> str | None:
    if int(node.get_attributes().get("batch_dims", 0)) != 0:
        return "Gather with batch_dims != 0 is not supported"
    return None


@register_vjp("Gather", check=_check_gather)
def _gather(ctx: RuleContext, node: ov.Node, grads: Grads, needs: Sequence[bool]) -> list[ov.Output | None]:
    x = node.input_value(0)
    xd = ctx.dims(x)
    rank = len(xd)
    axis = normalize_axes(ctx.require_static(node, 2, "axis"), rank)[0]
    idx = ctx.require_static(node, 1, "indices").astype(np.int64)
    size = xd[axis]
    if size is None:
        raise UnsupportedOpError(f"Gather '{node.get_friendly_name()}': gathered axis {axis} is dynamic")
    idx = np.where(idx < 0, idx + size, idx)
    g = _g(grads)
    if idx.ndim == 0:
        # x[..., i, ...]: the gradient is a unit slice scattered back.
        gu = ops.unsqueeze(g, ctx.i64([axis])).output(0)
        i = int(idx)
        gx = ops.slice_scatter(ctx.zeros_like(x), gu, ctx.i64([i]), ctx.i64([i + 1]), ctx.i64([1]), ctx.i64([axis]))
        return [gx.output(0), None, None]
    flat = idx.reshape(-1)
    # g has shape x[:axis] + idx.shape + x[axis+1:] -> merge the index dims into one.
    shape_g = ops.shape_of(g).output(0)
    head = ops.slice(shape_g, ctx.i64([0]), ctx.i64([axis]), ctx.i64([1])).output(0)
    tail = ops.slice(shape_g, ctx.i64([axis + idx.ndim]), ctx.i64([_INT_MAX]), ctx.i64([1])).output(0)
    g2 = ops.reshape(g, ops.concat([head, ctx.i64([flat.size]), tail], 0), special_zero=False).output(0)
    perm = [axis] + [i for i in range(rank) if i != axis]
    gt = ops.transpose(g2, ctx.i64(perm)).output(0)
    zt = ops.transpose(ctx.zeros_like(x), ctx.i64(perm)).output(0)
    upd = ops.scatter_nd_update(zt, ctx.i64(flat.reshape(-1, 1)), gt, reduction="sum").output(0)
    gx = ops.transpose(upd, ctx.i64(np.argsort(perm))).output(0)
    return [gx, None, None]


def _check_broadcast_op(node: ov.Node) -> str | None:
    mode = str(node.get_attributes().get("mode", "numpy")).lower()
    return None if mode in ("numpy", "bidirectional") else f"Broadcast mode={mode} is not supported"


@register_vjp("Broadcast", check=_check_broadcast_op)
def _broadcast(ctx: RuleContext, node: ov.Node, grads: Grads, needs: Sequence[bool]) -> list[ov.Output | None]:
    return [ctx.sum_to(_g(grads), node.input_value(0))] + [None] * (node.get_input_size() - 1)


@register_vjp("Tile")
def _tile(ctx: RuleContext, node: ov.Node, grads: Grads, needs: Sequence[bool]) -> list[ov.Output | None]:
    # y = tile(x, r): view g as [r0, d0, r1, d1, ...] and sum over the r axes.
    x = node.input_value(0)
    reps = ctx.require_static(node, 1, "repeats").astype(np.int64).reshape(-1)
    xd = ctx.static_dims(x, node, "input", skip=(0,))  # a dynamic batch is -1
    rank = max(len(xd), len(reps))
    xd_full = [1] * (rank - len(xd)) + xd
    reps_full = [1] * (rank - len(reps)) + [int(r) for r in reps]
    if any(d == -1 and r != 1 for d, r in zip(xd_full, reps_full, strict=True)):
        raise UnsupportedOpError(f"Tile '{node.get_friendly_name()}': repeating a dynamic axis is not supported")
    inter = [v for pair in zip(reps_full, xd_full, strict=True) for v in pair]
    g = ops.reshape(_g(grads), ctx.i64(inter), special_zero=False).output(0)
    g = ops.reduce_sum(g, ctx.i64(list(range(0, 2 * rank, 2))), keep_dims=False).output(0)
    return [ops.reshape(g, ops.shape_of(x), special_zero=False).output(0), None]


def _check_pad(node: ov.Node) -> str | None:
    mode = str(node.get_attributes().get("pad_mode", "constant")).lower()
    return None if mode == "constant" else f"Pad mode={mode} is not supported"


@register_vjp("Pad", check=_check_pad)
def _pad(ctx: RuleContext, node: ov.Node, grads: Grads, needs: Sequence[bool]) -> list[ov.Output | None]:
    # Constant padding: the gradient is the inverse Pad (negative pads crop, positive ones restore the
    # cropped part with zeros). Pads computed at run time (ONNX: from ShapeOf of a dynamic-batch tensor,
    # e.g. Swin's pad-to-window-multiple) are negated at run time by the same rule.
    def neg_pads(i: int) -> ov.Output:
        v = ctx.static_value(node.input_value(i))
        if v is not None:
            return ctx.i64(-np.asarray(v, np.int64).reshape(-1))
        return ops.negative(ops.convert(node.input_value(i), ov.Type.i64)).output(0)

    g = _g(grads)
    gx = ops.pad(g, neg_pads(1), neg_pads(2), "constant", ctx.const(0.0, like=g)).output(0)
    return [gx] + [None] * (node.get_input_size() - 1)


@register_vjp("ReduceMean", "ReduceSum")
def _reduce(ctx: RuleContext, node: ov.Node, grads: Grads, needs: Sequence[bool]) -> list[ov.Output | None]:
    """``dx = g`` (``g / count`` for the mean) spread over the reduced axes.

    When the reduced axes are static (the usual case: spatial or channel axes; only the batch is dynamic),
    the spreading is ``Multiply(g, c)`` with a static constant ``c`` holding ``1`` (``1 / count``) shaped
    like ``x`` on the reduced axes and ``1`` elsewhere. The former ``Broadcast(g, ShapeOf(x))`` is
    mathematically the same but the CPU plugin (2026.4) computes it wrongly with a dynamic batch when
    ``g`` comes out of a ``ConvolutionBackpropData`` (its channels-last result is re-labelled planar:
    ``ReduceMean -> 1x1 Convolution``, e.g. GhostNet's head and any SE block, gave 0.8-1.4 relative L2
    error). ``Broadcast`` remains only for dynamic reduced axes.
    """
    x = node.input_value(0)
    xd = ctx.dims(x)
    axes = normalize_axes(ctx.require_static(node, 1, "axes"), len(xd))
    g = _g(grads)
    if not bool(node.get_attributes().get("keep_dims", False)) and axes:
        g = ops.unsqueeze(g, ctx.i64(axes)).output(0)
    mean = node.get_type_name() == "ReduceMean"
    sizes = [xd[a] for a in axes]
    if not axes:
        return [g, None]
    static = [s for s in sizes if s is not None]
    if len(static) == len(sizes):
        shape = [int(xd[i] or 1) if i in axes else 1 for i in range(len(xd))]
        spread = np.full(shape, 1.0 / float(np.prod(static)) if mean else 1.0, np.float32)
        return [ops.multiply(g, ctx.const(spread, like=g)).output(0), None]
    gx = ops.broadcast(g, ops.shape_of(x)).output(0)
    if mean:
        shp = ops.gather(ops.shape_of(x), ctx.i64(axes), ctx.i64(0)).output(0)
        count_t = ops.convert_like(ops.reduce_prod(shp, ctx.i64([0]), keep_dims=False), g).output(0)
        gx = ops.divide(gx, count_t).output(0)
    return [gx, None]


@register_vjp("ReduceMax", "ReduceMin")
def _reduce_max(ctx: RuleContext, node: ov.Node, grads: Grads, needs: Sequence[bool]) -> list[ov.Output | None]:
    # torch amax/amin convention: the gradient is split evenly among the tied extrema.
    x = node.input_value(0)
    axes = normalize_axes(ctx.require_static(node, 1, "axes"), len(ctx.dims(x)))
    y, g = node.output(0), _g(grads)
    if not bool(node.get_attributes().get("keep_dims", False)) and axes:
        y = ops.unsqueeze(y, ctx.i64(axes)).output(0)
        g = ops.unsqueeze(g, ctx.i64(axes)).output(0)
    mask = ops.convert_like(ops.equal(x, y), x).output(0)
    count = ops.reduce_sum(mask, ctx.i64(axes), keep_dims=True).output(0)
    return [ops.multiply(mask, ops.divide(g, count)).output(0), None]
