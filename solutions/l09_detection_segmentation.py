"""Lecture 09 — Detection and segmentation: reference solutions and exercise registry.

Exercises (checked by ``ex.check`` in ``lectures/l09_detection_segmentation.ipynb``):

* ``box_iou``: intersection over union of every pair of boxes, batched, with torch ops;
* ``nms``: greedy non-maximum suppression (the kept indices, best first), checked against a pure-Python
  brute force (:func:`nms_bruteforce`) in the lecture;
* ``average_precision``: the area under the precision-recall curve with the precision envelope (all-point
  interpolation, as PASCAL VOC since 2010 and COCO);
* ``dice_loss``: the soft multi-class Dice loss a U-Net is trained with.

Helpers the lecture uses (tested in ``tests/test_l09_detection_segmentation.py``): :func:`nms_bruteforce`,
:func:`point_prompt` (the Gaussian-blob prompt channel), :func:`flood_fill` and :func:`interior_point` (the
baselines and the click protocol of the promptable segmenter), :func:`mask_iou`, :func:`draw_boxes`,
:func:`overlay` and the widget's update function :func:`prompt_explorer`.
"""
from __future__ import annotations

from typing import Sequence

import matplotlib.pyplot as plt
import numpy as np
import torch
import torch.nn.functional as F

from utils.exercises import Case, Exercise

__all__ = [
    "box_iou", "nms", "nms_bruteforce", "average_precision", "dice_loss", "point_prompt", "flood_fill",
    "interior_point", "mask_iou", "box_area", "random_boxes", "draw_boxes", "overlay", "prompt_explorer", "EXERCISES",
]


# ------------------------------------------------------------------------------------------------------ IoU
def box_area(boxes: torch.Tensor) -> torch.Tensor:
    """(N, 4) boxes (x0, y0, x1, y1) -> (N,) areas (x1 - x0) * (y1 - y0)."""
    return (boxes[:, 2] - boxes[:, 0]) * (boxes[:, 3] - boxes[:, 1])


def box_iou(boxes_a: torch.Tensor, boxes_b: torch.Tensor) -> torch.Tensor:
    """IoU of every pair: boxes_a (N, 4), boxes_b (M, 4), corners (x0, y0, x1, y1) with x1 >= x0, y1 >= y0.

    Returns (N, M): |A ∩ B| / |A ∪ B|, with |A ∪ B| = |A| + |B| − |A ∩ B|; 0 where the union is empty
    (two zero-area boxes). Boxes that only touch along an edge have IoU 0.
    """
    top_left = torch.maximum(boxes_a[:, None, :2], boxes_b[None, :, :2])  # (N, M, 2)
    bottom_right = torch.minimum(boxes_a[:, None, 2:], boxes_b[None, :, 2:])  # (N, M, 2)
    wh = (bottom_right - top_left).clamp(min=0)  # no overlap -> width or height 0, never negative
    inter = wh[..., 0] * wh[..., 1]
    union = box_area(boxes_a)[:, None] + box_area(boxes_b)[None, :] - inter
    return torch.where(union > 0, inter / union.clamp(min=1e-12), torch.zeros_like(inter))


def _iou_no_clamp(boxes_a, boxes_b):
    top_left = torch.maximum(boxes_a[:, None, :2], boxes_b[None, :, :2])
    bottom_right = torch.minimum(boxes_a[:, None, 2:], boxes_b[None, :, 2:])
    wh = bottom_right - top_left
    inter = wh[..., 0] * wh[..., 1]
    union = box_area(boxes_a)[:, None] + box_area(boxes_b)[None, :] - inter
    return torch.where(union > 0, inter / union.clamp(min=1e-12), torch.zeros_like(inter))


def _iou_union_without_minus(boxes_a, boxes_b):
    top_left = torch.maximum(boxes_a[:, None, :2], boxes_b[None, :, :2])
    bottom_right = torch.minimum(boxes_a[:, None, 2:], boxes_b[None, :, 2:])
    wh = (bottom_right - top_left).clamp(min=0)
    inter = wh[..., 0] * wh[..., 1]
    union = box_area(boxes_a)[:, None] + box_area(boxes_b)[None, :]
    return torch.where(union > 0, inter / union.clamp(min=1e-12), torch.zeros_like(inter))


