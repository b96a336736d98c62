"""Lecture 02: the Value engine against torch autograd, the deep-net helpers, the widget's plot, and the
lesson itself (gradients vanish through 30 plain tanh layers, not through 30 residual ones)."""
from __future__ import annotations

import math
import random

import matplotlib.pyplot as plt
import pytest
import torch
import torch.nn as nn

import utils
from solutions.l02_mlp_autograd_residuals import (
    EXPRESSIONS,
    DeepMLP,
    PlainBlock,
    ResidualBlock,
    Value,
    backprop,
    layer_grad_norms,
    plot_layer_grad_norms,
    train_sgd,
)


def _n_inputs(expression) -> int:
    return expression.__code__.co_argcount


@pytest.mark.parametrize("name", list(EXPRESSIONS))
def test_value_matches_torch_autograd(name):
    expression = EXPRESSIONS[name]
    rng = random.Random(name)
    inputs = [rng.uniform(-1.5, 1.5) for _ in range(_n_inputs(expression))]
    if name == "a / b - 1":
        inputs[1] += 3.0  # keep away from division by ~0
    leaves = [Value(x) for x in inputs]
    out = expression(*leaves)
    out.backward()
    tensors = [torch.tensor(x, dtype=torch.float64, requires_grad=True) for x in inputs]
    out_t = expression(*tensors)
    out_t.backward()
    assert out.data == pytest.approx(out_t.item(), abs=1e-12)
    for v, t in zip(leaves, tensors):
        assert v.grad == pytest.approx(t.grad.item(), abs=1e-9, rel=1e-9), name


def test_micrograd_readme_numbers():
    a, b = Value(-4.0), Value(2.0)
    g = EXPRESSIONS["micrograd README example"](a, b)
    g.backward()
    assert round(g.data, 4) == 24.7041
    assert round(a.grad, 4) == 138.8338
    assert round(b.grad, 4) == 645.5773


def test_reversed_operators_and_unary_ops():
    v = Value(2.0)
    assert (2 * v).data == 4.0 and (1 - v).data == -1.0 and (1 + v).data == 3.0
    assert (1 / v).data == 0.5 and (v / 4).data == 0.5 and (-v).data == -2.0 and (v ** 3).data == 8.0
    assert Value(-1.0).relu().data == 0.0 and Value(0.0).exp().data == 1.0
    assert Value(0.0).tanh().data == 0.0
    assert "Value(data=2" in repr(v)


def test_backprop_accumulates_over_paths_and_leaves_root_grad_one():
    a = Value(3.0)
    out = a * a + a  # d/da = 2a + 1 = 7
    backprop(out)
    assert out.grad == 1.0 and a.grad == 7.0
    leaf = Value(5.0)
    backprop(leaf)  # a graph of one node
    assert leaf.grad == 1.0


def test_deep_graph_backprop_does_not_hit_recursion_limit_at_mlp_scale():
    x = Value(0.5)
    h = x
    for _ in range(300):  # a chain as deep as the biggest sum in the lecture's MLP
        h = h * 1.0 + 0.0
    h.backward()
    assert x.grad == pytest.approx(1.0)


def test_blocks_and_deep_mlp_shapes_and_parameter_counts():
    torch.manual_seed(0)
    x = torch.randn(7, 16)
    block = ResidualBlock(16)
    torch.testing.assert_close(block(x), x + torch.tanh(block.linear(x)))
    plain = PlainBlock(16)
    plain.load_state_dict(block.state_dict())  # same parameter names
    torch.testing.assert_close(plain(x), torch.tanh(block.linear(x)))
    deep_plain, deep_res = DeepMLP(5, 16, PlainBlock), DeepMLP(5, 16, ResidualBlock)
    count = lambda m: sum(p.numel() for p in m.parameters())  # noqa: E731
    assert count(deep_plain) == count(deep_res)
    assert deep_res(torch.randn(4, 2)).shape == (4, 2)
    assert DeepMLP(0, 8, PlainBlock)(torch.randn(3, 2)).shape == (3, 2)


def test_layer_grad_norms_matches_manual_computation_and_clears_old_grads():
    X, y = utils.data.moons(50, seed=3)
    torch.manual_seed(0)
    model = DeepMLP(4, 8, ResidualBlock)
    first = layer_grad_norms(model, X, y)
    assert first.shape == (6,)  # input layer + 4 blocks + output layer
    second = layer_grad_norms(model, X, y)  # called again: same numbers (no accumulation)
    torch.testing.assert_close(first, second)
    model.zero_grad()
    nn.functional.cross_entropy(model(X), y).backward()
    manual = torch.stack([model.inp.weight.grad.norm()] + [b.linear.weight.grad.norm() for b in model.blocks]
                         + [model.out.weight.grad.norm()])
    torch.testing.assert_close(first, manual)


def test_gradients_vanish_in_plain_but_not_in_residual_net():
    X, y = utils.data.moons(500, noise=0.1, seed=0)
    ratios = {}
    for block in (PlainBlock, ResidualBlock):
        torch.manual_seed(0)
        n = layer_grad_norms(DeepMLP(30, 32, block), X, y)
        ratios[block.__name__] = (n[1] / n[-2]).item()
    assert ratios["PlainBlock"] < 1e-3
    assert ratios["ResidualBlock"] > 0.1


def test_residual_net_trains_where_plain_stalls():
    X, y = utils.data.moons(200, noise=0.1, seed=0)
    final = {}
    for block in (PlainBlock, ResidualBlock):
        torch.manual_seed(0)
        losses = train_sgd(DeepMLP(30, 32, block), X, y, steps=150, lr=0.1)
        assert len(losses) == 150
        final[block.__name__] = losses[-1]
    assert final["PlainBlock"] > 0.9 * math.log(2)
    assert final["ResidualBlock"] < 0.2


def _update(depth: int, residual: bool) -> plt.Figure:  # the notebook's widget update
    X, y = utils.data.moons(100, seed=0)
    torch.manual_seed(0)
    n = layer_grad_norms(DeepMLP(depth, 32, ResidualBlock if residual else PlainBlock), X, y)
    return plot_layer_grad_norms({f"{depth} blocks": n}, title="t")


@pytest.mark.parametrize("depth,residual", [(1, False), (60, False), (60, True)])
def test_widget_update_renders_one_log_scale_line(depth, residual):
    fig = utils.widgets.render(_update, depth=depth, residual=residual)
    ax = fig.axes[0]
    assert ax.get_yscale() == "log"
    assert len(ax.lines) == 1 and len(ax.lines[0].get_xdata()) == depth + 2
    assert ax.get_xlabel() and ax.get_ylabel() and ax.get_title()


def test_plot_layer_grad_norms_handles_zeros_and_rejects_empty():
    fig = plot_layer_grad_norms({"a": torch.tensor([0.0, 1e-3, 1.0]), "b": [1.0, 2.0]}, ylim=None)
    assert len(fig.axes[0].lines) == 2
    plt.close(fig)
    with pytest.raises(ValueError):
        plot_layer_grad_norms({})
