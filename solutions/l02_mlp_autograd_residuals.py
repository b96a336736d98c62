"""Lecture 02 — an autograd engine from scratch, MLPs, vanishing gradients and residual connections.

Reference solutions and the exercise registry (COURSE_DESIGN §2):

* ``Value``: a micrograd-style scalar autograd node; the student writes the local-derivative closures of
  ``__mul__`` and ``tanh``.
* ``backprop(root)``: the backward pass — topological sort, seed ``root.grad = 1``, chain rule in reverse order.
* ``ResidualBlock``: ``x + tanh(linear(x))`` as an ``nn.Module``.
* ``layer_grad_norms(model, X, y)``: the gradient norm of every ``nn.Linear`` weight, input to output.

Beyond the exercises: ``PlainBlock`` and ``DeepMLP`` (the 30-layer nets of the lecture), ``train_sgd`` and
``plot_layer_grad_norms`` (the per-layer gradient-norm plot behind the widget).
"""
from __future__ import annotations

import math
from typing import Callable, Mapping, Sequence

import matplotlib.pyplot as plt
import torch
import torch.nn as nn
import torch.nn.functional as F

from utils.exercises import Case, Exercise, run_module

__all__ = [
    "Value", "backprop", "ResidualBlock", "PlainBlock", "DeepMLP", "layer_grad_norms", "train_sgd",
    "plot_layer_grad_norms", "EXPRESSIONS", "EXERCISES",
]


# ------------------------------------------------------------------------------------------ the engine
class Value:
    """A scalar that remembers how it was computed, so gradients can flow back through it (micrograd's API).

    ``data``: the number; ``grad``: d(root)/d(this node), filled by ``root.backward()``;
    ``_prev``: the nodes it was computed from; ``_backward``: pushes ``self.grad`` to ``_prev`` (chain rule).
    """

    def __init__(self, data: float, _children: tuple = (), _op: str = ""):
        self.data = data
        self.grad = 0.0
        self._backward = lambda: None  # a leaf has nobody to pass its gradient to
        self._prev = tuple(_children)  # a tuple (not a set) keeps the traversal order deterministic
        self._op = _op

    def __add__(self, other: Value | float) -> Value:
        other = other if isinstance(other, Value) else Value(other)
        out = Value(self.data + other.data, (self, other), "+")

        def _backward():
            self.grad += out.grad  # d(a + b)/da = 1: addition routes the gradient unchanged
            other.grad += out.grad

        out._backward = _backward
        return out

    def __mul__(self, other: Value | float) -> Value:
        other = other if isinstance(other, Value) else Value(other)
        out = Value(self.data * other.data, (self, other), "*")

        def _backward():
            self.grad += other.data * out.grad  # d(a * b)/da = b: each input gets the *other* one
            other.grad += self.data * out.grad

        out._backward = _backward
        return out

    def __pow__(self, k: int | float) -> Value:
        assert isinstance(k, (int, float)), "only constant exponents: v ** 2, v ** -1"
        out = Value(self.data ** k, (self,), f"**{k}")

        def _backward():
            self.grad += k * self.data ** (k - 1) * out.grad

        out._backward = _backward
        return out

    def relu(self) -> Value:
        out = Value(max(self.data, 0.0), (self,), "relu")

        def _backward():
            self.grad += (out.data > 0) * out.grad

        out._backward = _backward
        return out

    def tanh(self) -> Value:
        t = math.tanh(self.data)
        out = Value(t, (self,), "tanh")

        def _backward():
            self.grad += (1 - t ** 2) * out.grad  # d tanh(x)/dx = 1 - tanh(x)^2: uses the OUTPUT

        out._backward = _backward
        return out

    def exp(self) -> Value:
        out = Value(math.exp(self.data), (self,), "exp")

        def _backward():
            self.grad += out.data * out.grad  # d e^x/dx = e^x

        out._backward = _backward
        return out

    def backward(self) -> None:
        """Fill ``.grad`` of every node in the graph that produced ``self`` with d(self)/d(node)."""
        backprop(self)

    # everything else is built from the operations above, so it needs no backward of its own
    def __neg__(self) -> Value:
        return self * -1

    def __radd__(self, other: float) -> Value:  # 1 + v
        return self + other

    def __sub__(self, other: Value | float) -> Value:
        return self + (-other)

    def __rsub__(self, other: float) -> Value:  # 1 - v
        return other + (-self)

    def __rmul__(self, other: float) -> Value:  # 2 * v
        return self * other

    def __truediv__(self, other: Value | float) -> Value:
        return self * other ** -1

    def __rtruediv__(self, other: float) -> Value:  # 1 / v
        return other * self ** -1

    def __repr__(self) -> str:
        return f"Value(data={self.data:.4g}, grad={self.grad:.4g})"


