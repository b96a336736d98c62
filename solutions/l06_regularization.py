"""Lecture 06 — regularization: reference solutions and the exercise registry.

Exercises (in lecture order, checked by ``ex.check`` in ``lectures/l06_regularization.ipynb``):

* :func:`dropout`      — inverted dropout, train vs eval; checked by its *statistics* (any correct random mask passes).
* :func:`augment`      — random rotations, whole-pixel shifts and noise with torch ops; checked by *properties*
  (shape, range, shifts within the limit with zeros coming in, rotation angles within the limit, noise level...).
* :class:`BatchNorm1d` — batch statistics in training (running averages updated with momentum, unbiased
  variance), running statistics in eval; same parameter/buffer names as ``nn.BatchNorm1d``.
* :class:`LayerNorm`   — per-example normalisation over the last dims; same names as ``nn.LayerNorm``.

Helpers the notebook uses: :func:`random_features_task` and :func:`random_features` (the double-descent
experiment's data), :class:`DoubleDescent` (SVDs precomputed once, so the widget redraws in milliseconds) and
:func:`plot_double_descent` (the widget's update).
"""
from __future__ import annotations

import copy
import math
from dataclasses import dataclass
from typing import Any, Sequence

import matplotlib.pyplot as plt
import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F

from utils.exercises import Case, Exercise, ExerciseError, run_module

__all__ = [
    "dropout", "augment", "BatchNorm1d", "LayerNorm", "RandomFeaturesTask", "random_features_task",
    "random_features", "DoubleDescent", "plot_double_descent", "EXERCISES",
]


# ===================================================================================== exercise 1: dropout
def dropout(x: torch.Tensor, p: float = 0.5, training: bool = True) -> torch.Tensor:
    """Inverted dropout (Srivastava et al., 2014), as ``F.dropout``.

    x: any shape. In training, zero every entry independently with probability ``p`` and scale the survivors by
    1 / (1 - p), so that E[output] = x; ``p = 1`` drops everything (returns zeros). In eval (``training=False``)
    return x unchanged. Returns a tensor of x's shape, differentiable w.r.t. x.
    """
    if not training or p == 0:
        return x
    if p == 1:
        return x * 0.0  # everything dropped (and no 0/0 from the 1/(1-p) scale)
    keep = (torch.rand_like(x) >= p).to(x.dtype)  # 1 with probability 1 - p, a fresh draw every call
    return x * keep / (1 - p)


def _dropout_no_rescale(x, p=0.5, training=True):
    if not training or p == 0:
        return x
    return x * (torch.rand_like(x) >= p).to(x.dtype)


def _dropout_also_in_eval(x, p=0.5, training=True):
    if p == 0:
        return x
    if p == 1:
        return x * 0.0
    return x * (torch.rand_like(x) >= p).to(x.dtype) / (1 - p)


def _dropout_keeps_with_p(x, p=0.5, training=True):
    if not training or p == 0:
        return x
    if p == 1:
        return x * 0.0
    return x * (torch.rand_like(x) < p).to(x.dtype) / (1 - p)  # keeps with probability p


def _dropout_nan_at_p1(x, p=0.5, training=True):
    if not training:
        return x
    return x * (torch.rand_like(x) >= p).to(x.dtype) / (1 - p)  # p = 1: 0 * inf = NaN


def _dropout_one_mask_per_batch(x, p=0.5, training=True):
    if not training or p == 0:
        return x
    if p == 1:
        return x * 0.0
    keep = (torch.rand(x.shape[-1]) >= p).to(x.dtype)  # one mask over the features, shared by every example
    return x * keep / (1 - p)


def _dropout_cases() -> list[Case]:
    gen = torch.Generator().manual_seed(6)
    x = torch.randn(400, 500, generator=gen) + 0.1  # 200k entries: the zero fraction is p ± 0.001
    x3 = torch.randn(8, 50, 500, generator=gen) + 0.1
    return [
        Case(args=(x,), kwargs=dict(p=0.2, training=True), label="p=0.2, training", seed=1),
        Case(args=(x,), kwargs=dict(p=0.5, training=True), label="p=0.5, training", seed=2),
        Case(args=(x,), kwargs=dict(p=0.5, training=False), label="p=0.5, eval mode (training=False)", seed=3),
        Case(args=(x,), kwargs=dict(p=0.0, training=True), label="p=0: nothing dropped", seed=4),
        Case(args=(x,), kwargs=dict(p=1.0, training=True), label="p=1: everything dropped (zeros, no NaN)", seed=5),
        Case(args=(x3,), kwargs=dict(p=0.3, training=True), label="3-D input (8, 50, 500), p=0.3", seed=6),
    ]


