"""Lecture 15: the power-law fit on synthetic laws, the cached scaling grid and its widget, RoPE against complex
multiplication, GQA against per-head attention, latent attention, SwiGLU, the MoE router and balancing loss, the
ring all-reduce, real two-process data parallelism and the memory arithmetic (ZeRO paper's numbers)."""
from __future__ import annotations

import math

import matplotlib.pyplot as plt
import numpy as np
import pytest
import torch
import torch.nn.functional as F

import utils.pretrained as P
from solutions import l15_scaling_modern_llms as L
from utils.widgets import render


@pytest.fixture
def table(monkeypatch):
    monkeypatch.setitem(P.LECTURE_MODELS, "scaling_runs", "solutions.l15_scaling_modern_llms")
    return P.load("scaling_runs", build_if_missing=False)


# ---------------------------------------------------------------------------------------------- scaling laws
def test_fit_power_law_recovers_a_known_law():
    N = torch.tensor([1e2, 1e3, 1e4, 1e5], dtype=torch.float64)
    a, alpha = L.fit_power_law(N, 7.0 * N ** -0.3 + 1.2, 1.2)
    assert a == pytest.approx(7.0, rel=1e-9) and alpha == pytest.approx(0.3, rel=1e-9)
    fit = L.fit_scaling_law(N, 7.0 * N ** -0.3 + 1.2, n_grid=2001)
    assert fit["c"] == pytest.approx(1.2, abs=5e-3) and fit["alpha"] == pytest.approx(0.3, abs=0.01)
    assert fit["r2"] > 0.9999
    assert L.power_law(np.array([1.0, 10.0]), 2.0, 1.0, 0.5).tolist() == [2.5, 0.7]


def test_scaling_params_drop_both_embeddings_and_train_lm_reports_6nd():
    m = L.make_gpt(1, 16)
    assert L.scaling_params(m) == m.num_params() - 103 * 16 == 12 * 16 * 16 + 3 * 16  # 2 LayerNorms + ln_f weights
    assert L.total_params(1, 16) == m.num_params(non_embedding=False)
    torch.set_num_threads(1)
    r = L.train_lm(1, 4, tokens=2 * 32 * 32, eval_blocks=8)
    assert r["steps"] == 2 and r["tokens"] == 2048 and r["flops"] == 6.0 * r["params"] * 2048
    assert 3.0 < r["val_loss"] < 5.5  # barely trained: near log(103) = 4.63
    assert L.train_lm(1, 4, tokens=2048, eval_blocks=8) == r  # seeded: reproducible


def test_committed_grid_is_complete_and_reproduces_its_record(table):
    recipe = L.scaling_runs_recipe()
    n_long = sum(w <= recipe["long_max_width"] for w in recipe["widths"]) * len(recipe["long_tokens"])
    assert len(table["val_loss"]) == len(recipe["widths"]) * len(recipe["tokens"]) + n_long
    assert torch.allclose(table["flops"], 6 * table["params"] * table["tokens"])
    record = P.info("scaling_runs")
    assert record["recipe"] == recipe, "recipe changed: rebuild with python -m utils.pretrained build scaling_runs"
    measured = L.PRETRAINED["scaling_runs"].evaluate(table)
    for k, v in measured.items():
        assert v == pytest.approx(record[k], abs=1e-9), k
    assert record["fit_r2"] > 0.9
    # more data never hurts a fixed width much, and the biggest models beat the smallest at the largest budget
    at = table["tokens"] == 819200
    assert table["val_loss"][at][table["params"][at].argmax()] < table["val_loss"][at][table["params"][at].argmin()]


def test_isoflop_on_a_synthetic_chinchilla_law():
    widths = torch.tensor([4.0, 8, 16, 32, 64])
    Ns = torch.tensor([float(L.total_params(1, int(w))) for w in widths])
    D = torch.tensor([1e4 * 2 ** i for i in range(12)])
    n_embd, tokens = torch.meshgrid(widths, D, indexing="ij")
    N = Ns[:, None].expand_as(tokens)
    loss = 1.5 + 40 / N ** 0.34 + 400 / tokens ** 0.28
    t = {"n_embd": n_embd.reshape(-1).double(), "params": N.reshape(-1).double(), "tokens": tokens.reshape(-1).double(),
         "val_loss": loss.reshape(-1).double()}
    curves = L.isoflop_curves(t, [1e9, 1e10, 1e11])
    assert [c["C"] for c in curves] == [1e9, 1e10, 1e11]
    winners = [c["N_opt"] for c in curves]
    assert winners == sorted(winners) and winners[0] < winners[-1]
    for c in curves:
        assert np.allclose(6 * c["N"] * c["D"], c["C"])
    plt.close(L.plot_isoflop(curves))
    with pytest.raises(ValueError, match="count must be"):
        L.isoflop_curves(t, [1e9], count="all")


