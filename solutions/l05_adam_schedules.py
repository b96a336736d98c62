"""Lecture 05 — Adam, AdamW and learning-rate schedules: reference solutions and exercise registry.

Exercises (checked by ``ex.check`` in ``lectures/l05_adam_schedules.ipynb``):

* ``Adam`` and ``AdamW``: optimizer classes with ``torch.optim``'s API, checked over 10 steps on a small network
  against the references here (which themselves match ``torch.optim.Adam``/``AdamW`` to 1e-6);
* ``warmup_cosine``: linear warmup then cosine decay, as in nanoGPT;
* ``clip_grad_norm_``: global gradient-norm clipping, as ``torch.nn.utils.clip_grad_norm_``.

Helpers the lecture uses: ``run_optimizer`` (the 10-step harness), the other schedules (``step_decay``,
``cosine_decay``, ``one_cycle``, each equal to its ``torch.optim.lr_scheduler`` counterpart) and the widget's
update function ``schedule_explorer``.
"""
from __future__ import annotations

import math
from typing import Callable, Iterable

import matplotlib.pyplot as plt
import numpy as np
import torch

from utils.exercises import Case, Exercise, optimizer_runner, run_optimizer
from utils.training import warmup_cosine  # the exercise's reference: L13 and L15 train with it too

__all__ = [
    "Adam", "AdamW", "warmup_cosine", "clip_grad_norm_", "run_optimizer", "step_decay", "cosine_decay",
    "one_cycle", "SCHEDULES", "lr_curve", "schedule_explorer", "EXERCISES",
]


# ------------------------------------------------------------------------------------------------ optimizers
class Adam(torch.optim.Optimizer):
    """Adam (Kingma & Ba, 2015) with ``torch.optim.Adam``'s API; ``weight_decay`` is L2 added to the gradient.

    For every parameter p with gradient g (any shape; all state tensors have p's shape), at step t = 1, 2, ...:
        g ← g + weight_decay · p                      (L2 regularisation, as torch.optim.Adam)
        m ← β1 m + (1 − β1) g                         (momentum: running mean of g)
        v ← β2 v + (1 − β2) g²                        (running mean of g², elementwise)
        m̂ = m / (1 − β1^t),  v̂ = v / (1 − β2^t)       (bias correction: m and v start at 0)
        p ← p − lr · m̂ / (√v̂ + eps)
    """

    def __init__(self, params: Iterable, lr: float = 1e-3, betas: tuple[float, float] = (0.9, 0.999),
                 eps: float = 1e-8, weight_decay: float = 0.0):
        super().__init__(params, dict(lr=lr, betas=betas, eps=eps, weight_decay=weight_decay))

    @torch.no_grad()
    def step(self) -> None:
        for group in self.param_groups:
            beta1, beta2 = group["betas"]
            for p in group["params"]:
                if p.grad is None:
                    continue
                g = p.grad
                if group["weight_decay"] != 0:
                    g = g + group["weight_decay"] * p  # L2: the decay goes through m and v like any gradient
                state = self.state[p]
                if not state:
                    state["t"], state["m"], state["v"] = 0, torch.zeros_like(p), torch.zeros_like(p)
                state["t"] += 1
                t, m, v = state["t"], state["m"], state["v"]
                m.mul_(beta1).add_(g, alpha=1 - beta1)
                v.mul_(beta2).addcmul_(g, g, value=1 - beta2)
                m_hat = m / (1 - beta1 ** t)
                v_hat = v / (1 - beta2 ** t)
                p.sub_(group["lr"] * m_hat / (v_hat.sqrt() + group["eps"]))