def _run_dropout(impl: Any, case: Case) -> dict[str, Any] | None:
    """Statistics of ``impl``'s output that every correct dropout has (so any random mask passes)."""
    (x,) = copy.deepcopy(case.args)
    p, training = case.kwargs["p"], case.kwargs["training"]
    x = x.clone().requires_grad_(True)
    out = impl(x, p=p, training=training)
    if out is None:
        return None
    if not isinstance(out, torch.Tensor) or out.shape != x.shape:
        return {"output shape": tuple(getattr(out, "shape", ()))}  # compared first: a clear shape message
    if out.requires_grad:  # torch.zeros_like(x) at p = 1 is fine: no graph, zero gradient
        out.sum().backward()
    grad = x.grad if x.grad is not None else torch.zeros_like(x)
    x, out = x.detach(), out.detach()
    scale = 1.0 / (1.0 - p) if (training and p < 1) else 1.0
    kept = out != 0
    zero_frac = 1.0 - kept.float().mean().item()
    again = impl(x.clone(), p=p, training=training).detach()
    random = training and 0 < p < 1
    mask = out.reshape(-1, x.shape[-1]) != 0
    same_as_first_row = (mask == mask[:1]).all(1).float().mean().item()
    ones_out = impl(torch.ones_like(x), p=p, training=training).detach()
    return {
        "output shape": tuple(out.shape),
        "no NaN or inf": bool(torch.isfinite(out).all()),
        "each example gets its own mask": (same_as_first_row < 0.5) if random else True,
        f"fraction of zeros ≈ {p if training else 0} (p in training, 0 in eval)":
            abs(zero_frac - (p if training else 0.0)) < 0.01,
        f"kept entries = x × {scale:g} (1/(1 - p) in training, x itself in eval)":
            bool(torch.allclose(out[kept], x[kept] * scale, rtol=1e-5, atol=1e-6)),
        "mean preserved: dropout(ones) averages 1": abs(ones_out.mean().item() - 1.0) < 0.02 if p < 1 or not training
        else bool((ones_out == 0).all()),
        f"gradient = {scale:g} where kept, 0 where dropped":
            bool(torch.allclose(grad, kept.to(grad.dtype) * scale, rtol=1e-5, atol=1e-6)),
        "a fresh random mask on every call (none in eval or at p = 0 or 1)":
            bool((again != 0).ne(kept).any()) == random,
    }


# ===================================================================================== exercise 2: augment
def augment(x: torch.Tensor, max_shift: int = 2, max_angle: float = 15.0, noise_std: float = 0.05) -> torch.Tensor:
    """Random label-preserving augmentation of a batch of images x: (B, C, H, W) in [0, 1].

    Each image independently: rotated about its centre by an angle uniform in [-max_angle, max_angle] *degrees*,
    shifted by whole pixels (dx, dy), each uniform in {-max_shift, ..., max_shift}, with zeros (background)
    coming in at the border; then Gaussian noise of std ``noise_std`` is added to every pixel and the result
    clamped to [0, 1]. Returns a new (B, C, H, W) tensor; x is not modified.
    """
    B, _, H, W = x.shape
    angle = (torch.rand(B) * 2 - 1) * math.radians(max_angle)  # one angle per image, in radians
    shift = torch.randint(-max_shift, max_shift + 1, (B, 2)).to(x.dtype)  # (dx, dy) per image, whole pixels
    cos, sin = torch.cos(angle), torch.sin(angle)
    # affine_grid maps each OUTPUT pixel to the INPUT location it samples, in [-1, 1] coordinates (one pixel =
    # 2/W): rotating the sampling grid rotates the image, and sampling at -shift moves the image by +shift.
    theta = torch.zeros(B, 2, 3, dtype=x.dtype)
    theta[:, 0, 0], theta[:, 0, 1], theta[:, 0, 2] = cos, -sin, -2 * shift[:, 0] / W
    theta[:, 1, 0], theta[:, 1, 1], theta[:, 1, 2] = sin, cos, -2 * shift[:, 1] / H
    grid = F.affine_grid(theta, [B, x.shape[1], H, W], align_corners=False)
    out = F.grid_sample(x, grid, mode="bilinear", padding_mode="zeros", align_corners=False)
    return (out + noise_std * torch.randn_like(out)).clamp(0, 1)


def _rotate_shift(x, angle, shift, align_grid=False, align_sample=False):
    B, _, H, W = x.shape
    cos, sin = torch.cos(angle), torch.sin(angle)
    theta = torch.zeros(B, 2, 3, dtype=x.dtype)
    theta[:, 0, 0], theta[:, 0, 1], theta[:, 0, 2] = cos, -sin, -2 * shift[:, 0] / W
    theta[:, 1, 0], theta[:, 1, 1], theta[:, 1, 2] = sin, cos, -2 * shift[:, 1] / H
    grid = F.affine_grid(theta, list(x.shape), align_corners=align_grid)
    return F.grid_sample(x, grid, padding_mode="zeros", align_corners=align_sample)


def _augment_one_draw_per_batch(x, max_shift=2, max_angle=15.0, noise_std=0.05):
    B = x.shape[0]
    angle = ((torch.rand(1) * 2 - 1) * math.radians(max_angle)).expand(B)
    shift = torch.randint(-max_shift, max_shift + 1, (1, 2)).to(x.dtype).expand(B, 2)
    return (_rotate_shift(x, angle, shift) + noise_std * torch.randn_like(x)).clamp(0, 1)


