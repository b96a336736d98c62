"""Lecture 22 — classifier-free guidance, DDIM few-step sampling and latent diffusion.

Reference solutions and the exercise registry (COURSE_DESIGN §2):

* ``cfg_eps``: classifier-free guidance — run the denoiser with the label and with the "null" label, then
  ε̂ = ε_uncond + s·(ε_cond − ε_uncond);
* ``ddim_step``: one DDIM update from x_t to x_{t'} (any earlier t'), η = 0 deterministic … η = 1 DDPM-like,
  with optional clipping of the predicted x̂_0;
* ``encode_latents`` / ``decode_latents``: the latent-diffusion round trip — encode and standardise per
  dimension, then undo the standardisation and decode.

Beyond the exercises: the general sampler (``sample``: DDPM = every step with η = 1; DDIM = a few steps, via
``ddim_timesteps``), a latent denoiser (``LatentDenoiser``), the autoencoder (``Autoencoder``,
``train_autoencoder``, ``latent_stats``), a CPU timer (``time_per_call``), the judge's grading helper (``grade``)
and the plot behind the widget (``plot_guidance``). The schedule, the class-conditional ``TinyUNet`` (with its
null class) and ``train_diffusion`` (with condition dropout) are Lecture 21's, re-exported here.
"""
from __future__ import annotations

import math
import time
from typing import Callable

import matplotlib.pyplot as plt
import torch
import torch.nn as nn
import torch.nn.functional as F

from utils.diffusion import Schedule, TinyUNet, make_schedule, q_sample, timestep_embedding, train_diffusion
from utils.exercises import Case, Exercise

__all__ = [
    "make_schedule", "q_sample", "TinyUNet", "train_diffusion", "LatentDenoiser", "cfg_eps",
    "ddim_step", "ddim_timesteps", "sample", "Autoencoder", "train_autoencoder", "latent_stats", "encode_latents",
    "decode_latents", "to_judge", "grade", "time_per_call", "n_params", "plot_guidance", "EXERCISES",
]


