"""Lecture 01 — Why deep learning: reference solutions and the exercise registry.

Exercises (in the order the notebook asks for them):

* ``circle_features``       hand-crafted feature map that makes two concentric circles linearly separable
* ``relu_net_forward``      forward pass of a one-hidden-layer ReLU network
* ``relu_interpolant``      weights of a ReLU network that linearly interpolates given points (constructive UAT)
* ``tent_net``              Telgarsky's deep, narrow ReLU network that computes the tent map composed k times
* ``count_linear_regions``  count the linear pieces a 1-D ReLU network cuts its input line into

Beyond the exercises: ``sawtooth`` (the target of the depth-vs-width experiment) and ``plot_relu_pieces``
(the drawing behind the width-slider widget).
"""
from __future__ import annotations

import matplotlib.pyplot as plt
import torch
from torch import nn

from utils.exercises import Case, Exercise

__all__ = [
    "circle_features", "relu_net_forward", "relu_interpolant", "tent_net", "count_linear_regions",
    "sawtooth", "plot_relu_pieces", "EXERCISES",
]


# ------------------------------------------------------------------------------ 1. features vs learned
def circle_features(X: torch.Tensor) -> torch.Tensor:
    """Hand-crafted features for points in the plane.

    X: (N, 2) points (x1, x2). Returns (N, 3): the raw coordinates and the squared radius,
    [x1, x2, x1² + x2²] — a linear classifier on these can draw circles in the original plane.
    """
    return torch.cat([X, (X ** 2).sum(dim=1, keepdim=True)], dim=1)


def _features_radius_not_squared(X):
    return torch.cat([X, X.norm(dim=1, keepdim=True)], dim=1)


def _features_without_raw_coordinates(X):
    return (X ** 2).sum(dim=1, keepdim=True)


def _features_squares_not_summed(X):
    return torch.cat([X, X ** 2], dim=1)


# --------------------------------------------------------------------------- 2. universal approximation
def relu_net_forward(x: torch.Tensor, W1: torch.Tensor, b1: torch.Tensor, W2: torch.Tensor,
                     b2: torch.Tensor) -> torch.Tensor:
    """One-hidden-layer ReLU network, weights stored like ``nn.Linear`` (out_features, in_features).

    x: (N, d_in), W1: (H, d_in), b1: (H,), W2: (d_out, H), b2: (d_out,). Returns (N, d_out):
    y = relu(x W1ᵀ + b1) W2ᵀ + b2.
    """
    hidden = torch.relu(x @ W1.T + b1)  # (N, H): one "hinge" per hidden unit
    return hidden @ W2.T + b2


def _forward_without_relu(x, W1, b1, W2, b2):
    return (x @ W1.T + b1) @ W2.T + b2


def _forward_relu_on_output_too(x, W1, b1, W2, b2):
    return torch.relu(torch.relu(x @ W1.T + b1) @ W2.T + b2)