def backprop(root: Value) -> None:
    """The backward pass: set ``node.grad = d root / d node`` for every node of root's graph.

    1. topological order: every node after all the nodes it was computed from (depth-first, visit once);
    2. ``root.grad = 1`` (d root / d root);
    3. walk the order backwards (root first) and call each node's ``_backward``: by the time a node runs,
       every node that uses it has already added its share to ``node.grad``.
    Gradients accumulate (``+=``): call it on a fresh graph or zero the leaves' ``.grad`` first.
    """
    order, visited = [], set()

    def visit(node: Value) -> None:
        if node not in visited:
            visited.add(node)
            for child in node._prev:
                visit(child)
            order.append(node)  # after all its children

    visit(root)
    root.grad = 1.0
    for node in reversed(order):
        node._backward()


# Named expressions the checks build with a student's Value class (inputs are the leaves, in order).
def _shared_two_paths(a, b, c):
    x = a * b  # x reaches the output twice: directly and through y
    y = (x * c).tanh()
    return y + x


def _shared_twice(a, b):
    d = a * b
    return d + d


def _micrograd_readme(a, b):
    c = a + b
    d = a * b + b ** 3
    c += c + 1
    c += 1 + c + (-a)
    d += d * 2 + (b + a).relu()
    d += 3 * d + (b - a).relu()
    e = c - d
    f = e ** 2
    g = f / 2.0
    g += 10.0 / f
    return g


EXPRESSIONS: dict[str, Callable[..., Value]] = {
    "a * b": lambda a, b: a * b,
    "a * a (a used twice)": lambda a: a * a,
    "2 * a (reversed operator)": lambda a: 2 * a,
    "tanh(a)": lambda a: a.tanh(),
    "a * b * c": lambda a, b, c: a * b * c,
    "tanh(a * b)": lambda a, b: (a * b).tanh(),
    "tanh(w1*x1 + w2*x2 + b) (a neuron)": lambda x1, w1, x2, w2, b: (x1 * w1 + x2 * w2 + b).tanh(),
    "x = a*b; tanh(x*c) + x (x on two paths)": _shared_two_paths,
    "d = a*b; d + d": _shared_twice,
    "a / b - 1": lambda a, b: a / b - 1,
    "1 - tanh(a)**2 + exp(b)": lambda a, b: 1 - a.tanh() ** 2 + b.exp(),
    "micrograd README example": _micrograd_readme,
}


def _run_expression(value_cls: type, name: str, inputs: Sequence[float],
                    do_backward: Callable[[Value], None]) -> dict:
    leaves = [value_cls(x) for x in inputs]
    out = EXPRESSIONS[name](*leaves)
    do_backward(out)
    return {"output": float(out.data), "root grad": float(out.grad), "grads": [float(v.grad) for v in leaves]}


# --------------------------------------------------------------------------------- exercise 1: Value
def _value_runner(impl: type, case: Case) -> dict:
    """Build the case's expression from ``impl`` leaves, backpropagate with the reference ``backprop`` (so
    this exercise does not depend on the student's backward), return the output and the leaves' grads."""
    name, inputs = case.args
    return _run_expression(impl, name, inputs, backprop)


def _value_cases() -> list[Case]:
    return [
        Case(("a * b", (2.0, -3.0)), label="a * b at a=2, b=-3"),
        Case(("a * a (a used twice)", (3.0,)), label="a * a at a=3 (a node used twice: grads must add up)"),
        Case(("2 * a (reversed operator)", (1.5,)), label="2 * a at a=1.5 (calls __rmul__, a plain number)"),
        Case(("tanh(a)", (0.5,)), label="tanh(a) at a=0.5"),
        Case(("tanh(a)", (-2.0,)), label="tanh(a) at a=-2 (saturating)"),
        Case(("tanh(a)", (0.0,)), label="tanh(a) at a=0"),
        Case(("a * b * c", (2.0, -3.0, 0.5)), label="a * b * c"),
        Case(("tanh(a * b)", (0.7, -1.2)), label="tanh(a * b)"),
        Case(("tanh(w1*x1 + w2*x2 + b) (a neuron)", (2.0, -3.0, 0.0, 1.0, 6.8813735870195432)),
             label="the tanh neuron of micrograd's video (output 0.7071)"),
        Case(("a / b - 1", (3.0, -4.0)), label="a / b - 1 (uses **, neg, sub)"),
        Case(("micrograd README example", (-4.0, 2.0)), label="micrograd's README example (a=-4, b=2)"),
    ]