class AdamW(torch.optim.Optimizer):
    """AdamW (Loshchilov & Hutter, 2019) with ``torch.optim.AdamW``'s API: decoupled weight decay.

    Same as :class:`Adam`, except that the decay never touches the gradient (so never m, v): first
        p ← p · (1 − lr · weight_decay)
    then the plain Adam update with g = p.grad.
    """

    def __init__(self, params: Iterable, lr: float = 1e-3, betas: tuple[float, float] = (0.9, 0.999),
                 eps: float = 1e-8, weight_decay: float = 1e-2):
        super().__init__(params, dict(lr=lr, betas=betas, eps=eps, weight_decay=weight_decay))

    @torch.no_grad()
    def step(self) -> None:
        for group in self.param_groups:
            beta1, beta2 = group["betas"]
            for p in group["params"]:
                if p.grad is None:
                    continue
                g = p.grad
                p.mul_(1 - group["lr"] * group["weight_decay"])  # decoupled: shrink p directly, before the step
                state = self.state[p]
                if not state:
                    state["t"], state["m"], state["v"] = 0, torch.zeros_like(p), torch.zeros_like(p)
                state["t"] += 1
                t, m, v = state["t"], state["m"], state["v"]
                m.mul_(beta1).add_(g, alpha=1 - beta1)
                v.mul_(beta2).addcmul_(g, g, value=1 - beta2)
                m_hat = m / (1 - beta1 ** t)
                v_hat = v / (1 - beta2 ** t)
                p.sub_(group["lr"] * m_hat / (v_hat.sqrt() + group["eps"]))


def _adam_variant(name: str, *, l2: bool = True, decoupled: bool = False, bias_correction: bool = True,
                  correct_v: bool = True, eps_inside_sqrt: bool = False, use_momentum: bool = True,
                  decay_times_lr: bool = True, decay_after_step: bool = False, default_wd: float = 0.0) -> type:
    """A (usually wrong) Adam/AdamW variant, for the registry of common mistakes."""

    class Variant(torch.optim.Optimizer):
        def __init__(self, params, lr=1e-3, betas=(0.9, 0.999), eps=1e-8, weight_decay=default_wd):
            super().__init__(params, dict(lr=lr, betas=betas, eps=eps, weight_decay=weight_decay))

        @torch.no_grad()
        def step(self):
            for group in self.param_groups:
                (beta1, beta2), lr, wd, eps = group["betas"], group["lr"], group["weight_decay"], group["eps"]
                for p in group["params"]:
                    if p.grad is None:
                        continue
                    g = p.grad + wd * p if (l2 and wd) else p.grad
                    decay = lr * wd if decay_times_lr else wd
                    if decoupled and not decay_after_step:
                        p.mul_(1 - decay)
                    state = self.state[p]
                    if not state:
                        state["t"], state["m"], state["v"] = 0, torch.zeros_like(p), torch.zeros_like(p)
                    state["t"] += 1
                    t, m, v = state["t"], state["m"], state["v"]
                    m.mul_(beta1).add_(g, alpha=1 - beta1)
                    v.mul_(beta2).addcmul_(g, g, value=1 - beta2)
                    m_hat = m / (1 - beta1 ** t) if bias_correction else m
                    v_hat = v / (1 - beta2 ** t) if (bias_correction and correct_v) else v
                    num = m_hat if use_momentum else g
                    den = (v_hat + eps).sqrt() if eps_inside_sqrt else v_hat.sqrt() + eps
                    p.sub_(lr * num / den)
                    if decoupled and decay_after_step:
                        p.mul_(1 - decay)

    Variant.__name__ = Variant.__qualname__ = name
    return Variant


def _adam_cases() -> list[Case]:
    return [
        Case(kwargs=dict(), label="defaults (lr=1e-3)"),
        Case(kwargs=dict(lr=0.05, betas=(0.8, 0.95)), label="lr=0.05, betas=(0.8, 0.95)"),
        Case(kwargs=dict(lr=0.01, eps=1e-3, loss_scale=1e-3), label="eps=1e-3 and small gradients (loss × 1e-3)"),
        Case(kwargs=dict(lr=0.01, loss_scale=1e-6), label="tiny gradients (loss × 1e-6): eps matters"),
        Case(kwargs=dict(lr=0.01, weight_decay=0.1), label="weight_decay=0.1 (L2 added to the gradient)"),
        Case(kwargs=dict(lr=0.02, seed=1, steps=10), label="another network and batch (seed 1)"),
    ]


