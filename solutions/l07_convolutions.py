"""Lecture 07 — convolutions: reference solutions and the exercise registry.

Exercises (in lecture order, checked by ``ex.check`` in ``lectures/l07_convolutions.ipynb``):

* :func:`conv_output_size` — the output length of a convolution: ⌊(n + 2p − d(k − 1) − 1) / s⌋ + 1;
* :func:`conv2d_loops`     — ``F.conv2d`` as a sliding dot product: a Python loop over output positions;
* :func:`conv2d_im2col`    — ``F.conv2d`` as ONE matrix multiply on the unfolded patches (im2col);
* :func:`receptive_field`  — how many input pixels (per side) one output unit of a stack of layers sees.

Both convolutions take PyTorch's arguments (stride, padding, dilation, groups, bias) and match ``F.conv2d`` to
1e-4 (the tests check that). Helpers the notebook uses: :func:`shifted_digits` (digits placed on a larger
canvas, for the CNN-vs-MLP experiment), the kernel presets :data:`KERNEL_PRESETS`, :func:`filter_image` and the
widget's update function :func:`kernel_editor` on :func:`editor_images`.
"""
from __future__ import annotations

import functools
from typing import Sequence

import matplotlib.pyplot as plt
import numpy as np
import torch
import torch.nn.functional as F

import utils
from utils.exercises import Case, Exercise

__all__ = [
    "conv_output_size", "conv2d_loops", "conv2d_im2col", "receptive_field", "shifted_digits", "KERNEL_PRESETS",
    "filter_image", "editor_images", "kernel_editor", "EXERCISES",
]


# ----------------------------------------------------------------------------- exercise 1: conv_output_size
def conv_output_size(n: int, kernel_size: int, stride: int = 1, padding: int = 0, dilation: int = 1) -> int:
    """The number of output positions along one axis of length ``n`` (PyTorch's convention, floor mode).

    The kernel's footprint is d·(k − 1) + 1 pixels (dilation spreads its k taps d apart); it fits at
    n + 2p − footprint + 1 offsets, of which every s-th is used:  ⌊(n + 2p − d(k − 1) − 1) / s⌋ + 1.
    """
    footprint = dilation * (kernel_size - 1) + 1
    return (n + 2 * padding - footprint) // stride + 1


def _size_no_dilation(n, kernel_size, stride=1, padding=0, dilation=1):
    return (n + 2 * padding - kernel_size) // stride + 1


