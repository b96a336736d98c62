"""Lecture 18 — CLIP and a LLaVA-style vision-language model on ``shapes``.

Reference solutions and the exercise registry (COURSE_DESIGN §2):

* ``clip_loss``: the symmetric contrastive (InfoNCE) loss of CLIP — cross-entropy over the rows *and* the columns
  of the scaled cosine-similarity matrix, the matching pairs on the diagonal;
* ``zero_shot_probs``: zero-shot classification — cosine similarity of every image with every class prompt,
  softmax over the classes;
* ``Projector``: the LLaVA projector, vision features (B, P, Dv) → visual tokens (B, P, C) in the LM's width;
* ``splice_forward``: prepend the visual tokens to the text embeddings and run a ``utils.gpt.GPT``'s positions,
  blocks and head by hand.

Beyond the exercises: the word tokenizer (``VOCAB``, ``encode``, ``decode``), the data (``clip_data`` with the
off-palette "diversity" images, ``offpalette_shapes``, ``vqa_data``), the models (``ImageEncoder``,
``TextEncoder``, ``CLIP``, ``VLM``), their training loops and evaluations, and the widget's update function
``explore``.
"""
from __future__ import annotations

import math
import re

import matplotlib.pyplot as plt
import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F

import utils
from utils.data import COLOR_NAMES, SHAPE_NAMES
from utils.exercises import Case, Exercise, run_module
from utils.gpt import GPT, Block, GPTConfig

__all__ = [
    "VOCAB", "PAD", "EOT", "encode", "decode", "batch_encode", "HELD_OUT", "SEEN", "ALL_COMBOS", "prompt",
    "offpalette_shapes", "clip_data", "ImageEncoder", "TextEncoder", "CLIP", "clip_loss", "zero_shot_probs",
    "train_clip", "class_prompt_embeddings", "zero_shot_accuracy", "retrieval_recall", "Projector",
    "splice_forward", "VLM", "QUESTION_LEN", "vqa_data", "train_vlm", "vqa_accuracy", "answer", "explore", "EXERCISES",
]

# ------------------------------------------------------------------------------------------------ the words
PLURALS = tuple(s + "s" for s in SHAPE_NAMES)
VOCAB = (["<pad>", "<eot>", "a", "photo", "of", "and", ",", "how", "many", "what", "colour", "is", "the", "?",
          "0", "1", "2", "3"] + list(COLOR_NAMES) + list(SHAPE_NAMES) + list(PLURALS))
PAD, EOT = 0, 1
_INDEX = {w: i for i, w in enumerate(VOCAB)}


def encode(text: str) -> list[int]:
    """Words and punctuation → ids. Unknown words raise a KeyError that lists the vocabulary."""
    words = re.findall(r"[a-z0-9]+|[,?]", text.lower())
    unknown = [w for w in words if w not in _INDEX]
    if unknown:
        raise KeyError(f"unknown word(s) {unknown}; the vocabulary is: {' '.join(VOCAB[2:])}")
    return [_INDEX[w] for w in words]


def decode(ids: list[int]) -> str:
    return " ".join(VOCAB[i] for i in ids if i != PAD)


def batch_encode(texts: list[str], length: int = 8) -> torch.Tensor:
    """Encode, append <eot>, pad with <pad> to ``length``: (N, length) int64. CLIP reads the <eot> position."""
    out = torch.full((len(texts), length), PAD, dtype=torch.int64)
    for i, t in enumerate(texts):
        ids = encode(t)[: length - 1] + [EOT]
        out[i, : len(ids)] = torch.tensor(ids)
    return out


# ------------------------------------------------------------------------------------------------- the data
ALL_COMBOS = [(c, s) for c in COLOR_NAMES for s in SHAPE_NAMES]
# one held-out shape per colour for 4 colours; every held-out colour and shape is still seen in other pairs
HELD_OUT = [("red", "triangle"), ("green", "circle"), ("blue", "square"), ("purple", "triangle")]
SEEN = [p for p in ALL_COMBOS if p not in HELD_OUT]


def prompt(colour: str | None, shape: str, template: str = "a photo of a {}") -> str:
    return template.format(f"{colour} {shape}" if colour else shape)