def _iou_inclusive(boxes_a, boxes_b):
    """The old PASCAL VOC pixel convention: widths are x1 - x0 + 1 (corners inclusive)."""
    top_left = torch.maximum(boxes_a[:, None, :2], boxes_b[None, :, :2])
    bottom_right = torch.minimum(boxes_a[:, None, 2:], boxes_b[None, :, 2:])
    wh = (bottom_right - top_left + 1).clamp(min=0)
    inter = wh[..., 0] * wh[..., 1]

    def area(b):
        return (b[:, 2] - b[:, 0] + 1) * (b[:, 3] - b[:, 1] + 1)

    union = area(boxes_a)[:, None] + area(boxes_b)[None, :] - inter
    return inter / union


def _iou_swapped_corners(boxes_a, boxes_b):
    top_left = torch.minimum(boxes_a[:, None, :2], boxes_b[None, :, :2])  # the enclosing box, not the overlap
    bottom_right = torch.maximum(boxes_a[:, None, 2:], boxes_b[None, :, 2:])
    wh = (bottom_right - top_left).clamp(min=0)
    inter = wh[..., 0] * wh[..., 1]
    union = box_area(boxes_a)[:, None] + box_area(boxes_b)[None, :] - inter
    return torch.where(union > 0, inter / union.clamp(min=1e-12), torch.zeros_like(inter))


def _iou_paired(boxes_a, boxes_b):
    """IoU of a[i] with b[i] only: (N,) instead of all (N, M) pairs."""
    return torch.stack([box_iou(a[None], b[None])[0, 0] for a, b in zip(boxes_a, boxes_b)])


def random_boxes(n: int, size: float = 32.0, min_side: float = 1.0, max_side: float = 16.0,
                 gen: torch.Generator | None = None, integer: bool = False) -> torch.Tensor:
    """(n, 4) random boxes inside a size × size canvas, sides in [min_side, max_side]."""
    gen = gen or torch.Generator().manual_seed(0)
    wh = min_side + (max_side - min_side) * torch.rand(n, 2, generator=gen)
    xy = (size - wh) * torch.rand(n, 2, generator=gen)
    boxes = torch.cat([xy, xy + wh], 1)
    return boxes.round() if integer else boxes


def _iou_cases() -> list[Case]:
    T = torch.tensor
    return [
        Case((T([[0.0, 0, 4, 4], [2, 2, 6, 6], [10, 10, 12, 14]]), T([[1.0, 1, 5, 3], [3, 0, 7, 4], [0, 0, 1, 1]])),
             label="3 × 3 pairs: partial overlaps and a far-away box"),
        Case((T([[0.0, 0, 4, 4]]), T([[0.0, 0, 4, 4], [1, 1, 3, 3], [-2, -2, 8, 8]])),
             label="identical box (IoU 1), box inside (containment), box around it"),
        Case((T([[0.0, 0, 2, 2], [0, 0, 2, 2]]), T([[5.0, 5, 8, 8], [2, 0, 4, 2], [2, 2, 3, 3]])),
             label="no overlap: diagonal apart, touching along an edge, touching at a corner"),
        Case((T([[1.0, 1, 1, 1], [0, 0, 3, 1]]), T([[1.0, 1, 1, 1], [0, 0, 0, 5]])),
             label="zero-area boxes: IoU 0, never NaN"),
        Case((random_boxes(7, gen=torch.Generator().manual_seed(1)),
              random_boxes(5, gen=torch.Generator().manual_seed(2))),
             label="7 × 5 random float boxes"),
        Case((torch.zeros(0, 4), random_boxes(3)), label="no boxes in a: an empty (0, 3) result"),
    ]


# ------------------------------------------------------------------------------------------------------ NMS
def nms(boxes: torch.Tensor, scores: torch.Tensor, iou_threshold: float) -> torch.Tensor:
    """Greedy non-maximum suppression. boxes (N, 4) (x0, y0, x1, y1), scores (N,).

    Visit the boxes from the highest score down (ties: the lower index first); keep a box unless it overlaps
    an already KEPT box with IoU > iou_threshold (strictly: IoU equal to the threshold is kept, as in
    torchvision). Returns the kept indices (int64, shape (K,)) in decreasing order of score.
    """
    order = torch.argsort(scores, descending=True, stable=True)
    iou = box_iou(boxes[order], boxes[order])  # (N, N), rows and columns in score order
    keep = torch.ones(len(order), dtype=torch.bool)
    for i in range(len(order)):
        if keep[i]:  # only a kept box suppresses: a suppressed box has no say
            keep[i + 1:] &= iou[i, i + 1:] <= iou_threshold
    return order[keep]


