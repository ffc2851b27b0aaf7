r"""Runtime gradient check: a member's VJP graph against finite differences of its *own* forward graph.

ovdiv differentiates deployed graphs with hand-written per-op rules (:mod:`ovdiv.attribution.vjp`); a wrong
rule gives plausible-looking saliency maps and no error. Before a member's attributions are used, the
check compares, on a few of the run's own images ``x`` with random cotangents ``u`` (``N(0, 1)`` per
class) and a few directions ``v``,

.. math::

    a = \langle \mathrm{VJP}(x, u), v \rangle
    \quad\text{with}\quad
    d(h) = \frac{u^\top f(x + h v) - u^\top f(x - h v)}{2h},

where ``f`` is the member's compiled forward at f32 (the same graph the VJP model recomputes). Nothing
offers this off the shelf (captum and torch.autograd.gradcheck check torch modules, not OpenVINO graphs),
so it is written here.

**Directions.** Per image, one direction along the VJP itself (the highest signal: it probes the whole
gradient, and a rule wrong by a factor shows directly) and random Gaussian directions (they catch a
gradient component the VJP misses). Every ``v`` is scaled to the RMS of ``x`` and the step ``h`` is
relative (``h = 1e-3``), so the perturbation is ~0.1 % of the input whatever its scale. ``a`` is computed
with the perturbation actually representable in f32, ``(x_+ - x_-) / 2h``.

**Normalised error and tolerance.** Each trial's error is ``e = |a - d(h)| / s`` with
``s = sqrt(a^2 + d^2 + ||g||^2 ||v||^2 / n)`` (``n`` input elements: the spread of ``<g, v>`` over random
``v``), so ``e`` reads like a relative gradient error (a rule wrong by a factor 2 gives ``e ~ 0.5``, the
pre-fix GhostNet gradient ``e ~ 0.8``). The finite difference itself is only as good as the forward:
f32 rounding (``~ulp / h``), curvature (``O(h^2)``) and ReLU kinks / max-pool switches crossed by the
segment (``O(h)``). All three are *measured* per trial by a second step ``2h`` (a Richardson-style
consistency check): ``|d(h) - d(2h)|`` bounds ``|d(h) - d(0)|`` for each of these error shapes (by
``1/3`` for curvature, ``~1`` for rounding and kinks). The tolerance of a trial is
``tol = max(RTOL_FLOOR, SAFETY |d(h) - d(2h)| / s, r / s)``, where ``r = eps_f32 sum_i |u_i| |f_i| / 2h`` bounds
the error of ``d(h)`` from the f32 representation of the outputs alone (a worst case, hence no ``SAFETY``): when
the logits are much larger than their change, ``d(h)`` and ``d(2h)`` round to the same value (often exactly 0)
and would look consistent. A single kinked direction can still be off, so the verdict uses robust statistics:
the check fails when the **median** over trials of ``e / tol`` exceeds 1, and, never out-voted, when
any trial's gradient or error is non-finite (reason "non-finite gradient").
When the median tolerance at ``h`` exceeds :data:`INCONCLUSIVE_TOLERANCE` (f32 rounding noise of the forward,
``~ulp / h``, swamps the difference), the trials are repeated at the larger steps :data:`RETRY_STEPS` and the step
with the smallest measured tolerance decides; if even that one is above the bound, the outcome is
``inconclusive``: recorded in the evidence and logged as a warning, never reported as passed, and the run goes on.
A failure decided at a retry step must be confirmed at every retry step (a wrong rule is off at every step, the
roughness of large steps is not); unconfirmed, the outcome is ``inconclusive`` with that reason.
Symmetrically, a failure at :data:`STEP` itself is re-measured at the smaller steps :data:`SMALL_STEPS`: a network
with many kinks close to ``x`` (ReLU6 clamps of a random-weight MobileNetV2) has finite differences whose error
*grows* with ``h`` (each kink the segment crosses adds its slope change), and the Richardson estimate does not
always see it. A wrong rule is off by the same relative error at every step; kinks are crossed less often the
smaller the step. So when a smaller step whose tolerance is valid (at most :data:`INCONCLUSIVE_TOLERANCE`) agrees
with the VJP, the failure is not confirmed: the step with the smallest measured tolerance decides (``passed`` if it
agrees, else ``inconclusive``). The median ratio at every step tried is recorded (``step_ratios``).

**INT8 members.** The VJP of a FakeQuantize is the straight-through estimator (STE); the quantized
forward is piecewise constant, so its finite differences are not the reference. The check instead runs on
the member's graph with every FakeQuantize on the data path replaced by its clamp-affine map
(:func:`ste_reference_model`), the function whose exact derivative the STE is; weights, int8 weight
decompression and weight FakeQuantize (constant subgraphs) are kept. This checks every rule of the member's
graph in its own topology; the STE rule itself, absent from that graph, is checked node by node on the member's
actual FakeQuantize inputs against its definition (:func:`check_ste_rules`, one compiled model for all nodes).
Members with int8/int4 weight constants are compiled for the check with ``DYNAMIC_QUANTIZATION_GROUP_SIZE=0``
(as :class:`~ovdiv.attribution.VJPModel` compiles them unless asked otherwise): by default the CPU
plugin quantizes activations on the fly for such weights, and that forward is a staircase (measured on an
NNCF INT8 resnet18: central differences of -2.0, -5.9, -1.7 at h = 1e-4, 3e-4, 1e-3 where the VJP gives
0.12; with the option off 0.124, 0.112, 0.084).

**Localisation** (``mode="full"``, or after a failed quick check): every node on the gradient path,
one per distinct (type, attributes, input shapes) signature, is checked alone on its *actual* forward
inputs (one image, read from the forward graph): its rule (the registry's, as the VJP builder would call
it) on a one-node graph vs central differences of that node, with value-dependent directions
``v = x psi(x)`` (random smooth ``psi``; they keep zeros at zero, signs and ties, so the ReLU kinks, all-zero
max-pool windows and values clamped at a common bound found in a real network are not crossed). The op
types whose node fails are named in the error. When the model fails but every rule passes alone (the error
comes from how the graph combines them, or from the plugin), :func:`bisect_prefix` finds the first op on the
gradient path whose *prefix* ``x -> t`` (reduced to ``(N, C)`` by a fixed random projection) fails
the same check; that op is named "in context".
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np
import numpy.typing as npt
import openvino as ov
import openvino.opset15 as ops

from ovdiv.attribution.vjp import gradient_path
from ovdiv.attribution.vjp_registry import VJP_RULES, RuleContext
from ovdiv.attribution.vjp_rules_elementwise import fq_ste_scale
from ovdiv.errors import ConfigError, GradientCheckError

__all__ = [
    "GRADIENT_CHECK_MODES",
    "GradientCheckReport",
    "OpCheck",
    "check_gradients",
    "check_ste_rules",
    "check_vjp_functions",
    "localise",
    "ste_reference_model",
]

_log = logging.getLogger("ovdiv.attribution")
F32 = npt.NDArray[np.float32]

GRADIENT_CHECK_MODES = ("off", "quick", "full")
RTOL_FLOOR = 0.1
"""Smallest tolerance of a trial (relative gradient error). A wrong rule gives errors of order 0.3-1;
random-weight ResNet-50s (many ReLU kinks) give up to ~0.05 with a correct gradient."""
SAFETY = 4.0
"""Multiple of the measured finite-difference inconsistency ``|d(h) - d(2h)|`` allowed."""
INCONCLUSIVE_TOLERANCE = 0.5
"""A median tolerance above this means the member's own forward is too rough along the directions (its finite
differences disagree with themselves at ``h`` and ``2h``) for the check to vouch for the gradient: the outcome is
``inconclusive`` (recorded and logged as a warning; the run goes on)."""
STEP = 1e-3
_EPS32 = float(np.finfo(np.float32).eps)
"""Relative step ``h`` (perturbation RMS / input RMS)."""
RETRY_STEPS = (1e-2, 3e-2)
"""Larger relative steps tried when the tolerance at :data:`STEP` says the check is inconclusive. Measured on a
random-weight timm ``levit_128s`` (224 px, logits RMS 0.19; the VJP equals torch float64 autograd to 7e-7): median
tolerance 2.6 at ``h = 1e-3`` but 0.12 at ``1e-2`` (error 0.56 -> 0.017), while float64 torch finite differences
agree with the VJP at ``1e-3``: the forward is smooth, its f32 rounding noise is what the small step cannot beat."""
SMALL_STEPS = (1e-4, 1e-5)
"""Smaller relative steps tried when the check fails at :data:`STEP` (to confirm the failure). Measured on timm
``mobilenetv2_050`` (random weights, FP16-compressed IR, 64 px; its ReLU6 clamps put many kinks within
``1e-3`` of ``x``): median error/tolerance 1.07 at ``h = 1e-3`` (trial errors up to 0.84), 0.35 at ``1e-4`` and 0.11
at ``1e-5`` (errors <= 0.06) -- the finite differences converge to the VJP as the step shrinks. A wrong rule keeps
its error at every step (the doubled-ReLU and zeroed-Multiply injections fail at all three)."""
_SETTINGS = {"quick": (2, 3), "full": (4, 6)}  # (images, directions per image)


def _mode(mode: str) -> str:
    m = str(mode).lower()
    if m not in GRADIENT_CHECK_MODES:
        raise ConfigError(f"--gradient-check {mode!r} is not valid", f"choose one of {list(GRADIENT_CHECK_MODES)}")
    return m


@dataclass
class OpCheck:
    """Local check of one node's rule on its actual inputs (localisation).

    Attributes:
        op_type: Op type name (e.g. ``Convolution``).
        node: Friendly name of the node checked.
        error: Median normalised error over directions.
        tolerance: Median tolerance.
        passed: ``error / tolerance`` median <= 1.
        reason: Why the node could not be checked (then ``passed`` is True and ``error`` None).
    """

    op_type: str
    node: str
    error: float | None
    tolerance: float | None
    passed: bool
    reason: str | None = None


@dataclass
class GradientCheckReport:
    """Outcome of :func:`check_gradients` for one member (recorded in the results' evidence).

    Attributes:
        member: Member name.
        mode: ``quick``, ``full`` or ``off``.
        outcome: ``passed``, ``failed``, ``inconclusive`` (the forward's own finite differences are too
            rough to vouch for the gradient; recorded, the run goes on) or ``skipped``.
        reference: What the VJP was compared with.
        error: Median normalised error ``|a - d| / s`` over trials (a relative gradient error).
        tolerance: Median per-trial tolerance.
        ratio: Median of ``error / tolerance`` per trial (the verdict: fail when > 1).
        worst_error: Largest trial error.
        worst_ratio: Largest trial ``error / tolerance``.
        images: Images used.
        directions: Directions per image.
        step: Relative finite-difference step ``h``.
        seconds: Wall time of the check.
        reason: Why it was skipped, or a one-line summary of a failure.
        suspects: Op types whose local rule failed (localisation).
        ops: The local checks run (``full`` mode or after a failure).
        dynamic_quantization: The member's VJP model's CPU dynamic activation quantization (``off`` unless
            asked for, see :class:`~ovdiv.attribution.VJPModel`); ``n/a`` for torch members.
        step_ratios: Median error/tolerance at every relative step tried (``{"0.001": 0.2}``; more than one when a
            rough or failed first measurement was re-measured at other steps).
    """

    member: str
    mode: str
    outcome: str
    reference: str = ""
    error: float | None = None
    tolerance: float | None = None
    ratio: float | None = None
    worst_error: float | None = None
    worst_ratio: float | None = None
    images: int = 0
    directions: int = 0
    step: float = STEP
    seconds: float = 0.0
    reason: str | None = None
    suspects: list[str] = field(default_factory=list)
    ops: list[OpCheck] = field(default_factory=list)
    dynamic_quantization: str = "n/a"
    step_ratios: dict[str, float] = field(default_factory=dict)

    @property
    def passed(self) -> bool:
        """True only when the check ran and passed (``inconclusive`` and ``skipped`` are not passes)."""
        return self.outcome == "passed"

    @property
    def failed(self) -> bool:
        """True when the check ran and failed (the run must stop); ``inconclusive`` is not a failure."""
        return self.outcome == "failed"

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready dict (floats rounded to 4 significant digits; local checks summarised)."""
        d = asdict(self)

        def r(v: Any) -> Any:
            return float(f"{v:.4g}") if isinstance(v, float) and math.isfinite(v) else v

        d = {k: r(v) for k, v in d.items()}
        d["ops"] = [{k: r(v) for k, v in o.items()} for o in d["ops"] if not o["passed"]]
        d["ops_checked"] = sum(1 for o in self.ops if o.reason is None)
        d["step_ratios"] = {k: r(v) for k, v in self.step_ratios.items()}
        return d

    def message(self) -> str:
        """One line naming the member, the measured error vs tolerance and (if localised) the op types."""
        where = f"; wrong rule for op type(s): {', '.join(self.suspects)}" if self.suspects else ""
        if self.ops and not self.suspects:
            where = "; no single op's rule failed its local check (the error arises from how the graph combines them)"
        if self.ratio is not None and self.ratio <= 1.0 and self.suspects:
            bad = [o for o in self.ops if not o.passed]
            worst = max(bad, key=lambda o: (o.error or 0.0) / (o.tolerance or 1.0))
            return (
                f"member '{self.member}': gradient check ({self.mode}) failed: the VJP rule of op type(s) "
                f"{', '.join(self.suspects)} disagrees with finite differences of the node alone on its actual inputs "
                f"(node '{worst.node}': error {worst.error:.3g} vs tolerance {worst.tolerance:.3g}); whole-model error "
                f"{self.error:.3g} vs tolerance {self.tolerance:.3g}"
            )
        return (
            f"member '{self.member}': gradient check failed: VJP vs finite differences of its own forward "
            f"differ by {self.error:.3g} (median relative error over {self.images}x{self.directions} "
            f"directions) vs tolerance {self.tolerance:.3g}{where}"
        )

    def raise_for_failure(self) -> None:
        """Raise :class:`~ovdiv.errors.GradientCheckError` if the check failed."""
        if self.outcome == "failed":
            raise GradientCheckError(
                self.reason if self.reason and "non-finite gradient" in self.reason else self.message(),
                "its attributions would be wrong; report the model, or run with --attribution none "
                "(--gradient-check off skips the check at your own risk)",
            )


# ---------------------------------------------------------------------------------------------- core
@dataclass
class _Trials:
    error: npt.NDArray[np.float64]
    tolerance: npt.NDArray[np.float64]
    nonfinite_grad: int = 0
    """Non-finite entries of the VJP values (NaN/inf gradient): the member fails whatever the median says."""

    @property
    def nonfinite(self) -> bool:
        """Some trial has a non-finite gradient or a non-finite error (never out-voted by the median)."""
        return self.nonfinite_grad > 0 or not bool(np.all(np.isfinite(self.error)))

    def summary(self) -> dict[str, float]:
        ratio = self.error / self.tolerance
        return {
            "error": float(np.median(self.error)),
            "tolerance": float(np.median(self.tolerance)),
            "ratio": float(np.median(ratio)),
            "worst_error": float(np.max(self.error)),
            "worst_ratio": float(np.max(ratio)),
        }


def _score(
    a: Sequence[float], d: Sequence[float], gnorm2: float, vnorm2: float, n_el: int, rounding: float = 0.0
) -> tuple[float, float]:
    """Normalised error and tolerance of one trial from ``a(h)``, ``d(h)``, ``d(2h)`` (see module docstring).

    ``rounding`` bounds the error of ``d(h)`` due to f32 *representation* of the outputs alone; it is the noise the
    ``d(h)`` vs ``d(2h)`` comparison cannot see when both round to the same value (outputs much larger than their
    change: the differences are then exactly 0 at both steps and would look perfectly consistent).
    """
    scale = math.sqrt(a[0] ** 2 + d[0] ** 2 + gnorm2 * vnorm2 / max(n_el, 1))
    if scale == 0.0 or not math.isfinite(scale):
        return (0.0 if scale == 0.0 else math.inf), RTOL_FLOOR
    return abs(a[0] - d[0]) / scale, max(RTOL_FLOOR, SAFETY * abs(d[0] - d[1]) / scale, rounding / scale)


def _unit_rms(r: np.ndarray, like: np.ndarray) -> np.ndarray:
    """``r`` scaled to the RMS of ``like`` (so the step ``h`` is relative to the input's scale)."""
    rx = float(np.sqrt(np.mean(np.square(like, dtype=np.float64)))) or 1.0
    rv = float(np.sqrt(np.mean(np.square(r, dtype=np.float64)))) or 1.0
    return np.asarray(r, np.float64) * (rx / rv)


def _model_trials(
    forward: Callable[[F32], F32],
    vjp: Callable[[F32, F32], F32],
    x: F32,
    num_classes: int,
    *,
    directions: int,
    rng: np.random.Generator,
    step: float = STEP,
    batch: int = 16,
) -> _Trials:
    """Trials on ``K`` images at once: one VJP request, then ``4 K D`` perturbed forwards."""
    k_img = x.shape[0]
    u = rng.standard_normal((k_img, num_classes)).astype(np.float32)
    g = np.asarray(vjp(x, u), np.float64)
    hs = (step, 2 * step)
    points, meta = [], []
    for k in range(k_img):
        xk = x[k].astype(np.float64)
        gk2 = float(np.sum(g[k] * g[k]))
        for j in range(directions):
            raw = g[k] if (j == 0 and gk2 > 0) else rng.standard_normal(xk.shape)
            v = _unit_rms(raw, xk)
            meta.append((k, gk2, float(np.sum(v * v))))
            for h in hs:
                points.append((xk + h * v).astype(np.float32))
                points.append((xk - h * v).astype(np.float32))
    pts = np.stack(points)
    out = np.concatenate([np.asarray(forward(pts[s : s + batch]), np.float64) for s in range(0, len(pts), batch)])
    errs, tols = [], []
    n_el = int(np.prod(x.shape[1:]))
    for t, (k, gk2, vn2) in enumerate(meta):
        a, d = [], []
        for hi, h in enumerate(hs):
            ip, im = 4 * t + 2 * hi, 4 * t + 2 * hi + 1
            d.append(float(u[k].astype(np.float64) @ (out[ip] - out[im])) / (2 * h))
            delta = pts[ip].astype(np.float64) - pts[im].astype(np.float64)
            a.append(float(np.sum(g[k] * delta)) / (2 * h))
        # f32 representation error of u^T (f+ - f-) at h: each output is off by up to eps/2 |f_i|.
        f_abs = np.maximum(np.abs(out[4 * t]), np.abs(out[4 * t + 1]))
        rounding = _EPS32 * float(np.abs(u[k]).astype(np.float64) @ f_abs) / (2 * hs[0])
        e, tol = _score(a, d, gk2, vn2, n_el, rounding)
        errs.append(e)
        tols.append(tol)
    return _Trials(np.asarray(errs), np.asarray(tols), int(np.size(g) - np.count_nonzero(np.isfinite(g))))


def _value_direction(x: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """``v = x psi(x)`` with a random smooth ``psi`` of the *value*: zeros stay zero, signs and ties stay.

    Equal inputs move together, so all-zero max-pool windows after a ReLU, values clamped at the same bound
    (ReLU6, an INT8 range) and ReLU signs are never switched by the finite difference.
    """
    xd = np.asarray(x, np.float64)
    sig = float(np.sqrt(np.mean(xd * xd))) or 1.0
    psi = np.zeros_like(xd)
    for a, w, p in zip(rng.standard_normal(4), rng.uniform(0.5, 3.0, 4), rng.uniform(0, 2 * np.pi, 4), strict=True):
        psi += a * np.cos(w * xd / sig + p)
    return xd * psi


def _local_trials(
    forward: Callable[[list[F32]], list[F32]],
    vjp: Callable[[list[F32], list[F32]], list[F32]],
    xs: Sequence[F32],
    out_shapes: Sequence[tuple[int, ...]],
    *,
    directions: int,
    rng: np.random.Generator,
    step: float = STEP,
) -> _Trials:
    """Trials of one node (several inputs / outputs, batch 1) with value-dependent directions."""
    us = [rng.standard_normal(s).astype(np.float32) for s in out_shapes]
    grads = [np.asarray(gi, np.float64) for gi in vjp(list(xs), us)]
    gnorm2 = sum(float(np.sum(gi * gi)) for gi in grads)
    n_el = sum(x.size for x in xs)
    hs = (step, 2 * step)
    errs, tols = [], []
    for _ in range(directions):
        v = [_unit_rms(_value_direction(x, rng), x) for x in xs]
        a, d = [], []
        for h in hs:
            xp = [(x.astype(np.float64) + h * vi).astype(np.float32) for x, vi in zip(xs, v, strict=True)]
            xm = [(x.astype(np.float64) - h * vi).astype(np.float32) for x, vi in zip(xs, v, strict=True)]
            op, om = forward(xp), forward(xm)
            d.append(
                sum(
                    float(np.sum(ui.astype(np.float64) * (np.asarray(p, np.float64) - np.asarray(m, np.float64))))
                    for ui, p, m in zip(us, op, om, strict=True)
                )
                / (2 * h)
            )
            a.append(
                sum(
                    float(np.sum(gi * (p.astype(np.float64) - m.astype(np.float64))))
                    for gi, p, m in zip(grads, xp, xm, strict=True)
                )
                / (2 * h)
            )
        vn2 = sum(float(np.sum(vi * vi)) for vi in v)
        e, tol = _score(a, d, gnorm2, vn2, n_el)
        errs.append(e)
        tols.append(tol)
    bad = sum(int(gi.size - np.count_nonzero(np.isfinite(gi))) for gi in grads)
    return _Trials(np.asarray(errs), np.asarray(tols), bad)


def check_vjp_functions(
    forward: Callable[[F32], F32],
    vjp: Callable[[F32, F32], F32],
    x: F32,
    num_classes: int,
    *,
    directions: int = 3,
    seed: int = 0,
    step: float = STEP,
    batch: int = 16,
) -> dict[str, float]:
    """The check on plain functions: ``forward(x) -> logits (N, C)``, ``vjp(x, u) -> grad like x``.

    Args:
        forward: Batched forward (any batch size).
        vjp: Batched VJP.
        x: float32 ``(K, ...)`` images, each checked on its own.
        num_classes: ``C``.
        directions: Directions per image (the first one along the VJP).
        seed: Seed of ``u`` and the directions.
        step: Relative step ``h``.
        batch: Forward batch size for the perturbed points.

    Returns:
        ``error``, ``tolerance``, ``ratio``, ``worst_error``, ``worst_ratio`` (see :class:`GradientCheckReport`).
    """
    x = np.ascontiguousarray(x, dtype=np.float32)
    rng = np.random.default_rng(seed)
    t = _model_trials(forward, vjp, x, num_classes, directions=directions, rng=rng, step=step, batch=batch)
    return t.summary()


# ---------------------------------------------------------------------------------------------- INT8 reference
def ste_reference_model(model: ov.Model) -> tuple[ov.Model, int]:
    """The check's reference for a FakeQuantize model: data-path FakeQuantize -> its clamp-affine map.

    ``FQ(x; il, ih, ol, oh)`` becomes ``ol + (min(max(x, il), ih) - il) (oh - ol) / (ih - il)``: the function the
    STE differentiates exactly (its derivative is ``(oh - ol)/(ih - il)`` inside ``[il, ih]``, 0 outside). The
    result is still the member's graph (weights, int8 decompression and every other op unchanged), differentiated
    by the same builder with the elementwise rules.

    Returns:
        ``(clone, count)``: the modified clone and the number of FakeQuantize ops replaced.
    """
    m = model.clone()
    gp = gradient_path(m)
    count = 0
    for node in gp.ops:
        if node.get_type_name() != "FakeQuantize" or not gp.needs[node.get_name()][0]:
            continue
        x, il, ih, ol, oh = (node.input_value(i) for i in range(5))
        clamped = ops.minimum(ops.maximum(x, il), ih)
        scale = fq_ste_scale(il, ih, ol, oh)  # 0 on an empty range (ih == il), never 0/0
        new = ops.add(ops.multiply(ops.subtract(clamped, il), scale), ol)
        # empty range: FQ is the step ol (x <= il) / oh (x > ih), constant in x on either side
        step = ops.logical_and(ops.equal(il, ih), ops.greater(x, ih))
        new = ops.select(step, oh, new)
        new.set_friendly_name(node.get_friendly_name())
        for target in list(node.output(0).get_target_inputs()):
            target.replace_source_output(new.output(0))
        count += 1
    m.validate_nodes_and_infer_types()
    return m, count


STE_RTOL = 1e-4
"""Largest relative L2 error of a FakeQuantize node's STE rule vs the STE definition on its actual inputs."""


def check_ste_rules(
    model: ov.Model, x: F32, *, seed: int = 0, device: str = "CPU", config: dict[str, Any] | None = None
) -> list[OpCheck]:
    r"""Check the STE rule of every data-path FakeQuantize node on its actual input (one image).

    The rest of the check runs on :func:`ste_reference_model`, where no FakeQuantize is left, so the member's own
    STE rule is verified here: for each node, the registry's rule (as the VJP builder calls it) is applied to a
    random cotangent ``u`` on the node's actual forward input ``x`` and compared with the definition computed in
    numpy, ``u (o_h - o_l) / (i_h - i_l) 1[min(i_l, i_h) <= x <= max(i_l, i_h)]``. All nodes are checked in one
    compiled model (one probe request for the inputs, one for the rules).

    Returns:
        One :class:`OpCheck` per node (``error`` = relative L2 error, ``tolerance`` = :data:`STE_RTOL`); a node
        whose range inputs are not constants is reported with ``reason`` and not checked.
    """
    cfg = {**(config or {}), "INFERENCE_PRECISION_HINT": "f32"}
    m = model.clone()
    m.reshape({m.input(0): ov.PartialShape(list(x.shape))})
    gp = gradient_path(m)
    fqs = [n for n in gp.ops if n.get_type_name() == "FakeQuantize" and gp.needs[n.get_name()][0]]
    if not fqs:
        return []
    probe = ov.Model([ops.result(n.input_value(0)) for n in fqs], m.get_parameters(), "ovdiv_ste_probe")
    res = _compile(probe, device, cfg)({0: np.ascontiguousarray(x, np.float32)})
    values = [np.array(res[k], np.float32, copy=True) for k in range(len(fqs))]
    rng = np.random.default_rng(seed)
    checks: list[OpCheck] = []
    params: list[ov.Node] = []
    feeds: list[np.ndarray] = []
    outs: list[ov.Output] = []
    expected: list[np.ndarray] = []
    checked: list[ov.Node] = []
    for node, val in zip(fqs, values, strict=True):
        rng_in = [node.input_value(i).get_node() for i in range(1, 5)]
        if any(r.get_type_name() != "Constant" for r in rng_in) or node.get_output_element_type(0) != ov.Type.f32:
            checks.append(OpCheck("FakeQuantize", node.get_friendly_name(), None, None, True, "range not constant"))
            continue
        il, ih, ol, oh = (np.asarray(r.get_data(), np.float32) for r in rng_in)
        u = rng.standard_normal(val.shape).astype(np.float32)
        inside = (val >= np.minimum(il, ih)) & (val <= np.maximum(il, ih))
        den = ih - il
        slope = np.where(den == 0, np.float32(0), (oh - ol) / np.where(den == 0, np.float32(1), den))
        expected.append(np.where(inside, u * slope, np.float32(0)).astype(np.float32))
        p = ops.parameter(list(val.shape), ov.Type.f32, name=f"ovdiv_ste_x{len(checked)}")
        pu = ops.parameter(list(val.shape), ov.Type.f32, name=f"ovdiv_ste_u{len(checked)}")
        node.input(0).replace_source_output(p.output(0))
        node.validate_and_infer_types()
        gx = VJP_RULES["FakeQuantize"].fn(RuleContext(), node, [pu.output(0)], [True, False, False, False, False])[0]
        if gx is None:  # pragma: no cover - the rule always returns dx
            gx = RuleContext().zeros_like(p.output(0))
        params += [p, pu]
        feeds += [val, u]
        outs.append(gx)
        checked.append(node)
    if checked:
        rules = ov.Model([ops.result(o) for o in outs], params, "ovdiv_ste_rules")
        got = _compile(rules, device, cfg)(feeds)
        for k, node in enumerate(checked):
            g = np.asarray(got[k], np.float64).reshape(expected[k].shape)
            ref = expected[k].astype(np.float64)
            err = float(np.linalg.norm(g - ref) / max(float(np.linalg.norm(ref)), 1e-30))
            checks.append(OpCheck("FakeQuantize", node.get_friendly_name(), err, STE_RTOL, err <= STE_RTOL))
    return checks


_LOW_BIT = (ov.Type.i8, ov.Type.u8, ov.Type.i4, ov.Type.u4)


def _has_low_bit_weights(model: ov.Model) -> bool:
    """The model holds int8/int4 weight Constants (NNCF INT8 or weight compression)."""
    return any(
        n.get_type_name() == "Constant" and n.get_output_element_type(0) in _LOW_BIT for n in model.get_ordered_ops()
    )


# ---------------------------------------------------------------------------------------------- localisation
_NOT_LOCAL = {"Round", "Floor", "Ceiling", "Sign"}  # piecewise constant: finite differences meaningless


def _signature(node: ov.Node, needs: Sequence[bool]) -> str:
    attrs = node.get_attributes()
    outs = [len(node.output(k).get_target_inputs()) for k in range(node.get_output_size())]
    shapes = [str(node.get_input_partial_shape(i)) for i in range(node.get_input_size())]
    return f"{node.get_type_name()}|{sorted((k, str(v)) for k, v in attrs.items())}|{shapes}|{list(needs)}|{outs}"


def _compile(model: ov.Model, device: str, config: dict[str, Any]) -> ov.CompiledModel:
    from ovdiv.runtime.openvino_member import core

    return core().compile_model(model, device, config)


def localise(
    model: ov.Model,
    x: F32,
    *,
    directions: int = 3,
    seed: int = 0,
    device: str = "CPU",
    config: dict[str, Any] | None = None,
    max_nodes: int = 400,
) -> list[OpCheck]:
    """Check each node's VJP rule alone on its actual forward inputs (one per distinct configuration).

    Args:
        model: Forward model (float NCHW input, static C/H/W), e.g. ``VJPModel.graph.forward``.
        x: float32 ``(1, C, H, W)`` image the forward inputs are taken from.
        directions: Multiplicative random directions per node.
        seed: Seed of cotangents and directions.
        device: OpenVINO device.
        config: Compile properties (``INFERENCE_PRECISION_HINT=f32`` is always set).
        max_nodes: At most this many distinct node configurations are checked (in graph order).

    Returns:
        One :class:`OpCheck` per node checked (``reason`` set when a node could not be checked).
    """
    cfg = {**(config or {}), "INFERENCE_PRECISION_HINT": "f32"}
    m = model.clone()
    m.reshape({m.input(0): ov.PartialShape(list(x.shape))})
    gp = gradient_path(m)
    # Outputs that receive a gradient in the real VJP graph (others get None, as the builder passes them).
    on_path = {n.get_name() for n in gp.ops}
    live = {(gp.logits.get_node().get_name(), gp.logits.get_index())}
    for n in gp.ops:
        for i in range(n.get_input_size()):
            src = n.input_value(i)
            if src.get_node().get_name() in on_path:
                live.add((src.get_node().get_name(), src.get_index()))
    seen: set[str] = set()
    chosen: list[ov.Node] = []
    for node in gp.ops:
        sig = _signature(node, gp.needs[node.get_name()])
        if sig in seen or node.get_type_name() not in VJP_RULES:
            continue
        seen.add(sig)
        chosen.append(node)
        if len(chosen) >= max_nodes:
            break
    # Read every non-Constant input of the chosen nodes from one forward request.
    probes: list[ov.Output] = []
    index: dict[tuple[str, int], int] = {}
    for node in chosen:
        for i in range(node.get_input_size()):
            src = node.input_value(i)
            key = (src.get_node().get_name(), src.get_index())
            if src.get_node().get_type_name() != "Constant" and key not in index:
                index[key] = len(probes)
                probes.append(src)
    values: list[np.ndarray] = []
    if probes:
        probe = ov.Model([ops.result(p) for p in probes], m.get_parameters(), "ovdiv_gradcheck_probe")
        res = _compile(probe, device, cfg)({0: np.ascontiguousarray(x, np.float32)})
        values = [np.array(res[k], copy=True) for k in range(len(probes))]
    rng = np.random.default_rng(seed)
    checks: list[OpCheck] = []
    for node in chosen:
        tname, fname = node.get_type_name(), node.get_friendly_name()
        if tname in _NOT_LOCAL:
            checks.append(OpCheck(tname, fname, None, None, True, "piecewise constant"))
            continue
        needs = gp.needs[node.get_name()]
        inputs: list[np.ndarray] = []
        params: list[ov.Node] = []
        for i in range(node.get_input_size()):
            src = node.input_value(i)
            if src.get_node().get_type_name() == "Constant":
                val = np.asarray(src.get_node().get_data())
                new: ov.Output = src
            else:
                val = values[index[(src.get_node().get_name(), src.get_index())]]
                if needs[i]:
                    p = ops.parameter(list(val.shape), src.get_element_type(), name=f"ovdiv_gc_in{i}")
                    params.append(p)
                    new = p.output(0)
                else:
                    new = ops.constant(val).output(0)
                    if new.get_element_type() != src.get_element_type():
                        new = ops.convert(new, src.get_element_type()).output(0)
            if needs[i]:
                inputs.append(np.ascontiguousarray(val, np.float32))
            node.input(i).replace_source_output(new)
        try:
            node.validate_and_infer_types()
            real = [
                k
                for k in range(node.get_output_size())
                if node.get_output_element_type(k).is_real() and (node.get_name(), k) in live
            ]
            shapes = [tuple(node.get_output_partial_shape(k).to_shape()) for k in real]
            us = [
                ops.parameter(list(s), node.get_output_element_type(k), name=f"ovdiv_gc_u{k}")
                for k, s in zip(real, shapes, strict=True)
            ]
            grads: list[ov.Output | None] = [None] * node.get_output_size()
            for k, u in zip(real, us, strict=True):
                grads[k] = u.output(0)
            ctx = RuleContext()
            in_grads = VJP_RULES[tname].fn(ctx, node, grads, needs)
            outs = [node.output(k) for k in real]
            for i in range(node.get_input_size()):
                if needs[i]:
                    gi = in_grads[i] if i < len(in_grads) else None
                    outs.append(gi if gi is not None else ctx.zeros_like(node.input_value(i)))
            one = ov.Model([ops.result(o) for o in outs], [*params, *us], "ovdiv_gradcheck_node")
            compiled = _compile(one, device, cfg)
        except Exception as exc:  # a rule that cannot be built alone is reported, not fatal
            msg = str(exc).strip().splitlines()[0][:120] if str(exc).strip() else type(exc).__name__
            checks.append(OpCheck(tname, fname, None, None, True, f"not checkable alone ({msg})"))
            continue
        n_in, n_out = len(params), len(real)
        zeros_u = [np.zeros(s, np.float32) for s in shapes]

        def fwd(xs: list[F32], compiled: Any = compiled, zeros_u: list[F32] = zeros_u, n_out: int = n_out) -> list[F32]:
            r = compiled([*xs, *zeros_u])
            return [np.asarray(r[k]) for k in range(n_out)]

        def bwd(
            xs: list[F32], uu: list[F32], compiled: Any = compiled, n_out: int = n_out, n_in: int = n_in
        ) -> list[F32]:
            r = compiled([*xs, *uu])
            return [np.asarray(r[n_out + k]) for k in range(n_in)]

        trials = _local_trials(fwd, bwd, inputs, shapes, directions=directions, rng=rng)
        t = trials.summary()  # a non-finite trial fails the node whatever the median says
        checks.append(OpCheck(tname, fname, t["error"], t["tolerance"], t["ratio"] <= 1.0 and not trials.nonfinite))
    return checks


def _at_smaller_steps(
    measure: Callable[[float], dict[str, float]],
) -> tuple[dict[float, dict[str, float]], list[tuple[float, dict[str, float]]]]:
    """Re-measure a failure at :data:`SMALL_STEPS` (module docstring): every summary, and the valid agreeing ones.

    Returns:
        ``({h: summary}, [(h, summary)])``: all steps measured, and those whose tolerance is valid (at most
        :data:`INCONCLUSIVE_TOLERANCE`) and whose median ratio is at most 1 -- any of them un-confirms the failure.
    """
    measured = {h: measure(h) for h in SMALL_STEPS}
    agree = [
        (h, r)
        for h, r in measured.items()
        if r["tolerance"] <= INCONCLUSIVE_TOLERANCE and math.isfinite(r["ratio"]) and r["ratio"] <= 1.0
    ]
    return measured, agree


def _prefix_model(model: ov.Model, out: ov.Output, seed: int) -> ov.Model | None:
    """``x -> sum_{spatial}(t * R)`` ``(N, C)`` for an intermediate tensor ``t`` (fixed random ``R``), or None."""
    ps = out.get_partial_shape()
    if ps.rank.is_dynamic or ps.rank.get_length() < 2 or not all(d.is_static for d in list(ps)[1:]):
        return None
    rank = ps.rank.get_length()
    t = out if out.get_element_type() == ov.Type.f32 else ops.convert(out, ov.Type.f32).output(0)
    if rank > 2:
        dims = [1, *[d.get_length() for d in list(ps)[1:]]]
        r = np.random.default_rng(seed).standard_normal(dims).astype(np.float32)
        t = ops.reduce_sum(ops.multiply(t, ops.constant(r)), ops.constant(np.arange(2, rank, dtype=np.int64))).output(0)
    return ov.Model([ops.result(t)], model.get_parameters(), "ovdiv_gradcheck_prefix")


def bisect_prefix(
    model: ov.Model,
    x: F32,
    *,
    directions: int = 4,
    seed: int = 0,
    device: str = "CPU",
    config: dict[str, Any] | None = None,
) -> tuple[OpCheck | None, int]:
    """Find the first op on the gradient path whose output's gradient, *in context*, is wrong.

    For a tensor ``t`` produced by the ``k``-th op of the gradient path, the prefix ``x -> t`` (reduced to
    ``(N, C)`` with a fixed random spatial projection) is differentiated by the same builder and checked like a
    member (a failure at :data:`STEP` is confirmed at :data:`SMALL_STEPS`, as for the member). Bisection over ``k``
    (prefix checks fail from the first wrong op on) finds the first failing prefix;
    its op is where a wrong gradient enters (this also catches errors that no rule shows alone, e.g. how
    the builder or the plugin combines them).

    Returns:
        ``(check of the first failing op or None, number of prefix checks run)``.
    """
    from ovdiv.attribution.runner import VJPModel

    m = model.clone()
    gp = gradient_path(m)
    cands = [n for n in gp.ops if n.get_output_size() >= 1 and n.get_output_element_type(0).is_real()]
    rng_seed = seed
    runs = 0
    cache: dict[int, tuple[bool, dict[str, float]]] = {}

    def check(i: int) -> tuple[bool, dict[str, float]] | None:
        nonlocal runs
        if i in cache:
            return cache[i]
        pm = _prefix_model(m, cands[i].output(0), rng_seed + i)
        if pm is None:
            return None
        try:
            r = VJPModel(pm, device=device, config=config)
        except Exception:  # a prefix the builder cannot take (e.g. a rule needing static values downstream)
            return None
        runs += 1

        def measure(h: float) -> dict[str, float]:
            return _model_trials(
                r.forward,
                lambda xx, uu: r.vjp(xx, uu)[1],
                x,
                r.num_classes,
                directions=directions,
                rng=np.random.default_rng(seed),
                step=h,
            ).summary()

        t = measure(STEP)
        ok = t["ratio"] <= 1.0
        if not ok and math.isfinite(t["ratio"]):  # as for the member: kinks crossed within h are not a wrong rule
            agree = _at_smaller_steps(measure)[1]
            if agree:
                ok, t = True, agree[0][1]
        cache[i] = (ok, t)
        return cache[i]

    lo, hi = 0, len(cands) - 1  # invariant: the prefix at hi fails (the whole model does)
    while lo < hi:
        mid = (lo + hi) // 2
        res = None
        j = mid
        while j >= lo and (res := check(j)) is None:  # skip tensors without a usable prefix
            j -= 1
        if res is None:
            lo = mid + 1
            continue
        if res[0]:
            lo = mid + 1
        else:
            hi = j
    final = check(hi)
    if final is None or final[0]:
        return None, runs
    node = cands[hi]
    t = final[1]
    return OpCheck(
        node.get_type_name(), node.get_friendly_name(), t["error"], t["tolerance"], False, "in context"
    ), runs


# ---------------------------------------------------------------------------------------------- member level
def _suspects(checks: Sequence[OpCheck]) -> list[str]:
    return sorted({c.op_type for c in checks if not c.passed})


def _nonfinite_reason(trials: _Trials, x: F32, num_classes: int, backend: Any, own_vjp: bool, seed: int) -> str | None:
    """Why the gradient is non-finite (NaN/inf VJP values or trial errors), or ``None`` if all are finite.

    Any non-finite trial fails the member, whatever the median says. When the trials ran on a reference graph
    (INT8 members: the STE reference), the member's own VJP model is also run once on the images: the saliency
    ovdiv would compute must be finite too.
    """
    if trials.nonfinite_grad:
        return f"{trials.nonfinite_grad} NaN/inf VJP value(s) in the trials"
    bad = int(np.count_nonzero(~np.isfinite(trials.error)))
    if bad:
        return f"{bad} of {trials.error.size} trial(s) with a non-finite error"
    if own_vjp:
        u = np.random.default_rng(seed).standard_normal((len(x), num_classes)).astype(np.float32)
        g = np.asarray(backend.runner.vjp(x, u)[1])
        n = int(g.size - np.count_nonzero(np.isfinite(g)))
        if n:
            return f"{n} of {g.size} NaN/inf value(s) in the member's own VJP"
    return None


def check_gradients(
    member: Any,
    images: Any,
    mode: str = "quick",
    *,
    name: str | None = None,
    seed: int = 0,
    device: str | None = None,
    batch_size: int = 16,
) -> GradientCheckReport:
    """Check a member's gradient graph against finite differences of its own forward (module docstring).

    Args:
        member: What an attribution method accepts (Member, ``openvino.Model``, ``.xml``/``.onnx`` path,
            :class:`~ovdiv.attribution.VJPModel`, ``nn.Module``) or an attribution object
            (:class:`~ovdiv.attribution.Saliency`, ...) whose compiled VJP model is then the one checked.
        images: uint8 ``(N, H, W, 3)`` images (preprocessed like the member's) or float32 ``(N, 3, H, W)``
            network inputs; the first 2 (quick) or 4 (full) are used.
        mode: ``quick`` (2 images x 3 directions), ``full`` (4 x 6, and every node's rule checked alone on
            its actual inputs) or ``off`` (report ``skipped``).
        name: Member name for the report (default: the member's ``name`` attribute).
        seed: Seed of cotangents and directions.
        device: OpenVINO device (default: the member's).
        batch_size: Forward batch of the perturbed points.

    Returns:
        A :class:`GradientCheckReport`; call ``report.raise_for_failure()`` to turn a failure into
        :class:`~ovdiv.errors.GradientCheckError`. A quick check that fails is localised automatically.

    Examples::

        >>> rep = check_gradients(ovdiv.load_member("ir/a.xml"), images_uint8)
        >>> rep.outcome, rep.error, rep.tolerance
        ('passed', 0.012, 0.05)
    """
    from ovdiv.attribution.methods import GradientAttribution, _OVBackend, _resolve_backend, _TorchBackend
    from ovdiv.attribution.runner import VJPModel

    mode = _mode(mode)
    label = name or str(getattr(member, "name", None) or getattr(getattr(member, "card", None), "name", "") or "model")
    if mode == "off":
        return GradientCheckReport(label, mode, "skipped", reason="--gradient-check off")
    t0 = time.perf_counter()
    backend = member._backend if isinstance(member, GradientAttribution) else _resolve_backend(member, device=device)
    n_img, n_dir = _SETTINGS[mode]
    x = backend.to_input(images)[:n_img]
    if len(x) == 0:
        return GradientCheckReport(label, mode, "skipped", reason="no images")
    x = np.ascontiguousarray(x, np.float32)
    forward: Callable[[F32], F32]
    vjp: Callable[[F32, F32], F32]
    graph: ov.Model | None = None
    member_graph: ov.Model | None = None
    run_cfg: dict[str, Any] = {}
    run_device = "CPU"
    dyn_quant = "n/a"
    if isinstance(backend, _TorchBackend):
        import torch

        module, dev = backend.module, backend.torch_device

        def forward(xx: F32) -> F32:
            with torch.no_grad():
                return np.asarray(module(torch.from_numpy(xx).to(dev)).float().cpu().numpy(), np.float32)

        vjp = backend.vjp

        num_classes = int(forward(x[:1]).shape[1])
        reference = "torch autograd vs finite differences of the torch forward (f32)"
    elif isinstance(backend, _OVBackend):
        runner: VJPModel = backend.runner
        run_device, run_cfg = runner.device, dict(runner.compile_config)
        dyn_quant = runner.dynamic_quantization
        reference = "finite differences of the member's compiled forward graph (f32)"
        low_bit = _has_low_bit_weights(runner.graph.forward)
        if runner.fake_quantized or low_bit:
            member_graph = runner.graph.forward
            ref, count = ste_reference_model(member_graph)
            if low_bit and "CPU" in run_device.upper():
                # The CPU plugin quantizes activations on the fly for int8/int4-compressed weights, which makes
                # the forward a staircase (finite differences meaningless); the reference runs without it.
                run_cfg["DYNAMIC_QUANTIZATION_GROUP_SIZE"] = 0
            runner = VJPModel(ref, device=run_device, config=run_cfg)
            reference = "finite differences of the member's forward"
            if count:
                reference += (
                    f" with its {count} data-path FakeQuantize op(s) replaced by their clamp-affine maps (the "
                    "function whose exact gradient the STE is)"
                )
            if low_bit:
                reference += ", dynamic activation quantization off"
            reference += " (f32)"
        graph = runner.graph.forward
        forward = runner.forward

        def vjp(xx: F32, uu: F32, runner: VJPModel = runner) -> F32:
            return runner.vjp(xx, uu)[1]

        num_classes = runner.num_classes
    else:  # pragma: no cover - _resolve_backend only returns the two
        return GradientCheckReport(label, mode, "skipped", reason=f"unsupported backend {type(backend).__name__}")
    rng = np.random.default_rng(seed)

    def measure(h: float) -> dict[str, float]:
        t = _model_trials(forward, vjp, x, num_classes, directions=n_dir, rng=rng, step=h, batch=batch_size)
        return t.summary()

    trials = _model_trials(forward, vjp, x, num_classes, directions=n_dir, rng=rng, batch=batch_size)
    s, step = trials.summary(), STEP
    ratios = {STEP: s["ratio"]}
    retried: list[dict[str, float]] = []
    if s["tolerance"] > INCONCLUSIVE_TOLERANCE:
        # f32 rounding of the forward swamps the difference at h (its share of |d(h) - d(2h)| falls as 1/h):
        # retry with larger steps and keep the one whose *measured* tolerance is smallest.
        for h in RETRY_STEPS:
            retried.append(measure(h))
            ratios[h] = retried[-1]["ratio"]
            if retried[-1]["tolerance"] < s["tolerance"]:
                s, step = retried[-1], h
    failed = s["ratio"] > 1.0 or not math.isfinite(s["ratio"])
    unconfirmed: str | None = None  # why a failure was not confirmed (the outcome is then inconclusive or passed)
    if failed and step == STEP and math.isfinite(s["ratio"]) and not trials.nonfinite:
        # Kinks crossed within h make the finite differences err more the larger the step; a wrong rule errs alike
        # at every step. Re-measure at smaller steps: where one of them (with a valid tolerance) agrees with the
        # VJP, the failure is not confirmed and the step with the smallest measured tolerance decides.
        smaller, agree = _at_smaller_steps(measure)
        ratios.update({h: r["ratio"] for h, r in smaller.items()})
        if agree:
            valid = [
                (h, r)
                for h, r in smaller.items()
                if r["tolerance"] <= INCONCLUSIVE_TOLERANCE and math.isfinite(r["ratio"])
            ]
            step, s = min([(STEP, s), *valid], key=lambda hr: hr[1]["tolerance"])
            failed = False
            if s["ratio"] > 1.0:
                unconfirmed = f"the error exceeds the tolerance at h = {STEP:g} but not at a smaller step"
    # Decided at a retry step (the rough regime where curvature and kinks grow with h): a wrong rule is off at every
    # step, noise is not -- a failure there must be confirmed by every retry step, else inconclusive (measured:
    # torchvision efficientnet_v2_l ONNX, random weights, |grad| 2.4e-5: ratio 1.01 at 3e-2 only).
    if failed and step != STEP and math.isfinite(s["ratio"]) and not all(r["ratio"] > 1.0 for r in retried):
        unconfirmed = "the error exceeds the tolerance at one retry step only"
        failed = False
    nonfinite = _nonfinite_reason(trials, x, num_classes, backend, member_graph is not None, seed)
    failed = failed or nonfinite is not None
    ste_bad: list[OpCheck] = []
    if member_graph is not None:  # the STE rule itself (absent from the reference graph)
        ste = check_ste_rules(member_graph, x[:1], seed=seed, device=run_device, config=run_cfg)
        ste_bad = [c for c in ste if not c.passed]
        done = [c.error for c in ste if c.error is not None]
        if done:
            reference += (
                f"; the STE rule of its {len(done)} FakeQuantize node(s) checked against the STE definition on their "
                f"actual inputs (worst relative error {max(done):.2g})"
            )
        failed = failed or bool(ste_bad)
    rough = s["tolerance"] > INCONCLUSIVE_TOLERANCE or unconfirmed is not None
    outcome = "failed" if failed else "inconclusive" if rough else "passed"
    rep = GradientCheckReport(
        label,
        mode,
        outcome,
        reference=reference,
        error=s["error"],
        tolerance=s["tolerance"],
        ratio=s["ratio"],
        worst_error=s["worst_error"],
        worst_ratio=s["worst_ratio"],
        images=len(x),
        directions=n_dir,
        dynamic_quantization=dyn_quant,
        step=step,
        step_ratios={f"{h:g}": r for h, r in sorted(ratios.items())},
    )
    if graph is not None and (failed or mode == "full"):
        rep.ops = localise(graph, x[:1], seed=seed, device=run_device, config=run_cfg) + ste_bad
        rep.suspects = _suspects(rep.ops)
        if failed and not rep.suspects:  # every rule is right alone: find where the error enters in context
            first, _ = bisect_prefix(graph, x[:1], seed=seed, device=run_device, config=run_cfg)
            if first is not None:
                rep.ops.append(first)
                rep.suspects = [f"{first.op_type} (in context, node '{first.node}')"]
        if rep.suspects and not failed:  # full mode: a node whose rule fails its local check fails the member
            failed = True
            rep.outcome = "failed"
    if nonfinite is not None:
        rep.outcome = "failed"
        rep.reason = f"member '{label}': gradient check failed: non-finite gradient ({nonfinite})"
        _log.info("%s", rep.reason)
    elif failed:
        rep.reason = rep.message()
        _log.info("%s", rep.reason)  # the caller raises it as one error line
    elif outcome == "inconclusive" and unconfirmed:
        steps = ", ".join(f"{h}: {r:.3g}" for h, r in rep.step_ratios.items())
        rep.reason = (
            f"finite differences of the forward are too rough to vouch for the gradient: {unconfirmed} "
            f"(median error/tolerance by step {steps})"
        )
        _log.warning("member '%s': gradient check inconclusive: %s", label, rep.reason)
    elif outcome == "inconclusive":
        rep.reason = (
            f"finite differences of the forward are too rough to vouch for the gradient (median tolerance "
            f"{rep.tolerance:.3g} > {INCONCLUSIVE_TOLERANCE}); error {rep.error:.3g}"
        )
        _log.warning("member '%s': gradient check inconclusive: %s", label, rep.reason)
    else:
        _log.info(
            "member '%s': gradient check %s passed (error %.3g, tolerance %.3g)", label, mode, rep.error, rep.tolerance
        )
    rep.seconds = time.perf_counter() - t0
    return rep
