"""Lecture 20 — generative adversarial networks: the minimax game, the non-saturating loss, mode collapse and a
gradient penalty on a 2-D ring, and a small convolutional GAN on 16×16 digits.

Reference solutions and the exercise registry (COURSE_DESIGN §2):

* ``discriminator_loss``: binary cross-entropy on logits, real → 1 and fake → 0;
* ``generator_loss``: the non-saturating generator loss −log D(G(z));
* ``gradient_penalty``: the WGAN-GP penalty (‖∇ₓ D(x̂)‖ − 1)² at random points between real and fake samples;
* ``count_modes``: how many of the ring's modes a set of samples covers, and how many samples land nowhere.

Beyond the exercises: ``saturating_generator_loss`` (the original minimax loss), the 2-D models and training loop
(``mlp``, ``train_gan_2d``), the gradient measurement at the start of training (``generator_grad_norms``), the
widget's plot (``plot_ring_step``), and the digit GAN (``DigitGenerator``, ``DigitDiscriminator``,
``train_digit_gan``, ``nearest_distance``).
"""
from __future__ import annotations

import math
from typing import Callable

import matplotlib.pyplot as plt
import torch
import torch.nn as nn
import torch.nn.functional as F

from utils.exercises import Case, Exercise, run_module  # noqa: F401  (run_module: the course's usual import)

__all__ = [
    "discriminator_loss", "generator_loss", "saturating_generator_loss", "gradient_penalty", "count_modes",
    "ring_centres", "mlp", "gan_step", "train_gan_2d", "generator_grad_norms", "plot_ring_step", "DigitGenerator",
    "DigitDiscriminator", "train_digit_gan", "nearest_distance", "EXERCISES",
]


# ------------------------------------------------------------------------- exercise 1: discriminator loss
def discriminator_loss(real_logits: torch.Tensor, fake_logits: torch.Tensor) -> torch.Tensor:
    """The discriminator's binary cross-entropy: real samples are class 1, fakes class 0.

    real_logits: (B_r, 1) or (B_r,), fake_logits: (B_f, 1) or (B_f,) — raw scores, D(x) = sigmoid(logit).
    Returns a scalar: mean(-log D(real)) + mean(-log(1 - D(fake))).
    """
    # -log sigmoid(l) = softplus(-l) and -log(1 - sigmoid(l)) = softplus(l): exact, and never log(0) = -inf
    return F.softplus(-real_logits).mean() + F.softplus(fake_logits).mean()


def _d_loss_swapped(real_logits, fake_logits):
    return F.softplus(real_logits).mean() + F.softplus(-fake_logits).mean()


def _d_loss_naive_log(real_logits, fake_logits):
    return -torch.log(torch.sigmoid(real_logits)).mean() - torch.log(1 - torch.sigmoid(fake_logits)).mean()


def _d_loss_one_mean(real_logits, fake_logits):
    return torch.cat([F.softplus(-real_logits).flatten(), F.softplus(fake_logits).flatten()]).mean()


def _d_loss_cases() -> list[Case]:
    g = torch.Generator().manual_seed(0)
    return [
        Case((torch.randn(8, 1, generator=g), torch.randn(8, 1, generator=g)), label="8 real, 8 fake logits (B, 1)"),
        Case((torch.randn(6, generator=g), torch.randn(3, generator=g)), label="6 real, 3 fake: unequal batches"),
        Case((torch.tensor([40.0, -3.0]), torch.tensor([-40.0, 50.0, 2.0])),
             label="large logits: a confident discriminator (log of 0 must not appear)"),
        Case((torch.zeros(4, 1), torch.zeros(4, 1)), label="logits 0: D = 1/2 everywhere, loss 2 log 2"),
    ]


# ---------------------------------------------------------------------- exercise 2: the generator's loss
def generator_loss(fake_logits: torch.Tensor) -> torch.Tensor:
    """The non-saturating generator loss: make D call the fakes real.

    fake_logits: (B, 1) or (B,), D's raw scores on G(z). Returns the scalar mean(-log D(G(z))).
    """
    return F.softplus(-fake_logits).mean()  # -log sigmoid(l): steep exactly where D rejects the fakes (l << 0)


def saturating_generator_loss(fake_logits: torch.Tensor) -> torch.Tensor:
    """The original minimax generator loss, mean(log(1 - D(G(z)))), which G *minimises*. fake_logits: (B, 1)."""
    return -F.softplus(fake_logits).mean()  # log(1 - sigmoid(l)) = -softplus(l): flat where l << 0


