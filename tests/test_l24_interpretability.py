"""Tests for solutions/l24_interpretability.py (the generic exercise checks live in tests/test_solutions.py)."""
import math

import matplotlib.pyplot as plt
import pytest
import torch
import torch.nn.functional as F

import utils
from solutions import l24_interpretability as L
from utils.gpt import GPT, GPTConfig
from utils.pretrained import CharTokenizer


@pytest.fixture(scope="module")
def tiny_gpt():
    torch.manual_seed(0)
    model = GPT(GPTConfig(vocab_size=12, block_size=16, n_layer=2, n_head=2, n_embd=16)).eval()
    tok = CharTokenizer(list("abcdefgh .,\n"))
    return model, tok


def test_hooks_are_removed_even_after_an_error(tiny_gpt):
    model, _ = tiny_gpt
    block = model.transformer.h[0]
    with pytest.raises(RuntimeError), L.hooks((block, lambda m, i, o: o, "forward")):
        assert len(block._forward_hooks) == 1
        raise RuntimeError("boom")
    assert len(block._forward_hooks) == 0
    with pytest.raises(ValueError, match="forward' or 'pre'"), L.hooks((block, lambda m, i: None, "post")):
        pass
    assert len(block._forward_pre_hooks) == 0


def test_residual_stream_is_the_sum_of_its_writes_and_the_lens_ends_at_the_logits(tiny_gpt):
    model, _ = tiny_gpt
    idx = torch.randint(12, (3, 10))
    stream = L.residual_stream(model, idx)
    parts = L.stream_parts(model, idx)
    assert len(stream) == 3 and list(parts) == ["embed", "attn0", "mlp0", "attn1", "mlp1"]
    torch.testing.assert_close(sum(parts.values()), stream[-1], atol=1e-5, rtol=0)
    with torch.no_grad():
        logits, _ = model(idx)
        lens = L.logit_lens(stream[-1], model.transformer.ln_f, model.lm_head.weight)
    torch.testing.assert_close(lens, logits, atol=1e-5, rtol=1e-5)
    metrics = L.lens_metrics(model, torch.randint(12, (2, 9)))
    assert len(metrics["loss"]) == 3 and all(0 <= a <= 1 for a in metrics["accuracy"])