def _augment_no_clamp(x, max_shift=2, max_angle=15.0, noise_std=0.05):
    B = x.shape[0]
    angle = (torch.rand(B) * 2 - 1) * math.radians(max_angle)
    shift = torch.randint(-max_shift, max_shift + 1, (B, 2)).to(x.dtype)
    return _rotate_shift(x, angle, shift) + noise_std * torch.randn_like(x)


def _augment_degrees_as_radians(x, max_shift=2, max_angle=15.0, noise_std=0.05):
    B = x.shape[0]
    angle = (torch.rand(B) * 2 - 1) * max_angle  # degrees fed to cos/sin as if they were radians
    shift = torch.randint(-max_shift, max_shift + 1, (B, 2)).to(x.dtype)
    return (_rotate_shift(x, angle, shift) + noise_std * torch.randn_like(x)).clamp(0, 1)


def _augment_roll(x, max_shift=2, max_angle=15.0, noise_std=0.05):
    B = x.shape[0]
    angle = (torch.rand(B) * 2 - 1) * math.radians(max_angle)
    out = _rotate_shift(x, angle, torch.zeros(B, 2, dtype=x.dtype))
    shift = torch.randint(-max_shift, max_shift + 1, (B, 2))
    out = torch.stack([torch.roll(img, (int(dy), int(dx)), dims=(-2, -1)) for img, (dx, dy) in zip(out, shift)])
    return (out + noise_std * torch.randn_like(out)).clamp(0, 1)


def _augment_mismatched_align_corners(x, max_shift=2, max_angle=15.0, noise_std=0.05):
    B = x.shape[0]
    angle = (torch.rand(B) * 2 - 1) * math.radians(max_angle)
    shift = torch.randint(-max_shift, max_shift + 1, (B, 2)).to(x.dtype)
    out = _rotate_shift(x, angle, shift, align_grid=True, align_sample=False)
    return (out + noise_std * torch.randn_like(out)).clamp(0, 1)


def _bar_images(n: int, size: int = 28) -> torch.Tensor:
    """n copies of a soft horizontal bar through the centre: its orientation measures the rotation angle."""
    c = (size - 1) / 2
    yy, xx = torch.meshgrid(torch.arange(size) - c, torch.arange(size) - c, indexing="ij")
    bar = torch.exp(-(xx / 6.0) ** 2 / 2 - (yy / 1.5) ** 2 / 2)
    return bar.expand(n, 1, size, size).clone()


def _orientation_degrees(images: torch.Tensor) -> torch.Tensor:
    """Orientation of each image's main axis from its second moments, in degrees in (-90, 90]. (B, 1, H, W) -> (B,)"""
    B, _, H, W = images.shape
    yy, xx = torch.meshgrid(torch.arange(H, dtype=images.dtype), torch.arange(W, dtype=images.dtype), indexing="ij")
    w = images[:, 0].clamp(min=0)
    mass = w.sum((1, 2))
    cx, cy = (w * xx).sum((1, 2)) / mass, (w * yy).sum((1, 2)) / mass
    dx, dy = xx - cx[:, None, None], yy - cy[:, None, None]
    mu20, mu02, mu11 = (w * dx * dx).sum((1, 2)), (w * dy * dy).sum((1, 2)), (w * dx * dy).sum((1, 2))
    return torch.rad2deg(0.5 * torch.atan2(2 * mu11, mu20 - mu02))


def _shift_with_zeros(img: torch.Tensor, dx: int, dy: int) -> torch.Tensor:
    """img (C, H, W) moved dx pixels right and dy down; zeros come in at the border."""
    out = torch.zeros_like(img)
    H, W = img.shape[-2:]
    out[..., max(dy, 0):H + min(dy, 0), max(dx, 0):W + min(dx, 0)] = \
        img[..., max(-dy, 0):H + min(-dy, 0), max(-dx, 0):W + min(-dx, 0)]
    return out


def _augment_cases() -> list[Case]:
    gen = torch.Generator().manual_seed(6)
    noise_img = torch.rand(32, 1, 28, 28, generator=gen)  # every pixel distinct: a shift is identifiable
    return [
        Case(args=(noise_img,), kwargs=dict(max_shift=0, max_angle=0.0, noise_std=0.0),
             label="every strength 0: the images come back unchanged", seed=1),
        Case(args=(noise_img,), kwargs=dict(max_shift=2, max_angle=0.0, noise_std=0.0),
             label="shifts only (max_shift=2) on random-pixel images", seed=2),
        Case(args=(_bar_images(64),), kwargs=dict(max_shift=0, max_angle=20.0, noise_std=0.0),
             label="rotations only (max_angle=20) of a horizontal bar", seed=3),
        Case(args=(torch.full((16, 1, 28, 28), 0.5),), kwargs=dict(max_shift=0, max_angle=0.0, noise_std=0.1),
             label="noise only (noise_std=0.1) on grey images", seed=4),
        Case(args=(noise_img,), kwargs=dict(max_shift=1, max_angle=10.0, noise_std=0.5),
             label="strong noise (0.5): values must be clamped to [0, 1]", seed=5),
        Case(args=(_bar_images(8),), kwargs=dict(), label="default arguments", seed=6),
        Case(args=(noise_img[:1],), kwargs=dict(max_shift=3, max_angle=30.0, noise_std=0.1),
             label="a batch of one image", seed=7),
    ]


