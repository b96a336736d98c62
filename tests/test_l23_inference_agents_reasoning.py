"""Lecture 23: the KV-cache step against full causal attention and utils' cache, quantization by hand,
speculative decoding (greedy identity, sampled distribution), the CoT formats and the process verifier,
majority vote and test-time-compute curves, the ReAct loop's dispatch and guards, GRPO plumbing, the widget's
plot, and the committed arith_reasoner checkpoint (re-measured, plus the tool claim at small scale)."""
from __future__ import annotations

import math

import matplotlib.pyplot as plt
import numpy as np
import pytest
import torch
import torch.nn.functional as F

import utils
from solutions import l23_inference_agents_reasoning as L
from utils.gpt import GPT, GPTConfig, KVCache
from utils.widgets import render


@pytest.fixture(scope="module")
def reasoner():
    utils.pretrained.LECTURE_MODELS.setdefault("arith_reasoner", "solutions.l23_inference_agents_reasoning")
    return utils.pretrained("arith_reasoner", build_if_missing=False)


def tiny_gpt(seed: int, n_layer: int = 2, n_embd: int = 32, vocab: int = 11, block: int = 32) -> GPT:
    torch.manual_seed(seed)
    return GPT(GPTConfig(vocab_size=vocab, block_size=block, n_layer=n_layer, n_head=2, n_embd=n_embd)).eval()


# ------------------------------------------------------------------------------------------------- KV cache
def test_cached_step_replays_full_causal_attention():
    g = torch.Generator().manual_seed(0)
    q, k, v = (torch.randn(2, 3, 9, 8, generator=g) for _ in range(3))
    full = F.scaled_dot_product_attention(q, k, v, is_causal=True)
    K, V, outs = k[:, :, :0], v[:, :, :0], []
    for t in range(9):
        out, K, V = L.cached_attention_step(q[:, :, t:t + 1], k[:, :, t:t + 1], v[:, :, t:t + 1], K, V)
        outs.append(out)
    assert torch.allclose(torch.cat(outs, 2), full, atol=1e-6)
    assert torch.equal(K, k) and torch.equal(V, v)


def test_first_step_returns_its_own_value():
    q, k, v = torch.randn(1, 1, 1, 4), torch.randn(1, 1, 1, 4), torch.randn(1, 1, 1, 4)
    out, K, _ = L.cached_attention_step(q, k, v, torch.zeros(1, 1, 0, 4), torch.zeros(1, 1, 0, 4))
    assert torch.allclose(out, v) and K.shape == (1, 1, 1, 4)


def test_utils_cache_gives_uncached_logits_in_float64():
    model = tiny_gpt(0).double()
    ids = torch.randint(11, (2, 12))
    full, _ = model(ids)
    cache = KVCache(model.config, 2, dtype=torch.float64)
    model(ids[:, :5], cache=cache)  # a prefill of 5, then one token at a time
    steps = [model(ids[:, t:t + 1], cache=cache)[0] for t in range(5, 12)]
    assert (torch.cat(steps, 1) - full[:, 5:]).abs().max() < 1e-10
    assert cache.nbytes == 2 * 2 * 2 * 2 * 12 * 16 * 8  # K and V, layers, batch, heads, T, head_dim, float64


def test_time_decoding_returns_seconds_per_token():
    t = L.time_decoding(tiny_gpt(0), 20, n_new=4, use_cache=True)
    assert 0 < t < 1


# --------------------------------------------------------------------------------------------- quantization
def test_quantize_by_hand():
    q, s = L.quantize(torch.tensor([[0.5, -1.0], [0.25, 0.0]]))
    assert s.shape == (1, 1) and math.isclose(s.item(), 1 / 127, rel_tol=1e-6)
    assert q.dtype == torch.int8 and q.tolist() == [[64, -127], [32, 0]]  # 63.5 rounds to 64 (half to even: 64)
    q4, s4 = L.quantize(torch.tensor([[0.7, -0.1], [0.0, 0.0]]), bits=4, per_channel=True)
    assert s4.shape == (2, 1) and q4.tolist() == [[7, -1], [0, 0]]


@pytest.mark.parametrize("bits,per_channel", [(8, False), (8, True), (4, False), (4, True)])
def test_quantization_error_is_at_most_half_a_step(bits, per_channel):
    w = torch.randn(16, 32) * torch.logspace(-2, 0, 16)[:, None]
    q, s = L.quantize(w, bits, per_channel)
    qmax = 2 ** (bits - 1) - 1
    assert q.abs().max() <= qmax
    assert ((L.dequantize(q, s) - w).abs() <= s / 2 + 1e-7).all()