def nms_bruteforce(boxes: torch.Tensor, scores: torch.Tensor, iou_threshold: float) -> torch.Tensor:
    """NMS written from the definition in plain Python, one pair at a time — slow, obviously right.

    Same contract as :func:`nms`; used as the reference the vectorised version is checked against.
    """
    b = [[float(v) for v in row] for row in boxes.tolist()]
    s = [float(v) for v in scores.tolist()]
    order = sorted(range(len(s)), key=lambda i: (-s[i], i))

    def iou(p: list[float], q: list[float]) -> float:
        w = max(0.0, min(p[2], q[2]) - max(p[0], q[0]))
        h = max(0.0, min(p[3], q[3]) - max(p[1], q[1]))
        union = (p[2] - p[0]) * (p[3] - p[1]) + (q[2] - q[0]) * (q[3] - q[1]) - w * h
        return w * h / union if union > 0 else 0.0

    kept: list[int] = []
    for i in order:
        if all(iou(b[i], b[j]) <= iou_threshold for j in kept):
            kept.append(i)
    return torch.tensor(kept, dtype=torch.int64)


def _nms_unsorted(boxes, scores, iou_threshold):
    """Forgot to sort: visits the boxes in input order."""
    iou = box_iou(boxes, boxes)
    keep = torch.ones(len(boxes), dtype=torch.bool)
    for i in range(len(boxes)):
        if keep[i]:
            keep[i + 1:] &= iou[i, i + 1:] <= iou_threshold
    return torch.nonzero(keep).flatten()


def _nms_suppressed_also_suppress(boxes, scores, iou_threshold):
    order = torch.argsort(scores, descending=True, stable=True)
    iou = box_iou(boxes[order], boxes[order])
    keep = torch.ones(len(order), dtype=torch.bool)
    for i in range(len(order)):
        keep[i + 1:] &= iou[i, i + 1:] <= iou_threshold  # every higher-scoring box suppresses, kept or not
    return order[keep]


def _nms_greater_equal(boxes, scores, iou_threshold):
    order = torch.argsort(scores, descending=True, stable=True)
    iou = box_iou(boxes[order], boxes[order])
    keep = torch.ones(len(order), dtype=torch.bool)
    for i in range(len(order)):
        if keep[i]:
            keep[i + 1:] &= iou[i, i + 1:] < iou_threshold
    return order[keep]


def _nms_index_order(boxes, scores, iou_threshold):
    return nms(boxes, scores, iou_threshold).sort().values


def _nms_cases() -> list[Case]:
    T = torch.tensor
    gen = torch.Generator().manual_seed(3)
    centers = 6 + 20 * torch.rand(4, 2, generator=gen)  # 4 objects, 6 noisy boxes around each
    jitter = torch.randn(24, 4, generator=gen)
    cluster = torch.cat([centers.repeat_interleave(6, 0) - 4, centers.repeat_interleave(6, 0) + 4], 1) + jitter
    return [
        Case((T([[0.0, 0, 10, 10], [1, 1, 11, 11], [20, 20, 30, 30], [0, 0, 9, 10]]), T([0.6, 0.9, 0.8, 0.3]), 0.5),
             label="two near-duplicates of one object (scores not sorted) and a separate object"),
        Case((T([[0.0, 0, 10, 10], [5, 0, 15, 10], [10, 0, 20, 10]]), T([0.9, 0.8, 0.7]), 0.3),
             label="a chain A–B–C: B overlaps A and C, A and C do not overlap"),
        Case((T([[0.0, 0, 2, 1], [0, 0, 1, 1]]), T([0.9, 0.8]), 0.5),
             label="IoU exactly equal to the threshold (0.5): both kept"),
        Case((cluster, torch.rand(24, generator=gen), 0.5), label="4 clusters of 6 jittered boxes, random scores"),
        Case((cluster, torch.rand(24, generator=gen), 0.0), label="threshold 0: any overlap suppresses"),
        Case((T([[0.0, 0, 4, 4]]), T([0.5]), 0.5), label="a single box"),
        Case((torch.zeros(0, 4), torch.zeros(0), 0.5), label="no boxes: an empty int64 tensor"),
    ]


