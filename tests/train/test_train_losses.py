"""Joint-ensemble losses on fixed tensors against direct / independent computations."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from captum.attr import Saliency
from torch import nn

from ovdiv.errors import TrainingError
from ovdiv.train.losses import (
    attribution_diversity_loss,
    attribution_penalty,
    balanced_loss,
    consensus_logits,
    gncl_loss,
    gncl_masked_loss,
    gncl_penalty,
    independent_loss,
    member_ce,
    saliency_maps,
)

RULES = ["average", "median", "geometric", "majority"]


@pytest.fixture
def batch() -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(0)
    logits = torch.randn(3, 6, 5, generator=g, dtype=torch.float64) * 2.0
    labels = torch.tensor([0, 1, 2, 3, 4, 0])
    return logits, labels


def test_independent_is_mean_member_ce(batch):
    z, y = batch
    expected = np.mean([F.cross_entropy(z[i], y).item() for i in range(3)])
    assert independent_loss(z, y).item() == pytest.approx(expected, rel=1e-6)
    assert member_ce(z, y).shape == (3,)


@pytest.mark.parametrize("rule", RULES)
def test_gncl_lambda_zero_equals_independent(batch, rule):
    z, y = batch
    assert gncl_loss(z, y, 0.0, rule).item() == pytest.approx(independent_loss(z, y).item(), rel=1e-7)
    assert gncl_masked_loss(z, y, 0.0, rule).item() == pytest.approx(independent_loss(z, y).item(), rel=1e-7)


def _direct_gncl(z, y, lam, fbar, mask=None):
    """Eq. 2 with H from torch.autograd.functional.hessian of CE at f̄ (a constant)."""
    m, b, _ = z.shape
    total = 0.0
    for i in range(m):
        ce = F.cross_entropy(z[i], y)
        pen = 0.0
        for n in range(b):
            ce_n = lambda f, n=n: F.cross_entropy(f[None], y[n : n + 1])  # noqa: E731
            h = torch.autograd.functional.hessian(ce_n, fbar[n].detach())
            d = z[i, n] - fbar[n]
            w = 1.0 if mask is None else float(mask[i, n])
            pen = pen + w * (d @ h @ d)
        total = total + ce - 0.5 * lam * pen / b
    return total / m


@pytest.mark.parametrize("rule", RULES)
def test_gncl_matches_autograd_hessian(batch, rule):
    z, y = batch
    z1 = z.clone().requires_grad_(True)
    ours = gncl_loss(z1, y, 0.2, rule)
    (g1,) = torch.autograd.grad(ours, z1)
    z2 = z.clone().requires_grad_(True)
    direct = _direct_gncl(z2, y, 0.2, consensus_logits(z2, rule))
    (g2,) = torch.autograd.grad(direct, z2)
    assert ours.item() == pytest.approx(direct.item(), rel=1e-9, abs=1e-12)
    # same gradients: H is a constant in both, f̄ is differentiated through in both
    torch.testing.assert_close(g1, g2, rtol=1e-7, atol=1e-10)


def test_gncl_penalty_is_quadratic_form_and_shift_invariant(batch):
    z, _ = batch
    fbar = consensus_logits(z, "average")
    pen = gncl_penalty(z, fbar)
    p = torch.softmax(fbar, -1)
    for i in range(3):
        for n in range(6):
            h = torch.diag(p[n]) - torch.outer(p[n], p[n])
            d = z[i, n] - fbar[n]
            assert pen[i, n].item() == pytest.approx((d @ h @ d).item(), rel=1e-9)
    torch.testing.assert_close(gncl_penalty(z + 3.0, fbar), pen)
    assert (pen >= -1e-12).all()


def test_gncl_masked_matches_direct(batch):
    z, y = batch
    fbar = consensus_logits(z, "average")
    mask = z.argmax(-1) == y
    assert 0 < mask.sum() < mask.numel()  # the fixture has right and wrong members
    direct = _direct_gncl(z, y, 0.5, fbar, mask)
    assert gncl_masked_loss(z, y, 0.5, "average").item() == pytest.approx(direct.item(), rel=1e-9)
    assert gncl_masked_loss(z, y, 0.5).item() != pytest.approx(gncl_loss(z, y, 0.5).item(), rel=1e-6)


def test_consensus_rules_by_hand():
    z = torch.tensor(
        [
            [[2.0, 0.0, 0.0], [0.0, 1.0, 0.0]],
            [[1.5, 0.0, 0.2], [0.0, 0.0, 3.0]],
            [[0.0, 4.0, 0.0], [0.1, 0.0, 2.0]],
        ]
    )
    torch.testing.assert_close(consensus_logits(z, "average"), z.mean(0))
    p = torch.softmax(z, -1).numpy()
    torch.testing.assert_close(consensus_logits(z, "median"), torch.log(torch.from_numpy(np.median(p, axis=0))))
    torch.testing.assert_close(consensus_logits(z, "geometric"), torch.log_softmax(z, -1).mean(0))
    # sample 0: votes 0,0,1 -> class 0, agreeing members 0 and 1; sample 1: votes 1,2,2 -> members 1,2
    maj = consensus_logits(z, "majority")
    torch.testing.assert_close(maj[0], (z[0, 0] + z[1, 0]) / 2)
    torch.testing.assert_close(maj[1], (z[1, 1] + z[2, 1]) / 2)
    # even M: median is the midpoint of the two middle probabilities (numpy convention)
    z4 = torch.randn(4, 5, 3)
    p4 = torch.softmax(z4, -1).numpy()
    torch.testing.assert_close(consensus_logits(z4, "median"), torch.log(torch.from_numpy(np.median(p4, axis=0))))


def test_majority_tie_break_uses_mean_logit():
    # 2 members, votes 0 and 1: tie; member 1 is more confident -> mean logit favours class 1
    z = torch.tensor([[[1.0, 0.0]], [[0.0, 5.0]]])
    torch.testing.assert_close(consensus_logits(z, "majority"), z[1])


def test_balanced_limits(batch):
    z, y = batch
    ens = F.cross_entropy(z.mean(0), y)
    assert balanced_loss(z, y, 1.0).item() == pytest.approx(ens.item(), rel=1e-9)
    assert balanced_loss(z, y, 0.0).item() == pytest.approx(independent_loss(z, y).item(), rel=1e-9)
    mid = 0.2 * ens + 0.8 * independent_loss(z, y)
    assert balanced_loss(z, y, 0.2).item() == pytest.approx(mid.item(), rel=1e-9)


def test_bad_inputs_raise_training_error(batch):
    z, y = batch
    with pytest.raises(TrainingError, match="consensus"):
        consensus_logits(z, "mode")
    with pytest.raises(TrainingError, match=r"\(M, B, C\)"):
        independent_loss(z[0], y)
    with pytest.raises(TrainingError, match="labels"):
        independent_loss(z, y[:3])


# ---------------------------------------------------------------------------------------------
# attribution diversity
# ---------------------------------------------------------------------------------------------
def _tiny_net(seed: int) -> nn.Module:
    torch.manual_seed(seed)
    return nn.Sequential(
        nn.Conv2d(3, 4, 3, padding=1), nn.Tanh(), nn.AdaptiveAvgPool2d(2), nn.Flatten(), nn.Linear(16, 5)
    ).double()


def test_attribution_penalty_equals_captum_saliency_variance():
    models = [_tiny_net(s) for s in range(3)]
    g = torch.Generator().manual_seed(1)
    x = torch.randn(4, 3, 8, 8, generator=g, dtype=torch.float64)
    y = torch.tensor([0, 1, 2, 3])
    out = attribution_diversity_loss(models, x, y, 0.1, target="label", norm="max")
    sal = [Saliency(m).attribute(x.clone().requires_grad_(), target=y, abs=True) for m in models]
    maps = np.stack([s.detach().numpy() for s in sal])
    maps = maps / maps.reshape(3, 4, -1).max(-1)[..., None, None, None]
    expected = maps.var(axis=0).mean()
    assert out.d_att.item() == pytest.approx(expected, rel=1e-9)
    ce = np.mean([F.cross_entropy(m(x), y).item() for m in models])
    assert out.loss.item() == pytest.approx(ce - 0.1 * expected, rel=1e-9)
    # ensemble target = argmax of mean logits
    _, maps_ens = saliency_maps(models, x, None)
    t = torch.stack([m(x) for m in models]).mean(0).argmax(-1)
    sal0 = Saliency(models[0]).attribute(x.clone().requires_grad_(), target=t, abs=False)
    torch.testing.assert_close(maps_ens[0], sal0)


def test_attribution_loss_double_backprop_reaches_parameters():
    models = [_tiny_net(s) for s in range(2)]
    x = torch.randn(3, 3, 8, 8, dtype=torch.float64, generator=torch.Generator().manual_seed(2))
    y = torch.tensor([0, 1, 2])
    out = attribution_diversity_loss(models, x, y, 1.0)
    params = [p for m in models for p in m.parameters()]
    grads = torch.autograd.grad(out.d_att, params, allow_unused=True, retain_graph=True)
    conv_w = grads[0]
    assert conv_w is not None and conv_w.abs().sum() > 0
    # directional finite difference of D_att along a random direction in member 0's conv weight
    w = models[0][0].weight
    v = torch.randn_like(w)
    analytic = (conv_w * v).sum().item()
    eps = 1e-6

    def d_att_at(delta: float) -> float:
        with torch.no_grad():
            w.add_(delta * v)
        val = attribution_penalty(saliency_maps(models, x, y, create_graph=False)[1]).item()
        with torch.no_grad():
            w.sub_(delta * v)
        return val

    numeric = (d_att_at(eps) - d_att_at(-eps)) / (2 * eps)
    assert analytic == pytest.approx(numeric, rel=1e-4)
    attribution_diversity_loss(models, x, y, 1.0).loss.backward()
    assert all(p.grad is not None for m in models for p in m.parameters())


@pytest.mark.parametrize("norm", ["max", "sum", "none"])
def test_attribution_penalty_matches_the_evaluation_metric(norm):
    from ovdiv.metrics import attribution_diversity

    maps = torch.randn(3, 5, 3, 4, 4, dtype=torch.float64, generator=torch.Generator().manual_seed(5))
    maps[1, 2] = 0.0  # an all-zero map stays zero under both
    assert attribution_penalty(maps, norm).item() == pytest.approx(attribution_diversity(maps.numpy(), norm), rel=1e-12)