def test_per_channel_beats_per_tensor_on_uneven_rows():
    w = torch.randn(8, 64) * torch.tensor([10.0] + [0.1] * 7)[:, None]
    errs = [(L.dequantize(*L.quantize(w, 4, pc)) - w)[1:].norm() for pc in (False, True)]  # the small rows
    assert errs[1] < errs[0] / 3


def test_quantize_model_and_sizes():
    model = tiny_gpt(1)
    q8 = L.quantize_model(model, 8, per_channel=True)
    w, w8 = model.lm_head.weight, q8.lm_head.weight
    assert not torch.equal(w, w8) and (w - w8).abs().max() < w.abs().max() / 100
    assert q8.lm_head.weight is q8.transformer.wte.weight  # still tied
    n32 = L.model_nbytes(model)
    assert n32 == 4 * sum(p.numel() for p in model.parameters())
    assert L.model_nbytes(model, 8) < n32 / 3 and L.model_nbytes(model, 4) < L.model_nbytes(model, 8)


# ------------------------------------------------------------------------------------- speculative decoding
def test_greedy_speculative_equals_greedy_target():
    target, draft = tiny_gpt(0, n_layer=2), tiny_gpt(1, n_layer=1, n_embd=16)
    prompt = torch.tensor([1, 2, 3])
    plain = target.generate(prompt[None], 20, top_k=1)[0]
    for k in (1, 3, 5):
        spec, stats = L.speculative_generate(target, draft, prompt, 20, k=k)
        assert torch.equal(spec, plain)
        assert stats["tokens"] == 20 and stats["target_calls"] <= 20


def test_draft_equal_to_target_is_always_accepted():
    target = tiny_gpt(0)
    spec, stats = L.speculative_generate(target, target, torch.tensor([1]), 12, k=3, temperature=1.0,
                                         generator=torch.Generator().manual_seed(0))
    assert stats["accepted"] == stats["proposed"] and stats["target_calls"] == 3 and len(spec) == 13


def test_speculative_sampling_matches_target_distribution():
    p = torch.tensor([0.5, 0.3, 0.15, 0.05])
    q = torch.tensor([0.1, 0.2, 0.3, 0.4])
    hist = torch.bincount(L.speculative_first_token(p, q, 40_000, seed=0), minlength=4).float() / 40_000
    assert (hist - p).abs().max() < 0.01


# ------------------------------------------------------------------------------------ formats and verifier
def test_cot_format_and_verifier():
    assert L.cot_steps("042+317=") == "2+7+0=09,4+1+0=05,0+3+0=03;0359"
    assert L.cot_steps("999+001=") == "9+1+0=10,9+0+1=10,9+0+1=10;1000"
    good = L.cot_steps("587+645=") + "$"
    assert L.verify_cot("587+645=", good) and L.parse_answer(good) == "1232"
    assert not L.verify_cot("587+645=", good.replace("8+4+1=13", "8+4+0=12"))  # a dropped carry
    assert not L.verify_cot("587+645=", good[:-5] + "1233$")                    # answer not from the steps
    assert not L.verify_cot("587+645=", good[:-1])                              # never finished


def test_format_problem_spans_cover_the_observation():
    prompt, text, spans = L.format_problem("T", "347*268=", "092996")
    assert prompt == "T347*268=" and text.endswith("ans:092996$")
    (s, e), = spans
    assert text[s:e] == "obs:92996;"
    assert L.parse_answer(text[len(prompt):]) == "092996"
    with pytest.raises(ValueError, match="unknown format"):
        L.format_problem("X", "1+1=", "2")


def test_reasoner_batch_masks_prompt_and_observations():
    tok = L.reasoner_tokenizer()
    x, y = L.reasoner_batch(tok, 64, 64, np.random.default_rng(0))
    assert x.shape == y.shape == (64, 64)
    for row_x, row_y in zip(x, y):
        text = tok.decode(row_x.tolist())
        n_prompt = 9
        assert (row_y[:n_prompt - 1] == -1).all()
        if text.startswith("T"):
            i = text.index("obs:")
            assert (row_y[i - 1:text.index(";", i)] == -1).all()