def offpalette_shapes(n: int, seed: int = 0, min_dist: float = 0.45) -> tuple[torch.Tensor, torch.Tensor]:
    """Single shapes painted in random colours far from the 6 named ones. Returns images (n, 3, 32, 32), shapes (n,).

    Built from ``utils.data.shapes``: its masks say where the object is, we repaint those pixels.
    """
    sc = utils.data.shapes(n, seed=seed + 7_000_003, noise=0.0)
    rng = np.random.default_rng(seed)
    palette = utils.data._RGB
    cols = []
    while len(cols) < n:  # rejection sampling: an off-palette colour is far from every named colour
        c = rng.uniform(0, 1, 3).astype(np.float32)
        if np.linalg.norm(palette - c, axis=1).min() > min_dist:
            cols.append(c)
    col = torch.from_numpy(np.stack(cols))[:, :, None, None]                         # (n, 3, 1, 1)
    mask = sc.masks[:, 0, None].float()                                              # (n, 1, S, S)
    noise = torch.from_numpy(rng.normal(0, 0.02, (n, 3, 32, 32)).astype(np.float32))
    return (mask * col + noise).clamp(0, 1), sc.labels[:, 0]


def clip_data(n: int = 2400, n_extra: int = 1200, seed: int = 0) -> tuple[torch.Tensor, list[str], torch.Tensor]:
    """Training pairs for CLIP: ``n`` single shapes of the SEEN (colour, shape) pairs captioned "a red circle",
    plus ``n_extra`` off-palette shapes captioned by their shape alone ("a circle"). Half of the captions get the
    prompt template "a photo of ...". Returns images (N, 3, 32, 32), captions, a flag (N,) True for the extras."""
    sc = utils.data.shapes(n, combos=SEEN, seed=seed)
    caps = [f"a {COLOR_NAMES[c]} {SHAPE_NAMES[s]}" for c, s in zip(sc.colors[:, 0].tolist(), sc.labels[:, 0].tolist())]
    images = [sc.images]
    if n_extra:
        xi, xs = offpalette_shapes(n_extra, seed=seed)
        images.append(xi)
        caps += [f"a {SHAPE_NAMES[s]}" for s in xs.tolist()]
    rng = np.random.default_rng(seed + 1)
    caps = [("a photo of " + c) if rng.random() < 0.5 else c for c in caps]
    extra = torch.cat([torch.zeros(n, dtype=torch.bool), torch.ones(n_extra, dtype=torch.bool)])
    return torch.cat(images), caps, extra


# ----------------------------------------------------------------------------------------------- the models
class ImageEncoder(nn.Module):
    """A small CNN. ``grid(x (B, 3, 32, 32)) -> (B, 16, D)`` patch features (a 4×4 grid, the tokens the VLM
    uses); ``forward(x) -> (B, E)`` the pooled, projected image embedding CLIP compares with text."""

    def __init__(self, width: int = 48, embed_dim: int = 64):
        super().__init__()
        self.net = nn.Sequential(
            nn.Conv2d(3, 32, 4, stride=4), nn.GELU(),                                 # 4×4 patches -> 8×8 grid
            nn.Conv2d(32, width, 3, padding=1), nn.GELU(), nn.MaxPool2d(2),           # 4×4
            nn.Conv2d(width, width, 3, padding=1), nn.GELU(),                         # 4×4, wider view
        )
        self.proj = nn.Linear(width, embed_dim)
        self.dim = width

    def grid(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x).flatten(2).transpose(1, 2)  # (B, C, 4, 4) -> (B, 16, C)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.proj(self.grid(x).amax(1))         # max-pool over the grid: where the object is does not matter


class TextEncoder(nn.Module):
    """Token + position embeddings → causal transformer blocks (``utils.gpt.Block``) → LayerNorm → the feature at
    the <eot> token (it has seen the whole caption) → a linear projection. forward(ids (B, L)) -> (B, E)."""

    def __init__(self, n_embd: int = 64, n_layer: int = 2, n_head: int = 4, length: int = 8, embed_dim: int = 64):
        super().__init__()
        cfg = GPTConfig(vocab_size=len(VOCAB), block_size=length, n_layer=n_layer, n_head=n_head, n_embd=n_embd)
        self.wte = nn.Embedding(len(VOCAB), n_embd)
        self.wpe = nn.Embedding(length, n_embd)
        self.h = nn.ModuleList([Block(cfg) for _ in range(n_layer)])
        self.ln_f = nn.LayerNorm(n_embd)
        self.proj = nn.Linear(n_embd, embed_dim)

    def forward(self, ids: torch.Tensor) -> torch.Tensor:
        x = self.wte(ids) + self.wpe(torch.arange(ids.shape[1]))
        for block in self.h:
            x = block(x)
        eot = (ids == EOT).int().argmax(1)              # (B,) position of <eot>; causal, so pads after it are unseen
        return self.proj(self.ln_f(x[torch.arange(len(ids)), eot]))


