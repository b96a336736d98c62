"""Lecture 21 — denoising diffusion (DDPM): the forward noising process and its closed form, noise schedules,
the ε-prediction objective, ancestral sampling, and what the denoiser learns (the score), first on a 2-D
mixture of Gaussians and then on 16×16 ``font_digits``.

Reference solutions and the exercise registry (COURSE_DESIGN §2):

* ``q_sample``: draw x_t ~ q(x_t | x_0) in one shot, √ᾱ_t x_0 + √(1-ᾱ_t) ε;
* ``diffusion_loss``: the simplified DDPM objective ‖ε - ε_θ(x_t, t)‖² at a random timestep;
* ``p_sample_step``: one step of ancestral sampling x_t → x_{t-1}.

The pieces Lecture 22 reuses live once in ``utils.diffusion`` and are re-exported here: ``Schedule`` /
``make_schedule(T, kind)``, ``q_sample`` and ``diffusion_loss`` (the references of exercises 1 and 2),
``timestep_embedding``, ``TinyUNet(channels, time_dim, num_classes=None)`` (16×16 images, optional class label
with a "null" class index ``num_classes`` for guidance), ``train_diffusion``, ``to_model_space`` /
``to_image_space``. Here: ``TimeMLP`` (2-D), ``ddpm_sample``.

Also: ``iterate_noising`` (the forward chain step by step, to check the closed form), ``mixture_score`` (the exact
score of a noised Gaussian mixture), ``predict_x0``, ``mode_masses`` and ``mmd`` (2-D sample quality) and the
widget's plot ``plot_denoising``.
"""
from __future__ import annotations

from typing import Callable

import matplotlib.pyplot as plt
import torch
import torch.nn as nn
import torch.nn.functional as F

from utils.diffusion import (
    Schedule,
    TinyUNet,
    _per_sample,
    diffusion_loss,
    make_schedule,
    q_sample,
    timestep_embedding,
    to_image_space,
    to_model_space,
    train_diffusion,
)
from utils.exercises import Case, Exercise

__all__ = [
    "Schedule", "make_schedule", "q_sample", "iterate_noising", "diffusion_loss", "p_sample_step",
    "p_sample_step_clipped", "ddpm_sample",
    "timestep_embedding", "TimeMLP", "TinyUNet", "train_diffusion", "predict_x0", "to_model_space",
    "to_image_space", "mixture_score", "mode_masses", "mmd", "plot_denoising", "EXERCISES",
]


# ---------------------------------------------------------------------- exercise 1: q(x_t | x_0) in one shot
# (the reference q_sample lives in utils.diffusion; these are the mistakes the checker recognises)
def _q_no_sqrt(x0, t, noise, alpha_bars):
    ab = _per_sample(alpha_bars, t, x0)
    return ab * x0 + (1 - ab) * noise


def _q_off_by_one(x0, t, noise, alpha_bars):
    ab = _per_sample(alpha_bars, (t - 1).clamp(min=0), x0)
    return ab.sqrt() * x0 + (1 - ab).sqrt() * noise


def _q_noise_std_one(x0, t, noise, alpha_bars):
    ab = _per_sample(alpha_bars, t, x0)
    return ab.sqrt() * x0 + noise


def _q_sample_cases() -> list[Case]:
    g = torch.Generator().manual_seed(0)
    ab = make_schedule(50, "linear").alpha_bars
    ab_cos = make_schedule(10, "cosine").alpha_bars
    return [
        Case((torch.randn(6, 2, generator=g), torch.tensor([0, 1, 5, 20, 48, 49]), torch.randn(6, 2, generator=g), ab),
             label="2-D points (6, 2), t from 0 to T-1"),
        Case((torch.rand(3, 1, 4, 4, generator=g), torch.tensor([3, 30, 7]), torch.randn(3, 1, 4, 4, generator=g), ab),
             label="images (3, 1, 4, 4): ᾱ must broadcast per sample"),
        Case((torch.randn(2, 2, generator=g), torch.tensor([9, 0]), torch.randn(2, 2, generator=g), ab_cos),
             label="cosine schedule, B = 2 (a (B,) ᾱ would broadcast over the wrong axis)"),
    ]