def _run_augment(impl: Any, case: Case) -> dict[str, Any] | None:
    """Properties of ``impl``'s output that every correct augmentation has (so any random draw passes)."""
    (x,) = copy.deepcopy(case.args)
    original = x.clone()
    kw = case.kwargs
    out = impl(x, **kw)
    if out is None:
        return None
    if not isinstance(out, torch.Tensor) or out.shape != x.shape:
        return {"output shape": tuple(getattr(out, "shape", ()))}
    out = out.detach()
    shift, angle, noise = kw.get("max_shift", 2), kw.get("max_angle", 15.0), kw.get("noise_std", 0.05)
    props: dict[str, Any] = {
        "output shape": tuple(out.shape),
        "values in [0, 1]": bool((out >= 0).all() and (out <= 1).all()),
        "the input x is left unchanged": bool(torch.equal(x, original)),
    }
    if shift == 0 and angle == 0 and noise == 0:
        props["unchanged when every strength is 0"] = bool(torch.allclose(out, original, atol=1e-5))
    elif angle == 0 and noise == 0:  # shifts only: find each image's shift
        moves = [(dx, dy) for dx in range(-shift, shift + 1) for dy in range(-shift, shift + 1)]
        found, wrapped = [], 0
        for img, o in zip(original, out):
            match = [m for m in moves if torch.allclose(o, _shift_with_zeros(img, *m), atol=1e-5)]
            if not match:  # a wrap-around shift is still a whole-pixel move; it fails the next property only
                match = [m for m in moves if torch.allclose(o, torch.roll(img, (m[1], m[0]), dims=(-2, -1)), atol=1e-5)]
                wrapped += bool(match)
            found.append(match[0] if match else None)
        props[f"each image moved by whole pixels within ±{shift}"] = all(f is not None for f in found)
        props["zeros come in at the border (no wrap-around)"] = wrapped == 0 and all(f is not None for f in found)
        props["images get different shifts"] = len(set(found) - {None}) >= 5
    elif shift == 0 and noise == 0:  # rotations only, of a horizontal bar
        degrees = _orientation_degrees(out)
        props[f"rotation angles within ±{angle:g} degrees"] = bool(degrees.abs().max() <= angle + 2.0)
        props["images get different angles"] = bool(degrees.std() >= angle / 4)
        props["ink about preserved (nothing lost or added)"] = bool(
            ((out.sum((1, 2, 3)) / original.sum((1, 2, 3))) - 1).abs().max() < 0.1)
    elif shift == 0 and angle == 0:  # noise only, on grey images
        diff = out - original
        props[f"noise mean ≈ 0 and std ≈ {noise:g}"] = bool(abs(diff.mean()) < 0.01 and abs(diff.std() - noise) < 0.01)
        props["every pixel gets its own noise"] = bool((diff.flatten(1).std(1) > 0.5 * noise).all())
    else:
        props["every image changed"] = bool(((out - original).flatten(1).abs().amax(1) > 1e-3).all())
    return props


# ================================================================================= exercise 3: BatchNorm1d
class BatchNorm1d(nn.Module):
    """Batch normalisation (Ioffe & Szegedy, 2015) of x: (N, C) over the batch, as ``nn.BatchNorm1d``.

    Training: normalise each feature with the batch mean and *biased* variance (divide by N),
        y = weight · (x − mean) / sqrt(var + eps) + bias,
    and update the running statistics with the *unbiased* variance (divide by N − 1), without gradient:
        running = (1 − momentum) · running + momentum · batch_statistic;  num_batches_tracked += 1.
    Eval: normalise with running_mean and running_var instead (no update): each example on its own.
    Parameters ``weight`` (C,) = 1, ``bias`` (C,) = 0; buffers ``running_mean`` (C,) = 0, ``running_var`` (C,) = 1,
    ``num_batches_tracked`` () = 0 — the names of ``nn.BatchNorm1d``, so state dicts load into each other.
    """

    def __init__(self, num_features: int, eps: float = 1e-5, momentum: float = 0.1):
        super().__init__()
        self.num_features, self.eps, self.momentum = num_features, eps, momentum
        self.weight = nn.Parameter(torch.ones(num_features))  # γ
        self.bias = nn.Parameter(torch.zeros(num_features))  # β
        self.register_buffer("running_mean", torch.zeros(num_features))
        self.register_buffer("running_var", torch.ones(num_features))
        self.register_buffer("num_batches_tracked", torch.tensor(0, dtype=torch.long))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.training:
            mean = x.mean(0)
            var = x.var(0, unbiased=False)  # the batch's own (biased) variance normalises it
            with torch.no_grad():  # running averages are statistics, not part of the graph
                n = x.shape[0]
                self.running_mean.lerp_(mean, self.momentum)  # (1 - m) * running + m * batch
                self.running_var.lerp_(var * n / max(n - 1, 1), self.momentum)  # unbiased, as torch
                self.num_batches_tracked += 1
        else:
            mean, var = self.running_mean, self.running_var
        return self.weight * (x - mean) / torch.sqrt(var + self.eps) + self.bias

    def extra_repr(self) -> str:
        return f"{self.num_features}, eps={self.eps}, momentum={self.momentum}"