class CLIP(nn.Module):
    """Two towers and a learned temperature. ``logit_scale`` = log(1/τ), initialised to log(1/0.07) as in CLIP."""

    def __init__(self, embed_dim: int = 64):
        super().__init__()
        self.image = ImageEncoder(embed_dim=embed_dim)
        self.text = TextEncoder(embed_dim=embed_dim)
        self.logit_scale = nn.Parameter(torch.tensor(math.log(1 / 0.07)))

    def encode_image(self, x: torch.Tensor) -> torch.Tensor:
        return F.normalize(self.image(x), dim=-1)

    def encode_text(self, ids: torch.Tensor) -> torch.Tensor:
        return F.normalize(self.text(ids), dim=-1)


# -------------------------------------------------------------------------------- exercise 1: the CLIP loss
def clip_loss(image_emb: torch.Tensor, text_emb: torch.Tensor, logit_scale: torch.Tensor) -> torch.Tensor:
    """Symmetric contrastive loss. image_emb, text_emb: (N, E), row i of each is a matching pair (any norm);
    logit_scale: scalar, the logits are exp(logit_scale) * cosine similarity. Returns a scalar:
    (CE over each image's row of N texts + CE over each text's column of N images) / 2, targets on the diagonal."""
    img, txt = F.normalize(image_emb, dim=-1), F.normalize(text_emb, dim=-1)  # cosine: only directions count
    logits = logit_scale.exp() * img @ txt.T                                   # (N, N): image i vs text j
    target = torch.arange(len(img), device=img.device)                         # the match of i is i
    return (F.cross_entropy(logits, target) + F.cross_entropy(logits.T, target)) / 2


def _clip_loss_one_way(image_emb, text_emb, logit_scale):
    logits = logit_scale.exp() * F.normalize(image_emb, dim=-1) @ F.normalize(text_emb, dim=-1).T
    return F.cross_entropy(logits, torch.arange(len(logits)))


def _clip_loss_no_normalize(image_emb, text_emb, logit_scale):
    logits = logit_scale.exp() * image_emb @ text_emb.T
    t = torch.arange(len(logits))
    return (F.cross_entropy(logits, t) + F.cross_entropy(logits.T, t)) / 2


def _clip_loss_scale_not_exp(image_emb, text_emb, logit_scale):
    logits = logit_scale * F.normalize(image_emb, dim=-1) @ F.normalize(text_emb, dim=-1).T
    t = torch.arange(len(logits))
    return (F.cross_entropy(logits, t) + F.cross_entropy(logits.T, t)) / 2


def _clip_loss_sum(image_emb, text_emb, logit_scale):
    logits = logit_scale.exp() * F.normalize(image_emb, dim=-1) @ F.normalize(text_emb, dim=-1).T
    t = torch.arange(len(logits))
    return F.cross_entropy(logits, t) + F.cross_entropy(logits.T, t)


def _clip_loss_cases() -> list[Case]:
    g = torch.Generator().manual_seed(0)

    def r(*s):
        return torch.randn(*s, generator=g)

    return [
        Case((r(4, 8), r(4, 8), torch.tensor(0.0)), label="N=4, E=8, scale exp(0)=1"),
        Case((3 * r(6, 16), r(6, 16), torch.tensor(math.log(1 / 0.07))), label="N=6, unnormalised, τ=0.07"),
        Case((r(1, 5), r(1, 5), torch.tensor(2.0)), label="one pair: the loss is 0"),
        Case((r(5, 4) + 2, 0.5 * r(5, 4), torch.tensor(1.0)), label="N=5, shifted embeddings"),
    ]


