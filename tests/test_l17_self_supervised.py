"""Lecture 17: the augmentations against hand-computed transforms, NT-Xent against the loop and by hand,
patchify/unpatchify, random masking, the MAE loss and model, the linear probe, the baselines and the widget's plot."""
from __future__ import annotations

import math

import matplotlib.pyplot as plt
import pytest
import torch
import torch.nn.functional as F

from solutions import l17_self_supervised as L
from utils.widgets import render


def identity_params(B: int) -> dict[str, torch.Tensor]:
    return {"scale": torch.ones(B), "angle": torch.zeros(B), "shift": torch.zeros(B, 2),
            "flip": torch.zeros(B, dtype=torch.bool),
            "contrast": torch.ones(B), "brightness": torch.zeros(B), "sigma": torch.zeros(B)}


# ------------------------------------------------------------------------------------------- augmentations
def test_augment_identity_and_flip():
    x = torch.rand(3, 1, 8, 8)
    assert torch.allclose(L.augment(x, **identity_params(3)), x, atol=1e-6)
    p = identity_params(3)
    p["flip"] = torch.tensor([True, False, True])
    out = L.augment(x, **p)
    assert torch.allclose(out[0], x[0].flip(-1), atol=1e-6) and torch.allclose(out[1], x[1], atol=1e-6)


def test_augment_crop_is_a_zoom_and_shift_moves_content():
    x = torch.zeros(1, 1, 8, 8)
    x[0, 0, 3:5, 3:5] = 1.0                                     # a bright 2×2 square in the centre
    p = identity_params(1)
    p["scale"] = torch.tensor([0.5])                            # zoom ×2 into the centre: the square doubles
    out = L.augment(x, **p)
    assert torch.allclose(out.sum(), 4 * x.sum(), atol=1e-4)
    p = identity_params(1)
    p["shift"] = torch.tensor([[0.5, 0.0]])                     # sample further right: content moves left by 2 px
    assert torch.allclose(L.augment(x, **p)[0, 0, :, 1:3], x[0, 0, :, 3:5], atol=1e-6)


def test_augment_rotation_quarter_turn_and_bounds():
    # a quarter turn maps pixel centres onto pixel centres (align_corners=False, square image): exactly rot90
    x = torch.rand(2, 1, 6, 6)
    p = identity_params(2)
    p["angle"] = torch.tensor([math.pi / 2, 0.0])
    out = L.augment(x, **p)
    assert torch.allclose(out[0], torch.rot90(x[0], 1, (-2, -1)), atol=1e-5)
    assert torch.allclose(out[1], x[1], atol=1e-6)
    p = L.random_augment_params(1000, torch.Generator().manual_seed(0), max_degrees=20)
    assert p["angle"].abs().max() <= math.radians(20) and p["angle"].abs().max() > math.radians(18)


def test_augment_jitter_clamps_and_blur_keeps_brightness():
    x = torch.rand(2, 3, 10, 10)
    p = identity_params(2)
    p["contrast"], p["brightness"] = torch.tensor([2.0, 0.5]), torch.tensor([0.5, -0.1])
    out = L.augment(x, **p)
    assert out.min() >= 0 and out.max() <= 1
    assert torch.allclose(out[1], (x[1] * 0.5 - 0.1).clamp(0, 1), atol=1e-6)
    k = L.gaussian_kernels(torch.tensor([0.0, 0.7, 2.0]))
    assert k.shape == (3, 1, 5, 5) and torch.allclose(k.sum((1, 2, 3)), torch.ones(3))
    assert k[0, 0, 2, 2] == pytest.approx(1.0)                  # sigma 0 = identity kernel
    img = torch.zeros(1, 1, 9, 9)
    img[0, 0, 4, 4] = 1.0
    p = identity_params(1)
    p["sigma"] = torch.tensor([1.0])
    blurred = L.augment(img, **p)
    assert blurred.sum().item() == pytest.approx(1.0, abs=1e-5) and blurred.max() < 0.5
    # the per-image grouped conv equals a plain conv with that image's kernel
    assert torch.allclose(blurred, F.conv2d(img, L.gaussian_kernels(torch.tensor([1.0])), padding=2), atol=1e-6)


