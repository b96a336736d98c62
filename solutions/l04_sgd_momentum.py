"""Lecture 04 — gradient descent, SGD and momentum: reference solutions and the exercise registry.

Exercises (in lecture order, checked by ``ex.check`` in ``lectures/l04_sgd_momentum.ipynb``):

* :func:`gd_step`            — one gradient-descent step on the quadratic f(w) = ½ wᵀAw − bᵀw;
* :func:`gd_rate`            — GD's worst-case contraction per step, max_i |1 − lr·λ_i(A)| (> 1: divergence);
* :func:`gradient_variance`  — E‖g_B − g‖², the noise of a minibatch gradient around the full-data gradient;
* :func:`heavy_ball_params`  — Polyak's optimal (lr, β) for curvatures in [λ_min, λ_max];
* :class:`SGD`               — ``torch.optim.SGD`` (momentum, Nesterov, weight decay; dampening 0), checked over 10
  steps on a small network against the reference here, which itself matches ``torch.optim.SGD`` to 1e-6.

Helpers the notebook uses: :func:`run_optimizer` (the 10-step harness), :func:`plot_contours`, and the widget's
update function :func:`momentum_explorer` with its surfaces (:data:`SURFACES`) and :func:`trajectory`.
"""
from __future__ import annotations

import functools
import math
from dataclasses import dataclass
from typing import Callable, Iterable, Sequence

import matplotlib.pyplot as plt
import numpy as np
import torch

from utils.exercises import Case, Exercise, optimizer_runner, run_optimizer

__all__ = [
    "gd_step", "gd_rate", "gradient_variance", "heavy_ball_params", "SGD", "run_optimizer", "plot_contours",
    "Surface", "SURFACES", "trajectory", "momentum_explorer", "EXERCISES",
]


# ------------------------------------------------------------------------------------- exercise 1: gd_step
def gd_step(w: torch.Tensor, A: torch.Tensor, b: torch.Tensor, lr: float) -> torch.Tensor:
    """One gradient-descent step on f(w) = ½ wᵀAw − bᵀw (A symmetric (d, d), b (d,)).

    w: (d,) or a batch of points (n, d), one per row. The gradient is ∇f(w) = Aw − b.
    Returns w − lr·∇f(w), same shape as w.
    """
    grad = w @ A.T - b  # A w − b for every row (A.T so it also holds for non-symmetric A)
    return w - lr * grad


def _gd_ascent(w, A, b, lr):
    return w + lr * (w @ A.T - b)


def _gd_forgot_b(w, A, b, lr):
    return w - lr * (w @ A.T)


def _gd_half_gradient(w, A, b, lr):
    return w - lr * (0.5 * w @ A.T - b)


def _gd_step_cases() -> list[Case]:
    gen = torch.Generator().manual_seed(0)
    M = torch.randn(3, 3, generator=gen, dtype=torch.float64)
    A3 = M @ M.T + torch.eye(3, dtype=torch.float64)  # symmetric positive definite
    return [
        Case((torch.tensor([1.0, 1.0]), torch.diag(torch.tensor([1.0, 10.0])), torch.zeros(2), 0.1),
             label="w = (1, 1), A = diag(1, 10), b = 0, lr 0.1"),
        Case((torch.tensor([0.5, -2.0]), torch.tensor([[3.0, 1.0], [1.0, 2.0]]), torch.tensor([1.0, -1.0]), 0.05),
             label="non-diagonal A, b ≠ 0"),
        Case((torch.randn(3, generator=gen, dtype=torch.float64), A3, torch.randn(3, generator=gen,
              dtype=torch.float64), 0.3), label="3-D, float64"),
        Case((torch.randn(5, 3, generator=gen, dtype=torch.float64), A3, torch.randn(3, generator=gen,
              dtype=torch.float64), 0.1), label="a batch of 5 points (5, 3)"),
        Case((torch.tensor([2.0, 3.0]), torch.eye(2), torch.tensor([2.0, 3.0]), 0.5),
             label="already at the minimum w = A⁻¹b: the step is 0"),
    ]


