"""Lecture 18: the CLIP loss against a hand-written loop, zero-shot probabilities, the tokenizer and data, the
projector and the splice against GPT's own forward, a tiny CLIP and VLM training run, and the widget."""
from __future__ import annotations

import math

import matplotlib.pyplot as plt
import pytest
import torch
import torch.nn.functional as F

from solutions import l18_clip_vlm as L
from utils.gpt import GPT, GPTConfig
from utils.widgets import render


def test_clip_loss_matches_a_loop_over_rows_and_columns():
    g = torch.Generator().manual_seed(0)
    a, b = torch.randn(5, 8, generator=g), torch.randn(5, 8, generator=g)
    s = torch.tensor(1.5)
    an, bn = F.normalize(a, dim=1), F.normalize(b, dim=1)
    S = math.exp(1.5) * an @ bn.T
    rows = sum(-torch.log_softmax(S[i], 0)[i] for i in range(5)) / 5
    cols = sum(-torch.log_softmax(S[:, j], 0)[j] for j in range(5)) / 5
    assert torch.allclose(L.clip_loss(a, b, s), (rows + cols) / 2, atol=1e-6)
    # identical, well-separated pairs at a low temperature: loss near 0; random pairs at τ=1: about log N
    e = torch.eye(6)
    assert L.clip_loss(e, e, torch.tensor(math.log(100))).item() < 1e-3
    big = torch.randn(256, 32, generator=g)
    assert abs(L.clip_loss(big, torch.randn(256, 32, generator=g), torch.tensor(0.0)).item() - math.log(256)) < 0.05


def test_clip_loss_is_symmetric_and_scale_invariant():
    g = torch.Generator().manual_seed(1)
    a, b = torch.randn(4, 6, generator=g), torch.randn(4, 6, generator=g)
    s = torch.tensor(2.0)
    assert torch.allclose(L.clip_loss(a, b, s), L.clip_loss(b, a, s), atol=1e-6)
    assert torch.allclose(L.clip_loss(3 * a, b, s), L.clip_loss(a, b, s), atol=1e-6)


def test_zero_shot_probs():
    img = torch.tensor([[1.0, 0.0], [0.0, 2.0]])
    prompts = torch.tensor([[3.0, 0.0], [0.0, 1.0], [1.0, 1.0]])
    p = L.zero_shot_probs(img, prompts, logit_scale=0.0)
    c = torch.tensor([[1.0, 0.0, 1 / math.sqrt(2)], [0.0, 1.0, 1 / math.sqrt(2)]])
    assert torch.allclose(p, c.softmax(-1), atol=1e-6)
    assert torch.allclose(p.sum(-1), torch.ones(2))


def test_tokenizer_round_trip_and_unknown_words():
    ids = L.encode("How many circles ?")
    assert L.decode(ids) == "how many circles ?"
    enc = L.batch_encode(["a red circle", "a photo of a blue square"])
    assert enc.shape == (2, 8) and enc[0, 3] == L.EOT and enc[1, 6] == L.EOT and (enc[0, 4:] == L.PAD).all()
    with pytest.raises(KeyError, match="unknown word.*'dog'"):
        L.encode("a dog")


def test_held_out_split_and_offpalette_data():
    assert len(L.SEEN) + len(L.HELD_OUT) == 18 and not set(L.SEEN) & set(L.HELD_OUT)
    for c, s in L.HELD_OUT:  # every held-out colour and shape is seen in another pair
        assert any(c2 == c for c2, _ in L.SEEN) and any(s2 == s for _, s2 in L.SEEN)
    imgs, shapes = L.offpalette_shapes(20, seed=0)
    assert imgs.shape == (20, 3, 32, 32) and shapes.min() >= 0 and shapes.max() <= 2
    images, caps, extra = L.clip_data(n=30, n_extra=10, seed=0)
    assert len(images) == len(caps) == 40 and extra.sum() == 10
    assert all(not any(col in cap for col in L.COLOR_NAMES) for cap, e in zip(caps, extra) if e)
    held = {f"{c} {s}" for c, s in L.HELD_OUT}
    assert not any(h in cap for cap in caps for h in held)


def test_vqa_data_answers_are_consistent():
    images, q, a, texts = L.vqa_data(200, seed=3)
    assert images.shape == (200, 3, 32, 32) and q.shape == (200, L.QUESTION_LEN)
    shape_words = {L.VOCAB.index(w) for w in [*L.SHAPE_NAMES, *L.PLURALS]}
    assert all(i in shape_words for i in q[:, -1].tolist()), "the answer is read at the shape word, always last"
    words = [L.VOCAB[i] for i in a.tolist()]
    for t, w, ids in zip(texts, words, q.tolist()):
        assert (w in L.COLOR_NAMES) if t.startswith("what") else w in {"0", "1", "2"}
        assert L.decode(ids) == t, "left-padded with <pad>, which decode drops"