class _MulForgotPlusEquals(Value):
    def __mul__(self, other):
        other = other if isinstance(other, Value) else Value(other)
        out = Value(self.data * other.data, (self, other), "*")

        def _backward():
            self.grad = other.data * out.grad  # overwrites what another use of `self` added
            other.grad = self.data * out.grad

        out._backward = _backward
        return out


class _MulOwnValue(Value):
    def __mul__(self, other):
        other = other if isinstance(other, Value) else Value(other)
        out = Value(self.data * other.data, (self, other), "*")

        def _backward():
            self.grad += self.data * out.grad
            other.grad += other.data * out.grad

        out._backward = _backward
        return out


class _MulNoClosure(Value):
    def __mul__(self, other):
        other = other if isinstance(other, Value) else Value(other)
        out = Value(self.data * other.data, (self, other), "*")

        def _backward():
            self.grad += other.data * out.grad
            other.grad += self.data * out.grad

        return out  # forgot `out._backward = _backward`


class _TanhFromInput(Value):
    def tanh(self):
        out = Value(math.tanh(self.data), (self,), "tanh")

        def _backward():
            self.grad += (1 - self.data ** 2) * out.grad  # 1 - x^2 instead of 1 - tanh(x)^2

        out._backward = _backward
        return out


# ------------------------------------------------------------------------------ exercise 2: backprop
def _backprop_runner(impl: Callable[[Value], None], case: Case) -> dict:
    """Build the case's expression with the reference Value, run ``impl(root)``, return output and grads."""
    name, inputs = case.args
    return _run_expression(Value, name, inputs, impl)


def _backprop_cases() -> list[Case]:
    return [
        Case(("a * b", (2.0, -3.0)), label="a * b (one operation)"),
        Case(("tanh(a * b)", (0.7, -1.2)), label="tanh(a * b) (two levels)"),
        Case(("tanh(w1*x1 + w2*x2 + b) (a neuron)", (2.0, -3.0, 0.0, 1.0, 6.8813735870195432)),
             label="a tanh neuron"),
        Case(("x = a*b; tanh(x*c) + x (x on two paths)", (1.5, -0.5, 2.0)),
             label="x = a*b used on two paths of different length"),
        Case(("d = a*b; d + d", (2.0, 3.0)), label="d = a*b; d + d (an inner node used twice)"),
        Case(("1 - tanh(a)**2 + exp(b)", (0.3, -1.0)), label="1 - tanh(a)**2 + exp(b)"),
        Case(("micrograd README example", (-4.0, 2.0)), label="micrograd's README example (a=-4, b=2)"),
    ]


def _topological_order(root: Value, visited_set: bool = True) -> list[Value]:
    order, visited = [], set()

    def visit(node):
        if not visited_set or node not in visited:
            visited.add(node)
            for child in node._prev:
                visit(child)
            order.append(node)

    visit(root)
    return order


def _backprop_no_seed(root: Value) -> None:
    for node in reversed(_topological_order(root)):
        node._backward()  # root.grad is still 0, so zeros flow everywhere


def _backprop_forward_order(root: Value) -> None:
    root.grad = 1.0
    for node in _topological_order(root):  # leaves first: inner nodes run before their grad arrived
        node._backward()


def _backprop_no_visited_set(root: Value) -> None:
    root.grad = 1.0
    for node in reversed(_topological_order(root, visited_set=False)):  # shared nodes appear twice
        node._backward()


def _backprop_naive_recursion(root: Value) -> None:
    root.grad = 1.0

    def push(node):  # no topological sort: a shared node may pass on its grad before it is complete
        node._backward()
        for child in node._prev:
            push(child)

    push(root)


# ------------------------------------------------------------------------------ exercise 3: the block
class ResidualBlock(nn.Module):
    """x (B, width) -> x + tanh(linear(x)), shape (B, width): the layer computes a *correction* to x."""

    def __init__(self, width: int):
        super().__init__()
        self.linear = nn.Linear(width, width)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + torch.tanh(self.linear(x))


