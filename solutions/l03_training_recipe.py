"""Lecture 03 — the training recipe: reference solutions and the exercise registry.

Exercises (in lecture order):

* :func:`train_step`        — the body of every training loop: forward, loss, zero_grad, backward, step.
* :func:`overfit_one_batch` — the sanity check: a correct model + loop drives one fixed batch to ~0 loss.
* :func:`lr_range_test`     — the LR finder (Smith 2017): raise the LR geometrically, record the loss.
* :class:`EarlyStopping`    — keep the best checkpoint (a *copy*), stop after ``patience`` bad epochs.

Helpers the notebook uses: :func:`lr_sweep` and :func:`plot_lr_sweep` (the LR-slider widget), :func:`smooth` and
:func:`suggest_lr` (reading the LR finder). The model, the epoch loop and the bug zoo are written in the notebook.
"""
from __future__ import annotations

import copy
import math
from typing import Callable, Sequence

import matplotlib.pyplot as plt
import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F

from utils.exercises import Case, Exercise

__all__ = [
    "train_step", "overfit_one_batch", "lr_range_test", "EarlyStopping", "smooth", "suggest_lr", "lr_sweep",
    "plot_lr_sweep", "EXERCISES",
]

Batch = tuple[torch.Tensor, torch.Tensor]


# --------------------------------------------------------------------------------- exercise 1: train_step
def train_step(model: nn.Module, optimizer: torch.optim.Optimizer, xb: torch.Tensor, yb: torch.Tensor) -> float:
    """One optimisation step on the minibatch (xb (B, ...), yb (B,) int64 class ids).

    Cross-entropy on the raw logits model(xb) (B, C); clear old gradients, backpropagate, update.
    Returns the loss *before* the update, as a Python float.
    """
    logits = model(xb)
    loss = F.cross_entropy(logits, yb)  # takes raw logits: it applies log-softmax itself
    optimizer.zero_grad(set_to_none=True)  # gradients accumulate (+=) in .grad unless cleared
    loss.backward()
    optimizer.step()
    return loss.item()


def _step_no_zero_grad(model, optimizer, xb, yb):
    loss = F.cross_entropy(model(xb), yb)
    loss.backward()
    optimizer.step()
    return loss.item()


def _step_zero_grad_after_backward(model, optimizer, xb, yb):
    loss = F.cross_entropy(model(xb), yb)
    loss.backward()
    optimizer.zero_grad()
    optimizer.step()
    return loss.item()


def _step_softmax_then_ce(model, optimizer, xb, yb):
    loss = F.cross_entropy(F.softmax(model(xb), dim=1), yb)
    optimizer.zero_grad()
    loss.backward()
    optimizer.step()
    return loss.item()


def _step_nll_on_logits(model, optimizer, xb, yb):
    loss = F.nll_loss(model(xb), yb)  # nll_loss expects log-probabilities, not logits
    optimizer.zero_grad()
    loss.backward()
    optimizer.step()
    return loss.item()


def _tiny_problem(seed: int, n: int = 64, d: int = 8, c: int = 3) -> tuple[torch.Tensor, torch.Tensor]:
    gen = torch.Generator().manual_seed(seed)
    X = torch.randn(n, d, generator=gen)
    y = (X[:, :c].argmax(1) + (X[:, c] > 1).long()) % c  # learnable but not trivially linear
    return X, y


def _tiny_mlp(d: int = 8, c: int = 3, hidden: int = 16) -> nn.Module:
    return nn.Sequential(nn.Linear(d, hidden), nn.ReLU(), nn.Linear(hidden, c))


def _train_step_cases() -> list[Case]:
    cases = []
    for label, seed, steps, momentum, bs in [
        ("tiny MLP, SGD, 3 steps on batches of 16", 0, 3, 0.0, 16),
        ("tiny MLP, SGD with momentum 0.9, 4 steps", 1, 4, 0.9, 16),
        ("tiny MLP, one step on a batch of 1", 2, 1, 0.0, 1),
    ]:
        X, y = _tiny_problem(seed)
        cases.append(Case(args=(X, y), kwargs=dict(steps=steps, momentum=momentum, batch_size=bs), label=label,
                          seed=seed))
    return cases