def _g_loss_sign_flipped(fake_logits):
    return F.softplus(fake_logits).mean()


def _g_loss_naive_log(fake_logits):
    return -torch.log(torch.sigmoid(fake_logits)).mean()


def _g_loss_sum(fake_logits):
    return F.softplus(-fake_logits).sum()


def _g_loss_cases() -> list[Case]:
    g = torch.Generator().manual_seed(1)
    return [
        Case((torch.randn(8, 1, generator=g),), label="8 fake logits (B, 1)"),
        Case((torch.randn(5, generator=g) - 3,), label="5 fakes the discriminator mostly rejects"),
        Case((torch.tensor([-120.0, 0.0, 4.0]),), label="a logit of -120: sigmoid underflows to 0"),
    ]


# ------------------------------------------------------------------------ exercise 3: gradient penalty
def gradient_penalty(critic: nn.Module, real: torch.Tensor, fake: torch.Tensor,
                     eps: torch.Tensor | None = None) -> torch.Tensor:
    """The WGAN-GP penalty (Gulrajani et al., 2017).

    real, fake: (B, ...) samples of the same shape; eps: (B,) mixing weights in [0, 1] (uniform if None).
    x̂ = eps·real + (1 − eps)·fake, one point per pair on the segment between them. Returns the scalar
    mean over the batch of (‖∇ₓ critic(x̂)‖₂ − 1)², the norm taken per sample over all of its features, and
    differentiable (create_graph=True) so that the penalty can train the critic.
    """
    if eps is None:
        eps = torch.rand(len(real), device=real.device)
    eps = eps.reshape(-1, *[1] * (real.dim() - 1))                 # (B, 1, ...) broadcasts over features
    x_hat = (eps * real + (1 - eps) * fake).detach().requires_grad_(True)
    # sum(): sample i's output depends only on x̂_i, so the gradient of the sum is every per-sample gradient at once
    (grad,) = torch.autograd.grad(critic(x_hat).sum(), x_hat, create_graph=True)
    norms = grad.flatten(1).norm(dim=1)                             # (B,): one gradient norm per sample
    return ((norms - 1) ** 2).mean()


def _gp_squared_norm(critic, real, fake, eps=None):
    eps = eps.reshape(-1, *[1] * (real.dim() - 1))
    x_hat = (eps * real + (1 - eps) * fake).detach().requires_grad_(True)
    (grad,) = torch.autograd.grad(critic(x_hat).sum(), x_hat, create_graph=True)
    return (grad.flatten(1).norm(dim=1) ** 2).mean()


def _gp_batch_norm(critic, real, fake, eps=None):
    eps = eps.reshape(-1, *[1] * (real.dim() - 1))
    x_hat = (eps * real + (1 - eps) * fake).detach().requires_grad_(True)
    (grad,) = torch.autograd.grad(critic(x_hat).sum(), x_hat, create_graph=True)
    return (grad.norm() - 1) ** 2


def _gp_at_real(critic, real, fake, eps=None):
    x = real.detach().requires_grad_(True)
    (grad,) = torch.autograd.grad(critic(x).sum(), x, create_graph=True)
    return ((grad.flatten(1).norm(dim=1) - 1) ** 2).mean()


def _gp_cases() -> list[Case]:
    g = torch.Generator().manual_seed(2)
    torch.manual_seed(2)
    linear = nn.Linear(2, 1)
    with torch.no_grad():
        linear.weight.copy_(torch.tensor([[3.0, 4.0]]))  # constant gradient of norm 5: penalty (5 - 1)² = 16
    small = nn.Sequential(nn.Linear(2, 16), nn.Tanh(), nn.Linear(16, 1))
    conv = nn.Sequential(nn.Conv2d(1, 4, 3, padding=1), nn.Tanh(), nn.Flatten(), nn.Linear(4 * 4 * 4, 1))
    return [
        Case((linear, torch.randn(4, 2, generator=g), torch.randn(4, 2, generator=g), torch.rand(4, generator=g)),
             label="a linear critic with weight (3, 4): every gradient has norm 5"),
        Case((small, torch.randn(8, 2, generator=g), torch.randn(8, 2, generator=g), torch.rand(8, generator=g)),
             label="a tanh MLP on 2-D points, B=8"),
        Case((conv, torch.rand(5, 1, 4, 4, generator=g), torch.rand(5, 1, 4, 4, generator=g),
              torch.rand(5, generator=g)), label="a conv critic on (B, 1, 4, 4) images: norm over all pixels"),
    ]