def _batchnorm_variant(name: str, *, unbiased_norm: bool = False, biased_running: bool = False,
                       eval_uses_batch: bool = False, momentum_swapped: bool = False, dim: int = 0) -> type:
    """A (wrong) BatchNorm1d, for the registry of common mistakes."""

    class Variant(BatchNorm1d):
        def forward(self, x):
            if self.training or eval_uses_batch:
                mean = x.mean(dim, keepdim=dim == 1)
                var = x.var(dim, unbiased=unbiased_norm, keepdim=dim == 1)
                if self.training:
                    with torch.no_grad():
                        batch_var = x.var(0, unbiased=not biased_running)
                        m = 1 - self.momentum if momentum_swapped else self.momentum
                        self.running_mean.lerp_(x.mean(0), m)
                        self.running_var.lerp_(batch_var, m)
                        self.num_batches_tracked += 1
            else:
                mean, var = self.running_mean, self.running_var
            return self.weight * (x - mean) / torch.sqrt(var + self.eps) + self.bias

    Variant.__name__ = Variant.__qualname__ = name
    return Variant


def _batchnorm_cases() -> list[Case]:
    gen = torch.Generator().manual_seed(6)

    def batches(n: int, c: int, k: int) -> list[torch.Tensor]:  # k batches with their own offsets and scales
        return [torch.randn(n, c, generator=gen) * (1 + 2 * torch.rand(c, generator=gen))
                + 3 * torch.randn(c, generator=gen) for _ in range(k)]

    tiny = batches(8, 3, 3)
    tiny[1][:, 0] = 1e-3 * torch.randn(8, generator=gen)  # a nearly constant feature (variance ~1e-6): eps matters
    return [
        Case(args=(batches(16, 4, 3), batches(5, 4, 1)[0]), kwargs=dict(num_features=4),
             label="3 training batches of 16, then eval on 5 examples", seed=1),
        Case(args=(batches(2, 3, 4), batches(3, 3, 1)[0]), kwargs=dict(num_features=3, momentum=0.5, eps=1e-3),
             label="batches of 2 (unbiased = 2 × biased), momentum=0.5, eps=1e-3", seed=2),
        Case(args=(tiny, batches(4, 3, 1)[0]), kwargs=dict(num_features=3),
             label="a nearly constant feature in one batch (variance ≪ eps)", seed=3),
        Case(args=(batches(64, 10, 2), batches(1, 10, 1)[0]), kwargs=dict(num_features=10, momentum=0.01),
             label="momentum=0.01, then eval on a single example", seed=4),
    ]


def _run_batchnorm(impl: Any, case: Case) -> dict[str, torch.Tensor] | None:
    """Train mode on each training batch (outputs, gradients, buffers after each), then eval mode."""
    train_batches, eval_batch = copy.deepcopy(case.args)
    reference = BatchNorm1d(**case.kwargs)
    with torch.no_grad():  # non-trivial γ, β so that using them wrongly shows
        gen = torch.Generator().manual_seed(case.seed)
        reference.weight.copy_(1 + 0.5 * torch.randn(reference.weight.shape, generator=gen))
        reference.bias.copy_(torch.randn(reference.bias.shape, generator=gen))
    model = impl(**case.kwargs)
    if model is None:
        return None
    names, ref_names = sorted(model.state_dict()), sorted(reference.state_dict())
    if names != ref_names:
        raise ExerciseError(f"{getattr(impl, '__name__', impl)}: parameter/buffer names differ from nn.BatchNorm1d's: "
                            f"expected {ref_names}, got {names}")
    model.load_state_dict(reference.state_dict())
    result: dict[str, torch.Tensor] = {}

    def step(x: torch.Tensor, tag: str) -> bool:
        x = x.clone().requires_grad_(True)
        out = model(x)
        if out is None:
            return False
        projection = torch.randn(out.shape, generator=torch.Generator().manual_seed(1234))
        model.zero_grad()
        (out * projection).sum().backward()
        result[f"{tag}: output"] = out.detach()
        result[f"{tag}: grad of input"] = x.grad.detach()
        for name, p in model.named_parameters():
            result[f"{tag}: grad of {name}"] = p.grad.detach().clone() if p.grad is not None else torch.zeros_like(p)
        for name, b in model.named_buffers():
            result[f"{tag}: {name} afterwards"] = b.detach().clone()
        return True

    model.train()
    for i, xb in enumerate(train_batches, 1):
        if not step(xb, f"train mode, batch {i}"):
            return None
    if any(b.requires_grad for b in model.buffers()):
        raise ExerciseError(f"{getattr(impl, '__name__', impl)}: the running statistics carry gradient history; "
                            "update them under torch.no_grad() (or from .detach()ed batch statistics)")
    model.eval()
    step(eval_batch, "eval mode")
    return result