# -------------------------------------------------------------------------- exercise 2: zero-shot classifier
def zero_shot_probs(image_emb: torch.Tensor, prompt_emb: torch.Tensor, logit_scale: float | torch.Tensor = 1.0
                    ) -> torch.Tensor:
    """image_emb (N, E), prompt_emb (K, E) — one text embedding per class, any norm. Returns (N, K) probabilities:
    softmax over the K classes of exp(logit_scale) * cosine(image, prompt)."""
    logits = math.exp(float(logit_scale)) * F.normalize(image_emb, dim=-1) @ F.normalize(prompt_emb, dim=-1).T
    return logits.softmax(dim=-1)


def _zs_softmax_over_images(image_emb, prompt_emb, logit_scale=1.0):
    logits = math.exp(float(logit_scale)) * F.normalize(image_emb, dim=-1) @ F.normalize(prompt_emb, dim=-1).T
    return logits.softmax(dim=0)


def _zs_no_normalize(image_emb, prompt_emb, logit_scale=1.0):
    return (math.exp(float(logit_scale)) * image_emb @ prompt_emb.T).softmax(dim=-1)


def _zs_no_scale(image_emb, prompt_emb, logit_scale=1.0):
    return (F.normalize(image_emb, dim=-1) @ F.normalize(prompt_emb, dim=-1).T).softmax(dim=-1)


def _zero_shot_cases() -> list[Case]:
    g = torch.Generator().manual_seed(1)

    def r(*s):
        return torch.randn(*s, generator=g)

    return [
        Case((r(3, 8), r(5, 8)), {"logit_scale": 2.0}, label="3 images, 5 classes"),
        Case((4 * r(6, 4), 0.3 * r(6, 4) + 1), {"logit_scale": math.log(1 / 0.07)}, label="6 × 6, mixed norms"),
        Case((r(2, 16), r(18, 16)), {"logit_scale": 3.0}, label="18 classes"),
    ]


# ------------------------------------------------------------------------------------------- CLIP training
def train_clip(model: CLIP, images: torch.Tensor, captions: list[str], steps: int = 500, batch_size: int = 128,
               lr: float = 2e-3, seed: int = 0, loss_fn=clip_loss) -> list[float]:
    """AdamW on random batches of (image, caption) pairs for exactly ``steps`` steps, cosine learning rate,
    the temperature clamped at τ ≥ 0.01 (as CLIP). Returns the losses."""
    ids = batch_encode(captions)
    gen = torch.Generator().manual_seed(seed)
    opt = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=0.01)
    losses = []
    model.train()
    for step in range(steps):
        b = torch.randint(len(images), (batch_size,), generator=gen)
        for group in opt.param_groups:
            group["lr"] = lr * min(1.0, (step + 1) / 50) * 0.5 * (1 + math.cos(math.pi * step / steps))
        loss = loss_fn(model.image(images[b]), model.text(ids[b]), model.logit_scale)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        with torch.no_grad():
            model.logit_scale.clamp_(max=math.log(100))
        losses.append(loss.item())
    model.eval()
    return losses


@torch.no_grad()
def class_prompt_embeddings(model: CLIP, combos: list[tuple[str, str]] = ALL_COMBOS,
                            template: str = "a photo of a {}") -> torch.Tensor:
    """(K, E) unit text embeddings of one prompt per (colour, shape) class."""
    return model.encode_text(batch_encode([prompt(c, s, template) for c, s in combos]))


@torch.no_grad()
def zero_shot_accuracy(model: CLIP, combos: list[tuple[str, str]], n_per_combo: int = 50, seed: int = 123,
                       probs_fn=zero_shot_probs) -> tuple[float, torch.Tensor]:
    """Fresh test images of the given pairs, classified among all 18 prompts. Returns the accuracy and the
    (18, 18) confusion counts (true class, predicted class) in ALL_COMBOS order."""
    sc = utils.data.shapes(n_per_combo * len(combos), combos=combos, seed=seed)
    true = torch.tensor([ALL_COMBOS.index((COLOR_NAMES[c], SHAPE_NAMES[s]))
                         for c, s in zip(sc.colors[:, 0].tolist(), sc.labels[:, 0].tolist())])
    p = probs_fn(model.encode_image(sc.images), class_prompt_embeddings(model), model.logit_scale.item())
    pred = p.argmax(-1)
    conf = torch.zeros(len(ALL_COMBOS), len(ALL_COMBOS))
    conf.index_put_((true, pred), torch.ones(len(true)), accumulate=True)
    return (pred == true).float().mean().item(), conf