# ------------------------------------------------------------------------------ exercise 4: count modes
def count_modes(samples: torch.Tensor, centres: torch.Tensor, std: float,
                min_fraction: float = 0.02) -> tuple[int, float]:
    """samples (N, 2), centres (K, 2) of a Gaussian mixture with per-coordinate std ``std``.

    A sample is *on* a mode when it lies within 3·std of that mode's centre (its nearest one). A mode is
    *covered* when at least ``min_fraction`` of all samples are on it. Returns (number of covered modes,
    fraction of samples that are on no mode) — coverage and quality, the two ways a generator can fail.
    """
    dist, nearest = torch.cdist(samples, centres).min(dim=1)        # (N,), (N,)
    on = dist < 3 * std
    share = torch.bincount(nearest[on], minlength=len(centres)).float() / len(samples)  # (K,)
    return int((share >= min_fraction).sum()), float(1 - on.float().mean())


def _count_any_sample(samples, centres, std, min_fraction=0.02):
    dist, nearest = torch.cdist(samples, centres).min(dim=1)
    on = dist < 3 * std
    counts = torch.bincount(nearest[on], minlength=len(centres))
    return int((counts > 0).sum()), float(1 - on.float().mean())


def _count_no_radius(samples, centres, std, min_fraction=0.02):
    dist, nearest = torch.cdist(samples, centres).min(dim=1)
    share = torch.bincount(nearest, minlength=len(centres)).float() / len(samples)
    return int((share >= min_fraction).sum()), float((dist >= 3 * std).float().mean())


def _count_one_std(samples, centres, std, min_fraction=0.02):
    dist, nearest = torch.cdist(samples, centres).min(dim=1)
    on = dist < std
    share = torch.bincount(nearest[on], minlength=len(centres)).float() / len(samples)
    return int((share >= min_fraction).sum()), float(1 - on.float().mean())


def _count_cases() -> list[Case]:
    g = torch.Generator().manual_seed(3)
    c = ring_centres()
    two_modes = c[torch.tensor([0, 3])].repeat_interleave(50, 0) + 0.1 * torch.randn(100, 2, generator=g)
    spread = 2.5 * torch.randn(400, 2, generator=g)
    stray = torch.cat([c.repeat_interleave(30, 0) + 0.05 * torch.randn(240, 2, generator=g), c[5:6] + 0.0])
    return [
        Case((two_modes, c, 0.1), label="100 samples on 2 of 8 modes"),
        Case((spread, c, 0.1), label="400 samples from a wide Gaussian: mostly off-mode"),
        Case((stray, c, 0.05, 0.05), label="all 8 modes, min_fraction=0.05"),
        Case((torch.cat([c[:1].repeat(99, 1), c[4:5]]), c, 0.1),
             label="99 samples on one mode and a single stray sample on another"),
    ]


# --------------------------------------------------------------------------------------------- 2-D models
def ring_centres(n: int = 8, radius: float = 2.0) -> torch.Tensor:
    """(n, 2) centres of ``utils.data.gaussian_mixture``: evenly spaced on a circle, the first at angle 0."""
    angle = 2 * math.pi * torch.arange(n) / n
    return radius * torch.stack([angle.cos(), angle.sin()], 1)


def mlp(d_in: int, d_out: int, hidden: int = 128) -> nn.Sequential:
    """Two hidden ReLU layers: the generator (z → point) and the discriminator (point → logit) of the 2-D GAN."""
    return nn.Sequential(nn.Linear(d_in, hidden), nn.ReLU(), nn.Linear(hidden, hidden), nn.ReLU(),
                         nn.Linear(hidden, d_out))


