"""Lecture 04: the reference SGD against torch.optim.SGD, the quadratic-theory helpers against direct computation,
and the widget's update function."""
from __future__ import annotations

import math

import matplotlib.pyplot as plt
import numpy as np
import pytest
import torch

from solutions import l04_sgd_momentum as L
from utils.exercises import _tiny_regression
from utils.widgets import render


def max_diff(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor]) -> float:
    assert a.keys() == b.keys()
    return max((a[k] - b[k]).abs().max().item() for k in a)


@pytest.mark.parametrize("case", L._sgd_cases(), ids=lambda c: c.label)
def test_sgd_matches_torch_over_10_steps(case):
    assert max_diff(L.run_optimizer(L.SGD, **case.kwargs), L.run_optimizer(torch.optim.SGD, **case.kwargs)) < 1e-6


def test_sgd_matches_torch_over_many_steps():
    for kw in [dict(lr=0.05, momentum=0.9), dict(lr=0.02, momentum=0.95, nesterov=True, weight_decay=0.05)]:
        ours, theirs = L.run_optimizer(L.SGD, steps=100, **kw), L.run_optimizer(torch.optim.SGD, steps=100, **kw)
        assert max_diff(ours, theirs) < 1e-5


def test_sgd_rejects_nesterov_without_momentum_and_keeps_a_buffer():
    with pytest.raises(ValueError):
        L.SGD([torch.nn.Parameter(torch.zeros(2))], lr=0.1, nesterov=True)
    p = torch.nn.Parameter(torch.tensor([1.0, -1.0]))
    opt = L.SGD([p], lr=0.1, momentum=0.9)
    p.grad = torch.tensor([1.0, 2.0])
    opt.step()                                              # first step: buffer = gradient
    assert torch.allclose(p.detach(), torch.tensor([0.9, -1.2]))
    opt.step()                                              # buffer = 0.9 * g + g = 1.9 g
    assert torch.allclose(p.detach(), torch.tensor([0.9 - 0.19, -1.2 - 0.38]))
    assert torch.allclose(opt.state[p]["momentum_buffer"], torch.tensor([1.9, 3.8]))


def test_lr_inside_the_buffer_only_differs_under_a_schedule():
    inside = L._sgd_variant("SGD", lr_in_buffer=True)
    constant = dict(lr=0.05, momentum=0.9)
    assert max_diff(L.run_optimizer(inside, **constant), L.run_optimizer(torch.optim.SGD, **constant)) < 1e-6
    scheduled = dict(lr=0.1, momentum=0.9, lr_schedule=[0.1] * 5 + [0.02] * 5)
    assert max_diff(L.run_optimizer(inside, **scheduled), L.run_optimizer(torch.optim.SGD, **scheduled)) > 1e-3


def test_run_optimizer_options():
    frozen = L.run_optimizer(L.SGD, lr=0.1, momentum=0.9, freeze_bias=True)
    start, _, _ = _tiny_regression(0)
    assert torch.equal(frozen["0.bias"], start[0].bias.detach())       # the frozen bias never moves
    one_group = L.run_optimizer(torch.optim.SGD, lr=0.05, momentum=0.9)
    same_groups = L.run_optimizer(torch.optim.SGD, lr=0.05, momentum=0.9, groups=dict())
    other_groups = L.run_optimizer(torch.optim.SGD, lr=0.05, momentum=0.9, groups=dict(lr=0.2))
    assert max_diff(one_group, same_groups) == 0.0 and max_diff(one_group, other_groups) > 1e-3


def test_gd_step_uses_the_true_gradient():
    gen = torch.Generator().manual_seed(0)
    M = torch.randn(4, 4, generator=gen, dtype=torch.float64)
    A, b = M @ M.T + torch.eye(4, dtype=torch.float64), torch.randn(4, generator=gen, dtype=torch.float64)
    w = torch.randn(4, generator=gen, dtype=torch.float64, requires_grad=True)
    (0.5 * w @ A @ w - b @ w).backward()
    assert torch.allclose(L.gd_step(w.detach(), A, b, 0.1), w.detach() - 0.1 * w.grad)
    batch = torch.randn(3, 4, generator=gen, dtype=torch.float64)
    assert torch.allclose(L.gd_step(batch, A, b, 0.1)[1], L.gd_step(batch[1], A, b, 0.1))
    w_star = torch.linalg.solve(A, b)
    assert torch.allclose(L.gd_step(w_star, A, b, 0.3), w_star)


def test_gd_rate_predicts_convergence_and_divergence():
    A = L._rotated([1.0, 10.0], 30.0)
    assert L.gd_rate(A, 0.99 * 0.2) < 1 < L.gd_rate(A, 1.01 * 0.2)
    best = 2 / 11
    assert L.gd_rate(A, best) == pytest.approx(9 / 11)
    assert all(L.gd_rate(A, best) <= L.gd_rate(A, lr) + 1e-12 for lr in np.linspace(0.01, 0.2, 50))
    # the measured per-step contraction of a long run equals the rate
    w = torch.tensor([-4.0, 1.0], dtype=torch.float64)
    b = torch.zeros(2, dtype=torch.float64)
    for lr in [0.05, 0.19]:
        x = w.clone()
        for _ in range(100):
            x = L.gd_step(x, A, b, lr)
        y = x.clone()
        for _ in range(100):
            y = L.gd_step(y, A, b, lr)
        assert (y.norm() / x.norm()).item() ** (1 / 100) == pytest.approx(L.gd_rate(A, lr), rel=1e-3)