@torch.no_grad()
def retrieval_recall(image_emb: torch.Tensor, text_emb: torch.Tensor, k: int = 1) -> tuple[float, float]:
    """Image→text and text→image recall@k when row i of each is a pair, counting any pair with the *same
    caption* as a hit (our captions repeat). text_emb must come with duplicates grouped by equal rows."""
    sim = F.normalize(image_emb, dim=-1) @ F.normalize(text_emb, dim=-1).T        # (N, N)
    same = (F.normalize(text_emb, dim=-1) @ F.normalize(text_emb, dim=-1).T) > 1 - 1e-5  # same caption
    i2t = same.gather(1, sim.topk(k, dim=1).indices).any(1).float().mean().item()
    t2i = same.gather(1, sim.T.topk(k, dim=1).indices).any(1).float().mean().item()
    return i2t, t2i


# ---------------------------------------------------------------------------------- exercise 3: projector
class Projector(nn.Module):
    """LLaVA-1.5's projector: a 2-layer MLP applied to every patch feature. forward(feats (B, P, Dv)) ->
    visual tokens (B, P, C): fc1 = Linear(Dv, C), GELU, fc2 = Linear(C, C)."""

    def __init__(self, vision_dim: int, n_embd: int):
        super().__init__()
        self.fc1 = nn.Linear(vision_dim, n_embd)
        self.fc2 = nn.Linear(n_embd, n_embd)

    def forward(self, feats: torch.Tensor) -> torch.Tensor:
        return self.fc2(F.gelu(self.fc1(feats)))


class _ProjectorLinearOnly(Projector):
    def forward(self, feats):
        return self.fc2(self.fc1(feats))  # forgot the non-linearity


class _ProjectorPooled(Projector):
    def forward(self, feats):
        return self.fc2(F.gelu(self.fc1(feats.mean(1, keepdim=True))))  # one token: the patches averaged away


class _ProjectorReLU(Projector):
    def forward(self, feats):
        return self.fc2(F.relu(self.fc1(feats)))


def _projector_cases() -> list[Case]:
    g = torch.Generator().manual_seed(2)
    return [
        Case((torch.randn(2, 16, 48, generator=g),), {"vision_dim": 48, "n_embd": 32}, label="B=2, P=16, Dv=48 → C=32"),
        Case((torch.randn(1, 4, 8, generator=g),), {"vision_dim": 8, "n_embd": 8}, label="B=1, P=4, Dv=C=8"),
    ]


# ------------------------------------------------------------------------------ exercise 4: token splicing
def splice_forward(gpt: GPT, visual: torch.Tensor, idx: torch.Tensor) -> torch.Tensor:
    """Run a nanoGPT-layout ``GPT`` on [visual tokens ; text tokens].

    visual: (B, P, C) already in the LM's width C (the projector's output); idx: (B, T) text token ids,
    P + T ≤ block_size. The visual tokens take positions 0..P-1, the text P..P+T-1; every token gets its
    position embedding. Returns logits (B, T, V) at the *text* positions only.
    """
    P, T = visual.shape[1], idx.shape[1]
    tr = gpt.transformer
    x = torch.cat([visual, tr.wte(idx)], dim=1)               # (B, P + T, C): the image is "read" first
    x = x + tr.wpe(torch.arange(P + T, device=idx.device))     # positions for all of them
    for block in tr.h:                                         # causal: text sees the image, not the other way
        x = block(x)
    return gpt.lm_head(tr.ln_f(x[:, P:]))                      # predictions only where there is text


def _splice_text_first(gpt, visual, idx):
    P, T = visual.shape[1], idx.shape[1]
    tr = gpt.transformer
    x = torch.cat([tr.wte(idx), visual], dim=1) + tr.wpe(torch.arange(P + T))
    for block in tr.h:
        x = block(x)
    return gpt.lm_head(tr.ln_f(x[:, :T]))


