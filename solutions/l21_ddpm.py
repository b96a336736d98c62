"""Lecture 21 — denoising diffusion (DDPM): the forward noising process and its closed form, noise schedules,
the ε-prediction objective, ancestral sampling, and what the denoiser learns (the score), first on a 2-D
mixture of Gaussians and then on 16×16 ``font_digits``.

Reference solutions and the exercise registry (COURSE_DESIGN §2):

* ``q_sample``: draw x_t ~ q(x_t | x_0) in one shot, √ᾱ_t x_0 + √(1-ᾱ_t) ε;
* ``diffusion_loss``: the simplified DDPM objective ‖ε - ε_θ(x_t, t)‖² at a random timestep;
* ``p_sample_step``: one step of ancestral sampling x_t → x_{t-1}.

The pieces later lectures reuse (L22: classifier-free guidance, DDIM, latent diffusion) live here once:
``Schedule`` / ``make_schedule(T, kind)``, ``q_sample``, ``timestep_embedding``, ``TimeMLP`` (2-D),
``TinyUNet(channels, time_dim, num_classes=None)`` (16×16 images, optional class label with a "null" class
index ``num_classes`` for guidance), ``train_diffusion`` and ``ddpm_sample``. Images live in [-1, 1] inside the
diffusion (``to_model_space`` / ``to_image_space``).

Also: ``iterate_noising`` (the forward chain step by step, to check the closed form), ``mixture_score`` (the exact
score of a noised Gaussian mixture), ``predict_x0``, ``mode_masses`` and ``mmd`` (2-D sample quality) and the
widget's plot ``plot_denoising``.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Callable

import matplotlib.pyplot as plt
import torch
import torch.nn as nn
import torch.nn.functional as F

from utils.exercises import Case, Exercise

__all__ = [
    "Schedule", "make_schedule", "q_sample", "iterate_noising", "diffusion_loss", "p_sample_step",
    "p_sample_step_clipped", "ddpm_sample",
    "timestep_embedding", "TimeMLP", "TinyUNet", "train_diffusion", "predict_x0", "to_model_space",
    "to_image_space", "mixture_score", "mode_masses", "mmd", "plot_denoising", "EXERCISES",
]


# ------------------------------------------------------------------------------------------- schedules
@dataclass
class Schedule:
    """A noise schedule over T steps (index t = 0 … T-1 is the paper's step t+1).

    betas:      (T,) β_t, the variance added at step t;
    alphas:     (T,) α_t = 1 - β_t;
    alpha_bars: (T,) ᾱ_t = ∏_{s ≤ t} α_s, the signal kept after t steps (q(x_t|x_0) = N(√ᾱ_t x_0, (1-ᾱ_t) I)).
    """

    betas: torch.Tensor
    alphas: torch.Tensor
    alpha_bars: torch.Tensor
    kind: str = "linear"

    @property
    def T(self) -> int:
        return len(self.betas)

    def snr(self) -> torch.Tensor:
        """Signal-to-noise ratio ᾱ_t / (1 - ᾱ_t), shape (T,)."""
        return self.alpha_bars / (1 - self.alpha_bars)


def make_schedule(T: int = 1000, kind: str = "linear", beta_start: float | None = None,
                  beta_end: float | None = None, s: float = 0.008) -> Schedule:
    """Build a ``Schedule`` of T steps.

    kind="linear": β rises linearly (Ho et al. 2020). The defaults scale the paper's 1e-4 … 0.02 for T=1000 by
      1000/T so any T ends at about the same ᾱ_T ≈ 4e-5 (pure noise).
    kind="cosine": ᾱ_t = f(t)/f(0), f(t) = cos²((t/T + s)/(1 + s)·π/2) (Nichol & Dhariwal 2021): destroys
      information more slowly at the start, where the linear schedule wastes steps on already-noisy images.
    """
    if T < 1:
        raise ValueError(f"T must be >= 1, got {T}")
    if kind == "linear":
        b0 = beta_start if beta_start is not None else 0.1 / T
        b1 = beta_end if beta_end is not None else 20.0 / T
        betas = torch.linspace(b0, b1, T, dtype=torch.float64).clamp(max=0.999)
    elif kind == "cosine":
        steps = torch.arange(T + 1, dtype=torch.float64) / T
        f = torch.cos((steps + s) / (1 + s) * math.pi / 2) ** 2
        ab = f / f[0]
        betas = (1 - ab[1:] / ab[:-1]).clamp(max=0.999)  # clip: the last step would otherwise be β = 1
    else:
        raise ValueError(f"kind must be 'linear' or 'cosine', got {kind!r}")
    alphas = 1 - betas
    alpha_bars = torch.cumprod(alphas, 0)
    return Schedule(betas.float(), alphas.float(), alpha_bars.float(), kind)


def _per_sample(values: torch.Tensor, t: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
    """values[t] reshaped to (B, 1, 1, …) so it broadcasts against ``like`` (B, …)."""
    return values.to(like.device)[t].reshape(-1, *([1] * (like.dim() - 1)))


# ---------------------------------------------------------------------- exercise 1: q(x_t | x_0) in one shot
def q_sample(x0: torch.Tensor, t: torch.Tensor, noise: torch.Tensor, alpha_bars: torch.Tensor) -> torch.Tensor:
    """Noise clean data to step t in one shot: x_t = √ᾱ_t · x_0 + √(1 - ᾱ_t) · ε.

    x0: (B, ...) clean data (B, 2) points or (B, C, H, W) images; t: (B,) int64 step per sample in [0, T);
    noise: ε, same shape as x0; alpha_bars: (T,). Returns x_t, same shape as x0.
    """
    ab = _per_sample(alpha_bars, t, x0)  # (B, 1, ...): one ᾱ per sample, broadcast over its pixels
    return ab.sqrt() * x0 + (1 - ab).sqrt() * noise


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
def timestep_embedding(t: torch.Tensor, dim: int, max_period: float = 10000.0) -> torch.Tensor:
    """Sinusoidal embedding of integer timesteps (as positions in a Transformer). t: (B,) → (B, dim)."""
    half = dim // 2
    freqs = torch.exp(-math.log(max_period) * torch.arange(half, dtype=torch.float32, device=t.device) / half)
    args = t.float()[:, None] * freqs[None]
    emb = torch.cat([torch.cos(args), torch.sin(args)], dim=1)
    return F.pad(emb, (0, dim % 2))


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


class _ResBlock(nn.Module):
    """GroupNorm → SiLU → conv, add the (time + class) embedding, again, plus a skip.
    (B, C_in, H, W), emb (B, emb_dim) → (B, C_out, H, W)."""

    def __init__(self, c_in: int, c_out: int, emb_dim: int):
        super().__init__()
        self.norm1, self.conv1 = nn.GroupNorm(min(8, c_in), c_in), nn.Conv2d(c_in, c_out, 3, padding=1)
        self.emb = nn.Linear(emb_dim, c_out)
        self.norm2, self.conv2 = nn.GroupNorm(min(8, c_out), c_out), nn.Conv2d(c_out, c_out, 3, padding=1)
        self.skip = nn.Conv2d(c_in, c_out, 1) if c_in != c_out else nn.Identity()

    def forward(self, x: torch.Tensor, emb: torch.Tensor) -> torch.Tensor:
        h = self.conv1(F.silu(self.norm1(x)))
        h = h + self.emb(emb)[:, :, None, None]  # the step tells every channel how much noise to expect
        h = self.conv2(F.silu(self.norm2(h)))
        return h + self.skip(x)


class TinyUNet(nn.Module):
    """A small time-conditioned U-Net for ε-prediction on (B, in_channels, 16, 16) images (sizes divisible by 4).

    16×16 (channels) → 8×8 (2·channels) → 4×4 (2·channels) and back up with skip connections. The timestep
    (sinusoidal embedding → MLP, width ``time_dim``) is added inside every residual block.
    ``num_classes``: if set, a label y (B,) in [0, num_classes] is embedded and added to the time embedding; the
    extra index ``num_classes`` (= ``self.null_class``) means "no label" — what classifier-free guidance (L22)
    trains with some probability and uses for the unconditional prediction. ``y=None`` means all-null.
    forward(x (B, C, H, W), t (B,) int64, y (B,) int64 | None) → ε̂ (B, C, H, W).
    """

    def __init__(self, channels: int = 32, time_dim: int = 64, num_classes: int | None = None, in_channels: int = 1):
        super().__init__()
        self.channels, self.time_dim, self.num_classes = channels, time_dim, num_classes
        c, c2 = channels, 2 * channels
        self.time_mlp = nn.Sequential(nn.Linear(c, time_dim), nn.SiLU(), nn.Linear(time_dim, time_dim))
        self.label_emb = nn.Embedding(num_classes + 1, time_dim) if num_classes is not None else None
        self.conv_in = nn.Conv2d(in_channels, c, 3, padding=1)
        self.down1 = _ResBlock(c, c, time_dim)                       # 16×16
        self.pool1 = nn.Conv2d(c, c, 3, stride=2, padding=1)         # → 8×8
        self.down2 = _ResBlock(c, c2, time_dim)
        self.pool2 = nn.Conv2d(c2, c2, 3, stride=2, padding=1)       # → 4×4
        self.mid = _ResBlock(c2, c2, time_dim)
        self.up2 = _ResBlock(c2 + c2, c2, time_dim)                  # 8×8, with the skip from down2
        self.up1 = _ResBlock(c2 + c, c, time_dim)                    # 16×16, with the skip from down1
        self.out = nn.Sequential(nn.GroupNorm(min(8, c), c), nn.SiLU(), nn.Conv2d(c, in_channels, 3, padding=1))
        nn.init.zeros_(self.out[-1].weight)  # start by predicting ε̂ = 0: a calm first step
        nn.init.zeros_(self.out[-1].bias)

    @property
    def null_class(self) -> int | None:
        return self.num_classes

    def forward(self, x: torch.Tensor, t: torch.Tensor, y: torch.Tensor | None = None) -> torch.Tensor:
        if x.dim() != 4 or x.shape[-1] % 4 or x.shape[-2] % 4:
            raise ValueError(f"TinyUNet expects (B, C, H, W) with H, W divisible by 4, got {tuple(x.shape)}")
        emb = self.time_mlp(timestep_embedding(t, self.channels))
        if self.label_emb is not None:
            if y is None:
                y = torch.full((len(x),), self.num_classes, dtype=torch.long, device=x.device)
            emb = emb + self.label_emb(y)
        elif y is not None:
            raise ValueError("this TinyUNet was built with num_classes=None: it takes no label y")
        h1 = self.down1(self.conv_in(x), emb)
        h2 = self.down2(self.pool1(h1), emb)
        h = self.mid(self.pool2(h2), emb)
        h = self.up2(torch.cat([F.interpolate(h, scale_factor=2.0, mode="nearest"), h2], 1), emb)
        h = self.up1(torch.cat([F.interpolate(h, scale_factor=2.0, mode="nearest"), h1], 1), emb)
        return self.out(h)


def to_model_space(images: torch.Tensor) -> torch.Tensor:
    """Images in [0, 1] → [-1, 1], the range the diffusion works in (data and noise on the same scale)."""
    return images * 2 - 1


def to_image_space(x: torch.Tensor) -> torch.Tensor:
    """Diffusion samples in [-1, 1] → images in [0, 1] (clipped)."""
    return ((x + 1) / 2).clamp(0, 1)


# ------------------------------------------------------------------------ exercise 2: the training loss
def diffusion_loss(model: Callable, x0: torch.Tensor, alpha_bars: torch.Tensor) -> torch.Tensor:
    """The simplified DDPM loss (Ho et al. 2020, eq. 14) on one batch.

    model(x_t (B, ...), t (B,)) → ε̂ (B, ...); x0: (B, ...) clean data; alpha_bars: (T,).
    Draw t = torch.randint(0, T, (B,)) FIRST, then ε = torch.randn_like(x0) (this order, so the checker sees the
    same random numbers), noise x0 to x_t with q_sample and return the scalar mean((ε - ε̂)²).
    """
    t = torch.randint(0, len(alpha_bars), (len(x0),), device=x0.device)
    noise = torch.randn_like(x0)
    x_t = q_sample(x0, t, noise, alpha_bars)
    return F.mse_loss(model(x_t, t), noise)


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


# ------------------------------------------------------------------------------------------ training
def train_diffusion(model: nn.Module, data: torch.Tensor, schedule: Schedule, steps: int = 2000,
                    batch_size: int = 128, lr: float = 2e-3, labels: torch.Tensor | None = None,
                    p_uncond: float = 0.1, seed: int = 0, loss_fn: Callable = diffusion_loss,
                    ema: float | None = None) -> tuple[nn.Module, list[float]]:
    """Train an ε-model for a fixed number of steps (AdamW, cosine LR decay, grad-norm clipping at 1).

    data: (N, ...) in model space. Unconditional: ``loss_fn(model, x0, alpha_bars)`` on random batches.
    With ``labels`` (N,) the model is called as model(x, t, y) and each label is replaced by the null class
    (``model.null_class``) with probability ``p_uncond`` — the classifier-free-guidance recipe L22 uses.
    ``ema``: keep an exponential moving average of the weights (e.g. 0.995) and return that copy instead.
    Returns (model in eval mode, list of per-step losses).
    """
    g = torch.Generator().manual_seed(seed)
    torch.manual_seed(seed)
    opt = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=0.0)
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=steps, eta_min=lr * 0.05)
    averaged = None
    if ema is not None:
        import copy

        averaged = copy.deepcopy(model).requires_grad_(False)
    losses = []
    model.train()
    for _ in range(steps):
        idx = torch.randint(len(data), (batch_size,), generator=g)
        x0 = data[idx]
        if labels is None:
            loss = loss_fn(model, x0, schedule.alpha_bars)
        else:
            y = labels[idx].clone()
            y[torch.rand(batch_size, generator=g) < p_uncond] = model.null_class
            loss = loss_fn(lambda x, t, y=y: model(x, t, y), x0, schedule.alpha_bars)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        sched.step()
        if averaged is not None:
            with torch.no_grad():
                for pa, p in zip(averaged.parameters(), model.parameters()):
                    pa.lerp_(p, 1 - ema)
        losses.append(loss.item())
    out = averaged if averaged is not None else model
    return out.eval(), losses


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
