"""Lecture 06 (regularization): dropout against F.dropout's statistics, the augmentation's geometry, BatchNorm and
LayerNorm against torch (train and eval mode, running statistics, state dicts), and the double-descent helper
against a direct least-squares fit."""
from __future__ import annotations

import math

import matplotlib.pyplot as plt
import numpy as np
import pytest
import torch
import torch.nn as nn

import utils
from solutions.l06_regularization import (
    BatchNorm1d,
    DoubleDescent,
    LayerNorm,
    augment,
    dropout,
    plot_double_descent,
    random_features,
    random_features_task,
)


# --------------------------------------------------------------------------------------------------- dropout
def test_dropout_statistics_and_modes():
    torch.manual_seed(0)
    x = torch.randn(500, 400) + 0.1
    out = dropout(x, p=0.3)
    kept = out != 0
    assert abs((~kept).float().mean().item() - 0.3) < 0.01
    torch.testing.assert_close(out[kept], x[kept] / 0.7)
    assert dropout(x, p=0.3, training=False) is x
    assert torch.equal(dropout(x, p=0.0), x)
    assert torch.equal(dropout(x, p=1.0), torch.zeros_like(x))
    ones = torch.ones(1000, 1000)
    assert abs(dropout(ones, p=0.5).mean().item() - 1) < 0.01  # the mean is preserved
    assert not torch.equal(dropout(x, p=0.3) != 0, kept)  # a fresh mask each call


def test_dropout_gradient_is_mask_over_keep_probability():
    torch.manual_seed(1)
    x = (torch.randn(64, 32) + 0.1).requires_grad_(True)
    out = dropout(x, p=0.25)
    out.sum().backward()
    torch.testing.assert_close(x.grad, (out != 0).float() / 0.75)


# --------------------------------------------------------------------------------------------------- augment
def test_augment_identity_and_range():
    torch.manual_seed(0)
    x = torch.rand(8, 1, 28, 28)
    torch.testing.assert_close(augment(x, max_shift=0, max_angle=0.0, noise_std=0.0), x, atol=1e-5, rtol=0)
    out = augment(x, noise_std=0.5)
    assert out.shape == x.shape and out.min() >= 0 and out.max() <= 1
    x2 = x.clone()
    augment(x2)
    assert torch.equal(x2, x), "the input must not be modified"


def test_augment_shift_is_an_exact_whole_pixel_move():
    torch.manual_seed(3)
    img = torch.zeros(1, 1, 28, 28)
    img[0, 0, 10, 12] = 1.0  # one bright pixel: its new position is the shift
    moves = set()
    for _ in range(40):
        out = augment(img, max_shift=2, max_angle=0.0, noise_std=0.0)
        assert torch.isclose(out.sum(), torch.tensor(1.0), atol=1e-5) and out.max() > 1 - 1e-5
        r, c = divmod(int(out.argmax()), 28)
        assert abs(r - 10) <= 2 and abs(c - 12) <= 2
        moves.add((r - 10, c - 12))
    assert len(moves) >= 10, "shifts are random over the whole range"


def test_augment_rotation_about_the_centre():
    torch.manual_seed(4)
    c = 13.5
    yy, xx = torch.meshgrid(torch.arange(28.0) - c, torch.arange(28.0) - c, indexing="ij")
    bar = torch.exp(-(xx / 6) ** 2 / 2 - (yy / 1.5) ** 2 / 2).expand(32, 1, 28, 28).clone()
    out = augment(bar, max_shift=0, max_angle=30.0, noise_std=0.0)
    w = out[:, 0]
    mass = w.sum((1, 2))
    cy, cx = (w * yy).sum((1, 2)) / mass, (w * xx).sum((1, 2)) / mass
    assert cx.abs().max() < 0.3 and cy.abs().max() < 0.3, "the centre stays put"
    dx, dy = xx - cx[:, None, None], yy - cy[:, None, None]
    angle = torch.rad2deg(0.5 * torch.atan2(2 * (w * dx * dy).sum((1, 2)), (w * (dx * dx - dy * dy)).sum((1, 2))))
    assert angle.abs().max() <= 32 and angle.std() > 10


def test_augment_is_deterministic_under_a_seed():
    x = torch.rand(4, 1, 16, 16)
    torch.manual_seed(7)
    a = augment(x)
    torch.manual_seed(7)
    torch.testing.assert_close(augment(x), a)