def _splice_text_positions_restart(gpt, visual, idx):
    P, T = visual.shape[1], idx.shape[1]
    tr = gpt.transformer
    x = torch.cat([visual + tr.wpe(torch.arange(P)), tr.wte(idx) + tr.wpe(torch.arange(T))], dim=1)
    for block in tr.h:
        x = block(x)
    return gpt.lm_head(tr.ln_f(x[:, P:]))


def _splice_no_visual_positions(gpt, visual, idx):
    P, T = visual.shape[1], idx.shape[1]
    tr = gpt.transformer
    x = torch.cat([visual, tr.wte(idx) + tr.wpe(torch.arange(P, P + T))], dim=1)
    for block in tr.h:
        x = block(x)
    return gpt.lm_head(tr.ln_f(x[:, P:]))


def _splice_all_logits(gpt, visual, idx):
    P, T = visual.shape[1], idx.shape[1]
    tr = gpt.transformer
    x = torch.cat([visual, tr.wte(idx)], dim=1) + tr.wpe(torch.arange(P + T))
    for block in tr.h:
        x = block(x)
    return gpt.lm_head(tr.ln_f(x))


def _splice_cases() -> list[Case]:
    def case(B, P, T, C, seed, label):
        torch.manual_seed(seed)
        gpt = GPT(GPTConfig(vocab_size=11, block_size=P + T + 2, n_layer=2, n_head=2, n_embd=C))
        with torch.no_grad():  # larger position embeddings so that position mistakes are visible
            gpt.transformer.wpe.weight.normal_(0, 0.5)
        g = torch.Generator().manual_seed(seed)
        return Case((gpt, torch.randn(B, P, C, generator=g), torch.randint(11, (B, T), generator=g)), label=label)

    return [case(2, 3, 4, 8, 0, "B=2, P=3 visual, T=4 text, C=8"), case(1, 5, 2, 16, 1, "P=5, T=2, C=16"),
            case(3, 1, 6, 8, 2, "one visual token")]


# ---------------------------------------------------------------------------------------------- the VLM
class VLM(nn.Module):
    """LLaVA in miniature: a frozen image encoder's patch grid (B, 16, Dv) → ``Projector`` → visual tokens
    prepended to a ``utils.gpt.GPT``'s text. forward(feats, idx, blind=False) -> logits (B, T, V); ``blind``
    zeroes the visual tokens (the same LM without its eyes)."""

    def __init__(self, vision: ImageEncoder, n_embd: int = 64, n_layer: int = 2, n_head: int = 4,
                 projector_cls: type[nn.Module] = Projector, splice=splice_forward):
        super().__init__()
        self.vision = vision.requires_grad_(False)              # frozen: it only looks
        self.projector = projector_cls(vision.dim, n_embd)
        self.lm = GPT(GPTConfig(vocab_size=len(VOCAB), block_size=32, n_layer=n_layer, n_head=n_head, n_embd=n_embd))
        self.splice = splice

    @torch.no_grad()
    def see(self, images: torch.Tensor) -> torch.Tensor:
        """images (B, 3, 32, 32) -> frozen patch features (B, 16, Dv). Frozen, so computed once per image.
        Layer-normalised per patch (as the output of CLIP's ViT): the raw CNN features are ~0.1 in size."""
        feats = self.vision.grid(images)
        return F.layer_norm(feats, feats.shape[-1:])

    def forward(self, feats: torch.Tensor, idx: torch.Tensor, blind: bool = False) -> torch.Tensor:
        """feats (B, 16, Dv) from ``see``, idx (B, T) -> logits (B, T, V) at the text positions."""
        vis = self.projector(feats)                             # (B, 16, C): the visual tokens
        if blind:
            vis = torch.zeros_like(vis)
        return self.splice(self.lm, vis, idx)


MAX_OBJECTS = 2
QUESTION_LEN = 5  # "what colour is the square": the longest question


