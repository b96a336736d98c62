"""Lecture 20: the GAN losses against torch's BCE and hand-computed values, the gradient penalty by hand and its
differentiability, the mode counter, the gradient measurement, the 2-D training loop, the widget's plot and the
digit GAN's shapes."""
from __future__ import annotations

import math

import matplotlib.pyplot as plt
import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F

import utils
from solutions import l20_gan as L
from utils.widgets import render


def test_discriminator_loss_is_bce_with_logits():
    g = torch.Generator().manual_seed(0)
    r, f = torch.randn(7, 1, generator=g), torch.randn(5, 1, generator=g)
    expected = (F.binary_cross_entropy_with_logits(r, torch.ones_like(r))
                + F.binary_cross_entropy_with_logits(f, torch.zeros_like(f)))
    assert torch.allclose(L.discriminator_loss(r, f), expected, atol=1e-6)
    assert math.isclose(L.discriminator_loss(torch.zeros(3), torch.zeros(3)).item(), math.log(4), rel_tol=1e-6)
    assert torch.isfinite(L.discriminator_loss(torch.tensor([-200.0]), torch.tensor([200.0])))


def test_generator_losses_and_their_slopes():
    logit = torch.tensor([[-6.0]], requires_grad=True)
    d = torch.sigmoid(logit).item()
    assert math.isclose(L.generator_loss(logit).item(), -math.log(d), rel_tol=1e-5)
    assert math.isclose(L.saturating_generator_loss(logit).item(), math.log(1 - d), rel_tol=1e-5)
    (ns,) = torch.autograd.grad(L.generator_loss(logit), logit)
    (sat,) = torch.autograd.grad(L.saturating_generator_loss(logit), logit)
    assert math.isclose(ns.item(), -(1 - d), rel_tol=1e-5) and math.isclose(sat.item(), -d, rel_tol=1e-5)
    assert abs(ns.item()) > 100 * abs(sat.item())  # the whole point of the non-saturating loss


def test_gradient_penalty_by_hand_and_differentiable():
    critic = nn.Linear(3, 1)
    with torch.no_grad():
        critic.weight.copy_(torch.tensor([[2.0, 0.0, 0.0]]))
    real, fake = torch.randn(4, 3), torch.randn(4, 3)
    assert math.isclose(L.gradient_penalty(critic, real, fake).item(), 1.0, rel_tol=1e-6)  # (2 - 1)^2
    L.gradient_penalty(critic, real, fake).backward()
    # d/dw (|w| - 1)^2 = 2 (|w| - 1) w / |w| = (2, 0, 0) for w = (2, 0, 0)
    assert torch.allclose(critic.weight.grad, torch.tensor([[2.0, 0.0, 0.0]]), atol=1e-6)


def test_gradient_penalty_uses_interpolates():
    critic = nn.Sequential(nn.Linear(2, 8), nn.Tanh(), nn.Linear(8, 1))
    real, fake = torch.randn(6, 2), torch.randn(6, 2)
    at_real = L.gradient_penalty(critic, real, fake, torch.ones(6))
    x = real.clone().requires_grad_(True)
    (grad,) = torch.autograd.grad(critic(x).sum(), x)
    assert torch.allclose(at_real, ((grad.norm(dim=1) - 1) ** 2).mean(), atol=1e-6)


def test_count_modes():
    c = L.ring_centres()
    assert c.shape == (8, 2) and torch.allclose(c.norm(dim=1), torch.full((8,), 2.0))
    X, y = utils.data.gaussian_mixture(4000, std=0.1, seed=1)
    assert torch.allclose(X, c[y], atol=0.6)  # the centres match the data generator's
    covered, off = L.count_modes(X, c, 0.1)
    assert covered == 8 and off < 0.03
    covered, off = L.count_modes(c[:1].repeat(50, 1), c, 0.1)
    assert (covered, off) == (1, 0.0)
    assert L.count_modes(torch.zeros(10, 2), c, 0.1) == (0, 1.0)


def test_saturating_gradient_vanishes_at_start():
    X, _ = utils.data.gaussian_mixture(2000, std=0.1, seed=0)
    out = L.generator_grad_norms(X, d_steps=100, seed=0, batch_size=128)
    assert out["D(G(z))"] < 0.1
    assert out["non-saturating"] > 10 * out["saturating"]


def test_train_gan_2d_snapshots_and_widget():
    X, _ = utils.data.gaussian_mixture(1000, std=0.1, seed=0)
    run = L.train_gan_2d(X, steps=30, gp_weight=1.0, seed=0, snapshot_every=10, n_snapshot=200)
    assert sorted(run["snapshots"]) == [0, 10, 20, 30]
    assert run["snapshots"][30].shape == (200, 2) and len(run["d_loss"]) == 30
    again = L.train_gan_2d(X, steps=30, gp_weight=1.0, seed=0, snapshot_every=10, n_snapshot=200)
    assert torch.equal(run["snapshots"][30], again["snapshots"][30])  # deterministic
    fig = render(L.plot_ring_step, runs={"a": run, "b": again}, step=25, data=X, centres=L.ring_centres(), std=0.1)
    assert isinstance(fig, plt.Figure) and len(fig.axes) == 2
    assert "step 20" in fig.axes[0].get_title()  # rounded down to a stored snapshot


def test_digit_gan_shapes_and_short_training():
    G, D = L.DigitGenerator(), L.DigitDiscriminator()
    x = G(torch.randn(5, 32))
    assert x.shape == (5, 1, 16, 16) and x.min() >= 0 and x.max() <= 1
    assert D(x).shape == (5, 1)
    images = torch.rand(64, 1, 16, 16)
    out = L.train_digit_gan(images, steps=3, batch_size=16)
    assert len(out["d_loss"]) == 3 and not out["G"].training
    d = L.nearest_distance(images[:4], images)  # each image is in the set: distance 0 (cdist's matmul: ~1e-3)
    assert torch.allclose(d, torch.zeros(4), atol=1e-2)
    assert torch.allclose(L.nearest_distance(images[:1] + 0.5, images[:1]), torch.tensor([8.0]), atol=1e-3)


@pytest.mark.parametrize("name", ["discriminator_loss", "generator_loss", "gradient_penalty", "count_modes"])
def test_exercises_registered(name):
    assert name in {e.name for e in L.EXERCISES}