# =================================================================================== exercise 4: LayerNorm
class LayerNorm(nn.Module):
    """Layer normalisation (Ba et al., 2016) over the trailing dims given by ``normalized_shape``, as ``nn.LayerNorm``.

    x: (..., *normalized_shape). Each example (each row, each token) is normalised with its *own* mean and
    biased variance over those dims — no batch statistics, so training and eval behave the same:
        y = weight · (x − mean) / sqrt(var + eps) + bias,   weight, bias: normalized_shape (1 and 0 at init).
    """

    def __init__(self, normalized_shape: int | tuple[int, ...], eps: float = 1e-5):
        super().__init__()
        self.normalized_shape = (normalized_shape,) if isinstance(normalized_shape, int) else tuple(normalized_shape)
        self.eps = eps
        self.weight = nn.Parameter(torch.ones(self.normalized_shape))
        self.bias = nn.Parameter(torch.zeros(self.normalized_shape))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        dims = tuple(range(-len(self.normalized_shape), 0))  # the last len(normalized_shape) dims
        mean = x.mean(dims, keepdim=True)
        var = x.var(dims, unbiased=False, keepdim=True)
        return self.weight * (x - mean) / torch.sqrt(var + self.eps) + self.bias

    def extra_repr(self) -> str:
        return f"{self.normalized_shape}, eps={self.eps}"


def _layernorm_variant(name: str, *, over_batch: bool = False, unbiased: bool = False, eps_outside: bool = False,
                       affine: bool = True, last_dim_only: bool = False) -> type:
    class Variant(LayerNorm):
        def forward(self, x):
            dims = (0,) if over_batch else (-1,) if last_dim_only else tuple(range(-len(self.normalized_shape), 0))
            mean = x.mean(dims, keepdim=True)
            var = x.var(dims, unbiased=unbiased, keepdim=True)
            y = (x - mean) / (var.sqrt() + self.eps) if eps_outside else (x - mean) / torch.sqrt(var + self.eps)
            return self.weight * y + self.bias if affine else y

    Variant.__name__ = Variant.__qualname__ = name
    return Variant


def _layernorm_cases() -> list[Case]:
    gen = torch.Generator().manual_seed(6)
    flat = 1e-3 * torch.randn(4, 8, generator=gen)  # variance ~1e-6 ≪ eps
    return [
        Case(args=(torch.randn(4, 8, generator=gen) * 3 + 1,), kwargs=dict(normalized_shape=8),
             label="x (4, 8), normalized_shape=8", seed=1),
        Case(args=(torch.randn(2, 5, 16, generator=gen) * 2 - 1,), kwargs=dict(normalized_shape=16),
             label="tokens x (B=2, T=5, D=16), normalized_shape=16", seed=2),
        Case(args=(torch.randn(3, 4, 6, generator=gen),), kwargs=dict(normalized_shape=(4, 6)),
             label="x (3, 4, 6), normalized_shape=(4, 6): normalise over the last two dims", seed=3),
        Case(args=(flat,), kwargs=dict(normalized_shape=8, eps=1e-5), label="rows of tiny values (variance ≪ eps)",
             seed=4),
    ]


# ============================================================================ double descent (random features)
@dataclass
class RandomFeaturesTask:
    """A regression task for random-features models: y = tanh(2 βᵀx) (+ noise), x ~ N(0, I_d).

    X (n, d), y_clean (n,), noise (n,) a standard-normal draw (the training targets are y_clean + σ · noise),
    X_test (n_test, d), y_test (n_test,) noise-free, W (p_max, d) the random first-layer weights (a model with
    p features uses the first p rows).
    """

    X: np.ndarray
    y_clean: np.ndarray
    noise: np.ndarray
    X_test: np.ndarray
    y_test: np.ndarray
    W: np.ndarray


def random_features_task(n: int = 100, d: int = 20, n_test: int = 1000, p_max: int = 2000,
                         seed: int = 0) -> RandomFeaturesTask:
    """Draw a :class:`RandomFeaturesTask` (deterministic for the arguments)."""
    rng = np.random.default_rng(seed)
    beta = rng.standard_normal(d)
    beta /= np.linalg.norm(beta)
    X, X_test = rng.standard_normal((n, d)), rng.standard_normal((n_test, d))
    noise = rng.standard_normal(n)
    W = rng.standard_normal((p_max, d)) / np.sqrt(d)
    return RandomFeaturesTask(X=X, y_clean=np.tanh(2 * X @ beta), noise=noise, X_test=X_test,
                              y_test=np.tanh(2 * X_test @ beta), W=W)


def random_features(X: np.ndarray, W: np.ndarray) -> np.ndarray:
    """ReLU random features φ(x) = relu(W x) / sqrt(p): X (n, d), W (p, d) -> (n, p). W is fixed, never trained."""
    return np.maximum(X @ W.T, 0.0) / np.sqrt(len(W))