# ------------------------------------------------------------------------------------------------------- AP
def average_precision(scores: torch.Tensor, is_true_positive: torch.Tensor, n_ground_truth: int) -> float:
    """Area under the precision-recall curve of one class (all-point interpolation).

    scores (N,): confidence of each detection; is_true_positive (N,) bool: it matched a ground-truth object;
    n_ground_truth >= 1: how many objects there were (missed ones cap the recall below 1).
    Rank the detections by decreasing score (ties: stable, input order); after the top k,
        precision_k = TP_k / k,   recall_k = TP_k / n_ground_truth.
    Make precision monotone (each p_k becomes max_{j >= k} p_j: the envelope), then
        AP = Σ_k (recall_k − recall_{k−1}) · p_k,   recall_0 = 0.
    No detections: 0.0. Returns a Python float in [0, 1].
    """
    if len(scores) == 0:
        return 0.0
    order = torch.argsort(scores, descending=True, stable=True)
    tp = is_true_positive[order].double()
    tp_cum = tp.cumsum(0)
    precision = tp_cum / torch.arange(1, len(tp) + 1, dtype=torch.float64)
    recall = tp_cum / n_ground_truth
    envelope = precision.flip(0).cummax(0).values.flip(0)  # best precision at this recall or beyond
    recall_steps = torch.diff(recall, prepend=torch.zeros(1, dtype=torch.float64))
    return float((recall_steps * envelope).sum())


def _ap_no_envelope(scores, is_true_positive, n_ground_truth):
    if len(scores) == 0:
        return 0.0
    order = torch.argsort(scores, descending=True, stable=True)
    tp_cum = is_true_positive[order].double().cumsum(0)
    precision = tp_cum / torch.arange(1, len(tp_cum) + 1, dtype=torch.float64)
    recall = tp_cum / n_ground_truth
    return float((torch.diff(recall, prepend=torch.zeros(1, dtype=torch.float64)) * precision).sum())


def _ap_recall_over_detections(scores, is_true_positive, n_ground_truth):
    return average_precision(scores, is_true_positive, max(len(scores), 1))


def _ap_unsorted(scores, is_true_positive, n_ground_truth):
    return average_precision(torch.zeros_like(scores), is_true_positive, n_ground_truth)  # input order


def _ap_11_point(scores, is_true_positive, n_ground_truth):
    """PASCAL VOC 2007: mean of the envelope at recall 0, 0.1, ..., 1."""
    if len(scores) == 0:
        return 0.0
    order = torch.argsort(scores, descending=True, stable=True)
    tp_cum = is_true_positive[order].double().cumsum(0)
    precision = tp_cum / torch.arange(1, len(tp_cum) + 1, dtype=torch.float64)
    recall = tp_cum / n_ground_truth
    total = 0.0
    for r in torch.linspace(0, 1, 11, dtype=torch.float64):
        reached = precision[recall >= r - 1e-12]
        total += float(reached.max()) if len(reached) else 0.0
    return total / 11


def _ap_cases() -> list[Case]:
    T = torch.tensor
    gen = torch.Generator().manual_seed(4)
    s = torch.rand(40, generator=gen)
    tp = torch.rand(40, generator=gen) < 0.4 + 0.6 * s  # better detections score higher, on average
    return [
        Case((T([0.9, 0.8, 0.7, 0.6, 0.5]), T([True, False, True, False, True]), 4),
             label="TP, FP, TP, FP, TP with 4 objects (one never detected)"),
        Case((T([0.9, 0.8, 0.7]), T([True, True, True]), 3), label="perfect: every detection right, all found"),
        Case((T([0.3, 0.9, 0.5, 0.7]), T([True, False, True, False]), 2),
             label="scores not sorted: the two false positives rank first"),
        Case((T([0.9, 0.8]), T([False, False]), 2), label="only false positives: AP 0"),
        Case((s, tp, int(tp.sum()) + 5), label="40 random detections, 5 objects never detected"),
        Case((torch.zeros(0), torch.zeros(0, dtype=torch.bool), 3), label="no detections at all: AP 0"),
    ]