def test_parse_answer_and_accuracy():
    assert L.parse_answer("0359$") == "0359" and L.parse_answer("0359") is None
    assert L.parse_answer("think:x;ans:12$") == "12" and L.parse_answer("ab;$") is None
    assert L.accuracy(["0359$", "0358$"], ["0359", "0359"]) == 0.5


def test_multiplication_problems():
    probs = L.multiplication_problems(5, 3, seed=0)
    for q, a in probs:
        x, y = q.rstrip("=").split("*")
        assert len(x) == len(y) == 3 and int(a) == int(x) * int(y) and len(a) == 6


# ---------------------------------------------------------------------------------- test-time compute
def test_majority_vote_edge_cases():
    assert L.majority_vote([None, None]) is None
    assert L.majority_vote(["1", "2", "2", "1"]) == "1"
    assert L.majority_vote([None, "4", None]) == "4"


def test_tts_curves_by_hand():
    answers = [["1", "2", "2"], ["5", "5", "6"]]
    verified = [[False, True, True], [False, False, False]]
    c = L.tts_curves(answers, verified, ["2", "6"], [1, 3])
    assert c["majority"] == [0.0, 0.5]          # problem 1 voted right at N=3; problem 2 wrong both times
    assert c["verifier"] == [0.0, 0.5]          # verifier picks "2" for problem 1; nothing verified for 2
    fig = render(lambda n: L.plot_tts(c, [1, 3], n, greedy=0.4), n=3)
    assert isinstance(fig, plt.Figure) and "N = 3" in fig.axes[0].get_title()


# ------------------------------------------------------------------------------------------------ agents
def test_dispatch_and_calculator():
    assert L.dispatch("calc(347*268)", L.TOOLS) == "92996"
    assert L.dispatch(" calc(2+3) ", L.TOOLS) == "5"
    assert L.dispatch("calc(__import__('os'))", L.TOOLS).startswith("error: cannot compute")
    assert L.dispatch("nope(1)", L.TOOLS) == "error: unknown tool nope"
    assert L.dispatch("calc", L.TOOLS) == "error: malformed action"
    with pytest.raises(ValueError):
        L.calculator("2**100")


def test_react_guards_with_scripted_policies():
    model, tok = tiny_gpt(0), L.reasoner_tokenizer()
    ans, trace = L.react(model, tok, "003*004=", policy=lambda t: "think:hmm;", max_steps=3)
    assert ans is None and trace.endswith("[stopped: step limit]") and trace.count("think") == 3
    script = iter(["act:calc 3*4;", "act:calc(3*4);", "ans:000012$"])
    ans, trace = L.react(model, tok, "003*004=", policy=lambda t: next(script))
    assert ans == "000012" and "obs:error: malformed action;" in trace and "obs:12;" in trace
    ans, trace = L.react(model, tok, "003*004=", policy=lambda t: "x" * 50)
    assert ans is None and "turn too long" in trace


def test_grpo_advantage_and_one_step(reasoner):
    model, tok = reasoner
    seen = []

    def advantage(r):  # the full-precision model gets every answer right: groups all 1, advantage 0
        seen.append(r)
        return r - r.mean(1, keepdim=True)

    same, _ = L.grpo_finetune(model, tok, steps=1, n_problems=2, group=4, advantage=advantage)
    assert seen[0].shape == (2, 4) and all(torch.equal(a, b) for a, b in zip(same.parameters(), model.parameters()))
    model = L.quantize_model(model, 4, per_channel=False)  # the damaged int4 reasoner: mixed groups, real signal
    tuned, rewards = L.grpo_finetune(model, tok, steps=1, n_problems=4, group=8)
    assert len(rewards) == 1 and 0 < rewards[0] < 1
    assert tuned is not model and any(not torch.equal(a, b) for a, b in zip(tuned.parameters(), model.parameters()))


# --------------------------------------------------------------------------------------- the checkpoint
def test_checkpoint_metrics_match_record(reasoner):
    record = utils.pretrained.info("arith_reasoner")
    measured = L.PRETRAINED["arith_reasoner"].evaluate(reasoner)
    for k, v in measured.items():
        assert abs(v - record[k]) < 1e-6, (k, v, record[k])
    assert measured["val_C_accuracy"] > measured["val_A_accuracy"] + 0.3
    assert measured["val_M_accuracy"] < 0.1


def test_tool_use_solves_multiplication_at_small_scale(reasoner):
    model, tok = reasoner
    probs = L.multiplication_problems(8, 3, seed=7)
    correct = [L.react(model, tok, q)[0] == a for q, a in probs]
    assert sum(correct) >= 6