def test_random_params_and_pair():
    gen = torch.Generator().manual_seed(0)
    p = L.random_augment_params(500, gen, min_scale=0.6, flip_p=0.0)
    assert set(p) == {"scale", "angle", "shift", "flip", "contrast", "brightness", "sigma"}
    assert p["scale"].min() >= 0.6 and p["scale"].max() <= 1 and not p["flip"].any()
    assert 0.3 < (p["sigma"] > 0).float().mean() < 0.7
    v1, v2 = L.augment_pair(torch.rand(4, 1, 16, 16), gen)
    assert v1.shape == v2.shape == (4, 1, 16, 16) and not torch.allclose(v1, v2)


# ---------------------------------------------------------------------------------------------------- NT-Xent
@pytest.mark.parametrize("n,tau", [(1, 0.5), (3, 0.1), (8, 1.0)])
def test_nt_xent_matches_loop(n, tau):
    g = torch.Generator().manual_seed(n)
    z1, z2 = torch.randn(n, 5, generator=g), torch.randn(n, 5, generator=g)
    assert torch.allclose(L.nt_xent(z1, z2, tau), L.nt_xent_loop(z1, z2, tau), atol=1e-5)


def test_nt_xent_by_hand_and_gradient():
    # N = 2, orthogonal pairs: positives have cosine 1, the other image cosine 0
    z1 = torch.tensor([[1.0, 0.0], [0.0, 1.0]])
    tau = 0.5
    expected = -math.log(math.exp(2) / (math.exp(2) + 2 * math.exp(0)))
    assert L.nt_xent(z1, z1.clone(), tau).item() == pytest.approx(expected, rel=1e-6)
    assert L.nt_xent(torch.randn(1, 3), torch.randn(1, 3)).item() == pytest.approx(0.0, abs=1e-6)  # no negatives
    z = torch.randn(4, 6, requires_grad=True)
    L.nt_xent(z, torch.randn(4, 6)).backward()
    assert torch.isfinite(z.grad).all()


def test_alignment_uniformity():
    z = torch.randn(50, 8)
    align, uniform = L.alignment_uniformity(z, z)
    assert align == pytest.approx(0.0, abs=1e-6) and uniform < 0
    collapsed = torch.ones(50, 8)
    assert L.alignment_uniformity(collapsed, collapsed)[1] == pytest.approx(0.0, abs=1e-5)


# ---------------------------------------------------------------------------------------- patches and masks
def test_patchify_by_hand_and_roundtrip():
    x = torch.arange(16.0).reshape(1, 1, 4, 4)
    t = L.patchify(x, 2)
    assert t.shape == (1, 4, 4)
    assert t[0].tolist() == [[0, 1, 4, 5], [2, 3, 6, 7], [8, 9, 12, 13], [10, 11, 14, 15]]
    rgb = torch.rand(2, 3, 8, 8)
    assert torch.equal(L.unpatchify(L.patchify(rgb, 4), 4, 3), rgb)
    assert torch.equal(L.patchify(rgb, 4)[0, 1, :3], rgb[0, :, 0, 4])  # patch 1 starts at column 4, channels last
    with pytest.raises(ValueError, match="not divisible"):
        L.patchify(torch.rand(1, 1, 6, 6), 4)


def test_random_masking_counts_and_consistency():
    gen = torch.Generator().manual_seed(0)
    ids_keep, mask = L.random_masking(64, 16, 0.75, gen)
    assert ids_keep.shape == (64, 4) and mask.shape == (64, 16)
    assert (mask.sum(1) == 12).all()
    assert (mask.gather(1, ids_keep) == 0).all()              # kept = visible
    assert len({tuple(r) for r in mask.tolist()}) > 50         # a different mask for (almost) every image
    ids_keep, mask = L.random_masking(2, 10, 0.0)
    assert ids_keep.shape == (2, 10) and mask.sum() == 0


