r"""VJP rule of ``Interpolate`` (v4 and v11): every mode, coordinate transform, antialias and pads.

For static spatial sizes ``Interpolate`` is *linear* in its data input and *separable*: along each
interpolated axis ``a`` it applies a fixed ``[out_a, in_a]`` matrix ``M_a`` (pads included), so
``y = x \times_{a_1} M_{a_1} \times_{a_2} M_{a_2} \cdots`` and the VJP is ``g`` contracted with the transposed
matrices, one MatMul per axis.

The matrices are not re-derived from formulas: each ``M_a`` is *measured* by running the very same op
(same mode, coordinate transform, nearest mode, cube coefficient, antialias, pads, scale or size) on the
CPU plugin, restricted to axis ``a``, on a one-hot basis (column ``k`` of ``M_a`` is the response to
``e_k``). Every mode is therefore exact by construction. Separability (the assumption behind the
per-axis factorisation) is then verified on the host: the full multi-axis op applied to a random input
must equal the per-axis products (relative error <= 1e-5), otherwise the rule refuses the node.

Why by hand: OpenVINO has no autodiff and no transposed Interpolate; torch's upsample backward kernels
cover only the torch modes and cannot run inside the OpenVINO VJP graph.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import numpy as np
import openvino as ov
import openvino.opset11 as ops11
import openvino.opset15 as ops

from ovdiv.attribution.vjp_registry import Grads, RuleContext, _evaluate_output, register_vjp
from ovdiv.errors import UnsupportedOpError

__all__: list[str] = []

_SEPARABILITY_TOL = 1e-5
_PROBE = 7  # size used to check that a dynamic (batch) axis with scale 1 is the identity


def _attrs(node: ov.Node) -> dict[str, object]:
    a = node.get_attributes()
    return {
        "mode": str(a["mode"]).lower(),
        "shape_calculation_mode": str(a.get("shape_calculation_mode", "sizes")).lower(),
        "coordinate_transformation_mode": str(a.get("coordinate_transformation_mode", "half_pixel")).lower(),
        "nearest_mode": str(a.get("nearest_mode", "round_prefer_floor")).lower(),
        "antialias": bool(a.get("antialias", False)),
        "cube_coeff": float(a.get("cube_coeff", -0.75)),
        "pads_begin": [int(v) for v in a.get("pads_begin", [])],
        "pads_end": [int(v) for v in a.get("pads_end", [])],
    }


def _static(out: ov.Output, ctx: RuleContext | None) -> np.ndarray | None:
    if ctx is not None:
        return ctx.static_value(out)
    return _evaluate_output(out, {})


def _inputs(node: ov.Node) -> tuple[int | None, int | None, int | None]:
    """Indices of the (sizes, scales, axes) inputs for the node's version (None where absent)."""
    version = node.get_type_info().version_id
    n = node.get_input_size()
    if version == "opset4":
        return 1, 2, (3 if n > 3 else None)
    # v11: scales_or_sizes, [axes]
    mode = _attrs(node)["shape_calculation_mode"]
    return (1 if mode == "sizes" else None), (1 if mode == "scales" else None), (2 if n > 2 else None)