def _run_train_step(impl: Callable, case: Case) -> dict[str, torch.Tensor] | None:
    """Train a freshly seeded tiny MLP with ``impl`` for a few steps; return the losses and final weights."""
    X, y = case.args
    kw = case.kwargs
    torch.manual_seed(case.seed)
    model = _tiny_mlp()
    opt = torch.optim.SGD(model.parameters(), lr=0.5, momentum=kw["momentum"])
    losses = []
    for i in range(kw["steps"]):
        sl = slice(i * kw["batch_size"], (i + 1) * kw["batch_size"])
        loss = impl(model, opt, X[sl], y[sl])
        if loss is None:
            return None
        losses.append(float(loss))
    weights = torch.cat([p.detach().flatten() for p in model.parameters()])
    return {"losses": torch.tensor(losses), "weights after training": weights}


# -------------------------------------------------------------------------- exercise 2: overfit_one_batch
def overfit_one_batch(model: nn.Module, X: torch.Tensor, y: torch.Tensor, batch_size: int = 32,
                      steps: int = 200, lr: float = 0.05) -> list[float]:
    """Train on ONE fixed batch — the first ``batch_size`` examples X[:batch_size] (B, ...), y[:batch_size] (B,) —
    for ``steps`` steps of SGD (momentum 0.9, learning rate ``lr``) using :func:`train_step`.

    Returns the list of ``steps`` losses. A working model + loop must drive it to ~0.
    """
    xb, yb = X[:batch_size], y[:batch_size]  # the SAME batch every step: memorise it
    optimizer = torch.optim.SGD(model.parameters(), lr=lr, momentum=0.9)
    return [train_step(model, optimizer, xb, yb) for _ in range(steps)]


def _overfit_new_batch_each_step(model, X, y, batch_size=32, steps=200, lr=0.05):
    optimizer = torch.optim.SGD(model.parameters(), lr=lr, momentum=0.9)
    losses = []
    for _ in range(steps):
        idx = torch.randint(0, len(X), (batch_size,))
        losses.append(train_step(model, optimizer, X[idx], y[idx]))
    return losses


def _overfit_new_optimizer_each_step(model, X, y, batch_size=32, steps=200, lr=0.05):
    xb, yb = X[:batch_size], y[:batch_size]
    losses = []
    for _ in range(steps):
        optimizer = torch.optim.SGD(model.parameters(), lr=lr, momentum=0.9)  # momentum buffer lost each step
        losses.append(train_step(model, optimizer, xb, yb))
    return losses


def _overfit_no_zero_grad(model, X, y, batch_size=32, steps=200, lr=0.05):
    xb, yb = X[:batch_size], y[:batch_size]
    optimizer = torch.optim.SGD(model.parameters(), lr=lr, momentum=0.9)
    return [_step_no_zero_grad(model, optimizer, xb, yb) for _ in range(steps)]


def _overfit_cases() -> list[Case]:
    X, y = _tiny_problem(3, n=128)
    X2, y2 = _tiny_problem(4, n=40)
    return [
        Case(args=(X, y), kwargs=dict(batch_size=32, steps=30, lr=0.05), label="batch of 32, 30 steps", seed=3),
        Case(args=(X2, y2), kwargs=dict(batch_size=8, steps=20, lr=0.2), label="batch of 8, lr 0.2", seed=4),
        Case(args=(X2, y2), kwargs=dict(batch_size=40, steps=5, lr=0.05),
             label="batch = the whole (tiny) dataset", seed=5),
    ]


def _run_overfit(impl: Callable, case: Case) -> torch.Tensor | None:
    X, y = case.args
    torch.manual_seed(case.seed)
    model = _tiny_mlp()
    losses = impl(model, X, y, **case.kwargs)
    return None if losses is None else torch.tensor([float(v) for v in losses])


