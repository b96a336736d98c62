"""Lecture 19: the VAE pieces against torch.distributions and hand-computed values, the estimators' claims at
small scale, the models' shapes, and the widget's update function."""
from __future__ import annotations

import math

import matplotlib.pyplot as plt
import pytest
import torch
from torch.distributions import Normal, kl_divergence

import utils
from solutions.l19_vae import (
    VAE,
    Autoencoder,
    ToyVAE,
    elbo_loss,
    encode_all,
    evaluate_elbo,
    gaussian_kl,
    interpolate,
    iwae_bound,
    kl_monte_carlo,
    latent_grid,
    plot_decoded,
    reparameterize,
    sample_images,
    toy_gradient_samples,
    toy_objective,
    train_autoencoder,
    train_vae,
    vae_gradient_samples,
)


def test_gaussian_kl_matches_torch_distributions():
    g = torch.Generator().manual_seed(0)
    mu, logvar = torch.randn(5, 4, generator=g), torch.randn(5, 4, generator=g)
    q = Normal(mu, (0.5 * logvar).exp())
    expected = kl_divergence(q, Normal(torch.zeros_like(mu), torch.ones_like(mu))).sum(-1)
    torch.testing.assert_close(gaussian_kl(mu, logvar), expected)
    assert gaussian_kl(torch.zeros(2, 3), torch.zeros(2, 3)).abs().max() == 0


def test_gaussian_kl_hand_value():
    # mu = 1, sigma^2 = 1: 0.5 * (1 + 1 - 1 - 0) = 0.5 per dimension
    assert gaussian_kl(torch.ones(1, 3), torch.zeros(1, 3)).item() == pytest.approx(1.5)


def test_kl_monte_carlo_converges_to_closed_form():
    g = torch.Generator().manual_seed(1)
    mu, logvar = torch.randn(2, 6, generator=g), torch.randn(2, 6, generator=g)
    mc = kl_monte_carlo(mu, logvar, 50_000, seed=0)
    torch.testing.assert_close(mc, gaussian_kl(mu, logvar), rtol=0.03, atol=0.03)


def test_reparameterize_statistics_and_gradients():
    torch.manual_seed(0)
    mu = torch.full((20_000, 2), 1.5, requires_grad=True)
    logvar = torch.full((20_000, 2), math.log(0.25), requires_grad=True)
    z = reparameterize(mu, logvar)
    assert abs(z.mean().item() - 1.5) < 0.02 and abs(z.std().item() - 0.5) < 0.02
    z.sum().backward()
    assert torch.allclose(mu.grad, torch.ones_like(mu))                 # dz/dmu = 1
    eps = (z - mu) / 0.5
    torch.testing.assert_close(logvar.grad, (0.5 * 0.5 * eps).detach())  # dz/dlogvar = ½ σ ε