class _Spec:
    """Resolved per-axis description of one Interpolate node."""

    def __init__(self, node: ov.Node, ctx: RuleContext | None) -> None:
        self.attrs = _attrs(node)
        ps_in, ps_out = node.get_input_partial_shape(0), node.get_output_partial_shape(0)
        if ps_in.rank.is_dynamic:
            raise _Reject("dynamic rank")
        self.rank = ps_in.rank.get_length()
        self.din = [d.get_length() if d.is_static else None for d in ps_in]
        self.dout = [d.get_length() if d.is_static else None for d in ps_out]
        _, i_scales, i_axes = _inputs(node)
        if i_axes is not None:
            av = _static(node.input_value(i_axes), ctx)
            if av is None:
                raise _Reject("axes are not a build-time constant")
            axes = [int(v) + self.rank if int(v) < 0 else int(v) for v in np.asarray(av).reshape(-1)]
        else:
            axes = list(range(self.rank))
        self.axes = axes
        scales: list[float | None] = [None] * len(axes)
        if self.attrs["shape_calculation_mode"] == "scales":
            sv = _static(node.input_value(i_scales), ctx) if i_scales is not None else None
            if sv is None:
                raise _Reject("scales are not a build-time constant")
            scales = [float(v) for v in np.asarray(sv, np.float64).reshape(-1)]
            if len(scales) != len(axes):
                raise _Reject("scales and axes differ in length")
        self.scales = scales
        pb = self.attrs["pads_begin"] or [0] * self.rank
        pe = self.attrs["pads_end"] or [0] * self.rank
        assert isinstance(pb, list) and isinstance(pe, list)
        self.pb = pb + [0] * (self.rank - len(pb))
        self.pe = pe + [0] * (self.rank - len(pe))
        for a in range(self.rank):
            if a not in axes and (self.pb[a] or self.pe[a]):
                raise _Reject(f"pads on the non-interpolated axis {a}")
        self.version = node.get_type_info().version_id
        # axis -> "static" (matrix measured) | "identity-dynamic" (dynamic axis, must be the identity)
        self.kind: dict[int, str] = {}
        for j, a in enumerate(axes):
            if self.din[a] is not None and self.dout[a] is not None:
                self.kind[a] = "static"
                continue
            if self.din[a] is None and self.pb[a] == 0 and self.pe[a] == 0:
                sc = scales[j]
                if self.attrs["shape_calculation_mode"] == "scales" and sc == 1.0:
                    self.kind[a] = "identity-dynamic"
                    continue
                if self.attrs["shape_calculation_mode"] == "sizes" and self._sizes_follow_input(node, a, ctx):
                    self.kind[a] = "identity-dynamic"
                    continue
            raise _Reject(f"dynamic size on interpolated axis {a} (reshape the model to a static spatial input)")

    @staticmethod
    def _sizes_follow_input(node: ov.Node, a: int, ctx: RuleContext | None) -> bool:
        """Whether a dynamic axis in sizes mode keeps its size: ``sizes[a] = ShapeOf(data)[a]``.

        ONNX ``Resize`` has ``sizes = Concat(ShapeOf(x)[:2], const)``. Verified structurally: the size entry
        of that axis is a slice/gather of ``ShapeOf`` of the op's own data input at index ``a``.
        """
        return _size_is_input_dim(node, a)

    def value(self, a: int) -> float:
        """Scale (scales mode) or size (sizes mode) of axis ``a`` for the one-axis probe op."""
        j = self.axes.index(a)
        if self.attrs["shape_calculation_mode"] == "scales":
            sc = self.scales[j]
            assert sc is not None
            return sc
        d = self.dout[a]
        if d is None:  # a dynamic axis whose target size is its own input size: probed at size _PROBE
            return float(_PROBE)
        return float(d)


class _Reject(Exception):
    pass


def _size_is_input_dim(node: ov.Node, a: int) -> bool:
    """Whether entry ``a`` of the sizes input is ``ShapeOf(node.input(0))[a]``.

    Followed through Concat/Slice/StridedSlice/Gather/Convert of that ShapeOf.
    """
    i_sizes, _, i_axes = _inputs(node)
    if i_sizes is None or i_axes is not None:
        return False
    data_src = node.input_value(0)
    return _shape_entry_is(node.input_value(i_sizes), a, data_src)


def _shape_entry_is(out: ov.Output, idx: int, data_src: ov.Output, depth: int = 0) -> bool:
    if depth > 8:
        return False
    n = out.get_node()
    t = n.get_type_name()
    if t in ("Convert",):
        return _shape_entry_is(n.input_value(0), idx, data_src, depth + 1)
    if t == "Concat":
        off = 0
        for i in range(n.get_input_size()):
            ps = n.get_input_partial_shape(i)
            if ps.rank.is_dynamic or not ps[0].is_static:
                return False
            ln = ps[0].get_length()
            if idx < off + ln:
                return _shape_entry_is(n.input_value(i), idx - off, data_src, depth + 1)
            off += ln
        return False
    if t in ("ShapeOf",):
        src = n.input_value(0)
        same = src.get_node().get_name() == data_src.get_node().get_name() and src.get_index() == data_src.get_index()
        return same
    if t in ("Slice", "StridedSlice", "Gather"):
        v = [_evaluate_output(n.input_value(i), {}) for i in range(1, n.get_input_size())]
        if any(x is None for x in v):
            return False
        if t == "Gather":
            idxs = np.asarray(v[0]).reshape(-1)
            return idx < len(idxs) and _shape_entry_is(n.input_value(0), int(idxs[idx]), data_src, depth + 1)
        start = int(np.asarray(v[0]).reshape(-1)[0])
        step = int(np.asarray(v[2]).reshape(-1)[0]) if len(v) > 2 and v[2] is not None else 1
        if start < 0 or step <= 0:
            return False
        return _shape_entry_is(n.input_value(0), start + idx * step, data_src, depth + 1)
    return False