# ------------------------------------------------------------------------------ exercise 3: lr_range_test
def lr_range_test(model: nn.Module, optimizer: torch.optim.Optimizer, batches: Sequence[Batch],
                  lr_min: float = 1e-4, lr_max: float = 10.0,
                  stop_factor: float = 4.0) -> tuple[list[float], list[float]]:
    """The LR range test ("LR finder", Smith 2017). Step i of N = len(batches) uses the geometric schedule

        lr_i = lr_min * (lr_max / lr_min) ** (i / (N - 1))        (lr_0 = lr_min, lr_{N-1} = lr_max)

    set on every param group *before* the step, then one :func:`train_step` on batches[i] = (xb, yb).
    Stop early (after recording it) when a loss is NaN or exceeds ``stop_factor`` x the lowest loss so far.
    Returns (lrs, losses): two lists of the same length (<= N).
    """
    n = len(batches)
    lrs, losses = [], []
    for i, (xb, yb) in enumerate(batches):
        lr = lr_min * (lr_max / lr_min) ** (i / (n - 1)) if n > 1 else lr_min
        for group in optimizer.param_groups:
            group["lr"] = lr
        loss = train_step(model, optimizer, xb, yb)
        lrs.append(lr)
        losses.append(loss)
        if math.isnan(loss) or loss > stop_factor * min(losses):
            break  # diverged: larger learning rates only get worse
    return lrs, losses


def _lr_linear_schedule(model, optimizer, batches, lr_min=1e-4, lr_max=10.0, stop_factor=4.0):
    n = len(batches)
    lrs, losses = [], []
    for i, (xb, yb) in enumerate(batches):
        lr = lr_min + (lr_max - lr_min) * i / (n - 1) if n > 1 else lr_min
        for group in optimizer.param_groups:
            group["lr"] = lr
        loss = train_step(model, optimizer, xb, yb)
        lrs.append(lr)
        losses.append(loss)
        if math.isnan(loss) or loss > stop_factor * min(losses):
            break
    return lrs, losses


def _lr_never_stops(model, optimizer, batches, lr_min=1e-4, lr_max=10.0, stop_factor=4.0):
    n = len(batches)
    lrs, losses = [], []
    for i, (xb, yb) in enumerate(batches):
        lr = lr_min * (lr_max / lr_min) ** (i / (n - 1)) if n > 1 else lr_min
        for group in optimizer.param_groups:
            group["lr"] = lr
        lrs.append(lr)
        losses.append(train_step(model, optimizer, xb, yb))
    return lrs, losses


def _lr_set_after_step(model, optimizer, batches, lr_min=1e-4, lr_max=10.0, stop_factor=4.0):
    n = len(batches)
    lrs, losses = [], []
    for i, (xb, yb) in enumerate(batches):
        lr = lr_min * (lr_max / lr_min) ** (i / (n - 1)) if n > 1 else lr_min
        loss = train_step(model, optimizer, xb, yb)  # runs with the previous step's lr
        for group in optimizer.param_groups:
            group["lr"] = lr
        lrs.append(lr)
        losses.append(loss)
        if math.isnan(loss) or loss > stop_factor * min(losses):
            break
    return lrs, losses


def _lr_cases() -> list[Case]:
    X, y = _tiny_problem(5, n=400)
    batches = [(X[i:i + 20], y[i:i + 20]) for i in range(0, 400, 20)]  # 20 batches
    return [
        Case(args=(batches,), kwargs=dict(lr_min=1e-3, lr_max=100.0), label="20 steps from 1e-3 to 100 (diverges)",
             seed=5),
        Case(args=(batches[:10],), kwargs=dict(lr_min=1e-3, lr_max=0.1),
             label="10 gentle steps from 1e-3 to 0.1 (never diverges)", seed=6),
        Case(args=(batches,), kwargs=dict(lr_min=1e-2, lr_max=1000.0, stop_factor=2.0),
             label="stop_factor=2 on a range that blows up", seed=7),
        Case(args=(batches[:2],), kwargs=dict(lr_min=0.01, lr_max=0.1), label="only two steps", seed=8),
    ]


