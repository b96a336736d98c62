"""Lecture 11: attention against hand-computed scores and torch's own attention, the decoder's teacher forcing
against step-by-step generation, greedy and beam search against brute force, and the plots behind the widget."""
from __future__ import annotations

import itertools
import math

import matplotlib.pyplot as plt
import pytest
import torch
import torch.nn.functional as F

from solutions import l11_seq2seq_attention as L
from utils.widgets import render


def small_model(attention: str, seed: int = 0) -> L.Seq2Seq:
    torch.manual_seed(seed)
    return L.Seq2Seq(attention, emb_dim=4, hidden=8).eval()


# ------------------------------------------------------------------------------------------------- the task
def test_reversal_batch_is_shifted_reversal():
    x, y_in, y_out = L.reversal_batch(5, 7, seed=3)
    assert x.shape == (5, 7) and y_in.shape == y_out.shape == (5, 8)
    assert torch.equal(y_out[:, :-1], x.flip(1)) and (y_out[:, -1] == L.EOS).all()
    assert (y_in[:, 0] == L.BOS).all() and torch.equal(y_in[:, 1:], y_out[:, :-1])  # teacher forcing: shift by one
    assert x.max() < L.N_DIGITS and torch.equal(L.reversal_batch(5, 7, seed=3)[0], x)


# ------------------------------------------------------------------------------------------------ attention
def test_additive_attention_matches_the_formula_pair_by_pair():
    torch.manual_seed(0)
    attn = L.AdditiveAttention(3, 5, 4)
    q, k = torch.randn(2, 3, 3), torch.randn(2, 6, 5)
    context, weights = attn(q, k)
    for b, t in itertools.product(range(2), range(3)):
        scores = torch.stack([attn.v.weight[0] @ torch.tanh(attn.W_q.weight @ q[b, t] + attn.W_k.weight @ k[b, s])
                              for s in range(6)])
        assert torch.allclose(weights[b, t], scores.softmax(0), atol=1e-6)
        assert torch.allclose(context[b, t], (scores.softmax(0)[:, None] * k[b]).sum(0), atol=1e-6)


@pytest.mark.parametrize("cls", [L.AdditiveAttention, L.DotAttention])
def test_attention_weights_are_distributions_and_respect_the_mask(cls):
    torch.manual_seed(1)
    attn = cls(4, 6, 5)
    mask = torch.tensor([[True, True, True, False, False], [True, False, False, False, False]])
    context, weights = attn(torch.randn(2, 3, 4), torch.randn(2, 5, 6), mask)
    assert weights.shape == (2, 3, 5) and context.shape == (2, 3, 6)
    assert torch.allclose(weights.sum(-1), torch.ones(2, 3), atol=1e-6)
    assert (weights[~mask[:, None, :].expand(-1, 3, -1)] == 0).all()
    assert torch.allclose(weights[1, :, 0], torch.ones(3))  # one real key: all the attention goes there


def test_dot_attention_equals_torch_scaled_dot_product_attention():
    torch.manual_seed(2)
    attn = L.DotAttention(7, 10)
    q, k = torch.randn(3, 4, 7), torch.randn(3, 9, 10)
    mask = torch.rand(3, 9) > 0.3
    mask[:, 0] = True
    context, _ = attn(q, k, mask)
    expected = F.scaled_dot_product_attention(attn.W_q(q), k, k, attn_mask=mask[:, None, :])
    assert torch.allclose(context, expected, atol=1e-5)


# -------------------------------------------------------------------------------------------------- decoder
@pytest.mark.parametrize("attention", ["none", "additive", "dot"])
def test_teacher_forcing_in_one_call_equals_one_step_at_a_time(attention):
    model = small_model(attention)
    x, y_in, _ = L.reversal_batch(3, 6, seed=1)
    with torch.no_grad():
        logits, weights = model(x, y_in)
        states, summary = model.encoder(x)
        h = model.decoder.start(summary)
        for t in range(y_in.shape[1]):
            step_logits, h, step_weights = model.decoder(y_in[:, t:t + 1], h, states, summary)
            assert torch.allclose(step_logits[:, 0], logits[:, t], atol=1e-5)
            if attention != "none":
                assert torch.allclose(step_weights[:, 0], weights[:, t], atol=1e-5)
    assert (weights is None) == (attention == "none")


@pytest.mark.parametrize("attention", ["none", "additive"])
def test_only_attention_reads_the_encoder_states(attention):
    model = small_model(attention)
    x, y_in, _ = L.reversal_batch(2, 5, seed=2)
    with torch.no_grad():
        states, summary = model.encoder(x)
        h = model.decoder.start(summary)
        a = model.decoder(y_in, h, states, summary)[0]
        b = model.decoder(y_in, h, torch.randn_like(states), summary)[0]
    assert torch.allclose(a, b) == (attention == "none")  # the bottleneck sees the input only through the summary


def test_encoder_summary_is_the_last_state_of_each_direction():
    model = small_model("none")
    x, _, _ = L.reversal_batch(2, 5, seed=4)
    with torch.no_grad():
        states, summary = model.encoder(x)
    H = states.shape[-1] // 2
    assert torch.allclose(summary[:, :H], states[:, -1, :H]) and torch.allclose(summary[:, H:], states[:, 0, H:])


# ------------------------------------------------------------------------------------------------- decoding
def sequence_log_prob(step, h0, tokens, bos):
    prev, h, total = torch.tensor([bos]), h0, 0.0
    for t in tokens:
        log_probs, h = step(prev, h)
        total += log_probs[0, t].item()
        prev = torch.tensor([t])
    return total


