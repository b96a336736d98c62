"""A small, readable `fit`/`evaluate` for lectures after L03 (L03 writes its training loop in the open).

    history = fit(model, (X, y), loss_fn=F.cross_entropy, steps=500, lr=1e-3, val=(Xv, yv))

Fixed number of steps (never "for N seconds"), minibatches drawn by a seeded generator, tqdm progress bar.
"""
from __future__ import annotations

import math
from typing import Callable

import torch
import torch.nn.functional as F
from tqdm.auto import tqdm

__all__ = ["fit", "evaluate", "batches", "warmup_cosine"]

Data = tuple[torch.Tensor, torch.Tensor]


def batches(data: Data, batch_size: int, seed: int = 0):
    """Endless shuffled minibatches of (x, y): reshuffled each epoch by a seeded generator."""
    X, y = data
    if len(X) != len(y):
        raise ValueError(f"X and y have different lengths: {len(X)} vs {len(y)}")
    gen = torch.Generator().manual_seed(seed)
    while True:
        perm = torch.randperm(len(X), generator=gen)
        for i in range(0, len(X) - batch_size + 1 if len(X) >= batch_size else 1, batch_size):
            idx = perm[i:i + batch_size]
            yield X[idx], y[idx]


@torch.no_grad()
def evaluate(model: torch.nn.Module, data: Data, loss_fn: Callable = F.cross_entropy,
             batch_size: int = 1024) -> dict[str, float]:
    """Mean loss and (for class logits) accuracy over ``data``, in eval mode; restores the previous mode."""
    was_training = model.training
    model.eval()
    X, y = data
    total_loss, correct, n, classify = 0.0, 0, 0, False
    for i in range(0, len(X), batch_size):
        out = model(X[i:i + batch_size])
        yb = y[i:i + batch_size]
        total_loss += loss_fn(out, yb).item() * len(yb)
        classify = out.ndim == 2 and yb.dtype == torch.int64
        if classify:
            correct += (out.argmax(1) == yb).sum().item()
        n += len(yb)
    model.train(was_training)
    result = {"loss": total_loss / n}
    if classify:
        result["acc"] = correct / n
    return result


def fit(model: torch.nn.Module, train: Data, loss_fn: Callable = F.cross_entropy, steps: int = 1000,
        batch_size: int = 64, lr: float = 1e-3, optimizer: torch.optim.Optimizer | None = None,
        val: Data | None = None, eval_every: int = 100, clip: float | None = None, seed: int = 0,
        progress: bool = True) -> dict[str, list[float]]:
    """Train ``model`` for exactly ``steps`` minibatch steps (AdamW at ``lr`` unless ``optimizer`` is given).

    Returns history: "loss" per step; "val_loss"/"val_acc" and "val_step" every ``eval_every`` steps.
    """
    if steps <= 0 or batch_size <= 0:
        raise ValueError(f"steps and batch_size must be positive, got {steps}, {batch_size}")
    opt = optimizer or torch.optim.AdamW(model.parameters(), lr=lr)
    history: dict[str, list[float]] = {"loss": []}
    stream = batches(train, batch_size, seed)
    model.train()
    bar = tqdm(range(steps), disable=not progress, desc="training", leave=False)
    for step in bar:
        xb, yb = next(stream)
        loss = loss_fn(model(xb), yb)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        if clip is not None:
            torch.nn.utils.clip_grad_norm_(model.parameters(), clip)
        opt.step()
        history["loss"].append(loss.item())
        if val is not None and ((step + 1) % eval_every == 0 or step + 1 == steps):
            metrics = evaluate(model, val, loss_fn)
            history.setdefault("val_step", []).append(step + 1)
            for k, v in metrics.items():
                history.setdefault(f"val_{k}", []).append(v)
            bar.set_postfix(loss=f"{loss.item():.3f}", val_loss=f"{metrics['loss']:.3f}")
    return history


def warmup_cosine(step: int, total_steps: int, warmup_steps: int, max_lr: float, min_lr: float = 0.0) -> float:
    """Learning rate at ``step`` (0-based): linear warmup, then cosine decay to ``min_lr`` (as in nanoGPT).

    step < warmup_steps:        max_lr · (step + 1) / (warmup_steps + 1)
    warmup_steps ≤ step < total: min_lr + ½ (max_lr − min_lr)(1 + cos(π · progress)),
                                 progress = (step − warmup_steps) / (total_steps − warmup_steps) ∈ [0, 1)
    step ≥ total_steps:         min_lr
    """
    if step < warmup_steps:
        return max_lr * (step + 1) / (warmup_steps + 1)
    if step >= total_steps:
        return min_lr
    progress = (step - warmup_steps) / (total_steps - warmup_steps)
    return min_lr + 0.5 * (max_lr - min_lr) * (1 + math.cos(math.pi * progress))