def _run_lr_range_test(impl: Callable, case: Case) -> dict[str, torch.Tensor] | None:
    (batches,) = case.args
    torch.manual_seed(case.seed)
    model = _tiny_mlp()
    optimizer = torch.optim.SGD(model.parameters(), lr=123.0, momentum=0.9)  # lr must be overwritten
    out = impl(model, optimizer, batches, **case.kwargs)
    if out is None:
        return None
    lrs, losses = out
    # NaN is a legitimate recorded loss; compare it as a large number so the comparison stays meaningful
    losses = torch.tensor([float(v) for v in losses], dtype=torch.float64).nan_to_num(1e30, 1e30)
    return {"lrs": torch.tensor([float(v) for v in lrs], dtype=torch.float64), "losses": losses}


# ------------------------------------------------------------------------------ exercise 4: EarlyStopping
class EarlyStopping:
    """Remember the best model, stop when the validation loss has not improved for ``patience`` epochs.

    Call ``step(val_loss, model)`` once per epoch; it returns True when training should stop. Attributes:
    ``best`` (lowest val loss so far, starts at inf), ``best_epoch`` (0-based index of that call, -1 before
    any), ``best_state`` (a deep *copy* of model.state_dict() at the best epoch, None before any) and
    ``bad_epochs`` (calls since the last strict improvement). A loss equal to the best is not an improvement.
    """

    def __init__(self, patience: int = 5):
        self.patience = patience
        self.best = math.inf
        self.best_epoch = -1
        self.best_state: dict[str, torch.Tensor] | None = None
        self.bad_epochs = 0
        self.epoch = -1

    def step(self, val_loss: float, model: nn.Module) -> bool:
        self.epoch += 1
        if val_loss < self.best:
            self.best, self.best_epoch, self.bad_epochs = val_loss, self.epoch, 0
            self.best_state = copy.deepcopy(model.state_dict())  # a copy: the live tensors keep changing
        else:
            self.bad_epochs += 1
        return self.bad_epochs >= self.patience


class _EarlyStoppingNoCopy(EarlyStopping):
    def step(self, val_loss, model):
        self.epoch += 1
        if val_loss < self.best:
            self.best, self.best_epoch, self.bad_epochs = val_loss, self.epoch, 0
            self.best_state = model.state_dict()  # references the live tensors, which training overwrites
        else:
            self.bad_epochs += 1
        return self.bad_epochs >= self.patience


class _EarlyStoppingNoReset(EarlyStopping):
    def step(self, val_loss, model):
        self.epoch += 1
        if val_loss < self.best:
            self.best, self.best_epoch = val_loss, self.epoch
            self.best_state = copy.deepcopy(model.state_dict())
        else:
            self.bad_epochs += 1
        return self.bad_epochs >= self.patience


class _EarlyStoppingVsPrevious(EarlyStopping):
    def step(self, val_loss, model):
        self.epoch += 1
        previous = getattr(self, "previous", math.inf)
        self.previous = val_loss
        if val_loss < self.best:
            self.best, self.best_epoch = val_loss, self.epoch
            self.best_state = copy.deepcopy(model.state_dict())
        if val_loss < previous:  # compares with the last epoch, not with the best
            self.bad_epochs = 0
        else:
            self.bad_epochs += 1
        return self.bad_epochs >= self.patience


class _EarlyStoppingOffByOne(EarlyStopping):
    def step(self, val_loss, model):
        self.epoch += 1
        if val_loss < self.best:
            self.best, self.best_epoch, self.bad_epochs = val_loss, self.epoch, 0
            self.best_state = copy.deepcopy(model.state_dict())
        else:
            self.bad_epochs += 1
        return self.bad_epochs > self.patience


def _early_stopping_cases() -> list[Case]:
    return [
        Case(args=([1.0, 0.8, 0.6, 0.5, 0.45, 0.44],), kwargs=dict(patience=2), label="always improving"),
        Case(args=([1.0, 0.7, 0.5, 0.55, 0.6, 0.7, 0.8, 0.9],), kwargs=dict(patience=3),
             label="U-shaped val loss, patience 3"),
        Case(args=([1.0, 0.8, 0.9, 0.7, 0.75, 0.72, 0.71, 0.9, 0.95, 1.0],), kwargs=dict(patience=3),
             label="noisy: a bump, a new best, then a plateau above the best"),
        Case(args=([0.5, 0.5, 0.5, 0.5],), kwargs=dict(patience=2), label="equal losses are not improvements"),
        Case(args=([2.0, 1.0, 1.5],), kwargs=dict(patience=1), label="patience 1"),
    ]