# ------------------------------------------------------------------------------------- exercise 2: gd_rate
def gd_rate(A: torch.Tensor, lr: float) -> float:
    """The factor by which gradient descent with step ``lr`` shrinks the error w − w* per step, in the worst
    direction, on a quadratic with symmetric Hessian A (d, d):  max_i |1 − lr·λ_i(A)|.

    < 1: converges (that fast); > 1: diverges. A float.
    """
    eigenvalues = torch.linalg.eigvalsh(A)  # the curvatures along A's eigenvectors (real: A is symmetric)
    return (1 - lr * eigenvalues).abs().max().item()


def _rate_no_abs(A, lr):
    return (1 - lr * torch.linalg.eigvalsh(A)).max().item()


def _rate_lambda_max_only(A, lr):
    return abs(1 - lr * torch.linalg.eigvalsh(A).max().item())


def _rate_diagonal_curvatures(A, lr):
    return (1 - lr * torch.diagonal(A)).abs().max().item()


def _rotated(eigenvalues: Sequence[float], degrees: float) -> torch.Tensor:
    """R diag(eigenvalues) Rᵀ for a 2-D rotation R by ``degrees``."""
    t = math.radians(degrees)
    R = torch.tensor([[math.cos(t), -math.sin(t)], [math.sin(t), math.cos(t)]], dtype=torch.float64)
    return R @ torch.diag(torch.tensor(eigenvalues, dtype=torch.float64)) @ R.T


def _gd_rate_cases() -> list[Case]:
    gen = torch.Generator().manual_seed(1)
    Q, _ = torch.linalg.qr(torch.randn(5, 5, generator=gen, dtype=torch.float64))
    A5 = Q @ torch.diag(torch.tensor([0.5, 1.0, 2.0, 4.0, 8.0], dtype=torch.float64)) @ Q.T
    return [
        Case((torch.diag(torch.tensor([1.0, 10.0])), 0.05), label="A = diag(1, 10), small lr 0.05"),
        Case((torch.diag(torch.tensor([1.0, 10.0])), 0.19), label="A = diag(1, 10), lr 0.19 (just under 2/10)"),
        Case((torch.diag(torch.tensor([1.0, 10.0])), 0.21), label="A = diag(1, 10), lr 0.21 (just over 2/10)"),
        Case((_rotated([1.0, 10.0], 30.0), 0.15), label="the same curvatures, rotated 30°: A is not diagonal"),
        Case((A5, 0.3), label="5-D, eigenvalues 0.5 ... 8, lr 0.3"),
        Case((torch.tensor([[4.0]]), 0.25), label="1-D, lr = 1/λ: one step to the minimum (rate 0)"),
    ]


# ---------------------------------------------------------------------------- exercise 3: gradient_variance
def gradient_variance(batch_grads: torch.Tensor, full_grad: torch.Tensor) -> float:
    """How noisy minibatch gradients are: the mean over k minibatches of ‖g_k − g‖².

    batch_grads: (k, P), one flattened minibatch gradient g_k per row; full_grad: (P,), the full-data gradient g.
    Returns a float: the total variance (summed over the P coordinates) of a minibatch gradient around g.
    """
    return ((batch_grads - full_grad) ** 2).sum(dim=1).mean().item()


def _variance_not_centered(batch_grads, full_grad):
    return (batch_grads ** 2).sum(dim=1).mean().item()


def _variance_per_coordinate(batch_grads, full_grad):
    return ((batch_grads - full_grad) ** 2).mean().item()


def _variance_norm_not_squared(batch_grads, full_grad):
    return (batch_grads - full_grad).norm(dim=1).mean().item()


def _variance_around_batch_mean(batch_grads, full_grad):
    return batch_grads.var(dim=0).sum().item()


