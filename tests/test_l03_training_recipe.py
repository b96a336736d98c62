"""Lecture 03 (training recipe): the loop body against a hand-written SGD update, the one-batch check, the LR
range test's schedule and stopping rule, early stopping's checkpoint, and the LR-slider widget's computations."""
from __future__ import annotations

import math

import matplotlib.pyplot as plt
import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F

import utils
from solutions.l03_training_recipe import (
    EarlyStopping,
    lr_range_test,
    lr_sweep,
    overfit_one_batch,
    plot_lr_sweep,
    smooth,
    suggest_lr,
    train_step,
)


def tiny_data(n=64, d=5, c=3, seed=0):
    gen = torch.Generator().manual_seed(seed)
    X = torch.randn(n, d, generator=gen)
    return X, X[:, :c].argmax(1)


def tiny_model(d=5, c=3, seed=0):
    torch.manual_seed(seed)
    return nn.Sequential(nn.Linear(d, 16), nn.ReLU(), nn.Linear(16, c))


# ------------------------------------------------------------------------------------------- train_step
def test_train_step_equals_a_hand_written_sgd_update():
    X, y = tiny_data()
    model, ref = tiny_model(), tiny_model()
    opt = torch.optim.SGD(model.parameters(), lr=0.3)
    for step in range(3):  # several steps: stale gradients would show from step 2 on
        xb, yb = X[16 * step:16 * (step + 1)], y[16 * step:16 * (step + 1)]
        expected_loss = F.cross_entropy(ref(xb), yb)
        grads = torch.autograd.grad(expected_loss, list(ref.parameters()))
        with torch.no_grad():
            for p, g in zip(ref.parameters(), grads):
                p -= 0.3 * g
        loss = train_step(model, opt, xb, yb)
        assert isinstance(loss, float)
        assert loss == pytest.approx(expected_loss.item(), abs=1e-6)
        for p, q in zip(model.parameters(), ref.parameters()):
            torch.testing.assert_close(p, q, atol=1e-6, rtol=1e-6)


# ------------------------------------------------------------------------------------- overfit_one_batch
def test_overfit_one_batch_memorises_and_uses_only_the_first_batch():
    X, y = tiny_data(n=100)
    losses = overfit_one_batch(tiny_model(), X, y, batch_size=16, steps=300, lr=0.1)
    assert len(losses) == 300 and losses[-1] < 0.01 < losses[0]
    X2, y2 = X.clone(), y.clone()
    X2[16:] = torch.randn_like(X2[16:])  # anything after the first batch is never seen
    assert overfit_one_batch(tiny_model(), X2, y2, batch_size=16, steps=20, lr=0.1) == \
        overfit_one_batch(tiny_model(), X, y, batch_size=16, steps=20, lr=0.1)


# ----------------------------------------------------------------------------------------- lr_range_test
def test_lr_range_test_schedule_is_geometric_from_min_to_max():
    X, y = tiny_data(n=200)
    batches = [(X[i:i + 20], y[i:i + 20]) for i in range(0, 200, 20)]
    model = tiny_model()
    opt = torch.optim.SGD(model.parameters(), lr=1.0)
    lrs, losses = lr_range_test(model, opt, batches, lr_min=1e-4, lr_max=1e-2)  # too gentle to diverge
    assert len(lrs) == len(losses) == 10
    assert lrs[0] == pytest.approx(1e-4) and lrs[-1] == pytest.approx(1e-2)
    ratios = [b / a for a, b in zip(lrs, lrs[1:])]
    assert ratios == pytest.approx([100 ** (1 / 9)] * 9)
    assert opt.param_groups[0]["lr"] == pytest.approx(1e-2)


def test_lr_range_test_stops_at_the_first_blow_up():
    X, y = tiny_data(n=400)
    batches = [(X[i:i + 20], y[i:i + 20]) for i in range(0, 400, 20)]
    model = tiny_model()
    lrs, losses = lr_range_test(model, torch.optim.SGD(model.parameters(), lr=1.0, momentum=0.9), batches,
                                lr_min=1e-3, lr_max=1e3)
    assert len(lrs) < 20, "a range up to lr 1000 must diverge before the end"
    last = losses[-1]
    assert math.isnan(last) or last > 4 * min(losses)
    assert all(v <= 4 * min(losses[:i + 1]) for i, v in enumerate(losses[:-1])), "stopped too late"