class DoubleDescent:
    """Test error vs number of random features p, for any noise level σ and ridge λ, in milliseconds.

    The ridge / min-norm fit of Φ (n, p) is w = V diag(s / (s² + λ)) Uᵀ y (λ = 0: 1/s, the pseudo-inverse,
    i.e. the minimum-norm least-squares solution). Per task and p we precompute the SVD Φ = U diag(s) Vᵀ and
    the test features in that basis, A = Φ_test V, stored as G = AᵀA / n_test and h = Aᵀ y_test / n_test, so
    test MSE(w) = vᵀ G v − 2 hᵀv + mean(y_test²) with v = shrink ⊙ Uᵀy: no n_test-sized work per redraw.
    Targets are y = y_clean + σ · noise, so Uᵀy = Uᵀy_clean + σ Uᵀnoise is also precomputed.
    """

    def __init__(self, ps: Sequence[int], n: int = 100, d: int = 20, n_test: int = 1000,
                 seeds: Sequence[int] = (0, 1, 2, 3, 4)):
        self.ps, self.n, self.seeds = list(ps), n, list(seeds)
        self._cells: list[list[dict[str, Any]]] = []
        null = []
        for seed in self.seeds:
            task = random_features_task(n=n, d=d, n_test=n_test, p_max=max(self.ps), seed=seed)
            row = []
            for p in self.ps:
                U, s, Vt = np.linalg.svd(random_features(task.X, task.W[:p]), full_matrices=False)
                A = random_features(task.X_test, task.W[:p]) @ Vt.T
                row.append(dict(s=s, zc=U.T @ task.y_clean, ze=U.T @ task.noise, G=A.T @ A / n_test,
                                h=A.T @ task.y_test / n_test))
            self._cells.append(row)
            null.append(float(np.mean(task.y_test ** 2)))
            y2 = dict(cc=task.y_clean @ task.y_clean, ce=task.y_clean @ task.noise, ee=task.noise @ task.noise,
                      test=float(np.mean(task.y_test ** 2)))
            for cell in row:
                cell.update(y2)
        self.null_error = float(np.mean(null))  # test MSE of the zero function, the "no model" baseline

    @staticmethod
    def shrink(s: np.ndarray, ridge: float) -> np.ndarray:
        """The factor applied to each singular direction: s/(s² + λ), or 1/s (pseudo-inverse) at λ = 0."""
        if ridge > 0:
            return s / (s ** 2 + ridge)
        return np.where(s > 1e-10 * s.max(), 1.0 / np.maximum(s, 1e-300), 0.0)

    def curves(self, noise: float, ridge: float) -> dict[str, np.ndarray]:
        """Per task and p (arrays (n_seeds, n_ps)): "test" MSE against the clean function, "train" MSE against
        the noisy targets, and "norm" ‖w‖₂."""
        out = {k: np.zeros((len(self.seeds), len(self.ps))) for k in ("test", "train", "norm")}
        for i, row in enumerate(self._cells):
            for j, c in enumerate(row):
                z = c["zc"] + noise * c["ze"]  # Uᵀy
                v = self.shrink(c["s"], ridge) * z  # Vᵀw
                fit = c["s"] * v  # Uᵀ(Φw)
                y2 = c["cc"] + 2 * noise * c["ce"] + noise ** 2 * c["ee"]
                out["test"][i, j] = v @ c["G"] @ v - 2 * c["h"] @ v + c["test"]
                out["train"][i, j] = max(y2 - 2 * z @ fit + fit @ fit, 0.0) / self.n
                out["norm"][i, j] = np.sqrt(v @ v)
        return out


def plot_double_descent(dd: DoubleDescent, noise: float = 0.2, ridge: float = 0.0, top: float = 100.0) -> plt.Figure:
    """Widget update: test and train error (left) and weight norm (right) vs the number of features p, averaged
    over the tasks, for noise σ and ridge λ; the ridge-less (min-norm) curves in grey when λ > 0. Errors above
    ``top`` are drawn at the frame's edge (the peak at p = n can reach 1e4 and beyond)."""
    ps = np.asarray(dd.ps)
    now = dd.curves(noise, ridge)
    test, train, norm = now["test"].mean(0), now["train"].mean(0), now["norm"].mean(0)
    label = f"λ = {ridge:g}" if ridge > 0 else "min-norm, λ = 0"
    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(12, 4))
    if ridge > 0:
        base = dd.curves(noise, 0.0)
        ax1.plot(ps, np.minimum(base["test"].mean(0), top), color="0.7", lw=1.2, label="test, min-norm (λ = 0)")
        ax2.plot(ps, base["norm"].mean(0), color="0.7", lw=1.2, label="min-norm (λ = 0)")
    ax1.plot(ps, np.minimum(test, top), "o-", color="C3", ms=3, lw=2, label=f"test, {label}")
    ax1.plot(ps, np.where(train > 1e-3, train, np.nan), "--", color="C0", lw=1.5,
             label="train (0 once it interpolates)" if ridge == 0 else "train")
    ax1.axhline(dd.null_error, color="k", ls="--", lw=0.8, alpha=0.5, label="predict 0 (no model)")
    for ax in (ax1, ax2):
        ax.axvline(dd.n, color="k", ls=":", lw=1, label=f"p = n = {dd.n}")
        ax.set(xscale="log", yscale="log", xlabel="number of random features p (log)")
    peak = int(ps[int(np.argmax(test))])
    ax1.set(ylabel="mean squared error (log)", ylim=(1e-3, top * 1.5),
            title=f"σ = {noise:g}, {label}\nworst test MSE {test.max():.3g} (p = {peak}), best {test.min():.3g} "
                  f"(p = {int(ps[int(np.argmin(test))])})")
    ax1.legend(fontsize=7, loc="lower left")
    ax2.plot(ps, norm, "o-", color="C2", ms=3, lw=2, label=label)
    ax2.set(ylabel="‖w‖₂ (log)",
            title="the size of the fitted weights\n(the interpolating fit at p = n needs huge ones)")
    ax2.legend(fontsize=8, loc="upper left")
    fig.tight_layout()
    return fig