class PlainBlock(nn.Module):
    """x (B, width) -> tanh(linear(x)), shape (B, width): the same parameters, no skip connection."""

    def __init__(self, width: int):
        super().__init__()
        self.linear = nn.Linear(width, width)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.tanh(self.linear(x))


class _BlockNoSkip(ResidualBlock):
    def forward(self, x):
        return torch.tanh(self.linear(x))


class _BlockSkipInsideTanh(ResidualBlock):
    def forward(self, x):
        return torch.tanh(x + self.linear(x))


def _block_cases() -> list[Case]:
    return [
        Case((torch.randn(5, 8),), {"width": 8}, label="batch of 5, width 8", seed=1),
        Case((torch.randn(1, 32),), {"width": 32}, label="a single example, width 32", seed=2),
        Case((4 * torch.randn(16, 4),), {"width": 4}, label="large inputs (tanh saturates), width 4", seed=3),
    ]


# ----------------------------------------------------------------------------- the deep nets + exercise 4
class DeepMLP(nn.Module):
    """2-D points (B, 2) -> class logits (B, n_classes): a linear input layer, ``depth`` blocks of ``width``
    units (``block`` is ResidualBlock or PlainBlock), a linear output layer. PyTorch's default init everywhere."""

    def __init__(self, depth: int, width: int, block: type[nn.Module], n_classes: int = 2):
        super().__init__()
        self.inp = nn.Linear(2, width)
        self.blocks = nn.ModuleList([block(width) for _ in range(depth)])
        self.out = nn.Linear(width, n_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.inp(x)
        for block in self.blocks:
            h = block(h)
        return self.out(h)


def layer_grad_norms(model: nn.Module, X: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """The L2 norm of d loss / d W for the weight W of every ``nn.Linear`` in ``model`` (in ``model.modules()``
    order: input layer first), after one backward pass of the cross-entropy of ``model(X)`` (B, C) vs ``y`` (B,).

    Returns a float tensor (number of Linear layers,). Old gradients are cleared first.
    """
    model.zero_grad()
    F.cross_entropy(model(X), y).backward()
    return torch.stack([m.weight.grad.norm() for m in model.modules() if isinstance(m, nn.Linear)]).detach()


def _norms_forgot_zero_grad(model, X, y):
    F.cross_entropy(model(X), y).backward()
    return torch.stack([m.weight.grad.norm() for m in model.modules() if isinstance(m, nn.Linear)]).detach()


def _norms_of_weights(model, X, y):
    model.zero_grad()
    F.cross_entropy(model(X), y).backward()
    return torch.stack([m.weight.norm() for m in model.modules() if isinstance(m, nn.Linear)]).detach()


def _norms_all_parameters(model, X, y):
    model.zero_grad()
    F.cross_entropy(model(X), y).backward()
    return torch.stack([p.grad.norm() for p in model.parameters()]).detach()


def _norms_runner(impl: Callable, case: Case) -> torch.Tensor:
    """Build a seeded DeepMLP (optionally with stale gradients from another batch), call ``impl`` on it."""
    from utils.data import moons

    depth, residual, stale = case.args
    torch.manual_seed(case.seed)
    model = DeepMLP(depth, width=16, block=ResidualBlock if residual else PlainBlock)
    X, y = moons(64, seed=case.seed)
    if stale:  # a previous backward pass left gradients behind
        F.cross_entropy(model(X[:10] * 2), 1 - y[:10]).backward()
    return impl(model, X, y)


def _norms_cases() -> list[Case]:
    return [
        Case((3, False, False), label="plain net, 3 blocks, fresh model"),
        Case((3, True, True), label="residual net, 3 blocks, with old gradients left from another batch", seed=1),
        Case((20, False, True), label="plain net, 20 blocks, with old gradients (tiny norms!)", seed=2),
    ]


# ------------------------------------------------------------------------------------ experiment helpers
def train_sgd(model: nn.Module, X: torch.Tensor, y: torch.Tensor, steps: int = 300, lr: float = 0.1) -> list[float]:
    """Full-batch gradient descent on the cross-entropy for exactly ``steps`` steps; returns the loss per step."""
    opt = torch.optim.SGD(model.parameters(), lr=lr)
    losses = []
    for _ in range(steps):
        loss = F.cross_entropy(model(X), y)
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(loss.item())
    return losses


def plot_layer_grad_norms(curves: Mapping[str, torch.Tensor | Sequence[float]], title: str = "gradient norm per layer",
                          ylim: tuple[float, float] | None = (1e-10, 1e2), ax: plt.Axes | None = None) -> plt.Figure:
    """One line per model: ||d loss / d W_l|| against layer index l (input layer = 0), log scale."""
    if not curves:
        raise ValueError("plot_layer_grad_norms needs at least one curve")
    if ax is None:
        fig, ax = plt.subplots(figsize=(6.5, 3.5))
    else:
        fig = ax.figure
    for label, norms in curves.items():
        norms = torch.as_tensor(norms, dtype=torch.float64).clamp_min(1e-30)  # log scale: keep exact zeros visible
        ax.semilogy(range(len(norms)), norms, marker="o", markersize=3, label=label)
    if ylim is not None:
        ax.set_ylim(*ylim)
    ax.set(title=title, xlabel="layer (0 = input layer, last = output layer)", ylabel="||dLoss/dW|| (log scale)")
    ax.grid(True, which="major", alpha=0.3)
    ax.legend()
    fig.tight_layout()
    return fig


# ----------------------------------------------------------------------------------------------- registry
EXERCISES = [
    Exercise(
        name="Value",
        reference=Value,
        cases=_value_cases,
        runner=_value_runner,
        mistakes={
            "wrote `=` instead of `+=` in the closure: a node used twice keeps only its last gradient":
                _MulForgotPlusEquals,
            "in __mul__ each input got its OWN value times out.grad (it should get the other input's)": _MulOwnValue,
            "forgot `out._backward = _backward` in __mul__, so no gradient flows through products": _MulNoClosure,
            "tanh's derivative computed from the input (1 - x**2) instead of the output (1 - tanh(x)**2)":
                _TanhFromInput,
        },
        hint="Copy the shape of __add__: wrap `other`, compute `out`, define `_backward()` that ADDS "
             "(local derivative) * out.grad to each input's .grad, attach it with `out._backward = _backward`. "
             "d(a*b)/da = b; d tanh(x)/dx = 1 - tanh(x)**2 (use the output t you already computed).",
        atol=1e-9, rtol=1e-9,
    ),
    Exercise(
        name="backprop",
        reference=backprop,
        cases=_backprop_cases,
        runner=_backprop_runner,
        mistakes={
            "forgot to seed root.grad = 1, so only zeros flow back": _backprop_no_seed,
            "ran _backward in topological order (leaves first) instead of reversed (root first)":
                _backprop_forward_order,
            "no visited set: a node reached by two paths is listed (and backpropagated) twice":
                _backprop_no_visited_set,
            "recursion without a topological sort: a shared node passed its gradient on before all of it had "
            "arrived": _backprop_naive_recursion,
        },
        hint="Build `order` with a depth-first search that appends a node after all of its `_prev` children "
             "and skips nodes already visited; then `root.grad = 1.0` and call `node._backward()` for node in "
             "reversed(order).",
        atol=1e-9, rtol=1e-9,
    ),
    Exercise(
        name="ResidualBlock",
        reference=ResidualBlock,
        cases=_block_cases,
        runner=run_module(ResidualBlock),
        mistakes={
            "no skip connection (that is a plain tanh layer)": _BlockNoSkip,
            "skip added inside the activation: tanh(x + linear(x))": _BlockSkipInsideTanh,
        },
        hint="One attribute, `self.linear = nn.Linear(width, width)`; "
             "forward returns `x + torch.tanh(self.linear(x))`.",
    ),
    Exercise(
        name="layer_grad_norms",
        reference=layer_grad_norms,
        cases=_norms_cases,
        runner=_norms_runner,
        mistakes={
            "forgot model.zero_grad(): old gradients were added to the new ones": _norms_forgot_zero_grad,
            "took the norm of the weights, not of their gradients": _norms_of_weights,
            "included every parameter (biases too), not only the Linear weights": _norms_all_parameters,
        },
        hint="model.zero_grad(); F.cross_entropy(model(X), y).backward(); then "
             "torch.stack([m.weight.grad.norm() for m in model.modules() if isinstance(m, nn.Linear)]).",
        atol=1e-12, rtol=1e-4,  # the plain net's first-layer norms are ~1e-9: compare relatively
    ),
]