# ----------------------------------------------------------------------------------------- EarlyStopping
def test_early_stopping_keeps_a_copy_of_the_best_weights():
    model = nn.Linear(2, 1)
    stopper = EarlyStopping(patience=2)
    decisions = []
    for epoch, val_loss in enumerate([1.0, 0.5, 0.7, 0.4, 0.6, 0.6, 0.3]):
        with torch.no_grad():
            model.weight.fill_(epoch)
        decisions.append(stopper.step(val_loss, model))
        if decisions[-1]:
            break
    assert decisions == [False, False, False, False, False, True]
    assert stopper.best == 0.4 and stopper.best_epoch == 3
    with torch.no_grad():
        model.weight.fill_(-1.0)
    model.load_state_dict(stopper.best_state)
    assert torch.all(model.weight == 3.0), "the checkpoint must be a copy, not the live tensors"


# -------------------------------------------------------------------------------------- reading the finder
def test_smooth_is_a_bias_corrected_ema():
    assert smooth([2.0] * 5) == pytest.approx([2.0] * 5)
    s = smooth([1.0, 3.0], beta=0.5)
    assert s == pytest.approx([1.0, (0.5 * 0.5 * 1.0 + 0.5 * 3.0) / (1 - 0.25)])


def test_suggest_lr_divides_the_lr_at_the_smoothed_minimum():
    lrs = [10 ** (-4 + 0.1 * i) for i in range(41)]  # 1e-4 .. 1
    losses = [(math.log10(lr) + 1.5) ** 2 + 0.1 for lr in lrs]  # minimum at lr ~ 10^-1.5
    lr = suggest_lr(lrs, losses, divide_by=10.0)
    at_min = [round(x, 12) for x in lrs[25:31]]  # true minimum at index 25; the EMA lags a few steps behind
    assert round(lr * 10, 12) in at_min
    assert suggest_lr(lrs, losses, divide_by=1.0) == pytest.approx(lr * 10)
    with pytest.raises(ValueError):
        suggest_lr([1e-3, 1e-2], [1.0])


# ------------------------------------------------------------------------------------------ the LR widget
def sweep_setup():
    X, y = tiny_data(n=320)
    batches = [(X[i:i + 32], y[i:i + 32]) for i in range(0, 320, 32)]
    return lr_sweep(lambda: nn.Sequential(nn.Linear(5, 16), nn.ReLU(), nn.Linear(16, 3)), batches,
                    [0.01, 0.1, 1.0, 1e4])


def test_lr_sweep_is_deterministic_and_starts_from_the_same_model():
    a, b = sweep_setup(), sweep_setup()
    assert list(a) == [0.01, 0.1, 1.0, 1e4] and all(len(v) == 10 for v in a.values())
    for k in a:
        torch.testing.assert_close(torch.tensor(a[k]), torch.tensor(b[k]), equal_nan=True, atol=0, rtol=0)
    first = {v[0] for v in a.values()}
    assert len(first) == 1, "every lr starts from the same initial weights and batch"
    assert a[0.1][-1] < a[0.01][-1] < a[0.01][0]
    assert not math.isfinite(a[1e4][-1]) or a[1e4][-1] > 10 * a[0.1][-1], "a huge lr blows up"


def test_plot_lr_sweep_renders_with_and_without_finder():
    curves = sweep_setup()
    finder = ([1e-3, 1e-2, 1e-1, 1.0], [1.1, 0.9, 0.5, 4.0])
    fig = utils.widgets.render(lambda lr: plot_lr_sweep(curves, lr, finder), lr=0.12)  # snaps to 0.1
    assert isinstance(fig, plt.Figure) and len(fig.axes) == 2
    assert "lr = 0.1:" in fig.axes[0].get_title()
    fig = utils.widgets.render(lambda lr: plot_lr_sweep(curves, lr), lr=1e4)  # diverged curve, no finder
    assert len(fig.axes) == 1 and "lr = 1e+04:" in fig.axes[0].get_title()
    nan_curves = {0.1: curves[0.1], 1.0: [2.3, float("nan"), float("nan")]}
    fig = utils.widgets.render(lambda lr: plot_lr_sweep(nan_curves, lr), lr=1.0)
    assert "diverged" in fig.axes[0].get_title()
