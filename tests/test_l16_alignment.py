"""Lecture 16: the task encoding and its masks, the exercise references against torch built-ins and hand-computed
values, log-probs of responses against a step-by-step computation, LoRA (initial identity, frozen base, merge,
< 5 % trainable on the pretrained model), the reward model's training and its designed blind spot, the closed-form
KL-regularised optimum behind the widget, the rule checker, distillation's loss, and small-scale versions of the
training loops (DPO raises its margin, RLHF logs what the lecture plots)."""
from __future__ import annotations

import copy

import matplotlib.pyplot as plt
import numpy as np
import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F

from solutions import l16_alignment as L
from utils.gpt import GPT, GPTConfig
from utils.pretrained import CharTokenizer
from utils.widgets import render

TOK = CharTokenizer(sorted(set(" .:abcdefghijklmnopqrstuvwxyz")))


def tiny_gpt(seed: int = 0) -> GPT:
    torch.manual_seed(seed)
    return GPT(GPTConfig(vocab_size=TOK.vocab_size, block_size=32, n_layer=1, n_head=2, n_embd=16)).eval()


# --------------------------------------------------------------------------------------------- the task
def test_prompt_response_and_sft_batch():
    assert L.make_prompt("cat") == "  rev cat:" and len(L.make_prompt("hello")) == L.PROMPT_WIDTH
    assert L.make_response("cat") == " tac."
    with pytest.raises(ValueError, match="too long"):
        L.make_prompt("toolong")
    x, y, mask = L.encode_sft_batch(TOK, [L.make_prompt("cat"), L.make_prompt("hello")],
                                    [L.make_response("cat"), L.make_response("hello")])
    assert x.shape == y.shape == mask.shape == (2, L.PROMPT_WIDTH + 7 - 1)
    assert torch.equal(x[:, 1:], y[:, :-1])
    assert TOK.decode(y[0][mask[0].bool()].tolist()) == " tac."      # the mask selects exactly the answer
    assert TOK.decode(y[1][mask[1].bool()].tolist()) == " olleh."
    train, test = L.reversal_words(50, 20, seed=0)
    assert len(train) == 50 and len(test) == 20 and not set(train) & set(test)
    assert all(3 <= len(w) <= 5 and w.isalpha() for w in train + test)


def test_sft_loss_equals_cross_entropy_with_ignore_index():
    g = torch.Generator().manual_seed(0)
    logits, targets = torch.randn(3, 5, 7, generator=g), torch.randint(7, (3, 5), generator=g)
    mask = (torch.rand(3, 5, generator=g) > 0.4).float()
    mask[0, 0] = 1
    ignored = targets.masked_fill(mask == 0, -100)
    expected = F.cross_entropy(logits.flatten(0, 1), ignored.flatten(), ignore_index=-100)
    assert torch.allclose(L.sft_loss(logits, targets, mask), expected, atol=1e-6)


def test_response_mask_stops_after_first_stop_token():
    r = torch.tensor([[1, 2, 0, 3, 0], [1, 1, 1, 1, 1], [0, 5, 5, 5, 5]])
    assert L.response_mask(r, 0).tolist() == [[1, 1, 1, 0, 0], [1, 1, 1, 1, 1], [1, 0, 0, 0, 0]]


def test_token_logprobs_match_step_by_step():
    model = tiny_gpt()
    prompts = L.encode_prompts(TOK, ["cat", "dog"])
    resp = torch.tensor([TOK.encode(" tac."), TOK.encode(" god.")])
    lp = L.token_logprobs(model, prompts, resp)
    assert lp.shape == (2, 5)
    with torch.no_grad():
        for t in range(5):
            ctx = torch.cat([prompts, resp[:, :t]], 1)
            step = model(ctx)[0][:, -1].log_softmax(-1).gather(1, resp[:, t:t + 1]).squeeze(1)
            assert torch.allclose(lp[:, t], step, atol=1e-5)
    mask = torch.tensor([[1, 1, 1, 0, 0], [1.0, 1, 1, 1, 1]])
    assert torch.allclose(L.sequence_logprobs(model, prompts, resp, mask), (lp * mask).sum(1))


def test_sampling_and_grading():
    model = tiny_gpt()
    resp, mask = L.sample_responses(model, L.encode_prompts(TOK, ["cat"] * 3), TOK, greedy=True)
    assert resp.shape == mask.shape == (3, L.MAX_NEW)
    texts = L.decode_responses(TOK, resp, mask)
    assert texts[0] == texts[1] == texts[2]                          # greedy: deterministic
    assert L.is_correct("cat", " tac.") and not L.is_correct("cat", " tac") and not L.is_correct("cat", " act.")
    assert 0.0 <= L.reversal_accuracy(model, TOK, ["cat", "dog"]) <= 1.0