def _variance_cases() -> list[Case]:
    gen = torch.Generator().manual_seed(2)
    G = torch.randn(40, 6, generator=gen) + torch.tensor([3.0, -1.0, 0.0, 0.5, 2.0, 0.0])
    few = torch.randn(3, 4, generator=gen, dtype=torch.float64)
    return [
        Case((G, G.mean(0)), label="40 batch gradients of 6 parameters, g = their mean, g ≠ 0"),
        Case((G[:5], G.mean(0)), label="5 batch gradients, g = the mean over all 40 (≠ the mean of these 5)"),
        Case((few, torch.tensor([1.0, -1.0, 0.0, 2.0], dtype=torch.float64)), label="3 batch gradients, float64"),
        Case((torch.tensor([[1.0, 2.0]]), torch.tensor([0.0, 0.0])), label="one batch gradient (1, 2), g = 0"),
        Case((torch.full((4, 3), 0.7), torch.full((3,), 0.7)), label="no noise: every batch gradient equals g"),
    ]


# ---------------------------------------------------------------------------- exercise 4: heavy_ball_params
def heavy_ball_params(lam_min: float, lam_max: float) -> tuple[float, float]:
    """Polyak's optimal heavy-ball step size and momentum for curvatures in [lam_min, lam_max] (0 < min ≤ max).

    With κ = lam_max / lam_min:
        lr   = 4 / (√lam_max + √lam_min)²
        beta = ((√κ − 1) / (√κ + 1))²
    Every direction then shrinks by √beta = (√κ − 1)/(√κ + 1) per step. Returns (lr, beta) as floats.
    """
    sqrt_kappa = math.sqrt(lam_max / lam_min)
    lr = 4 / (math.sqrt(lam_max) + math.sqrt(lam_min)) ** 2
    beta = ((sqrt_kappa - 1) / (sqrt_kappa + 1)) ** 2
    return lr, beta


def _hb_beta_not_squared(lam_min, lam_max):
    s = math.sqrt(lam_max / lam_min)
    return 4 / (math.sqrt(lam_max) + math.sqrt(lam_min)) ** 2, (s - 1) / (s + 1)


def _hb_lr_one_over_lmax(lam_min, lam_max):
    return 1 / lam_max, heavy_ball_params(lam_min, lam_max)[1]


def _hb_kappa_not_sqrt(lam_min, lam_max):
    k = lam_max / lam_min
    return 4 / (math.sqrt(lam_max) + math.sqrt(lam_min)) ** 2, ((k - 1) / (k + 1)) ** 2


def _hb_gd_optimal_lr(lam_min, lam_max):
    return 2 / (lam_min + lam_max), heavy_ball_params(lam_min, lam_max)[1]


def _heavy_ball_cases() -> list[Case]:
    return [
        Case((1.0, 100.0), label="λ in [1, 100] (κ = 100)"),
        Case((0.5, 2000.0), label="λ in [0.5, 2000] (κ = 4000)"),
        Case((2.0, 50.0), label="λ in [2, 50] (κ = 25)"),
        Case((3.0, 3.0), label="κ = 1: no momentum needed, lr = 1/λ"),
    ]


# -------------------------------------------------------------------------------------- exercise 5: SGD
class SGD(torch.optim.Optimizer):
    """Stochastic gradient descent with ``torch.optim.SGD``'s API and semantics (dampening = 0).

    For every parameter p with a gradient (any shape; the buffer has p's shape):
        g ← p.grad + weight_decay · p          (L2: the decay goes into the gradient, so into the buffer)
        v ← g at the first step, then v ← momentum · v + g
        d ← g + momentum · v  if nesterov  else  v        (d ← g when momentum = 0)
        p ← p − lr · d
    """

    def __init__(self, params: Iterable, lr: float = 1e-3, momentum: float = 0.0, weight_decay: float = 0.0,
                 nesterov: bool = False):
        if nesterov and momentum <= 0:
            raise ValueError("Nesterov momentum requires a momentum > 0")
        super().__init__(params, dict(lr=lr, momentum=momentum, weight_decay=weight_decay, nesterov=nesterov))

    @torch.no_grad()
    def step(self) -> None:
        for group in self.param_groups:  # hyperparameters live in each group: groups may differ
            lr, beta, wd = group["lr"], group["momentum"], group["weight_decay"]
            for p in group["params"]:
                if p.grad is None:  # frozen or unused parameter
                    continue
                g = p.grad
                if wd != 0:
                    g = g + wd * p
                if beta != 0:
                    state = self.state[p]
                    if "momentum_buffer" not in state:
                        state["momentum_buffer"] = g.clone()  # the first buffer is the gradient itself
                    else:
                        state["momentum_buffer"].mul_(beta).add_(g)
                    v = state["momentum_buffer"]
                    g = g + beta * v if group["nesterov"] else v
                p.add_(g, alpha=-lr)


