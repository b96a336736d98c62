"""Lecture 19 — autoencoders, the variational autoencoder (VAE), the ELBO and the reparameterization trick.

Reference solutions and the exercise registry (COURSE_DESIGN §2):

* ``gaussian_kl``: KL(N(mu, diag σ²) || N(0, I)) in closed form, one number per example;
* ``reparameterize``: z = mu + σ·ε with ε ~ N(0, I) — a sample that gradients can flow through;
* ``elbo_loss``: the negative ELBO of a Bernoulli-decoder VAE, split into reconstruction + β·KL.

Beyond the exercises: the models (``Autoencoder``, ``VAE``, ``ToyVAE`` with a Gaussian decoder for 2-D data),
their objectives and training loop (``vae_objective``, ``toy_objective``, ``train_vae``, ``train_autoencoder``,
``evaluate_elbo``), the Monte-Carlo checks (``kl_monte_carlo``, ``iwae_bound``), the gradient estimators
(``toy_gradient_samples``, ``vae_gradient_samples``), image helpers (``sample_images``, ``latent_grid``,
``interpolate``) and the plots behind the widget (``plot_decoded``).
"""
from __future__ import annotations

import math
from typing import Callable

import matplotlib.pyplot as plt
import torch
import torch.nn as nn
import torch.nn.functional as F

from utils.exercises import Case, Exercise

__all__ = [
    "gaussian_kl", "reparameterize", "elbo_loss", "mlp", "Autoencoder", "VAE", "ToyVAE", "vae_objective",
    "toy_objective", "train_vae", "train_autoencoder", "evaluate_elbo", "kl_monte_carlo", "iwae_bound",
    "toy_gradient_samples", "vae_gradient_samples", "sample_images", "latent_grid", "interpolate", "encode_all",
    "plot_decoded", "IMAGE", "EXERCISES",
]

IMAGE = (1, 16, 16)   # every image model of the module works on 16×16 font_digits


# ------------------------------------------------------------------------------------ exercise 1: Gaussian KL
def gaussian_kl(mu: torch.Tensor, logvar: torch.Tensor) -> torch.Tensor:
    """KL( N(mu, diag exp(logvar)) || N(0, I) ), summed over the latent dimensions.

    mu, logvar: (B, d). Returns (B,). Per dimension: ½ (σ² + μ² − 1 − log σ²) — zero exactly when μ=0, σ=1.
    """
    return 0.5 * (logvar.exp() + mu.pow(2) - 1.0 - logvar).sum(dim=-1)


def _kl_no_half(mu, logvar):
    return (logvar.exp() + mu.pow(2) - 1.0 - logvar).sum(-1)


def _kl_std_for_var(mu, logvar):
    return 0.5 * ((0.5 * logvar).exp() + mu.pow(2) - 1.0 - logvar).sum(-1)  # σ where σ² belongs


def _kl_mean_over_dims(mu, logvar):
    return 0.5 * (logvar.exp() + mu.pow(2) - 1.0 - logvar).mean(-1)


def _kl_sign_of_log(mu, logvar):
    return 0.5 * (logvar.exp() + mu.pow(2) - 1.0 + logvar).sum(-1)


def _kl_cases() -> list[Case]:
    g = torch.Generator().manual_seed(0)
    return [
        Case((torch.zeros(2, 3), torch.zeros(2, 3)), label="q equals the prior: KL = 0"),
        Case((torch.randn(4, 2, generator=g), torch.randn(4, 2, generator=g)), label="B=4, d=2"),
        Case((torch.randn(3, 16, generator=g), torch.full((3, 16), -4.0)), label="d=16, very narrow q (σ²=e⁻⁴)"),
        Case((torch.zeros(1, 5), torch.full((1, 5), 2.0)), label="centred but too wide (σ²=e²)"),
    ]


