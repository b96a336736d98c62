"""Lecture 17 — self-supervised learning: SimCLR (augment, contrast) and MAE (mask, reconstruct), judged by a
linear probe trained on a handful of labels.

Reference solutions and the exercise registry (COURSE_DESIGN §2):

* ``augment``: the SimCLR view pipeline written with torch ops — random-resized crop (``affine_grid`` +
  ``grid_sample``), horizontal flip, brightness/contrast jitter, Gaussian blur (a grouped convolution) — for
  given per-image parameters (``random_augment_params`` draws them, ``augment_pair`` makes two views);
* ``nt_xent``: the NT-Xent / InfoNCE loss over the 2N × 2N cosine-similarity matrix (``nt_xent_loop`` is the
  same thing written one row at a time, to check it against);
* ``patchify`` (and its inverse ``unpatchify``) and ``random_masking``: how MAE cuts an image into patch tokens
  and hides 75 % of them;
* ``mae_loss``: mean squared error on the *masked* patches only.

Beyond the exercises: the encoders (``ConvEncoder``, ``SimCLR``, ``TinyMAE``), the training loops
(``train_simclr``, ``train_mae``, ``train_supervised``), feature extraction and the linear probe
(``features``, ``few_label_indices``, ``linear_probe``), the MAE baselines (``mean_patch_baseline``,
``visible_mean_baseline``), ``alignment_uniformity``, and the plot behind the widget (``plot_mae_reconstruction``).
"""
from __future__ import annotations

import math

import matplotlib.pyplot as plt
import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F

from utils.exercises import Case, Exercise

__all__ = [
    "augment", "random_augment_params", "augment_pair", "gaussian_kernels", "nt_xent", "nt_xent_loop",
    "patchify", "unpatchify", "random_masking", "mae_loss", "ConvEncoder", "SimCLR", "TinyMAE", "train_simclr",
    "train_mae", "train_supervised", "features", "few_label_indices", "linear_probe", "mean_patch_baseline",
    "visible_mean_baseline", "masked_patch_error", "alignment_uniformity", "plot_mae_reconstruction", "EXERCISES",
]


# ------------------------------------------------------------------------------ exercise 1: the augmentations
def gaussian_kernels(sigma: torch.Tensor, size: int = 5) -> torch.Tensor:
    """One normalised 2-D Gaussian kernel per image: sigma (B,) -> (B, 1, size, size), each summing to 1.
    sigma <= 0 gives the identity kernel (a single 1 in the centre): no blur."""
    r = torch.arange(size, dtype=torch.float32) - size // 2
    s = sigma.clamp_min(1e-3)[:, None]                       # (B, 1); a tiny sigma puts all weight in the centre
    g = torch.exp(-r[None] ** 2 / (2 * s ** 2))              # (B, size), separable: 2-D kernel = outer product
    k = g[:, :, None] * g[:, None, :]
    return (k / k.sum((1, 2), keepdim=True))[:, None]        # normalise so blurring keeps the brightness


def augment(x: torch.Tensor, scale: torch.Tensor, angle: torch.Tensor, shift: torch.Tensor, flip: torch.Tensor,
            contrast: torch.Tensor, brightness: torch.Tensor, sigma: torch.Tensor) -> torch.Tensor:
    """The SimCLR pipeline for given per-image parameters. x (B, C, H, W) in [0, 1]; every parameter has B rows.

    1. crop-resize-rotate: output pixel at normalised position u samples the input at ``scale * R(angle) u + shift``
       (``F.affine_grid`` with theta = [[s cos a, -s sin a, shift_x], [s sin a, s cos a, shift_y]],
       ``align_corners=False``, ``F.grid_sample`` bilinear, zero padding): scale < 1 zooms into a crop, ``angle``
       (radians) turns the sampling grid. shift (B, 2) is (x, y).
    2. flip: mirror left-right (the width axis) where ``flip`` (B,) bool is True.
    3. colour jitter: ``x * contrast + brightness``, then clamp to [0, 1].
    4. blur: convolve each image with its own normalised 5×5 Gaussian of std ``sigma`` (``gaussian_kernels``),
       zero padding 2, so the size is unchanged.
    Returns (B, C, H, W).
    """
    B, C, H, W = x.shape
    cos, sin = torch.cos(angle) * scale, torch.sin(angle) * scale
    theta = torch.stack([torch.stack([cos, -sin, shift[:, 0]], 1),
                         torch.stack([sin, cos, shift[:, 1]], 1)], 1)          # (B, 2, 3)
    grid = F.affine_grid(theta, (B, C, H, W), align_corners=False)     # (B, H, W, 2): where each pixel samples
    x = F.grid_sample(x, grid, mode="bilinear", padding_mode="zeros", align_corners=False)
    x = torch.where(flip[:, None, None, None], x.flip(-1), x)          # -1 = width: a mirror image
    x = (x * contrast[:, None, None, None] + brightness[:, None, None, None]).clamp(0, 1)
    # a different kernel per image: fold the batch into channels and use a grouped convolution
    k = gaussian_kernels(sigma).repeat_interleave(C, 0)                # (B*C, 1, 5, 5)
    x = F.conv2d(x.reshape(1, B * C, H, W), k, padding=2, groups=B * C)
    return x.reshape(B, C, H, W)