def relu_interpolant(knots: torch.Tensor, values: torch.Tensor
                     ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """Weights of a one-hidden-layer ReLU net that linearly interpolates the points (knots[i], values[i]).

    knots: (K,) strictly increasing, values: (K,), K >= 2, both of the same float dtype.
    Returns (W1 (K-1, 1), b1 (K-1,), W2 (1, K-1), b2 (1,)) for :func:`relu_net_forward`: one hidden unit
    relu(x - knots[i]) per segment i = 0..K-2, so on [knots[0], knots[-1]] the net is the piecewise-linear
    interpolant. Its output weight is the *change* of slope at that knot; b2 is the value at the first knot.
    """
    slopes = (values[1:] - values[:-1]) / (knots[1:] - knots[:-1])       # (K-1,) slope of each segment
    slope_changes = torch.cat([slopes[:1], slopes[1:] - slopes[:-1]])     # the first unit starts the first slope
    W1 = torch.ones(len(slopes), 1, dtype=knots.dtype)
    b1 = -knots[:-1]                                                      # unit i switches on at knots[i]
    W2 = slope_changes.unsqueeze(0)
    b2 = values[:1].clone()
    return W1, b1, W2, b2


def _interpolant_slopes_not_changes(knots, values):
    W1, b1, _, b2 = relu_interpolant(knots, values)
    slopes = (values[1:] - values[:-1]) / (knots[1:] - knots[:-1])
    return W1, b1, slopes.unsqueeze(0), b2


def _interpolant_without_output_bias(knots, values):
    W1, b1, W2, b2 = relu_interpolant(knots, values)
    return W1, b1, W2, torch.zeros_like(b2)


def _interpolant_kinks_at_wrong_end(knots, values):
    W1, b1, W2, b2 = relu_interpolant(knots, values)
    return W1, -knots[1:], W2, b2  # units switch on at the right end of their segment


def _run_interpolant(impl, case: Case) -> dict[str, object]:
    """Evaluate the student's network on a dense grid over [knots[0], knots[-1]] (any weights that compute the
    interpolant pass) and report its hidden width."""
    knots, values = case.args
    W1, b1, W2, b2 = (torch.as_tensor(t, dtype=knots.dtype) for t in impl(knots.clone(), values.clone()))
    grid = torch.linspace(knots[0].item(), knots[-1].item(), 301, dtype=knots.dtype).unsqueeze(1)
    return {"hidden units": int(W1.shape[0]), "network on a grid": relu_net_forward(grid, W1, b1, W2, b2)[:, 0]}


# ------------------------------------------------------------------------------------ 3. depth vs width
def sawtooth(x: torch.Tensor, k: int) -> torch.Tensor:
    """The tent map T(x) = 1 - |2x - 1| composed k times on [0, 1]: 2^(k-1) teeth, 2^k linear pieces."""
    for _ in range(k):
        x = 1 - (2 * x - 1).abs()
    return x


def tent_net(k: int) -> nn.Sequential:
    """Telgarsky's construction: a depth-k, width-2 ReLU network computing ``sawtooth(x, k)`` on [0, 1].

    The tent map is T(x) = 2·relu(x) - 4·relu(x - 1/2). Each hidden layer holds (relu(t), relu(t - 1/2)) of the
    current value t; the next Linear forms T(t) = 2 h1 - 4 h2 and feeds it to the next pair.
    Returns nn.Sequential(Linear(1, 2), ReLU, [Linear(2, 2), ReLU] × (k-1), Linear(2, 1)): 6k + 1 parameters.
    Input (N, 1) in [0, 1], output (N, 1).
    """
    def linear(weight, bias):
        layer = nn.Linear(len(weight[0]), len(weight))
        with torch.no_grad():
            layer.weight.copy_(torch.tensor(weight, dtype=torch.float32))
            layer.bias.copy_(torch.tensor(bias, dtype=torch.float32))
        return layer

    split = [0.0, -0.5]                                  # the pair (relu(t), relu(t - 1/2))
    layers = [linear([[1.0], [1.0]], split), nn.ReLU()]  # t = x
    for _ in range(k - 1):
        layers += [linear([[2.0, -4.0], [2.0, -4.0]], split), nn.ReLU()]  # t = T(previous t)
    layers.append(linear([[2.0, -4.0]], [0.0]))          # output T(t)
    return nn.Sequential(*layers)


def _tent_net_one_too_many(k):
    return tent_net(k + 1)


def _tent_net_slope_one(k):
    """T(x) = relu(x) - 2 relu(x - 1/2) = min(x, 1 - x): the tent's slope 2 forgotten."""
    net = tent_net(k)
    with torch.no_grad():
        for layer in list(net)[2::2]:  # every Linear after the first
            layer.weight /= 2
    return net


def _tent_net_bias_plus_half(k):
    net = tent_net(k)
    with torch.no_grad():
        for layer in list(net)[:-1:2]:
            layer.bias[1] = 0.5
    return net


def _run_tent_net(impl, case: Case) -> dict[str, object]:
    (k,) = case.args
    net = impl(k)
    grid = torch.linspace(0, 1, 513).unsqueeze(1)
    with torch.no_grad():
        out = net(grid)
    return {"output on a grid of [0, 1]": out, "parameter count": sum(p.numel() for p in net.parameters())}


def count_linear_regions(model: nn.Sequential, x: torch.Tensor) -> int:
    """How many linear pieces a ReLU network with 1-D input cuts the sorted points ``x`` into.

    model: nn.Sequential of nn.Linear and nn.ReLU layers. x: (N, 1), sorted ascending.
    Inside a region every hidden ReLU keeps its on/off state, so the network is one affine function there.
    Record the on/off pattern (pre-activation > 0) of *all* hidden units of *all* layers at every point and
    return 1 + the number of neighbouring points whose patterns differ (an int).
    """
    patterns = []
    h = x
    with torch.no_grad():
        for layer in model:
            h = layer(h)
            if isinstance(layer, nn.ReLU):
                patterns.append(h > 0)  # relu(z) > 0 exactly when z > 0
    if not patterns:  # no ReLU at all: the network is a single affine map
        return 1
    pattern = torch.cat(patterns, dim=1)                    # (N, total hidden units)
    changes = (pattern[1:] != pattern[:-1]).any(dim=1)     # (N-1,) did any unit flip between neighbours?
    return 1 + int(changes.sum())


def _regions_last_layer_only(model, x):
    h, last = x, None
    with torch.no_grad():
        for layer in model:
            h = layer(h)
            if isinstance(layer, nn.ReLU):
                last = h > 0
    return 1 + int((last[1:] != last[:-1]).any(dim=1).sum())


def _regions_forgot_plus_one(model, x):
    return count_linear_regions(model, x) - 1


def _regions_first_layer_only(model, x):
    with torch.no_grad():
        first = model[1](model[0](x)) > 0
    return 1 + int((first[1:] != first[:-1]).any(dim=1).sum())


# ------------------------------------------------------------------------------------------- the widget
def plot_relu_pieces(x: torch.Tensor, target: torch.Tensor, W1: torch.Tensor, b1: torch.Tensor, W2: torch.Tensor,
                     b2: torch.Tensor, title: str = "") -> plt.Figure:
    """The fit of a one-hidden-layer ReLU net to a 1-D target (top) and the ReLU pieces it sums (bottom).

    x: (N,) sorted inputs, target: (N,). Weights as in :func:`relu_net_forward` with d_in = d_out = 1.
    Each hidden unit contributes W2[0, i] · relu(W1[i, 0] x + b1[i]); its kink sits at x = -b1[i] / W1[i, 0].
    """
    x, target = x.detach().double(), target.detach().double()
    W1, b1, W2, b2 = (t.detach().double() for t in (W1, b1, W2, b2))
    pieces = W2[0] * torch.relu(x[:, None] * W1[:, 0] + b1)         # (N, H)
    fit = pieces.sum(1) + b2[0]
    safe_w = torch.where(W1[:, 0] == 0, torch.ones_like(b1), W1[:, 0])
    kinks = (-b1 / safe_w)[(W1[:, 0] != 0) & (-b1 / safe_w >= x[0]) & (-b1 / safe_w <= x[-1])]
    mse = float(((fit - target) ** 2).mean())

    fig, (top, bottom) = plt.subplots(2, 1, figsize=(7, 5.5), sharex=True, gridspec_kw={"height_ratios": [3, 2]})
    top.plot(x, target, color="black", lw=2.5, alpha=0.35, label="target f(x)")
    top.plot(x, fit, color="C1", lw=1.5, label=f"network (MSE {mse:.1e})")
    top.plot(kinks, torch.full_like(kinks, float(target.min()) - 0.15), "|", color="C1", ms=8,
             label=f"{len(kinks)} kinks in view")
    top.set(title=title or f"{W1.shape[0]} hidden ReLUs", ylabel="y")
    top.legend(loc="upper left", fontsize=8)
    bottom.plot(x, pieces, lw=0.8, alpha=0.7)
    bottom.set(title="the pieces it adds up: $w_{2,i}\\,\\mathrm{relu}(w_{1,i}x + b_{1,i})$", xlabel="x",
               ylabel="contribution")
    fig.tight_layout()
    return fig


# ----------------------------------------------------------------------------------------------- cases
def _circle_cases() -> list[Case]:
    g = torch.Generator().manual_seed(0)
    return [
        Case((torch.tensor([[3.0, 4.0]]),), label="one point (3, 4): r² = 25"),
        Case((torch.randn(16, 2, generator=g),), label="16 random points"),
        Case((torch.zeros(4, 2),), label="points at the origin"),
        Case((torch.tensor([[-1.0, 2.0], [0.5, -0.5]]),), label="negative coordinates"),
    ]


def _forward_cases() -> list[Case]:
    g = torch.Generator().manual_seed(1)

    def rand(*shape):
        return torch.randn(*shape, generator=g)

    return [
        Case((torch.tensor([[-1.0], [0.0], [2.0]]), torch.tensor([[1.0], [-1.0]]), torch.tensor([0.0, 1.0]),
              torch.tensor([[1.0, 1.0]]), torch.tensor([0.0])), label="two hinges |x|-like, hand-checkable"),
        Case((rand(8, 1), rand(5, 1), rand(5), rand(1, 5), rand(1)), label="1-D in, 1-D out, H=5"),
        Case((rand(6, 3), rand(4, 3), rand(4), rand(2, 4), rand(2)), label="3-D in, 2-D out, H=4"),
        Case((rand(7, 2), rand(16, 2), rand(16), -rand(3, 16).abs(), rand(3) - 2), label="negative outputs"),
    ]


def _interpolant_cases() -> list[Case]:
    d = torch.float64
    g = torch.Generator().manual_seed(2)
    uneven = torch.cumsum(torch.rand(9, generator=g, dtype=d) + 0.1, 0)
    return [
        Case((torch.tensor([0.0, 1.0], dtype=d), torch.tensor([1.0, 3.0], dtype=d)), label="one segment"),
        Case((torch.tensor([-1.0, 0.0, 1.0], dtype=d), torch.tensor([1.0, 0.0, 1.0], dtype=d)), label="|x| on [-1, 1]"),
        Case((torch.linspace(-1, 1, 9, dtype=d), torch.sin(3 * torch.linspace(-1, 1, 9, dtype=d))),
             label="sin(3x) at 9 knots"),
        Case((uneven, torch.randn(9, generator=g, dtype=d)), label="9 uneven knots, random values"),
    ]


def _region_cases() -> list[Case]:
    inside = torch.linspace(0, 1, 1002)[1:-1].unsqueeze(1)  # no grid point sits exactly on a dyadic kink
    torch.manual_seed(3)
    shallow = nn.Sequential(nn.Linear(1, 6), nn.ReLU(), nn.Linear(6, 1))
    deep = nn.Sequential(nn.Linear(1, 5), nn.ReLU(), nn.Linear(5, 5), nn.ReLU(), nn.Linear(5, 5), nn.ReLU(),
                         nn.Linear(5, 1))
    wide_grid = torch.linspace(-3, 3, 4001).unsqueeze(1)
    return [Case((tent_net(k), inside), label=f"tent_net({k}) on (0, 1)") for k in (1, 2, 4)] + [
        Case((shallow, wide_grid), label="random shallow net (6 units) on [-3, 3]"),
        Case((deep, wide_grid), label="random deep net (3 × 5 units) on [-3, 3]"),
    ]


EXERCISES = [
    Exercise(
        name="circle_features",
        reference=circle_features,
        cases=_circle_cases,
        mistakes={
            "used the radius r instead of the squared radius r²": _features_radius_not_squared,
            "dropped the raw coordinates (returned only r²)": _features_without_raw_coordinates,
            "kept x1² and x2² separately instead of their sum": _features_squares_not_summed,
        },
        hint="Keep X and append one column: (X ** 2).sum(dim=1, keepdim=True). torch.cat along dim=1.",
    ),
    Exercise(
        name="relu_net_forward",
        reference=relu_net_forward,
        cases=_forward_cases,
        mistakes={
            "forgot the ReLU (the network is then just one linear map)": _forward_without_relu,
            "applied a ReLU to the output too (outputs can never be negative)": _forward_relu_on_output_too,
        },
        hint="Weights are stored like nn.Linear: x @ W1.T + b1 gives (N, H); relu; then @ W2.T + b2. "
             "No ReLU on the output layer.",
    ),
    Exercise(
        name="relu_interpolant",
        reference=relu_interpolant,
        cases=_interpolant_cases,
        runner=_run_interpolant,
        mistakes={
            "used each segment's slope as its output weight instead of the change of slope":
                _interpolant_slopes_not_changes,
            "forgot the output bias (the value at the first knot)": _interpolant_without_output_bias,
            "put each unit's kink at the right end of its segment": _interpolant_kinks_at_wrong_end,
        },
        hint="Unit i is relu(x - knots[i]) (W1 = 1, b1 = -knots[i]). Its output weight is slope[i] - slope[i-1] "
             "(slope[0] for the first unit): every unit adds its slope change on top of the ones before it.",
        atol=1e-8,
    ),
    Exercise(
        name="tent_net",
        reference=tent_net,
        cases=lambda: [Case((k,), label=f"k = {k}") for k in (1, 2, 3, 5)],
        runner=_run_tent_net,
        mistakes={
            "one tent too many (k+1 hidden layers)": _tent_net_one_too_many,
            "forgot the tent's slope 2: used relu(t) - 2 relu(t - 1/2) = min(t, 1 - t)": _tent_net_slope_one,
            "second unit relu(t + 1/2) instead of relu(t - 1/2)": _tent_net_bias_plus_half,
        },
        hint="T(t) = 2 relu(t) - 4 relu(t - 1/2). First Linear(1, 2): weight [[1], [1]], bias [0, -1/2]. Each "
             "next Linear(2, 2) computes T from the pair and splits it again: weight [[2, -4], [2, -4]], bias "
             "[0, -1/2]. Last Linear(2, 1): weight [[2, -4]], bias [0].",
    ),
    Exercise(
        name="count_linear_regions",
        reference=count_linear_regions,
        cases=_region_cases,
        mistakes={
            "looked only at the last hidden layer's on/off pattern": _regions_last_layer_only,
            "looked only at the first hidden layer's on/off pattern": _regions_first_layer_only,
            "counted the boundaries, not the regions (forgot the + 1)": _regions_forgot_plus_one,
        },
        hint="Loop over the layers; after every nn.ReLU keep (h > 0). torch.cat the patterns along dim=1, compare "
             "each row with the next, count rows where anything changed, add 1.",
    ),
]
