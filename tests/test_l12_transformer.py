"""Lecture 12: attention, masks, multi-head attention and the block against torch's own implementations and
hand-computed values; RMSNorm, sinusoidal positions, the skip-gram pieces, the recall models and the widget's plot."""
from __future__ import annotations

import math

import matplotlib.pyplot as plt
import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F

from solutions import l12_transformer as L
from utils.widgets import render


# ------------------------------------------------------------------------------------------------ attention
@pytest.mark.parametrize("causal", [False, True])
def test_attention_matches_scaled_dot_product_attention(causal):
    g = torch.Generator().manual_seed(0)
    q, k, v = (torch.randn(2, 3, 7, 8, generator=g) for _ in range(3))
    mask = L.causal_mask(7) if causal else None
    out, w = L.attention(q, k, v, mask)
    assert torch.allclose(out, F.scaled_dot_product_attention(q, k, v, attn_mask=mask), atol=1e-5)
    assert torch.allclose(w.sum(-1), torch.ones(2, 3, 7), atol=1e-6)
    if causal:
        assert (w.triu(1) == 0).all()


def test_attention_by_hand():
    q = torch.tensor([[2.0, 0.0]])
    k = torch.tensor([[1.0, 0.0], [0.0, 1.0]])
    v = torch.tensor([[1.0], [3.0]])
    out, w = L.attention(q, k, v)
    e = math.exp(2 / math.sqrt(2))
    assert torch.allclose(w, torch.tensor([[e / (e + 1), 1 / (e + 1)]]))
    assert torch.allclose(out, torch.tensor([[(e + 3) / (e + 1)]]))


def test_padding_mask_hides_pad_keys():
    m = L.padding_mask(torch.tensor([2, 3]), 3)
    assert m.shape == (2, 1, 1, 3) and m[0, 0, 0].tolist() == [True, True, False]
    q = torch.randn(2, 1, 3, 4)
    _, w = L.attention(q, q, q, m)
    assert (w[0, 0, :, 2] == 0).all()
    assert L.causal_mask(3).tolist() == [[True, False, False], [True, True, False], [True, True, True]]


def test_multihead_matches_nn_multiheadattention():
    torch.manual_seed(0)
    mha = L.MultiHeadAttention(16, 4)
    ref = nn.MultiheadAttention(16, 4, batch_first=True)
    with torch.no_grad():
        ref.in_proj_weight.copy_(mha.qkv.weight)
        ref.in_proj_bias.copy_(mha.qkv.bias)
        ref.out_proj.weight.copy_(mha.proj.weight)
        ref.out_proj.bias.copy_(mha.proj.bias)
    x = torch.randn(2, 6, 16)
    for mask in [None, L.causal_mask(6)]:
        ours, ow = mha(x, mask)
        theirs, tw = ref(x, x, x, attn_mask=None if mask is None else ~mask, average_attn_weights=False)
        assert torch.allclose(ours, theirs, atol=1e-5) and torch.allclose(ow, tw, atol=1e-5)


def test_attention_without_positions_is_permutation_equivariant():
    torch.manual_seed(0)
    block = L.Block(8, 2)
    x, perm = torch.randn(1, 5, 8), torch.tensor([3, 1, 4, 0, 2])
    assert torch.allclose(block(x[:, perm])[0], block(x)[0][:, perm], atol=1e-6)


def test_block_is_two_residual_writes():
    torch.manual_seed(0)
    block = L.Block(8, 2, d_ff=16)
    x = torch.randn(2, 4, 8)
    a, w = block.attn(block.ln1(x))
    x1 = x + a
    out, w2 = block(x)
    assert torch.allclose(out, x1 + block.mlp(block.ln2(x1))) and torch.allclose(w, w2)
    assert block.mlp[0].out_features == 16 and L.Block(8, 2).mlp[0].out_features == 32


# ------------------------------------------------------------------------------------- norms and positions
def test_rmsnorm_matches_torch():
    x = 3 * torch.randn(5, 12) + 1
    assert torch.allclose(L.RMSNorm(12)(x), nn.RMSNorm(12, eps=1e-6)(x), atol=1e-6)


def test_sinusoidal_positions():
    pe = L.sinusoidal_positions(20, 8)
    assert pe.shape == (20, 8)
    assert torch.allclose(pe[0], torch.tensor([0.0, 1.0] * 4))
    assert torch.allclose(pe[5, 2], torch.tensor(math.sin(5 / 10000 ** (2 / 8))))
    assert torch.allclose(pe.pow(2).view(20, 4, 2).sum(-1), torch.ones(20, 4), atol=1e-6)  # sin² + cos² = 1


# ------------------------------------------------------------------------------------------------ skip-gram
def test_skipgram_data_and_training():
    pairs, vocab, counts = L.skipgram_data("a b a c a b d", vocab_size=3, window=1)
    assert vocab[0] == "a" and counts[0] == 3 and len(vocab) == 3
    assert {tuple(p) for p in pairs.tolist()} <= {(i, j) for i in range(3) for j in range(3)}
    assert [vocab.index("a"), vocab.index("b")] in pairs.tolist()
    model, losses = L.train_skipgram(pairs, counts, dim=8, steps=30, batch_size=16)
    assert losses[-1] < losses[0]
    assert L.nearest(model.inp.weight.detach(), vocab, "a", k=2)[0][0] != "a"


def test_nearest_and_analogy_on_planted_vectors():
    vocab = ["king", "queen", "man", "woman", "apple"]
    E = torch.tensor([[1.0, 1, 0], [1, -1, 0], [0, 1, 0.1], [0, -1, 0.1], [0, 0, 1]])
    assert L.analogy(E, vocab, "man", "woman", "king", k=1)[0][0] == "queen"
    assert L.nearest(E, vocab, "king", k=1)[0][0] in {"man", "queen"}


# -------------------------------------------------------------------------------------- recall and widget
def test_recall_batch_and_models_shapes():
    x, y = L.recall_batch(8, seed=1)
    assert x.shape == (8, 2 * L.N_PAIRS + 1) and y.min() >= 0 and y.max() < L.N_VALUES
    pos = (x[:, :-1] == x[:, -1:]).float().argmax(1)  # the query's key, its value right after it
    assert torch.equal(x[torch.arange(8), pos + 1] - L.N_KEYS, y)
    tf, mlp = L.RecallTransformer(), L.RecallMLP()
    logits, maps = tf(x)
    assert logits.shape == (8, L.N_VALUES) and len(maps) == 2 and maps[0].shape == (8, 4, 9, 9)
    assert mlp(x)[0].shape == (8, L.N_VALUES) and L.n_params(mlp) > L.n_params(tf)
    assert L.recall_tokens(x[0])[-1].endswith("?")


def test_train_recall_lowers_the_loss_deterministically():
    torch.manual_seed(0)
    a = L.train_recall(L.RecallTransformer(d_model=16, n_heads=2), steps=150, batch_size=32)
    torch.manual_seed(0)
    b = L.train_recall(L.RecallTransformer(d_model=16, n_heads=2), steps=150, batch_size=32)
    assert a == b and sum(a[-20:]) < sum(a[:20]) - 2  # mean loss falls by > 0.1 nat


def test_plot_attention_widget_update():
    x, _ = L.recall_batch(3, seed=0)
    with torch.no_grad():
        _, maps = L.RecallTransformer()(x)
    fig = render(lambda layer, head, example: L.plot_attention(maps, x, layer, head, example),
                 layer=1, head=3, example=2)
    assert isinstance(fig, plt.Figure) and "layer 1, head 3, example 2" in fig.axes[0].get_title()