# ------------------------------------------------------------------- the forward chain, step by step
@torch.no_grad()
def iterate_noising(x0: torch.Tensor, steps: int, betas: torch.Tensor, n: int = 1, seed: int = 0) -> torch.Tensor:
    """Run the forward chain x_t = √(1-β_t) x_{t-1} + √β_t ε_t for ``steps`` steps, ``n`` independent times.

    x0: (D,) one clean point/image (flattened). Returns (n, D): n draws of x_{steps-1} (step index convention
    of ``Schedule``: after ``steps`` applications we are at index steps-1).
    """
    g = torch.Generator().manual_seed(seed)
    x = x0.reshape(1, -1).repeat(n, 1).double()
    for s in range(steps):
        b = betas[s].double()
        x = (1 - b).sqrt() * x + b.sqrt() * torch.randn(x.shape, generator=g, dtype=torch.float64)
    return x.float()


# ------------------------------------------------------------------------------------ time conditioning


class TimeMLP(nn.Module):
    """ε_θ(x_t, t) for 2-D data: an MLP on [x_t, embedding(t)]. x: (B, dim), t: (B,) int64 → (B, dim)."""

    def __init__(self, dim: int = 2, hidden: int = 128, time_dim: int = 32, depth: int = 3):
        super().__init__()
        self.time_dim = time_dim
        layers: list[nn.Module] = [nn.Linear(dim + time_dim, hidden), nn.SiLU()]
        for _ in range(depth - 1):
            layers += [nn.Linear(hidden, hidden), nn.SiLU()]
        self.net = nn.Sequential(*layers, nn.Linear(hidden, dim))

    def forward(self, x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        return self.net(torch.cat([x, timestep_embedding(t, self.time_dim)], dim=1))


# ------------------------------------------------------------------------ exercise 2: the training loss
# (the reference diffusion_loss lives in utils.diffusion: train_diffusion uses it)
def _loss_predict_x0(model, x0, alpha_bars):
    t = torch.randint(0, len(alpha_bars), (len(x0),), device=x0.device)
    noise = torch.randn_like(x0)
    return F.mse_loss(model(q_sample(x0, t, noise, alpha_bars), t), x0)


def _loss_t_from_one(model, x0, alpha_bars):
    t = torch.randint(1, len(alpha_bars) + 1, (len(x0),), device=x0.device).clamp(max=len(alpha_bars) - 1)
    noise = torch.randn_like(x0)
    return F.mse_loss(model(q_sample(x0, t, noise, alpha_bars), t), noise)


def _loss_clean_input(model, x0, alpha_bars):
    t = torch.randint(0, len(alpha_bars), (len(x0),), device=x0.device)
    noise = torch.randn_like(x0)
    return F.mse_loss(model(x0, t), noise)


def _loss_one_t(model, x0, alpha_bars):
    t = torch.randint(0, len(alpha_bars), (1,), device=x0.device).expand(len(x0))
    noise = torch.randn_like(x0)
    return F.mse_loss(model(q_sample(x0, t, noise, alpha_bars), t), noise)


def _toy_eps_model(dim: int = 2, seed: int = 0) -> TimeMLP:
    torch.manual_seed(seed)
    return TimeMLP(dim=dim, hidden=16, time_dim=8, depth=2)


class _ImageEps(nn.Module):
    """A tiny deterministic ε-model for image-shaped checks: a conv whose output depends on t."""

    def __init__(self, seed: int = 0):
        super().__init__()
        torch.manual_seed(seed)
        self.conv = nn.Conv2d(1, 1, 3, padding=1)

    def forward(self, x, t):
        return self.conv(x) * (1 + t.float()[:, None, None, None] / 10)


def _loss_cases() -> list[Case]:
    g = torch.Generator().manual_seed(1)
    return [
        Case((_toy_eps_model(), torch.randn(64, 2, generator=g), make_schedule(100).alpha_bars), seed=3,
             label="TimeMLP on 64 2-D points, T = 100"),
        Case((_ImageEps(), torch.rand(5, 1, 6, 6, generator=g) * 2 - 1, make_schedule(20, "cosine").alpha_bars),
             seed=4, label="images (5, 1, 6, 6), cosine T = 20"),
        Case((_toy_eps_model(), torch.randn(3, 2, generator=g), make_schedule(4).alpha_bars), seed=5,
             label="tiny batch B = 3, T = 4"),
    ]


# ------------------------------------------------------------------------ exercise 3: one reverse step
@torch.no_grad()
def p_sample_step(model: Callable, x_t: torch.Tensor, t: int, schedule: Schedule, noise: torch.Tensor) -> torch.Tensor:
    """One ancestral-sampling step x_t → x_{t-1} (Ho et al. 2020, Algorithm 2), with σ_t² = β_t.

    model(x (B, ...), t (B,) int64) → ε̂; x_t: (B, ...); t: python int, the current step (0 … T-1, same for the
    whole batch); noise: z ~ N(0, I) shaped like x_t. Returns x_{t-1}:
        1/√α_t · (x_t - β_t/√(1-ᾱ_t) · ε̂) + σ_t z,   with no noise added at the last step (t = 0).
    """
    t_batch = torch.full((len(x_t),), t, dtype=torch.long, device=x_t.device)
    eps = model(x_t, t_batch)
    beta, alpha, ab = schedule.betas[t], schedule.alphas[t], schedule.alpha_bars[t]
    mean = (x_t - beta / (1 - ab).sqrt() * eps) / alpha.sqrt()  # remove the predicted noise, then undo the shrink
    if t == 0:
        return mean  # the final step returns the mean: extra noise would only blur the sample
    return mean + beta.sqrt() * noise


@torch.no_grad()
def _step_noise_at_zero(model, x_t, t, schedule, noise):
    t_batch = torch.full((len(x_t),), t, dtype=torch.long)
    eps = model(x_t, t_batch)
    beta, alpha, ab = schedule.betas[t], schedule.alphas[t], schedule.alpha_bars[t]
    return (x_t - beta / (1 - ab).sqrt() * eps) / alpha.sqrt() + beta.sqrt() * noise


@torch.no_grad()
def _step_alpha_bar_scale(model, x_t, t, schedule, noise):
    t_batch = torch.full((len(x_t),), t, dtype=torch.long)
    eps = model(x_t, t_batch)
    beta, ab = schedule.betas[t], schedule.alpha_bars[t]
    mean = (x_t - beta / (1 - ab).sqrt() * eps) / ab.sqrt()
    return mean if t == 0 else mean + beta.sqrt() * noise


@torch.no_grad()
def _step_full_eps(model, x_t, t, schedule, noise):
    t_batch = torch.full((len(x_t),), t, dtype=torch.long)
    eps = model(x_t, t_batch)
    beta, alpha, ab = schedule.betas[t], schedule.alphas[t], schedule.alpha_bars[t]
    mean = (x_t - (1 - ab).sqrt() * eps) / alpha.sqrt()
    return mean if t == 0 else mean + beta.sqrt() * noise


@torch.no_grad()
def _step_variance_not_std(model, x_t, t, schedule, noise):
    t_batch = torch.full((len(x_t),), t, dtype=torch.long)
    eps = model(x_t, t_batch)
    beta, alpha, ab = schedule.betas[t], schedule.alphas[t], schedule.alpha_bars[t]
    mean = (x_t - beta / (1 - ab).sqrt() * eps) / alpha.sqrt()
    return mean if t == 0 else mean + beta * noise


def _step_cases() -> list[Case]:
    g = torch.Generator().manual_seed(2)
    lin, cos = make_schedule(50), make_schedule(30, "cosine")
    return [
        Case((_toy_eps_model(), torch.randn(8, 2, generator=g), 30, lin, torch.randn(8, 2, generator=g)),
             label="2-D, t = 30 of 50"),
        Case((_toy_eps_model(), torch.randn(8, 2, generator=g), 0, lin, torch.randn(8, 2, generator=g)),
             label="the last step t = 0: no noise"),
        Case((_ImageEps(), torch.randn(2, 1, 5, 5, generator=g), 29, cos, torch.randn(2, 1, 5, 5, generator=g)),
             label="images, cosine schedule, first reverse step t = T-1"),
    ]


# ------------------------------------------------------------------------------------------ sampling
@torch.no_grad()
def p_sample_step_clipped(model: Callable, x_t: torch.Tensor, t: int, schedule: Schedule,
                          noise: torch.Tensor) -> torch.Tensor:
    """The same reverse step written through the denoiser's guess x̂_0, clipped to the data range [-1, 1]
    (what the DDPM authors' code does, ``clip_denoised=True``). Same arguments as ``p_sample_step``.

    x_{t-1} = c_0 · clip(x̂_0) + c_t · x_t + σ_t z with the posterior q(x_{t-1} | x_t, x_0)'s coefficients
    c_0 = √ᾱ_{t-1} β_t / (1-ᾱ_t), c_t = √α_t (1-ᾱ_{t-1}) / (1-ᾱ_t). Without clipping this equals p_sample_step
    exactly; with it, an early overconfident ε̂ can no longer push pixels far outside the range images live in.
    """
    t_batch = torch.full((len(x_t),), t, dtype=torch.long, device=x_t.device)
    eps = model(x_t, t_batch)
    beta, alpha, ab = schedule.betas[t], schedule.alphas[t], schedule.alpha_bars[t]
    ab_prev = schedule.alpha_bars[t - 1] if t > 0 else torch.tensor(1.0)
    x0_hat = ((x_t - (1 - ab).sqrt() * eps) / ab.sqrt()).clamp(-1, 1)
    mean = ab_prev.sqrt() * beta / (1 - ab) * x0_hat + alpha.sqrt() * (1 - ab_prev) / (1 - ab) * x_t
    if t == 0:
        return mean
    return mean + beta.sqrt() * noise


@torch.no_grad()
def ddpm_sample(model: Callable, shape: tuple[int, ...], schedule: Schedule, y: torch.Tensor | None = None,
                seed: int = 0, step_fn: Callable = p_sample_step, record: tuple[int, ...] = (),
                device: torch.device | str = "cpu") -> torch.Tensor | tuple[torch.Tensor, dict[int, torch.Tensor]]:
    """Ancestral sampling: start from x_{T-1} ~ N(0, I) of ``shape`` (B, ...) and apply ``step_fn`` for
    t = T-1 … 0. Deterministic for ``seed`` (its own generator: the global RNG is untouched).

    model(x, t) → ε̂, or model(x, t, y) when a label tensor ``y`` (B,) is given (a conditional TinyUNet).
    ``record``: steps t whose x_t (before the step) to return as well, for plotting the trajectory.
    Returns x_0 (shape), or (x_0, {t: x_t}) if ``record`` is non-empty. Switch the model to eval() yourself.
    """
    g = torch.Generator(device=device).manual_seed(seed)
    eps_model = model if y is None else (lambda x, t: model(x, t, y))
    x = torch.randn(shape, generator=g, device=device)
    kept: dict[int, torch.Tensor] = {}
    for t in reversed(range(schedule.T)):
        if t in record:
            kept[t] = x.clone()
        x = step_fn(eps_model, x, t, schedule, torch.randn(shape, generator=g, device=device))
    return (x, kept) if record else x


def predict_x0(eps: torch.Tensor, x_t: torch.Tensor, t: torch.Tensor, alpha_bars: torch.Tensor) -> torch.Tensor:
    """The denoiser's guess of the clean data: invert q_sample with ε̂ in place of ε,
    x̂_0 = (x_t - √(1-ᾱ_t) ε̂) / √ᾱ_t. eps, x_t: (B, ...); t: (B,). Returns (B, ...)."""
    ab = _per_sample(alpha_bars, t, x_t)
    return (x_t - (1 - ab).sqrt() * eps) / ab.sqrt()


# ------------------------------------------------------------------------------ 2-D: score and quality
def mixture_score(x: torch.Tensor, t: int, centres: torch.Tensor, std: float, alpha_bars: torch.Tensor) -> torch.Tensor:
    """The exact score ∇ log q_t(x) of an equal-weight Gaussian mixture (centres (K, D), isotropic ``std``)
    after noising to step t: each component becomes N(√ᾱ_t μ_k, (ᾱ_t std² + 1 - ᾱ_t) I). x: (B, D) → (B, D)."""
    ab = alpha_bars[t]
    var = ab * std ** 2 + (1 - ab)
    diff = ab.sqrt() * centres[None] - x[:, None]          # (B, K, D): points towards each shrunk centre
    logw = -(diff ** 2).sum(-1) / (2 * var)                 # (B, K): log responsibilities (unnormalised)
    w = torch.softmax(logw, dim=1)
    return (w[..., None] * diff).sum(1) / var


def mode_masses(samples: torch.Tensor, centres: torch.Tensor, radius: float) -> tuple[torch.Tensor, float]:
    """Fraction of samples (N, D) within ``radius`` of each centre (K, D), and the fraction near none.
    Returns (masses (K,), off_mode fraction)."""
    d = torch.cdist(samples, centres)
    nearest = d.argmin(1)
    near = d.min(1).values < radius
    masses = torch.stack([((nearest == k) & near).float().mean() for k in range(len(centres))])
    return masses, 1 - near.float().mean().item()


def mmd(x: torch.Tensor, y: torch.Tensor, bandwidths: tuple[float, ...] = (0.1, 0.3, 1.0)) -> float:
    """Squared maximum mean discrepancy between samples x (N, D) and y (M, D) with a sum of RBF kernels
    (biased estimator; 0 iff the two sample sets look alike at these length scales)."""
    def k(a, b):
        d2 = torch.cdist(a, b) ** 2
        return sum(torch.exp(-d2 / (2 * h ** 2)) for h in bandwidths)
    return (k(x, x).mean() + k(y, y).mean() - 2 * k(x, y).mean()).item()


# --------------------------------------------------------------------------------------------- widget
@torch.no_grad()
def plot_denoising(t: int = 50, index: int = 0, model: nn.Module | None = None, images: torch.Tensor | None = None,
                   schedule: Schedule | None = None, seed: int = 0) -> plt.Figure:
    """The widget: image ``index`` of ``images`` (N, 1, H, W) in [0, 1], noised to step ``t`` (x_t), and the
    denoiser's one-shot guess x̂_0 from it, beside the true noise ε and the predicted ε̂."""
    if model is None or images is None or schedule is None:
        raise ValueError("plot_denoising needs model, images and schedule (bind them with functools.partial)")
    if not 0 <= t < schedule.T:
        raise ValueError(f"t must be in [0, {schedule.T - 1}], got {t}")
    x0 = to_model_space(images[index:index + 1])
    noise = torch.randn(x0.shape, generator=torch.Generator().manual_seed(seed))
    tt = torch.tensor([t])
    x_t = q_sample(x0, tt, noise, schedule.alpha_bars)
    eps = model(x_t, tt)
    x0_hat = predict_x0(eps, x_t, tt, schedule.alpha_bars)
    err = F.mse_loss(x0_hat.clamp(-1, 1), x0).item()
    panels = [("clean x_0", to_image_space(x0)), (f"x_t (ᾱ_t = {schedule.alpha_bars[t]:.3f})", to_image_space(x_t)),
              ("true noise ε", to_image_space(noise / 3)), ("predicted ε̂", to_image_space(eps / 3)),
              (f"x̂_0 (MSE {err:.3f})", to_image_space(x0_hat))]
    fig, axes = plt.subplots(1, 5, figsize=(10, 2.4))
    for ax, (title, img) in zip(axes, panels):
        ax.imshow(img[0, 0].numpy(), cmap="gray", vmin=0, vmax=1)
        ax.set_title(title, fontsize=9)
        ax.set_xlabel("x (pixel)", fontsize=7)
        ax.set_ylabel("y (pixel)", fontsize=7)
        ax.set_xticks([])
        ax.set_yticks([])
    fig.suptitle(f"step t = {t} of {schedule.T}: what the denoiser sees and what it guesses")
    fig.tight_layout()
    return fig


# ------------------------------------------------------------------------------------------ registry
EXERCISES = [
    Exercise(
        name="q_sample",
        reference=q_sample,
        cases=_q_sample_cases,
        mistakes={"used ᾱ_t and 1-ᾱ_t without the square roots (variances, not scales)": _q_no_sqrt,
                  "off by one: used ᾱ at t-1": _q_off_by_one,
                  "added the noise at full strength (forgot √(1-ᾱ_t))": _q_noise_std_one},
        hint="ab = alpha_bars[t].reshape(-1, *[1] * (x0.dim() - 1)); return ab.sqrt() * x0 + (1 - ab).sqrt() * noise.",
    ),
    Exercise(
        name="diffusion_loss",
        reference=diffusion_loss,
        cases=_loss_cases,
        mistakes={"regressed the clean x_0 instead of the noise ε": _loss_predict_x0,
                  "drew t from 1 … T instead of 0 … T-1": _loss_t_from_one,
                  "fed the model the clean x_0 instead of the noised x_t": _loss_clean_input,
                  "one timestep for the whole batch instead of one per sample": _loss_one_t},
        hint="t = torch.randint(0, len(alpha_bars), (len(x0),)); noise = torch.randn_like(x0); "
             "x_t = q_sample(x0, t, noise, alpha_bars); return F.mse_loss(model(x_t, t), noise).",
    ),
    Exercise(
        name="p_sample_step",
        reference=p_sample_step,
        cases=_step_cases,
        mistakes={"added noise at the last step t = 0": _step_noise_at_zero,
                  "divided by √ᾱ_t instead of √α_t": _step_alpha_bar_scale,
                  "subtracted √(1-ᾱ_t)·ε̂ (that jumps to x̂_0's direction) instead of β_t/√(1-ᾱ_t)·ε̂": _step_full_eps,
                  "scaled the noise by the variance β_t instead of the std √β_t": _step_variance_not_std},
        hint="eps = model(x_t, torch.full((B,), t)); mean = (x_t - betas[t] / (1 - alpha_bars[t]).sqrt() * eps) "
             "/ alphas[t].sqrt(); return mean if t == 0 else mean + betas[t].sqrt() * noise.",
        atol=1e-5, rtol=1e-5,
    ),
]
