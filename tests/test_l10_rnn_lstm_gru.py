"""Lecture 10: the RNN/LSTM/GRU cells against PyTorch's, BPTT gradient measurement, the recall task and its
models, and the widget's figure."""
from __future__ import annotations

import math

import matplotlib.pyplot as plt
import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F

from solutions import l05_adam_schedules as L05
from solutions import l10_rnn_lstm_gru as L
from utils.widgets import render

PAIRS = [(L.RNNCell, nn.RNNCell), (L.LSTMCell, nn.LSTMCell), (L.GRUCell, nn.GRUCell)]


def _first(state):
    return state[0] if isinstance(state, tuple) else state


@pytest.mark.parametrize("ours_cls,torch_cls", PAIRS, ids=lambda c: c.__name__)
@pytest.mark.parametrize("batch,input_size,hidden_size,with_state", [(4, 3, 16, True), (1, 1, 5, True),
                                                                     (2, 7, 4, False)])
def test_cell_matches_torch_with_copied_weights(ours_cls, torch_cls, batch, input_size, hidden_size, with_state):
    torch.manual_seed(0)
    theirs = torch_cls(input_size, hidden_size)
    ours = ours_cls(input_size, hidden_size)
    ours.load_state_dict(theirs.state_dict())  # same names, same layout
    x = torch.randn(batch, input_size)
    state = None
    if with_state:
        h = torch.randn(batch, hidden_size)
        state = (h, torch.randn(batch, hidden_size)) if ours_cls is L.LSTMCell else h
    out_ours, out_theirs = ours(x, state), theirs(x, state)
    if isinstance(out_theirs, tuple):
        assert isinstance(out_ours, tuple) and len(out_ours) == 2
        for a, b in zip(out_ours, out_theirs):
            torch.testing.assert_close(a, b, atol=1e-6, rtol=1e-5)
    else:
        torch.testing.assert_close(out_ours, out_theirs, atol=1e-6, rtol=1e-5)
    _first(out_ours).pow(2).sum().backward()
    _first(out_theirs).pow(2).sum().backward()
    theirs_params = dict(theirs.named_parameters())
    for name, p in ours.named_parameters():
        torch.testing.assert_close(p.grad, theirs_params[name].grad, atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("ours_cls,torch_cls", PAIRS, ids=lambda c: c.__name__)
def test_cells_have_torch_parameter_names_and_init_range(ours_cls, torch_cls):
    ours, theirs = ours_cls(6, 9), torch_cls(6, 9)
    assert {k: v.shape for k, v in ours.state_dict().items()} == {k: v.shape for k, v in theirs.state_dict().items()}
    bound = 1 / math.sqrt(9)
    assert all(p.abs().max() <= bound for p in ours.parameters())


@pytest.mark.parametrize("ours_cls,layer_cls", [(L.RNNCell, nn.RNN), (L.LSTMCell, nn.LSTM), (L.GRUCell, nn.GRU)],
                         ids=lambda c: c.__name__)
def test_unrolled_cell_from_layer_matches_the_torch_layer(ours_cls, layer_cls):
    torch.manual_seed(1)
    layer = layer_cls(3, 8, batch_first=True)
    cell = L.cell_from_layer(layer, ours_cls)
    xs = torch.randn(2, 30, 3)
    states, last = L.unroll(cell, xs)
    assert len(states) == 30
    out, _ = layer(xs)
    torch.testing.assert_close(torch.stack([_first(s) for s in states], 1), out, atol=1e-5, rtol=1e-5)


def test_spectral_radius_rescaling_and_default_init():
    torch.manual_seed(0)
    cell = L.with_spectral_radius(L.RNNCell(4, 64), 1.7)
    assert L.spectral_radius(cell.weight_hh) == pytest.approx(1.7, rel=1e-4)
    default = [L.spectral_radius(L.RNNCell(4, 64).weight_hh) for _ in range(5)]
    assert all(0.45 < r < 0.75 for r in default), default  # ≈ 1/√3: uniform(±1/√H) has variance 1/(3H)


def test_state_grad_norms_matches_autograd_and_vanishes_or_explodes():
    torch.manual_seed(0)
    xs = torch.randn(3, 12, 4) * 0.3
    readout = torch.randn(10)

    def loss_fn(h):
        return (h @ readout).mean()

    cell = L.with_spectral_radius(L.RNNCell(4, 10), 0.5)
    norms = L.state_grad_norms(cell, xs, loss_fn)
    assert norms.shape == (12,)
    # independent check with torch.autograd.grad on the list of states
    states, last = L.unroll(cell, xs)
    grads = torch.autograd.grad(loss_fn(last), states)
    expected = torch.stack([g.norm() for g in reversed(grads)])
    torch.testing.assert_close(norms, expected)
    assert norms[-1] < 1e-3 * norms[0]  # rho 0.5: vanishing
    small_inputs = xs * 1e-3  # stay in tanh's linear range (biases off): the factor per step is then ~rho
    big_cell = L.with_spectral_radius(L.RNNCell(4, 10), 1.5)
    with torch.no_grad():
        big_cell.bias_ih.zero_()
        big_cell.bias_hh.zero_()
    big = L.state_grad_norms(big_cell, small_inputs, loss_fn)
    assert big[-1] > 10 * big[0]  # rho 1.5: exploding, ~1.5^11
    # no recurrence: nothing reaches back beyond the last step
    flat = L.RNNCell(4, 10)
    with torch.no_grad():
        flat.weight_hh.zero_()
    assert (L.state_grad_norms(flat, xs, loss_fn)[1:] == 0).all()


def test_state_grad_norms_uses_the_lstm_cell_state():
    torch.manual_seed(0)
    cell = L.LSTMCell(3, 6)
    xs = torch.randn(2, 8, 3)
    norms = L.state_grad_norms(cell, xs, lambda h: h.sum())
    states, last = L.unroll(cell, xs)
    grads = torch.autograd.grad(last[0].sum(), [c for _, c in states])
    torch.testing.assert_close(norms, torch.stack([g.norm() for g in reversed(grads)]))


def test_recall_task():
    x, y = L.recall_task(200, lag=7, n_symbols=5, prefix=3, seed=4)
    assert x.shape == (200, 3 + 1 + 7, 6) and y.shape == (200,) and y.dtype == torch.int64
    assert (x[..., :5].sum(-1) == 1).all()  # one token per step
    marker = x[..., 5]
    assert (marker.sum(1) == 1).all() and (marker[:, 4:] == 0).all()  # one marker, in the first prefix + 1 steps
    where = marker.argmax(1)
    assert (x[torch.arange(200), where, :5].argmax(1) == y).all()
    assert len(y.unique()) == 5
    x2, y2 = L.recall_task(200, lag=7, n_symbols=5, prefix=3, seed=4)
    assert torch.equal(x, x2) and torch.equal(y, y2)
    assert not torch.equal(x, L.recall_task(200, lag=7, n_symbols=5, prefix=3, seed=5)[0])
    with pytest.raises(ValueError):
        L.recall_task(0, lag=3)
    with pytest.raises(ValueError):
        L.recall_task(5, lag=-1)


def test_sequence_classifier_gate_bias():
    torch.manual_seed(0)
    plain = L.SequenceClassifier("lstm", 9, 16, 8)
    torch.manual_seed(0)
    biased = L.SequenceClassifier("lstm", 9, 16, 8, gate_bias=4.0)
    diff = biased.rnn.bias_ih_l0 - plain.rnn.bias_ih_l0
    assert torch.allclose(diff[16:32], torch.full((16,), 4.0)) and (diff[:16] == 0).all() and (diff[32:] == 0).all()
    assert biased(torch.randn(5, 12, 9)).shape == (5, 8)
    with pytest.raises(ValueError):
        L.SequenceClassifier("rnn", 9, 16, 8, gate_bias=1.0)
    with pytest.raises(ValueError):
        L.SequenceClassifier("transformer", 9, 16, 8)


def test_train_recall_short_lag_lstm_learns_and_is_deterministic():
    def run():
        torch.manual_seed(0)
        model = L.SequenceClassifier("lstm", 5, 16, 4, gate_bias=2.0)
        return model, L.train_recall(model, lag=3, steps=200, lr=1e-2, batch_size=32, eval_every=100)

    model, hist = run()
    assert hist["step"] == [100, 200] and len(hist["loss"]) == 200
    assert hist["acc"][-1] > 0.9, hist["acc"]
    assert L.recall_accuracy(model, lag=3) == hist["acc"][-1]
    assert run()[1]["loss"] == hist["loss"]


def test_recall_grad_norms_same_with_torch_cells():
    torch.manual_seed(0)
    for kind, torch_cell in [("rnn", nn.RNNCell), ("lstm", nn.LSTMCell), ("gru", nn.GRUCell)]:
        model = L.SequenceClassifier(kind, 9, 8, 8, gate_bias=0.0 if kind == "rnn" else 2.0)
        ours = L.recall_grad_norms(model, lag=6, n=16)
        theirs = L.recall_grad_norms(model, lag=6, cells={kind: torch_cell}, n=16)
        assert ours.shape == (12,)
        torch.testing.assert_close(ours, theirs, atol=1e-7, rtol=1e-4)


def test_gradient_vs_distance_figure_and_widget_update():
    torch.manual_seed(0)
    models = {"RNN": L.SequenceClassifier("rnn", 9, 8, 8), "LSTM": L.SequenceClassifier("lstm", 9, 8, 8, 4.0)}

    def update(lag=10):
        curves = {name: L.recall_grad_norms(m, lag, n=8) for name, m in models.items()}
        return L.gradient_vs_distance(curves, span=(lag, lag + 5), relative=True, title=f"lag {lag}")

    for lag in (10, 40):
        fig = render(update, lag=lag)
        assert isinstance(fig, plt.Figure)
        ax = fig.axes[0]
        assert len(ax.get_lines()) == 2 and ax.get_title() == f"lag {lag}" and ax.get_xlabel()
        first_points = [line.get_ydata()[0] for line in ax.get_lines()]
        assert first_points == pytest.approx([1.0, 1.0])  # relative: every curve starts at 1
        assert len(ax.get_lines()[0].get_xdata()) == lag + 6
    with pytest.raises(ValueError):
        L.gradient_vs_distance({})
    plt.close("all")


def test_clip_exercise_is_lecture_5s_and_matches_torch():
    ex = next(e for e in L.EXERCISES if e.name == "clip_grad_norm_")
    assert ex.reference is L05.clip_grad_norm_ and L.clip_grad_norm_ is L05.clip_grad_norm_
    torch.manual_seed(0)
    a, b = nn.Linear(5, 5), nn.Linear(5, 5)
    b.load_state_dict(a.state_dict())
    x = torch.randn(8, 5) * 10
    a(x).pow(2).sum().backward()
    b(x).pow(2).sum().backward()
    ours = L.clip_grad_norm_(a.parameters(), 1.0)
    theirs = torch.nn.utils.clip_grad_norm_(b.parameters(), 1.0)
    assert ours.item() == pytest.approx(theirs.item(), rel=1e-6)
    for p, q in zip(a.parameters(), b.parameters()):
        torch.testing.assert_close(p.grad, q.grad)


def test_every_registered_mistake_differs_from_torch():
    """The named mistakes are real: each gives a different answer from nn.*Cell on a generic input."""
    torch.manual_seed(0)
    torch_cells = {"RNNCell": nn.RNNCell, "LSTMCell": nn.LSTMCell, "GRUCell": nn.GRUCell}
    for ex in L.EXERCISES:
        if ex.name not in torch_cells:
            continue
        theirs = torch_cells[ex.name](4, 6)
        x, h = torch.randn(3, 4), torch.randn(3, 6)
        state = (h, torch.randn(3, 6)) if ex.name == "LSTMCell" else h
        reference = _first(theirs(x, state))
        for label, wrong_cls in ex.mistakes.items():
            wrong = wrong_cls(4, 6)
            wrong.load_state_dict(theirs.state_dict())
            assert not torch.allclose(_first(wrong(x, state)), reference, atol=1e-4), label


def test_cross_entropy_head_gradient_is_finite_for_long_lags():
    torch.manual_seed(0)
    model = L.SequenceClassifier("lstm", 9, 8, 8, gate_bias=4.0)
    norms = L.recall_grad_norms(model, lag=150, n=8)
    assert norms.shape == (156,) and torch.isfinite(norms).all() and (norms > 0).all()
    assert F.softmax(model(L.recall_task(2, 5)[0]), 1).sum(1).allclose(torch.ones(2))