# ----------------------------------------------------------------------------- exercise 2: reparameterization
def reparameterize(mu: torch.Tensor, logvar: torch.Tensor) -> torch.Tensor:
    """One sample z ~ N(mu, diag exp(logvar)) written as a differentiable function of (mu, logvar).

    mu, logvar: (B, d). Returns z (B, d) = mu + σ·ε with σ = exp(½·logvar) and ε = torch.randn_like(mu): the
    randomness lives in ε, which does not depend on the parameters, so ∂z/∂mu = 1 and ∂z/∂σ = ε.
    """
    eps = torch.randn_like(mu)
    return mu + torch.exp(0.5 * logvar) * eps


def _rep_var_as_std(mu, logvar):
    return mu + logvar.exp() * torch.randn_like(mu)


def _rep_logvar_as_std(mu, logvar):
    return mu + logvar * torch.randn_like(mu)


def _rep_no_gradient(mu, logvar):
    with torch.no_grad():  # "sampling is not differentiable": the encoder would get no gradient at all
        return mu + torch.exp(0.5 * logvar) * torch.randn_like(mu)


def _rep_uniform_noise(mu, logvar):
    return mu + torch.exp(0.5 * logvar) * torch.rand_like(mu)


def _reparam_runner(impl: Callable, case: Case) -> dict[str, torch.Tensor]:
    """z and the gradients it passes back to mu and logvar (of a fixed random projection of z)."""
    mu, logvar = (a.detach().clone().requires_grad_(True) for a in case.args)
    z = impl(mu, logvar)
    if z is None:
        return None
    w = torch.randn(z.shape, generator=torch.Generator().manual_seed(99))
    if z.requires_grad:
        (z * w).sum().backward()
    return {"z": z.detach(),
            "grad of mu": mu.grad if mu.grad is not None else torch.zeros_like(mu),
            "grad of logvar": logvar.grad if logvar.grad is not None else torch.zeros_like(logvar)}


def _reparam_cases() -> list[Case]:
    g = torch.Generator().manual_seed(1)
    return [
        Case((torch.randn(4, 3, generator=g), torch.randn(4, 3, generator=g)), label="B=4, d=3", seed=0),
        Case((torch.randn(2, 16, generator=g), torch.full((2, 16), -2.0)), label="B=2, d=16, narrow", seed=1),
        Case((torch.zeros(3, 2), torch.zeros(3, 2)), label="the prior itself (mu=0, logvar=0)", seed=2),
    ]


# --------------------------------------------------------------------------------------- exercise 3: ELBO loss
def elbo_loss(x_logits: torch.Tensor, x: torch.Tensor, mu: torch.Tensor, logvar: torch.Tensor,
              beta: float = 1.0) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """The negative ELBO of a VAE with a Bernoulli decoder, averaged over the batch.

    x_logits, x: (B, ...) decoder logits and targets in [0, 1]; mu, logvar: (B, d) of q(z|x).
    recon = −log p(x|z) = binary cross-entropy *summed* over the pixels of an example;
    kl    = gaussian_kl(mu, logvar);     loss = recon + beta · kl.
    Returns (loss, recon, kl), each a scalar: the mean over the batch.
    """
    recon = F.binary_cross_entropy_with_logits(x_logits, x, reduction="none").flatten(1).sum(1)  # (B,) nats
    kl = gaussian_kl(mu, logvar)                                                                # (B,) nats
    return (recon + beta * kl).mean(), recon.mean(), kl.mean()


def _elbo_mean_over_pixels(x_logits, x, mu, logvar, beta=1.0):
    recon = F.binary_cross_entropy_with_logits(x_logits, x)          # default reduction: mean over pixels too
    kl = gaussian_kl(mu, logvar).mean()
    return recon + beta * kl, recon, kl


def _elbo_sigmoid_twice(x_logits, x, mu, logvar, beta=1.0):
    recon = F.binary_cross_entropy_with_logits(torch.sigmoid(x_logits), x, reduction="none").flatten(1).sum(1)
    kl = gaussian_kl(mu, logvar)
    return (recon + beta * kl).mean(), recon.mean(), kl.mean()


