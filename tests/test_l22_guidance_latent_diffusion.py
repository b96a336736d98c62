"""Lecture 22: classifier-free guidance, the DDIM step (against DDPM's posterior and hand-computed values), the
sampler, the latent round trip, the cost timer and the widget's plot."""
from __future__ import annotations

import math

import matplotlib.pyplot as plt
import pytest
import torch

from solutions import l22_guidance_latent_diffusion as L
from utils.diffusion import TinyUNet, make_schedule
from utils.widgets import render


# ---------------------------------------------------------------------------------------------------- CFG
def test_cfg_scales_zero_and_one_are_uncond_and_cond():
    torch.manual_seed(0)
    model = TinyUNet(8, 16, num_classes=10).eval()
    x, t, y = torch.randn(3, 1, 8, 8), torch.tensor([5, 50, 150]), torch.tensor([1, 7, 3])
    with torch.no_grad():
        cond, uncond = model(x, t, y), model(x, t, torch.full_like(y, 10))
        assert torch.allclose(L.cfg_eps(model, x, t, y, 0.0), uncond, atol=1e-5)
        assert torch.allclose(L.cfg_eps(model, x, t, y, 1.0), cond, atol=1e-5)
        assert torch.allclose(L.cfg_eps(model, x, t, y, 3.0), uncond + 3 * (cond - uncond), atol=1e-5)


def test_cfg_is_linear_in_scale():
    m = L._ToyEps(3, 4)
    x, t, y = torch.randn(2, 4), torch.tensor([1, 2]), torch.tensor([0, 2])
    e0, e1, e2 = (L.cfg_eps(m, x, t, y, s) for s in (0.0, 1.0, 2.0))
    assert torch.allclose(e2 - e1, e1 - e0, atol=1e-6)


# --------------------------------------------------------------------------------------------------- DDIM
def test_ddim_eta1_one_step_is_the_ddpm_posterior():
    sch = make_schedule(50, "linear")
    t = 20
    a_t, a_prev, beta = sch.alpha_bars[t].item(), sch.alpha_bars[t - 1].item(), sch.betas[t].item()
    g = torch.Generator().manual_seed(0)
    x, eps, z = (torch.randn(4, 3, generator=g) for _ in range(3))
    ours = L.ddim_step(x, eps, a_t, a_prev, eta=1.0, noise=z, clip=None)
    # DDPM: mean = (x − β/sqrt(1−ᾱ_t)·ε)/sqrt(α_t), variance β̃ = β·(1−ᾱ_prev)/(1−ᾱ_t)
    mean = (x - beta / math.sqrt(1 - a_t) * eps) / math.sqrt(1 - beta)
    var = beta * (1 - a_prev) / (1 - a_t)
    assert torch.allclose(ours, mean + math.sqrt(var) * z, atol=1e-5)


def test_ddim_eta0_is_deterministic_and_exact_on_a_clean_trajectory():
    # if ε̂ is the true noise, η = 0 moves x_t exactly to the same x0 noised with the same ε at the earlier time
    g = torch.Generator().manual_seed(1)
    x0, eps = torch.rand(5, 6, generator=g) * 2 - 1, torch.randn(5, 6, generator=g)
    a_t, a_prev = 0.2, 0.7
    x_t = math.sqrt(a_t) * x0 + math.sqrt(1 - a_t) * eps
    out = L.ddim_step(x_t, eps, a_t, a_prev, eta=0.0, noise=torch.randn(5, 6), clip=1.0)
    assert torch.allclose(out, math.sqrt(a_prev) * x0 + math.sqrt(1 - a_prev) * eps, atol=1e-5)
    assert torch.allclose(L.ddim_step(x_t, eps, a_t, 1.0, clip=None), x0, atol=1e-5)


def test_ddim_clipping_keeps_x0_in_range():
    x_t, eps = torch.full((1, 4), 3.0), torch.zeros(1, 4)
    out = L.ddim_step(x_t, eps, 0.25, 1.0, clip=1.0)         # x̂0 = 6 unclipped
    assert torch.allclose(out, torch.ones(1, 4))


def test_ddim_timesteps_and_errors():
    assert L.ddim_timesteps(500, 5) == [499, 374, 250, 125, 0]
    assert L.ddim_timesteps(10, 10) == list(range(9, -1, -1))
    with pytest.raises(ValueError, match="steps must be between"):
        L.ddim_timesteps(10, 11)


def test_sampler_recovers_a_point_mass():
    # data = a single point c: the optimal ε̂ is known in closed form, and both samplers must land on c
    sch = make_schedule(100, "cosine")
    c = torch.tensor([0.5, -0.3])

    def eps_fn(x, t):
        ab = sch.alpha_bars[t][:, None]
        return (x - ab.sqrt() * c) / (1 - ab).sqrt()

    for steps, eta in [(100, 1.0), (10, 0.0), (10, 1.0)]:
        out = L.sample(eps_fn, (8, 2), sch, steps=steps, eta=eta, seed=0)
        assert torch.allclose(out, c.expand(8, 2), atol=1e-4), (steps, eta)


# ------------------------------------------------------------------------------------------------- latents
def test_latent_round_trip_is_identity_on_latents_and_standardises():
    torch.manual_seed(0)
    ae = L.Autoencoder(dim=6, hidden=32).eval()
    X = torch.rand(200, 1, 28, 28)
    stats = L.latent_stats(ae, X)
    with torch.no_grad():
        z = L.encode_latents(ae, X, stats)
        assert torch.allclose(z.mean(0), torch.zeros(6), atol=1e-4)
        assert torch.allclose(z.std(0), torch.ones(6), atol=1e-3)
        assert torch.allclose(L.decode_latents(ae, z, stats), ae(X), atol=1e-5)
    assert ((stats["lo"] < 0) & (stats["hi"] > 0)).all()
    assert ae.encode(X).abs().max() < 1   # tanh-bounded


def test_autoencoder_trains_and_latent_denoiser_shapes():
    X = torch.rand(64, 1, 28, 28).round()
    ae = L.Autoencoder(dim=8, hidden=64)
    losses = L.train_autoencoder(ae, X, steps=30, batch_size=32)
    assert losses[-1] < losses[0]
    den = L.LatentDenoiser(dim=8, hidden=32)
    assert den.null_class == 10
    assert den(torch.randn(5, 8), torch.arange(5), torch.tensor([0, 1, 2, 10, 3])).shape == (5, 8)


def test_to_judge_and_timer():
    x = torch.full((2, 1, 28, 28), 1.0)
    assert L.to_judge(x).shape == (2, 1, 16, 16) and torch.allclose(L.to_judge(x), torch.ones(2, 1, 16, 16))
    assert L.to_judge(-torch.ones(1, 1, 16, 16)).max() == 0
    assert L.time_per_call(lambda: sum(range(1000)), repeats=3) >= 0


# -------------------------------------------------------------------------------------------------- widget
def test_plot_guidance_renders_and_rejects_unknown_scale():
    samples = {s: torch.rand(30, 1, 16, 16) * 2 - 1 for s in (0.0, 1.0, 3.0)}
    reports = {s: {"accuracy": 0.1 * s, "recognised": 0.2, "junk": 0.1, "diversity": 9.0} for s in samples}
    fig = render(L.plot_guidance, samples=samples, reports=reports, scale=3.0)
    assert isinstance(fig, plt.Figure) and "s = 3" in fig._suptitle.get_text()
    with pytest.raises(KeyError, match="precomputed scales"):
        L.plot_guidance(samples, reports, 2.0)