def _run_early_stopping(impl: type, case: Case) -> dict | None:
    """Feed the val losses of ``case`` one epoch at a time to a model whose weight = epoch index."""
    (val_losses,) = case.args
    stopper = impl(**case.kwargs)
    model = nn.Linear(1, 1, bias=False)
    decisions = []
    for epoch, loss in enumerate(val_losses):
        with torch.no_grad():
            model.weight.fill_(float(epoch))  # training changes the weights in place
        stop = stopper.step(loss, model)
        if stop is None:
            return None
        decisions.append(bool(stop))
        if stop:
            break
    with torch.no_grad():
        model.weight.fill_(-1.0)  # and keeps changing them after the last call
    state = stopper.best_state
    return {"stop decisions": decisions, "best": float(stopper.best), "best_epoch": int(stopper.best_epoch),
            "weight in best_state": float(state["weight"].item()) if state is not None else float("nan")}


# ------------------------------------------------------------------------ reading the LR finder, widgets
def smooth(values: Sequence[float], beta: float = 0.8) -> list[float]:
    """Bias-corrected exponential moving average (as in fastai's LR finder): s_t = beta s_{t-1} + (1-beta) v_t."""
    out, avg = [], 0.0
    for t, v in enumerate(values, 1):
        avg = beta * avg + (1 - beta) * float(v)
        out.append(avg / (1 - beta ** t))
    return out


def suggest_lr(lrs: Sequence[float], losses: Sequence[float], divide_by: float = 10.0) -> float:
    """A safe learning rate from an LR range test: where the smoothed loss is lowest, divided by ``divide_by``.

    At the minimum the loss is about to blow up; a factor ~10 below it is still fast but stable.
    """
    if len(lrs) != len(losses) or not lrs:
        raise ValueError(f"need equally long non-empty lrs and losses, got {len(lrs)} and {len(losses)}")
    s = smooth(losses)
    return float(lrs[int(np.nanargmin(s))]) / divide_by


def lr_sweep(make_model: Callable[[], nn.Module], batches: Sequence[Batch], lrs: Sequence[float],
             momentum: float = 0.9, seed: int = 0) -> dict[float, list[float]]:
    """Train a fresh ``make_model()`` (seeded identically) with SGD at each fixed lr on the same ``batches``.

    Returns {lr: list of training losses (len(batches))}; a diverged run keeps its NaN/inf losses.
    """
    curves = {}
    for lr in lrs:
        torch.manual_seed(seed)
        model = make_model()
        optimizer = torch.optim.SGD(model.parameters(), lr=lr, momentum=momentum)
        curves[float(lr)] = [train_step(model, optimizer, xb, yb) for xb, yb in batches]
    return curves


def plot_lr_sweep(curves: dict[float, list[float]], lr: float, finder: tuple[list, list] | None = None,
                  ylim: tuple[float, float] = (0.01, 10.0)) -> plt.Figure:
    """The LR-slider view: left, the training loss for every lr of the sweep (``lr`` highlighted); right, the LR
    finder curve with a marker at ``lr`` (if ``finder`` = (lrs, losses) is given)."""
    lr = min(curves, key=lambda k: abs(math.log(k) - math.log(lr)))  # nearest precomputed lr
    fig, axes = plt.subplots(1, 2 if finder is not None else 1, figsize=(11 if finder else 6, 3.8), squeeze=False)
    ax = axes[0, 0]
    for k, losses in curves.items():
        v = np.clip(np.nan_to_num(np.asarray(losses, dtype=float), nan=ylim[1], posinf=ylim[1]), *ylim)
        if k == lr:
            ax.plot(v, color="C3", lw=2.2, label=f"lr = {k:.3g}", zorder=3)
        else:
            ax.plot(v, color="0.75", lw=0.8)
    final = np.asarray(curves[lr][-20:], dtype=float)
    if not np.all(np.isfinite(final)):
        status = "diverged (NaN/inf)"
    else:
        status = f"{final.mean():.3f}" + (" (no better than chance)" if final.mean() > 2.0 else "")
    ax.set(yscale="log", ylim=ylim, xlabel="step", ylabel="training loss (log)",
           title=f"lr = {lr:.3g}: mean loss of the last 20 steps {status}")
    ax.legend(loc="upper right")
    if finder is not None:
        ax2 = axes[0, 1]
        f_lrs, f_losses = finder
        ax2.plot(f_lrs, f_losses, color="C0", alpha=0.25, lw=0.8, label="LR finder, raw minibatch loss")
        ax2.plot(f_lrs, smooth(f_losses), color="C0", label="LR finder, smoothed")
        ax2.axvline(lr, color="C3", ls="--", label=f"slider lr = {lr:.3g}")
        ax2.set_xlim(min(f_lrs[0], min(curves)) / 1.5, max(f_lrs[-1], max(curves)) * 1.5)
        ax2.set_ylim(0, max(3.0, min(max(f_losses), 6.0)))
        ax2.set(xscale="log", xlabel="learning rate (log)", ylabel="training loss",
                title="LR range test: one run, lr rising every step")
        ax2.legend(loc="lower left", fontsize=8)
    fig.tight_layout()
    return fig