def _size_ceil(n, kernel_size, stride=1, padding=0, dilation=1):
    return -(-(n + 2 * padding - dilation * (kernel_size - 1) - 1) // stride) + 1


def _size_one_sided_padding(n, kernel_size, stride=1, padding=0, dilation=1):
    return (n + padding - dilation * (kernel_size - 1) - 1) // stride + 1


def _size_no_plus_one(n, kernel_size, stride=1, padding=0, dilation=1):
    return (n + 2 * padding - dilation * (kernel_size - 1) - 1) // stride


def _output_size_cases() -> list[Case]:
    return [
        Case((28, 3), label="n = 28, 3×3 kernel, no padding: 26"),
        Case((28, 3), dict(padding=1), label="padding 1 keeps the size ('same' for a 3×3 kernel)"),
        Case((28, 3), dict(stride=2, padding=1), label="stride 2 halves it: 14"),
        Case((32, 5), dict(stride=2), label="(32 − 5) / 2 = 13.5 is rounded DOWN: 14"),
        Case((10, 3), dict(stride=3), label="n = 10, k = 3, stride 3: 3 (the last column is never covered)"),
        Case((7, 3), dict(dilation=2), label="dilation 2: the 3 taps span 5 pixels, 7 − 5 + 1 = 3"),
        Case((224, 7), dict(stride=2, padding=3), label="the ResNet stem on 224 pixels: 112"),
        Case((32, 3), dict(stride=1, padding=4, dilation=4), label="dilation 4 with padding 4 keeps the size"),
        Case((5, 5), label="kernel as large as the input: 1"),
    ]


# ---------------------------------------------------------------------------------- exercise 2: conv2d_loops
def conv2d_loops(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None = None, stride: int = 1,
                 padding: int = 0, dilation: int = 1, groups: int = 1) -> torch.Tensor:
    """``F.conv2d`` written as a sliding dot product: one loop step per output position.

    x: (N, C_in, H, W); weight: (C_out, C_in / groups, kH, kW); bias: (C_out,) or None; stride, padding,
    dilation: ints (the same along both axes); groups divides C_in and C_out: output channel o only sees the
    input channels of its group g = o // (C_out / groups). Returns (N, C_out, H_out, W_out) with
        y[n, o, i, j] = b[o] + Σ_{c, u, v} w[o, c, u, v] · x_pad[n, g·C_g + c, i·s + u·d, j·s + v·d]
    (cross-correlation: the kernel is NOT flipped).
    """
    N, C_in, H, W = x.shape
    C_out, C_g, kH, kW = weight.shape
    H_out = conv_output_size(H, kH, stride, padding, dilation)
    W_out = conv_output_size(W, kW, stride, padding, dilation)
    x = F.pad(x, (padding, padding, padding, padding))      # zeros on all four sides
    out = x.new_zeros(N, C_out, H_out, W_out)
    O_g = C_out // groups                                     # output channels per group
    for g in range(groups):
        x_g = x[:, g * C_g:(g + 1) * C_g]                      # this group's input channels
        w_g = weight[g * O_g:(g + 1) * O_g].reshape(O_g, -1)   # (O_g, C_g·kH·kW): one row per filter
        for i in range(H_out):
            for j in range(W_out):
                top, left = i * stride, j * stride
                patch = x_g[:, :, top:top + dilation * (kH - 1) + 1:dilation,
                            left:left + dilation * (kW - 1) + 1:dilation]    # (N, C_g, kH, kW)
                out[:, g * O_g:(g + 1) * O_g, i, j] = patch.reshape(N, -1) @ w_g.T   # the dot products
    if bias is not None:
        out = out + bias.view(1, -1, 1, 1)
    return out


def _conv_flipped(x, weight, bias=None, stride=1, padding=0, dilation=1, groups=1):
    return F.conv2d(x, weight.flip(-1, -2), bias, stride, padding, dilation, groups)


def _conv_no_bias(x, weight, bias=None, stride=1, padding=0, dilation=1, groups=1):
    return F.conv2d(x, weight, None, stride, padding, dilation, groups)


def _conv_wrong_group(x, weight, bias=None, stride=1, padding=0, dilation=1, groups=1):
    """Output channel o reads the inputs of group o % groups instead of o // (C_out / groups)."""
    C_g = weight.shape[1]
    outs = []
    for o in range(weight.shape[0]):
        g = o % groups
        outs.append(F.conv2d(x[:, g * C_g:(g + 1) * C_g], weight[o:o + 1], None, stride, padding, dilation))
    out = torch.cat(outs, 1)
    return out if bias is None else out + bias.view(1, -1, 1, 1)


def _conv_taps_not_dilated(x, weight, bias=None, stride=1, padding=0, dilation=1, groups=1):
    """The output size accounts for dilation, but the taps sit next to each other (dilation 1)."""
    H_out = conv_output_size(x.shape[2], weight.shape[2], stride, padding, dilation)
    W_out = conv_output_size(x.shape[3], weight.shape[3], stride, padding, dilation)
    return F.conv2d(x, weight, bias, stride, padding, 1, groups)[:, :, :H_out, :W_out]


def _conv_pad_one_side(x, weight, bias=None, stride=1, padding=0, dilation=1, groups=1):
    """All the padding (2p) on the right and bottom: the same output size, shifted content."""
    return F.conv2d(F.pad(x, (0, 2 * padding, 0, 2 * padding)), weight, bias, stride, 0, dilation, groups)


def _conv_cases() -> list[Case]:
    gen = torch.Generator().manual_seed(7)

    def r(*shape, dtype=torch.float32):
        return torch.randn(*shape, generator=gen, dtype=dtype)

    hand_x = torch.arange(25.0).view(1, 1, 5, 5)
    hand_w = torch.tensor([[[[1.0, 0.0, -1.0], [2.0, 0.0, -2.0], [0.5, 0.0, 0.0]]]])
    return [
        Case((hand_x, hand_w), label="one 5×5 image 0..24, one asymmetric 3×3 kernel, no bias, no padding"),
        Case((r(2, 3, 6, 6), r(4, 3, 3, 3), r(4)), label="batch 2, 3 → 4 channels, with bias"),
        Case((r(1, 2, 7, 7), r(3, 2, 3, 3), r(3)), dict(stride=2), label="stride 2"),
        Case((r(2, 2, 5, 6), r(3, 2, 3, 3), r(3)), dict(padding=1), label="padding 1 ('same' size), 5×6 input"),
        Case((r(1, 3, 7, 9), r(2, 3, 2, 3), None), dict(padding=2, stride=2),
             label="non-square 2×3 kernel on a 7×9 input, padding 2, stride 2, no bias"),
        Case((r(1, 2, 9, 9), r(2, 2, 3, 3), r(2)), dict(dilation=2), label="dilation 2 (taps 2 pixels apart)"),
        Case((r(2, 4, 6, 6), r(6, 2, 3, 3), r(6)), dict(groups=2, padding=1), label="groups 2: 4 → 6 channels"),
        Case((r(1, 3, 6, 6), r(6, 1, 3, 3), r(6)), dict(groups=3), label="depthwise: groups = 3 channels, 3 → 6"),
        Case((r(3, 4, 10, 9), r(4, 2, 3, 3), r(4)), dict(stride=2, padding=1, dilation=2, groups=2),
             label="all at once: batch 3, stride 2, padding 1, dilation 2, groups 2"),
        Case((r(2, 5, 4, 4, dtype=torch.float64), r(3, 5, 1, 1, dtype=torch.float64), None),
             label="1×1 kernel (a per-pixel linear layer), float64, no bias"),
    ]


_CONV_MISTAKES = {
    "flipped the kernel (that is the textbook convolution; conv2d in deep learning is cross-correlation)":
        _conv_flipped,
    "forgot the bias": _conv_no_bias,
    "output channel o reads input group o % groups; it should be o // (C_out / groups)": _conv_wrong_group,
    "dilation only in the output size: the kernel taps must be `dilation` pixels apart": _conv_taps_not_dilated,
    "padded only the right and bottom (2p there): pad p on every side": _conv_pad_one_side,
}


# --------------------------------------------------------------------------------- exercise 3: conv2d_im2col
def conv2d_im2col(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None = None, stride: int = 1,
                  padding: int = 0, dilation: int = 1, groups: int = 1) -> torch.Tensor:
    """``F.conv2d`` as one batched matrix multiply: unfold every patch into a column (im2col), then filters @ columns.

    Same arguments and result as :func:`conv2d_loops`. ``F.unfold(x, (kH, kW), dilation, padding, stride)`` returns
    cols (N, C_in·kH·kW, L), L = H_out·W_out, each column one flattened patch, ordered (channel, u, v) — the same
    order as ``weight[o].flatten()``. With groups, a group's rows are contiguous.
    """
    N, C_in, H, W = x.shape
    C_out, C_g, kH, kW = weight.shape
    H_out = conv_output_size(H, kH, stride, padding, dilation)
    W_out = conv_output_size(W, kW, stride, padding, dilation)
    cols = F.unfold(x, (kH, kW), dilation=dilation, padding=padding, stride=stride)  # (N, C_in·kH·kW, L)
    cols = cols.view(N, groups, C_g * kH * kW, H_out * W_out)                        # split rows by group
    filters = weight.view(groups, C_out // groups, C_g * kH * kW)                    # one row per filter
    out = filters @ cols                                     # (G, O_g, K) @ (N, G, K, L) -> (N, G, O_g, L)
    out = out.reshape(N, C_out, H_out, W_out)
    if bias is not None:
        out = out + bias.view(1, -1, 1, 1)
    return out


def _im2col_channels_last(x, weight, bias=None, stride=1, padding=0, dilation=1, groups=1):
    """cols.T @ weights gives (N, L, C_out); reshaping that straight to (N, C_out, H_out, W_out) scrambles it."""
    N, C_out = x.shape[0], weight.shape[0]
    out = F.conv2d(x, weight, None, stride, padding, dilation, groups)
    H_out, W_out = out.shape[-2:]
    out = out.flatten(2).transpose(1, 2).reshape(N, C_out, H_out, W_out)
    return out if bias is None else out + bias.view(1, -1, 1, 1)


def _im2col_groups_interleaved(x, weight, bias=None, stride=1, padding=0, dilation=1, groups=1):
    """Rows split as view(N, K_g, groups, L): the groups interleaved instead of contiguous blocks of rows."""
    N = x.shape[0]
    C_out, C_g, kH, kW = weight.shape
    cols = F.unfold(x, (kH, kW), dilation=dilation, padding=padding, stride=stride)
    L = cols.shape[-1]
    cols = cols.view(N, C_g * kH * kW, groups, L).transpose(1, 2)
    out = weight.view(groups, C_out // groups, -1) @ cols
    H_out = conv_output_size(x.shape[2], kH, stride, padding, dilation)
    out = out.reshape(N, C_out, H_out, L // H_out)
    return out if bias is None else out + bias.view(1, -1, 1, 1)


# ------------------------------------------------------------------------------- exercise 4: receptive_field
def receptive_field(layers: Sequence[Sequence[int]]) -> int:
    """The receptive field (in input pixels, along one axis) of one output unit of a stack of layers.

    layers: a list of (kernel_size, stride, dilation), first layer first (a 2×2 pooling with stride 2 is
    (2, 2, 1)); [] is the identity. Track r (receptive field, starts at 1) and j (the "jump": how many input
    pixels apart two neighbouring units of the current layer are, starts at 1). A layer adds d·(k − 1) of its own
    units, each j input pixels apart, then multiplies the jump by its stride:
        r ← r + d·(k − 1)·j,   j ← j·s.
    """
    r, j = 1, 1
    for kernel_size, stride, dilation in layers:
        r += dilation * (kernel_size - 1) * j
        j *= stride
    return r


def _rf_strides_ignored(layers):
    return 1 + sum(d * (k - 1) for k, s, d in layers)


def _rf_own_stride(layers):
    r, j = 1, 1
    for k, s, d in layers:
        j *= s
        r += d * (k - 1) * j
    return r


def _rf_no_dilation(layers):
    r, j = 1, 1
    for k, s, _d in layers:
        r += (k - 1) * j
        j *= s
    return r


def _rf_adds_k(layers):
    r, j = 1, 1
    for k, s, d in layers:
        r += d * k * j
        j *= s
    return r


def _rf_cases() -> list[Case]:
    conv3, pool2 = (3, 1, 1), (2, 2, 1)
    return [
        Case(([],), label="no layers: a unit sees 1 pixel"),
        Case(([conv3],), label="one 3×3 conv: 3"),
        Case(([conv3, conv3],), label="two 3×3 convs: 5 (= one 5×5)"),
        Case(([conv3] * 3,), label="three 3×3 convs: 7 (VGG's argument)"),
        Case(([conv3, pool2, conv3, pool2, conv3],), label="conv, pool, conv, pool, conv: 18"),
        Case(([(7, 2, 1), (3, 2, 1)],), label="ResNet stem: 7×7 stride-2 conv, 3×3 stride-2 max-pool: 11"),
        Case(([(3, 1, 1), (3, 1, 2), (3, 1, 4), (3, 1, 8)],), label="dilations 1, 2, 4, 8 (WaveNet-style): 31"),
        Case(([(3, 2, 1), (3, 2, 2), (1, 1, 1), (5, 1, 1)],), label="mixed strides and dilation, and a 1×1 conv"),
    ]


# ------------------------------------------------------------------------------ data: digits on a big canvas
def shifted_digits(n: int, split: str = "train", x_range: tuple[int, int] = (0, 12),
                   y_range: tuple[int, int] = (0, 12), canvas: int = 40,
                   seed: int = 0) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """28×28 ``font_digits`` pasted at random offsets on a larger black canvas.

    The top-left corner of each digit is drawn uniformly from x_range × y_range (inclusive; each at most
    canvas − 28). Returns X (n, 1, canvas, canvas) float32 in [0, 1], y (n,) int64 and offsets (n, 2) int64 (x, y).
    """
    limit = canvas - 28
    for lo, hi in (x_range, y_range):
        if not 0 <= lo <= hi <= limit:
            raise ValueError(f"offset ranges must lie in [0, {limit}] for a {canvas}-pixel canvas, got {lo}..{hi}")
    digits, y = utils.data.font_digits(n, size=28, split=split, seed=seed)
    gen = torch.Generator().manual_seed(seed + 1)
    ox = torch.randint(x_range[0], x_range[1] + 1, (n,), generator=gen)
    oy = torch.randint(y_range[0], y_range[1] + 1, (n,), generator=gen)
    X = torch.zeros(n, 1, canvas, canvas)
    for i, (top, left) in enumerate(zip(oy.tolist(), ox.tolist())):
        X[i, :, top:top + 28, left:left + 28] = digits[i]
    return X, y, torch.stack([ox, oy], 1)


# ------------------------------------------------------------------------------------ widget: kernel editor
KERNEL_PRESETS: dict[str, list[list[float]]] = {
    "identity": [[0, 0, 0], [0, 1, 0], [0, 0, 0]],
    "box blur": [[1 / 9] * 3] * 3,
    "Gaussian blur": [[1 / 16, 2 / 16, 1 / 16], [2 / 16, 4 / 16, 2 / 16], [1 / 16, 2 / 16, 1 / 16]],
    "sharpen": [[0, -1, 0], [-1, 5, -1], [0, -1, 0]],
    "Sobel x (vertical edges)": [[-1, 0, 1], [-2, 0, 2], [-1, 0, 1]],
    "Sobel y (horizontal edges)": [[-1, -2, -1], [0, 0, 0], [1, 2, 1]],
    "Laplacian (blobs, all edges)": [[0, 1, 0], [1, -4, 1], [0, 1, 0]],
    "diagonal edges": [[0, 1, 2], [-1, 0, 1], [-2, -1, 0]],
    "emboss": [[-2, -1, 0], [-1, 1, 1], [0, 1, 2]],
}


def filter_image(image: torch.Tensor, kernel: torch.Tensor) -> torch.Tensor:
    """Cross-correlate a grey image (H, W) with a (k, k) kernel, k odd; reflect-padded so the output is (H, W)
    and the borders do not light up as fake edges."""
    k = kernel.shape[-1]
    x = F.pad(image[None, None], (k // 2,) * 4, mode="reflect")
    return F.conv2d(x, kernel.to(image.dtype)[None, None])[0, 0]


@functools.lru_cache(maxsize=1)
def editor_images() -> dict[str, torch.Tensor]:
    """Grey (H, W) images in [0, 1] for the kernel editor: a photo (scikit-learn's sample image of a temple,
    offline), a grid of digits and a ``shapes`` scene."""
    from sklearn.datasets import load_sample_image

    photo = torch.tensor(load_sample_image("china.jpg")).float().mean(-1) / 255.0   # (427, 640)
    photo = F.avg_pool2d(photo[None, None], 2)[0, 0]                                     # (213, 320)
    X, _ = utils.data.font_digits(24, size=28, split="val")
    digits = X[:, 0].view(3, 8, 28, 28).permute(0, 2, 1, 3).reshape(84, 224)             # 3 rows of 8 digits
    scenes = utils.data.shapes(1, size=96, min_objects=4, max_objects=4, min_radius=9, max_radius=16, seed=2)
    return {"photo": photo, "digits": digits, "shapes": scenes.images[0].mean(0)}


def kernel_editor(image: str = "photo", k00: float = 0.0, k01: float = 0.0, k02: float = 0.0, k10: float = 0.0,
                  k11: float = 1.0, k12: float = 0.0, k20: float = 0.0, k21: float = 0.0,
                  k22: float = 0.0) -> plt.Figure:
    """The widget: the 3×3 kernel [[k00, k01, k02], [k10, k11, k12], [k20, k21, k22]], the image and the filtered
    image. Kernels that sum to ~0 (edge detectors) respond only to change: shown on a grey scale centred at 0."""
    kernel = torch.tensor([[k00, k01, k02], [k10, k11, k12], [k20, k21, k22]], dtype=torch.float32)
    img = editor_images()[image]
    out = filter_image(img, kernel)
    total = kernel.sum().item()
    fig, axes = plt.subplots(1, 3, figsize=(13, 3.6), gridspec_kw={"width_ratios": [0.6, 1.5, 1.5]})
    lim = max(kernel.abs().max().item(), 1e-6)
    axes[0].imshow(kernel.numpy(), cmap="RdBu_r", vmin=-lim, vmax=lim)
    for (r, c), v in np.ndenumerate(kernel.numpy()):
        axes[0].text(c, r, f"{v:.3g}", ha="center", va="center", fontsize=10,
                     color="white" if abs(v) > 0.6 * lim else "black")
    axes[0].set(title=f"kernel (sum {total:.3g})", xticks=[0, 1, 2], yticks=[0, 1, 2], xlabel="v", ylabel="u")
    axes[1].imshow(img.numpy(), cmap="gray", vmin=0, vmax=1)
    axes[1].set(title=f"input ({image}, {img.shape[0]}×{img.shape[1]})", xlabel="x (pixels)", ylabel="y (pixels)")
    if abs(total) < 1e-3:  # a pure "change detector": signed output, 0 = mid-grey
        m = max(out.abs().quantile(0.995).item(), 1e-6)
        axes[2].imshow(out.numpy(), cmap="gray", vmin=-m, vmax=m)
        axes[2].set_title("output (sum 0: only changes respond; grey = 0)")
    else:
        axes[2].imshow(out.numpy(), cmap="gray", vmin=0, vmax=1)
        axes[2].set_title(f"output (clipped to [0, 1]; brightness × {total:.3g})")
    axes[2].set(xlabel="x (pixels)", ylabel="y (pixels)")
    fig.tight_layout()
    return fig


# -------------------------------------------------------------------------------------------------- registry
EXERCISES = [
    Exercise(
        name="conv_output_size",
        reference=conv_output_size,
        cases=_output_size_cases,
        mistakes={
            "forgot the dilation: a dilated kernel spans d·(k − 1) + 1 pixels, not k": _size_no_dilation,
            "rounded up: a kernel position that would stick out of the (padded) input does not count":
                _size_ceil,
            "padded one side only (n + p): padding p adds p pixels on EACH side": _size_one_sided_padding,
            "forgot the + 1 (the first position, before any stride)": _size_no_plus_one,
        },
        hint="count the positions of the kernel's first tap: from 0 to (n + 2p) − (d(k − 1) + 1), every s-th one; "
             "integer division // rounds down.",
    ),
    Exercise(
        name="conv2d_loops",
        reference=conv2d_loops,
        cases=_conv_cases,
        mistakes=_CONV_MISTAKES,
        atol=1e-4, rtol=1e-4,
        hint="pad x with F.pad(x, (p, p, p, p)); for each group and each output (i, j), slice the patch "
             "x_pad[:, group's channels, i*s : i*s + d*(kH-1) + 1 : d, j*s : ... : d] and take its dot product "
             "with every filter of the group: patch.reshape(N, -1) @ w_g.reshape(O_g, -1).T.",
    ),
    Exercise(
        name="conv2d_im2col",
        reference=conv2d_im2col,
        cases=_conv_cases,
        mistakes={
            "multiplied into (N, L, C_out) and reshaped that straight to (N, C_out, H_out, W_out): put the "
            "channel axis first (filters @ cols gives (…, C_out, L))": _im2col_channels_last,
            "split the unfolded rows into groups in the wrong order: a group's rows are one contiguous block, "
            "cols.view(N, groups, C_in/groups·kH·kW, L)": _im2col_groups_interleaved,
            **{k: v for k, v in _CONV_MISTAKES.items() if k.startswith(("flipped", "forgot the bias"))},
        },
        atol=1e-4, rtol=1e-4,
        hint="cols = F.unfold(x, (kH, kW), dilation=d, padding=p, stride=s) is (N, C_in·kH·kW, L); view it as "
             "(N, groups, C_g·kH·kW, L), the weight as (groups, C_out/groups, C_g·kH·kW), multiply with @ and "
             "reshape to (N, C_out, H_out, W_out).",
    ),
    Exercise(
        name="receptive_field",
        reference=receptive_field,
        cases=_rf_cases,
        mistakes={
            "forgot that strides compound: a layer's d·(k − 1) counts ITS units, each j input pixels apart, "
            "j = product of the earlier strides": _rf_strides_ignored,
            "multiplied the jump by the layer's own stride before adding its growth: a layer's units are spaced "
            "by the EARLIER strides": _rf_own_stride,
            "ignored the dilation (a dilated kernel's taps are d units apart)": _rf_no_dilation,
            "grew by k per layer instead of k − 1 (the centre pixel is already counted)": _rf_adds_k,
        },
        hint="start with r = 1, j = 1; for each (k, s, d): r += d * (k - 1) * j, then j *= s.",
    ),
]
