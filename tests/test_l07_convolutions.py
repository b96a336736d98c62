"""Lecture 07: both convolutions against F.conv2d, the size and receptive-field formulas against PyTorch and a
gradient, the shifted-digits data and the kernel editor's update function."""
from __future__ import annotations

import matplotlib.pyplot as plt
import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F

from solutions import l07_convolutions as L
from utils.widgets import render

CONVS = [L.conv2d_loops, L.conv2d_im2col]


@pytest.mark.parametrize("conv", CONVS, ids=lambda f: f.__name__)
@pytest.mark.parametrize("case", L._conv_cases(), ids=lambda c: c.label)
def test_conv_matches_torch_on_the_registered_cases(conv, case):
    expected = F.conv2d(*case.args, **case.kwargs)
    got = conv(*case.args, **case.kwargs)
    assert got.shape == expected.shape and got.dtype == expected.dtype
    assert (got - expected).abs().max().item() < 1e-4


@pytest.mark.parametrize("conv", CONVS, ids=lambda f: f.__name__)
def test_conv_matches_torch_on_random_configurations(conv):
    gen = torch.Generator().manual_seed(123)
    for _ in range(30):
        def r(lo, hi):
            return int(torch.randint(lo, hi + 1, (1,), generator=gen))
        groups, kH, kW, stride, padding, dilation = r(1, 4), r(1, 5), r(1, 5), r(1, 3), r(0, 3), r(1, 3)
        H, W = (r(dilation * (k - 1) + 1, dilation * (k - 1) + 7) for k in (kH, kW))
        x = torch.randn(r(1, 2), groups * r(1, 2), H, W, generator=gen)
        w = torch.randn(groups * r(1, 3), x.shape[1] // groups, kH, kW, generator=gen)
        b = torch.randn(w.shape[0], generator=gen) if r(0, 1) else None
        kw = dict(stride=stride, padding=padding, dilation=dilation, groups=groups)
        assert (conv(x, w, b, **kw) - F.conv2d(x, w, b, **kw)).abs().max().item() < 1e-4, kw


def test_conv_gradients_flow_like_torch():
    x = torch.randn(2, 4, 7, 7, requires_grad=True)
    w = torch.randn(6, 2, 3, 3, requires_grad=True)
    grads = []
    for conv in [*CONVS, F.conv2d]:
        out = conv(x, w, None, stride=2, padding=1, groups=2)
        grads.append(torch.autograd.grad((out ** 2).sum(), (x, w)))
    for ours in grads[:2]:
        for a, b in zip(ours, grads[2]):
            assert torch.allclose(a, b, atol=1e-4)


def test_loop_conv_on_the_hand_example():
    image = torch.zeros(1, 1, 6, 6)
    image[..., 3:] = 1.0
    kernel = torch.tensor([[-1.0, 0.0, 1.0]] * 3).view(1, 1, 3, 3)
    out = L.conv2d_loops(image, kernel)[0, 0]
    assert torch.equal(out, torch.tensor([[0.0, 3.0, 3.0, 0.0]] * 4))


def test_output_size_matches_torch():
    for n in range(1, 20):
        for k in range(1, 6):
            for s in range(1, 4):
                for p in range(3):
                    for d in range(1, 3):
                        if d * (k - 1) + 1 > n + 2 * p:
                            continue
                        out = F.conv2d(torch.zeros(1, 1, n, 1), torch.zeros(1, 1, k, 1), stride=s, padding=(p, 0),
                                       dilation=d)
                        assert out.shape[2] == L.conv_output_size(n, k, s, p, d), (n, k, s, p, d)


def _gradient_extent(layers, size=80):
    convs = [nn.Conv2d(1, 1, k, stride=s, dilation=d, bias=False) for k, s, d in layers]
    for c in convs:
        nn.init.ones_(c.weight)
    x = torch.zeros(1, 1, size, size, requires_grad=True)
    y = nn.Sequential(*convs)(x)
    y[0, 0, y.shape[-2] // 2, y.shape[-1] // 2].backward()
    rows = torch.nonzero(x.grad[0, 0].abs().sum(1)).flatten()
    return int(rows.max() - rows.min() + 1)


@pytest.mark.parametrize("case", L._rf_cases()[1:], ids=lambda c: c.label)
def test_receptive_field_matches_the_gradient(case):
    assert L.receptive_field(*case.args) == _gradient_extent(*case.args)


def test_receptive_field_is_one_for_no_layers():
    assert L.receptive_field([]) == 1


def test_shifted_digits_places_digits_in_range():
    X, y, pos = L.shifted_digits(50, split="val", x_range=(2, 5), y_range=(0, 3), canvas=36)
    assert X.shape == (50, 1, 36, 36) and y.shape == (50,) and pos.shape == (50, 2)
    assert pos[:, 0].min() >= 2 and pos[:, 0].max() <= 5 and pos[:, 1].max() <= 3
    for i in range(50):
        ox, oy = pos[i].tolist()
        inside = torch.zeros(36, 36, dtype=torch.bool)
        inside[oy:oy + 28, ox:ox + 28] = True
        assert X[i, 0][~inside].abs().max() == 0           # nothing outside the pasted 28×28 box
    again = L.shifted_digits(50, split="val", x_range=(2, 5), y_range=(0, 3), canvas=36)
    assert torch.equal(X, again[0]) and torch.equal(pos, again[2])    # deterministic
    with pytest.raises(ValueError):
        L.shifted_digits(5, x_range=(0, 13), canvas=40)


def test_filter_image_keeps_size_and_detects_edges():
    img = torch.zeros(20, 20)
    img[:, 10:] = 1.0                                          # a vertical edge
    sobel_x = torch.tensor(L.KERNEL_PRESETS["Sobel x (vertical edges)"], dtype=torch.float32)
    sobel_y = torch.tensor(L.KERNEL_PRESETS["Sobel y (horizontal edges)"], dtype=torch.float32)
    gx, gy = L.filter_image(img, sobel_x), L.filter_image(img, sobel_y)
    assert gx.shape == img.shape
    assert gx[:, 9:11].min() == 4 and gx[:, :8].abs().max() == 0 and gx[:, 12:].abs().max() == 0
    assert gy.abs().max() == 0                                 # blind to a vertical edge, borders included
    blur = torch.tensor(L.KERNEL_PRESETS["box blur"], dtype=torch.float32)
    assert torch.allclose(L.filter_image(torch.full((8, 8), 0.3), blur), torch.full((8, 8), 0.3))


def test_presets_are_3x3_and_blur_sums_to_one():
    for name, k in L.KERNEL_PRESETS.items():
        t = torch.tensor(k, dtype=torch.float32)
        assert t.shape == (3, 3), name
    for name in ["identity", "box blur", "Gaussian blur", "sharpen"]:
        assert abs(torch.tensor(L.KERNEL_PRESETS[name]).sum().item() - 1) < 1e-6
    for name in ["Sobel x (vertical edges)", "Sobel y (horizontal edges)", "Laplacian (blobs, all edges)"]:
        assert torch.tensor(L.KERNEL_PRESETS[name], dtype=torch.float32).sum().item() == 0


@pytest.mark.parametrize("image,preset", [("photo", "Sobel x (vertical edges)"), ("digits", "Gaussian blur"),
                                          ("shapes", "sharpen")])
def test_kernel_editor_draws(image, preset):
    k = L.KERNEL_PRESETS[preset]
    fig = render(L.kernel_editor, image=image, **{f"k{u}{v}": k[u][v] for u in range(3) for v in range(3)})
    assert isinstance(fig, plt.Figure) and len(fig.axes) == 3
    shown = fig.axes[2].images[0].get_array()
    assert shown.shape == tuple(L.editor_images()[image].shape)


def test_editor_images_are_grey_in_unit_range():
    for name, img in L.editor_images().items():
        assert img.ndim == 2 and img.min() >= 0 and img.max() <= 1, name