# ------------------------------------------------------------------------------------------------- LoRA
def test_lora_starts_as_base_freezes_it_and_merges():
    torch.manual_seed(0)
    base = nn.Linear(6, 4)
    layer = L.LoRALinear(copy.deepcopy(base), r=2, alpha=4.0)
    x = torch.randn(5, 6)
    assert torch.allclose(layer(x), base(x))
    assert {n for n, p in layer.named_parameters() if p.requires_grad} == {"A", "B"}
    with torch.no_grad():
        layer.B.normal_()
    expected = base(x) + 2.0 * x @ layer.A.T @ layer.B.T
    assert torch.allclose(layer(x), expected, atol=1e-6)
    merged = layer.merge()
    assert isinstance(merged, nn.Linear) and torch.allclose(merged(x), layer(x), atol=1e-5)
    with pytest.raises(ValueError, match="rank"):
        L.LoRALinear(nn.Linear(3, 3), r=0)


def test_add_lora_on_pretrained_model_is_under_five_percent():
    import utils

    base, tok = utils.pretrained("char_english")
    model = L.add_lora(copy.deepcopy(base), r=4, alpha=8.0, targets=("c_attn", "c_fc", "c_proj"))
    n_train, n_all = L.count_trainable(model)
    assert n_train / n_all < 0.05
    assert sum(isinstance(m, L.LoRALinear) for m in model.modules()) == 4 * 4
    ids = L.encode_prompts(tok, ["cat", "word"])
    with torch.no_grad():
        assert torch.allclose(model(ids)[0], base(ids)[0], atol=1e-5)   # B = 0: same model
        for m in model.modules():
            if isinstance(m, L.LoRALinear):
                m.B.normal_(std=0.01)
        adapted = model(ids)[0]
        merged = L.merge_lora(model)
        assert not any(isinstance(m, L.LoRALinear) for m in merged.modules())
        assert torch.allclose(merged(ids)[0], adapted, atol=1e-4)


# ------------------------------------------------------------------------------------- preference losses
def test_bradley_terry_matches_softplus_and_is_finite():
    rc, rr = torch.randn(10), torch.randn(10)
    assert torch.allclose(L.bradley_terry_loss(rc, rr), F.softplus(rr - rc).mean(), atol=1e-6)
    assert torch.isclose(L.bradley_terry_loss(torch.zeros(1), torch.zeros(1)), torch.log(torch.tensor(2.0)))
    assert torch.isfinite(L.bradley_terry_loss(torch.tensor([-100.0]), torch.tensor([100.0])))


def test_dpo_loss_is_bradley_terry_on_implicit_rewards():
    g = torch.Generator().manual_seed(0)
    pc, pr, rc, rr = (-3 * torch.rand(6, generator=g) for _ in range(4))
    beta = 0.3
    expected = L.bradley_terry_loss(beta * (pc - rc), beta * (pr - rr))
    assert torch.allclose(L.dpo_loss(pc, pr, rc, rr, beta=beta), expected, atol=1e-6)
    # policy = reference → loss log 2 regardless of the log-probs
    assert torch.isclose(L.dpo_loss(pc, pr, pc, pr, beta=5.0), torch.log(torch.tensor(2.0)), atol=1e-6)
    # the gradient raises log π(chosen) and lowers log π(rejected)
    pc_, pr_ = pc.clone().requires_grad_(), pr.clone().requires_grad_()
    L.dpo_loss(pc_, pr_, rc, rr, beta=beta).backward()
    assert (pc_.grad < 0).all() and (pr_.grad > 0).all()


def test_group_relative_advantages():
    r = torch.tensor([[1.0, 0, 0, 1], [1.0, 1, 1, 1], [0.0, 0, 0, 3]])
    a = L.group_relative_advantages(r)
    assert torch.allclose(a[0], torch.tensor([1.0, -1, -1, 1]), atol=1e-5)
    assert torch.equal(a[1], torch.zeros(4))                       # no signal from a unanimous group
    assert torch.allclose(a.mean(1), torch.zeros(3), atol=1e-6)
    assert torch.allclose(a[2].std(unbiased=False), torch.tensor(1.0), atol=1e-5)


# ------------------------------------------------------------------------------------------ reward model
def test_reward_model_learns_preferences_and_has_the_designed_blind_spot():
    train, test = L.reversal_words(200, 50, seed=0)
    rm, losses = L.train_reward_model(L.preference_pairs(train, per_word=2), steps=200)
    assert losses[-1] < 0.1
    pairs = L.preference_pairs(test, per_word=2, seed=1)
    words = [p[0] for p in pairs]
    acc = (L.reward_scores(rm, words, [p[1] for p in pairs]) > L.reward_scores(rm, words, [p[2] for p in pairs]))
    assert acc.float().mean() > 0.95
    s = L.reward_scores(rm, ["cat"] * 3, [" tac.", " act.", " tactac."])
    assert torch.isclose(s[0], s[1])                                # blind to order
    assert s[2] > s[0]                                              # "more of the word's letters" wins
    assert L.bag_features(["cat"], [" tax."]).sum().item() == 3 and L.bag_features(["cat"], [" tax."])[0, 26 + 23] == 1


def test_corruptions_are_wrong_and_never_longer():
    g = torch.Generator().manual_seed(0)
    for w in ["cat", "word", "value"]:
        for _ in range(20):
            c = L.corrupt(w, g)
            assert not L.is_correct(w, c) and len(c) <= len(L.make_response(w))