def _sgd_variant(name: str, *, nesterov_ignored: bool = False, decay_after_momentum: bool = False,
                 ema: bool = False, step_before_update: bool = False, lr_in_buffer: bool = False,
                 defaults_only: bool = False) -> type:
    """A (wrong) SGD variant, for the registry of common mistakes."""

    class Variant(torch.optim.Optimizer):
        def __init__(self, params, lr=1e-3, momentum=0.0, weight_decay=0.0, nesterov=False):
            super().__init__(params, dict(lr=lr, momentum=momentum, weight_decay=weight_decay, nesterov=nesterov))

        @torch.no_grad()
        def step(self):
            for group in self.param_groups:
                hp = self.defaults if defaults_only else group
                lr, beta, wd, nesterov = hp["lr"], hp["momentum"], hp["weight_decay"], hp["nesterov"]
                for p in group["params"]:
                    if p.grad is None:
                        continue
                    g = p.grad + wd * p if (wd and not decay_after_momentum) else p.grad
                    scale = lr if lr_in_buffer else 1.0
                    if beta != 0:
                        state = self.state[p]
                        if ema or step_before_update:
                            v = state.setdefault("v", torch.zeros_like(p))
                        else:
                            v = state.get("v")
                        if step_before_update:
                            d = v.clone()
                            v.mul_(beta).add_(g)
                        else:
                            if v is None:
                                v = state["v"] = scale * g.clone()
                            else:
                                v.mul_(beta).add_(g, alpha=(1 - beta) if ema else scale)
                            d = g * scale + beta * v if (nesterov and not nesterov_ignored) else v
                    else:
                        d = scale * g
                    if decay_after_momentum and wd:
                        d = d + scale * wd * p
                    p.sub_(d if lr_in_buffer else lr * d)

    Variant.__name__ = Variant.__qualname__ = name
    return Variant


def _sgd_cases() -> list[Case]:
    return [
        Case(kwargs=dict(lr=0.1), label="plain SGD (momentum 0), lr 0.1"),
        Case(kwargs=dict(lr=0.05, momentum=0.9), label="momentum 0.9, lr 0.05"),
        Case(kwargs=dict(lr=0.05, momentum=0.9, weight_decay=0.1), label="momentum 0.9, weight_decay 0.1"),
        Case(kwargs=dict(lr=0.05, momentum=0.9, nesterov=True), label="Nesterov, momentum 0.9"),
        Case(kwargs=dict(lr=0.05, momentum=0.8, nesterov=True, weight_decay=0.05),
             label="Nesterov, momentum 0.8, weight_decay 0.05"),
        Case(kwargs=dict(lr=0.1, weight_decay=0.2), label="no momentum, weight_decay 0.2"),
        Case(kwargs=dict(lr=0.1, momentum=0.9, lr_schedule=[0.1] * 5 + [0.02] * 5),
             label="momentum 0.9, lr dropped from 0.1 to 0.02 after 5 steps (a schedule)"),
        Case(kwargs=dict(lr=0.05, momentum=0.9, groups=dict(lr=0.2, momentum=0.5)),
             label="two parameter groups: the last layer has lr 0.2 and momentum 0.5"),
        Case(kwargs=dict(lr=0.05, momentum=0.9, freeze_bias=True), label="a frozen parameter (its grad is None)"),
        Case(kwargs=dict(lr=0.02, momentum=0.95, nesterov=True, weight_decay=0.01, seed=1),
             label="another network and batch (seed 1), Nesterov 0.95, weight_decay 0.01"),
    ]