def _elbo_beta_on_recon(x_logits, x, mu, logvar, beta=1.0):
    recon = F.binary_cross_entropy_with_logits(x_logits, x, reduction="none").flatten(1).sum(1)
    kl = gaussian_kl(mu, logvar)
    return (beta * recon + kl).mean(), recon.mean(), kl.mean()


def _elbo_minus_kl(x_logits, x, mu, logvar, beta=1.0):
    recon = F.binary_cross_entropy_with_logits(x_logits, x, reduction="none").flatten(1).sum(1)
    kl = gaussian_kl(mu, logvar)
    return (recon - beta * kl).mean(), recon.mean(), kl.mean()


def _elbo_cases() -> list[Case]:
    g = torch.Generator().manual_seed(2)

    def batch(b, shape, d):
        return (2 * torch.randn(b, *shape, generator=g), torch.rand(b, *shape, generator=g),
                torch.randn(b, d, generator=g), torch.randn(b, d, generator=g))

    return [
        Case(batch(4, (6,), 2), label="B=4 vectors of 6 pixels, d=2, beta=1"),
        Case(batch(3, (1, 16, 16), 8), {"beta": 4.0}, label="B=3 images (1, 16, 16), d=8, beta=4"),
        Case(batch(2, (1, 4, 4), 3), {"beta": 0.25}, label="beta=0.25"),
    ]


# --------------------------------------------------------------------------------------------------- models
def mlp(d_in: int, hidden: tuple[int, ...], d_out: int) -> nn.Sequential:
    """Linear → ReLU → … → Linear (no activation at the end: the caller decides what the outputs mean)."""
    layers: list[nn.Module] = []
    for h in hidden:
        layers += [nn.Linear(d_in, h), nn.ReLU()]
        d_in = h
    return nn.Sequential(*layers, nn.Linear(d_in, d_out))


class Autoencoder(nn.Module):
    """A plain autoencoder: x (B, D) → code z (B, d) → logits (B, D). Nothing says where codes must live."""

    def __init__(self, d_in: int = 256, d_latent: int = 2, hidden: tuple[int, ...] = (256, 128)):
        super().__init__()
        self.d_latent = d_latent
        self.encoder = mlp(d_in, hidden, d_latent)
        self.decoder = mlp(d_latent, hidden[::-1], d_in)

    def encode(self, x: torch.Tensor) -> torch.Tensor:
        return self.encoder(x.flatten(1))

    def decode(self, z: torch.Tensor) -> torch.Tensor:
        return self.decoder(z)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.decode(self.encode(x)).view_as(x)