# ----------------------------------------------------------------------------------------------- registry
EXERCISES = [
    Exercise(
        name="train_step",
        reference=train_step,
        cases=_train_step_cases,
        runner=_run_train_step,
        mistakes={
            "forgot optimizer.zero_grad(): gradients accumulate across steps": _step_no_zero_grad,
            "zero_grad() after backward(): the gradients are wiped before the step": _step_zero_grad_after_backward,
            "softmax before cross_entropy (it expects raw logits)": _step_softmax_then_ce,
            "F.nll_loss on raw logits (it expects log-probabilities: use F.cross_entropy)": _step_nll_on_logits,
        },
        hint="Four lines in this order: loss = F.cross_entropy(model(xb), yb); optimizer.zero_grad(); "
             "loss.backward(); optimizer.step(). Return loss.item().",
    ),
    Exercise(
        name="overfit_one_batch",
        reference=overfit_one_batch,
        cases=_overfit_cases,
        runner=_run_overfit,
        mistakes={
            "draws a new random batch every step (that is ordinary training, not the one-batch check)":
                _overfit_new_batch_each_step,
            "creates the optimizer inside the loop (momentum is reset every step)": _overfit_new_optimizer_each_step,
            "forgot optimizer.zero_grad()": _overfit_no_zero_grad,
        },
        hint="xb, yb = X[:batch_size], y[:batch_size] once; one SGD(lr=lr, momentum=0.9) optimizer built before the "
             "loop; then `steps` calls of train_step(model, optimizer, xb, yb), collecting the losses.",
    ),
    Exercise(
        name="lr_range_test",
        reference=lr_range_test,
        cases=_lr_cases,
        runner=_run_lr_range_test,
        mistakes={
            "linear instead of geometric lr schedule": _lr_linear_schedule,
            "never stops when the loss blows up": _lr_never_stops,
            "sets the new lr after the step (each step runs with the previous lr)": _lr_set_after_step,
        },
        hint="lr = lr_min * (lr_max / lr_min) ** (i / (N - 1)); write it into every optimizer.param_groups[k]['lr'] "
             "before train_step; append lr and loss; break if isnan(loss) or loss > stop_factor * min(losses).",
    ),
    Exercise(
        name="EarlyStopping",
        reference=EarlyStopping,
        cases=_early_stopping_cases,
        runner=_run_early_stopping,
        mistakes={
            "best_state = model.state_dict() without a copy (it tracks the live weights)": _EarlyStoppingNoCopy,
            "bad_epochs not reset to 0 on an improvement": _EarlyStoppingNoReset,
            "compares with the previous epoch instead of the best so far": _EarlyStoppingVsPrevious,
            "stops one epoch late (bad_epochs > patience)": _EarlyStoppingOffByOne,
        },
        hint="In step(): self.epoch += 1; if val_loss < self.best: update best, best_epoch, "
             "best_state = copy.deepcopy(model.state_dict()), bad_epochs = 0; else bad_epochs += 1; "
             "return bad_epochs >= patience.",
    ),
]
