"""Lecture 05: the reference optimizers, schedules and clipping against torch's own, and the widget's update."""
from __future__ import annotations

import math

import matplotlib.pyplot as plt
import numpy as np
import pytest
import torch

from solutions import l05_adam_schedules as L
from utils.widgets import render


def max_diff(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor]) -> float:
    assert a.keys() == b.keys()
    return max((a[k] - b[k]).abs().max().item() for k in a)


@pytest.mark.parametrize("case", L._adam_cases(), ids=lambda c: c.label)
def test_adam_matches_torch_over_10_steps(case):
    assert max_diff(L.run_optimizer(L.Adam, **case.kwargs), L.run_optimizer(torch.optim.Adam, **case.kwargs)) < 1e-6


@pytest.mark.parametrize("case", L._adamw_cases(), ids=lambda c: c.label)
def test_adamw_matches_torch_over_10_steps(case):
    got = L.run_optimizer(L.AdamW, **case.kwargs)
    assert max_diff(got, L.run_optimizer(torch.optim.AdamW, **case.kwargs)) < 1e-6


def test_optimizers_match_torch_over_many_steps_and_param_groups():
    kw = dict(lr=0.02, betas=(0.85, 0.99), weight_decay=0.05)
    for ours, theirs in [(L.Adam, torch.optim.Adam), (L.AdamW, torch.optim.AdamW)]:
        assert max_diff(L.run_optimizer(ours, steps=100, **kw), L.run_optimizer(theirs, steps=100, **kw)) < 1e-5
    # two parameter groups with their own learning rates, the torch.optim way
    torch.manual_seed(0)
    a, b = torch.nn.Linear(3, 3), torch.nn.Linear(3, 3)
    a2, b2 = torch.nn.Linear(3, 3), torch.nn.Linear(3, 3)
    a2.load_state_dict(a.state_dict())
    b2.load_state_dict(b.state_dict())
    ours = L.AdamW([{"params": a.parameters()}, {"params": b.parameters(), "lr": 0.1}], lr=0.01)
    theirs = torch.optim.AdamW([{"params": a2.parameters()}, {"params": b2.parameters(), "lr": 0.1}], lr=0.01)
    x = torch.randn(8, 3)
    for _ in range(5):
        for net, opt in [((a, b), ours), ((a2, b2), theirs)]:
            opt.zero_grad()
            net[1](net[0](x).tanh()).pow(2).sum().backward()
            opt.step()
    assert torch.allclose(b.weight, b2.weight, atol=1e-6) and torch.allclose(a.weight, a2.weight, atol=1e-6)


def test_adam_first_step_is_lr_times_sign_of_gradient():
    p = torch.nn.Parameter(torch.tensor([1.0, -2.0, 3.0]))
    p.grad = torch.tensor([0.5, -30.0, 1e-3])
    L.Adam([p], lr=0.1).step()
    assert torch.allclose(p.detach(), torch.tensor([0.9, -1.9, 2.9]), atol=1e-5)


def test_adamw_decay_is_independent_of_the_gradient_scale():
    big = L.run_optimizer(L.AdamW, steps=30, lr=0.01, weight_decay=0.5, loss_scale=100.0)
    small = L.run_optimizer(L.AdamW, steps=30, lr=0.01, weight_decay=0.5, loss_scale=1.0)
    assert max_diff(big, small) < 1e-4  # Adam's direction is scale-free, and so is the decoupled decay
    big = L.run_optimizer(L.Adam, steps=30, lr=0.01, weight_decay=0.5, loss_scale=100.0)
    small = L.run_optimizer(L.Adam, steps=30, lr=0.01, weight_decay=0.5, loss_scale=1.0)
    assert max_diff(big, small) > 1e-3  # L2 in the gradient is not


def torch_schedule(make_scheduler, steps: int, lr: float = 1.0) -> list[float]:
    opt = torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=lr)
    sched = make_scheduler(opt)
    lrs = []
    for _ in range(steps):
        lrs.append(opt.param_groups[0]["lr"])
        opt.step()
        sched.step()
    return lrs