def _run_cpu(probes: Sequence[tuple[Callable[[ov.Output], ov.Node], np.ndarray]]) -> list[np.ndarray]:
    """Each ``build(x)`` compiled (all in one model) on the CPU plugin in f32 and run on its ``x``.

    Inputs are fed through Parameters: a Parameter-free model would be constant-folded by the host
    reference implementation instead of running the plugin's own Interpolate kernel.
    """
    params = [ops.parameter(list(x.shape), ov.Type.f32) for _, x in probes]
    results = [ops.result(build(p.output(0))) for p, (build, _) in zip(params, probes, strict=True)]
    model = ov.Model(results, params, "ovdiv_interp_probe")
    compiled = ov.Core().compile_model(model, "CPU", {"INFERENCE_PRECISION_HINT": "f32"})
    res = compiled([x for _, x in probes])
    return [np.array(res[i], copy=True) for i in range(len(probes))]


def _basis(spec: _Spec, a: int, n_in: int) -> np.ndarray:
    """One-hot basis along axis ``a``, one basis vector per position of a carrier axis ``c != a``."""
    c = next(b for b in range(spec.rank) if b != a)
    shape = [1] * spec.rank
    shape[a] = n_in
    shape[c] = n_in
    basis = np.zeros(shape, np.float32)
    idx = [0] * spec.rank
    for k in range(n_in):
        idx[a] = k
        idx[c] = k
        basis[tuple(idx)] = 1.0
    return basis


def _matrix_from(spec: _Spec, a: int, n_in: int, y: np.ndarray) -> np.ndarray:
    """``M_a [out, n_in]`` from the response ``y`` of the one-axis op to :func:`_basis`."""
    c = next(b for b in range(spec.rank) if b != a)
    sel: list[slice | int] = [spec.pb[b] for b in range(spec.rank)]  # the data position of the other axes
    sel[a] = slice(None)
    sel[c] = slice(spec.pb[c], spec.pb[c] + n_in)
    m = y[tuple(sel)]  # axes (a, c) in index order
    m = m if a < c else m.T  # -> [out_a, n_in]
    return np.ascontiguousarray(m, dtype=np.float32)


def _apply(x: np.ndarray, mats: dict[int, np.ndarray]) -> np.ndarray:
    y = x.astype(np.float64)
    for a, m in mats.items():
        y = np.moveaxis(np.tensordot(m.astype(np.float64), y, axes=([1], [a])), 0, a)
    return y


def _full_op(spec: _Spec, axes: Sequence[int]) -> Callable[[ov.Output], ov.Node]:
    """The node's interpolation over ``axes`` (Interpolate-11, same attributes)."""
    at = spec.attrs
    scm = str(at["shape_calculation_mode"])
    vals = [spec.value(a) for a in axes]
    val = np.array(vals, np.float32) if scm == "scales" else np.array([round(v) for v in vals], np.int64)

    def build(d: ov.Output) -> ov.Node:
        return ops11.interpolate(
            d,
            ops.constant(val),
            str(at["mode"]),
            scm,
            pads_begin=spec.pb,
            pads_end=spec.pe,
            coordinate_transformation_mode=str(at["coordinate_transformation_mode"]),
            nearest_mode=str(at["nearest_mode"]),
            antialias=bool(at["antialias"]),
            cube_coeff=float(at["cube_coeff"]),  # type: ignore[arg-type]
            axes=ops.constant(np.array(list(axes), np.int64)),
        )

    return build