def vqa_data(n: int, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, list[str]]:
    """Scenes with 1–``MAX_OBJECTS`` shapes and one question each: "how many circles" (0, 1, 2) or, for a shape
    present exactly once, "what colour is the square". Returns images (n, 3, 32, 32), question ids
    (n, QUESTION_LEN) left-padded, answers (n,) as token ids, and the question texts.

    No "?": the answer is predicted at the question's last word, the shape. A 2-layer LM reading the answer at a
    "?" must first copy the shape word to the "?" and then look it up in the image (two hops); in our trials it
    never learned to count that way (counting stayed at its text prior, ≈ 0.61). Ending on the shape makes it
    one hop: that token's query directly asks "where are the circles?"."""
    sc = utils.data.shapes(n, min_objects=1, max_objects=MAX_OBJECTS, min_radius=4.0, max_radius=6.0, seed=seed)
    rng = np.random.default_rng(seed + 11)
    qs, ans = [], []
    for i in range(n):
        labels = sc.labels[i][sc.labels[i] >= 0].tolist()
        colours = sc.colors[i][sc.labels[i] >= 0].tolist()
        singles = [s for s in set(labels) if labels.count(s) == 1]
        if singles and rng.random() < 0.5:
            s = int(rng.choice(sorted(singles)))
            qs.append(f"what colour is the {SHAPE_NAMES[s]}")
            ans.append(COLOR_NAMES[colours[labels.index(s)]])
        else:
            s = int(rng.integers(3))
            qs.append(f"how many {PLURALS[s]}")
            ans.append(str(labels.count(s)))
    ids = torch.full((n, QUESTION_LEN), PAD, dtype=torch.int64)
    for i, q in enumerate(qs):  # right-aligned: the shape word is always last, where the answer is read
        e = encode(q)
        ids[i, -len(e):] = torch.tensor(e)
    return sc.images, ids, torch.tensor([_INDEX[a] for a in ans]), qs


def train_vlm(vlm: VLM, feats: torch.Tensor, ids: torch.Tensor, answers: torch.Tensor, steps: int,
              params: list[nn.Parameter], blind: bool = False, batch_size: int = 64, lr: float = 2e-3,
              seed: int = 0) -> list[float]:
    """Train only ``params`` (the stage decides which) to predict the answer token after the question's last
    word, for exactly ``steps`` AdamW steps. feats (N, 16, Dv) from ``vlm.see``, ids (N, T) right-aligned
    questions, answers (N,). (At lr ≥ 3e-3 runs collapsed to the text prior or stalled lower in our trials.)"""
    images = feats
    gen = torch.Generator().manual_seed(seed)
    opt = torch.optim.AdamW(params, lr=lr, weight_decay=0.0)
    losses = []
    vlm.train()
    for step in range(steps):
        b = torch.randint(len(images), (batch_size,), generator=gen)
        for group in opt.param_groups:
            group["lr"] = lr * min(1.0, (step + 1) / 30) * 0.5 * (1 + math.cos(math.pi * step / steps))
        logits = vlm(images[b], ids[b], blind=blind)[:, -1]     # the prediction made at the last word
        loss = F.cross_entropy(logits, answers[b])
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        losses.append(loss.item())
    vlm.eval()
    return losses


@torch.no_grad()
def vqa_accuracy(vlm: VLM, feats: torch.Tensor, ids: torch.Tensor, answers: torch.Tensor,
                 blind: bool = False) -> float:
    """Fraction of questions whose most likely next word is the answer. feats from ``vlm.see``."""
    return (vlm(feats, ids, blind=blind)[:, -1].argmax(-1) == answers).float().mean().item()


@torch.no_grad()
def answer(vlm: VLM, image: torch.Tensor, question: str, k: int = 5) -> list[tuple[str, float]]:
    """The k most likely next words after ``question`` for one image (3, 32, 32). A trailing "?" is dropped:
    the VLM was trained to answer at the question's last word (see ``vqa_data``)."""
    ids = torch.tensor([encode(question.strip().removesuffix("?"))])
    p = vlm(vlm.see(image[None]), ids)[0, -1].softmax(-1)
    top = p.topk(k)
    return [(VOCAB[i], v) for i, v in zip(top.indices.tolist(), top.values.tolist())]


