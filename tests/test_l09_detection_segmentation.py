"""Lecture 09 (detection and segmentation): IoU against pixel counting, NMS against its brute-force definition,
AP against a numerical integral of the precision envelope, the Dice loss against hard-mask counts, and the
helpers of the promptable segmenter (prompt, flood fill, interior point, widget)."""
from __future__ import annotations

import matplotlib.pyplot as plt
import numpy as np
import pytest
import torch
import torch.nn as nn
from scipy import ndimage

from solutions import l09_detection_segmentation as L
from utils.widgets import render


def paint(boxes: torch.Tensor, size: int = 32) -> torch.Tensor:
    """(N, 4) integer boxes -> (N, size, size) masks of the pixels whose centre is inside."""
    c = torch.arange(size) + 0.5
    in_x = (c[None] > boxes[:, :1]) & (c[None] < boxes[:, 2:3])
    in_y = (c[None] > boxes[:, 1:2]) & (c[None] < boxes[:, 3:4])
    return in_y[:, :, None] & in_x[:, None, :]


# ------------------------------------------------------------------------------------------------------ IoU
def test_box_iou_equals_pixel_counting_for_integer_boxes():
    gen = torch.Generator().manual_seed(0)
    a, b = L.random_boxes(40, gen=gen, integer=True), L.random_boxes(30, gen=gen, integer=True)
    ma, mb = paint(a), paint(b)
    inter = (ma[:, None] & mb[None]).flatten(2).sum(2).float()
    union = (ma[:, None] | mb[None]).flatten(2).sum(2).float()
    expected = torch.where(union > 0, inter / union.clamp(min=1), torch.zeros_like(union))
    torch.testing.assert_close(L.box_iou(a, b), expected, atol=1e-6, rtol=0)


def test_box_iou_hand_values_and_symmetry():
    a = torch.tensor([[0.0, 0, 4, 4]])
    b = torch.tensor([[0.0, 0, 4, 4], [1, 1, 3, 3], [4, 0, 8, 4], [2, 0, 6, 4], [1, 1, 1, 1]])
    torch.testing.assert_close(L.box_iou(a, b), torch.tensor([[1.0, 4 / 16, 0.0, 8 / 24, 0.0]]))
    gen = torch.Generator().manual_seed(1)
    x, y = L.random_boxes(6, gen=gen), L.random_boxes(9, gen=gen)
    torch.testing.assert_close(L.box_iou(x, y), L.box_iou(y, x).T)
    assert not torch.isnan(L.box_iou(torch.tensor([[1.0, 1, 1, 1]]), torch.tensor([[1.0, 1, 1, 1]]))).any()
    assert L.box_iou(torch.zeros(0, 4), y).shape == (0, 9)


