"""Plot helpers every lecture needs: loss curves, image grids, 2-D decision boundaries.

Each returns the matplotlib Figure (so tests and widgets can use it) and draws on ``ax`` when one is given.
"""
from __future__ import annotations

from typing import Callable, Mapping, Sequence

import matplotlib.pyplot as plt
import numpy as np
import torch

__all__ = ["plot_curves", "show_images", "plot_decision_boundary"]


def plot_curves(curves: Mapping[str, Sequence[float]], title: str = "training curves", xlabel: str = "step",
                ylabel: str = "loss", logy: bool = False, smooth: int = 1, ax: plt.Axes | None = None) -> plt.Figure:
    """One line per named curve, e.g. ``{"train": losses, "val": val_losses}``.

    ``smooth``: moving-average window (1 = raw), handy for noisy minibatch losses.
    """
    if not curves:
        raise ValueError("plot_curves needs at least one curve")
    fig, ax = _fig_ax(ax, (6, 3.5))
    for name, values in curves.items():
        v = np.asarray([float(x) for x in values])
        if smooth > 1 and len(v) >= smooth:
            v = np.convolve(v, np.ones(smooth) / smooth, mode="valid")
        ax.plot(np.arange(len(v)), v, label=name)
    if logy:
        ax.set_yscale("log")
    ax.set(title=title, xlabel=xlabel, ylabel=ylabel)
    ax.legend()
    return fig


def show_images(images: torch.Tensor | np.ndarray, labels: Sequence | None = None, ncols: int = 10,
                title: str | None = None, cmap: str = "gray", scale: float = 1.0) -> plt.Figure:
    """A grid of images. ``images``: (N, H, W), (N, 1, H, W) or (N, 3, H, W), values in [0, 1]."""
    x = images.detach().cpu().numpy() if isinstance(images, torch.Tensor) else np.asarray(images)
    if x.ndim == 4:
        x = x[:, 0] if x.shape[1] == 1 else x.transpose(0, 2, 3, 1)
    if x.ndim not in (3, 4):
        raise ValueError(f"images must be (N, H, W) or (N, C, H, W), got shape {tuple(images.shape)}")
    n = len(x)
    if n == 0:
        raise ValueError("no images to show")
    ncols = min(ncols, n)
    nrows = -(-n // ncols)
    fig, axes = plt.subplots(nrows, ncols, figsize=(scale * 1.1 * ncols, scale * 1.2 * nrows), squeeze=False)
    for i, ax in enumerate(axes.flat):
        ax.axis("off")
        if i < n:
            ax.imshow(np.clip(x[i], 0, 1), cmap=cmap, vmin=0, vmax=1)
            if labels is not None:
                ax.set_title(str(labels[i]), fontsize=8)
    if title:
        fig.suptitle(title)
    fig.tight_layout()
    return fig


def plot_decision_boundary(predict: Callable[[torch.Tensor], torch.Tensor], X: torch.Tensor, y: torch.Tensor,
                           title: str = "decision boundary", resolution: int = 200,
                           ax: plt.Axes | None = None) -> plt.Figure:
    """Colour the plane by ``predict(points (M, 2)) -> logits (M, C) or class ids (M,)`` and scatter the data."""
    X = torch.as_tensor(X, dtype=torch.float32)
    if X.ndim != 2 or X.shape[1] != 2:
        raise ValueError(f"X must be (N, 2), got {tuple(X.shape)}")
    fig, ax = _fig_ax(ax, (4.5, 4))
    pad = 0.5
    x0, x1 = X[:, 0].min().item() - pad, X[:, 0].max().item() + pad
    y0, y1 = X[:, 1].min().item() - pad, X[:, 1].max().item() + pad
    gx, gy = torch.meshgrid(torch.linspace(x0, x1, resolution), torch.linspace(y0, y1, resolution), indexing="xy")
    with torch.no_grad():
        out = predict(torch.stack([gx.flatten(), gy.flatten()], 1))
    classes = out.argmax(1) if out.ndim == 2 else out
    ax.contourf(gx, gy, classes.reshape(gx.shape).float(), alpha=0.3, cmap="coolwarm")
    ax.scatter(X[:, 0], X[:, 1], c=y, cmap="coolwarm", s=10, edgecolors="k", linewidths=0.3)
    ax.set(title=title, xlabel="$x_1$", ylabel="$x_2$")
    return fig


def _fig_ax(ax: plt.Axes | None, size: tuple[float, float]) -> tuple[plt.Figure, plt.Axes]:
    if ax is not None:
        return ax.figure, ax
    fig, ax = plt.subplots(figsize=size)
    return fig, ax
