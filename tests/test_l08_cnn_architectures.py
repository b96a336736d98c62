"""Lecture 08: the residual blocks (shapes, projections, the zero-γ identity property, parameter counts), the
Grad-CAM reference against the class activation map it generalises, and the helpers behind the widget."""
from __future__ import annotations

import matplotlib.pyplot as plt
import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F

from solutions.l08_cnn_architectures import (
    BasicBlock,
    Bottleneck,
    bottleneck_param_count,
    cam_mass_inside,
    grad_cam,
    plot_cam,
)


def n_params(module: nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())


# ------------------------------------------------------------------------------------------------- blocks
@pytest.mark.parametrize("c_in,c_out,stride,size,expected", [
    (4, 4, 1, 8, 8), (4, 8, 2, 8, 4), (3, 6, 1, 6, 6), (5, 5, 2, 7, 4),
])
def test_basic_block_shapes_and_projection(c_in, c_out, stride, size, expected):
    block = BasicBlock(c_in, c_out, stride)
    out = block(torch.randn(2, c_in, size, size))
    assert out.shape == (2, c_out, expected, expected)
    assert (out >= 0).all()  # ends with a ReLU
    projection = stride != 1 or c_in != c_out
    assert (len(block.shortcut) > 0) == projection
    assert all(m.bias is None for m in block.modules() if isinstance(m, nn.Conv2d))  # bias=False


def test_basic_block_parameter_count():
    c = 16
    assert n_params(BasicBlock(c, c)) == 2 * 9 * c * c + 2 * 2 * c  # two 3×3 convs + two BatchNorms
    assert n_params(BasicBlock(8, 16, 2)) == 9 * 8 * 16 + 9 * 16 * 16 + 4 * 16 + 8 * 16 + 2 * 16


@pytest.mark.parametrize("block", [BasicBlock(6, 6), Bottleneck(24, 6)])
def test_zero_last_gamma_makes_the_block_the_identity(block):
    """With the last BatchNorm's γ = β = 0 the residual branch outputs 0: block(x) = relu(x) (Goyal et al.)."""
    last_bn = block.bn2 if isinstance(block, BasicBlock) else block.bn3
    nn.init.zeros_(last_bn.weight)
    nn.init.zeros_(last_bn.bias)
    x = torch.randn(3, 24 if isinstance(block, Bottleneck) else 6, 5, 5)
    torch.testing.assert_close(block(x), F.relu(x))