def _crop(x, scale, angle, shift, sin_sign=1.0):
    # the crop-resize-rotate step shared by the mistakes below (sin_sign=-1: the transposed rotation matrix)
    cos, sin = torch.cos(angle) * scale, sin_sign * torch.sin(angle) * scale
    theta = torch.stack([torch.stack([cos, -sin, shift[:, 0]], 1), torch.stack([sin, cos, shift[:, 1]], 1)], 1)
    return F.grid_sample(x, F.affine_grid(theta, x.shape, align_corners=False), align_corners=False)


def _jitter_blur(x, flip, contrast, brightness, sigma, flip_dim=-1, clamp=True, normalised=True):
    B, C, H, W = x.shape
    x = torch.where(flip[:, None, None, None], x.flip(flip_dim), x)
    x = x * contrast[:, None, None, None] + brightness[:, None, None, None]
    x = x.clamp(0, 1) if clamp else x
    if normalised:
        k = gaussian_kernels(sigma)
    else:
        r = torch.arange(5, dtype=torch.float32) - 2
        g = torch.exp(-r[None] ** 2 / (2 * sigma.clamp_min(1e-3)[:, None] ** 2))
        k = (g[:, :, None] * g[:, None, :])[:, None]                       # not divided by its sum
    return F.conv2d(x.reshape(1, B * C, H, W), k.repeat_interleave(C, 0), padding=2, groups=B * C).reshape(B, C, H, W)


def _augment_vertical_flip(x, scale, angle, shift, flip, contrast, brightness, sigma):
    return _jitter_blur(_crop(x, scale, angle, shift), flip, contrast, brightness, sigma, flip_dim=-2)


def _augment_inverse_scale(x, scale, angle, shift, flip, contrast, brightness, sigma):
    return augment(x, 1 / scale, angle, shift, flip, contrast, brightness, sigma)


def _augment_transposed_rotation(x, scale, angle, shift, flip, contrast, brightness, sigma):
    return _jitter_blur(_crop(x, scale, angle, shift, sin_sign=-1.0), flip, contrast, brightness, sigma)


def _augment_no_clamp(x, scale, angle, shift, flip, contrast, brightness, sigma):
    return _jitter_blur(_crop(x, scale, angle, shift), flip, contrast, brightness, sigma, clamp=False)


def _augment_unnormalised_blur(x, scale, angle, shift, flip, contrast, brightness, sigma):
    return _jitter_blur(_crop(x, scale, angle, shift), flip, contrast, brightness, sigma, normalised=False)


def random_augment_params(B: int, gen: torch.Generator | None = None, min_scale: float = 0.75,
                          max_degrees: float = 20.0, max_shift: float = 0.2, flip_p: float = 0.0,
                          jitter: float = 0.4, blur_p: float = 0.5, max_sigma: float = 1.0) -> dict[str, torch.Tensor]:
    """Draw the parameters of ``augment`` for B images (keyword names match its arguments).

    The crop keeps a fraction scale² ∈ [min_scale², 1] of the area and turns by up to ±max_degrees;
    contrast ∈ [1 - jitter, 1 + jitter], brightness ∈ [-jitter/2, jitter/2]; half the images get a blur of
    std ∈ [0.3, max_sigma]. ``flip_p`` defaults to 0 for digits: a mirrored 2 is not a 2 (on photos SimCLR
    uses 0.5). Small rotations replace the flip as the geometric invariance a digit really has.
    """
    def u(lo: float, hi: float, *shape: int) -> torch.Tensor:
        return lo + (hi - lo) * torch.rand(*(shape or (B,)), generator=gen)

    blur = torch.rand(B, generator=gen) < blur_p
    return {"scale": u(min_scale, 1.0), "angle": u(-1.0, 1.0) * math.radians(max_degrees),
            "shift": u(-max_shift, max_shift, B, 2), "flip": torch.rand(B, generator=gen) < flip_p,
            "contrast": u(1 - jitter, 1 + jitter), "brightness": u(-jitter / 2, jitter / 2),
            "sigma": torch.where(blur, u(0.3, max_sigma), torch.zeros(B))}


def augment_pair(x: torch.Tensor, gen: torch.Generator | None = None, aug=None,
                 **strength) -> tuple[torch.Tensor, torch.Tensor]:
    """Two independent random views of every image: x (B, C, H, W) -> (view1, view2), each (B, C, H, W).
    ``aug``: the augment function to use (default: ``augment``); ``strength``: passed to random_augment_params."""
    aug = aug or augment
    return (aug(x, **random_augment_params(len(x), gen, **strength)),
            aug(x, **random_augment_params(len(x), gen, **strength)))