# ------------------------------------------------------------------------------------------ plots & widget
def _levels(zz: np.ndarray, n_levels: int = 16) -> np.ndarray:
    """Log-spaced contour levels between the 1st and 99th percentile of the positive values of ``zz``."""
    positive = zz[zz > 0]
    low, high = np.quantile(positive, [0.01, 0.99])
    return np.geomspace(low, high, n_levels)


def plot_contours(ax: plt.Axes, f: Callable[[np.ndarray], np.ndarray], xlim: tuple[float, float],
                  ylim: tuple[float, float], f_min: float = 0.0, n_levels: int = 16, n: int = 200) -> None:
    """Log-spaced contour lines of f − f_min for a 2-D function ``f`` ((..., 2) array -> (...)) on xlim × ylim."""
    xx, yy = np.meshgrid(np.linspace(*xlim, n), np.linspace(*ylim, n))
    zz = np.asarray(f(np.stack([xx, yy], axis=-1))) - f_min
    ax.contour(xx, yy, zz, levels=_levels(zz, n_levels), colors="0.6", linewidths=0.6)
    ax.set(xlim=xlim, ylim=ylim)


@dataclass
class Surface:
    """A 2-D loss surface for the widget: f and its gradient (numpy), the start, the minimum and its value,
    λ_max (the largest curvature at the minimum: the lr slider is in units of 1/λ_max), and the plot box."""

    f: Callable[[np.ndarray], np.ndarray]
    grad: Callable[[np.ndarray], np.ndarray]
    w0: np.ndarray
    w_star: np.ndarray
    lam_max: float
    xlim: tuple[float, float]
    ylim: tuple[float, float]
    f_min: float = 0.0


def _ravine(kappa: float, degrees: float = 30.0) -> Surface:
    """f(w) = ½ wᵀAw with curvatures 1 and κ, rotated; the start has equal loss along both eigenvectors."""
    A = _rotated([1.0, kappa], degrees).numpy()
    t = math.radians(degrees)
    slow, steep = np.array([math.cos(t), math.sin(t)]), np.array([-math.sin(t), math.cos(t)])
    w0 = -4.0 * slow + 4.0 / math.sqrt(kappa) * steep
    return Surface(f=lambda w: 0.5 * np.einsum("...i,ij,...j->...", w, A, w), grad=lambda w: A @ w, w0=w0,
                   w_star=np.zeros(2), lam_max=kappa, xlim=(-4.5, 2.0), ylim=(-3.0, 2.0))


def _rosenbrock_f(w: np.ndarray) -> np.ndarray:
    x, y = w[..., 0], w[..., 1]
    return (1 - x) ** 2 + 100 * (y - x ** 2) ** 2


def _rosenbrock_grad(w: np.ndarray) -> np.ndarray:
    x, y = w
    return np.array([-2 * (1 - x) - 400 * x * (y - x ** 2), 200 * (y - x ** 2)])


SURFACES: dict[str, Surface] = {
    "ravine κ = 10": _ravine(10.0),
    "ravine κ = 100": _ravine(100.0),
    # Hessian at (1, 1) is [[802, -400], [-400, 200]]: eigenvalues 1001.6 and 0.4 (κ ≈ 2500)
    "Rosenbrock": Surface(f=_rosenbrock_f, grad=_rosenbrock_grad, w0=np.array([-1.2, 1.0]), w_star=np.ones(2),
                          lam_max=float(np.linalg.eigvalsh([[802.0, -400.0], [-400.0, 200.0]]).max()),
                          xlim=(-2.0, 2.0), ylim=(-1.0, 3.0)),
}


def trajectory(surface: Surface, lr: float, momentum: float = 0.0, nesterov: bool = False,
               steps: int = 100) -> np.ndarray:
    """The path (≤ steps + 1, 2) of SGD with momentum (torch's form) from ``surface.w0``; stops early (shorter
    path) once the iterate leaves a huge box, i.e. diverges."""
    w, v = surface.w0.astype(float), np.zeros(2)
    path = [w]
    for _ in range(steps):
        g = surface.grad(w)
        v = momentum * v + g
        w = w - lr * (g + momentum * v if nesterov else v)
        if not np.all(np.abs(w) < 1e6):
            break
        path.append(w)
    return np.array(path)