def test_projector_shapes():
    p = L.Projector(48, 32)
    assert p(torch.randn(2, 16, 48)).shape == (2, 16, 32)


def test_splice_with_no_visual_tokens_equals_gpt_forward():
    torch.manual_seed(0)
    gpt = GPT(GPTConfig(vocab_size=13, block_size=12, n_layer=2, n_head=2, n_embd=16))
    idx = torch.randint(13, (3, 7))
    logits, _ = gpt(idx)
    assert torch.allclose(L.splice_forward(gpt, torch.zeros(3, 0, 16), idx), logits, atol=1e-5)


def test_splice_equals_gpt_when_visual_tokens_are_word_embeddings():
    torch.manual_seed(0)
    gpt = GPT(GPTConfig(vocab_size=13, block_size=12, n_layer=2, n_head=2, n_embd=16))
    idx = torch.randint(13, (2, 9))
    visual = gpt.transformer.wte(idx[:, :4])          # "visual" tokens that happen to be words
    logits, _ = gpt(idx)
    assert torch.allclose(L.splice_forward(gpt, visual, idx[:, 4:]), logits[:, 4:], atol=1e-5)


def test_text_cannot_change_visual_positions_but_image_changes_text():
    torch.manual_seed(0)
    gpt = GPT(GPTConfig(vocab_size=13, block_size=12, n_layer=1, n_head=2, n_embd=16))
    idx = torch.randint(13, (1, 4))
    v1, v2 = torch.randn(1, 3, 16), torch.randn(1, 3, 16)
    assert not torch.allclose(L.splice_forward(gpt, v1, idx), L.splice_forward(gpt, v2, idx))


@pytest.fixture(scope="module")
def tiny_models():
    torch.manual_seed(0)
    images, caps, _ = L.clip_data(n=300, n_extra=100, seed=0)
    clip = L.CLIP()
    losses = L.train_clip(clip, images, caps, steps=40, batch_size=32)
    vlm = L.VLM(clip.image)
    return clip, vlm, losses


def test_clip_training_lowers_the_loss(tiny_models):
    _, _, losses = tiny_models
    assert all(math.isfinite(x) for x in losses)
    assert sum(losses[-10:]) / 10 < sum(losses[:5]) / 5 - 0.3


def test_vlm_frozen_vision_and_short_training(tiny_models):
    clip, vlm, _ = tiny_models
    assert not any(p.requires_grad for p in vlm.vision.parameters())
    images, q, a, _ = L.vqa_data(64, seed=0)
    feats = vlm.see(images)
    assert feats.shape == (64, 16, vlm.vision.dim)
    before = [p.clone() for p in vlm.lm.parameters()]
    losses = L.train_vlm(vlm, feats, q, a, steps=5, params=list(vlm.projector.parameters()), batch_size=16)
    assert all(torch.equal(b, p) for b, p in zip(before, vlm.lm.parameters())), "stage 1 must not move the LM"
    assert len(losses) == 5 and 0 <= L.vqa_accuracy(vlm, feats, q, a) <= 1
    assert torch.equal(vlm(feats[:2], q[:2], blind=True), vlm(feats[5:7], q[:2], blind=True))  # blind: image ignored


def test_zero_shot_accuracy_and_retrieval(tiny_models):
    clip, _, _ = tiny_models
    acc, conf = L.zero_shot_accuracy(clip, L.HELD_OUT, n_per_combo=5)
    assert 0 <= acc <= 1 and conf.shape == (18, 18) and conf.sum() == 20
    e = torch.randn(6, 8)
    assert L.retrieval_recall(e, e) == (1.0, 1.0)


def test_answer_ignores_a_trailing_question_mark(tiny_models):
    _, vlm, _ = tiny_models
    image = L.vqa_data(1, seed=2)[0][0]
    assert L.answer(vlm, image, "how many circles ?") == L.answer(vlm, image, "how many circles")


@pytest.mark.parametrize("text", ["how many circles ?", "what colour is the square", "a photo of a red triangle",
                                  "a purple dog"])
def test_widget_update(tiny_models, text):
    clip, vlm, _ = tiny_models
    images = L.vqa_data(4, seed=1)[0]
    fig = render(L.explore, clip=clip, vlm=vlm, images=images, image=2, text=text)
    assert isinstance(fig, plt.Figure)
    title = fig.axes[1].get_title()
    assert ("unknown" in title) if "dog" in text else bool(title)