# ------------------------------------------------------------------------------------------------- BatchNorm
def test_batchnorm_matches_torch_in_train_and_eval():
    torch.manual_seed(0)
    ours, theirs = BatchNorm1d(5, eps=1e-3, momentum=0.3), nn.BatchNorm1d(5, eps=1e-3, momentum=0.3)
    with torch.no_grad():
        ours.weight.normal_()
        ours.bias.normal_()
    theirs.load_state_dict(ours.state_dict())  # same names, both ways
    assert sorted(ours.state_dict()) == sorted(theirs.state_dict())
    for step in range(4):
        x = torch.randn(16, 5) * 2 + step
        xa, xb = x.clone().requires_grad_(True), x.clone().requires_grad_(True)
        ya, yb = ours(xa), theirs(xb)
        torch.testing.assert_close(ya, yb, atol=1e-5, rtol=1e-5)
        g = torch.randn_like(ya)
        (ya * g).sum().backward()
        (yb * g).sum().backward()
        torch.testing.assert_close(xa.grad, xb.grad, atol=1e-5, rtol=1e-5)
    for name, value in theirs.state_dict().items():
        torch.testing.assert_close(ours.state_dict()[name], value, atol=1e-5, rtol=1e-5)
    assert int(ours.num_batches_tracked) == 4
    ours.eval()
    theirs.eval()
    x = torch.randn(3, 5)
    torch.testing.assert_close(ours(x), theirs(x), atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(ours(x[:1]), ours(x)[:1])  # eval: each example on its own
    assert int(ours.num_batches_tracked) == 4, "eval mode must not update the statistics"


def test_batchnorm_running_stats_converge():
    torch.manual_seed(0)
    bn = BatchNorm1d(2)
    with torch.no_grad():
        for _ in range(200):
            bn(torch.tensor([3.0, -2.0]) + torch.tensor([2.0, 0.5]) * torch.randn(64, 2))
    torch.testing.assert_close(bn.running_mean, torch.tensor([3.0, -2.0]), atol=0.15, rtol=0)
    torch.testing.assert_close(bn.running_var, torch.tensor([4.0, 0.25]), atol=0, rtol=0.15)


# ------------------------------------------------------------------------------------------------- LayerNorm
@pytest.mark.parametrize("shape,normalized", [((4, 8), 8), ((2, 5, 16), 16), ((3, 4, 6), (4, 6))])
def test_layernorm_matches_torch(shape, normalized):
    torch.manual_seed(0)
    ours, theirs = LayerNorm(normalized), nn.LayerNorm(normalized)
    with torch.no_grad():
        ours.weight.normal_()
        ours.bias.normal_()
    theirs.load_state_dict(ours.state_dict())
    x = torch.randn(shape) * 3 + 1
    xa, xb = x.clone().requires_grad_(True), x.clone().requires_grad_(True)
    ya, yb = ours(xa), theirs(xb)
    torch.testing.assert_close(ya, yb, atol=1e-5, rtol=1e-5)
    ya.pow(2).sum().backward()
    yb.pow(2).sum().backward()
    torch.testing.assert_close(xa.grad, xb.grad, atol=1e-4, rtol=1e-4)
    torch.testing.assert_close(ours.weight.grad, theirs.weight.grad, atol=1e-4, rtol=1e-4)
    ours.eval()
    torch.testing.assert_close(ours(x), ya.detach())  # no train/eval difference


# -------------------------------------------------------------------------------------------- double descent
def test_random_features_task_is_deterministic_and_shaped():
    a, b = random_features_task(n=30, d=5, n_test=50, p_max=40, seed=3), random_features_task(30, 5, 50, 40, 3)
    assert a.X.shape == (30, 5) and a.X_test.shape == (50, 5) and a.W.shape == (40, 5)
    assert np.array_equal(a.X, b.X) and np.array_equal(a.W, b.W)
    phi = random_features(a.X, a.W[:7])
    assert phi.shape == (30, 7) and (phi >= 0).all()
    np.testing.assert_allclose(phi, np.maximum(a.X @ a.W[:7].T, 0) / math.sqrt(7))


def test_double_descent_curves_match_direct_fits():
    ps = [10, 30, 45, 60, 120]
    dd = DoubleDescent(ps, n=30, d=5, n_test=200, seeds=(0, 1))
    for noise, ridge in [(0.3, 0.0), (0.3, 0.05), (0.0, 1e-3)]:
        curves = dd.curves(noise, ridge)
        for i, seed in enumerate((0, 1)):
            task = random_features_task(n=30, d=5, n_test=200, p_max=max(ps), seed=seed)
            y = task.y_clean + noise * task.noise
            for j, p in enumerate(ps):
                Phi, Phi_test = random_features(task.X, task.W[:p]), random_features(task.X_test, task.W[:p])
                if ridge == 0:
                    w = np.linalg.lstsq(Phi, y, rcond=None)[0]  # minimum-norm least squares
                else:
                    w = np.linalg.solve(Phi.T @ Phi + ridge * np.eye(p), Phi.T @ y)
                np.testing.assert_allclose(curves["test"][i, j], np.mean((Phi_test @ w - task.y_test) ** 2),
                                           rtol=1e-6, atol=1e-9)
                np.testing.assert_allclose(curves["train"][i, j], np.mean((Phi @ w - y) ** 2), rtol=1e-5, atol=1e-9)
                np.testing.assert_allclose(curves["norm"][i, j], np.linalg.norm(w), rtol=1e-6)


def test_double_descent_peaks_at_the_interpolation_threshold_and_ridge_removes_it():
    ps = [10, 20, 30, 40, 50, 60, 70, 80, 100, 150, 300]
    dd = DoubleDescent(ps, n=50, d=10, n_test=300, seeds=(0, 1, 2))
    test = dd.curves(0.3, 0.0)["test"].mean(0)
    assert ps[int(np.argmax(test))] == 50
    ridge = dd.curves(0.3, 0.05)["test"].mean(0)
    assert ridge[ps.index(50)] < test[ps.index(50)] / 10
    assert dd.curves(0.3, 0.0)["train"][:, ps.index(150)].max() < 1e-12, "past p = n the min-norm fit interpolates"


def test_plot_double_descent_renders():
    dd = DoubleDescent([10, 30, 60], n=30, d=5, n_test=100, seeds=(0,))
    for ridge in (0.0, 0.01):
        fig = utils.widgets.render(lambda noise, ridge: plot_double_descent(dd, noise, ridge), noise=0.5, ridge=ridge)
        assert isinstance(fig, plt.Figure) and len(fig.axes) == 2
        assert "σ = 0.5" in fig.axes[0].get_title()
