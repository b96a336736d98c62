"""Lecture 08 — CNN architectures: LeNet → VGG → Inception → ResNet, the degradation problem, Grad-CAM.

Reference solutions and the exercise registry (COURSE_DESIGN §2):

* ``BasicBlock``: the ResNet-18/34 block, ``relu(bn2(conv2(relu(bn1(conv1(x))))) + shortcut(x))``, with a
  1×1 projection shortcut when the shape changes;
* ``Bottleneck``: the ResNet-50 block, 1×1 (reduce) → 3×3 → 1×1 (expand ×4), stride on the 3×3;
* ``bottleneck_param_count``: its number of learnable parameters, from the formula (no module built);
* ``grad_cam``: the Grad-CAM map from a layer's activations and the gradient of a class score w.r.t. them.

Helpers the lecture uses: ``cam_mass_inside`` (how much of a map's mass lies inside the object's mask) and
``plot_cam`` (an image with its map and the object's outline on top, behind the widget).
"""
from __future__ import annotations

import matplotlib.pyplot as plt
import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F

from utils.exercises import Case, Exercise, run_module

__all__ = [
    "BasicBlock", "Bottleneck", "bottleneck_param_count", "grad_cam", "cam_mass_inside", "plot_cam", "EXERCISES",
]


# ------------------------------------------------------------------------------------ exercise 1: BasicBlock
class BasicBlock(nn.Module):
    """The ResNet basic block (He et al., 2016): x (B, C_in, H, W) -> (B, C_out, H/stride, W/stride).

    residual branch: conv1 3×3 (stride) → bn1 → ReLU → conv2 3×3 → bn2   (convs without bias: BN has one)
    shortcut:        identity if the shape is unchanged, else 1×1 conv (stride) → BN ("projection")
    output:          ReLU(residual + shortcut)
    """

    def __init__(self, in_channels: int, out_channels: int, stride: int = 1):
        super().__init__()
        self.conv1 = nn.Conv2d(in_channels, out_channels, 3, stride=stride, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(out_channels)
        self.conv2 = nn.Conv2d(out_channels, out_channels, 3, stride=1, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(out_channels)
        self.shortcut = nn.Sequential()  # identity: an empty Sequential returns its input
        if stride != 1 or in_channels != out_channels:  # x must be reshaped to be added
            self.shortcut = nn.Sequential(nn.Conv2d(in_channels, out_channels, 1, stride=stride, bias=False),
                                          nn.BatchNorm2d(out_channels))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = F.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        return F.relu(out + self.shortcut(x))  # add first, then the nonlinearity


class _BasicNoFinalReLU(BasicBlock):
    def forward(self, x):
        out = F.relu(self.bn1(self.conv1(x)))
        return self.bn2(self.conv2(out)) + self.shortcut(x)


class _BasicReLUBeforeAdd(BasicBlock):
    def forward(self, x):
        out = F.relu(self.bn1(self.conv1(x)))
        return F.relu(self.bn2(self.conv2(out))) + self.shortcut(x)


class _BasicStrideOnSecondConv(BasicBlock):
    def __init__(self, in_channels, out_channels, stride=1):
        super().__init__(in_channels, out_channels, stride)
        self.conv1.stride, self.conv2.stride = (1, 1), (stride, stride)


def _basic_cases() -> list[Case]:
    return [
        Case((torch.randn(2, 4, 8, 8),), {"in_channels": 4, "out_channels": 4}, seed=1,
             label="same shape: identity shortcut, x (2, 4, 8, 8)"),
        Case((torch.randn(2, 4, 8, 8),), {"in_channels": 4, "out_channels": 8, "stride": 2}, seed=2,
             label="4 -> 8 channels, stride 2: projection shortcut, x (2, 4, 8, 8) -> (2, 8, 4, 4)"),
        Case((torch.randn(3, 3, 6, 6),), {"in_channels": 3, "out_channels": 6}, seed=3,
             label="3 -> 6 channels, stride 1: projection for the channels only"),
        Case((torch.randn(2, 5, 7, 7),), {"in_channels": 5, "out_channels": 5, "stride": 2}, seed=4,
             label="same channels but stride 2 on an odd 7×7 map: projection, output 4×4"),
    ]


# ------------------------------------------------------------------------------------ exercise 2: Bottleneck
class Bottleneck(nn.Module):
    """The ResNet-50/101/152 block: x (B, C_in, H, W) -> (B, 4·mid, H/stride, W/stride).

    residual branch: conv1 1×1 C_in→mid → bn1 → ReLU        (reduce: the 3×3 then works on few channels)
                     conv2 3×3 mid→mid (stride) → bn2 → ReLU
                     conv3 1×1 mid→4·mid → bn3              (expand back)
    shortcut:        identity if C_in == 4·mid and stride == 1, else 1×1 conv (stride) → BN
    output:          ReLU(residual + shortcut). Convs have no bias. (Stride on the 3×3, as torchvision.)
    """

    expansion = 4

    def __init__(self, in_channels: int, mid_channels: int, stride: int = 1):
        super().__init__()
        out_channels = self.expansion * mid_channels
        self.conv1 = nn.Conv2d(in_channels, mid_channels, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(mid_channels)
        self.conv2 = nn.Conv2d(mid_channels, mid_channels, 3, stride=stride, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(mid_channels)
        self.conv3 = nn.Conv2d(mid_channels, out_channels, 1, bias=False)
        self.bn3 = nn.BatchNorm2d(out_channels)
        self.shortcut = nn.Sequential()
        if stride != 1 or in_channels != out_channels:
            self.shortcut = nn.Sequential(nn.Conv2d(in_channels, out_channels, 1, stride=stride, bias=False),
                                          nn.BatchNorm2d(out_channels))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = F.relu(self.bn1(self.conv1(x)))
        out = F.relu(self.bn2(self.conv2(out)))
        out = self.bn3(self.conv3(out))
        return F.relu(out + self.shortcut(x))


class _BottleneckStrideOnFirst1x1(Bottleneck):
    def __init__(self, in_channels, mid_channels, stride=1):
        super().__init__(in_channels, mid_channels, stride)
        self.conv1.stride, self.conv2.stride = (stride, stride), (1, 1)


class _BottleneckNoFinalReLU(Bottleneck):
    def forward(self, x):
        out = F.relu(self.bn1(self.conv1(x)))
        out = F.relu(self.bn2(self.conv2(out)))
        return self.bn3(self.conv3(out)) + self.shortcut(x)


class _BottleneckReLUBeforeAdd(Bottleneck):
    def forward(self, x):
        out = F.relu(self.bn1(self.conv1(x)))
        out = F.relu(self.bn2(self.conv2(out)))
        return F.relu(self.bn3(self.conv3(out))) + self.shortcut(x)


def _bottleneck_cases() -> list[Case]:
    return [
        Case((torch.randn(2, 16, 6, 6),), {"in_channels": 16, "mid_channels": 4}, seed=1,
             label="C_in = 4·mid = 16, stride 1: identity shortcut"),
        Case((torch.randn(2, 8, 8, 8),), {"in_channels": 8, "mid_channels": 4, "stride": 2}, seed=2,
             label="8 -> 16 channels, stride 2: projection, (2, 8, 8, 8) -> (2, 16, 4, 4)"),
        Case((torch.randn(1, 3, 5, 5),), {"in_channels": 3, "mid_channels": 2}, seed=3,
             label="3 -> 8 channels, stride 1, a single 5×5 image"),
        Case((torch.randn(2, 16, 7, 7),), {"in_channels": 16, "mid_channels": 4, "stride": 2}, seed=4,
             label="C_in = 4·mid but stride 2 on an odd 7×7 map: projection, output 4×4"),
    ]


# -------------------------------------------------------------------------- exercise 3: counting parameters
def bottleneck_param_count(in_channels: int, mid_channels: int, stride: int = 1) -> int:
    """The number of learnable parameters of ``Bottleneck(in_channels, mid_channels, stride)``, by formula.

    A k×k conv from a to b channels without bias has k·k·a·b weights; a BatchNorm over c channels has 2c
    (γ and β; running mean/var are buffers, not parameters). With m = mid_channels and C = in_channels:
        C·m  +  9·m²  +  m·4m                (1×1 reduce, 3×3, 1×1 expand)
        + 2m + 2m + 2·4m                     (three BatchNorms)
        + [C·4m + 2·4m if the shortcut is a projection (C ≠ 4m or stride ≠ 1), else 0]
    """
    m, out = mid_channels, Bottleneck.expansion * mid_channels
    convs = in_channels * m + 9 * m * m + m * out
    norms = 2 * m + 2 * m + 2 * out
    projection = in_channels * out + 2 * out if (stride != 1 or in_channels != out) else 0
    return convs + norms + projection


def _count_no_batchnorm(in_channels, mid_channels, stride=1):
    m, out = mid_channels, 4 * mid_channels
    projection = in_channels * out if (stride != 1 or in_channels != out) else 0
    return in_channels * m + 9 * m * m + m * out + projection


def _count_no_projection(in_channels, mid_channels, stride=1):
    m, out = mid_channels, 4 * mid_channels
    return in_channels * m + 9 * m * m + m * out + 2 * m + 2 * m + 2 * out


def _count_always_projection(in_channels, mid_channels, stride=1):
    m, out = mid_channels, 4 * mid_channels
    return in_channels * m + 9 * m * m + m * out + 2 * m + 2 * m + 2 * out + in_channels * out + 2 * out


def _count_with_conv_biases(in_channels, mid_channels, stride=1):
    m, out = mid_channels, 4 * mid_channels
    extra = m + m + out + (out if (stride != 1 or in_channels != out) else 0)
    return bottleneck_param_count(in_channels, mid_channels, stride) + extra


def _count_3x3_like_1x1(in_channels, mid_channels, stride=1):
    return bottleneck_param_count(in_channels, mid_channels, stride) - 8 * mid_channels * mid_channels


def _count_cases() -> list[Case]:
    return [
        Case((256, 64), label="ResNet-50's conv2_x block: C_in = 256 = 4·64, stride 1 (identity shortcut)"),
        Case((64, 64), label="the first block of ResNet-50: 64 -> 256 channels (projection)"),
        Case((512, 128, 2), label="512 -> 512 channels with stride 2 (projection because of the stride)"),
        Case((1024, 256), label="C_in = 1024 = 4·256, stride 1 (identity)"),
        Case((3, 1), label="tiny: 3 -> 4 channels"),
    ]


# -------------------------------------------------------------------------------------- exercise 4: Grad-CAM
def grad_cam(activations: torch.Tensor, gradients: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """Grad-CAM (Selvaraju et al., 2017) from a layer's feature maps and the gradient of a class score.

    activations: A (N, K, h, w), the K feature maps of the chosen layer.
    gradients:   dy_c/dA (N, K, h, w), the gradient of the explained class score y_c w.r.t. A.
    size:        (H, W) of the input image.
    Returns (N, H, W): for each image,
        α_k = mean over the h×w positions of dy_c/dA_k       (how much channel k matters for class c)
        map = ReLU(Σ_k α_k A_k)                              (at the layer's resolution, h×w)
        upsampled bilinearly (align_corners=False) to H×W, then divided by its own max (+ 1e-8),
        so each map peaks at 1 (an all-zero map stays 0).
    """
    weights = gradients.mean(dim=(2, 3), keepdim=True)  # α: (N, K, 1, 1), global-average-pooled gradients
    cam = F.relu((weights * activations).sum(dim=1, keepdim=True))  # (N, 1, h, w): only positive evidence
    cam = F.interpolate(cam, size=tuple(size), mode="bilinear", align_corners=False)[:, 0]
    return cam / (cam.amax(dim=(1, 2), keepdim=True) + 1e-8)


def _upsample_and_normalise(cam, size):
    cam = F.interpolate(cam[:, None], size=tuple(size), mode="bilinear", align_corners=False)[:, 0]
    return cam / (cam.amax(dim=(1, 2), keepdim=True) + 1e-8)


def _cam_no_relu(activations, gradients, size):
    weights = gradients.mean(dim=(2, 3), keepdim=True)
    return _upsample_and_normalise((weights * activations).sum(dim=1), size)


def _cam_elementwise_gradients(activations, gradients, size):
    return _upsample_and_normalise(F.relu((gradients * activations).sum(dim=1)), size)


def _cam_weights_over_channels(activations, gradients, size):
    weights = gradients.mean(dim=1, keepdim=True)  # averaged over the wrong axis
    return _upsample_and_normalise(F.relu((weights * activations).sum(dim=1)), size)


def _cam_batch_normalised(activations, gradients, size):
    weights = gradients.mean(dim=(2, 3), keepdim=True)
    cam = F.relu((weights * activations).sum(dim=1, keepdim=True))
    cam = F.interpolate(cam, size=tuple(size), mode="bilinear", align_corners=False)[:, 0]
    return cam / (cam.max() + 1e-8)  # one max for the whole batch


def _cam_not_normalised(activations, gradients, size):
    weights = gradients.mean(dim=(2, 3), keepdim=True)
    cam = F.relu((weights * activations).sum(dim=1, keepdim=True))
    return F.interpolate(cam, size=tuple(size), mode="bilinear", align_corners=False)[:, 0]


def _cam_relu_after_upsampling(activations, gradients, size):
    weights = gradients.mean(dim=(2, 3), keepdim=True)
    cam = F.interpolate((weights * activations).sum(dim=1, keepdim=True), size=tuple(size), mode="bilinear",
                        align_corners=False)[:, 0]
    cam = F.relu(cam)
    return cam / (cam.amax(dim=(1, 2), keepdim=True) + 1e-8)


def _cam_cases() -> list[Case]:
    gen = torch.Generator().manual_seed(0)

    def maps(*shape):  # post-ReLU feature maps are >= 0
        return torch.randn(*shape, generator=gen).relu()

    scaled = maps(3, 6, 4, 4) * torch.tensor([1.0, 10.0, 0.1])[:, None, None, None]
    dead_a, dead_g = torch.ones(2, 3, 4, 4), -torch.ones(2, 3, 4, 4)
    dead_a[1], dead_g[1] = maps(3, 4, 4), torch.randn(3, 4, 4, generator=gen)
    return [
        Case((maps(2, 8, 4, 4), torch.randn(2, 8, 4, 4, generator=gen), (16, 16)),
             label="2 images, 8 channels, 4×4 maps -> 16×16"),
        Case((scaled, torch.randn(3, 6, 4, 4, generator=gen), (8, 8)),
             label="3 images whose activations differ in scale (×1, ×10, ×0.1): normalise each map on its own"),
        Case((dead_a, dead_g, (8, 8)),
             label="image 0 has only negative evidence (Σ α_k A_k < 0 everywhere): its map must be all 0"),
        Case((maps(1, 5, 7, 7), torch.randn(1, 5, 7, 7, generator=gen), (7, 7)),
             label="size equal to the map's size: no upsampling"),
        Case((maps(2, 4, 4, 6), torch.randn(2, 4, 4, 6, generator=gen), (16, 24)),
             label="non-square: 4×6 maps -> 16×24"),
    ]


# -------------------------------------------------------------------------------------------------- helpers
def cam_mass_inside(cams: torch.Tensor, masks: torch.Tensor) -> torch.Tensor:
    """The fraction of each map's total mass that lies inside the mask.

    cams (N, H, W) non-negative; masks (N, H, W) bool. Returns (N,) in [0, 1] (0 for an all-zero map).
    A map spread uniformly over the image scores the mask's area fraction; a map on the object scores 1.
    """
    cams = cams.detach().double()
    inside = (cams * masks.double()).sum(dim=(1, 2))
    total = cams.sum(dim=(1, 2))
    return torch.where(total > 0, inside / total.clamp_min(1e-300), torch.zeros_like(total)).float()


def plot_cam(image: torch.Tensor, cam: torch.Tensor, mask: torch.Tensor | None = None, title: str = "",
             alpha: float = 0.5, ax: plt.Axes | None = None) -> plt.Figure:
    """Draw ``image`` (3, H, W) in [0, 1] with ``cam`` (H, W) in [0, 1] on top as a heat map (jet) and, if
    given, the outline of ``mask`` (H, W) bool in white."""
    if ax is None:
        fig, ax = plt.subplots(figsize=(3, 3))
    else:
        fig = ax.figure
    ax.imshow(image.detach().permute(1, 2, 0).clamp(0, 1).cpu().numpy())
    ax.imshow(cam.detach().cpu().numpy(), cmap="jet", alpha=alpha, vmin=0, vmax=1)
    if mask is not None and bool(mask.any()):
        ax.contour(np.asarray(mask.cpu(), dtype=float), levels=[0.5], colors="white", linewidths=1)
    ax.set(title=title, xticks=[], yticks=[])
    return fig


# ----------------------------------------------------------------------------------------------- registry
EXERCISES = [
    Exercise(
        name="BasicBlock",
        reference=BasicBlock,
        cases=_basic_cases,
        runner=run_module(BasicBlock),
        mistakes={
            "no ReLU after the addition (the block must end with relu(out + shortcut(x)))": _BasicNoFinalReLU,
            "ReLU on the residual branch before the addition: relu(bn2(...)) + x can only add, never subtract":
                _BasicReLUBeforeAdd,
            "the stride is on conv2 instead of conv1 (downsample first: conv1 has the stride)":
                _BasicStrideOnSecondConv,
        },
        hint="conv1 = Conv2d(in, out, 3, stride, padding=1, bias=False), bn1, conv2 = Conv2d(out, out, 3, 1, "
             "padding=1, bias=False), bn2; shortcut = nn.Sequential() or nn.Sequential(Conv2d(in, out, 1, stride, "
             "bias=False), BatchNorm2d(out)) when stride != 1 or in != out. forward: relu(bn1(conv1 x)), bn2(conv2 .), "
             "then relu(out + shortcut(x)).",
        atol=1e-4, rtol=1e-4,
    ),
    Exercise(
        name="Bottleneck",
        reference=Bottleneck,
        cases=_bottleneck_cases,
        runner=run_module(Bottleneck),
        mistakes={
            "the stride is on the first 1×1 conv (the original ResNet v1; here, as in torchvision, the 3×3 conv2 "
            "has it: a strided 1×1 simply skips 3 of every 4 positions)": _BottleneckStrideOnFirst1x1,
            "no ReLU after the addition": _BottleneckNoFinalReLU,
            "ReLU after bn3, before the addition (the residual branch can then only add)": _BottleneckReLUBeforeAdd,
        },
        hint="conv1 1×1 in→mid, bn1, conv2 3×3 mid→mid (stride, padding=1), bn2, conv3 1×1 mid→4·mid, bn3, all "
             "convs bias=False; a projection shortcut (1×1 conv with stride + BN) when stride != 1 or in != 4·mid. "
             "forward: relu, relu, no relu after bn3, then relu(out + shortcut(x)).",
        atol=1e-4, rtol=1e-4,
    ),
    Exercise(
        name="bottleneck_param_count",
        reference=bottleneck_param_count,
        cases=_count_cases,
        mistakes={
            "forgot the BatchNorm parameters (γ and β: 2 per channel)": _count_no_batchnorm,
            "forgot the projection shortcut's 1×1 conv and BatchNorm": _count_no_projection,
            "added a projection even when the shortcut is the identity (C_in = 4·mid and stride 1)":
                _count_always_projection,
            "counted conv biases (the convs have bias=False: BatchNorm's β plays that role)": _count_with_conv_biases,
            "counted the 3×3 conv like a 1×1 (forgot the 3·3 = 9 weights per input-output pair)": _count_3x3_like_1x1,
        },
        hint="m = mid, out = 4m. Convs: C·m + 9·m·m + m·out. BatchNorms: 2m + 2m + 2·out. Projection (only if "
             "stride != 1 or C != out): C·out + 2·out. "
             "Check with sum(p.numel() for p in Bottleneck(C, m, s).parameters()).",
        atol=0, rtol=0,
    ),
    Exercise(
        name="grad_cam",
        reference=grad_cam,
        cases=_cam_cases,
        mistakes={
            "no ReLU: negative evidence (for other classes) is kept in the map": _cam_no_relu,
            "weighted A by the gradient elementwise (sum_k dA_k * A_k) instead of by the channel's mean gradient":
                _cam_elementwise_gradients,
            "averaged the gradients over the channels (dim 1) instead of over the positions (dims 2, 3)":
                _cam_weights_over_channels,
            "normalised by the max of the whole batch instead of each map's own max": _cam_batch_normalised,
            "forgot to divide each map by its max": _cam_not_normalised,
            "applied the ReLU after upsampling (do it at the layer's resolution, then upsample)":
                _cam_relu_after_upsampling,
        },
        hint="weights = gradients.mean(dim=(2, 3), keepdim=True); cam = F.relu((weights * activations).sum(1, "
             "keepdim=True)); cam = F.interpolate(cam, size=size, mode='bilinear', align_corners=False)[:, 0]; "
             "return cam / (cam.amax(dim=(1, 2), keepdim=True) + 1e-8).",
    ),
]