def gan_step(G: nn.Module, D: nn.Module, opt_g: torch.optim.Optimizer, opt_d: torch.optim.Optimizer,
             real: torch.Tensor, z: torch.Tensor, d_loss_fn=discriminator_loss, g_loss_fn=generator_loss,
             penalty: Callable | None = None) -> tuple[float, float, torch.Tensor, torch.Tensor]:
    """One round of the game: a discriminator step, then a generator step through the *updated* D on the same
    fakes G(z). ``penalty(D, real, fake)``, if given, is added to D's loss (the gradient penalty).
    Returns (d_loss, g_loss, real_logits, fake_logits) — the logits of the discriminator step, for logging."""
    fake = G(z)
    # discriminator step: fake.detach() so this step does not push gradients into G
    real_logits, fake_logits = D(real), D(fake.detach())
    d_loss = d_loss_fn(real_logits, fake_logits)
    if penalty is not None:
        d_loss = d_loss + penalty(D, real, fake.detach())
    opt_d.zero_grad()
    d_loss.backward()
    opt_d.step()
    g_loss = g_loss_fn(D(fake))
    opt_g.zero_grad()
    g_loss.backward()
    opt_g.step()
    return d_loss.item(), g_loss.item(), real_logits.detach(), fake_logits.detach()


def train_gan_2d(data: torch.Tensor, steps: int = 1000, gp_weight: float = 0.0, seed: int = 0, batch_size: int = 128,
                 z_dim: int = 16, lr: float = 1e-3, snapshot_every: int = 50, n_snapshot: int = 1000,
                 d_loss_fn=discriminator_loss, g_loss_fn=generator_loss, gp_fn=gradient_penalty) -> dict:
    """Alternate one discriminator step and one generator step, ``steps`` times, on data (N, 2).

    gp_weight > 0 adds gp_weight · gradient_penalty to the discriminator's loss. Every ``snapshot_every`` steps
    (and at 0 and ``steps``) the generator maps the same fixed noise (n_snapshot, z_dim) to points; returns
    {"G", "D", "snapshots": {step: (n_snapshot, 2)}, "d_loss": [...], "g_loss": [...]}.
    """
    torch.manual_seed(seed)
    G, D = mlp(z_dim, 2), mlp(2, 1)
    opt_g = torch.optim.Adam(G.parameters(), lr=lr, betas=(0.5, 0.999))
    opt_d = torch.optim.Adam(D.parameters(), lr=lr, betas=(0.5, 0.999))
    gen = torch.Generator().manual_seed(seed)
    z_fixed = torch.randn(n_snapshot, z_dim, generator=gen)
    snapshots, d_losses, g_losses = {}, [], []

    def penalty(D: nn.Module, real: torch.Tensor, fake: torch.Tensor) -> torch.Tensor:
        return gp_weight * gp_fn(D, real, fake, torch.rand(batch_size, generator=gen))

    for step in range(steps + 1):
        if step % snapshot_every == 0 or step == steps:
            with torch.no_grad():
                snapshots[step] = G(z_fixed)
        if step == steps:
            break
        real = data[torch.randint(len(data), (batch_size,), generator=gen)]
        z = torch.randn(batch_size, z_dim, generator=gen)
        d_loss, g_loss, _, _ = gan_step(G, D, opt_g, opt_d, real, z, d_loss_fn, g_loss_fn,
                                      penalty if gp_weight > 0 else None)
        d_losses.append(d_loss)
        g_losses.append(g_loss)
    return {"G": G, "D": D, "snapshots": snapshots, "d_loss": d_losses, "g_loss": g_losses}


def generator_grad_norms(data: torch.Tensor, d_steps: int = 200, seed: int = 0, z_dim: int = 16,
                         batch_size: int = 256) -> dict[str, float]:
    """At the start of training: a fresh generator, a discriminator trained ``d_steps`` steps to tell data (N, 2)
    from its samples. Returns the norm of the gradient of each generator loss w.r.t. G's parameters, and
    the mean D(G(z)) — small, because the fakes are easy to spot."""
    torch.manual_seed(seed)
    G, D = mlp(z_dim, 2), mlp(2, 1)
    opt_d = torch.optim.Adam(D.parameters(), lr=1e-3)
    gen = torch.Generator().manual_seed(seed)
    for _ in range(d_steps):
        real = data[torch.randint(len(data), (batch_size,), generator=gen)]
        with torch.no_grad():
            fake = G(torch.randn(batch_size, z_dim, generator=gen))
        loss = discriminator_loss(D(real), D(fake))
        opt_d.zero_grad()
        loss.backward()
        opt_d.step()
    logits = D(G(torch.randn(batch_size, z_dim, generator=gen)))
    out = {"D(G(z))": torch.sigmoid(logits).mean().item()}
    for name, fn in [("saturating", saturating_generator_loss), ("non-saturating", generator_loss)]:
        grads = torch.autograd.grad(fn(logits), list(G.parameters()), retain_graph=True)
        out[name] = torch.cat([g.flatten() for g in grads]).norm().item()
    return out