def test_gpt_attention_reproduces_the_fused_attention_output(tiny_gpt):
    model, _ = tiny_gpt
    idx = torch.randint(12, (2, 7))
    patterns = L.gpt_attention(model, idx)
    attn = model.transformer.h[0].attn
    with torch.no_grad():
        x = model.transformer.h[0].ln_1(model.transformer.wte(idx) + model.transformer.wpe(torch.arange(7)))
        B, T, C = x.shape
        v = attn.c_attn(x).split(C, dim=2)[2].view(B, T, 2, C // 2).transpose(1, 2)
        mine = attn.c_proj((patterns[0] @ v).transpose(1, 2).reshape(B, T, C))
        torch.testing.assert_close(mine, attn(x), atol=1e-5, rtol=1e-5)
    assert torch.allclose(patterns[1].sum(-1), torch.ones(2, 2, 7))
    assert (patterns[1].triu(1) == 0).all()                      # causal: nothing above the diagonal


def test_head_attention_matches_torch_sdpa():
    torch.manual_seed(0)
    layer = L.HeadAttention(8, 2)
    x = torch.randn(3, 5, 8)
    q, k, v = layer.qkv(x).split(8, dim=2)
    q, k, v = (t.view(3, 5, 2, 4).transpose(1, 2) for t in (q, k, v))
    ref = layer.proj(F.scaled_dot_product_attention(q, k, v, is_causal=True).transpose(1, 2).reshape(3, 5, 8))
    torch.testing.assert_close(layer(x), ref, atol=1e-5, rtol=1e-5)


def test_induction_and_previous_token_scores_on_ideal_patterns():
    T, P = 8, 3
    ind = torch.zeros(1, 2, T, T)
    for t in range(T):
        ind[0, 0, t, t - P + 1 if t >= P else 0] = 1
        ind[0, 1, t, max(t - 1, 0)] = 1
    torch.testing.assert_close(L.induction_score(ind, P), torch.tensor([1.0, 0.0]))
    torch.testing.assert_close(L.prev_token_score(ind), torch.tensor([1 / 7, 1.0]))


def test_repeat_data_has_distinct_segments_and_varied_periods():
    g = torch.Generator().manual_seed(0)
    x = L.repeat_batch(64, 40, 32, [3, 5, 9], g)
    periods = set()
    for row in x:
        found = [p for p in (3, 5, 9) if (row[-p:] == row[-2 * p:-p]).all() and len(set(row[-p:].tolist())) == p]
        assert found, "every sequence ends in a repeated segment of distinct tokens"
        periods.add(min(found))
    assert len(periods) > 1
    rep = L.repeated_tokens(6, B=4, vocab_size=10)
    assert rep.shape == (4, 12) and (rep[:, :6] == rep[:, 6:]).all()


def test_patching_returns_one_value_per_head_and_position_and_never_edits_in_place():
    torch.manual_seed(0)
    model = L.AttnOnly(vocab_size=32, block_size=16, d_model=16).eval()
    clean, corrupt, answer = L.patching_setup(period=6, j=2, B=8)
    assert clean.shape == corrupt.shape == (8, 9) and (clean != corrupt).sum() == 8
    assert (answer == clean[:, 3]).all()
    rec, m_clean, m_corrupt = L.patching_effects(model, clean, corrupt, answer)
    assert rec.shape == (8, 9) and torch.isfinite(rec).all()
    z, zc = torch.randn(2, 4, 3, 2), torch.randn(2, 4, 3, 2)
    before = z.clone()
    out = L.patch_head(z, zc, 1, 2)
    assert torch.equal(z, before) and torch.equal(out[:, 2, 1], zc[:, 2, 1])


def test_toy_models_shapes_and_represented():
    W, b = L.train_toy_models(n=8, m=3, feature_probs=(1.0, 0.1), steps=3, batch_size=16)
    assert W.shape == (2, 3, 8) and b.shape == (2, 8)
    assert L.represented(torch.eye(3, 5)).tolist() == [True, True, True, False, False]


def test_sae_pieces():
    x = torch.tensor([[1.0, 2.0]])
    loss = L.sae_loss(x, torch.tensor([[1.0, 0.0]]), torch.tensor([[3.0, 0.0, 1.0]]), 0.5)
    assert loss.item() == pytest.approx(4.0 + 0.5 * 4.0)
    sae = L.SAE(4, 8)
    assert torch.allclose(sae.W_dec.norm(dim=1), torch.ones(8))
    acts = torch.randn(500, 4)
    trained, losses = L.train_sae(acts, 8, 0.01, steps=50, batch_size=64)
    assert torch.allclose(trained.W_dec.norm(dim=1), torch.ones(8), atol=1e-5) and losses[-1] < losses[0]
    stats = L.sae_stats(trained, acts)
    assert set(stats) == {"L0", "variance_explained", "dead_fraction"} and stats["variance_explained"] <= 1
    W_true = torch.randn(4, 6)
    cos, best = L.feature_recovery(W_true, torch.cat([W_true.T * 2, torch.randn(3, 4)]))
    assert cos.shape == (6, 9) and torch.allclose(best, torch.ones(6))
    snippets = L.top_activating(torch.tensor([0.0, 5.0, 1.0, 0.0]), "ab\ncd", 0, k=2, width=2)
    assert snippets[0] == (5.0, "a⟦b⟧") and snippets[1] == (1.0, "ab⟦⏎⟧")


def test_clamp_feature_moves_only_along_the_decoder_row():
    torch.manual_seed(0)
    sae = L.SAE(6, 10)
    x = torch.randn(2, 3, 6)
    with torch.no_grad():
        out = L.clamp_feature(x, sae, 4, 2.5)
        current = sae.encode(x)[..., 4]
        torch.testing.assert_close(out - x, (2.5 - current)[..., None] * sae.W_dec[4])
        off = L.clamp_feature(x, sae, 4, 0.0)
        torch.testing.assert_close(off - x, -current[..., None] * sae.W_dec[4])   # 0 removes exactly its share


def test_steering_identity_edit_has_zero_kl_and_generation_is_reproducible(tiny_gpt):
    model, tok = tiny_gpt
    idx = torch.randint(12, (2, 6))
    kl, p, q = L.steer_kl(model, idx, 1, lambda x: x)
    assert kl == pytest.approx(0.0, abs=1e-6) and torch.allclose(p, q)
    kl_big, _, _ = L.steer_kl(model, idx, 1, lambda x: x + 5.0)
    assert kl_big > 0
    a = L.generate_steered(model, tok, "abc", 1, None, n=8, seed=3)
    b = L.generate_steered(model, tok, "abc", 1, None, n=8, seed=3)
    assert a == b and len(a) == 8
    assert len(model.transformer.h[1]._forward_pre_hooks) == 0


def test_linear_attention_with_gd_weights_is_one_gd_step():
    D, a, b = 3, 0.7, -0.9
    model = L.LinearSelfAttention(D)
    with torch.no_grad():
        model.W_KQ.zero_()
        model.W_KQ[:D, :D] = -a * torch.eye(D)
        model.W_PV.zero_()
        model.W_PV[D, D] = -b
    g = torch.Generator().manual_seed(0)
    x, y = L.linear_tasks(5, 7, D, g)
    with torch.no_grad():
        got = model(x[:, :7], y[:, :7], x[:, 7])
    torch.testing.assert_close(got, L.gd_step_prediction(x[:, :7], y[:, :7], x[:, 7], a * b), atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(L.least_squares_prediction(x[:, :7], y[:, :7], x[:, 7]), y[:, 7], atol=1e-4, rtol=1e-4)


def test_trained_linear_attention_learns_a_gd_step():
    model, losses = L.train_icl(steps=300, batch_size=64)
    curves = L.icl_curves(model, points=(2, 16), B=500)
    assert min(curves["r2_vs_gd"]) > 0.9 and curves["transformer"][1] < curves["transformer"][0]
    assert math.isfinite(curves["eta"][0]) and curves["eta"][0] > 0


def test_widget_update_functions_render(tiny_gpt):
    model, tok = tiny_gpt
    torch.manual_seed(0)
    ind = L.AttnOnly(vocab_size=32, block_size=16, d_model=16).eval()
    x = L.repeated_tokens(5, B=2)
    pats = L.patterns_of(ind, x)
    fig = utils.widgets.render(L.plot_head, patterns=pats, tokens=x, recovered=torch.rand(8, 10), layer=1, head=2)
    assert isinstance(fig, plt.Figure)
    with pytest.raises(ValueError, match="layer must be in"):
        L.plot_head(pats, x, torch.rand(8, 10), 2, 0)
    sae = L.SAE(16, 32)
    fig = utils.widgets.render(L.plot_steering, model=model, tok=tok, sae=sae, layer=1, feature=3, value=2.0,
                               prompt="abc", n=10)
    assert isinstance(fig, plt.Figure)
    fig = L.plot_superposition(torch.randn(2, 3, 6), (1.0, 0.1))
    assert isinstance(fig, plt.Figure)
    plt.close(fig)