def test_greedy_decode_takes_argmaxes_and_scores_them():
    model = small_model("additive")
    x, _, _ = L.reversal_batch(4, 5, seed=5)
    with torch.no_grad():
        step, h0 = L.decoder_step_fn(model, x)
        tokens, log_prob = L.greedy_decode(step, h0, max_len=8)
        for i in range(4):
            s1, h1 = L.decoder_step_fn(model, x[i:i + 1])
            seq = L.trim_at_eos(tokens[i])
            assert math.isclose(sequence_log_prob(s1, h1, seq, L.BOS), log_prob[i].item(), abs_tol=1e-4)
            assert all(t == L.EOS for t in tokens[i, len(seq):].tolist())
            # each token is the argmax given the previous ones
            prefix = torch.tensor([[L.BOS] + seq[:-1]])
            logits, _ = model(x[i:i + 1], prefix)
            assert logits[0].argmax(-1).tolist() == seq


def test_trim_at_eos():
    assert L.trim_at_eos([3, 4, L.EOS, 5, L.EOS]) == [3, 4, L.EOS]
    assert L.trim_at_eos(torch.tensor([1, 2])) == [1, 2]


def brute_force_best(lm: L.TableLM, max_len: int) -> float:
    symbols = [i for i in range(len(lm.symbols)) if i != lm.eos]
    best = -math.inf
    for n in range(max_len + 1):
        for body in itertools.product(symbols, repeat=n):
            seq = list(body) + ([lm.eos] if n < max_len else [])
            best = max(best, sequence_log_prob(lm.step, lm.h0, seq, lm.bos))
    return best


@pytest.mark.parametrize("name", ["greedy is not the most probable", "plain beam prunes the greedy path"])
def test_a_wide_beam_finds_the_most_probable_sequence(name):
    lm = L.toy_lm(name)
    tokens, log_prob = L.beam_search(lm.step, lm.h0, beam_width=100, max_len=4, bos=lm.bos, eos=lm.eos)
    assert math.isclose(log_prob, brute_force_best(L.toy_lm(name), 4), abs_tol=1e-6)
    assert math.isclose(log_prob, sequence_log_prob(lm.step, lm.h0, tokens, lm.bos), abs_tol=1e-6)


def test_plain_beam_search_can_end_below_greedy_and_the_incumbent_prevents_it():
    lm = L.toy_lm("plain beam prunes the greedy path")
    tokens, greedy_lp = L.greedy_decode(lm.step, lm.h0, max_len=4, bos=lm.bos, eos=lm.eos)
    _, plain = L._beam_no_incumbent(lm.step, lm.h0, 2, 4, bos=lm.bos, eos=lm.eos)
    _, ours = L.beam_search(lm.step, lm.h0, 2, 4, bos=lm.bos, eos=lm.eos)
    assert plain < greedy_lp.item() - 1.0 and ours >= greedy_lp.item()


@pytest.mark.parametrize("seed", range(12))
def test_beam_never_below_greedy_and_reports_the_true_log_prob(seed):
    lm = L._RandomGRULM(seed, eos_bias=-1.0)
    h0 = torch.randn(1, 8, generator=torch.Generator().manual_seed(seed))
    with torch.no_grad():
        _, greedy_lp = L.greedy_decode(lm.step, h0, max_len=7, bos=6, eos=4)
        previous = -math.inf
        for width in [1, 2, 3, 5]:
            tokens, log_prob = L.beam_search(lm.step, h0, width, max_len=7, bos=6, eos=4)
            assert log_prob >= greedy_lp.item() - 1e-6
            assert math.isclose(log_prob, sequence_log_prob(lm.step, h0, tokens, 6), abs_tol=1e-4)
            assert len(tokens) <= 7 and (tokens[-1] == 4 or len(tokens) == 7) and 4 not in tokens[:-1]
            previous = max(previous, log_prob)


# ------------------------------------------------------------------------------------------ training, plots
def test_training_is_deterministic_and_lowers_the_loss():
    runs = []
    for _ in range(2):
        model = small_model("dot", seed=3)
        runs.append(L.train_seq2seq(model, steps=60, lengths=[3], batch_size=16, lr=2e-2, seed=1))
    assert runs[0] == runs[1]
    assert sum(runs[0][-5:]) / 5 < 0.6 * sum(runs[0][:5]) / 5


def test_evaluate_lengths_reports_accuracies():
    res = L.evaluate_lengths(small_model("additive"), [3, 5], n=20)
    assert set(res) == {3, 5}
    for length, r in res.items():
        assert 0 <= r["seq_acc"] <= r["tok_acc"] <= 1 and 0 <= r["teacher_forced_tok_acc"] <= 1
        assert r["per_position"].shape == r["teacher_forced_per_position"].shape == (length + 1,)


def test_plot_alignment_and_the_widget_view():
    fig = render(L.plot_alignment, weights=torch.rand(4, 3), source=[1, 2, 3], output=[3, 2, 1, L.EOS])
    assert isinstance(fig, plt.Figure) and fig.axes[0].get_xlabel() == "source token (input)"
    with pytest.raises(ValueError):
        L.plot_alignment(torch.rand(3, 3), [1, 2, 3], [3, 2, 1, L.EOS])
    model, baseline = small_model("additive"), small_model("none", seed=1)
    source = L.reversal_batch(1, 6, seed=9)[0][0]
    for width in [1, 3]:
        fig = render(L.show_decoding, model=model, source=source, beam_width=width, baseline=baseline)
        assert isinstance(fig, plt.Figure) and f"beam width {width}" in fig.axes[0].get_title()