def plot_ring_step(runs: dict[str, dict], step: int, data: torch.Tensor, centres: torch.Tensor,
                   std: float) -> plt.Figure:
    """One panel per run: its generated points at snapshot ``step`` (rounded down to a stored snapshot) over the
    data (N, 2), with the modes covered and the off-mode fraction in the title."""
    fig, axes = plt.subplots(1, len(runs), figsize=(4.2 * len(runs), 4.2), squeeze=False)
    for ax, (name, run) in zip(axes[0], runs.items()):
        stored = sorted(run["snapshots"])
        s = max([t for t in stored if t <= step], default=stored[0])
        pts = run["snapshots"][s]
        covered, off = count_modes(pts, centres, std)
        ax.scatter(data[:, 0], data[:, 1], s=2, c="lightgray", label="data")
        ax.scatter(pts[:, 0], pts[:, 1], s=3, c="tab:red", alpha=0.5, label="generated")
        ax.scatter(centres[:, 0], centres[:, 1], marker="x", c="black", s=30)
        ax.set(title=f"{name}, step {s}\n{covered}/8 modes, {off:.0%} off-mode", xlim=(-3.2, 3.2),
               ylim=(-3.2, 3.2), xlabel="$x_1$", ylabel="$x_2$", aspect="equal")
    axes[0, 0].legend(loc="lower left", fontsize=8)
    fig.tight_layout()
    return fig


# -------------------------------------------------------------------------------------------- digit GAN
class DigitGenerator(nn.Module):
    """z (B, z_dim) → images (B, 1, 16, 16) in [0, 1]: a linear map to a 4×4 feature map, then two
    transposed convolutions that each double the resolution (the DCGAN recipe, at toy size)."""

    def __init__(self, z_dim: int = 32, width: int = 24):
        super().__init__()
        self.z_dim = z_dim
        self.fc = nn.Sequential(nn.Linear(z_dim, 2 * width * 16), nn.BatchNorm1d(2 * width * 16), nn.ReLU())
        self.net = nn.Sequential(
            nn.Unflatten(1, (2 * width, 4, 4)),
            nn.ConvTranspose2d(2 * width, width, 4, stride=2, padding=1), nn.BatchNorm2d(width), nn.ReLU(),  # 8×8
            nn.ConvTranspose2d(width, 1, 4, stride=2, padding=1), nn.Sigmoid(),                              # 16×16
        )

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        return self.net(self.fc(z))


class DigitDiscriminator(nn.Module):
    """images (B, 1, 16, 16) → logits (B, 1): two strided convolutions with LeakyReLU (no pooling: the
    DCGAN advice, so that gradients reach every pixel of the generator's output)."""

    def __init__(self, width: int = 24):
        super().__init__()
        self.net = nn.Sequential(
            nn.Conv2d(1, width, 4, stride=2, padding=1), nn.LeakyReLU(0.2),               # 8×8
            nn.Conv2d(width, 2 * width, 4, stride=2, padding=1), nn.LeakyReLU(0.2),       # 4×4
            nn.Flatten(), nn.Linear(2 * width * 16, 1),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)


def train_digit_gan(images: torch.Tensor, steps: int = 1000, seed: int = 0, batch_size: int = 64, z_dim: int = 32,
                    width: int = 24, lr: float = 2e-4, d_loss_fn=discriminator_loss,
                    g_loss_fn=generator_loss) -> dict:
    """The same alternating loop (``gan_step``) as ``train_gan_2d`` on images (N, 1, 16, 16) in [0, 1],
    Adam(lr, betas=(0.5, 0.999)) as in DCGAN. Returns {"G" (eval mode), "D", "d_loss", "g_loss", "d_real",
    "d_fake"} (the last two: mean D on real and on fake per step)."""
    torch.manual_seed(seed)
    G, D = DigitGenerator(z_dim, width), DigitDiscriminator(width)
    opt_g = torch.optim.Adam(G.parameters(), lr=lr, betas=(0.5, 0.999))
    opt_d = torch.optim.Adam(D.parameters(), lr=lr, betas=(0.5, 0.999))
    gen = torch.Generator().manual_seed(seed)
    log = {"d_loss": [], "g_loss": [], "d_real": [], "d_fake": []}
    for _ in range(steps):
        real = images[torch.randint(len(images), (batch_size,), generator=gen)]
        z = torch.randn(batch_size, z_dim, generator=gen)
        d_loss, g_loss, real_logits, fake_logits = gan_step(G, D, opt_g, opt_d, real, z, d_loss_fn, g_loss_fn)
        log["d_loss"].append(d_loss)
        log["g_loss"].append(g_loss)
        log["d_real"].append(torch.sigmoid(real_logits).mean().item())
        log["d_fake"].append(torch.sigmoid(fake_logits).mean().item())
    return {"G": G.eval(), "D": D, **log}