def _adamw_cases() -> list[Case]:
    return [
        Case(kwargs=dict(lr=0.01), label="lr=0.01, default weight_decay=0.01"),
        Case(kwargs=dict(lr=0.05, weight_decay=0.5), label="lr=0.05, weight_decay=0.5"),
        Case(kwargs=dict(lr=0.01, weight_decay=0.0), label="weight_decay=0 (plain Adam)"),
        Case(kwargs=dict(lr=0.01, weight_decay=0.1, loss_scale=1e-6), label="tiny gradients (loss × 1e-6)"),
        Case(kwargs=dict(lr=0.03, betas=(0.8, 0.95), eps=1e-4, weight_decay=0.2, seed=1),
             label="betas=(0.8, 0.95), eps=1e-4, weight_decay=0.2, seed 1"),
    ]


# ------------------------------------------------------------------------------------------------- schedules


def _schedule_runner(impl: Callable, case: Case) -> torch.Tensor | None:
    """Evaluate a schedule at every step from 0 to 10 steps past the end."""
    kw = case.kwargs
    values = [impl(s, **kw) for s in range(kw["total_steps"] + 10)]
    if any(v is None for v in values):
        return None
    return torch.tensor([float(v) for v in values], dtype=torch.float64)


def _warmup_cosine_cases() -> list[Case]:
    return [
        Case(kwargs=dict(total_steps=100, warmup_steps=10, max_lr=1e-3, min_lr=1e-4),
             label="100 steps, 10 warmup, max_lr=1e-3, min_lr=1e-4"),
        Case(kwargs=dict(total_steps=50, warmup_steps=0, max_lr=0.1), label="no warmup (cosine only), min_lr=0"),
        Case(kwargs=dict(total_steps=20, warmup_steps=5, max_lr=1.0), label="20 steps, 5 warmup, max_lr=1"),
        Case(kwargs=dict(total_steps=1000, warmup_steps=100, max_lr=6e-4, min_lr=6e-5),
             label="nanoGPT-like: 1000 steps, 100 warmup"),
    ]