# ----------------------------------------------------------------------------------------------------- Dice
def dice_loss(logits: torch.Tensor, target: torch.Tensor, eps: float = 1.0) -> torch.Tensor:
    """Soft multi-class Dice loss. logits (B, C, H, W), target (B, H, W) int64 in [0, C).

    p = softmax over the C classes; t = one-hot(target) as (B, C, H, W). Per class c, pooled over the batch
    and the pixels:  Dice_c = (2 Σ p·t + eps) / (Σ p + Σ t + eps).  Return 1 − mean_c Dice_c (a 0-dim tensor).
    """
    p = logits.softmax(1)
    t = F.one_hot(target, logits.shape[1]).permute(0, 3, 1, 2).to(p.dtype)
    dims = (0, 2, 3)  # sum over batch and pixels, one Dice per class
    dice = (2 * (p * t).sum(dims) + eps) / (p.sum(dims) + t.sum(dims) + eps)
    return 1 - dice.mean()


def _dice_sigmoid(logits, target, eps=1.0):
    p = logits.sigmoid()
    t = F.one_hot(target, logits.shape[1]).permute(0, 3, 1, 2).to(p.dtype)
    dice = (2 * (p * t).sum((0, 2, 3)) + eps) / (p.sum((0, 2, 3)) + t.sum((0, 2, 3)) + eps)
    return 1 - dice.mean()


def _dice_pooled_classes(logits, target, eps=1.0):
    p = logits.softmax(1)
    t = F.one_hot(target, logits.shape[1]).permute(0, 3, 1, 2).to(p.dtype)
    return 1 - (2 * (p * t).sum() + eps) / (p.sum() + t.sum() + eps)


def _dice_score_not_loss(logits, target, eps=1.0):
    return 1 - dice_loss(logits, target, eps)


def _dice_per_image(logits, target, eps=1.0):
    p = logits.softmax(1)
    t = F.one_hot(target, logits.shape[1]).permute(0, 3, 1, 2).to(p.dtype)
    dice = (2 * (p * t).sum((2, 3)) + eps) / (p.sum((2, 3)) + t.sum((2, 3)) + eps)
    return 1 - dice.mean()


def _dice_runner(impl, case: Case) -> dict[str, torch.Tensor] | None:
    """The loss and its gradient with respect to the logits (a loss is only as good as its gradient)."""
    logits = case.args[0].detach().clone().requires_grad_(True)
    loss = impl(logits, case.args[1].clone(), **case.kwargs)
    if loss is None:
        return None
    if not isinstance(loss, torch.Tensor) or loss.dim() != 0:
        return {"loss": loss}
    loss.backward()
    grad = logits.grad if logits.grad is not None else torch.zeros_like(logits)
    return {"loss": loss.detach(), "gradient w.r.t. logits": grad}


def _dice_cases() -> list[Case]:
    gen = torch.Generator().manual_seed(5)
    target = torch.randint(0, 4, (2, 6, 6), generator=gen)
    confident = 20 * F.one_hot(target, 4).permute(0, 3, 1, 2).float()
    blob = torch.zeros(1, 8, 8, dtype=torch.int64)
    blob[0, 2:5, 3:7] = 1
    return [
        Case((torch.randn(2, 4, 6, 6, generator=gen), target), label="random logits, 4 classes, batch of 2"),
        Case((confident, target), label="confident and correct: loss ≈ 0"),
        Case((torch.zeros(1, 2, 8, 8), blob), label="2 classes, uniform logits, a small foreground blob"),
        Case((torch.randn(3, 3, 5, 5, generator=gen), torch.zeros(3, 5, 5, dtype=torch.int64)),
             label="classes 1 and 2 absent from the target"),
        Case((torch.randn(2, 4, 6, 6, generator=gen), target), {"eps": 1e-3}, label="eps = 1e-3"),
    ]


# ----------------------------------------------------------------------------------- promptable segmentation
def point_prompt(points: torch.Tensor, size: int, sigma: float = 2.0) -> torch.Tensor:
    """Encode clicks as images: points (B, 2) integer pixel (x, y) -> (B, 1, size, size), a Gaussian blob
    exp(−‖pixel centre − click centre‖² / 2σ²) peaking at 1 on the clicked pixel."""
    centres = torch.arange(size, dtype=torch.float32)
    dx2 = (centres[None, :] - points[:, :1].float()) ** 2  # (B, size): along x
    dy2 = (centres[None, :] - points[:, 1:].float()) ** 2  # (B, size): along y
    return torch.exp(-(dy2[:, :, None] + dx2[:, None, :]) / (2 * sigma ** 2))[:, None]