# ------------------------------------------------------------------------------------------------------ NMS
def test_nms_matches_brute_force_on_random_clusters_with_ties():
    gen = torch.Generator().manual_seed(2)
    for trial in range(60):
        n = int(torch.randint(1, 40, (1,), generator=gen))
        centres = 32 * torch.rand(max(1, n // 6), 2, generator=gen)
        boxes = centres[torch.randint(0, len(centres), (n,), generator=gen)].repeat(1, 2)
        boxes = boxes + torch.tensor([-4.0, -4, 4, 4]) + torch.randn(n, 4, generator=gen)
        boxes[:, 2:] = torch.maximum(boxes[:, 2:], boxes[:, :2])
        scores = torch.rand(n, generator=gen)
        if trial % 3 == 0:
            scores = (scores * 4).round() / 4  # many ties: order by index
        threshold = float(torch.rand(1, generator=gen))
        assert torch.equal(L.nms(boxes, scores, threshold), L.nms_bruteforce(boxes, scores, threshold))


def test_nms_chain_and_contract():
    boxes = torch.tensor([[0.0, 0, 10, 10], [5, 0, 15, 10], [10, 0, 20, 10]])
    kept = L.nms(boxes, torch.tensor([0.9, 0.8, 0.7]), 0.3)
    assert kept.tolist() == [0, 2] and kept.dtype == torch.int64  # B is suppressed by A, so it cannot hide C
    assert L.nms(torch.zeros(0, 4), torch.zeros(0), 0.5).shape == (0,)
    assert L.nms_bruteforce(torch.zeros(0, 4), torch.zeros(0), 0.5).dtype == torch.int64
    assert L.nms(boxes, torch.tensor([0.1, 0.8, 0.9]), 1.0).tolist() == [2, 1, 0]  # nothing suppressed, best first


# ------------------------------------------------------------------------------------------------------- AP
def envelope_integral(scores, is_tp, n_gt, points=200_001):
    """AP as ∫_0^1 max{precision_k : recall_k >= r} dr, on a dense grid of r."""
    order = np.argsort(-scores.numpy(), kind="stable")
    tp = is_tp.numpy()[order].astype(float).cumsum()
    precision, recall = tp / np.arange(1, len(tp) + 1), tp / n_gt
    r = np.linspace(0, 1, points)[1:]
    best = np.array([precision[recall >= x].max() if (recall >= x).any() else 0.0 for x in r[::200]])
    return float(np.repeat(best, 200)[: len(r)].mean())


def test_average_precision_hand_value_and_extremes():
    scores = torch.tensor([0.9, 0.8, 0.7, 0.6, 0.5])
    tp = torch.tensor([True, False, True, False, True])
    # recall steps of 1/4 at ranks 1, 3, 5 with envelope precisions 1, 2/3, 3/5
    assert L.average_precision(scores, tp, 4) == pytest.approx(0.25 * (1 + 2 / 3 + 3 / 5))
    assert L.average_precision(scores, torch.ones(5, dtype=torch.bool), 5) == pytest.approx(1.0)
    assert L.average_precision(scores, torch.zeros(5, dtype=torch.bool), 5) == 0.0
    assert L.average_precision(torch.zeros(0), torch.zeros(0, dtype=torch.bool), 3) == 0.0


def test_average_precision_equals_the_integral_of_the_envelope():
    gen = torch.Generator().manual_seed(3)
    for _ in range(5):
        s = torch.rand(30, generator=gen)
        tp = torch.rand(30, generator=gen) < s
        n_gt = int(tp.sum()) + 3
        assert L.average_precision(s, tp, n_gt) == pytest.approx(envelope_integral(s, tp, n_gt), abs=2e-3)


# ----------------------------------------------------------------------------------------------------- Dice
def test_dice_loss_on_hard_masks_equals_counting():
    gen = torch.Generator().manual_seed(4)
    target = torch.randint(0, 3, (2, 8, 8), generator=gen)
    pred = torch.randint(0, 3, (2, 8, 8), generator=gen)
    logits = 60.0 * torch.nn.functional.one_hot(pred, 3).permute(0, 3, 1, 2).double()
    dice = [2 * ((pred == c) & (target == c)).sum().item() / ((pred == c).sum() + (target == c).sum()).item()
            for c in range(3)]
    assert L.dice_loss(logits, target, eps=0.0).item() == pytest.approx(1 - np.mean(dice), abs=1e-9)


def test_dice_loss_is_near_zero_when_right_and_differentiable():
    target = torch.randint(0, 4, (2, 6, 6), generator=torch.Generator().manual_seed(5))
    right = 30.0 * torch.nn.functional.one_hot(target, 4).permute(0, 3, 1, 2).float()
    assert L.dice_loss(right, target).item() < 1e-6
    logits = torch.zeros(2, 4, 6, 6, requires_grad=True)
    L.dice_loss(logits, target).backward()
    assert logits.grad.abs().sum() > 0
    # the gradient pushes each pixel's true class up
    true_grad = logits.grad.gather(1, target[:, None]).squeeze(1)
    assert (true_grad < 0).all()


# ------------------------------------------------------------------------------------------ prompt helpers
def test_point_prompt_is_a_gaussian_blob_at_the_click():
    p = L.point_prompt(torch.tensor([[3, 10], [0, 31]]), size=32, sigma=2.0)
    assert p.shape == (2, 1, 32, 32)
    assert p[0, 0, 10, 3] == 1.0 and p[1, 0, 31, 0] == 1.0
    assert p[0, 0, 10, 5].item() == pytest.approx(np.exp(-0.5))  # one sigma (2 px) to the right
    assert p[0, 0, 12, 3].item() == pytest.approx(np.exp(-0.5))  # one sigma down
    assert p.max() <= 1.0


def test_flood_fill_equals_connected_component():
    gen = torch.Generator().manual_seed(6)
    allowed = torch.rand(20, 16, 16, generator=gen) < 0.55
    points = torch.randint(0, 16, (20, 2), generator=gen)
    got = L.flood_fill(allowed, points)
    cross = ndimage.generate_binary_structure(2, 1)
    for b in range(20):
        x, y = points[b].tolist()
        labels, _ = ndimage.label(allowed[b].numpy(), structure=cross)
        expected = (labels == labels[y, x]) & allowed[b].numpy() if allowed[b, y, x] else np.zeros((16, 16), bool)
        assert np.array_equal(got[b].numpy(), expected)


def test_interior_point_is_the_centre_of_a_square_and_inside_every_mask():
    m = torch.zeros(1, 16, 16, dtype=torch.bool)
    m[0, 3:10, 5:12] = True  # 7×7 square centred on (8, 6)
    assert L.interior_point(m).tolist() == [[8, 6]]
    scenes = __import__("utils").data.shapes(20, min_objects=2, max_objects=3, overlap=True, seed=0)
    masks = scenes.masks[:, 0]
    pts = L.interior_point(masks)
    assert masks[torch.arange(20), pts[:, 1], pts[:, 0]].all()


def test_mask_iou():
    a = torch.zeros(3, 4, 4, dtype=torch.bool)
    b = torch.zeros(3, 4, 4, dtype=torch.bool)
    a[0, :2], b[0, 1:3] = True, True  # 4 shared pixels of 12
    a[1, 0, 0] = True
    torch.testing.assert_close(L.mask_iou(a, b), torch.tensor([1 / 3, 0.0, 1.0]))  # both empty: 1


# ------------------------------------------------------------------------------------------------- widget
class ClickIsTheMask(nn.Module):
    """A stand-in segmenter: the mask is wherever the prompt channel exceeds 0.3."""

    def forward(self, x):
        return x[:, 3:4] - 0.3


def test_prompt_explorer_draws_the_prediction_and_the_iou():
    scenes = __import__("utils").data.shapes(2, min_objects=2, max_objects=3, overlap=True, seed=1)
    masks = scenes.masks[0, : int(scenes.n_objects[0])]
    x, y = L.interior_point(masks[:1])[0].tolist()
    fig = L.prompt_explorer(ClickIsTheMask(), scenes.images[0], masks, x=x, y=y)
    assert isinstance(fig, plt.Figure) and len(fig.axes) == 3
    assert "IoU" in fig.axes[2].get_title()
    plt.close(fig)
    background = torch.nonzero(~masks.any(0))[0].tolist()
    fig = render(L.prompt_explorer, model=ClickIsTheMask(), image=scenes.images[0], masks=masks,
                 x=background[1], y=background[0])
    assert "background" in fig.axes[2].get_title()


def test_overlay_and_draw_boxes():
    img = torch.rand(3, 8, 8)
    mask = torch.zeros(8, 8, dtype=torch.bool)
    mask[2:4, 2:4] = True
    out = L.overlay(img, mask)
    assert out.shape == (8, 8, 3) and 0 <= out.min() and out.max() <= 1
    fig, ax = plt.subplots()
    L.draw_boxes(ax, torch.tensor([[1.0, 1, 4, 5]]), ["square"])
    assert len(ax.patches) == 1 and ax.texts[0].get_text() == "square"
    plt.close(fig)