def _augment_cases() -> list[Case]:
    g = torch.Generator().manual_seed(0)
    x = torch.rand(4, 1, 12, 12, generator=g)
    rgb = torch.rand(3, 3, 10, 8, generator=g)
    p = random_augment_params(4, g, flip_p=0.5)
    p["flip"] = torch.tensor([True, False, True, False])
    q = random_augment_params(3, g, flip_p=0.5, jitter=0.8)
    q["flip"] = torch.tensor([False, True, True])
    identity = {"scale": torch.ones(2), "angle": torch.zeros(2), "shift": torch.zeros(2, 2),
                "flip": torch.zeros(2, dtype=torch.bool), "contrast": torch.ones(2), "brightness": torch.zeros(2),
                "sigma": torch.zeros(2)}
    return [
        Case((x[:2],), identity, label="identity parameters: the image comes back unchanged"),
        Case((x,), p, label="4 grey 12×12 images, random parameters, two flipped"),
        Case((rgb,), q, label="3 RGB 10×8 images, strong jitter"),
        Case((x[:1],), {"scale": torch.tensor([0.5]), "angle": torch.tensor([0.0]),
                        "shift": torch.tensor([[0.3, -0.2]]), "flip": torch.tensor([True]), "contrast": torch.ones(1),
                        "brightness": torch.tensor([0.0]), "sigma": torch.tensor([0.0])},
             label="zoom ×2 into the right upper part, flipped, no jitter or blur"),
        Case((x[:2],), {"scale": torch.tensor([1.0, 0.8]), "angle": torch.tensor([0.0, 0.3]),
                        "shift": torch.zeros(2, 2), "flip": torch.zeros(2, dtype=torch.bool),
                        "contrast": torch.tensor([1.8, 1.0]), "brightness": torch.tensor([0.3, 0.0]),
                        "sigma": torch.tensor([0.0, 1.5])},
             label="jitter only (image 0); zoom, turn by 0.3 rad and blur (image 1)"),
    ]


# --------------------------------------------------------------------------------- exercise 2: NT-Xent loss
def nt_xent(z1: torch.Tensor, z2: torch.Tensor, temperature: float = 0.5) -> torch.Tensor:
    """NT-Xent (normalised temperature-scaled cross-entropy), the SimCLR loss.

    z1, z2: (N, D) projections of two views of the same N images (row i of z1 and row i of z2 are a positive
    pair). L2-normalise, stack to z (2N, D), similarities s = z zᵀ / temperature (2N, 2N); an example is never
    its own negative (set the diagonal to -inf); the target of row i is its partner (i + N) mod 2N.
    Returns the mean cross-entropy over all 2N rows (0-dim tensor).
    """
    N = len(z1)
    z = F.normalize(torch.cat([z1, z2]), dim=1)                       # (2N, D) on the unit sphere: cosine sims
    sim = z @ z.T / temperature                                       # (2N, 2N)
    sim = sim.masked_fill(torch.eye(2 * N, dtype=torch.bool), float("-inf"))  # exp(-inf) = 0: not a negative
    targets = (torch.arange(2 * N) + N) % (2 * N)                     # row i's positive is its other view
    return F.cross_entropy(sim, targets)