@functools.cache
def _contour_grid(name: str, n: int = 160) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    s = SURFACES[name]
    xx, yy = np.meshgrid(np.linspace(*s.xlim, n), np.linspace(*s.ylim, n))
    zz = s.f(np.stack([xx, yy], axis=-1)) - s.f_min
    return xx, yy, zz, _levels(zz)


def momentum_explorer(surface: str = "ravine κ = 100", lr_scale: float = 1.0, momentum: float = 0.0,
                      nesterov: bool = False, steps: int = 150) -> plt.Figure:
    """Widget update: the trajectory of (momentum) gradient descent on a 2-D surface, and its loss per step.

    ``lr_scale`` is the step size in units of 1/λ_max (GD is stable below 2 on a quadratic, heavy ball below
    2(1 + β)); ``momentum`` is β (0 = plain GD); ``nesterov`` switches to Nesterov's look-ahead form.
    """
    if surface not in SURFACES:
        raise ValueError(f"unknown surface {surface!r}; choose one of {list(SURFACES)}")
    s = SURFACES[surface]
    lr = lr_scale / s.lam_max
    path = trajectory(s, lr, momentum, nesterov and momentum > 0, steps)
    gap = s.f(path) - s.f_min
    diverged = len(path) < steps + 1 or not np.isfinite(gap[-1]) or gap[-1] > 1e3 * gap[0]
    fig, (ax, ax2) = plt.subplots(1, 2, figsize=(11, 4), gridspec_kw=dict(width_ratios=[1.4, 1]))
    xx, yy, zz, levels = _contour_grid(surface)
    ax.contour(xx, yy, zz, levels=levels, colors="0.6", linewidths=0.6)
    shown = np.clip(path, [s.xlim[0] - 1, s.ylim[0] - 1], [s.xlim[1] + 1, s.ylim[1] + 1])
    ax.plot(shown[:, 0], shown[:, 1], ".-", color="tab:red", ms=3, lw=1)
    ax.plot(*s.w0, "o", color="tab:blue", label="start")
    ax.plot(*s.w_star, "k*", ms=12, label="minimum")
    kind = "GD" if momentum == 0 else ("Nesterov" if nesterov else "heavy ball")
    ax.set(title=f"{surface}: {kind}, lr = {lr:.3g} ({lr_scale:.2f}/λmax), β = {momentum:.2f}", xlabel="$w_1$",
           ylabel="$w_2$", xlim=s.xlim, ylim=s.ylim)
    ax.legend(fontsize=8, loc="lower right")
    ax2.semilogy(np.arange(len(gap)), np.maximum(gap, 1e-16), color="tab:red")
    status = f"DIVERGED after {len(path) - 1} steps" if diverged else f"after {len(path) - 1} steps: {gap[-1]:.2g}"
    ax2.set(title=f"loss − minimum ({status})", xlabel="step", ylabel="f(w) − f*",
            ylim=(max(0.3 * np.nanmin(gap), 1e-16), None))
    ax2.grid(alpha=0.3)
    fig.tight_layout()
    return fig


