"""Lecture 10 — recurrent networks: the RNN cell, backpropagation through time, exploding and vanishing
gradients, clipping, LSTM and GRU cells, a long-lag memory task and a character-level language model.

Reference solutions and the exercise registry (COURSE_DESIGN §2):

* ``RNNCell``, ``LSTMCell``, ``GRUCell``: one time step each, with PyTorch's parameter names and layout
  (``weight_ih``, ``weight_hh``, ``bias_ih``, ``bias_hh``; gate order i, f, g, o for the LSTM and r, z, n for
  the GRU), so weights copy straight from ``nn.RNNCell`` / ``nn.LSTMCell`` / ``nn.GRUCell`` / ``nn.LSTM``.
* ``clip_grad_norm_``: clipping by the global norm. It is Lecture 5's exercise (same reference, cases and
  mistakes: one copy), asked again here where it was invented — for RNNs (Pascanu et al., 2013).

Helpers the lecture uses (unit-tested in tests/test_l10_rnn_lstm_gru.py): ``init_like_torch``,
``with_spectral_radius``, ``state_grad_norms`` (∂loss/∂state for every step of an unrolled cell),
``recall_task`` (the long-lag memory task), ``SequenceClassifier``, ``train_recall``, ``recall_accuracy``,
``cell_from_layer`` (a trained ``nn.LSTM`` layer → our cell) and ``gradient_vs_distance`` (the widget's figure).
"""
from __future__ import annotations

import math
from typing import Any, Callable, Mapping

import matplotlib.pyplot as plt
import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F

from solutions import l05_adam_schedules as _l05
from utils.exercises import Case, Exercise, run_module

__all__ = [
    "RNNCell", "LSTMCell", "GRUCell", "clip_grad_norm_", "init_like_torch", "with_spectral_radius",
    "spectral_radius", "unroll", "state_grad_norms", "recall_task", "SequenceClassifier", "train_recall",
    "recall_accuracy", "cell_from_layer", "recall_grad_norms", "gradient_vs_distance", "EXERCISES",
]

clip_grad_norm_ = _l05.clip_grad_norm_


# ------------------------------------------------------------------------------------------------- the cells
def init_like_torch(cell: nn.Module) -> None:
    """PyTorch's init for every recurrent cell: each parameter ~ U(-1/√H, 1/√H), H = hidden size."""
    bound = 1.0 / math.sqrt(cell.weight_hh.shape[1])
    with torch.no_grad():
        for p in cell.parameters():
            p.uniform_(-bound, bound)


class RNNCell(nn.Module):
    """One step of a vanilla (Elman) RNN, as ``nn.RNNCell`` (tanh):

        h' = tanh(x W_ihᵀ + b_ih + h W_hhᵀ + b_hh)

    x (B, input_size), h (B, hidden_size) or None (zeros) -> h' (B, hidden_size).
    """

    def __init__(self, input_size: int, hidden_size: int):
        super().__init__()
        self.input_size, self.hidden_size = input_size, hidden_size
        self.weight_ih = nn.Parameter(torch.empty(hidden_size, input_size))
        self.weight_hh = nn.Parameter(torch.empty(hidden_size, hidden_size))
        self.bias_ih = nn.Parameter(torch.empty(hidden_size))
        self.bias_hh = nn.Parameter(torch.empty(hidden_size))
        init_like_torch(self)

    def forward(self, x: torch.Tensor, h: torch.Tensor | None = None) -> torch.Tensor:
        if h is None:
            h = x.new_zeros(x.shape[0], self.weight_hh.shape[1])
        return torch.tanh(x @ self.weight_ih.T + self.bias_ih + h @ self.weight_hh.T + self.bias_hh)