def _measure(spec: _Spec) -> dict[int, np.ndarray] | str:
    """Per-axis matrices of the non-identity axes, or the reason the node is refused.

    One CPU compile holds every probe: the one-axis op of each interpolated axis on its one-hot basis
    (a dynamic, scale-1 axis is probed at size 7 and must be the identity) and the full op on a random
    input for the separability check.
    """
    sizes = {a: (spec.din[a] if spec.kind[a] == "static" else _PROBE) for a in spec.axes}
    probes: list[tuple[Callable[[ov.Output], ov.Node], np.ndarray]] = []
    for a in spec.axes:
        n = sizes[a]
        assert n is not None
        probes.append((_full_op(spec, [a]), _basis(spec, a, n)))
    static_axes = [a for a in spec.axes if spec.kind[a] == "static"]
    shape = [1] * spec.rank
    for a in static_axes:
        n = spec.din[a]
        assert n is not None
        shape[a] = n
    x = np.random.default_rng(0).standard_normal(shape).astype(np.float32)
    if static_axes:
        probes.append((_full_op(spec, static_axes), x))
    ys = _run_cpu(probes)
    mats: dict[int, np.ndarray] = {}
    for a, y in zip(spec.axes, ys, strict=False):
        n = sizes[a]
        assert n is not None
        m = _matrix_from(spec, a, n, y)
        if spec.kind[a] == "static":
            if m.shape[0] != spec.dout[a]:
                return f"the one-axis probe of axis {a} gives {m.shape[0]} outputs, the node {spec.dout[a]}"
            if m.shape[0] != n or not np.array_equal(m, np.eye(n, dtype=np.float32)):
                mats[a] = m
        elif not np.array_equal(m, np.eye(n, dtype=np.float32)):
            return f"scale-1 dynamic axis {a} is not the identity in mode {spec.attrs['mode']}"
    if static_axes:
        # Separability: the full multi-axis op vs the product of the per-axis matrices.
        y = ys[-1]
        sel = tuple(slice(None) if a in static_axes else slice(spec.pb[a], spec.pb[a] + 1) for a in range(spec.rank))
        y = y[sel]
        ref = _apply(x, mats)
        err = (
            float(np.linalg.norm(y - ref) / max(float(np.linalg.norm(ref)), 1e-30)) if y.shape == ref.shape else np.inf
        )
        if err > _SEPARABILITY_TOL:
            return f"mode {spec.attrs['mode']} is not separable here (per-axis error {err:.1e})"
    return mats


_CACHE: dict[tuple[object, ...], dict[int, np.ndarray] | str] = {}


def _matrices(spec: _Spec) -> dict[int, np.ndarray] | str:
    key = (
        tuple(sorted((k, str(v)) for k, v in spec.attrs.items())),
        tuple(spec.axes),
        tuple(spec.din),
        tuple(spec.dout),
        tuple(spec.scales),
        tuple(sorted(spec.kind.items())),
    )
    if key not in _CACHE:
        if len(_CACHE) > 512:
            _CACHE.clear()
        _CACHE[key] = _measure(spec)
    return _CACHE[key]


_SUPPORTED_MODES = {"nearest", "linear", "linear_onnx", "cubic", "bilinear_pillow", "bicubic_pillow"}


def _check_interpolate(node: ov.Node) -> str | None:
    version = node.get_type_info().version_id
    if version not in ("opset4", "opset11"):
        return f"Interpolate-{version} is not supported (re-convert the model with a current OpenVINO)"
    mode = str(node.get_attributes().get("mode", "")).lower()
    if mode not in _SUPPORTED_MODES:
        return f"Interpolate mode={mode} is not supported"
    try:
        spec = _Spec(node, None)
    except _Reject as exc:
        return f"Interpolate: {exc}"
    res = _matrices(spec)
    return f"Interpolate: {res}" if isinstance(res, str) else None


@register_vjp("Interpolate", check=_check_interpolate)
def _interpolate(ctx: RuleContext, node: ov.Node, grads: Grads, needs: Sequence[bool]) -> list[ov.Output | None]:
    r"""``dx = g \times_a M_a^T`` over the interpolated axes (MatMul with constant transposed matrices)."""
    g = grads[0]
    if g is None:  # pragma: no cover
        return [None] * node.get_input_size()
    try:
        spec = _Spec(node, ctx)
    except _Reject as exc:
        raise UnsupportedOpError(f"Interpolate '{node.get_friendly_name()}': {exc}") from exc
    mats = _matrices(spec)
    if isinstance(mats, str):
        raise UnsupportedOpError(f"Interpolate '{node.get_friendly_name()}': {mats}")
    r = spec.rank
    out = g
    for a, m in mats.items():
        mt = ctx.const(m, like=g)  # [out_a, in_a]
        if a == r - 1:
            out = ops.matmul(out, mt, False, False).output(0)  # [..., out] @ [out, in]
        elif a == r - 2:
            out = ops.matmul(mt, out, True, False).output(0)  # [in, out] @ [..., out, W]
        else:
            perm = [b for b in range(r) if b != a] + [a]
            t = ops.transpose(out, ctx.i64(perm)).output(0)
            t = ops.matmul(t, mt, False, False).output(0)
            out = ops.transpose(t, ctx.i64(np.argsort(perm))).output(0)
    return [out] + [None] * (node.get_input_size() - 1)
