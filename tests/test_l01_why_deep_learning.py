"""Lecture 01 specifics beyond the generic exercise checks: the references agree with torch and with the math."""
from __future__ import annotations

import matplotlib

matplotlib.use("Agg")

import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pytest  # noqa: E402
import torch  # noqa: E402
from sklearn.linear_model import LogisticRegression  # noqa: E402
from torch import nn  # noqa: E402

import utils  # noqa: E402
from solutions import l01_why_deep_learning as L  # noqa: E402


def test_circle_features_make_circles_linearly_separable():
    X, y = utils.data.circles(n=300, noise=0.05, seed=0)
    raw = LogisticRegression(max_iter=2000).fit(X.numpy(), y.numpy()).score(X.numpy(), y.numpy())
    F = L.circle_features(X)
    lifted = LogisticRegression(max_iter=2000).fit(F.numpy(), y.numpy()).score(F.numpy(), y.numpy())
    assert F.shape == (300, 3)
    assert torch.equal(F[:, :2], X)
    assert raw < 0.65 and lifted > 0.98


def test_relu_net_forward_matches_nn_sequential():
    torch.manual_seed(0)
    net = nn.Sequential(nn.Linear(3, 7), nn.ReLU(), nn.Linear(7, 2))
    x = torch.randn(11, 3)
    got = L.relu_net_forward(x, net[0].weight, net[0].bias, net[2].weight, net[2].bias)
    torch.testing.assert_close(got, net(x))


@pytest.mark.parametrize("n_knots", [2, 3, 9, 40])
def test_relu_interpolant_is_the_piecewise_linear_interpolant(n_knots):
    g = torch.Generator().manual_seed(n_knots)
    knots = torch.cumsum(torch.rand(n_knots, generator=g, dtype=torch.float64) + 0.05, 0)
    values = torch.randn(n_knots, generator=g, dtype=torch.float64)
    W1, b1, W2, b2 = L.relu_interpolant(knots, values)
    assert W1.shape == (n_knots - 1, 1) and b1.shape == (n_knots - 1,) and W2.shape == (1, n_knots - 1)
    torch.testing.assert_close(L.relu_net_forward(knots[:, None], W1, b1, W2, b2)[:, 0], values)
    grid = torch.linspace(knots[0].item(), knots[-1].item(), 500, dtype=torch.float64)
    expected = np.interp(grid.numpy(), knots.numpy(), values.numpy())
    np.testing.assert_allclose(L.relu_net_forward(grid[:, None], W1, b1, W2, b2)[:, 0].numpy(), expected,
                               atol=1e-10)


def test_interpolant_error_falls_like_width_to_the_minus_four():
    x = torch.linspace(-1, 1, 4001, dtype=torch.float64)[:, None]
    mses = []
    for width in (16, 32, 64, 128):
        knots = torch.linspace(-1, 1, width + 1, dtype=torch.float64)
        params = L.relu_interpolant(knots, torch.sin(3 * knots))
        mses.append(((L.relu_net_forward(x, *params) - torch.sin(3 * x)) ** 2).mean().item())
    slope = np.polyfit(np.log([16, 32, 64, 128]), np.log(mses), 1)[0]
    assert -4.2 < slope < -3.8


def test_sawtooth_has_2_to_the_k_pieces_and_hits_0_and_1():
    for k in range(1, 7):
        x = torch.arange(2 ** k + 1, dtype=torch.float64) / 2 ** k  # the breakpoints j / 2^k
        expected = torch.tensor([j % 2 for j in range(2 ** k + 1)], dtype=torch.float64)
        torch.testing.assert_close(L.sawtooth(x, k), expected)
        mid = (x[:-1] + x[1:]) / 2
        torch.testing.assert_close(L.sawtooth(mid, k), torch.full_like(mid, 0.5))


@pytest.mark.parametrize("k", [1, 2, 3, 6, 8])
def test_tent_net_is_exact_with_6k_plus_1_parameters_and_2_to_the_k_regions(k):
    net = L.tent_net(k)
    assert sum(p.numel() for p in net.parameters()) == 6 * k + 1
    assert [type(m) for m in net] == [nn.Linear, nn.ReLU] * k + [nn.Linear]
    x = torch.linspace(0, 1, 2049)[:, None]
    with torch.no_grad():
        torch.testing.assert_close(net(x), L.sawtooth(x, k), atol=1e-5, rtol=0)
    inside = torch.linspace(0, 1, 20002)[1:-1, None]
    assert L.count_linear_regions(net, inside) == 2 ** k


def test_count_linear_regions_of_hand_placed_kinks():
    kinks = torch.tensor([-0.7, -0.1, 0.2, 0.9, 5.0])  # 5.0 lies outside the grid
    net = nn.Sequential(nn.Linear(1, 5), nn.ReLU(), nn.Linear(5, 1))
    with torch.no_grad():
        net[0].weight.fill_(1.0)
        net[0].bias.copy_(-kinks)
    x = torch.linspace(-1, 1, 1001)[:, None]
    assert L.count_linear_regions(net, x) == 5
    with torch.no_grad():
        net[0].weight[2] = -1.0  # a unit facing left flips too, at the same place
        net[0].bias[2] = 0.2
    assert L.count_linear_regions(net, x) == 5
    assert L.count_linear_regions(nn.Sequential(nn.Linear(1, 1)), x) == 1  # no ReLU: one affine piece


def test_plot_relu_pieces_renders_the_widget_figure():
    x = torch.linspace(-1, 1, 401, dtype=torch.float64)
    knots = torch.linspace(-1, 1, 9, dtype=torch.float64)
    params = L.relu_interpolant(knots, torch.sin(3 * knots))
    fig = L.plot_relu_pieces(x, torch.sin(3 * x), *params, title="built by hand")
    try:
        top, bottom = fig.axes
        assert top.get_title() == "built by hand"
        assert len(bottom.lines) == 8  # one curve per hidden unit
        labels = [t.get_text() for t in top.get_legend().get_texts()]
        assert any("8 kinks" in t for t in labels)
    finally:
        plt.close(fig)
    torch.manual_seed(0)  # a trained-looking float32 net with some zero input weights must draw too
    W1, b1 = torch.randn(16, 1), torch.randn(16)
    W1[3] = 0.0
    result = utils.widgets.render(L.plot_relu_pieces, x=x.float(), target=torch.sin(3 * x.float()), W1=W1, b1=b1,
                                  W2=torch.randn(1, 16), b2=torch.zeros(1))
    assert isinstance(result, plt.Figure)