def test_scaling_widget_renders_and_clamps(table):
    fig = render(lambda **v: L.scaling_widget(table, **v), smallest=0, largest=4, budget=5)
    assert isinstance(fig, plt.Figure)
    ax = fig.axes[0]
    assert ax.get_xlabel() and ax.get_ylabel() and "fit on 5 sizes" in ax.get_title()
    narrow = render(lambda **v: L.scaling_widget(table, **v), smallest=8, largest=8, budget=0)
    assert "fit on 3 sizes" in narrow.axes[0].get_title()  # widened to the 3 sizes a 3-parameter fit needs
    with pytest.raises(ValueError, match="budget must be an index"):
        L.scaling_widget(table, 0, 4, 99)


# ------------------------------------------------------------------------------------------------------ RoPE
def test_rope_is_complex_multiplication_and_relative():
    T, hd = 9, 8
    cos, sin = L.rope_angles(T, hd)
    x = torch.randn(2, T, hd)
    z = torch.complex(x[..., : hd // 2], x[..., hd // 2:]) * torch.polar(torch.ones(T, hd // 2), torch.atan2(sin, cos))
    assert torch.allclose(L.apply_rope(x, cos, sin), torch.cat([z.real, z.imag], -1), atol=1e-6)
    assert torch.allclose(L.apply_rope(x, cos, sin).norm(dim=-1), x.norm(dim=-1), atol=1e-5)  # a rotation
    q, k = torch.randn(hd), torch.randn(hd)
    Q, K = L.apply_rope(q.expand(T, hd), cos, sin), L.apply_rope(k.expand(T, hd), cos, sin)
    s = Q @ K.T
    assert torch.allclose(s[:-3, :-3], s[3:, 3:], atol=1e-5)
    c2, s2 = L.rope_angles(3, hd, offset=4)
    assert torch.allclose(c2, cos[4:7]) and torch.allclose(s2, sin[4:7])
    with pytest.raises(ValueError, match="even"):
        L.rope_angles(4, 7)


# ------------------------------------------------------------------------------------------------ attention
def _per_head_attention(attn, x):
    """GQA by hand: a loop over query heads, each reading its group's kv head."""
    B, T, C = x.shape
    H, Hkv, hd = attn.n_head, attn.n_kv_head, attn.head_dim
    q = attn.q(x).view(B, T, H, hd).transpose(1, 2)
    kv = attn.kv(x).view(B, T, 2, Hkv, hd)
    k, v = kv[:, :, 0].transpose(1, 2), kv[:, :, 1].transpose(1, 2)
    cos, sin = L.rope_angles(T, hd)
    q, k = L.apply_rope(q, cos, sin), L.apply_rope(k, cos, sin)
    mask = torch.ones(T, T, dtype=torch.bool).tril()
    outs = []
    for h in range(H):
        j = h // (H // Hkv)
        w = (q[:, h] @ k[:, j].transpose(-1, -2) / math.sqrt(hd)).masked_fill(~mask, float("-inf")).softmax(-1)
        outs.append(w @ v[:, j])
    return attn.proj(torch.stack(outs, 1).transpose(1, 2).reshape(B, T, C))


@pytest.mark.parametrize("n_kv", [1, 2, 4])
def test_gqa_matches_per_head_loop_and_cache_ratio(n_kv):
    torch.manual_seed(0)
    attn = L.GroupedQueryAttention(32, 4, n_kv)
    x = torch.randn(2, 7, 32)
    assert torch.allclose(attn(x), _per_head_attention(attn, x), atol=1e-5)
    assert attn.kv.out_features / L.GroupedQueryAttention(32, 4, 4).kv.out_features == n_kv / 4
    with pytest.raises(ValueError, match="n_kv_head"):
        L.GroupedQueryAttention(32, 4, 3)


def test_kv_cache_arithmetic():
    # Llama-2-7B: 32 layers, 32 heads of 128, 4096 tokens, fp16 → 2 GiB per sequence
    assert L.kv_cache_bytes(32, 32, 128, 4096) == 2 * 2 ** 30
    assert L.kv_cache_bytes(80, 8, 128, 4096, batch=4) / L.kv_cache_bytes(80, 64, 128, 4096, batch=4) == 1 / 8
    assert L.mla_cache_bytes(60, 512, 64, 1000, bytes_per=1) == 60 * 576 * 1000


def test_latent_attention_is_causal_and_caches_the_latent():
    torch.manual_seed(0)
    mla = L.LatentAttention(32, 4, kv_latent=8, rope_dim=4)
    x = torch.randn(2, 6, 32)
    c, kr = mla.compress(x)
    assert c.shape == (2, 6, 8) and kr.shape == (2, 6, 4) and mla(x).shape == x.shape
    x2 = x.clone()
    x2[:, 3:] = torch.randn(2, 3, 32)
    assert torch.allclose(mla(x)[:, :3], mla(x2)[:, :3], atol=1e-6)
    assert not torch.allclose(mla(x)[:, 3:], mla(x2)[:, 3:])


def test_swiglu_and_modern_block():
    torch.manual_seed(0)
    s = L.SwiGLU(48)
    assert s.gate.out_features == 128 and abs(sum(p.numel() for p in s.parameters()) - 2 * 4 * 48 * 48) < 0.05 * 18432
    x = torch.randn(3, 48)
    assert torch.allclose(s(x), s.down(F.silu(s.gate(x)) * s.up(x)))
    block = L.ModernBlock(48, 6, 2)
    y = torch.randn(2, 5, 48)
    assert block(y).shape == y.shape
    assert not any(n.endswith("bias") for n, _ in block.named_parameters())


# ------------------------------------------------------------------------------------------------------- MoE
def test_router_and_balancing_loss():
    logits = torch.tensor([[0.0, 2.0, 1.0], [3.0, 0.0, 0.0]])
    w, idx = L.top_k_route(logits, 2)
    assert idx.tolist() == [[1, 2], [0, 1]] and torch.allclose(w.sum(-1), torch.ones(2))
    assert torch.allclose(w[0], torch.tensor([2.0, 1.0]).softmax(0))
    with pytest.raises(ValueError, match="k must be between"):
        L.top_k_route(logits, 4)
    E = 4
    assert L.load_balancing_loss(torch.full((8, E), 1 / E), torch.arange(8)[:, None] % E).item() == pytest.approx(1.0)
    onehot = F.one_hot(torch.zeros(8, dtype=torch.long), E).float()
    assert L.load_balancing_loss(onehot, torch.zeros(8, 1, dtype=torch.long)).item() == pytest.approx(E)


def test_moe_dispatch_equals_a_loop_over_tokens():
    torch.manual_seed(0)
    moe = L.MoE(8, n_experts=4, k=2, hidden=16)
    x = torch.randn(10, 8)
    y, info = moe(x)
    w, idx = L.top_k_route(moe.router(x), 2)
    for n in range(10):
        expected = sum(w[n, j] * (F.gelu(x[n] @ moe.w1[e] + moe.b1[e]) @ moe.w2[e] + moe.b2[e])
                       for j, e in enumerate(idx[n].tolist()))
        assert torch.allclose(y[n], expected, atol=1e-5)
    assert info["counts"].sum() == 20 and info["aux_loss"].requires_grad


def test_balancing_loss_evens_out_usage():
    torch.set_num_threads(1)
    plain, balanced = L.train_moe(0.0, seed=2), L.train_moe(0.1, seed=2)
    assert balanced["entropy"] > plain["entropy"] + 0.1
    assert balanced["max_over_min"] < 3 < plain["max_over_min"]
    assert torch.allclose(plain["usage"].sum(), torch.tensor(1.0))


# ---------------------------------------------------------------------------------------- data parallelism
@pytest.mark.parametrize("W", [1, 2, 3, 5])
def test_ring_allreduce_is_the_mean_on_every_rank(W):
    g = torch.Generator().manual_seed(W)
    xs = [torch.randn(4, 3, generator=g) for _ in range(W)]
    copies = [x.clone() for x in xs]
    out = L.ring_allreduce(xs)
    assert len(out) == W and all(torch.allclose(o, torch.stack(copies).mean(0), atol=1e-6) for o in out)
    assert all(torch.equal(a, b) for a, b in zip(xs, copies)), "inputs must not be modified"


def test_two_real_processes_match_one_big_batch():
    ranks = L.run_ddp(world_size=2, steps=2)
    ref = L.single_process_reference(steps=2)
    for r in ranks:
        assert L.max_relative_error(r["reduced"], ref["grads"]) < 1e-6
        assert L.max_relative_error(r["final"], ref["final"]) < 1e-5
    assert L.max_relative_error(ranks[0]["local"], ref["grads"]) > 0.01


def test_memory_arithmetic_matches_the_zero_paper():
    # ZeRO (Rajbhandari et al. 2020), Figure 1: 7.5B parameters on 64 GPUs → 120, 31.4, 16.6, 1.88 GB
    totals = [L.training_memory_gb(7.5e9, 64, s)["total"] for s in ("ddp", "zero1", "zero2", "zero3")]
    assert totals == pytest.approx([120, 31.4, 16.6, 1.875], abs=0.1)
    assert L.training_memory_gb(7e9, 8, "fsdp") == L.training_memory_gb(7e9, 8, "zero3")
    with pytest.raises(ValueError, match="unknown strategy"):
        L.training_memory_gb(1e9, 8, "zero4")