class LSTMCell(nn.Module):
    """One step of an LSTM, as ``nn.LSTMCell``. The 4H rows of the weights are the gates [i | f | g | o]:

        i, f, o = σ(·)  (input = write, forget = keep, output = read),   g = tanh(·)  (the candidate)
        c' = f ⊙ c + i ⊙ g          h' = o ⊙ tanh(c')

    where each (·) is x W_ihᵀ + b_ih + h W_hhᵀ + b_hh restricted to that gate's H rows.
    x (B, input_size), state (h, c) each (B, hidden_size) or None (zeros) -> (h', c').
    """

    def __init__(self, input_size: int, hidden_size: int):
        super().__init__()
        self.input_size, self.hidden_size = input_size, hidden_size
        self.weight_ih = nn.Parameter(torch.empty(4 * hidden_size, input_size))
        self.weight_hh = nn.Parameter(torch.empty(4 * hidden_size, hidden_size))
        self.bias_ih = nn.Parameter(torch.empty(4 * hidden_size))
        self.bias_hh = nn.Parameter(torch.empty(4 * hidden_size))
        init_like_torch(self)

    def forward(self, x: torch.Tensor,
                state: tuple[torch.Tensor, torch.Tensor] | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        if state is None:
            zeros = x.new_zeros(x.shape[0], self.weight_hh.shape[1])
            state = (zeros, zeros)
        h, c = state
        gates = x @ self.weight_ih.T + self.bias_ih + h @ self.weight_hh.T + self.bias_hh  # (B, 4H)
        i, f, g, o = gates.chunk(4, dim=1)
        i, f, g, o = torch.sigmoid(i), torch.sigmoid(f), torch.tanh(g), torch.sigmoid(o)
        c = f * c + i * g  # keep part of the old memory, write part of the candidate
        h = o * torch.tanh(c)  # read out part of the memory
        return h, c


class GRUCell(nn.Module):
    """One step of a GRU, as ``nn.GRUCell``. The 3H rows of the weights are the gates [r | z | n]:

        r = σ(x W_irᵀ + b_ir + h W_hrᵀ + b_hr)            (reset: how much of h the candidate may see)
        z = σ(x W_izᵀ + b_iz + h W_hzᵀ + b_hz)            (update: keep the old h (z=1) or take n (z=0))
        n = tanh(x W_inᵀ + b_in + r ⊙ (h W_hnᵀ + b_hn))   (candidate; r multiplies AFTER the matmul)
        h' = (1 - z) ⊙ n + z ⊙ h

    x (B, input_size), h (B, hidden_size) or None (zeros) -> h' (B, hidden_size).
    """

    def __init__(self, input_size: int, hidden_size: int):
        super().__init__()
        self.input_size, self.hidden_size = input_size, hidden_size
        self.weight_ih = nn.Parameter(torch.empty(3 * hidden_size, input_size))
        self.weight_hh = nn.Parameter(torch.empty(3 * hidden_size, hidden_size))
        self.bias_ih = nn.Parameter(torch.empty(3 * hidden_size))
        self.bias_hh = nn.Parameter(torch.empty(3 * hidden_size))
        init_like_torch(self)

    def forward(self, x: torch.Tensor, h: torch.Tensor | None = None) -> torch.Tensor:
        if h is None:
            h = x.new_zeros(x.shape[0], self.weight_hh.shape[1])
        x_r, x_z, x_n = (x @ self.weight_ih.T + self.bias_ih).chunk(3, dim=1)
        h_r, h_z, h_n = (h @ self.weight_hh.T + self.bias_hh).chunk(3, dim=1)
        r = torch.sigmoid(x_r + h_r)
        z = torch.sigmoid(x_z + h_z)
        n = torch.tanh(x_n + r * h_n)
        return (1 - z) * n + z * h


# ------------------------------------------------------------------------------------- the common mistakes
class _RNNReLU(RNNCell):
    def forward(self, x, h=None):
        if h is None:
            h = x.new_zeros(x.shape[0], self.weight_hh.shape[1])
        return torch.relu(x @ self.weight_ih.T + self.bias_ih + h @ self.weight_hh.T + self.bias_hh)


class _RNNNoTranspose(RNNCell):
    def forward(self, x, h=None):
        if h is None:
            h = x.new_zeros(x.shape[0], self.weight_hh.shape[1])
        return torch.tanh(x @ self.weight_ih.T + self.bias_ih + h @ self.weight_hh + self.bias_hh)


class _RNNOneBias(RNNCell):
    def forward(self, x, h=None):
        if h is None:
            h = x.new_zeros(x.shape[0], self.weight_hh.shape[1])
        return torch.tanh(x @ self.weight_ih.T + self.bias_ih + h @ self.weight_hh.T)


class _RNNIgnoresState(RNNCell):
    def forward(self, x, h=None):
        return torch.tanh(x @ self.weight_ih.T + self.bias_ih + self.bias_hh)


def _lstm_gates(cell, x, state):
    if state is None:
        zeros = x.new_zeros(x.shape[0], cell.weight_hh.shape[1])
        state = (zeros, zeros)
    h, c = state
    return (x @ cell.weight_ih.T + cell.bias_ih + h @ cell.weight_hh.T + cell.bias_hh).chunk(4, dim=1), c


class _LSTMGateOrderIFOG(LSTMCell):
    def forward(self, x, state=None):
        (i, f, o, g), c = _lstm_gates(self, x, state)  # i, f, o, g: the order of some papers, not PyTorch's
        c = torch.sigmoid(f) * c + torch.sigmoid(i) * torch.tanh(g)
        return torch.sigmoid(o) * torch.tanh(c), c


class _LSTMNoTanhOnCell(LSTMCell):
    def forward(self, x, state=None):
        (i, f, g, o), c = _lstm_gates(self, x, state)
        c = torch.sigmoid(f) * c + torch.sigmoid(i) * torch.tanh(g)
        return torch.sigmoid(o) * c, c


class _LSTMNoForget(LSTMCell):
    def forward(self, x, state=None):
        (i, f, g, o), c = _lstm_gates(self, x, state)
        c = c + torch.sigmoid(i) * torch.tanh(g)
        return torch.sigmoid(o) * torch.tanh(c), c


class _LSTMSigmoidCandidate(LSTMCell):
    def forward(self, x, state=None):
        (i, f, g, o), c = _lstm_gates(self, x, state)
        c = torch.sigmoid(f) * c + torch.sigmoid(i) * torch.sigmoid(g)
        return torch.sigmoid(o) * torch.tanh(c), c


class _LSTMReadsOldCell(LSTMCell):
    def forward(self, x, state=None):
        (i, f, g, o), c_old = _lstm_gates(self, x, state)
        c = torch.sigmoid(f) * c_old + torch.sigmoid(i) * torch.tanh(g)
        return torch.sigmoid(o) * torch.tanh(c_old), c


def _gru_parts(cell, x, h):
    if h is None:
        h = x.new_zeros(x.shape[0], cell.weight_hh.shape[1])
    return (x @ cell.weight_ih.T + cell.bias_ih).chunk(3, 1), h


class _GRUResetBeforeMatmul(GRUCell):
    def forward(self, x, h=None):
        (x_r, x_z, x_n), h = _gru_parts(self, x, h)
        W_r, W_z, W_n = self.weight_hh.chunk(3, 0)
        b_r, b_z, b_n = self.bias_hh.chunk(3, 0)
        r = torch.sigmoid(x_r + h @ W_r.T + b_r)
        z = torch.sigmoid(x_z + h @ W_z.T + b_z)
        n = torch.tanh(x_n + (r * h) @ W_n.T + b_n)  # the paper's variant: reset h, then multiply
        return (1 - z) * n + z * h


class _GRUSwappedUpdate(GRUCell):
    def forward(self, x, h=None):
        (x_r, x_z, x_n), h = _gru_parts(self, x, h)
        h_r, h_z, h_n = (h @ self.weight_hh.T + self.bias_hh).chunk(3, 1)
        r, z = torch.sigmoid(x_r + h_r), torch.sigmoid(x_z + h_z)
        n = torch.tanh(x_n + r * h_n)
        return z * n + (1 - z) * h


class _GRUGateOrderZRN(GRUCell):
    def forward(self, x, h=None):
        (x_z, x_r, x_n), h = _gru_parts(self, x, h)
        h_z, h_r, h_n = (h @ self.weight_hh.T + self.bias_hh).chunk(3, 1)
        r, z = torch.sigmoid(x_r + h_r), torch.sigmoid(x_z + h_z)
        n = torch.tanh(x_n + r * h_n)
        return (1 - z) * n + z * h


# ------------------------------------------------------------------------------------------ checking cells
def _randn(*shape: int, seed: int, scale: float = 1.0) -> torch.Tensor:
    return scale * torch.randn(*shape, generator=torch.Generator().manual_seed(seed))


def _rnn_cases() -> list[Case]:
    return [
        Case((_randn(3, 4, seed=1), _randn(3, 5, seed=2)), {"input_size": 4, "hidden_size": 5},
             label="batch 3, input 4, hidden 5"),
        Case((_randn(2, 6, seed=3),), {"input_size": 6, "hidden_size": 6}, seed=1,
             label="no state given (h=None: start from zeros)"),
        Case((_randn(1, 1, seed=4), _randn(1, 7, seed=5)), {"input_size": 1, "hidden_size": 7}, seed=2,
             label="a single example with a 1-dim input"),
        Case((_randn(4, 3, seed=6, scale=4.0), _randn(4, 8, seed=7)), {"input_size": 3, "hidden_size": 8}, seed=3,
             label="large inputs (tanh saturates)"),
    ]


def _lstm_cases() -> list[Case]:
    return [
        Case((_randn(3, 4, seed=1), (_randn(3, 5, seed=2), _randn(3, 5, seed=3))),
             {"input_size": 4, "hidden_size": 5}, label="batch 3, input 4, hidden 5, state (h, c)"),
        Case((_randn(2, 6, seed=4),), {"input_size": 6, "hidden_size": 3}, seed=1,
             label="no state given (state=None: h and c start at zeros)"),
        Case((_randn(1, 2, seed=5), (_randn(1, 8, seed=6), _randn(1, 8, seed=7, scale=3.0))),
             {"input_size": 2, "hidden_size": 8}, seed=2, label="a single example with a large cell state"),
    ]


def _gru_cases() -> list[Case]:
    return [
        Case((_randn(3, 4, seed=1), _randn(3, 5, seed=2)), {"input_size": 4, "hidden_size": 5},
             label="batch 3, input 4, hidden 5"),
        Case((_randn(2, 6, seed=3),), {"input_size": 6, "hidden_size": 3}, seed=1,
             label="no state given (h=None: start from zeros)"),
        Case((_randn(1, 2, seed=4), _randn(1, 8, seed=5)), {"input_size": 2, "hidden_size": 8}, seed=2,
             label="a single example, hidden 8"),
    ]


# ----------------------------------------------------------------------------------- BPTT and the spectrum
def spectral_radius(W: torch.Tensor) -> float:
    """The largest |eigenvalue| of a square matrix W (H, H)."""
    return torch.linalg.eigvals(W.detach().double()).abs().max().item()


def with_spectral_radius(cell: nn.Module, rho: float) -> nn.Module:
    """Rescale ``cell.weight_hh`` (H, H) in place so that its spectral radius is ``rho``; returns the cell."""
    with torch.no_grad():
        cell.weight_hh.mul_(rho / spectral_radius(cell.weight_hh))
    return cell


def unroll(cell: nn.Module, xs: torch.Tensor, state: Any = None) -> tuple[list[Any], Any]:
    """Apply ``cell`` along time. xs (B, T, input_size). Returns (the state after every step, a list of T),
    and the final state. The state is h (B, H), or (h, c) for an LSTM cell."""
    states = []
    for t in range(xs.shape[1]):
        state = cell(xs[:, t], state)
        states.append(state)
    return states, state


def _memory(state: Any) -> torch.Tensor:
    """The part of a cell's state that carries memory: c for an LSTM, h otherwise."""
    return state[1] if isinstance(state, tuple) else state


def state_grad_norms(cell: nn.Module, xs: torch.Tensor,
                     loss_fn: Callable[[torch.Tensor], torch.Tensor]) -> torch.Tensor:
    """Backpropagation through time, measured: unroll ``cell`` over xs (B, T, I) from a zero state, compute
    ``loss_fn(h_T)`` on the last hidden state (B, H), backpropagate once, and return ‖∂loss/∂s_t‖ for
    t = T-1, T-2, ..., 0 — i.e. indexed by the DISTANCE k = T-1-t from the last step (a (T,) tensor).
    s_t is the memory state: h_t for an RNN/GRU, the cell c_t for an LSTM."""
    states = []
    state = None
    for t in range(xs.shape[1]):
        state = cell(xs[:, t], state)
        _memory(state).retain_grad()  # keep ∂loss/∂s_t of this intermediate tensor
        states.append(state)
    h_last = state[0] if isinstance(state, tuple) else state
    loss_fn(h_last).backward()
    return torch.stack([_memory(s).grad.norm() for s in reversed(states)]).detach()


# --------------------------------------------------------------------------------------- the long-lag task
def recall_task(n: int, lag: int, n_symbols: int = 8, prefix: int = 5,
                seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """Remember the marked token. Every step shows a random token (one-hot over ``n_symbols``) plus a marker
    bit; the marker is on at ONE step among the first ``prefix + 1``. After ``lag`` more steps of random
    tokens the sequence ends and the network must name the marked token (chance: 1/n_symbols).

    Returns x (n, prefix + 1 + lag, n_symbols + 1) float32 and y (n,) int64 in [0, n_symbols).
    """
    if n <= 0 or lag < 0 or prefix < 0 or n_symbols < 2:
        raise ValueError(f"need n > 0, lag >= 0, prefix >= 0, n_symbols >= 2; got {n}, {lag}, {prefix}, {n_symbols}")
    gen = torch.Generator().manual_seed(seed)
    T = prefix + 1 + lag
    tokens = torch.randint(0, n_symbols, (n, T), generator=gen)
    where = torch.randint(0, prefix + 1, (n,), generator=gen)
    x = torch.cat([F.one_hot(tokens, n_symbols).float(), torch.zeros(n, T, 1)], dim=2)
    rows = torch.arange(n)
    x[rows, where, n_symbols] = 1.0  # the marker bit
    return x, tokens[rows, where]


class SequenceClassifier(nn.Module):
    """x (B, T, input_size) -> logits (B, n_classes) read from the last step of a one-layer ``nn.RNN``,
    ``nn.LSTM`` or ``nn.GRU`` (``kind``). ``gate_bias`` is added to the bias of the gate that keeps the memory
    (the LSTM's forget gate f, the GRU's update gate z: rows H..2H of both), so training starts in
    "remember" mode; 0 is PyTorch's default."""

    LAYERS = {"rnn": nn.RNN, "lstm": nn.LSTM, "gru": nn.GRU}

    def __init__(self, kind: str, input_size: int, hidden_size: int, n_classes: int, gate_bias: float = 0.0):
        super().__init__()
        if kind not in self.LAYERS:
            raise ValueError(f"kind must be one of {sorted(self.LAYERS)}, got {kind!r}")
        if kind == "rnn" and gate_bias:
            raise ValueError("a vanilla RNN has no gate to bias")
        self.kind = kind
        self.rnn = self.LAYERS[kind](input_size, hidden_size, batch_first=True)
        self.head = nn.Linear(hidden_size, n_classes)
        with torch.no_grad():
            self.rnn.bias_ih_l0[hidden_size:2 * hidden_size] += gate_bias

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out, _ = self.rnn(x)
        return self.head(out[:, -1])


def train_recall(model: nn.Module, lag: int, steps: int, lr: float = 3e-3, batch_size: int = 64,
                 max_norm: float = 1.0, seed: int = 0, eval_every: int = 100,
                 clip: Callable = clip_grad_norm_) -> dict[str, list[float]]:
    """Adam on fresh ``recall_task`` batches (batch k drawn with seed 10_000·(seed+1) + k), clipping by global
    norm. Returns {"loss": per step, "step": [...], "acc": test accuracy every ``eval_every`` steps}."""
    opt = torch.optim.Adam(model.parameters(), lr=lr)
    n_symbols = model.head.out_features
    history: dict[str, list[float]] = {"loss": [], "step": [], "acc": []}
    for step in range(steps):
        x, y = recall_task(batch_size, lag, n_symbols=n_symbols, seed=10_000 * (seed + 1) + step)
        loss = F.cross_entropy(model(x), y)
        opt.zero_grad()
        loss.backward()
        clip(model.parameters(), max_norm)
        opt.step()
        history["loss"].append(loss.item())
        if (step + 1) % eval_every == 0 or step + 1 == steps:
            history["step"].append(step + 1)
            history["acc"].append(recall_accuracy(model, lag))
    return history


@torch.no_grad()
def recall_accuracy(model: nn.Module, lag: int, n: int = 1000, seed: int = 123_456) -> float:
    """Accuracy on ``n`` held-out ``recall_task`` sequences with this lag (fixed seed, never used in training)."""
    x, y = recall_task(n, lag, n_symbols=model.head.out_features, seed=seed)
    return (model(x).argmax(1) == y).float().mean().item()


def cell_from_layer(layer: nn.RNNBase, cell_cls: type[nn.Module]) -> nn.Module:
    """A cell (ours or torch's) holding layer 0 of a trained ``nn.RNN``/``nn.LSTM``/``nn.GRU``: same names
    (minus the ``_l0`` suffix), same gate order, so the weights copy straight across."""
    cell = cell_cls(layer.input_size, layer.hidden_size)
    cell.load_state_dict({name: getattr(layer, f"{name}_l0").detach().clone()
                          for name in ("weight_ih", "weight_hh", "bias_ih", "bias_hh")})
    return cell


def recall_grad_norms(model: SequenceClassifier, lag: int, cells: Mapping[str, type[nn.Module]] | None = None,
                      n: int = 64, seed: int = 7) -> torch.Tensor:
    """‖∂loss/∂s_t‖ against distance from the answer (a (prefix + 1 + lag,) tensor) for ``model`` on ``n``
    recall sequences of this lag: its recurrent layer is copied into a cell (``cells[model.kind]``, default
    ours) and unrolled step by step."""
    cells = cells or {"rnn": RNNCell, "lstm": LSTMCell, "gru": GRUCell}
    x, y = recall_task(n, lag, n_symbols=model.head.out_features, seed=seed)
    cell = cell_from_layer(model.rnn, cells[model.kind])
    return state_grad_norms(cell, x, lambda h: F.cross_entropy(model.head(h), y))


def gradient_vs_distance(curves: Mapping[str, torch.Tensor | np.ndarray], title: str = "",
                         ax: plt.Axes | None = None, ylim: tuple[float, float] | None = (1e-20, 1e1),
                         span: tuple[float, float] | None = None, relative: bool = False) -> plt.Figure:
    """One line per model: ‖∂loss/∂s_t‖ (log scale) against the distance (in steps) from the loss.
    ``span`` = (first, last) distance to shade (where the information to remember sits); ``relative``: divide
    each curve by its value at distance 0 (the fraction of the gradient at the loss that reaches each step)."""
    if not curves:
        raise ValueError("gradient_vs_distance needs at least one curve")
    if ax is None:
        fig, ax = plt.subplots(figsize=(7, 3.6))
    else:
        fig = ax.figure
    if span is not None:
        ax.axvspan(*span, color="gold", alpha=0.3, lw=0)
    for label, norms in curves.items():
        norms = torch.as_tensor(norms, dtype=torch.float64)
        if relative:
            norms = norms / norms[0]
        norms = norms.clamp_min(1e-30)  # exact zeros (underflow) stay on the plot
        ax.semilogy(np.arange(len(norms)), norms.numpy(), label=label)
    if ylim is not None:
        ax.set_ylim(*ylim)
    ax.set(title=title or "how much gradient reaches each step", xlabel="distance from the loss (steps back)",
           ylabel="‖∂loss/∂state‖" + (" / value at distance 0" if relative else "") + " (log)")
    ax.grid(True, which="major", alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    return fig


# ----------------------------------------------------------------------------------------------- registry
_CLIP = next(e for e in _l05.EXERCISES if e.name == "clip_grad_norm_")

EXERCISES = [
    Exercise(
        name="RNNCell",
        reference=RNNCell,
        cases=_rnn_cases,
        runner=run_module(RNNCell),
        mistakes={
            "relu instead of tanh (nn.RNNCell's default nonlinearity is tanh)": _RNNReLU,
            "h @ weight_hh without the transpose (weights are stored (out, in), like nn.Linear)": _RNNNoTranspose,
            "left out bias_hh: PyTorch's cells have two biases, bias_ih and bias_hh": _RNNOneBias,
            "ignored the previous state h: no recurrence, every step starts from scratch": _RNNIgnoresState,
        },
        hint="h = zeros (B, H) if h is None; return torch.tanh(x @ self.weight_ih.T + self.bias_ih "
             "+ h @ self.weight_hh.T + self.bias_hh).",
    ),
    _CLIP,  # the same exercise as L05's: one registration, reused
    Exercise(
        name="LSTMCell",
        reference=LSTMCell,
        cases=_lstm_cases,
        runner=run_module(LSTMCell),
        mistakes={
            "gates in the order i, f, o, g: PyTorch stores them as i, f, g, o": _LSTMGateOrderIFOG,
            "h = o * c: forgot the tanh on the new cell state": _LSTMNoTanhOnCell,
            "no forget gate: c = c + i * g (the 1997 LSTM; PyTorch's has f * c)": _LSTMNoForget,
            "sigmoid on the candidate g (it is tanh: the candidate may be negative)": _LSTMSigmoidCandidate,
            "h read from the OLD cell state (use the new c)": _LSTMReadsOldCell,
        },
        hint="gates = x @ W_ih.T + b_ih + h @ W_hh.T + b_hh; i, f, g, o = gates.chunk(4, dim=1); sigmoid for "
             "i, f, o and tanh for g; c = f * c + i * g; h = o * tanh(c); return (h, c).",
    ),
    Exercise(
        name="GRUCell",
        reference=GRUCell,
        cases=_gru_cases,
        runner=run_module(GRUCell),
        mistakes={
            "reset applied before the matmul, W_hn (r * h) + b_hn (the paper's variant); PyTorch computes "
            "r * (h W_hn^T + b_hn)": _GRUResetBeforeMatmul,
            "swapped z and 1 - z: PyTorch's h' = (1 - z) * n + z * h (z = 1 keeps the old state)": _GRUSwappedUpdate,
            "gates in the order z, r, n: PyTorch stores them as r, z, n": _GRUGateOrderZRN,
        },
        hint="Split x @ W_ih.T + b_ih and h @ W_hh.T + b_hh each into 3 chunks (r, z, n); r and z are sigmoids "
             "of the sums; n = tanh(x_n + r * h_n); h' = (1 - z) * n + z * h.",
    ),
]