# ============================================================================================== registry
EXERCISES = [
    Exercise(
        name="dropout",
        reference=dropout,
        cases=_dropout_cases,
        runner=_run_dropout,
        mistakes={
            "no 1/(1 - p) rescaling of the kept units (the expected activation shrinks by 1 - p)": _dropout_no_rescale,
            "drops units in eval mode too (check the `training` flag)": _dropout_also_in_eval,
            "keeps each unit with probability p instead of dropping it with probability p": _dropout_keeps_with_p,
            "p = 1 gives NaN (0 × 1/(1 - 1)): return zeros when everything is dropped": _dropout_nan_at_p1,
            "one mask shared by every example (draw a mask of x's full shape)": _dropout_one_mask_per_batch,
        },
        hint="if not training (or p == 0): return x; if p == 1: return zeros; otherwise "
             "keep = (torch.rand_like(x) >= p).float() and return x * keep / (1 - p).",
    ),
    Exercise(
        name="augment",
        reference=augment,
        cases=_augment_cases,
        runner=_run_augment,
        mistakes={
            "affine_grid and grid_sample with different align_corners (the image is resampled even at angle 0)":
                _augment_mismatched_align_corners,
            "one random shift/angle for the whole batch (draw one per image)": _augment_one_draw_per_batch,
            "torch.roll wraps pixels around the border (zeros must come in)": _augment_roll,
            "angle in degrees passed to cos/sin (convert with math.radians)": _augment_degrees_as_radians,
            "forgot to clamp to [0, 1] after adding the noise": _augment_no_clamp,
        },
        hint="angle = (torch.rand(B) * 2 - 1) * math.radians(max_angle); shift = torch.randint(-max_shift, "
             "max_shift + 1, (B, 2)); theta (B, 2, 3) = [[cos, -sin, -2 dx / W], [sin, cos, -2 dy / H]]; "
             "F.grid_sample(x, F.affine_grid(theta, x.shape, align_corners=False), align_corners=False); "
             "then (out + noise_std * torch.randn_like(out)).clamp(0, 1).",
    ),
    Exercise(
        name="BatchNorm1d",
        reference=BatchNorm1d,
        cases=_batchnorm_cases,
        runner=_run_batchnorm,
        mistakes={
            "normalises with the unbiased variance (torch normalises with the biased one, divide by N)":
                _batchnorm_variant("BatchNorm1d", unbiased_norm=True),
            "running_var updated with the biased variance (torch stores the unbiased one, × N/(N − 1))":
                _batchnorm_variant("BatchNorm1d", biased_running=True),
            "eval mode still uses the batch statistics (use running_mean / running_var when not self.training)":
                _batchnorm_variant("BatchNorm1d", eval_uses_batch=True),
            "momentum the wrong way round: running = momentum · running + (1 − momentum) · batch":
                _batchnorm_variant("BatchNorm1d", momentum_swapped=True),
            "statistics over dim 1 (each example's features: that is LayerNorm) instead of over the batch, dim 0":
                _batchnorm_variant("BatchNorm1d", dim=1),
        },
        hint="if self.training: mean = x.mean(0), var = x.var(0, unbiased=False); under torch.no_grad() update "
             "running_mean = (1 - m) * running_mean + m * mean and running_var likewise with the UNBIASED variance "
             "(x.var(0)), num_batches_tracked += 1; else mean, var = running_mean, running_var. "
             "Return weight * (x - mean) / sqrt(var + eps) + bias.",
    ),
    Exercise(
        name="LayerNorm",
        reference=LayerNorm,
        cases=_layernorm_cases,
        runner=run_module(LayerNorm),
        mistakes={
            "statistics over the batch, dim 0 (that is BatchNorm) instead of over each example's features":
                _layernorm_variant("LayerNorm", over_batch=True),
            "unbiased variance (torch's LayerNorm divides by D, not D − 1)":
                _layernorm_variant("LayerNorm", unbiased=True),
            "eps added outside the square root: (x − mean) / (std + eps)":
                _layernorm_variant("LayerNorm", eps_outside=True),
            "forgot the learnable weight and bias (γ, β)": _layernorm_variant("LayerNorm", affine=False),
            "only the last dim normalised when normalized_shape has several dims":
                _layernorm_variant("LayerNorm", last_dim_only=True),
        },
        hint="dims = tuple(range(-len(self.normalized_shape), 0)); mean = x.mean(dims, keepdim=True); "
             "var = x.var(dims, unbiased=False, keepdim=True); "
             "return self.weight * (x - mean) / torch.sqrt(var + self.eps) + self.bias.",
    ),
]