class VAE(nn.Module):
    """Encoder x (B, D) → (mu, logvar) of q(z|x), each (B, d); decoder z (B, d) → logits (B, D) of p(x|z).

    forward(x) -> (decoder output shaped like x, mu, logvar) using one reparameterized sample per example.
    """

    def __init__(self, d_in: int = 256, d_latent: int = 2, hidden: tuple[int, ...] = (256, 128),
                 sampler: Callable = reparameterize):
        super().__init__()
        self.d_latent = d_latent
        self.sampler = sampler
        self.encoder = mlp(d_in, hidden, 2 * d_latent)   # one head for mu, one for logvar
        self.decoder = mlp(d_latent, hidden[::-1], d_in)

    def encode(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        mu, logvar = self.encoder(x.flatten(1)).chunk(2, dim=-1)
        return mu, logvar

    def decode(self, z: torch.Tensor) -> torch.Tensor:
        return self.decoder(z)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        mu, logvar = self.encode(x)
        z = self.sampler(mu, logvar)
        return self.decode(z).view_as(x), mu, logvar


class ToyVAE(VAE):
    """A VAE for 2-D points: Gaussian decoder p(x|z) = N(decoder(z), diag σ²) with a learned σ per coordinate."""

    def __init__(self, d_in: int = 2, d_latent: int = 2, hidden: tuple[int, ...] = (64, 64)):
        super().__init__(d_in, d_latent, hidden)
        self.log_sigma = nn.Parameter(torch.full((d_in,), -1.0))

    @torch.no_grad()
    def sample(self, n: int, generator: torch.Generator | None = None) -> torch.Tensor:
        """n points (n, 2): z ~ N(0, I), then x ~ N(decoder(z), σ²)."""
        z = torch.randn(n, self.d_latent, generator=generator)
        mean = self.decode(z)
        return mean + self.log_sigma.exp() * torch.randn(mean.shape, generator=generator)


# ------------------------------------------------------------------------------------------------ objectives
def vae_objective(model: VAE, x: torch.Tensor, beta: float = 1.0,
                  elbo: Callable = elbo_loss) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Bernoulli-decoder VAE on images x (B, 1, 16, 16): returns elbo(logits, x, mu, logvar, beta)."""
    logits, mu, logvar = model(x)
    return elbo(logits, x, mu, logvar, beta)


def toy_objective(model: ToyVAE, x: torch.Tensor, beta: float = 1.0,
                  elbo: Callable | None = None) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Gaussian-decoder VAE on points x (B, 2): recon = −log N(x; mean, σ²) summed over coordinates."""
    mean, mu, logvar = model(x)
    log_sigma = model.log_sigma
    recon = (0.5 * ((x - mean) / log_sigma.exp()).pow(2) + log_sigma + 0.5 * math.log(2 * math.pi)).sum(1)
    kl = gaussian_kl(mu, logvar)
    return (recon + beta * kl).mean(), recon.mean(), kl.mean()


@torch.no_grad()
def evaluate_elbo(model: VAE, X: torch.Tensor, objective: Callable = vae_objective, beta: float = 1.0,
                  seed: int = 0) -> dict[str, float]:
    """The ELBO (nats per example, higher is better), recon and KL on X, one fixed-seed posterior sample each."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        loss, recon, kl = objective(model, X, beta=1.0)
    return {"elbo": -(recon + kl).item(), "recon": recon.item(), "kl": kl.item(), "loss": loss.item()}


def train_vae(model: VAE, X: torch.Tensor, objective: Callable = vae_objective, steps: int = 2000,
              batch_size: int = 128, lr: float = 2e-3, beta: float = 1.0, elbo: Callable = elbo_loss,
              kl_warmup: int = 0, X_eval: torch.Tensor | None = None, eval_every: int = 250,
              seed: int = 0) -> dict[str, list[float]]:
    """Adam for exactly ``steps`` minibatch steps on −ELBO (with ``beta`` on the KL, ramped up linearly from 0
    over the first ``kl_warmup`` steps — a warm-up that lets the decoder learn to use z before the KL squeezes
    it). History: per-step "loss", "recon", "kl"; with X_eval also "eval_step" and "eval_elbo" (the β=1 ELBO,
    so runs with different β compare)."""
    gen = torch.Generator().manual_seed(seed)
    torch.manual_seed(seed)                     # the ε of every reparameterized sample
    opt = torch.optim.Adam(model.parameters(), lr=lr)
    hist: dict[str, list[float]] = {"loss": [], "recon": [], "kl": [], "eval_step": [], "eval_elbo": []}

    def log_eval(step: int) -> None:
        if X_eval is not None:
            hist["eval_step"].append(step)
            hist["eval_elbo"].append(evaluate_elbo(model, X_eval, objective)["elbo"])

    log_eval(0)
    for step in range(1, steps + 1):
        xb = X[torch.randint(len(X), (batch_size,), generator=gen)]
        b = beta * min(1.0, step / kl_warmup) if kl_warmup else beta
        loss, recon, kl = objective(model, xb, beta=b, elbo=elbo)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        hist["loss"].append(loss.item())
        hist["recon"].append(recon.item())
        hist["kl"].append(kl.item())
        if step % eval_every == 0 or step == steps:
            log_eval(step)
    return hist


def train_autoencoder(model: Autoencoder, X: torch.Tensor, steps: int = 2000, batch_size: int = 128,
                      lr: float = 2e-3, seed: int = 0) -> list[float]:
    """Adam on the reconstruction alone (BCE summed over pixels, mean over the batch). Returns the losses."""
    gen = torch.Generator().manual_seed(seed)
    torch.manual_seed(seed)
    opt = torch.optim.Adam(model.parameters(), lr=lr)
    losses = []
    for _ in range(steps):
        xb = X[torch.randint(len(X), (batch_size,), generator=gen)]
        loss = F.binary_cross_entropy_with_logits(model(xb), xb, reduction="none").flatten(1).sum(1).mean()
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        losses.append(loss.item())
    return losses


# ---------------------------------------------------------------------------------------- Monte-Carlo checks
def kl_monte_carlo(mu: torch.Tensor, logvar: torch.Tensor, n: int, seed: int = 0) -> torch.Tensor:
    """Estimate KL(q || N(0, I)) = E_q[log q(z) − log p(z)] from n samples per row. mu, logvar (B, d) -> (B,)."""
    g = torch.Generator().manual_seed(seed)
    std = (0.5 * logvar).exp()
    eps = torch.randn(n, *mu.shape, generator=g)                       # (n, B, d)
    z = mu + std * eps
    log_q = (-0.5 * eps.pow(2) - 0.5 * logvar - 0.5 * math.log(2 * math.pi)).sum(-1)
    log_p = (-0.5 * z.pow(2) - 0.5 * math.log(2 * math.pi)).sum(-1)
    return (log_q - log_p).mean(0)


@torch.no_grad()
def iwae_bound(model: VAE, x: torch.Tensor, k: int, seed: int = 0) -> torch.Tensor:
    """log (1/k) Σ_i p(x, z_i) / q(z_i|x), z_i ~ q(z|x): a lower bound on log p(x) that tightens with k
    (k = 1 is the ELBO). x (B, 1, 16, 16) -> (B,) nats."""
    g = torch.Generator().manual_seed(seed)
    mu, logvar = model.encode(x)
    std = (0.5 * logvar).exp()
    eps = torch.randn(k, *mu.shape, generator=g)                       # (k, B, d)
    z = mu + std * eps
    logits = model.decode(z.flatten(0, 1)).view(k, len(x), -1)
    log_px_z = -F.binary_cross_entropy_with_logits(logits, x.flatten(1).expand(k, -1, -1), reduction="none").sum(-1)
    log_pz = (-0.5 * z.pow(2) - 0.5 * math.log(2 * math.pi)).sum(-1)
    log_qz = (-0.5 * eps.pow(2) - 0.5 * logvar - 0.5 * math.log(2 * math.pi)).sum(-1)
    return torch.logsumexp(log_px_z + log_pz - log_qz, dim=0) - math.log(k)


# ------------------------------------------------------------------------------------- gradient estimators
def toy_gradient_samples(f: Callable[[torch.Tensor], torch.Tensor], mu: float, sigma: float, n: int,
                         seed: int = 0) -> dict[str, torch.Tensor]:
    """n one-sample estimates of d/dmu E_{z~N(mu, σ²)}[f(z)], three ways (each (n,)):

    * "reparam":  f'(mu + σε)                                     (the path through the sample)
    * "score":    f(z) · d/dmu log N(z; mu, σ²) = f(z)(z − mu)/σ²   (REINFORCE: f is a black box)
    * "score + baseline": (f(z) − b)(z − mu)/σ² with b = the mean of f over the samples
    """
    g = torch.Generator().manual_seed(seed)
    eps = torch.randn(n, generator=g)
    m = torch.full((n,), float(mu), requires_grad=True)               # one copy of mu per sample: per-sample grads
    f(m + sigma * eps).sum().backward()
    z = mu + sigma * eps
    fz = f(z)
    score = (z - mu) / sigma**2
    return {"reparam": m.grad.detach(), "score": (fz * score).detach(),
            "score + baseline": ((fz - fz.mean()) * score).detach()}


def vae_gradient_samples(model: VAE, x: torch.Tensor, n: int, seed: int = 0) -> dict[str, torch.Tensor]:
    """n one-sample estimates of ∇_mu E_{q(z|x)}[−log p(x|z)] for ONE image x (1, 1, 16, 16), (n, d) each:
    the reparameterized gradient (backprop through the decoder) and the score-function one (decoder as black box)."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        mu, logvar = model.encode(x)                                   # (1, d)
    std = (0.5 * logvar).exp()
    eps = torch.randn(n, mu.shape[1], generator=g)
    m = mu.expand(n, -1).clone().requires_grad_(True)                  # (n, d)
    target = x.flatten(1).expand(n, -1)

    def nll(z):                                                        # (n, d) -> (n,)
        return F.binary_cross_entropy_with_logits(model.decode(z), target, reduction="none").sum(1)

    nll(m + std * eps).sum().backward()
    with torch.no_grad():
        f = nll(mu + std * eps)
        score = eps / std                                              # d/dmu log q(z|x) = (z − mu)/σ²
    model.zero_grad(set_to_none=True)
    return {"reparam": m.grad.detach(), "score": f[:, None] * score,
            "score + baseline": (f - f.mean())[:, None] * score}


# -------------------------------------------------------------------------------------------- image helpers
@torch.no_grad()
def sample_images(model: nn.Module, n: int, seed: int = 0, z: torch.Tensor | None = None) -> torch.Tensor:
    """Decode z (default z ~ N(0, I), (n, d)) to images (n, 1, 16, 16) in [0, 1]: the Bernoulli means."""
    if z is None:
        z = torch.randn(n, model.d_latent, generator=torch.Generator().manual_seed(seed))
    return torch.sigmoid(model.decode(z)).view(-1, *IMAGE)


@torch.no_grad()
def encode_all(model: nn.Module, X: torch.Tensor) -> torch.Tensor:
    """The codes of X (N, 1, 16, 16): the AE's z or the VAE's posterior mean mu. Returns (N, d)."""
    out = model.encode(X)
    return out[0] if isinstance(out, tuple) else out


def latent_grid(n: int = 15, span: float = 0.95) -> torch.Tensor:
    """(n², 2) points of a 2-D latent grid placed at Gaussian quantiles (as in Kingma & Welling's figure), so
    equal prior mass lies between neighbours. Row-major: z2 decreasing down the rows, z1 increasing across."""
    q = torch.linspace(0.5 - span / 2, 0.5 + span / 2, n, dtype=torch.float64)
    v = (math.sqrt(2) * torch.erfinv(2 * q - 1)).float()
    z2, z1 = torch.meshgrid(v.flip(0), v, indexing="ij")
    return torch.stack([z1.flatten(), z2.flatten()], 1)


@torch.no_grad()
def interpolate(model: VAE, x_a: torch.Tensor, x_b: torch.Tensor, steps: int = 8) -> tuple[torch.Tensor, torch.Tensor]:
    """Walk from image x_a to x_b (each (1, 16, 16)) in ``steps`` points: (latent path decoded, pixel cross-fade),
    each (steps, 1, 16, 16)."""
    t = torch.linspace(0, 1, steps)[:, None]
    za, zb = encode_all(model, torch.stack([x_a, x_b]))
    latent = sample_images(model, steps, z=(1 - t) * za + t * zb)
    pixels = (1 - t[:, :, None, None]) * x_a + t[:, :, None, None] * x_b
    return latent, pixels


# ------------------------------------------------------------------------------------------------ the widget
@torch.no_grad()
def plot_decoded(model: VAE, codes: torch.Tensor, labels: torch.Tensor, z1: float, z2: float,
                 judge: nn.Module | None = None) -> plt.Figure:
    """Left: the 2-D latent codes of the test set coloured by digit, with the chosen point z = (z1, z2) marked.
    Right: the decoded digit at z (and the judge's verdict if one is given)."""
    if codes.shape[1] != 2:
        raise ValueError(f"plot_decoded needs a 2-D latent space, got codes of shape {tuple(codes.shape)}")
    z = torch.tensor([[float(z1), float(z2)]])
    img = sample_images(model, 1, z=z)
    fig, (ax0, ax1) = plt.subplots(1, 2, figsize=(9, 4), gridspec_kw={"width_ratios": [1.3, 1]})
    sc = ax0.scatter(codes[:, 0].numpy(), codes[:, 1].numpy(), c=labels.numpy(), cmap="tab10", s=4, vmin=-0.5, vmax=9.5)
    fig.colorbar(sc, ax=ax0, ticks=range(10), label="digit")
    ax0.plot([float(z1)], [float(z2)], marker="*", ms=18, c="k", mec="w")
    ax0.set(xlim=(-3.5, 3.5), ylim=(-3.5, 3.5), xlabel="$z_1$", ylabel="$z_2$",
            title="Test digits in latent space (posterior means)")
    ax1.imshow(img[0, 0].numpy(), cmap="gray", vmin=0, vmax=1)
    title = f"decoded at z = ({z1:.1f}, {z2:.1f})"
    if judge is not None:
        p = judge.predict_proba(img)[0]
        k = int(p.argmax())
        title += f"\njudge: {'junk' if k == 10 else k} (p = {p[k]:.2f})"
    ax1.set(title=title, xlabel="pixel column", ylabel="pixel row")
    fig.tight_layout()
    return fig


# ------------------------------------------------------------------------------------------------ registry
EXERCISES = [
    Exercise(
        name="gaussian_kl",
        reference=gaussian_kl,
        cases=_kl_cases,
        mistakes={
            "forgot the factor 1/2": _kl_no_half,
            "used σ = exp(logvar/2) where σ² = exp(logvar) belongs": _kl_std_for_var,
            "averaged over the latent dimensions instead of summing them": _kl_mean_over_dims,
            "+ logvar instead of − logvar": _kl_sign_of_log,
        },
        hint="Per dimension ½(σ² + μ² − 1 − log σ²) with σ² = logvar.exp() and log σ² = logvar; "
             "sum over the last dim (the latent dims are independent, so their KLs add).",
    ),
    Exercise(
        name="reparameterize",
        reference=reparameterize,
        cases=_reparam_cases,
        runner=_reparam_runner,
        mistakes={
            "used exp(logvar) (the variance) as the standard deviation": _rep_var_as_std,
            "multiplied ε by logvar itself": _rep_logvar_as_std,
            "sampled under torch.no_grad(): no gradient reaches mu and logvar": _rep_no_gradient,
            "ε from torch.rand_like (uniform) instead of torch.randn_like (Gaussian)": _rep_uniform_noise,
        },
        hint="std = torch.exp(0.5 * logvar); eps = torch.randn_like(mu); return mu + std * eps "
             "(draw exactly one randn_like so your ε equals the reference's).",
    ),
    Exercise(
        name="elbo_loss",
        reference=elbo_loss,
        cases=_elbo_cases,
        mistakes={
            "binary cross-entropy averaged over pixels (the default reduction) instead of summed":
                _elbo_mean_over_pixels,
            "applied sigmoid before binary_cross_entropy_with_logits (sigmoid twice)": _elbo_sigmoid_twice,
            "put beta on the reconstruction instead of the KL": _elbo_beta_on_recon,
            "subtracted the KL instead of adding it": _elbo_minus_kl,
        },
        hint="recon = F.binary_cross_entropy_with_logits(x_logits, x, reduction='none').flatten(1).sum(1); "
             "kl = gaussian_kl(mu, logvar); return (recon + beta * kl).mean(), recon.mean(), kl.mean().",
        atol=1e-4, rtol=1e-5,
    ),
]
