"""Denoising diffusion pieces that Lectures 21 (DDPM) and 22 (guidance, DDIM, latent diffusion) share.

    schedule = make_schedule(200, "cosine")                 # β_t, α_t, ᾱ_t
    x_t = q_sample(x0, t, noise, schedule.alpha_bars)        # noise to step t in one shot
    model = TinyUNet(channels=32, num_classes=10)            # ε_θ(x_t, t, y) for 16×16 images
    model, losses = train_diffusion(model, data, schedule, steps=600, labels=y)

Lecture 21 derives and tests each piece (its exercises are ``q_sample`` and ``diffusion_loss``; the solutions
module re-exports these references). Images live in [-1, 1] inside the diffusion (``to_model_space`` /
``to_image_space``).
"""
from __future__ import annotations

import copy
import math
from dataclasses import dataclass
from typing import Callable

import torch
import torch.nn as nn
import torch.nn.functional as F

__all__ = ["Schedule", "make_schedule", "q_sample", "diffusion_loss", "timestep_embedding", "TinyUNet",
           "train_diffusion", "to_model_space", "to_image_space"]


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


def q_sample(x0: torch.Tensor, t: torch.Tensor, noise: torch.Tensor, alpha_bars: torch.Tensor) -> torch.Tensor:
    """Noise clean data to step t in one shot: x_t = √ᾱ_t · x_0 + √(1 - ᾱ_t) · ε.

    x0: (B, ...) clean data (B, 2) points or (B, C, H, W) images; t: (B,) int64 step per sample in [0, T);
    noise: ε, same shape as x0; alpha_bars: (T,). Returns x_t, same shape as x0.
    """
    ab = _per_sample(alpha_bars, t, x0)  # (B, 1, ...): one ᾱ per sample, broadcast over its pixels
    return ab.sqrt() * x0 + (1 - ab).sqrt() * noise


def timestep_embedding(t: torch.Tensor, dim: int, max_period: float = 10000.0) -> torch.Tensor:
    """Sinusoidal embedding of integer timesteps (as positions in a Transformer). t: (B,) → (B, dim)."""
    half = dim // 2
    freqs = torch.exp(-math.log(max_period) * torch.arange(half, dtype=torch.float32, device=t.device) / half)
    args = t.float()[:, None] * freqs[None]
    emb = torch.cat([torch.cos(args), torch.sin(args)], dim=1)
    return F.pad(emb, (0, dim % 2))


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
