"""utils.gpt: shapes, causality, the loss at initialisation, weight tying, attention vs a hand-written
masked softmax, generation."""
from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from utils.gpt import GPT, CausalSelfAttention, GPTConfig, KVCache

SMALL = GPTConfig(vocab_size=11, block_size=16, n_layer=2, n_head=2, n_embd=32)


def make(config: GPTConfig = SMALL) -> GPT:
    torch.manual_seed(0)
    return GPT(config)


def test_forward_shapes_and_initial_loss_near_uniform():
    model = make()
    idx, targets = torch.randint(0, 11, (2, 3, 16))
    logits, loss = model(idx, targets)
    assert logits.shape == (3, 16, 11)
    assert abs(loss.item() - math.log(11)) < 0.1, "small init: predictions start close to uniform"
    assert model(idx)[1] is None


def test_future_tokens_do_not_change_past_logits():
    model = make()
    idx = torch.randint(0, 11, (1, 12))
    changed = idx.clone()
    changed[0, 8:] = (changed[0, 8:] + 1) % 11
    a, b = model(idx)[0], model(changed)[0]
    assert torch.allclose(a[0, :8], b[0, :8], atol=1e-6)
    assert not torch.allclose(a[0, 8:], b[0, 8:], atol=1e-3)


def test_attention_matches_hand_written_masked_softmax():
    torch.manual_seed(0)
    attn = CausalSelfAttention(SMALL)
    x = torch.randn(2, 7, 32)
    B, T, C = x.shape
    q, k, v = attn.c_attn(x).split(C, dim=2)
    q, k, v = (t.view(B, T, 2, C // 2).transpose(1, 2) for t in (q, k, v))
    scores = q @ k.transpose(-2, -1) / math.sqrt(C // 2)
    scores = scores.masked_fill(torch.triu(torch.ones(T, T, dtype=torch.bool), 1), float("-inf"))
    y = (F.softmax(scores, -1) @ v).transpose(1, 2).reshape(B, T, C)
    assert torch.allclose(attn(x), attn.c_proj(y), atol=1e-5)


def test_weight_tying_saves_vocab_times_width_parameters():
    tied, untied = make(), make(GPTConfig(**{**SMALL.__dict__, "tie_weights": False}))
    assert tied.lm_head.weight is tied.transformer.wte.weight
    assert untied.num_params() - tied.num_params() == 11 * 32
    assert tied.num_params(non_embedding=False) - tied.num_params() == 16 * 32


def test_generate_length_determinism_and_top_k():
    model = make()
    start = torch.zeros(2, 1, dtype=torch.long)
    torch.manual_seed(1)
    a = model.generate(start, 30)
    torch.manual_seed(1)
    b = model.generate(start, 30)
    assert a.shape == (2, 31) and torch.equal(a, b), "longer than block_size: the context is cropped"
    # top_k=1 is greedy: it must pick the arg-max every step
    greedy = model.generate(start, 5, top_k=1)
    for t in range(1, 6):
        logits = model(greedy[:, :t])[0][:, -1]
        assert torch.equal(greedy[:, t], logits.argmax(-1))
    assert model.training, "generate restores the training mode"
    with pytest.raises(ValueError, match="temperature must be positive"):
        model.generate(start, 1, temperature=0)


def test_top_p_filter_by_hand_and_in_generate():
    from utils.gpt import top_p_filter

    logits = torch.log(torch.tensor([[0.5, 0.3, 0.15, 0.05], [0.05, 0.15, 0.3, 0.5]]))
    inf = float("-inf")
    kept = top_p_filter(logits, 0.8)  # 0.5 + 0.3 reaches 0.8: two tokens survive, in any position
    assert torch.equal(kept.isinf(), torch.tensor([[False, False, True, True], [True, True, False, False]]))
    assert torch.equal(top_p_filter(logits, 0.81).isinf().sum(1), torch.tensor([1, 1]))
    assert top_p_filter(logits, 0.1)[0, 1] == inf and not top_p_filter(logits, 1.0).isinf().any()
    model = make()
    start = torch.zeros(2, 1, dtype=torch.long)
    greedy = model.generate(start, 5, top_k=1)
    assert torch.equal(model.generate(start, 5, top_p=1e-6), greedy), "a tiny nucleus is greedy"
    with pytest.raises(ValueError, match="top_p must be in"):
        model.generate(start, 1, top_p=0)


def test_bad_config_and_too_long_input():
    with pytest.raises(ValueError, match="divisible by n_head"):
        GPT(GPTConfig(n_embd=30, n_head=4))
    with pytest.raises(ValueError, match="exceeds block_size"):
        make()(torch.zeros(1, 17, dtype=torch.long))


def test_a_few_steps_fit_a_repeating_sequence():
    model = make()
    idx = torch.arange(16).remainder(4)[None].repeat(8, 1)
    opt = torch.optim.AdamW(model.parameters(), lr=3e-3)
    for _ in range(60):
        _, loss = model(idx[:, :-1], idx[:, 1:])
        opt.zero_grad()
        loss.backward()
        opt.step()
    assert loss.item() < 0.1


# ------------------------------------------------------------------------------------------------ KV cache
def _float64_model(block_size=32):
    torch.manual_seed(0)
    return GPT(GPTConfig(vocab_size=11, block_size=block_size, n_layer=2, n_head=2, n_embd=16)).double().eval()


def test_kv_cache_gives_the_uncached_logits_token_by_token_and_in_chunks():
    model = _float64_model()
    idx = torch.randint(11, (3, 20), generator=torch.Generator().manual_seed(1))
    full, _ = model(idx)
    cache = KVCache(model.config, batch_size=3, dtype=torch.float64)
    pieces = [model(idx[:, :5], cache=cache)[0]]           # prefill 5 tokens at once
    pieces += [model(idx[:, t:t + 1], cache=cache)[0] for t in range(5, 12)]   # then one at a time
    pieces.append(model(idx[:, 12:], cache=cache)[0])       # then a chunk of 8 that must see the past and itself
    assert cache.length == 20
    assert torch.allclose(torch.cat(pieces, 1), full, atol=1e-10, rtol=0)


def test_kv_cache_memory_and_overflow():
    config = GPTConfig(vocab_size=11, block_size=8, n_layer=3, n_head=2, n_embd=16)
    model = GPT(config).eval()
    cache = KVCache(config, batch_size=4)
    model(torch.zeros(4, 5, dtype=torch.long), cache=cache)
    # K and V × layers × batch × heads × positions × head_dim × 4 bytes (float32)
    assert cache.nbytes == 2 * 3 * 4 * 2 * 5 * 8 * 4
    with pytest.raises(ValueError, match="exceeds block_size 8"):
        model(torch.zeros(4, 4, dtype=torch.long), cache=cache)
    with pytest.raises(ValueError, match="KV cache is full"):
        cache.update(0, torch.zeros(4, 2, 4, 8), torch.zeros(4, 2, 4, 8))
    with pytest.raises(ValueError, match="max_len must be in 1..block_size"):
        KVCache(config, batch_size=1, max_len=9)


@pytest.mark.parametrize("new_tokens", [10, 40])  # 40 runs past block_size 32: the window slides, the cache refills
def test_cached_generation_samples_the_same_tokens(new_tokens):
    model = _float64_model()
    prompt = torch.randint(11, (2, 4), generator=torch.Generator().manual_seed(2))
    plain = model.generate(prompt, new_tokens, top_k=5, generator=torch.Generator().manual_seed(3))
    cached = model.generate(prompt, new_tokens, top_k=5, generator=torch.Generator().manual_seed(3), use_cache=True)
    assert torch.equal(plain, cached)
