"""Joint-ensemble training losses (DESIGN.md §8), each a plain function over member logits.

Notation: ``M`` members, ``B`` samples in the batch, ``C`` classes. ``logits`` is a float tensor
``(M, B, C)`` holding ``z_i`` (member ``i``'s logits), ``labels`` an int64 tensor ``(B,)``.
``CE(z, y)`` is the batch-mean softmax cross-entropy. Every loss returns a scalar tensor that
is differentiable w.r.t. ``logits`` (and, for the attribution loss, w.r.t. the members' parameters).

Consensus ``f̄`` (the ensemble prediction the GNCL and balanced losses compare members to) is a
``(B, C)`` tensor in *logit space*, i.e. ``softmax(f̄)`` is the ensemble's class distribution; see
:func:`consensus_logits` for the exact definition per rule. The GNCL penalty ``dᵀ H d`` with
``H = diag(p̄) − p̄ p̄ᵀ`` is invariant to adding a constant to ``d`` (``H 1 = 0``), and CE is invariant
to shifting logits, so it does not matter that some rules produce log-probabilities rather than
raw logits.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ovdiv.errors import TrainingError
from ovdiv.types import AttributionNorm, AttributionTarget, Consensus

__all__ = [
    "GNCL_CONSENSUS",
    "AttributionLossOutput",
    "attribution_diversity_loss",
    "attribution_penalty",
    "balanced_loss",
    "consensus_logits",
    "gncl_loss",
    "gncl_masked_loss",
    "gncl_penalty",
    "independent_loss",
    "member_ce",
    "normalize_maps",
    "saliency_maps",
]

GNCL_CONSENSUS: tuple[str, ...] = ("average", "median", "geometric", "majority")
"""Consensus rules accepted by :func:`consensus_logits` (and the GNCL / balanced losses)."""

_PROB_FLOOR = 1e-12  # keeps log(median p) finite when a median probability underflows to 0


def _check(logits: Tensor, labels: Tensor | None = None) -> None:
    if logits.ndim != 3:
        raise TrainingError(f"logits must be (M, B, C), got shape {tuple(logits.shape)}")
    if labels is not None and (labels.ndim != 1 or labels.shape[0] != logits.shape[1]):
        raise TrainingError(f"labels must be (B,) with B={logits.shape[1]}, got shape {tuple(labels.shape)}")


def _up(t: Tensor) -> Tensor:
    """Half-precision (AMP) tensors are upcast to float32; float32/float64 are kept."""
    return t.float() if t.dtype in (torch.float16, torch.bfloat16) else t


def member_ce(logits: Tensor, labels: Tensor) -> Tensor:
    """Per-member batch-mean cross-entropy.

    Args:
        logits: ``(M, B, C)`` member logits.
        labels: ``(B,)`` int64 class indices.

    Returns:
        ``(M,)`` tensor, ``CE(z_i, y) = −(1/B) Σ_b log softmax(z_i[b])[y_b]``.
    """
    _check(logits, labels)
    m, b, c = logits.shape
    per_sample = F.cross_entropy(_up(logits).reshape(m * b, c), labels.repeat(m), reduction="none")
    return per_sample.view(m, b).mean(dim=1)


def consensus_logits(logits: Tensor, rule: str | Consensus = "average") -> Tensor:
    """The ensemble prediction ``f̄`` in logit space, ``(M, B, C) -> (B, C)``.

    Rules (``softmax(f̄)`` is the ensemble's class distribution):

    - ``average``: ``f̄ = (1/M) Σ_i z_i`` — the mean of logits (the paper's "averaging", §5).
    - ``median``: ``f̄ = log(median_i p_i)`` with ``p_i = softmax(z_i)``: the element-wise median of
      the members' probabilities (§5's median rule; midpoint of the two middle values for even M),
      so ``softmax(f̄)`` is the renormalised median distribution. Gradients reach the median member(s).
    - ``geometric``: ``f̄ = (1/M) Σ_i log softmax(z_i)`` — mean of log-probabilities, i.e. the
      normalised geometric mean of the members' distributions.
    - ``majority``: per sample, the plurality class ``v`` of the members' argmaxes (ties broken
      towards the tied class with the highest mean logit — deterministic, no RNG in a training
      step), then ``f̄ = mean of z_i over the members i with argmax z_i = v`` — the average logits
      of the members that agree with the vote. Chosen over ``log`` of the vote histogram because
      that is piecewise constant (no gradient through f̄), is ``−inf`` for classes without votes
      (needs an arbitrary smoothing that would set the penalty's scale) and lives on a different
      scale than member logits; the agreeing members' mean is finite, differentiable, argmax-equal
      to the vote, and reduces to ``average`` when all members agree.

    Args:
        logits: ``(M, B, C)`` member logits.
        rule: One of :data:`GNCL_CONSENSUS`.

    Returns:
        ``(B, C)`` consensus logits (float32 for half inputs, else the input dtype).
    """
    _check(logits)
    rule = str(rule)
    z = _up(logits)
    if rule == Consensus.AVERAGE:
        return z.mean(dim=0)
    if rule == Consensus.GEOMETRIC:
        return F.log_softmax(z, dim=-1).mean(dim=0)
    if rule == Consensus.MEDIAN:
        p = F.softmax(z, dim=-1)
        med = torch.quantile(p, 0.5, dim=0) if p.shape[0] % 2 == 0 else p.median(dim=0).values
        return torch.log(med.clamp_min(_PROB_FLOOR))
    if rule == Consensus.MAJORITY:
        c = z.shape[-1]
        votes = z.argmax(dim=-1)  # (M, B)
        counts = F.one_hot(votes, c).sum(dim=0).float()  # (B, C)
        # break ties by the mean logit, which is < 1 vote apart after scaling into (0, 1)
        mean_z = z.detach().mean(dim=0)
        span = (mean_z.max(dim=-1, keepdim=True).values - mean_z.min(dim=-1, keepdim=True).values).clamp_min(1e-12)
        tie = (mean_z - mean_z.min(dim=-1, keepdim=True).values) / span * 0.5
        winner = (counts + tie).argmax(dim=-1)  # (B,)
        agree = (votes == winner.unsqueeze(0)).float().unsqueeze(-1)  # (M, B, 1); >= 1 member agrees
        return (z * agree).sum(dim=0) / agree.sum(dim=0)
    raise TrainingError(f"unknown consensus rule {rule!r}", f"use one of {', '.join(GNCL_CONSENSUS)}")


def gncl_penalty(logits: Tensor, fbar: Tensor) -> Tensor:
    """Per-member, per-sample GNCL diversity term ``d_iᵀ H d_i`` with ``H`` held constant.

    ``d_i = z_i − f̄``, ``H = ∇²_{f̄} CE(f̄, y) = diag(p̄) − p̄ p̄ᵀ`` with ``p̄ = softmax(f̄)`` (the
    Hessian of CE w.r.t. the logits does not depend on ``y``). ``H`` is detached (a constant in the
    backward pass, Buschjäger et al. 2020); ``d_i`` is not, so gradients flow to ``z_i`` and ``f̄``.
    Computed without forming ``H``: ``dᵀ H d = Σ_c p̄_c d_c² − (Σ_c p̄_c d_c)²``.

    Args:
        logits: ``(M, B, C)`` member logits.
        fbar: ``(B, C)`` consensus logits.

    Returns:
        ``(M, B)`` non-negative penalties.
    """
    _check(logits)
    p_bar = F.softmax(_up(fbar.detach()), dim=-1).unsqueeze(0)  # (1, B, C)
    d = _up(logits) - _up(fbar).unsqueeze(0)  # (M, B, C)
    return (p_bar * d * d).sum(dim=-1) - (p_bar * d).sum(dim=-1).square()


def independent_loss(logits: Tensor, labels: Tensor) -> Tensor:
    """Independent training (Eq. 1), one joint objective: ``L = (1/M) Σ_i CE(z_i, y)``.

    Args:
        logits: ``(M, B, C)`` member logits.
        labels: ``(B,)`` int64 class indices.

    Returns:
        Scalar loss.
    """
    return member_ce(logits, labels).mean()


def gncl_loss(logits: Tensor, labels: Tensor, lam: float, consensus: str | Consensus = "average") -> Tensor:
    """Generalised negative correlation learning (Eq. 2, Buschjäger et al. 2020).

    ``L = (1/M) Σ_i [CE(z_i, y) − (λ/2) mean_b d_i[b]ᵀ H[b] d_i[b]]`` with ``d_i = z_i − f̄``,
    ``H = diag(p̄) − p̄ p̄ᵀ``, ``p̄ = softmax(f̄)`` held constant (:func:`gncl_penalty`) and ``f̄``
    from :func:`consensus_logits`. ``λ = 0`` is :func:`independent_loss`.

    Args:
        logits: ``(M, B, C)`` member logits.
        labels: ``(B,)`` int64 class indices.
        lam: Diversity weight ``λ`` (the paper uses 0.2; ``[0, 1]``).
        consensus: Rule forming ``f̄``.

    Returns:
        Scalar loss.
    """
    ce = member_ce(logits, labels)  # (M,)
    if lam == 0:
        return ce.mean()
    pen = gncl_penalty(logits, consensus_logits(logits, consensus)).mean(dim=1)  # (M,)
    return (ce - 0.5 * lam * pen).mean()


def gncl_masked_loss(logits: Tensor, labels: Tensor, lam: float, consensus: str | Consensus = "average") -> Tensor:
    """GNCL with the penalty masked out where the member is wrong (DESIGN.md §8 f).

    ``L = (1/M) Σ_i [CE(z_i, y) − (λ/2) (1/B) Σ_b 1[argmax z_i[b] = y_b] d_i[b]ᵀ H[b] d_i[b]]`` — a
    member is pushed away from the consensus only on samples it already classifies correctly, so
    diversity is never bought with a member's own errors. The mask is not differentiable (detached).

    Args:
        logits: ``(M, B, C)`` member logits.
        labels: ``(B,)`` int64 class indices.
        lam: Diversity weight ``λ`` (``[0, 1]``).
        consensus: Rule forming ``f̄`` (the paper: ``average``).

    Returns:
        Scalar loss.
    """
    ce = member_ce(logits, labels)
    if lam == 0:
        return ce.mean()
    correct = (logits.detach().argmax(dim=-1) == labels.unsqueeze(0)).float()  # (M, B)
    pen = (gncl_penalty(logits, consensus_logits(logits, consensus)) * correct).mean(dim=1)
    return (ce - 0.5 * lam * pen).mean()


def balanced_loss(logits: Tensor, labels: Tensor, lam: float, consensus: str | Consensus = "average") -> Tensor:
    """Balanced ensemble/member loss (Eq. 3): ``L = λ CE(f̄, y) + (1 − λ)(1/M) Σ_i CE(z_i, y)``.

    ``λ = 1`` trains the ensemble as one model (only the consensus is fitted); ``λ = 0`` is
    :func:`independent_loss`.

    Args:
        logits: ``(M, B, C)`` member logits.
        labels: ``(B,)`` int64 class indices.
        lam: Weight of the ensemble term, ``[0, 1]``.
        consensus: Rule forming ``f̄`` (default ``average``: mean of logits).

    Returns:
        Scalar loss.
    """
    ce_members = member_ce(logits, labels).mean()
    ce_ens = F.cross_entropy(consensus_logits(logits, consensus), labels)
    return lam * ce_ens + (1.0 - lam) * ce_members


# ---------------------------------------------------------------------------------------------
# attribution diversity (Eq. 8)
# ---------------------------------------------------------------------------------------------
def normalize_maps(maps: Tensor, norm: str | AttributionNorm = "max") -> Tensor:
    """Per-map post-processing of DESIGN.md §5: ``|a|`` then divide by the map's max (or sum).

    Same convention as :func:`ovdiv.metrics.normalize_attributions` (an all-zero map stays zero).

    Args:
        maps: ``(M, B, ...)`` raw attributions (any trailing shape, e.g. ``(3, H, W)``).
        norm: ``max`` (default), ``sum`` or ``none``.

    Returns:
        Tensor like ``maps``: ``|a| / max|a|`` (resp. ``/ Σ|a|``) over each map's trailing dims.
    """
    a = maps.abs()
    dims = tuple(range(2, a.ndim))
    norm = str(norm)
    if norm in (AttributionNorm.MAX, AttributionNorm.SUM):
        d = a.amax(dim=dims, keepdim=True) if norm == AttributionNorm.MAX else a.sum(dim=dims, keepdim=True)
        return a / torch.where(d == 0, torch.ones_like(d), d)
    if norm == AttributionNorm.NONE:
        return a
    raise TrainingError(f"unknown attribution norm {norm!r}", "use max, sum or none")


def attribution_penalty(maps: Tensor, norm: str | AttributionNorm = "max") -> Tensor:
    """``D_att`` of a batch: ``mean_b mean_{c,h,w} Var_i â_i[b,c,h,w]`` (population variance).

    Args:
        maps: ``(M, B, ...)`` raw attributions (e.g. saliency ``(M, B, 3, H, W)``).
        norm: Per-map normalisation (:func:`normalize_maps`).

    Returns:
        Scalar, differentiable w.r.t. ``maps``.
    """
    return normalize_maps(maps, norm).var(dim=0, unbiased=False).mean()


def saliency_maps(
    models: Sequence[nn.Module],
    inputs: Tensor,
    targets: Tensor | None,
    *,
    create_graph: bool = True,
    forward: Callable[[nn.Module, Tensor], Tensor] | None = None,
) -> tuple[Tensor, Tensor]:
    """Members' logits and saliency maps ``∂ z_i[b, t_b] / ∂ x[b]`` (captum ``Saliency`` before ``abs``).

    Args:
        models: The M member networks (each ``(B, 3, H, W) -> (B, C)``).
        inputs: ``(B, 3, H, W)`` float network input (need not require grad; a leaf copy is used).
        targets: ``(B,)`` class per sample, or None to use the average-consensus prediction of the
            members (detached).
        create_graph: Keep the graph of the gradients (double backprop) so a loss on the maps can be
            back-propagated to the parameters.
        forward: Optional ``forward(model, x) -> logits`` (e.g. wrapping autocast); default ``model(x)``.

    Returns:
        ``(logits (M, B, C), maps (M, B, 3, H, W))``. In train mode with BatchNorm, sample ``b``'s
        map includes the (O(1/B)) coupling through batch statistics, as plain autograd gives it.
    """
    mods = list(models)
    x = inputs.detach().requires_grad_(True)
    fwd = forward or (lambda mod, t: mod(t))
    logits = [fwd(mod, x) for mod in mods]
    z = torch.stack([_up(lg) for lg in logits])  # (M, B, C)
    if targets is None:
        targets = z.detach().mean(dim=0).argmax(dim=-1)
    idx = targets.view(1, -1, 1).expand(z.shape[0], -1, 1)
    picked = z.gather(-1, idx).squeeze(-1)  # (M, B)
    maps = []
    for i in range(len(mods)):
        (g,) = torch.autograd.grad(picked[i].sum(), x, create_graph=create_graph, retain_graph=True)
        maps.append(g)
    return z, torch.stack(maps)


@dataclass
class AttributionLossOutput:
    """Result of :func:`attribution_diversity_loss`.

    Attributes:
        loss: Scalar joint loss.
        logits: ``(M, B, C)`` member logits (with graph).
        d_att: Scalar ``D_att`` of the batch (with graph).
        ce: ``(M,)`` per-member cross-entropies.
    """

    loss: Tensor
    logits: Tensor
    d_att: Tensor
    ce: Tensor


def attribution_diversity_loss(
    models: Sequence[nn.Module],
    inputs: Tensor,
    labels: Tensor,
    lam: float,
    *,
    target: str | AttributionTarget = "label",
    norm: str | AttributionNorm = "max",
    forward: Callable[[nn.Module, Tensor], Tensor] | None = None,
) -> AttributionLossOutput:
    """Attribution-diversity loss (Eq. 8): ``L = (1/M) Σ_i CE(z_i, y) − λ D_att(batch)``.

    ``D_att = mean_b mean_{c,h,w} Var_i â_i`` (:func:`attribution_penalty`) of the members'
    saliency maps ``a_i = ∂ z_i[t] / ∂ x``, computed with ``create_graph=True`` so the penalty's
    gradient reaches every member's parameters (double backprop, about 2x a plain step).

    Args:
        models: The M member networks.
        inputs: ``(B, 3, H, W)`` float network input.
        labels: ``(B,)`` int64 class indices.
        lam: ``λ`` (the paper's grid: 10, 1, 0.1, 0.01, 0.001).
        target: Class whose saliency is taken: ``label`` (default: the ground truth — stable from
            the first step), ``ensemble`` (the average-consensus prediction, as evaluation's §5
            default) or ``member`` (each member's own prediction).
        norm: Per-map normalisation before the variance (``max`` as §5's default).
        forward: Optional ``forward(model, x) -> logits``.

    Returns:
        :class:`AttributionLossOutput` with the loss, logits, ``D_att`` and per-member CE.
    """
    target = str(target)
    if target == AttributionTarget.LABEL:
        z, maps = saliency_maps(models, inputs, labels, forward=forward)
    elif target == AttributionTarget.ENSEMBLE:
        z, maps = saliency_maps(models, inputs, None, forward=forward)
    elif target == AttributionTarget.MEMBER:
        z, maps = _member_target_saliency(models, inputs, forward)
    else:
        raise TrainingError(f"unknown attribution target {target!r}", "use label, ensemble or member")
    ce = member_ce(z, labels)
    d_att = attribution_penalty(maps, norm)
    return AttributionLossOutput(loss=ce.mean() - lam * d_att, logits=z, d_att=d_att, ce=ce)


def _member_target_saliency(
    models: Sequence[nn.Module], inputs: Tensor, forward: Callable[[nn.Module, Tensor], Tensor] | None
) -> tuple[Tensor, Tensor]:
    x = inputs.detach().requires_grad_(True)
    fwd = forward or (lambda mod, t: mod(t))
    z = torch.stack([_up(fwd(mod, x)) for mod in models])
    picked = z.max(dim=-1).values  # (M, B): each member's top logit
    maps = [torch.autograd.grad(picked[i].sum(), x, create_graph=True, retain_graph=True)[0] for i in range(len(z))]
    return z, torch.stack(maps)