# ------------------------------------------------------------------------------------------------ the widget
def explore(clip: CLIP, vlm: VLM, images: torch.Tensor, image: int, text: str) -> plt.Figure:
    """Left: image ``image``. Right: a question ("how many …" / "what colour …", a "?" is optional) → the VLM's
    top answers; otherwise the caption's CLIP similarity with this image next to the 18 class prompts'.
    Unknown words are reported in the title."""
    fig, (a0, a1) = plt.subplots(1, 2, figsize=(9, 3.6), gridspec_kw={"width_ratios": [1, 2]})
    a0.imshow(images[image].permute(1, 2, 0).numpy())
    a0.set(title=f"image {image}", xlabel="x (pixels)", ylabel="y (pixels)")
    text = text.strip()
    try:
        encode(text)
    except KeyError as e:
        a1.text(0.02, 0.5, str(e.args[0]), wrap=True, fontsize=8, va="center")
        a1.set(title="unknown word", xlabel="", ylabel="", xticks=[], yticks=[])
        fig.tight_layout()
        return fig
    if text.endswith("?") or text.lower().startswith(("how many", "what colour")):
        top = answer(vlm, images[image], text)
        a1.barh([w for w, _ in top][::-1], [p for _, p in top][::-1], color="tab:orange")
        a1.set(title=f"VLM: {text}", xlabel="probability of the next word", ylabel="answer", xlim=(0, 1))
    else:
        with torch.no_grad():
            img = clip.encode_image(images[image: image + 1])
            texts = [text] + [prompt(c, s) for c, s in ALL_COMBOS]
            sims = (img @ clip.encode_text(batch_encode(texts)).T)[0]
        order = sims[1:].argsort(descending=True)[:7] + 1
        labels = [f"» {text}"] + [texts[i] for i in order.tolist()]
        vals = [sims[0].item()] + sims[order].tolist()
        a1.barh(labels[::-1], vals[::-1], color=["tab:gray"] * 7 + ["tab:blue"])
        a1.set(title="CLIP cosine similarity (yours in blue, best class prompts in grey)",
               xlabel="cosine similarity", ylabel="caption", xlim=(-1, 1))
        a1.tick_params(axis="y", labelsize=8)
    fig.tight_layout()
    return fig


# ------------------------------------------------------------------------------------------------ registry
EXERCISES = [
    Exercise(
        name="clip_loss",
        reference=clip_loss,
        cases=_clip_loss_cases,
        mistakes={
            "only one direction (images → texts): CLIP averages both": _clip_loss_one_way,
            "forgot to L2-normalise the embeddings (dot product instead of cosine)": _clip_loss_no_normalize,
            "multiplied by logit_scale instead of exp(logit_scale)": _clip_loss_scale_not_exp,
            "summed the two directions instead of averaging": _clip_loss_sum,
        },
        hint="normalise both, logits = logit_scale.exp() * img @ txt.T; target = arange(N); "
             "(cross_entropy(logits, target) + cross_entropy(logits.T, target)) / 2.",
    ),
    Exercise(
        name="zero_shot_probs",
        reference=zero_shot_probs,
        cases=_zero_shot_cases,
        mistakes={
            "softmax over the images (dim=0) instead of the classes": _zs_softmax_over_images,
            "forgot to L2-normalise (dot product instead of cosine)": _zs_no_normalize,
            "forgot the temperature exp(logit_scale)": _zs_no_scale,
        },
        hint="F.normalize both on the last dim; logits = exp(logit_scale) * img @ prompts.T (N, K); "
             "softmax(dim=-1).",
    ),
    Exercise(
        name="Projector",
        reference=Projector,
        cases=_projector_cases,
        runner=run_module(Projector),
        mistakes={
            "no non-linearity between fc1 and fc2 (two linear maps = one)": _ProjectorLinearOnly,
            "averaged the patches into one token (the layout of the image is lost)": _ProjectorPooled,
            "ReLU instead of GELU": _ProjectorReLU,
        },
        hint="self.fc2(F.gelu(self.fc1(feats))): applied to every patch separately, (B, P, Dv) -> (B, P, C).",
        atol=1e-4, rtol=1e-4,
    ),
    Exercise(
        name="splice_forward",
        reference=splice_forward,
        cases=_splice_cases,
        mistakes={
            "text first, image after: the text cannot see the image (causal attention)": _splice_text_first,
            "text positions restart at 0 (they collide with the image's)": _splice_text_positions_restart,
            "no position embeddings on the visual tokens": _splice_no_visual_positions,
            "returned logits at the visual positions too (B, P + T, V)": _splice_all_logits,
        },
        hint="x = cat([visual, wte(idx)], 1) + wpe(arange(P + T)); for block in h: x = block(x); "
             "return lm_head(ln_f(x[:, P:])).",
        atol=1e-4, rtol=1e-4,
    ),
]