class LatentDenoiser(nn.Module):
    """ε-prediction MLP for flat latents: forward(z (B, d), t (B,), y (B,)) → ε̂ (B, d); label num_classes = null."""

    def __init__(self, dim: int = 16, hidden: int = 128, num_classes: int = 10, emb_dim: int = 32, depth: int = 2):
        super().__init__()
        self.num_classes = num_classes
        self.emb_dim = emb_dim
        self.class_emb = nn.Embedding(num_classes + 1, emb_dim)
        self.time_mlp = nn.Sequential(nn.Linear(emb_dim, emb_dim), nn.SiLU())
        self.inp = nn.Linear(dim + emb_dim, hidden)
        self.blocks = nn.ModuleList([nn.Sequential(nn.LayerNorm(hidden), nn.Linear(hidden, hidden), nn.SiLU(),
                                                   nn.Linear(hidden, hidden)) for _ in range(depth)])
        self.out = nn.Linear(hidden, dim)

    @property
    def null_class(self) -> int:
        return self.num_classes

    def forward(self, z: torch.Tensor, t: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        emb = self.time_mlp(timestep_embedding(t, self.emb_dim)) + self.class_emb(y)
        h = self.inp(torch.cat([z, emb], -1))
        for block in self.blocks:
            h = h + block(h)       # residual MLP: a deeper denoiser that still trains in a few seconds
        return self.out(h)


def n_params(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


# ------------------------------------------------------------------------ exercise 1: classifier-free guidance
def cfg_eps(model: nn.Module, x_t: torch.Tensor, t: torch.Tensor, y: torch.Tensor, scale: float) -> torch.Tensor:
    """Classifier-free guided noise prediction.

    x_t: (B, ...); t, y: (B,). Run ``model(x, t, label)`` with the labels y and with the null label
    ``model.num_classes`` (in one batch of 2B), then ε̂ = ε_uncond + scale·(ε_cond − ε_uncond): scale 0 is the
    unconditional model, 1 the plain conditional one, > 1 pushes further in the direction the label adds.
    Returns (B, ...).
    """
    null = torch.full_like(y, model.num_classes)
    eps = model(torch.cat([x_t, x_t]), torch.cat([t, t]), torch.cat([y, null]))   # one batched forward pass
    eps_cond, eps_uncond = eps.chunk(2)
    return eps_uncond + scale * (eps_cond - eps_uncond)


def _cfg_swapped(model, x_t, t, y, scale):
    null = torch.full_like(y, model.num_classes)
    eps_c, eps_u = model(x_t, t, y), model(x_t, t, null)
    return eps_c + scale * (eps_u - eps_c)


def _cfg_no_base(model, x_t, t, y, scale):
    null = torch.full_like(y, model.num_classes)
    return scale * (model(x_t, t, y) - model(x_t, t, null))


def _cfg_null_zero(model, x_t, t, y, scale):
    null = torch.zeros_like(y)   # class 0 is the digit zero, not "no condition"
    eps_c, eps_u = model(x_t, t, y), model(x_t, t, null)
    return eps_u + scale * (eps_c - eps_u)


def _cfg_ho_convention(model, x_t, t, y, scale):
    null = torch.full_like(y, model.num_classes)
    eps_c, eps_u = model(x_t, t, y), model(x_t, t, null)
    return (1 + scale) * eps_c - scale * eps_u


class _ToyEps(nn.Module):
    """A tiny deterministic stand-in for a denoiser in the exercise cases: depends on x, t and the label."""

    def __init__(self, num_classes: int = 3, dim: int = 4):
        super().__init__()
        self.num_classes = num_classes
        g = torch.Generator().manual_seed(7)
        self.W = nn.Parameter(torch.randn(dim, dim, generator=g) / 2)
        self.c = nn.Parameter(torch.randn(num_classes + 1, dim, generator=g))

    def forward(self, x, t, y):
        flat = x.reshape(len(x), -1)
        return (torch.tanh(flat @ self.W) + self.c[y] + 0.01 * t.float()[:, None]).reshape(x.shape)


def _cfg_cases() -> list[Case]:
    g = torch.Generator().manual_seed(0)
    m = _ToyEps(3, 4)
    return [
        Case((m, torch.randn(5, 4, generator=g), torch.tensor([3, 1, 4, 1, 5]), torch.tensor([0, 1, 2, 0, 1]), 3.0),
             label="B=5, scale 3"),
        Case((m, torch.randn(2, 1, 2, 2, generator=g), torch.tensor([10, 20]), torch.tensor([2, 2]), 1.0),
             label="image-shaped x (B, 1, 2, 2), scale 1 = plain conditional"),
        Case((m, torch.randn(3, 4, generator=g), torch.tensor([0, 0, 0]), torch.tensor([1, 0, 2]), 0.0),
             label="scale 0 = unconditional"),
    ]


# ------------------------------------------------------------------------------------ exercise 2: DDIM step
def ddim_step(x_t: torch.Tensor, eps: torch.Tensor, alpha_bar_t: float, alpha_bar_prev: float, eta: float = 0.0,
              noise: torch.Tensor | None = None, clip: float | None = 1.0) -> torch.Tensor:
    """One DDIM update x_t → x_prev (Song et al., 2021), for ANY earlier time (so steps can be skipped).

    x_t, eps, noise: (B, ...); alpha_bar_t, alpha_bar_prev: floats (ᾱ at the current and the target time).
    1. x̂_0 = (x_t − sqrt(1 − ᾱ_t)·ε) / sqrt(ᾱ_t), clipped to [−clip, clip] when clip is not None; ε is then
       recomputed from the clipped x̂_0 so the two stay consistent.
    2. σ = η · sqrt((1 − ᾱ_prev)/(1 − ᾱ_t)) · sqrt(1 − ᾱ_t/ᾱ_prev).
    3. x_prev = sqrt(ᾱ_prev)·x̂_0 + sqrt(1 − ᾱ_prev − σ²)·ε + σ·noise   (noise ignored when η = 0).
    Returns (B, ...).
    """
    a_t, a_prev = torch.as_tensor(alpha_bar_t, dtype=x_t.dtype), torch.as_tensor(alpha_bar_prev, dtype=x_t.dtype)
    x0 = (x_t - (1 - a_t).sqrt() * eps) / a_t.sqrt()            # where the model thinks the clean image is
    if clip is not None:
        x0 = x0.clamp(-clip, clip)                                # data lives in [-1, 1]; far-off guesses are junk
        eps = (x_t - a_t.sqrt() * x0) / (1 - a_t).sqrt()         # the noise consistent with the clipped guess
    sigma = eta * ((1 - a_prev) / (1 - a_t)).sqrt() * (1 - a_t / a_prev).sqrt()
    x_prev = a_prev.sqrt() * x0 + (1 - a_prev - sigma ** 2).clamp(min=0).sqrt() * eps
    if eta > 0:
        x_prev = x_prev + sigma * noise
    return x_prev


def _ddim_no_clip(x_t, eps, alpha_bar_t, alpha_bar_prev, eta=0.0, noise=None, clip=1.0):
    return ddim_step(x_t, eps, alpha_bar_t, alpha_bar_prev, eta, noise, clip=None)


def _ddim_no_sqrt(x_t, eps, alpha_bar_t, alpha_bar_prev, eta=0.0, noise=None, clip=1.0):
    a_t, a_prev = torch.tensor(alpha_bar_t), torch.tensor(alpha_bar_prev)
    x0 = (x_t - (1 - a_t) * eps) / a_t
    if clip is not None:
        x0 = x0.clamp(-clip, clip)
        eps = (x_t - a_t * x0) / (1 - a_t)
    sigma = eta * ((1 - a_prev) / (1 - a_t)).sqrt() * (1 - a_t / a_prev).sqrt()
    out = a_prev * x0 + (1 - a_prev - sigma ** 2).clamp(min=0) * eps
    return out + sigma * noise if eta > 0 else out


def _ddim_direction_ignores_sigma(x_t, eps, alpha_bar_t, alpha_bar_prev, eta=0.0, noise=None, clip=1.0):
    a_t, a_prev = torch.tensor(alpha_bar_t), torch.tensor(alpha_bar_prev)
    x0 = (x_t - (1 - a_t).sqrt() * eps) / a_t.sqrt()
    if clip is not None:
        x0 = x0.clamp(-clip, clip)
        eps = (x_t - a_t.sqrt() * x0) / (1 - a_t).sqrt()
    sigma = eta * ((1 - a_prev) / (1 - a_t)).sqrt() * (1 - a_t / a_prev).sqrt()
    out = a_prev.sqrt() * x0 + (1 - a_prev).sqrt() * eps    # noise added on top of a full-size direction
    return out + sigma * noise if eta > 0 else out


def _ddim_stale_eps(x_t, eps, alpha_bar_t, alpha_bar_prev, eta=0.0, noise=None, clip=1.0):
    a_t, a_prev = torch.tensor(alpha_bar_t), torch.tensor(alpha_bar_prev)
    x0 = (x_t - (1 - a_t).sqrt() * eps) / a_t.sqrt()
    if clip is not None:
        x0 = x0.clamp(-clip, clip)       # clipped x̂_0 but the model's original ε kept
    sigma = eta * ((1 - a_prev) / (1 - a_t)).sqrt() * (1 - a_t / a_prev).sqrt()
    out = a_prev.sqrt() * x0 + (1 - a_prev - sigma ** 2).clamp(min=0).sqrt() * eps
    return out + sigma * noise if eta > 0 else out


def _ddim_cases() -> list[Case]:
    g = torch.Generator().manual_seed(0)
    x, e, n = (torch.randn(4, 1, 3, 3, generator=g) for _ in range(3))
    return [
        Case((x, e, 0.5, 0.8), {"eta": 0.0, "noise": n, "clip": None}, label="η=0, no clipping"),
        Case((1.5 * x, e, 0.05, 0.6), {"eta": 0.0, "noise": n, "clip": 1.0}, label="η=0, big jump, clipping bites"),
        Case((x, e, 0.3, 0.9), {"eta": 1.0, "noise": n, "clip": 1.0}, label="η=1 with clipping"),
        Case((x[:2, 0, 0], e[:2, 0, 0], 0.7, 0.75), {"eta": 0.5, "noise": n[:2, 0, 0], "clip": None},
             label="flat latents (2, 3), η=0.5"),
        Case((x, e, 0.2, 1.0), {"eta": 0.0, "noise": n, "clip": 1.0}, label="last step: ᾱ_prev = 1 returns x̂_0"),
    ]


def ddim_timesteps(T: int, steps: int) -> list[int]:
    """`steps` evenly spaced timesteps from T−1 down to 0 (the sub-sequence DDIM visits), e.g. (500, 5) →
    [499, 374, 250, 125, 0]."""
    if not 1 <= steps <= T:
        raise ValueError(f"steps must be between 1 and T={T}, got {steps}")
    return torch.linspace(T - 1, 0, steps).round().long().tolist()


@torch.no_grad()
def sample(eps_fn: Callable[[torch.Tensor, torch.Tensor], torch.Tensor], shape: tuple[int, ...],
           schedule: Schedule, steps: int | None = None, eta: float = 0.0, clip: float | None = 1.0,
           seed: int = 0, step_fn: Callable = ddim_step) -> torch.Tensor:
    """Generate from pure noise with ``eps_fn(x_t, t (B,)) -> ε̂``, visiting ``steps`` timesteps (default all T).

    DDPM's ancestral sampler is the special case steps = T, η = 1 (then σ² is exactly the DDPM posterior
    variance β̃_t); DDIM is steps ≪ T with η = 0 (deterministic) or η > 0. Returns x_0-like samples (shape).
    """
    ab = schedule.alpha_bars
    T = len(ab)
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(shape, generator=g)
    ts = ddim_timesteps(T, steps or T)
    for i, t in enumerate(ts):
        a_prev = ab[ts[i + 1]].item() if i + 1 < len(ts) else 1.0   # the final step lands on the clean image
        eps = eps_fn(x, torch.full((shape[0],), t, dtype=torch.long))
        x = step_fn(x, eps, ab[t].item(), a_prev, eta=eta, noise=torch.randn(shape, generator=g), clip=clip)
    return x


# ------------------------------------------------------------------------------------------ the autoencoder
class Autoencoder(nn.Module):
    """28×28 images → a flat latent of ``dim`` numbers in (−1, 1) (tanh: bounded, so diffusion has a box to
    clip to) → 28×28 images. encode: (B, 1, 28, 28) → (B, dim); decode: (B, dim) → (B, 1, 28, 28) in [0, 1].
    An MLP, not a conv net: on one CPU thread it trains in a few seconds and is good enough for 28×28 digits."""

    def __init__(self, dim: int = 16, hidden: int = 512):
        super().__init__()
        self.dim = dim
        self.encoder = nn.Sequential(nn.Flatten(), nn.Linear(784, hidden), nn.SiLU(), nn.Linear(hidden, dim),
                                     nn.Tanh())
        self.decoder = nn.Sequential(nn.Linear(dim, hidden), nn.SiLU(), nn.Linear(hidden, 784),
                                     nn.Unflatten(1, (1, 28, 28)))   # logits; decode() applies the sigmoid

    def encode(self, x: torch.Tensor) -> torch.Tensor:
        return self.encoder(x)

    def decode(self, z: torch.Tensor) -> torch.Tensor:
        return torch.sigmoid(self.decoder(z))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.decode(self.encode(x))


def train_autoencoder(ae: Autoencoder, X: torch.Tensor, steps: int = 600, batch_size: int = 128, lr: float = 2e-3,
                      seed: int = 0) -> list[float]:
    """Train reconstruction (binary cross-entropy on pixels in [0, 1]) for a fixed number of steps."""
    g = torch.Generator().manual_seed(seed)
    torch.manual_seed(seed)
    opt = torch.optim.Adam(ae.parameters(), lr=lr)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=lr, total_steps=steps, pct_start=0.1)
    losses = []
    for _ in range(steps):
        x = X[torch.randint(len(X), (batch_size,), generator=g)]
        loss = F.binary_cross_entropy_with_logits(ae.decoder(ae.encoder(x)), x)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        sched.step()
        losses.append(loss.item())
    ae.eval()
    return losses


@torch.no_grad()
def latent_stats(ae: Autoencoder, X: torch.Tensor) -> dict[str, torch.Tensor]:
    """Per-dimension mean and std (each (dim,)) of the encoder's latents over X, plus the box [lo, hi] that the
    tanh bound (−1, 1) becomes after standardising — the range to clip the diffusion's x̂_0 to."""
    z = torch.cat([ae.encode(X[i:i + 1000]) for i in range(0, len(X), 1000)])
    mean, std = z.mean(0), z.std(0).clamp(min=1e-3)
    return {"mean": mean, "std": std, "lo": (-1 - mean) / std, "hi": (1 - mean) / std}


# ----------------------------------------------------------------------------- exercise 3 and 4: the round trip
def encode_latents(ae: nn.Module, x: torch.Tensor, stats: dict[str, torch.Tensor]) -> torch.Tensor:
    """Images (B, 1, 28, 28) → standardised latents (B, d): encode, then (z − mean) / std per dimension, so every
    latent coordinate has mean 0 and std 1 — the scale the noise schedule was designed for."""
    return (ae.encode(x) - stats["mean"]) / stats["std"]


def _enc_no_standardise(ae, x, stats):
    return ae.encode(x)


def _enc_divide_by_var(ae, x, stats):
    return (ae.encode(x) - stats["mean"]) / stats["std"] ** 2


def _enc_no_center(ae, x, stats):
    return ae.encode(x) / stats["std"]


def decode_latents(ae: nn.Module, z: torch.Tensor, stats: dict[str, torch.Tensor]) -> torch.Tensor:
    """Standardised latents (B, d) → images (B, 1, 28, 28): undo the standardisation (z·std + mean), then decode."""
    return ae.decode(z * stats["std"] + stats["mean"])


def _dec_raw(ae, z, stats):
    return ae.decode(z)


def _dec_wrong_order(ae, z, stats):
    return ae.decode((z + stats["mean"]) * stats["std"])


def _dec_forgot_mean(ae, z, stats):
    return ae.decode(z * stats["std"])


def _round_trip_setup(seed: int = 0) -> tuple[Autoencoder, dict[str, torch.Tensor], torch.Tensor]:
    torch.manual_seed(seed)
    ae = Autoencoder(dim=4, hidden=8).eval()
    g = torch.Generator().manual_seed(seed)
    stats = {"mean": 0.3 * torch.randn(4, generator=g), "std": 0.2 + torch.rand(4, generator=g)}
    return ae, stats, torch.rand(3, 1, 28, 28, generator=g)


def _encode_cases() -> list[Case]:
    ae, stats, x = _round_trip_setup(0)
    ae2, stats2, x2 = _round_trip_setup(1)
    return [Case((ae, x, stats), label="3 images, d=4"), Case((ae2, x2[:1], stats2), label="one image, other stats")]


def _decode_cases() -> list[Case]:
    ae, stats, _ = _round_trip_setup(0)
    g = torch.Generator().manual_seed(2)
    return [Case((ae, torch.randn(3, 4, generator=g), stats), label="3 latents, d=4"),
            Case((ae, torch.zeros(1, 4), stats), label="z = 0 decodes the mean latent")]


# ---------------------------------------------------------------------------------------- grading and cost
def to_judge(x: torch.Tensor) -> torch.Tensor:
    """Samples in [-1, 1] (B, 1, H, W) → the judge's (B, 1, 16, 16) in [0, 1] (area-downsampled when H > 16)."""
    x = ((x + 1) / 2).clamp(0, 1)
    return F.interpolate(x, size=16, mode="area") if x.shape[-1] != 16 else x


def grade(judge: nn.Module, x: torch.Tensor, labels: torch.Tensor | None = None) -> dict[str, float]:
    """The module judge's report (recognised, junk, diversity, accuracy) on samples in [-1, 1]."""
    from utils.pretrained import judge_report

    return judge_report(judge, to_judge(x), labels)


def time_per_call(fn: Callable[[], object], repeats: int = 5) -> float:
    """Median CPU seconds (process time: fair on a shared machine) of ``fn()`` over ``repeats`` calls."""
    fn()   # warm-up
    times = []
    for _ in range(repeats):
        t0 = time.process_time()
        fn()
        times.append(time.process_time() - t0)
    return sorted(times)[len(times) // 2]


# ------------------------------------------------------------------------------------------------ the widget
def plot_guidance(samples: dict[float, torch.Tensor], reports: dict[float, dict[str, float]], scale: float,
                  n_show: int = 30) -> plt.Figure:
    """The widget's figure: the samples drawn at guidance ``scale`` (same noise for every scale, so you watch
    the same digits change) next to the judge's accuracy / recognised / diversity across all scales."""
    if scale not in samples:
        raise KeyError(f"no samples for scale {scale}; precomputed scales: {sorted(samples)}")
    x = ((samples[scale][:n_show] + 1) / 2).clamp(0, 1)
    ncols = 10
    nrows = math.ceil(len(x) / ncols)
    fig = plt.figure(figsize=(11, 3.4))
    grid = fig.add_gridspec(nrows, ncols + 6)
    for i in range(len(x)):
        ax = fig.add_subplot(grid[i // ncols, i % ncols])
        ax.imshow(x[i, 0], cmap="gray", vmin=0, vmax=1)
        ax.set_xticks([])
        ax.set_yticks([])
        if i % ncols == 0:
            ax.set_ylabel(f"row {i // ncols}", fontsize=7)
    ax = fig.add_subplot(grid[:, ncols + 1:])
    scales = sorted(reports)
    for key, style in [("accuracy", "o-"), ("recognised", "s--")]:
        ax.plot(scales, [reports[s][key] for s in scales], style, label=key)
    ax.plot(scales, [reports[s]["diversity"] / 10 for s in scales], "^:", label="diversity / 10")
    ax.axvline(scale, color="gray", lw=1)
    ax.set_xlabel("guidance scale s")
    ax.set_ylabel("fraction")
    ax.set_ylim(0, 1.05)
    ax.legend(fontsize=7, loc="lower right")
    ax.set_title("judge vs guidance", fontsize=9)
    r = reports[scale]
    fig.suptitle(f"classifier-free guidance s = {scale:g}: accuracy {r['accuracy']:.2f}, "
                 f"recognised {r['recognised']:.2f}  (columns = requested digits 0–9)")
    return fig


# ------------------------------------------------------------------------------------------------ registry
EXERCISES = [
    Exercise(
        name="cfg_eps",
        reference=cfg_eps,
        cases=_cfg_cases,
        mistakes={
            "cond and uncond swapped: scale pushes AWAY from the label": _cfg_swapped,
            "forgot the unconditional base: returned scale·(cond − uncond) only": _cfg_no_base,
            "used label 0 as 'no condition' (0 is the digit zero; the null class is model.num_classes)":
                _cfg_null_zero,
            "Ho & Salimans' convention (1+w)·cond − w·uncond: off by one in the scale": _cfg_ho_convention,
        },
        hint="null = torch.full_like(y, model.num_classes); eps_c = model(x_t, t, y); eps_u = model(x_t, t, null); "
             "return eps_u + scale * (eps_c - eps_u).",
    ),
    Exercise(
        name="ddim_step",
        reference=ddim_step,
        cases=_ddim_cases,
        mistakes={
            "ignored clip: x̂_0 was not clamped to [-clip, clip]": _ddim_no_clip,
            "used ᾱ where sqrt(ᾱ) belongs (signal scales are square roots)": _ddim_no_sqrt,
            "direction term sqrt(1 − ᾱ_prev) without subtracting σ² (too much noise when η > 0)":
                _ddim_direction_ignores_sigma,
            "kept the model's ε after clipping x̂_0 (recompute ε from the clipped x̂_0)": _ddim_stale_eps,
        },
        hint="x0 = (x_t - sqrt(1-a_t)*eps)/sqrt(a_t); clamp; eps = (x_t - sqrt(a_t)*x0)/sqrt(1-a_t); "
             "sigma = eta*sqrt((1-a_prev)/(1-a_t))*sqrt(1-a_t/a_prev); "
             "x_prev = sqrt(a_prev)*x0 + sqrt(1-a_prev-sigma²)*eps + sigma*noise.",
        atol=1e-5, rtol=1e-4,
    ),
    Exercise(
        name="encode_latents",
        reference=encode_latents,
        cases=_encode_cases,
        mistakes={
            "forgot to standardise (raw encoder output)": _enc_no_standardise,
            "divided by the variance instead of the std": _enc_divide_by_var,
            "forgot to subtract the mean": _enc_no_center,
        },
        hint="(ae.encode(x) - stats['mean']) / stats['std'] — the per-dimension mean and std broadcast over the batch.",
    ),
    Exercise(
        name="decode_latents",
        reference=decode_latents,
        cases=_decode_cases,
        mistakes={
            "decoded the standardised latent directly (forgot to undo the standardisation)": _dec_raw,
            "undid it in the wrong order: (z + mean)·std": _dec_wrong_order,
            "forgot to add the mean back": _dec_forgot_mean,
        },
        hint="The exact inverse of encode_latents: ae.decode(z * stats['std'] + stats['mean']).",
    ),
]