def step_decay(step: int, max_lr: float, step_size: int, gamma: float = 0.1) -> float:
    """Multiply the learning rate by ``gamma`` every ``step_size`` steps (``torch.optim.lr_scheduler.StepLR``)."""
    return max_lr * gamma ** (step // step_size)


def cosine_decay(step: int, total_steps: int, max_lr: float, min_lr: float = 0.0) -> float:
    """Half a cosine from ``max_lr`` at step 0 to ``min_lr`` at ``total_steps`` (``CosineAnnealingLR``)."""
    step = min(step, total_steps)
    return min_lr + 0.5 * (max_lr - min_lr) * (1 + math.cos(math.pi * step / total_steps))


def one_cycle(step: int, total_steps: int, max_lr: float, pct_start: float = 0.3, div_factor: float = 25.0,
              final_div_factor: float = 1e4) -> float:
    """One-cycle (Smith & Topin, 2018), as ``torch.optim.lr_scheduler.OneCycleLR`` (cosine annealing).

    Cosine from max_lr / div_factor up to max_lr over the first ``pct_start`` of the run, then cosine down to
    max_lr / (div_factor · final_div_factor) at the last step.
    """
    start, low = max_lr / div_factor, max_lr / (div_factor * final_div_factor)
    peak = pct_start * total_steps - 1  # the step at which lr = max_lr
    last = total_steps - 1
    if step <= peak:
        return _cos_anneal(start, max_lr, step / peak)
    return _cos_anneal(max_lr, low, (min(step, last) - peak) / (last - peak))


def _cos_anneal(a: float, b: float, frac: float) -> float:
    """Half a cosine from ``a`` (frac = 0) to ``b`` (frac = 1)."""
    return b + (a - b) / 2 * (1 + math.cos(math.pi * frac))


def _constant(step: int, total_steps: int, max_lr: float, **_: float) -> float:
    return max_lr


SCHEDULES: dict[str, Callable[..., float]] = {
    "constant": _constant,
    "step": lambda s, total_steps, max_lr, gamma=0.1, n_drops=2, **_: step_decay(
        s, max_lr, step_size=max(1, math.ceil(total_steps / (n_drops + 1))), gamma=gamma),
    "cosine": lambda s, total_steps, max_lr, min_lr=0.0, **_: cosine_decay(s, total_steps, max_lr, min_lr),
    "warmup + cosine": lambda s, total_steps, max_lr, min_lr=0.0, warmup_frac=0.1, **_: warmup_cosine(
        s, total_steps, int(warmup_frac * total_steps), max_lr, min_lr),
    "one-cycle": lambda s, total_steps, max_lr, warmup_frac=0.3, **_: one_cycle(
        s, total_steps, max_lr, pct_start=max(warmup_frac, 2 / total_steps)),
}
"""Every schedule as ``f(step, total_steps, max_lr, **params) -> lr``; params they do not use are ignored."""


def lr_curve(name: str, total_steps: int, max_lr: float, **params: float) -> np.ndarray:
    """The learning rate of schedule ``name`` (a key of :data:`SCHEDULES`) at steps 0 … total_steps − 1."""
    if name not in SCHEDULES:
        raise ValueError(f"unknown schedule {name!r}; choose one of {list(SCHEDULES)}")
    return np.array([SCHEDULES[name](s, total_steps, max_lr, **params) for s in range(total_steps)])


def schedule_explorer(schedule: str = "warmup + cosine", total_steps: int = 1000, max_lr: float = 1e-3,
                      warmup_frac: float = 0.1, min_lr_frac: float = 0.1, gamma: float = 0.1) -> plt.Figure:
    """Widget update: the chosen schedule (bold) over the others (faint); the title gives its area (the sum of
    the LR over the run, the weights' "distance budget") relative to a constant LR at ``max_lr``.

    ``warmup_frac``: warmup length (warmup + cosine) or rising phase (one-cycle) as a fraction of the run;
    ``min_lr_frac``: final LR of the cosines as a fraction of ``max_lr``; ``gamma``: the step schedule's drop.
    """
    params = dict(warmup_frac=warmup_frac, min_lr=min_lr_frac * max_lr, gamma=gamma)
    fig, ax = plt.subplots(figsize=(7, 3.5))
    steps = np.arange(total_steps)
    area = 0.0
    for name in SCHEDULES:
        lrs = lr_curve(name, total_steps, max_lr, **params)
        chosen = name == schedule
        if chosen:
            area = lrs.sum() / (max_lr * total_steps)
        ax.plot(steps, lrs, lw=2.5 if chosen else 1, alpha=1 if chosen else 0.35, label=name,
                zorder=3 if chosen else 2)
    ax.set(title=f"{schedule}: area {area:.2f} × a constant LR's", xlabel="step", ylabel="learning rate",
           ylim=(0, 1.08 * max_lr))
    ax.legend(fontsize=8, loc="upper right")
    fig.tight_layout()
    return fig


# ---------------------------------------------------------------------------------------- gradient clipping
def clip_grad_norm_(parameters: Iterable[torch.Tensor], max_norm: float) -> torch.Tensor:
    """Rescale all gradients together so that their global L2 norm is at most ``max_norm`` (in place).

    total_norm = ‖(all p.grad concatenated)‖₂ (parameters with p.grad None are skipped);
    if total_norm > max_norm every gradient is multiplied by max_norm / (total_norm + 1e-6).
    Returns total_norm before clipping, a 0-dim tensor (as ``torch.nn.utils.clip_grad_norm_``).
    """
    grads = [p.grad for p in parameters if p.grad is not None]
    if not grads:
        return torch.tensor(0.0)
    total_norm = torch.sqrt(sum((g.detach() ** 2).sum() for g in grads))
    scale = torch.clamp(max_norm / (total_norm + 1e-6), max=1.0)
    for g in grads:
        g.mul_(scale)
    return total_norm


def _clip_per_tensor(parameters, max_norm):
    norms = []
    for p in parameters:
        if p.grad is not None:
            n = p.grad.norm()
            p.grad.mul_(torch.clamp(max_norm / (n + 1e-6), max=1.0))
            norms.append(n)
    return torch.stack(norms).norm()


def _clip_always(parameters, max_norm):
    grads = [p.grad for p in parameters if p.grad is not None]
    total = torch.sqrt(sum((g ** 2).sum() for g in grads))
    for g in grads:
        g.mul_(max_norm / (total + 1e-6))
    return total


def _clip_by_value(parameters, max_norm):
    grads = [p.grad for p in parameters if p.grad is not None]
    total = torch.sqrt(sum((g ** 2).sum() for g in grads))
    for g in grads:
        g.clamp_(-max_norm, max_norm)
    return total


def _clip_returns_new_norm(parameters, max_norm):
    grads = [p.grad for p in parameters if p.grad is not None]
    total = torch.sqrt(sum((g ** 2).sum() for g in grads))
    for g in grads:
        g.mul_(torch.clamp(max_norm / (total + 1e-6), max=1.0))
    return torch.sqrt(sum((g ** 2).sum() for g in grads))


def _clip_runner(impl: Callable, case: Case) -> dict[str, torch.Tensor] | None:
    """Build parameters with seeded gradients (``grad_scales`` gives each one's scale; None = no grad), clip
    them with ``impl`` and return the returned norm and the gradients after clipping."""
    gen = torch.Generator().manual_seed(case.seed)
    params = []
    for shape, scale in zip(case.kwargs["shapes"], case.kwargs["grad_scales"]):
        p = torch.nn.Parameter(torch.randn(shape, generator=gen))
        if scale is not None:
            p.grad = scale * torch.randn(shape, generator=gen)
        params.append(p)
    norm = impl(params, case.kwargs["max_norm"])
    if norm is None:
        return None
    out = {"returned total norm": torch.as_tensor(norm, dtype=torch.float32).reshape(())}
    for i, p in enumerate(params):
        if p.grad is not None:
            out[f"grad of parameter {i}"] = p.grad
    return out


def _clip_cases() -> list[Case]:
    return [
        Case(kwargs=dict(shapes=[(4, 3), (3,), (2, 5)], grad_scales=[1.0, 2.0, 3.0], max_norm=1.0),
             label="three tensors, global norm ≈ 11 > max_norm=1 (clipped)"),
        Case(kwargs=dict(shapes=[(4, 3), (3,)], grad_scales=[0.01, 0.02], max_norm=1.0),
             label="norm ≈ 0.04 < max_norm=1 (left alone)"),
        Case(kwargs=dict(shapes=[(10,)], grad_scales=[5.0], max_norm=2.0), label="one tensor, clipped to 2"),
        Case(kwargs=dict(shapes=[(3, 3), (3,), (3,)], grad_scales=[1.0, None, 0.5], max_norm=0.5),
             label="one parameter has no gradient (grad is None)"),
        Case(kwargs=dict(shapes=[(8, 8), (8,)], grad_scales=[1.0, 0.1], max_norm=3.0), seed=3,
             label="large and small tensors, max_norm=3"),
    ]


# ------------------------------------------------------------------------------------------------- registry
def _warmup_from_zero(step, total_steps, warmup_steps, max_lr, min_lr=0.0):
    if step < warmup_steps:
        return max_lr * step / warmup_steps
    return warmup_cosine(step, total_steps, warmup_steps, max_lr, min_lr)


def _warmup_over_warmup_steps(step, total_steps, warmup_steps, max_lr, min_lr=0.0):
    if step < warmup_steps:
        return max_lr * (step + 1) / warmup_steps
    return warmup_cosine(step, total_steps, warmup_steps, max_lr, min_lr)


def _cosine_from_step_zero(step, total_steps, warmup_steps, max_lr, min_lr=0.0):
    if step < warmup_steps:
        return max_lr * (step + 1) / (warmup_steps + 1)
    if step >= total_steps:
        return min_lr
    return min_lr + 0.5 * (max_lr - min_lr) * (1 + math.cos(math.pi * step / total_steps))


def _ignores_min_lr(step, total_steps, warmup_steps, max_lr, min_lr=0.0):
    return warmup_cosine(step, total_steps, warmup_steps, max_lr, 0.0)


def _no_clamp_after_end(step, total_steps, warmup_steps, max_lr, min_lr=0.0):
    if step < warmup_steps:
        return max_lr * (step + 1) / (warmup_steps + 1)
    progress = (step - warmup_steps) / (total_steps - warmup_steps)
    return min_lr + 0.5 * (max_lr - min_lr) * (1 + math.cos(math.pi * progress))


EXERCISES = [
    Exercise(
        name="Adam",
        reference=Adam,
        cases=_adam_cases,
        runner=optimizer_runner,
        atol=1e-6, rtol=1e-6,
        mistakes={
            "no bias correction (m and v start at 0, so early updates are mis-scaled)":
                _adam_variant("Adam", bias_correction=False),
            "bias-corrected m but not v": _adam_variant("Adam", correct_v=False),
            "eps inside the square root: sqrt(v̂ + eps) instead of sqrt(v̂) + eps":
                _adam_variant("Adam", eps_inside_sqrt=True),
            "the update uses the raw gradient g instead of the momentum m̂ (that is RMSProp)":
                _adam_variant("Adam", use_momentum=False),
            "decoupled weight decay (that is AdamW): torch.optim.Adam adds weight_decay·p to the gradient":
                _adam_variant("Adam", l2=False, decoupled=True),
        },
        hint="per parameter keep state t, m, v (zeros at first); t += 1 BEFORE the bias corrections; "
             "weight decay: g = p.grad + weight_decay * p; update p -= lr * m_hat / (v_hat.sqrt() + eps) "
             "inside torch.no_grad().",
    ),
    Exercise(
        name="AdamW",
        reference=AdamW,
        cases=_adamw_cases,
        runner=optimizer_runner,
        atol=1e-6, rtol=1e-6,
        mistakes={
            "L2 added to the gradient (that is Adam's weight_decay, not decoupled decay)":
                _adam_variant("AdamW", default_wd=1e-2),
            "weight decay not multiplied by lr: p ← p·(1 − weight_decay) instead of p·(1 − lr·weight_decay)":
                _adam_variant("AdamW", l2=False, decoupled=True, decay_times_lr=False, default_wd=1e-2),
            "decay applied after the Adam update (torch.optim.AdamW shrinks p first, then steps)":
                _adam_variant("AdamW", l2=False, decoupled=True, decay_after_step=True, default_wd=1e-2),
            "no bias correction": _adam_variant("AdamW", l2=False, decoupled=True, bias_correction=False,
                                                default_wd=1e-2),
        },
        hint="first p.mul_(1 - lr * weight_decay) (the gradient, m and v never see the decay), then exactly "
             "the Adam update with g = p.grad.",
    ),
    Exercise(
        name="warmup_cosine",
        reference=warmup_cosine,
        cases=_warmup_cosine_cases,
        runner=_schedule_runner,
        atol=1e-9, rtol=1e-7,
        mistakes={
            "warmup starts at 0: max_lr·step/warmup_steps (the first step is wasted)": _warmup_from_zero,
            "warmup divides by warmup_steps instead of warmup_steps + 1": _warmup_over_warmup_steps,
            "cosine progress counted from step 0 instead of from the end of warmup": _cosine_from_step_zero,
            "decays to 0 instead of min_lr": _ignores_min_lr,
            "no clamp after total_steps: the cosine climbs back up": _no_clamp_after_end,
        },
        hint="three branches: step < warmup_steps (linear), step >= total_steps (min_lr), otherwise the cosine "
             "with progress = (step - warmup_steps) / (total_steps - warmup_steps).",
    ),
    Exercise(
        name="clip_grad_norm_",
        reference=clip_grad_norm_,
        cases=_clip_cases,
        runner=_clip_runner,
        mistakes={
            "clipped each tensor by its own norm instead of the global norm": _clip_per_tensor,
            "always rescaled to max_norm, even when the norm was already smaller": _clip_always,
            "clipped values elementwise (that is clip_grad_value_)": _clip_by_value,
            "returned the norm after clipping instead of before": _clip_returns_new_norm,
        },
        hint="one norm over ALL gradients: sqrt(sum of g.pow(2).sum()); scale = min(1, max_norm / (norm + 1e-6)); "
             "multiply every grad in place; return the norm measured before clipping.",
    ),
]