def flood_fill(allowed: torch.Tensor, points: torch.Tensor) -> torch.Tensor:
    """The pixels reachable from each click through 4-connected ``allowed`` pixels (a paint bucket).

    allowed (B, H, W) bool, points (B, 2) integer (x, y). Returns (B, H, W) bool; empty where the click itself
    is not allowed. Grows the region one ring at a time (a 3×3 cross convolution) until nothing changes.
    """
    b = torch.arange(len(points))
    region = torch.zeros_like(allowed)
    region[b, points[:, 1], points[:, 0]] = True
    region &= allowed
    cross = torch.tensor([[0.0, 1, 0], [1, 1, 1], [0, 1, 0]])[None, None]
    while True:
        grown = (F.conv2d(region[:, None].float(), cross, padding=1)[:, 0] > 0) & allowed
        if torch.equal(grown, region):
            return region
        region = grown


def interior_point(masks: torch.Tensor) -> torch.Tensor:
    """The most interior pixel of each mask (the click a person makes, and SAM's single-point protocol).

    masks (B, H, W) bool, each non-empty -> (B, 2) int64 (x, y): the pixel that survives the most 3×3
    erosions (the first one in row-major order on ties).
    """
    depth = torch.zeros(masks.shape)
    m = masks.float()[:, None]
    while m.sum() > 0:
        depth += m[:, 0]
        m = -F.max_pool2d(-m, 3, stride=1, padding=1)  # erosion = min-pool (outside the image counts as inside)
    flat = depth.flatten(1).argmax(1)
    width = masks.shape[-1]
    return torch.stack([flat % width, flat // width], 1)


def mask_iou(pred: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """IoU of boolean masks (B, H, W) pairwise along the batch -> (B,); 1 when both are empty."""
    inter = (pred & target).flatten(1).sum(1).float()
    union = (pred | target).flatten(1).sum(1).float()
    return torch.where(union > 0, inter / union.clamp(min=1), torch.ones_like(union))


# ------------------------------------------------------------------------------------------------- plotting
def draw_boxes(ax: plt.Axes, boxes: torch.Tensor, names: Sequence[str] | None = None, color: str = "w",
               linestyle: str = "-", fontsize: float = 7) -> None:
    """Draw (K, 4) boxes (x0, y0, x1, y1 in pixel units, x1/y1 exclusive) on an ``imshow`` axis."""
    for k, (x0, y0, x1, y1) in enumerate(boxes.tolist()):
        ax.add_patch(plt.Rectangle((x0 - 0.5, y0 - 0.5), x1 - x0, y1 - y0, fill=False, edgecolor=color, lw=1.2,
                                   linestyle=linestyle))
        if names is not None:
            ax.text(x0 - 0.5, y0 - 1, names[k], color=color, fontsize=fontsize, va="bottom")


def overlay(image: torch.Tensor, mask: torch.Tensor, color: Sequence[float] = (1.0, 1.0, 1.0), tint: float = 0.3,
            dim: float = 0.3) -> np.ndarray:
    """A spotlight on a mask: image (3, H, W) in [0, 1], mask (H, W) bool -> (H, W, 3) array in which the masked
    pixels are lightened towards ``color`` (so masked background shows up grey) and the rest dimmed to ``dim``."""
    img = image.permute(1, 2, 0).numpy().astype(np.float64)
    m = mask.numpy().astype(bool)
    out = dim * img
    out[m] = (1 - tint) * img[m] + tint * np.asarray(color)
    return out


@torch.no_grad()
def prompt_explorer(model: torch.nn.Module, image: torch.Tensor, masks: torch.Tensor, x: int = 16, y: int = 16,
                    sigma: float = 2.0) -> plt.Figure:
    """Widget update: click (x, y) on ``image`` (3, S, S); ``model`` maps (1, 4, S, S) image + prompt to mask
    logits (1, 1, S, S). Shows the click, the predicted mask and the true mask of the object under the click
    (``masks`` (K, S, S) bool, visible pixels) with their IoU; a background click should give an empty mask.
    """
    size = image.shape[-1]
    point = torch.tensor([[x, y]])
    was_training = model.training
    model.eval()
    logits = model(torch.cat([image[None], point_prompt(point, size, sigma)], 1))[0, 0]
    model.train(was_training)
    pred = logits > 0
    hit = [k for k in range(len(masks)) if masks[k, y, x]]
    truth = masks[hit[0]] if hit else torch.zeros_like(pred)
    iou = float(mask_iou(pred[None], truth[None])[0])
    fig, axes = plt.subplots(1, 3, figsize=(9, 3.2))
    panels = [(image.permute(1, 2, 0).numpy(), "the scene and your click"),
              (overlay(image, pred), f"predicted mask ({int(pred.sum())} px)"),
              (overlay(image, truth),
               f"true object under the click: IoU {iou:.2f}" if hit else "background click: no object")]
    for ax, (img, title) in zip(axes, panels):
        ax.imshow(np.clip(img, 0, 1))
        ax.plot([x], [y], marker="+", color="w", markersize=14, mew=2)
        ax.set_title(title, fontsize=9)
        ax.set(xticks=[], yticks=[])
    axes[0].set(xlabel=f"x = {x}", ylabel=f"y = {y}")
    fig.tight_layout()
    return fig


# ------------------------------------------------------------------------------------------------- registry
EXERCISES = [
    Exercise(
        name="box_iou",
        reference=box_iou,
        cases=_iou_cases,
        mistakes={
            "no clamp on the overlap's width/height: two negatives multiply into a positive 'intersection'":
                _iou_no_clamp,
            "union = area_a + area_b (forgot to subtract the intersection, counted twice)": _iou_union_without_minus,
            "inclusive pixel corners (x1 − x0 + 1, the old VOC convention): our x1/y1 are exclusive": _iou_inclusive,
            "corners swapped: min of the top-lefts and max of the bottom-rights is the ENCLOSING box, not the "
            "overlap": _iou_swapped_corners,
            "IoU of a[i] with b[i] only, instead of every pair (N, M)": _iou_paired,
        },
        hint="broadcast a[:, None, :] against b[None, :, :]: the overlap's top-left is the max of the top-lefts, "
             "its bottom-right the min of the bottom-rights; clamp its width and height at 0; "
             "union = area_a + area_b − intersection; return 0 where the union is 0.",
    ),
    Exercise(
        name="nms",
        reference=nms,
        cases=_nms_cases,
        mistakes={
            "did not sort by score: boxes visited in input order": _nms_unsorted,
            "suppressed by every higher-scoring box, even ones already suppressed (only KEPT boxes suppress)":
                _nms_suppressed_also_suppress,
            "suppressed at IoU >= threshold; the convention is IoU > threshold": _nms_greater_equal,
            "returned the kept indices sorted by index instead of by decreasing score": _nms_index_order,
        },
        hint="order = argsort(scores, descending=True, stable=True); IoU matrix of boxes[order]; walk i over the "
             "order and, if box i is still kept, drop every later box j with IoU > threshold; return order[keep].",
    ),
    Exercise(
        name="average_precision",
        reference=average_precision,
        cases=_ap_cases,
        atol=1e-6, rtol=1e-6,
        mistakes={
            "no precision envelope: the area under the raw zig-zag curve": _ap_no_envelope,
            "recall divided by the number of detections instead of the number of ground-truth objects":
                _ap_recall_over_detections,
            "did not sort the detections by score": _ap_unsorted,
            "11-point interpolation (VOC 2007): this lecture integrates over every recall step": _ap_11_point,
        },
        hint="sort by score (stable, descending); tp_cum = cumsum; precision = tp_cum / (1..N), recall = tp_cum / "
             "n_ground_truth; envelope = precision.flip(0).cummax(0).values.flip(0); AP = sum over k of "
             "(recall_k − recall_{k−1}) · envelope_k.",
    ),
    Exercise(
        name="dice_loss",
        reference=dice_loss,
        cases=_dice_cases,
        runner=_dice_runner,
        mistakes={
            "sigmoid instead of softmax: the classes of a pixel must compete (their probabilities sum to 1)":
                _dice_sigmoid,
            "one Dice over all classes at once: the big background class swamps the small objects":
                _dice_pooled_classes,
            "returned the Dice score; the loss is 1 − mean Dice": _dice_score_not_loss,
            "Dice per image, then averaged: this lecture pools the whole batch (one Dice per class)": _dice_per_image,
        },
        hint="p = logits.softmax(1); t = F.one_hot(target, C).permute(0, 3, 1, 2).float(); sum over dims (0, 2, 3) "
             "to get one Dice per class; return 1 − the mean over classes.",
    ),
]