# ---------------------------------------------------------------------------------------- training loops
def test_dpo_raises_the_margin_on_its_pairs():
    model, ref = tiny_gpt(0), tiny_gpt(0)
    pairs = L.preference_pairs(["cat", "dog", "sun", "tree"], per_word=2)
    enc = L.encode_pairs(TOK, pairs)
    with torch.no_grad():
        c0, r0 = L.pair_logprobs(model, enc)
    hist = L.train_dpo(model, ref, TOK, pairs, beta=0.5, steps=15, batch_size=8, lr=3e-3)
    with torch.no_grad():
        c1, r1 = L.pair_logprobs(model, enc)
    assert (c1 - r1).mean() > (c0 - r0).mean() + 0.5
    assert hist["loss"][-1] < hist["loss"][0]


def test_rlhf_and_grpo_loops_log_what_the_lecture_plots():
    policy, ref = tiny_gpt(0), tiny_gpt(0)
    rm, _ = L.train_reward_model(L.preference_pairs(["cat", "dog"], per_word=4), steps=20)
    hist = L.train_rlhf(policy, ref, rm, TOK, ["cat", "dog"], kl_coef=1.0, steps=3, batch_size=4)
    assert set(hist) == {"score", "kl", "accuracy", "length"} and all(len(v) == 3 for v in hist.values())
    assert abs(hist["kl"][0]) < 1e-5                                 # policy = reference at step 1
    g = L.train_grpo(tiny_gpt(1), TOK, ["cat", "dog"], steps=2, groups=2, group_size=3)
    assert len(g["reward"]) == 2


def test_sft_reaches_threshold_and_stops():
    model = tiny_gpt(0)
    hist = L.train_sft(model, TOK, ["cat"], ["cat"], steps=200, lr=1e-2, eval_every=10, stop_at=1.0)
    assert hist["accuracy"][-1] == 1.0 and hist["eval_step"][-1] < 200   # memorising one word is easy


# --------------------------------------------------------------------------------- constitution, KD, widget
def test_critique_and_revise():
    assert L.critique("cat", " tac.") == []
    assert L.critique("cat", " act.") == [3]
    assert L.critique("cat", " tacc") == [1, 2, 3]
    assert L.revise("cat", " tca.") == " tac." and L.revise("cat", " tac.") == " tac."


def test_distill_loss():
    z = torch.randn(4, 9)
    assert L.distill_loss(z, z).abs() < 1e-6
    t = torch.randn(4, 9)
    p = F.softmax(t / 2, -1)
    manual = (p * (p.log() - F.log_softmax(z / 2, -1))).sum(-1).mean() * 4
    assert torch.allclose(L.distill_loss(z, t, 2.0), manual, atol=1e-5)


def test_kl_tradeoff_limits_and_widget():
    ref_logp = np.log(np.array([0.7, 0.2, 0.1]))
    scores = np.array([0.0, 1.0, 3.0])
    pi, reward, kl = L.kl_tradeoff(ref_logp, scores, beta=1e4)
    assert np.allclose(pi, [0.7, 0.2, 0.1], atol=1e-3) and kl < 1e-4
    pi, reward, kl = L.kl_tradeoff(ref_logp, scores, beta=1e-3)
    assert pi[2] > 0.999 and abs(kl - np.log(10)) < 1e-3 and abs(reward - 3) < 1e-3
    fig = render(L.plot_kl_tradeoff, log10_beta=0.0, answers=[" a.", " b.", " c."], ref_logp=ref_logp.tolist(),
                 scores=scores.tolist(), correct=[True, False, False])
    assert isinstance(fig, plt.Figure) and fig.axes[0].get_title() and fig.axes[1].get_xlabel()


def test_smooth():
    assert np.allclose(L.smooth([1, 2, 3, 4], window=2), [1, 1.5, 2.5, 3.5])


def test_sampled_responses_equal_uncached_generate_also_through_lora():
    import utils

    base, tok = utils.pretrained("char_english")
    prompts = L.encode_prompts(tok, ["cat", "word", "value", "list"])
    greedy, _ = L.sample_responses(base, prompts, tok, greedy=True, max_new=8)
    assert torch.equal(greedy, base.generate(prompts, 8, top_k=1)[:, prompts.size(1):])
    sampled, _ = L.sample_responses(base, prompts, tok, generator=torch.Generator().manual_seed(5), max_new=8)
    reference = base.generate(prompts, 8, generator=torch.Generator().manual_seed(5))[:, prompts.size(1):]
    assert torch.equal(sampled, reference)
    lora = L.add_lora(copy.deepcopy(base), r=2, targets=("c_attn", "c_fc", "c_proj"))
    for m in lora.modules():
        if isinstance(m, L.LoRALinear):
            nn.init.normal_(m.B, std=0.05)
    cached, _ = L.sample_responses(lora, prompts, tok, greedy=True, max_new=6)
    assert torch.equal(cached, lora.generate(prompts, 6, top_k=1)[:, 10:])