def test_basic_block_matches_a_hand_written_forward_in_eval_mode():
    torch.manual_seed(0)
    block = BasicBlock(3, 6, stride=2)
    for bn in (block.bn1, block.bn2, block.shortcut[1]):  # non-trivial running statistics and affine parameters
        bn.running_mean.uniform_(-1, 1)
        bn.running_var.uniform_(0.5, 2)
        nn.init.uniform_(bn.weight, 0.5, 1.5)
        nn.init.uniform_(bn.bias, -0.5, 0.5)
    block.eval()
    x = torch.randn(2, 3, 9, 9)

    def bn(t, m):
        return ((t - m.running_mean[:, None, None]) / torch.sqrt(m.running_var[:, None, None] + m.eps)
                * m.weight[:, None, None] + m.bias[:, None, None])

    h = F.relu(bn(F.conv2d(x, block.conv1.weight, stride=2, padding=1), block.bn1))
    h = bn(F.conv2d(h, block.conv2.weight, padding=1), block.bn2)
    skip = bn(F.conv2d(x, block.shortcut[0].weight, stride=2), block.shortcut[1])
    torch.testing.assert_close(block(x), F.relu(h + skip), atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("c_in,mid,stride,size,expected", [
    (16, 4, 1, 6, 6), (8, 4, 2, 8, 4), (3, 2, 1, 5, 5), (16, 4, 2, 7, 4),
])
def test_bottleneck_shapes(c_in, mid, stride, size, expected):
    block = Bottleneck(c_in, mid, stride)
    assert block(torch.randn(2, c_in, size, size)).shape == (2, 4 * mid, expected, expected)
    assert block.conv2.stride == (stride, stride) and block.conv1.stride == (1, 1)  # stride on the 3×3
    assert (len(block.shortcut) > 0) == (stride != 1 or c_in != 4 * mid)


@pytest.mark.parametrize("c_in,mid,stride", [
    (256, 64, 1), (64, 64, 1), (512, 128, 2), (1024, 256, 1), (2048, 512, 1), (3, 1, 1), (4, 1, 2), (8, 2, 1),
])
def test_bottleneck_param_count_equals_the_module(c_in, mid, stride):
    assert bottleneck_param_count(c_in, mid, stride) == n_params(Bottleneck(c_in, mid, stride))


def test_bottleneck_is_much_cheaper_than_a_basic_block_at_256_channels():
    assert n_params(BasicBlock(256, 256)) / bottleneck_param_count(256, 64) > 16


# ---------------------------------------------------------------------------------------------- Grad-CAM
def test_grad_cam_equals_cam_for_a_gap_linear_head():
    """y_c = w_c · mean_ij A_ij: dy_c/dA_kij = w_ck / (h w), so Grad-CAM = ReLU(Σ_k w_ck A_k) normalised."""
    torch.manual_seed(0)
    features = nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2), nn.Conv2d(8, 6, 3, padding=1),
                             nn.ReLU())
    head = nn.Linear(6, 4)
    x = torch.randn(5, 3, 12, 12)
    A = features(x)
    classes = torch.tensor([0, 1, 2, 3, 1])
    logits = head(A.mean(dim=(2, 3)))
    (dA,) = torch.autograd.grad(logits.gather(1, classes[:, None]).sum(), A)
    cam = F.relu(torch.einsum("nk,nkhw->nhw", head.weight[classes], A)).detach()
    cam = F.interpolate(cam[:, None], size=(12, 12), mode="bilinear", align_corners=False)[:, 0]
    cam = cam / (cam.amax(dim=(1, 2), keepdim=True) + 1e-8)
    torch.testing.assert_close(grad_cam(A.detach(), dA, (12, 12)), cam, atol=1e-5, rtol=1e-4)


def test_grad_cam_range_scale_invariance_and_dead_maps():
    gen = torch.Generator().manual_seed(1)
    A = torch.randn(4, 5, 3, 3, generator=gen).relu()
    G = torch.randn(4, 5, 3, 3, generator=gen)
    cam = grad_cam(A, G, (9, 9))
    assert cam.shape == (4, 9, 9) and cam.min() >= 0 and cam.max() <= 1
    alive = cam.flatten(1).amax(1) > 0
    torch.testing.assert_close(cam.flatten(1).amax(1)[alive], torch.ones(int(alive.sum())), atol=1e-5, rtol=0)
    torch.testing.assert_close(grad_cam(3 * A, 7 * G, (9, 9)), cam, atol=1e-5, rtol=1e-4)  # positive scales drop out
    dead = grad_cam(torch.ones(1, 2, 3, 3), -torch.ones(1, 2, 3, 3), (6, 6))
    assert torch.equal(dead, torch.zeros(1, 6, 6))
    assert not torch.isnan(dead).any()


def test_cam_mass_inside_hand_values():
    masks = torch.zeros(3, 4, 4, dtype=torch.bool)
    masks[:, :2, :2] = True  # a quarter of the image
    cams = torch.stack([torch.ones(4, 4), masks[1].float(), torch.zeros(4, 4)])
    torch.testing.assert_close(cam_mass_inside(cams, masks), torch.tensor([0.25, 1.0, 0.0]))


def test_plot_cam_draws_image_map_and_outline():
    image, cam = torch.rand(3, 8, 8), torch.rand(8, 8)
    mask = torch.zeros(8, 8, dtype=torch.bool)
    mask[2:5, 2:5] = True
    fig = plot_cam(image, cam, mask, title="t")
    assert isinstance(fig, plt.Figure) and fig.axes[0].get_title() == "t"
    assert len(fig.axes[0].images) == 2
    plt.close(fig)
    fig, ax = plt.subplots()
    assert plot_cam(image, cam, torch.zeros(8, 8, dtype=torch.bool), ax=ax) is fig  # an empty mask: no contour
    plt.close(fig)