def test_step_cosine_one_cycle_match_torch_schedulers():
    steps = 100
    ours = [L.step_decay(s, 0.5, step_size=30, gamma=0.2) for s in range(steps)]
    theirs = torch_schedule(lambda o: torch.optim.lr_scheduler.StepLR(o, step_size=30, gamma=0.2), steps, 0.5)
    assert np.allclose(ours, theirs, rtol=1e-9, atol=1e-12)
    ours = [L.cosine_decay(s, steps, 0.5, min_lr=0.01) for s in range(steps)]
    theirs = torch_schedule(lambda o: torch.optim.lr_scheduler.CosineAnnealingLR(o, T_max=steps, eta_min=0.01),
                            steps, 0.5)
    assert np.allclose(ours, theirs, rtol=1e-6, atol=1e-9)
    for pct in [0.3, 0.1, 0.25]:
        ours = [L.one_cycle(s, steps, 0.5, pct_start=pct) for s in range(steps)]
        theirs = torch_schedule(lambda o, pct=pct: torch.optim.lr_scheduler.OneCycleLR(
            o, max_lr=0.5, total_steps=steps, pct_start=pct, cycle_momentum=False), steps)
        assert np.allclose(ours, theirs, rtol=1e-6, atol=1e-12)


def test_warmup_cosine_matches_torch_lambda_and_hand_values():
    lrs = [L.warmup_cosine(s, 100, 10, 1.0, 0.1) for s in range(110)]
    assert lrs[0] == pytest.approx(1 / 11) and lrs[9] == pytest.approx(10 / 11) and lrs[10] == pytest.approx(1.0)
    assert lrs[55] == pytest.approx(0.1 + 0.45 * (1 + math.cos(math.pi * 0.5)))
    assert all(v == pytest.approx(0.1) for v in lrs[100:])
    assert max(lrs) == pytest.approx(1.0) and min(lrs) == pytest.approx(1 / 11)
    theirs = torch_schedule(lambda o: torch.optim.lr_scheduler.LambdaLR(
        o, lambda s: L.warmup_cosine(s, 100, 10, 1.0, 0.1)), 100)
    assert np.allclose(lrs[:100], theirs)


def test_clip_grad_norm_matches_torch():
    gen = torch.Generator().manual_seed(0)
    shapes = [(5, 4), (4,), (3, 3, 2)]
    for max_norm in [0.1, 1.0, 100.0]:
        ours = [torch.nn.Parameter(torch.zeros(s)) for s in shapes]
        theirs = [torch.nn.Parameter(torch.zeros(s)) for s in shapes]
        for p, q in zip(ours, theirs):
            p.grad = torch.randn(p.shape, generator=gen) * 3
            q.grad = p.grad.clone()
        n_ours = L.clip_grad_norm_(ours, max_norm)
        n_theirs = torch.nn.utils.clip_grad_norm_(theirs, max_norm)
        assert torch.allclose(n_ours, n_theirs)
        for p, q in zip(ours, theirs):
            assert torch.allclose(p.grad, q.grad, atol=1e-7)
    assert L.clip_grad_norm_([torch.nn.Parameter(torch.zeros(2))], 1.0).item() == 0.0


def test_lr_curves_have_the_expected_shapes():
    n, lr = 200, 0.01
    for name in L.SCHEDULES:
        c = L.lr_curve(name, n, lr, warmup_frac=0.1, min_lr=0.0)
        assert c.shape == (n,) and np.all(c >= 0) and c.max() <= lr * (1 + 1e-9), name
    assert np.all(L.lr_curve("constant", n, lr) == lr)
    assert np.all(np.diff(L.lr_curve("cosine", n, lr)) <= 0)
    assert np.all(np.diff(L.lr_curve("step", n, lr)) <= 0) and len(set(L.lr_curve("step", n, lr))) == 3
    wc = L.lr_curve("warmup + cosine", n, lr, warmup_frac=0.1)
    assert np.argmax(wc) == 20 and wc[0] < 0.1 * lr
    oc = L.lr_curve("one-cycle", n, lr, warmup_frac=0.3)
    assert np.argmax(oc) == 59 and oc[0] == pytest.approx(lr / 25) and oc[-1] < 1e-5 * lr
    with pytest.raises(ValueError):
        L.lr_curve("linear", n, lr)


@pytest.mark.parametrize("schedule", list(L.SCHEDULES))
def test_schedule_explorer_renders_every_schedule(schedule):
    fig = render(L.schedule_explorer, schedule=schedule, total_steps=300, max_lr=3e-3, warmup_frac=0.2,
                 min_lr_frac=0.1, gamma=0.3)
    assert isinstance(fig, plt.Figure)
    ax = fig.axes[0]
    assert schedule in ax.get_title() and ax.get_xlabel() == "step" and ax.get_ylabel() == "learning rate"
    assert len(ax.get_lines()) == len(L.SCHEDULES)
    if schedule == "constant":
        assert "area 1.00" in ax.get_title()
    # extremes of the sliders still draw
    render(L.schedule_explorer, schedule=schedule, total_steps=20, max_lr=1.0, warmup_frac=0.0, min_lr_frac=0.0)