def test_gradient_variance_is_trace_of_covariance_over_b():
    gen = torch.Generator().manual_seed(0)
    G = torch.randn(2000, 5, generator=gen, dtype=torch.float64) * torch.tensor([1.0, 2.0, 0.5, 1.0, 3.0],
                                                                                dtype=torch.float64)
    g = G.mean(0)
    trace = ((G - g) ** 2).sum(1).mean().item()
    B = 10
    batches = torch.stack([G[torch.randperm(2000, generator=gen)[:B]].mean(0) for _ in range(3000)])
    assert L.gradient_variance(batches, g) == pytest.approx(trace / B * (2000 - B) / 1999, rel=0.05)
    assert L.gradient_variance(G[:3], G[:3].mean(0) * 0 + G[0]) >= 0
    assert L.gradient_variance(torch.ones(4, 3), torch.ones(3)) == 0.0


def companion_radius(lr: float, beta: float, lam: float) -> float:
    """Spectral radius of the heavy ball's per-direction map (e_t, e_{t-1}) -> (e_{t+1}, e_t)."""
    M = np.array([[1 + beta - lr * lam, -beta], [1.0, 0.0]])
    return float(np.abs(np.linalg.eigvals(M)).max())


@pytest.mark.parametrize("lam_min,lam_max", [(1.0, 100.0), (0.5, 2000.0), (2.0, 50.0)])
def test_heavy_ball_params_give_rate_sqrt_beta_on_the_whole_range(lam_min, lam_max):
    lr, beta = L.heavy_ball_params(lam_min, lam_max)
    kappa = lam_max / lam_min
    assert math.sqrt(beta) == pytest.approx((math.sqrt(kappa) - 1) / (math.sqrt(kappa) + 1))
    radii = [companion_radius(lr, beta, lam) for lam in np.geomspace(lam_min, lam_max, 50)]
    assert max(radii) == pytest.approx(math.sqrt(beta), rel=1e-4)
    # and no other choice nearby does better on the whole range
    for d_lr, d_beta in [(1.05, 1.0), (0.95, 1.0), (1.0, 1.05), (1.0, 0.95)]:
        worst = max(companion_radius(lr * d_lr, beta * d_beta, lam) for lam in np.geomspace(lam_min, lam_max, 50))
        assert worst > math.sqrt(beta) - 1e-9


def test_sgd_class_is_the_heavy_ball_trajectory():
    s = L.SURFACES["ravine κ = 10"]
    lr, beta = L.heavy_ball_params(1.0, 10.0)
    path = L.trajectory(s, lr, beta, steps=30)
    w = torch.nn.Parameter(torch.tensor(s.w0))
    opt = L.SGD([w], lr=lr, momentum=beta)
    A = L._rotated([1.0, 10.0], 30.0)
    for _ in range(30):
        opt.zero_grad()
        (0.5 * w @ A @ w).backward()
        opt.step()
    assert np.allclose(w.detach().numpy(), path[-1], atol=1e-12)


def test_surfaces_gradients_and_curvature():
    for name, s in L.SURFACES.items():
        w = s.w0 + 0.1
        eps = 1e-6
        numeric = np.array([(s.f(w + eps * e) - s.f(w - eps * e)) / (2 * eps) for e in np.eye(2)])
        assert np.allclose(s.grad(w), numeric, rtol=1e-5, atol=1e-5), name
        assert np.allclose(s.grad(s.w_star), 0.0), name
        assert s.f(s.w_star) == pytest.approx(s.f_min)
    assert L.SURFACES["Rosenbrock"].lam_max == pytest.approx(1001.6, abs=0.1)


def test_trajectory_stops_when_diverging():
    s = L.SURFACES["ravine κ = 10"]
    assert len(L.trajectory(s, 1.9 / s.lam_max, steps=200)) == 201
    assert len(L.trajectory(s, 2.5 / s.lam_max, steps=2000)) < 2001
    gd = L.trajectory(s, 0.1, steps=5)
    w = s.w0
    for _ in range(5):
        w = w - 0.1 * s.grad(w)
    assert np.allclose(gd[-1], w)


@pytest.mark.parametrize("surface", list(L.SURFACES))
def test_momentum_explorer_renders(surface):
    fig = render(L.momentum_explorer, surface=surface, lr_scale=1.0, momentum=0.9, nesterov=True, steps=100)
    assert isinstance(fig, plt.Figure)
    ax, ax2 = fig.axes[:2]
    assert surface in ax.get_title() and "Nesterov" in ax.get_title()
    assert ax.get_xlabel() and ax.get_ylabel() and ax2.get_xlabel() == "step"
    if surface.startswith("ravine"):  # a quadratic diverges beyond lr = 2/λmax (Rosenbrock can escape to flatter parts)
        title = render(L.momentum_explorer, surface=surface, lr_scale=2.2, momentum=0.0, steps=400).axes[1].get_title()
        assert "DIVERGED" in title
    render(L.momentum_explorer, surface=surface, lr_scale=0.05, momentum=0.99, steps=10)


def test_momentum_explorer_rejects_unknown_surface():
    with pytest.raises(ValueError):
        L.momentum_explorer(surface="saddle")


def test_plot_contours_draws():
    fig, ax = plt.subplots()
    L.plot_contours(ax, L.SURFACES["Rosenbrock"].f, (-2, 2), (-1, 3))
    assert ax.get_xlim() == (-2, 2) and len(ax.collections) >= 1
    plt.close(fig)