def nt_xent_loop(z1: torch.Tensor, z2: torch.Tensor, temperature: float = 0.5) -> torch.Tensor:
    """The same loss, one anchor at a time, exactly as written in the SimCLR paper:
    ℓ(i, j) = -log exp(sim(i, j)/τ) / Σ_{k≠i} exp(sim(i, k)/τ), averaged over all 2N anchors."""
    z = torch.cat([z1, z2])
    N2 = len(z)
    total = torch.zeros(())
    for i in range(N2):
        j = (i + N2 // 2) % N2
        sims = torch.stack([F.cosine_similarity(z[i], z[k], dim=0) / temperature for k in range(N2) if k != i])
        positive = F.cosine_similarity(z[i], z[j], dim=0) / temperature
        total = total - (positive - torch.logsumexp(sims, 0))
    return total / N2


def _nt_xent_no_normalise(z1, z2, temperature=0.5):
    N = len(z1)
    z = torch.cat([z1, z2])
    sim = (z @ z.T / temperature).masked_fill(torch.eye(2 * N, dtype=torch.bool), float("-inf"))
    return F.cross_entropy(sim, (torch.arange(2 * N) + N) % (2 * N))


def _nt_xent_no_diagonal_mask(z1, z2, temperature=0.5):
    N = len(z1)
    z = F.normalize(torch.cat([z1, z2]), dim=1)
    return F.cross_entropy(z @ z.T / temperature, (torch.arange(2 * N) + N) % (2 * N))


def _nt_xent_times_temperature(z1, z2, temperature=0.5):
    N = len(z1)
    z = F.normalize(torch.cat([z1, z2]), dim=1)
    sim = (z @ z.T * temperature).masked_fill(torch.eye(2 * N, dtype=torch.bool), float("-inf"))
    return F.cross_entropy(sim, (torch.arange(2 * N) + N) % (2 * N))


def _nt_xent_cross_view_only(z1, z2, temperature=0.5):
    # the CLIP-style loss: negatives only from the other view (N × N), one direction
    z1, z2 = F.normalize(z1, dim=1), F.normalize(z2, dim=1)
    return F.cross_entropy(z1 @ z2.T / temperature, torch.arange(len(z1)))


def _nt_xent_cases() -> list[Case]:
    g = torch.Generator().manual_seed(2)

    def r(*shape):
        return torch.randn(*shape, generator=g)

    a = r(6, 8)
    return [
        Case((r(4, 8), r(4, 8)), label="N=4 pairs, D=8, temperature 0.5 (default)"),
        Case((a, a + 0.1 * r(6, 8)), {"temperature": 0.1}, label="near-identical views, temperature 0.1"),
        Case((3 * r(5, 3), r(5, 3)), {"temperature": 1.0}, label="unnormalised inputs of different norms, tau 1"),
        Case((r(1, 4), r(1, 4)), {"temperature": 0.2}, label="N=1: a single pair has no negatives"),
    ]


# ------------------------------------------------------------------------ exercise 3: patchify and masking
def patchify(x: torch.Tensor, p: int) -> torch.Tensor:
    """Cut images into non-overlapping p×p patches, row by row. x (B, C, H, W) with H, W divisible by p.
    Returns (B, L, p*p*C) with L = (H/p)(W/p); patch l = (row l // (W/p), column l % (W/p)); inside a patch the
    values are ordered (pixel row, pixel column, channel) — the layout of the MAE code."""
    B, C, H, W = x.shape
    if H % p or W % p:
        raise ValueError(f"image size {H}×{W} is not divisible by the patch size {p}")
    h, w = H // p, W // p
    x = x.reshape(B, C, h, p, w, p)                     # split each axis into (which patch, where inside it)
    x = x.permute(0, 2, 4, 3, 5, 1)                     # (B, h, w, p, p, C): patch grid first, contents last
    return x.reshape(B, h * w, p * p * C)


def unpatchify(tokens: torch.Tensor, p: int, C: int = 1) -> torch.Tensor:
    """The inverse of ``patchify``: (B, L, p*p*C) with L a square number -> (B, C, H, W), H = W = sqrt(L) p."""
    B, L, _ = tokens.shape
    h = int(math.isqrt(L))
    return tokens.reshape(B, h, h, p, p, C).permute(0, 5, 1, 3, 2, 4).reshape(B, C, h * p, h * p)


def _patchify_plain_reshape(x, p):
    B, C, H, W = x.shape
    return x.reshape(B, (H // p) * (W // p), p * p * C)


def _patchify_channel_first(x, p):
    B, C, H, W = x.shape
    return x.reshape(B, C, H // p, p, W // p, p).permute(0, 2, 4, 1, 3, 5).reshape(B, -1, p * p * C)


def _patchify_column_major(x, p):
    B, C, H, W = x.shape
    return x.reshape(B, C, H // p, p, W // p, p).permute(0, 4, 2, 3, 5, 1).reshape(B, -1, p * p * C)


def random_masking(B: int, L: int, mask_ratio: float,
                   gen: torch.Generator | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """MAE's per-image random masking. Draw noise = torch.rand(B, L, generator=gen) (one draw, nothing else
    random); keep the n_keep = int(L * (1 - mask_ratio)) patches with the *lowest* noise.

    Returns ids_keep (B, n_keep) int64, the kept patch indices in increasing-noise order, and mask (B, L) float:
    1 = masked (hidden from the encoder, to be reconstructed), 0 = visible.
    """
    n_keep = int(L * (1 - mask_ratio))
    noise = torch.rand(B, L, generator=gen)
    ids_keep = noise.argsort(dim=1)[:, :n_keep]           # a random permutation per image; its first n_keep
    mask = torch.ones(B, L)
    mask.scatter_(1, ids_keep, 0.0)                        # visible patches get 0
    return ids_keep, mask


def _masking_inverted(B, L, mask_ratio, gen=None):
    ids_keep, mask = random_masking(B, L, mask_ratio, gen)
    return ids_keep, 1 - mask


def _masking_keeps_ratio(B, L, mask_ratio, gen=None):
    n_keep = int(L * mask_ratio)                           # kept the mask ratio instead of masking it
    ids_keep = torch.rand(B, L, generator=gen).argsort(1)[:, :n_keep]
    return ids_keep, torch.ones(B, L).scatter_(1, ids_keep, 0.0)


def _masking_highest_noise(B, L, mask_ratio, gen=None):
    n_keep = int(L * (1 - mask_ratio))
    ids_keep = torch.rand(B, L, generator=gen).argsort(1, descending=True)[:, :n_keep]
    return ids_keep, torch.ones(B, L).scatter_(1, ids_keep, 0.0)


def _masking_same_for_batch(B, L, mask_ratio, gen=None):
    n_keep = int(L * (1 - mask_ratio))
    ids_keep = torch.rand(B, L, generator=gen)[:1].argsort(1)[:, :n_keep].expand(B, -1)  # one mask for all
    return ids_keep, torch.ones(B, L).scatter_(1, ids_keep, 0.0)


# ------------------------------------------------------------------------------------- exercise 4: MAE loss
def mae_loss(pred: torch.Tensor, target: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """pred, target: (B, L, P) patch pixels; mask (B, L): 1 = masked. The mean over the P pixels of each patch
    of the squared error, then the mean over the *masked* patches only (visible ones were given to the
    encoder — reconstructing them is copying). Returns a 0-dim tensor."""
    per_patch = ((pred - target) ** 2).mean(dim=-1)       # (B, L)
    return (per_patch * mask).sum() / mask.sum()


def _mae_loss_all_patches(pred, target, mask):
    return ((pred - target) ** 2).mean()


def _mae_loss_visible(pred, target, mask):
    per_patch = ((pred - target) ** 2).mean(-1)
    return (per_patch * (1 - mask)).sum() / (1 - mask).sum()


def _mae_loss_divided_by_all(pred, target, mask):
    per_patch = ((pred - target) ** 2).mean(-1)
    return (per_patch * mask).sum() / mask.numel()          # masked errors, but averaged over every patch


def _mae_loss_summed_pixels(pred, target, mask):
    per_patch = ((pred - target) ** 2).sum(-1)
    return (per_patch * mask).sum() / mask.sum()


def _mae_loss_cases() -> list[Case]:
    g = torch.Generator().manual_seed(3)
    pred, target = torch.randn(2, 6, 4, generator=g), torch.randn(2, 6, 4, generator=g)
    mask = torch.tensor([[1.0, 1, 0, 1, 0, 1], [0, 1, 1, 1, 0, 1]])
    _, mask2 = random_masking(3, 16, 0.75, torch.Generator().manual_seed(4))
    return [
        Case((pred, target, mask), label="B=2, L=6, P=4, 4 masked per image"),
        Case((torch.randn(3, 16, 9, generator=g), torch.rand(3, 16, 9, generator=g), mask2),
             label="B=3, L=16, 75 % masked"),
        Case((torch.zeros(1, 4, 2), torch.tensor([[[1.0, 1], [2, 2], [0, 0], [3, 3]]]),
              torch.tensor([[1.0, 0, 0, 1]])), label="by hand: errors 1, 4, 0, 9 per pixel; patches 0 and 3 masked"),
    ]


# ------------------------------------------------------------------------------------------------ encoders
class ConvEncoder(nn.Module):
    """(B, 1, 16, 16) -> (B, width*4) features: three conv-BN-ReLU stages (16 -> 8 -> 4 -> global average)."""

    def __init__(self, width: int = 32):
        super().__init__()

        def stage(c_in: int, c_out: int) -> nn.Sequential:
            return nn.Sequential(nn.Conv2d(c_in, c_out, 3, padding=1), nn.BatchNorm2d(c_out), nn.ReLU())

        self.net = nn.Sequential(stage(1, width), nn.MaxPool2d(2), stage(width, 2 * width), nn.MaxPool2d(2),
                                 stage(2 * width, 4 * width), nn.AdaptiveAvgPool2d(1), nn.Flatten())
        self.dim = 4 * width

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)


class SimCLR(nn.Module):
    """Encoder f (what we keep) + projection head g (a 2-layer MLP the loss sees; thrown away after training).
    forward(x (B, 1, H, W)) -> z (B, proj_dim)."""

    def __init__(self, width: int = 32, proj_dim: int = 64):
        super().__init__()
        self.encoder = ConvEncoder(width)
        d = self.encoder.dim
        self.head = nn.Sequential(nn.Linear(d, d), nn.ReLU(), nn.Linear(d, proj_dim))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.encoder(x))


def train_simclr(X: torch.Tensor, steps: int = 500, batch_size: int = 256, temperature: float = 0.2,
                 lr: float = 2e-3, width: int = 32, seed: int = 0, loss_fn=None, aug=None,
                 log_every: int = 0) -> tuple[SimCLR, list[float]]:
    """Train a SimCLR model on unlabelled images X (N, 1, H, W) for exactly ``steps`` steps (AdamW, cosine LR).
    Every step: a random batch, two augmented views, NT-Xent. Returns the model (eval mode) and the losses."""
    loss_fn, aug = loss_fn or nt_xent, aug or augment
    torch.manual_seed(seed)
    model = SimCLR(width)
    opt = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=1e-4)
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, steps)
    gen = torch.Generator().manual_seed(seed + 1)
    losses = []
    model.train()
    for step in range(steps):
        xb = X[torch.randint(0, len(X), (batch_size,), generator=gen)]
        v1, v2 = augment_pair(xb, gen, aug)
        loss = loss_fn(model(v1), model(v2), temperature)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        sched.step()
        losses.append(loss.item())
        if log_every and (step + 1) % log_every == 0:
            print(f"step {step + 1:4d}  NT-Xent {np.mean(losses[-log_every:]):.3f}")
    return model.eval(), losses


def train_supervised(X: torch.Tensor, y: torch.Tensor, steps: int = 300, batch_size: int = 64, lr: float = 2e-3,
                     width: int = 32, seed: int = 0, augmented: bool = True) -> ConvEncoder:
    """The same encoder + a linear classifier trained end to end with labels (cross-entropy, AdamW, optionally on
    augmented images so it gets the same invariances as SimCLR). Returns the encoder (eval mode)."""
    torch.manual_seed(seed)
    encoder = ConvEncoder(width)
    model = nn.Sequential(encoder, nn.Linear(encoder.dim, int(y.max()) + 1))
    opt = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=1e-4)
    gen = torch.Generator().manual_seed(seed + 1)
    model.train()
    for _ in range(steps):
        idx = torch.randint(0, len(X), (min(batch_size, len(X)),), generator=gen)
        xb = augment(X[idx], **random_augment_params(len(idx), gen)) if augmented else X[idx]
        loss = F.cross_entropy(model(xb), y[idx])
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
    return encoder.eval()


@torch.no_grad()
def features(encoder: nn.Module, X: torch.Tensor, batch_size: int = 1000) -> torch.Tensor:
    """Frozen features of X (N, ...) in eval mode: (N, D). ``nn.Flatten()`` gives the raw-pixel baseline."""
    was = encoder.training
    encoder.eval()
    out = torch.cat([encoder(X[i:i + batch_size]) for i in range(0, len(X), batch_size)])
    encoder.train(was)
    return out


def few_label_indices(y: torch.Tensor, per_class: int, seed: int = 0) -> torch.Tensor:
    """``per_class`` random indices of every class (the labelled few): (n_classes * per_class,) int64."""
    gen = torch.Generator().manual_seed(seed)
    idx = [torch.nonzero(y == c).flatten() for c in range(int(y.max()) + 1)]
    return torch.cat([i[torch.randperm(len(i), generator=gen)[:per_class]] for i in idx])


def linear_probe(train_feats: torch.Tensor, train_y: torch.Tensor, test_feats: torch.Tensor, test_y: torch.Tensor,
                 steps: int = 300, weight_decay: float = 1e-3) -> float:
    """Logistic regression on frozen features: standardise with the *training* statistics, full-batch L-BFGS on
    cross-entropy + L2, ``steps`` iterations. Returns the test accuracy. (N, D) features, (N,) labels."""
    mu, sd = train_feats.mean(0), train_feats.std(0) + 1e-6
    a, b = (train_feats - mu) / sd, (test_feats - mu) / sd
    torch.manual_seed(0)
    clf = nn.Linear(a.shape[1], int(train_y.max()) + 1)
    opt = torch.optim.LBFGS(clf.parameters(), lr=1, max_iter=steps, line_search_fn="strong_wolfe")

    def closure() -> torch.Tensor:
        opt.zero_grad()
        loss = F.cross_entropy(clf(a), train_y) + weight_decay * clf.weight.pow(2).sum()
        loss.backward()
        return loss

    opt.step(closure)
    with torch.no_grad():
        return (clf(b).argmax(1) == test_y).float().mean().item()


def alignment_uniformity(z1: torch.Tensor, z2: torch.Tensor, t: float = 2.0) -> tuple[float, float]:
    """Wang & Isola (2020): alignment = E ||f(x) - f(x')||² over positive pairs (lower = views agree);
    uniformity = log E exp(-t ||f(x) - f(y)||²) over all pairs (lower = spread over the sphere). z (N, D)."""
    z1, z2 = F.normalize(z1, dim=1), F.normalize(z2, dim=1)
    align = (z1 - z2).pow(2).sum(1).mean().item()
    uniform = torch.pdist(z1).pow(2).mul(-t).exp().mean().log().item()
    return align, uniform


# ---------------------------------------------------------------------------------------------------- MAE
class TinyMAE(nn.Module):
    """A tiny masked autoencoder on (B, 1, 16, 16) images with 4×4 patches (L = 16 tokens of 16 pixels).

    Encoder: linear patch embedding + learned positions, ``depth`` Transformer layers, on the VISIBLE tokens only.
    Decoder: a narrower Transformer on all L positions — encoded visible tokens put back in place, a shared
    learned [MASK] token elsewhere, positions added again — then a linear layer to p*p pixels per token.
    """

    def __init__(self, img: int = 16, p: int = 4, dim: int = 64, depth: int = 2, heads: int = 4,
                 dec_dim: int = 48, dec_depth: int = 1):
        super().__init__()
        self.p, self.L = p, (img // p) ** 2

        def layers(d: int, n: int) -> nn.TransformerEncoder:
            layer = nn.TransformerEncoderLayer(d, heads, 2 * d, dropout=0.0, batch_first=True, norm_first=True)
            return nn.TransformerEncoder(layer, n, enable_nested_tensor=False)

        self.embed = nn.Linear(p * p, dim)
        self.pos = nn.Parameter(0.02 * torch.randn(1, self.L, dim))
        self.encoder, self.norm = layers(dim, depth), nn.LayerNorm(dim)
        self.to_dec = nn.Linear(dim, dec_dim)
        self.mask_token = nn.Parameter(torch.zeros(1, 1, dec_dim))
        self.dec_pos = nn.Parameter(0.02 * torch.randn(1, self.L, dec_dim))
        self.decoder = layers(dec_dim, dec_depth)
        self.out = nn.Linear(dec_dim, p * p)

    def encode(self, x: torch.Tensor, ids_keep: torch.Tensor | None = None) -> torch.Tensor:
        """x (B, 1, H, W) -> encoded tokens (B, K, dim) of the kept patches (all L when ids_keep is None)."""
        tokens = self.embed(patchify(x, self.p)) + self.pos                       # (B, L, dim)
        if ids_keep is not None:                                                  # drop the masked tokens:
            tokens = tokens.gather(1, ids_keep[..., None].expand(-1, -1, tokens.shape[-1]))  # the encoder is cheap
        return self.norm(self.encoder(tokens))

    def forward(self, x: torch.Tensor, mask_ratio: float = 0.75,
                gen: torch.Generator | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """x (B, 1, H, W) -> predicted patches (B, L, p*p) and the mask (B, L) (1 = masked)."""
        ids_keep, mask = random_masking(len(x), self.L, mask_ratio, gen)
        enc = self.to_dec(self.encode(x, ids_keep))                               # (B, K, dec_dim)
        full = self.mask_token.expand(len(x), self.L, -1).clone()                 # [MASK] everywhere ...
        full = full.scatter(1, ids_keep[..., None].expand(-1, -1, enc.shape[-1]), enc)  # ... but the visible ones
        return self.out(self.decoder(full + self.dec_pos)), mask

    @torch.no_grad()
    def features(self, x: torch.Tensor) -> torch.Tensor:
        """Probe features: the encoded tokens of the whole (unmasked) image, concatenated in patch order,
        (B, L * dim). (Averaging them would throw away *where* each stroke is — and for digits that is the class.)"""
        return self.encode(x).flatten(1)


def train_mae(X: torch.Tensor, steps: int = 800, batch_size: int = 128, mask_ratio: float = 0.75, lr: float = 2e-3,
              seed: int = 0, log_every: int = 0, **kwargs) -> tuple[TinyMAE, list[float]]:
    """Train a TinyMAE on unlabelled X (N, 1, 16, 16) for exactly ``steps`` steps (AdamW, 50-step warm-up, cosine).
    Returns the model (eval mode) and the masked-patch losses."""
    torch.manual_seed(seed)
    model = TinyMAE(**kwargs)
    opt = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=0.05, betas=(0.9, 0.95))
    gen = torch.Generator().manual_seed(seed + 1)
    losses = []
    model.train()
    for step in range(steps):
        for group in opt.param_groups:
            group["lr"] = lr * min(1.0, (step + 1) / 50) * 0.5 * (1 + math.cos(math.pi * step / steps))
        xb = X[torch.randint(0, len(X), (batch_size,), generator=gen)]
        pred, mask = model(xb, mask_ratio, gen)
        loss = mae_loss(pred, patchify(xb, model.p), mask)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        losses.append(loss.item())
        if log_every and (step + 1) % log_every == 0:
            print(f"step {step + 1:4d}  masked-patch MSE {np.mean(losses[-log_every:]):.4f}")
    return model.eval(), losses


def masked_patch_error(pred: torch.Tensor, target: torch.Tensor, mask: torch.Tensor) -> float:
    """Mean squared error per pixel over the masked patches (the MAE loss as a float)."""
    return mae_loss(pred, target, mask).item()


def mean_patch_baseline(train_patches: torch.Tensor, n: int) -> torch.Tensor:
    """Predict every patch as the training set's mean patch *at that position*: (N, L, P) -> (n, L, P)."""
    return train_patches.mean(0, keepdim=True).expand(n, -1, -1)


def visible_mean_baseline(patches: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Predict every pixel of a masked patch as the mean pixel of the image's own visible patches.
    patches (B, L, P), mask (B, L) -> (B, L, P)."""
    visible = 1 - mask
    mean = (patches.mean(-1) * visible).sum(1) / visible.sum(1).clamp_min(1)   # (B,)
    return mean[:, None, None].expand_as(patches)


@torch.no_grad()
def plot_mae_reconstruction(model: TinyMAE, images: torch.Tensor, mask_ratio: float = 0.75,
                            seed: int = 0) -> plt.Figure:
    """Rows: original, what the encoder sees (masked patches grey), reconstruction (visible patches pasted back),
    raw prediction. images (n, 1, 16, 16); one fixed random mask per seed. Titles carry the masked-patch MSE."""
    model.eval()
    gen = torch.Generator().manual_seed(seed)
    pred, mask = model(images, mask_ratio, gen)
    target = patchify(images, model.p)
    m = mask[..., None]
    seen = unpatchify(target * (1 - m) + 0.5 * m, model.p)
    pasted = unpatchify(target * (1 - m) + pred * m, model.p)
    raw = unpatchify(pred, model.p)
    err = ((pred - target) ** 2).mean(-1)
    per_image = ((err * mask).sum(1) / mask.sum(1).clamp_min(1)).tolist()
    n = len(images)
    fig, axes = plt.subplots(4, n, figsize=(1.25 * n, 5.4), squeeze=False)
    rows = [(images, "original"), (seen, "encoder sees"), (pasted, "visible + predicted"), (raw, "raw prediction")]
    for r, (imgs, name) in enumerate(rows):
        for i in range(n):
            ax = axes[r, i]
            ax.imshow(imgs[i, 0].clamp(0, 1).numpy(), cmap="gray", vmin=0, vmax=1)
            ax.set(xticks=[], yticks=[])
            if r == 2:
                ax.set_title(f"MSE {per_image[i]:.3f}", fontsize=7)
        axes[r, 0].set_ylabel(name, fontsize=8)
    n_masked = int(mask[0].sum())
    fig.suptitle(f"MAE reconstructions: {n_masked} of {model.L} patches masked (ratio {mask_ratio:.2f}); "
                 f"mean masked-patch MSE {np.mean(per_image):.3f}", fontsize=10)
    fig.supxlabel("held-out images", fontsize=8)
    fig.tight_layout()
    return fig


# ------------------------------------------------------------------------------------------------ registry
EXERCISES = [
    Exercise(
        name="augment",
        reference=augment,
        cases=_augment_cases,
        mistakes={
            "flipped upside down (dim -2) instead of left-right (dim -1)": _augment_vertical_flip,
            "used 1/scale in the affine matrix: zooms out instead of into a crop": _augment_inverse_scale,
            "rotation matrix transposed (the -sin in the wrong row): turns the other way": _augment_transposed_rotation,
            "forgot to clamp to [0, 1] after the colour jitter": _augment_no_clamp,
            "blur kernel not normalised to sum 1 (the image gets brighter)": _augment_unnormalised_blur,
        },
        hint="c, s = scale * cos(angle), scale * sin(angle); theta = stack of rows [c, -s, shift_x], [s, c, shift_y] "
             "(B, 2, 3); "
             "grid_sample(x, affine_grid(theta, x.shape, align_corners=False), align_corners=False); "
             "torch.where(flip[:, None, None, None], x.flip(-1), x); (x * c + b).clamp(0, 1); "
             "conv2d(x.reshape(1, B*C, H, W), gaussian_kernels(sigma).repeat_interleave(C, 0), padding=2, groups=B*C).",
        atol=1e-5, rtol=1e-4,
    ),
    Exercise(
        name="nt_xent",
        reference=nt_xent,
        cases=_nt_xent_cases,
        mistakes={
            "forgot to L2-normalise (dot products, not cosine similarities)": _nt_xent_no_normalise,
            "did not mask the diagonal: each example counts itself as a negative": _nt_xent_no_diagonal_mask,
            "multiplied by the temperature instead of dividing": _nt_xent_times_temperature,
            "negatives only from the other view (N × N, one direction, as in CLIP)": _nt_xent_cross_view_only,
        },
        hint="z = F.normalize(torch.cat([z1, z2]), dim=1); sim = z @ z.T / temperature; "
             "sim.masked_fill(torch.eye(2N, dtype=bool), -inf); F.cross_entropy(sim, (arange(2N) + N) % 2N).",
        atol=1e-5, rtol=1e-5,
    ),
    Exercise(
        name="patchify",
        reference=patchify,
        cases=lambda: [
            Case((torch.arange(16.0).reshape(1, 1, 4, 4), 2), label="by hand: a 4×4 image of 0..15, 2×2 patches"),
            Case((torch.randn(2, 3, 8, 8, generator=torch.Generator().manual_seed(5)), 4),
                 label="B=2 RGB 8×8, 4×4 patches: values ordered (row, column, channel)"),
            Case((torch.randn(1, 1, 4, 12, generator=torch.Generator().manual_seed(6)), 4),
                 label="a wide 4×12 image: one row of 3 patches"),
            Case((torch.randn(2, 1, 16, 16, generator=torch.Generator().manual_seed(7)), 4),
                 label="the lecture's 16×16 digits, 4×4 patches"),
        ],
        mistakes={
            "a plain reshape without permuting: patches are not square": _patchify_plain_reshape,
            "channel first inside a patch (C, p, p) instead of (p, p, C)": _patchify_channel_first,
            "patches listed column by column instead of row by row": _patchify_column_major,
        },
        hint="x.reshape(B, C, H//p, p, W//p, p).permute(0, 2, 4, 3, 5, 1).reshape(B, (H//p)*(W//p), p*p*C).",
    ),
    Exercise(
        name="random_masking",
        reference=random_masking,
        cases=lambda: [
            Case((2, 16, 0.75), label="B=2, L=16, mask 75 %"),
            Case((3, 7, 0.75), seed=1, label="L=7: int(7 * 0.25) = 1 patch kept"),
            Case((1, 10, 0.0), seed=2, label="mask ratio 0: everything visible"),
            Case((4, 9, 0.5), seed=3, label="B=4, L=9, mask 50 %"),
        ],
        mistakes={
            "mask inverted: 1 marks the visible patches": _masking_inverted,
            "kept mask_ratio of the patches instead of masking it": _masking_keeps_ratio,
            "kept the highest-noise patches (argsort descending)": _masking_highest_noise,
            "one mask shared by the whole batch": _masking_same_for_batch,
        },
        hint="n_keep = int(L * (1 - mask_ratio)); ids_keep = torch.rand(B, L, generator=gen).argsort(1)[:, :n_keep]; "
             "mask = torch.ones(B, L).scatter(1, ids_keep, 0.0).",
    ),
    Exercise(
        name="mae_loss",
        reference=mae_loss,
        cases=_mae_loss_cases,
        mistakes={
            "averaged over all patches, visible ones included": _mae_loss_all_patches,
            "averaged over the visible patches (mask read the wrong way round)": _mae_loss_visible,
            "summed the masked errors but divided by the number of all patches": _mae_loss_divided_by_all,
            "summed over the pixels of a patch instead of averaging": _mae_loss_summed_pixels,
        },
        hint="per_patch = ((pred - target) ** 2).mean(-1)  # (B, L); return (per_patch * mask).sum() / mask.sum().",
    ),
]