def test_mae_loss_by_hand_and_baselines():
    pred = torch.zeros(1, 4, 2)
    target = torch.tensor([[[1.0, 1], [2, 2], [0, 0], [3, 3]]])
    mask = torch.tensor([[1.0, 0, 0, 1]])
    assert L.mae_loss(pred, target, mask).item() == pytest.approx((1 + 9) / 2)
    patches = torch.tensor([[[1.0, 1], [3, 3], [5, 5]]])
    m = torch.tensor([[0.0, 0, 1]])
    assert torch.allclose(L.visible_mean_baseline(patches, m), torch.full((1, 3, 2), 2.0))
    train = torch.rand(10, 3, 2)
    assert torch.allclose(L.mean_patch_baseline(train, 4)[2], train.mean(0))


# -------------------------------------------------------------------------------------------- models, probe
def test_tiny_mae_shapes_and_visible_only_encoder():
    torch.manual_seed(0)
    mae = L.TinyMAE()
    x = torch.rand(3, 1, 16, 16)
    pred, mask = mae(x, 0.75, torch.Generator().manual_seed(0))
    assert pred.shape == (3, 16, 16) and mask.shape == (3, 16) and (mask.sum(1) == 12).all()
    assert mae.encode(x, torch.zeros(3, 4, dtype=torch.long)).shape == (3, 4, 64)
    assert mae.features(x).shape == (3, 16 * 64)
    # the encoder never sees masked pixels: changing them leaves the encoded visible tokens unchanged
    ids_keep, m = L.random_masking(3, 16, 0.75, torch.Generator().manual_seed(1))
    noisy = L.unpatchify(L.patchify(x, 4) + m[..., None] * torch.randn(3, 16, 16), 4)
    assert torch.allclose(mae.encode(x, ids_keep), mae.encode(noisy, ids_keep), atol=1e-5)


def test_mae_learns_something_small():
    X = torch.zeros(256, 1, 16, 16)
    X[:, :, 4:12, 6:10] = 1.0                                  # every image is the same bar: easy to fill in
    model, losses = L.train_mae(X, steps=40, batch_size=16, lr=3e-3)
    assert losses[-1] < 0.5 * losses[0]


def test_simclr_and_probe_small():
    g = torch.Generator().manual_seed(0)
    X = torch.rand(64, 1, 16, 16, generator=g)
    model, losses = L.train_simclr(X, steps=3, batch_size=16, width=4)
    assert len(losses) == 3 and all(math.isfinite(v) for v in losses)
    assert model(X[:5]).shape == (5, 64) and L.features(model.encoder, X[:5]).shape == (5, 16)
    # a linearly separable problem: the probe should be perfect
    y = torch.arange(40) % 2
    feats = torch.randn(40, 5, generator=g) + 4 * y[:, None].float()
    assert L.linear_probe(feats[:20], y[:20], feats[20:], y[20:]) == 1.0
    idx = L.few_label_indices(torch.arange(100) % 10, per_class=3)
    assert len(idx) == 30 and torch.bincount(idx % 10).tolist() == [3] * 10
    enc = L.train_supervised(X[:20], torch.arange(20) % 10, steps=2, batch_size=8, width=4)
    assert not enc.training


# ------------------------------------------------------------------------------------------------ widget
@pytest.mark.parametrize("ratio", [0.0, 0.5, 0.9375])
def test_widget_plot(ratio):
    torch.manual_seed(0)
    mae = L.TinyMAE()
    fig = render(lambda mask_ratio, seed: L.plot_mae_reconstruction(mae, torch.rand(4, 1, 16, 16), mask_ratio, seed),
                 mask_ratio=ratio, seed=1)
    assert isinstance(fig, plt.Figure)
    n_masked = 16 - int(16 * (1 - ratio))
    assert f"{n_masked} of 16 patches masked" in fig._suptitle.get_text()
    assert len(fig.axes) == 16 and all(fig.axes[i].get_ylabel() for i in (0, 4, 8, 12))