def nearest_distance(samples: torch.Tensor, train: torch.Tensor) -> torch.Tensor:
    """samples (N, 1, H, W), train (M, 1, H, W) → (N,) Euclidean distance from each sample to its nearest training
    image: near 0 would mean the generator memorised (copied) training digits."""
    return torch.cdist(samples.flatten(1), train.flatten(1)).min(dim=1).values


# ---------------------------------------------------------------------------------------------- registry
def _tuple_compare(expected, got):
    if not isinstance(got, tuple) or len(got) != 2:
        return f"expected a tuple (covered modes, off-mode fraction), got {type(got).__name__}"
    if int(got[0]) != expected[0]:
        return f"covered modes: expected {expected[0]}, got {got[0]}"
    if abs(float(got[1]) - expected[1]) > 1e-6:
        return f"off-mode fraction: expected {expected[1]:.4f}, got {float(got[1]):.4f}"
    return None


EXERCISES = [
    Exercise(
        name="discriminator_loss",
        reference=discriminator_loss,
        cases=_d_loss_cases,
        mistakes={"swapped the labels (real → 0, fake → 1)": _d_loss_swapped,
                  "took log(sigmoid(·)) directly: log(0) = -inf for confident logits": _d_loss_naive_log,
                  "one mean over real and fake together instead of a mean per term": _d_loss_one_mean},
        hint="-log sigmoid(l) = softplus(-l) and -log(1 - sigmoid(l)) = softplus(l): "
             "F.softplus(-real_logits).mean() + F.softplus(fake_logits).mean().",
    ),
    Exercise(
        name="generator_loss",
        reference=generator_loss,
        cases=_g_loss_cases,
        mistakes={"the saturating minimax loss log(1 - D(G(z)))": saturating_generator_loss,
                  "sign flipped: minimising -log(1 - D(G(z))) teaches G to look *fake*": _g_loss_sign_flipped,
                  "took log(sigmoid(·)) directly: inf when D is sure": _g_loss_naive_log,
                  "sum over the batch instead of the mean": _g_loss_sum},
        hint="G wants D(G(z)) -> 1: minimise -log sigmoid(l) = F.softplus(-fake_logits).mean().",
    ),
    Exercise(
        name="gradient_penalty",
        reference=gradient_penalty,
        cases=_gp_cases,
        mistakes={"penalised ‖∇‖² instead of (‖∇‖ - 1)²": _gp_squared_norm,
                  "one norm over the whole batch instead of one per sample": _gp_batch_norm,
                  "gradient at the real samples instead of the interpolates x̂": _gp_at_real},
        hint="x_hat = (eps·real + (1-eps)·fake).requires_grad_(); grad = autograd.grad(critic(x_hat).sum(), x_hat, "
             "create_graph=True)[0]; ((grad.flatten(1).norm(dim=1) - 1) ** 2).mean(). Reshape eps to (B, 1, ...).",
        atol=1e-4, rtol=1e-4,
    ),
    Exercise(
        name="count_modes",
        reference=count_modes,
        cases=_count_cases,
        compare=_tuple_compare,
        mistakes={"a mode with a single sample counts as covered (min_fraction ignored)": _count_any_sample,
                  "assigned every sample to its nearest mode, however far away": _count_no_radius,
                  "radius 1·std instead of 3·std": _count_one_std},
        hint="dist, nearest = torch.cdist(samples, centres).min(1); on = dist < 3 * std; share = "
             "bincount(nearest[on], minlength=K) / N; return int((share >= min_fraction).sum()), 1 - on.mean().",
    ),
]