# ------------------------------------------------------------------------------------------------- registry
EXERCISES = [
    Exercise(
        name="gd_step",
        reference=gd_step,
        cases=_gd_step_cases,
        mistakes={
            "stepped uphill: w + lr·∇f instead of w − lr·∇f": _gd_ascent,
            "forgot the −b in the gradient (∇f = Aw − b)": _gd_forgot_b,
            "gradient of ½wᵀAw taken as ½Aw (the ½ cancels against the 2 from the square)": _gd_half_gradient,
        },
        hint="grad = w @ A.T - b (that is A w − b, and it works for a batch of rows too); return w - lr * grad.",
    ),
    Exercise(
        name="gd_rate",
        reference=gd_rate,
        cases=_gd_rate_cases,
        mistakes={
            "forgot the absolute value: max(1 − lr·λ) only sees the smallest curvature, never the overshoot":
                _rate_no_abs,
            "only the largest eigenvalue: |1 − lr·λmax| ignores the slow, flat directions": _rate_lambda_max_only,
            "used the diagonal of A as the curvatures: they are the eigenvalues only when A is diagonal":
                _rate_diagonal_curvatures,
        },
        hint="torch.linalg.eigvalsh(A) gives the curvatures λ_i; the error along eigenvector i is multiplied by "
             "(1 − lr·λ_i) every step, so the rate is the largest |1 − lr·λ_i|. Return a float (.item()).",
    ),
    Exercise(
        name="gradient_variance",
        reference=gradient_variance,
        cases=_variance_cases,
        mistakes={
            "did not subtract the full gradient: that is E‖g_B‖², the second moment, not the variance":
                _variance_not_centered,
            "averaged over the coordinates too: sum ‖·‖² over the P parameters, average over the k batches":
                _variance_per_coordinate,
            "norm not squared: E‖g_B − g‖ instead of E‖g_B − g‖²": _variance_norm_not_squared,
            "variance around the mean of these k batch gradients (torch.var) instead of around the full gradient g":
                _variance_around_batch_mean,
        },
        hint="((batch_grads - full_grad) ** 2).sum(dim=1) is ‖g_k − g‖² per batch; then .mean() over the k "
             "batches and .item().",
    ),
    Exercise(
        name="heavy_ball_params",
        reference=heavy_ball_params,
        cases=_heavy_ball_cases,
        mistakes={
            "β not squared: (√κ − 1)/(√κ + 1) is the rate √β (and Nesterov's momentum), not the heavy ball's β":
                _hb_beta_not_squared,
            "lr = 1/λmax (GD's safe step): with momentum the optimal lr is 4/(√λmax + √λmin)²": _hb_lr_one_over_lmax,
            "κ instead of √κ in β: ((κ − 1)/(κ + 1))²": _hb_kappa_not_sqrt,
            "lr = 2/(λmin + λmax) (GD's optimal step), not the heavy ball's": _hb_gd_optimal_lr,
        },
        hint="make both ends critically damped: lr·λmin = (1 − √β)² and lr·λmax = (1 + √β)². Divide them: "
             "√κ = (1 + √β)/(1 − √β), so √β = (√κ − 1)/(√κ + 1), and add their square roots: "
             "√lr (√λmax + √λmin) = 2.",
    ),
    Exercise(
        name="SGD",
        reference=SGD,
        cases=_sgd_cases,
        runner=optimizer_runner,
        atol=1e-6, rtol=1e-6,
        mistakes={
            "the nesterov flag is ignored: Nesterov steps along g + β·v, not along v":
                _sgd_variant("SGD", nesterov_ignored=True),
            "velocity started at zero and the step taken BEFORE updating it (the first step moves nothing)":
                _sgd_variant("SGD", step_before_update=True),
            "velocity as an average v ← βv + (1 − β)g (Adam's m): torch.optim.SGD's buffer is a sum, v ← βv + g":
                _sgd_variant("SGD", ema=True),
            "weight decay added after the momentum (d = v + wd·p, decoupled decay): torch adds wd·p to the "
            "gradient, before the buffer": _sgd_variant("SGD", decay_after_momentum=True),
            "lr applied inside the buffer (v ← βv + lr·g; p ← p − v): the same at a constant lr, wrong once the "
            "lr changes": _sgd_variant("SGD", lr_in_buffer=True),
            "hyperparameters read from self.defaults: each param_group has its own lr and momentum":
                _sgd_variant("SGD", defaults_only=True),
        },
        hint="for each group, for each p with p.grad: g = p.grad + weight_decay * p; if momentum: buffer in "
             "self.state[p] (g.clone() the first time, else buf.mul_(momentum).add_(g)); direction = "
             "g + momentum * buf if nesterov else buf; p.add_(direction, alpha=-lr) inside torch.no_grad().",
    ),
]