def test_elbo_loss_matches_hand_computation():
    g = torch.Generator().manual_seed(2)
    logits, x = torch.randn(3, 1, 4, 4, generator=g), torch.rand(3, 1, 4, 4, generator=g)
    mu, logvar = torch.randn(3, 2, generator=g), torch.randn(3, 2, generator=g)
    p = torch.sigmoid(logits)
    recon = -(x * p.log() + (1 - x) * (1 - p).log()).sum((1, 2, 3))
    loss, r, k = elbo_loss(logits, x, mu, logvar, beta=2.0)
    torch.testing.assert_close(r, recon.mean(), rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(k, gaussian_kl(mu, logvar).mean())
    torch.testing.assert_close(loss, (recon + 2.0 * gaussian_kl(mu, logvar)).mean(), rtol=1e-5, atol=1e-5)


def test_models_shapes():
    x = torch.rand(5, 1, 16, 16)
    vae = VAE(d_latent=3, hidden=(32,))
    out, mu, logvar = vae(x)
    assert out.shape == x.shape and mu.shape == (5, 3) and logvar.shape == (5, 3)
    ae = Autoencoder(d_latent=2, hidden=(32,))
    assert ae(x).shape == x.shape and encode_all(ae, x).shape == (5, 2)
    assert encode_all(vae, x).shape == (5, 3)
    imgs = sample_images(vae, 7, seed=0)
    assert imgs.shape == (7, 1, 16, 16) and 0 <= imgs.min() and imgs.max() <= 1
    torch.testing.assert_close(imgs, sample_images(vae, 7, seed=0))     # seeded
    lat, pix = interpolate(vae, x[0], x[1], steps=5)
    assert lat.shape == pix.shape == (5, 1, 16, 16)
    torch.testing.assert_close(pix[0], x[0])
    torch.testing.assert_close(pix[-1], x[1])


def test_latent_grid_is_symmetric_gaussian_quantiles():
    z = latent_grid(5)
    assert z.shape == (25, 2)
    assert z[:, 0].min() == -z[:, 0].max() and z[12].abs().max() < 1e-6    # centre of the grid at 0
    assert z[0, 0] < z[1, 0] and z[0, 1] > z[5, 1]                       # z1 across, z2 down


def test_score_function_is_unbiased_but_noisier():
    g = toy_gradient_samples(lambda z: (z - 2) ** 2, mu=0.0, sigma=1.0, n=20_000, seed=0)
    assert abs(g["reparam"].mean().item() + 4) < 0.1
    assert abs(g["score"].mean().item() + 4) < 0.3
    assert g["score"].var() > 5 * g["reparam"].var()
    assert g["score + baseline"].var() < g["score"].var()


def test_training_improves_elbo_and_gradient_variance_on_a_small_vae():
    X, _ = utils.data.font_digits(2000, size=16, split="test")
    torch.manual_seed(0)
    vae = VAE(d_latent=4, hidden=(64,))
    hist = train_vae(vae, X, steps=100, batch_size=64, X_eval=X[:200], eval_every=50)
    assert len(hist["loss"]) == 100 and hist["eval_step"] == [0, 50, 100]
    assert hist["eval_elbo"][-1] > hist["eval_elbo"][0] + 30
    e = evaluate_elbo(vae, X[:200])
    assert e["elbo"] == pytest.approx(-(e["recon"] + e["kl"]), rel=1e-5)
    iw1, iw50 = iwae_bound(vae, X[:100], 1).mean(), iwae_bound(vae, X[:100], 50).mean()
    assert iw50 > iw1
    gv = vae_gradient_samples(vae, X[:1], n=500)
    assert gv["reparam"].shape == (500, 4)
    assert gv["score"].var(0).sum() > 10 * gv["reparam"].var(0).sum()
    assert all(p.grad is None for p in vae.parameters())                # the estimator leaves no gradients behind


def test_kl_warmup_and_beta_change_the_rate():
    X, _ = utils.data.font_digits(2000, size=16, split="test")
    kls = []
    for beta in [0.1, 5.0]:
        torch.manual_seed(0)
        vae = VAE(d_latent=4, hidden=(32,))
        train_vae(vae, X, steps=100, batch_size=64, beta=beta, kl_warmup=50)
        kls.append(evaluate_elbo(vae, X[:200])["kl"])
    assert kls[0] > kls[1]


def test_toy_vae_trains_and_samples():
    Xm, _ = utils.data.moons(500, noise=0.05)
    torch.manual_seed(0)
    toy = ToyVAE(hidden=(32,))
    hist = train_vae(toy, Xm, toy_objective, steps=100, batch_size=128, lr=3e-3, X_eval=Xm, eval_every=50)
    assert hist["eval_elbo"][-1] > hist["eval_elbo"][0]
    s = toy.sample(50, generator=torch.Generator().manual_seed(0))
    assert s.shape == (50, 2)


def test_autoencoder_training_reduces_loss():
    X, _ = utils.data.font_digits(2000, size=16, split="test")
    torch.manual_seed(0)
    losses = train_autoencoder(Autoencoder(d_latent=2, hidden=(32,)), X, steps=60, batch_size=64)
    assert len(losses) == 60 and losses[-1] < 0.8 * losses[0]


def test_widget_update_renders_and_checks_latent_size():
    torch.manual_seed(0)
    vae = VAE(d_latent=2, hidden=(16,))
    codes, labels = torch.randn(50, 2), torch.randint(0, 10, (50,))
    fig = utils.widgets.render(lambda z1, z2: plot_decoded(vae, codes, labels, z1, z2), z1=0.5, z2=-1.0)
    assert isinstance(fig, plt.Figure)
    assert "decoded at z = (0.5, -1.0)" in fig.axes[-1].get_title() or any(
        "decoded at z" in ax.get_title() for ax in fig.axes)

    class FakeJudge(torch.nn.Module):
        def predict_proba(self, x):
            p = torch.zeros(len(x), 11)
            p[:, 7] = 1.0
            return p

    fig = plot_decoded(vae, codes, labels, 0.0, 0.0, judge=FakeJudge())
    assert any("judge: 7" in ax.get_title() for ax in fig.axes)
    plt.close(fig)
    with pytest.raises(ValueError, match="2-D latent"):
        plot_decoded(VAE(d_latent=3, hidden=(16,)), torch.randn(5, 3), labels[:5], 0.0, 0.0)
