"""Lecture 12 — token embeddings, attention from scratch and the Transformer block.

Reference solutions and the exercise registry (COURSE_DESIGN §2):

* ``attention``: scaled dot-product attention, softmax(q kᵀ / sqrt(d)) v, with an optional boolean mask
  (True = may attend), returning the output and the attention weights;
* ``causal_mask`` and ``padding_mask``: the two masks every Transformer needs;
* ``MultiHeadAttention``: one fused q/k/v projection, split into heads, attend, merge, project;
* ``Block``: the pre-norm Transformer block, x + attn(ln1(x)) then x + mlp(ln2(x)) — two writes to the residual stream.

Beyond the exercises: the skip-gram (``skipgram_data``, ``SkipGram``, ``train_skipgram``, ``nearest``, ``analogy``),
``RMSNorm``, ``sinusoidal_positions``, the key-value recall models (``RecallTransformer``, ``RecallMLP``,
``train_recall``, ``accuracy``) and the attention-map plot behind the widget (``plot_attention``).
"""
from __future__ import annotations

import collections
import math
import re

import matplotlib.pyplot as plt
import torch
import torch.nn as nn
import torch.nn.functional as F

import utils
from utils.exercises import Case, Exercise, run_module
from utils.gpt import RMSNorm  # shown here, reused by L15's modern block

__all__ = [
    "attention", "causal_mask", "padding_mask", "MultiHeadAttention", "Block", "RMSNorm", "sinusoidal_positions",
    "skipgram_data", "SkipGram", "train_skipgram", "nearest", "analogy", "RecallTransformer", "RecallMLP",
    "recall_batch", "train_recall", "accuracy", "n_params", "recall_tokens", "plot_attention", "EXERCISES",
]


# ------------------------------------------------------------------------------------ exercise 1: attention
def attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor,
              mask: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """Scaled dot-product attention.

    q: (..., T, d), k: (..., S, d), v: (..., S, dv); mask: bool, broadcastable to (..., T, S), True = may attend.
    Returns out (..., T, dv) and weights (..., T, S), each row of weights a softmax over the S keys.
    """
    scores = q @ k.transpose(-2, -1) / math.sqrt(q.shape[-1])  # (..., T, S): how well each query matches each key
    if mask is not None:
        scores = scores.masked_fill(~mask, float("-inf"))      # exp(-inf) = 0: hidden keys get exactly no weight
    weights = scores.softmax(dim=-1)                           # each query spreads one unit of attention over keys
    return weights @ v, weights


def _attention_no_scale(q, k, v, mask=None):
    scores = q @ k.transpose(-2, -1)
    if mask is not None:
        scores = scores.masked_fill(~mask, float("-inf"))
    weights = scores.softmax(-1)
    return weights @ v, weights


def _attention_scale_by_d(q, k, v, mask=None):
    scores = q @ k.transpose(-2, -1) / q.shape[-1]
    if mask is not None:
        scores = scores.masked_fill(~mask, float("-inf"))
    weights = scores.softmax(-1)
    return weights @ v, weights


def _attention_softmax_over_queries(q, k, v, mask=None):
    scores = q @ k.transpose(-2, -1) / math.sqrt(q.shape[-1])
    if mask is not None:
        scores = scores.masked_fill(~mask, float("-inf"))
    weights = scores.softmax(-2).nan_to_num(0.0)
    return weights @ v, weights


def _attention_mask_with_zero(q, k, v, mask=None):
    scores = q @ k.transpose(-2, -1) / math.sqrt(q.shape[-1])
    if mask is not None:
        scores = scores.masked_fill(~mask, 0.0)
    weights = scores.softmax(-1)
    return weights @ v, weights


def _attention_cases() -> list[Case]:
    g = torch.Generator().manual_seed(0)

    def r(*shape):
        return torch.randn(*shape, generator=g)

    causal = torch.ones(5, 5, dtype=torch.bool).tril()
    pad = torch.tensor([[True] * 6 + [False] * 2, [True] * 8])[:, None, None, :]  # (2, 1, 1, 8)
    return [
        Case((r(3, 4), r(3, 4), r(3, 4)), label="one sequence, T=S=3, d=4"),
        Case((r(2, 5, 8), r(2, 7, 8), r(2, 7, 3)), label="batch 2, T=5 queries, S=7 keys, d=8, dv=3"),
        Case((r(2, 3, 5, 16), r(2, 3, 5, 16), r(2, 3, 5, 16), causal), label="(B, H, T, d) with a causal mask"),
        Case((r(2, 2, 8, 4), r(2, 2, 8, 4), r(2, 2, 8, 4), pad), label="padding mask (B, 1, 1, S)"),
        Case((3 * r(1, 4, 64), 3 * r(1, 4, 64), r(1, 4, 2)), label="large d=64, large scores"),
    ]


# ------------------------------------------------------------------------------------ exercise 2: the masks
def causal_mask(T: int) -> torch.Tensor:
    """(T, T) bool: entry [i, j] is True when query i may look at key j, i.e. j <= i (itself and the past)."""
    return torch.ones(T, T, dtype=torch.bool).tril()


def _causal_upper(T):
    return torch.ones(T, T, dtype=torch.bool).triu()


def _causal_strict(T):
    return torch.ones(T, T, dtype=torch.bool).tril(-1)


def padding_mask(lengths: torch.Tensor, T: int) -> torch.Tensor:
    """lengths: (B,) int, the true length of each padded sequence. Returns (B, 1, 1, T) bool, True at the real
    tokens (position < length), False at the padding — shaped to broadcast over heads and queries."""
    return (torch.arange(T)[None, :] < lengths[:, None])[:, None, None, :]


def _padding_inverted(lengths, T):
    return (torch.arange(T)[None, :] >= lengths[:, None])[:, None, None, :]


def _padding_off_by_one(lengths, T):
    return (torch.arange(T)[None, :] <= lengths[:, None])[:, None, None, :]


def _padding_flat(lengths, T):
    return torch.arange(T)[None, :] < lengths[:, None]


# ------------------------------------------------------------------------- exercise 3: multi-head attention
class MultiHeadAttention(nn.Module):
    """Multi-head self-attention.

    forward(x (B, T, C), mask bool broadcastable to (B, H, T, T) or None) -> out (B, T, C), weights (B, H, T, T).
    ``qkv``: one Linear(C, 3C) whose output splits into q, k, v (in that order); each is cut into H heads of
    size C / H; every head attends on its own; the heads are concatenated back to C and mixed by ``proj``.
    """

    def __init__(self, d_model: int, n_heads: int):
        super().__init__()
        assert d_model % n_heads == 0, "d_model must be divisible by n_heads"
        self.n_heads = n_heads
        self.qkv = nn.Linear(d_model, 3 * d_model)
        self.proj = nn.Linear(d_model, d_model)

    def forward(self, x: torch.Tensor, mask: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        B, T, C = x.shape
        q, k, v = self.qkv(x).split(C, dim=-1)                             # 3 × (B, T, C)
        # (B, T, C) -> (B, T, H, C/H) -> (B, H, T, C/H): each head sees its own slice of every token's channels
        q, k, v = (t.view(B, T, self.n_heads, C // self.n_heads).transpose(1, 2) for t in (q, k, v))
        out, weights = attention(q, k, v, mask)                           # (B, H, T, C/H), (B, H, T, T)
        out = out.transpose(1, 2).reshape(B, T, C)                        # heads side by side again
        return self.proj(out), weights


class _MHAWrongSplit(MultiHeadAttention):
    def forward(self, x, mask=None):
        B, T, C = x.shape
        q, k, v = self.qkv(x).split(C, dim=-1)
        q, k, v = (t.reshape(B, self.n_heads, T, C // self.n_heads) for t in (q, k, v))  # no transpose
        out, weights = attention(q, k, v, mask)
        return self.proj(out.reshape(B, T, C)), weights


class _MHANoProj(MultiHeadAttention):
    def forward(self, x, mask=None):
        B, T, C = x.shape
        q, k, v = self.qkv(x).split(C, dim=-1)
        q, k, v = (t.view(B, T, self.n_heads, C // self.n_heads).transpose(1, 2) for t in (q, k, v))
        out, weights = attention(q, k, v, mask)
        return out.transpose(1, 2).reshape(B, T, C), weights


class _MHAScaleByModelDim(MultiHeadAttention):
    def forward(self, x, mask=None):
        B, T, C = x.shape
        q, k, v = self.qkv(x).split(C, dim=-1)
        q, k, v = (t.view(B, T, self.n_heads, C // self.n_heads).transpose(1, 2) for t in (q, k, v))
        out, weights = attention(q * math.sqrt(C // self.n_heads / C), k, v, mask)  # 1/sqrt(C) instead of head dim
        return self.proj(out.transpose(1, 2).reshape(B, T, C)), weights


def _mha_cases() -> list[Case]:
    g = torch.Generator().manual_seed(1)
    return [
        Case((torch.randn(2, 5, 8, generator=g),), {"d_model": 8, "n_heads": 2}, label="B=2, T=5, C=8, 2 heads"),
        Case((torch.randn(1, 6, 12, generator=g),), {"d_model": 12, "n_heads": 1}, label="a single head"),
        Case((torch.randn(3, 7, 16, generator=g), causal_mask(7)), {"d_model": 16, "n_heads": 4},
             label="4 heads with a causal mask"),
        Case((torch.randn(2, 4, 8, generator=g), padding_mask(torch.tensor([2, 4]), 4)), {"d_model": 8, "n_heads": 4},
             label="padding mask, 4 heads of size 2"),
    ]


# ------------------------------------------------------------------------------------------ exercise 4: block
class Block(nn.Module):
    """The pre-norm Transformer block: two reads from and two writes to the residual stream.

    forward(x (B, T, C), mask or None) -> x (B, T, C), attention weights (B, H, T, T), where
        x = x + attn(ln1(x), mask)      # tokens talk to each other
        x = x + mlp(ln2(x))             # each token thinks on its own
    ``mlp`` = Linear(C, d_ff) → GELU → Linear(d_ff, C).
    """

    def __init__(self, d_model: int, n_heads: int, d_ff: int | None = None):
        super().__init__()
        d_ff = d_ff or 4 * d_model
        self.ln1 = nn.LayerNorm(d_model)
        self.attn = MultiHeadAttention(d_model, n_heads)
        self.ln2 = nn.LayerNorm(d_model)
        self.mlp = nn.Sequential(nn.Linear(d_model, d_ff), nn.GELU(), nn.Linear(d_ff, d_model))

    def forward(self, x: torch.Tensor, mask: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        written, weights = self.attn(self.ln1(x), mask)
        x = x + written                       # attention writes its result onto the stream
        x = x + self.mlp(self.ln2(x))         # so does the MLP; the stream is the running sum
        return x, weights


class _BlockPostNorm(Block):
    def forward(self, x, mask=None):
        written, weights = self.attn(x, mask)
        x = self.ln1(x + written)
        return self.ln2(x + self.mlp(x)), weights


class _BlockNoMLPResidual(Block):
    def forward(self, x, mask=None):
        written, weights = self.attn(self.ln1(x), mask)
        x = x + written
        return self.mlp(self.ln2(x)), weights


class _BlockNormAfterAdd(Block):
    def forward(self, x, mask=None):
        written, weights = self.attn(self.ln1(x), mask)
        x = x + written
        return x + self.mlp(x), weights  # forgot ln2


def _block_cases() -> list[Case]:
    g = torch.Generator().manual_seed(2)
    return [
        Case((torch.randn(2, 5, 8, generator=g),), {"d_model": 8, "n_heads": 2, "d_ff": 16}, label="C=8, 2 heads"),
        Case((3 * torch.randn(1, 6, 16, generator=g) + 1, causal_mask(6)), {"d_model": 16, "n_heads": 4},
             label="causal, default d_ff = 4C, shifted and scaled input"),
    ]


# -------------------------------------------------------------------------------------- norms and positions


def sinusoidal_positions(T: int, d: int) -> torch.Tensor:
    """(T, d) table of "Attention is all you need": PE[t, 2i] = sin(t / 10000^(2i/d)), PE[t, 2i+1] = cos(same).
    Low dimensions oscillate fast, high ones slowly — a position is a unique pattern of clock hands."""
    pos = torch.arange(T, dtype=torch.float32)[:, None]
    freq = torch.exp(-math.log(10000.0) * torch.arange(0, d, 2, dtype=torch.float32) / d)  # (d/2,)
    pe = torch.zeros(T, d)
    pe[:, 0::2] = torch.sin(pos * freq)
    pe[:, 1::2] = torch.cos(pos * freq[: d // 2])
    return pe


# -------------------------------------------------------------------------------------------------- skip-gram
def skipgram_data(text: str, vocab_size: int = 3000, window: int = 2) -> tuple[torch.Tensor, list[str], torch.Tensor]:
    """Words (lower-case letters only) → (center, context) pairs within ``window``, both in the vocabulary.

    Returns pairs (N, 2) int64, the vocabulary (most frequent first) and each word's count (V,).
    """
    words = re.findall(r"[a-z]+", text.lower())
    counts = collections.Counter(words).most_common(vocab_size)
    vocab = [w for w, _ in counts]
    index = {w: i for i, w in enumerate(vocab)}
    ids = torch.tensor([index.get(w, -1) for w in words])
    pairs = []
    for off in range(1, window + 1):
        a, b = ids[:-off], ids[off:]
        pairs += [torch.stack([a, b], 1), torch.stack([b, a], 1)]
    pairs = torch.cat(pairs)
    pairs = pairs[(pairs >= 0).all(1)]
    return pairs, vocab, torch.tensor([c for _, c in counts], dtype=torch.float32)


class SkipGram(nn.Module):
    """word2vec's skip-gram with negative sampling: score(center, context) = in_embed[center] · out_embed[context]."""

    def __init__(self, vocab_size: int, dim: int = 64):
        super().__init__()
        self.inp = nn.Embedding(vocab_size, dim)
        self.out = nn.Embedding(vocab_size, dim)
        nn.init.normal_(self.inp.weight, std=0.1)
        nn.init.zeros_(self.out.weight)

    def loss(self, center: torch.Tensor, context: torch.Tensor, negatives: torch.Tensor) -> torch.Tensor:
        """center, context (B,), negatives (B, K): -log σ(u·v_ctx) - Σ log σ(-u·v_neg), averaged over B."""
        u = self.inp(center)                                            # (B, D)
        pos = (u * self.out(context)).sum(-1)                           # (B,)
        neg = (self.out(negatives) @ u[:, :, None]).squeeze(-1)         # (B, K)
        return -(F.logsigmoid(pos) + F.logsigmoid(-neg).sum(-1)).mean()


def train_skipgram(pairs: torch.Tensor, counts: torch.Tensor, dim: int = 64, steps: int = 1500,
                   batch_size: int = 1024, n_neg: int = 5, lr: float = 0.01, seed: int = 0) -> tuple[SkipGram, list]:
    """Adam on random batches of pairs, negatives drawn from counts^0.75 (word2vec's recipe). Returns model, losses."""
    gen = torch.Generator().manual_seed(seed)
    torch.manual_seed(seed)
    model = SkipGram(len(counts), dim)
    opt = torch.optim.Adam(model.parameters(), lr=lr)
    noise = counts.pow(0.75)
    losses = []
    for _ in range(steps):
        b = pairs[torch.randint(len(pairs), (batch_size,), generator=gen)]
        neg = torch.multinomial(noise, batch_size * n_neg, replacement=True, generator=gen).view(batch_size, n_neg)
        loss = model.loss(b[:, 0], b[:, 1], neg)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        losses.append(loss.item())
    return model, losses


def nearest(emb: torch.Tensor, vocab: list[str], word_or_vec, k: int = 5, exclude=()) -> list[tuple[str, float]]:
    """The k words whose embedding (rows of emb (V, D)) has the highest cosine similarity to a word or a vector."""
    e = F.normalize(emb, dim=1)
    v = e[vocab.index(word_or_vec)] if isinstance(word_or_vec, str) else F.normalize(word_or_vec, dim=0)
    sims = e @ v
    skip = set(exclude) | ({word_or_vec} if isinstance(word_or_vec, str) else set())
    out = []
    for i in sims.argsort(descending=True).tolist():
        if vocab[i] not in skip:
            out.append((vocab[i], sims[i].item()))
        if len(out) == k:
            break
    return out


def analogy(emb: torch.Tensor, vocab: list[str], a: str, b: str, c: str, k: int = 3) -> list[tuple[str, float]]:
    """a is to b as c is to ?: the nearest words to b - a + c (unit vectors), a, b and c excluded."""
    e = F.normalize(emb, dim=1)
    idx = vocab.index
    return nearest(emb, vocab, e[idx(b)] - e[idx(a)] + e[idx(c)], k, exclude=(a, b, c))


# ------------------------------------------------------------------------------------------ key-value recall
N_PAIRS, N_KEYS, N_VALUES = 4, 16, 16
RECALL_VOCAB = N_KEYS + N_VALUES


def recall_batch(n: int, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    """``k1 v1 ... k4 v4 q`` → the value stored with key q. x (n, 9), y (n,) in [0, 16) (the value's index)."""
    x, y = utils.data.kv_recall(n, N_PAIRS, N_KEYS, N_VALUES, seed=seed)
    return x, y - N_KEYS


def recall_tokens(x: torch.Tensor) -> list[str]:
    """Readable labels for one sequence: keys as K0..K15, values as v0..v15, the last token marked '?'."""
    labels = [f"K{t}" if t < N_KEYS else f"v{t - N_KEYS}" for t in x.tolist()]
    labels[-1] = labels[-1] + "?"
    return labels


class RecallTransformer(nn.Module):
    """Token + learned position embeddings → n_layers pre-norm Blocks → LayerNorm → a linear read-out at the last
    position (the query). forward(x (B, T)) -> logits (B, N_VALUES), list of attention weights (B, H, T, T)."""

    def __init__(self, d_model: int = 32, n_heads: int = 4, n_layers: int = 2, T: int = 2 * N_PAIRS + 1,
                 block_cls: type[nn.Module] = Block):
        super().__init__()
        self.tok = nn.Embedding(RECALL_VOCAB, d_model)
        self.pos = nn.Parameter(torch.randn(T, d_model))  # as large as the tokens: position must matter
        self.blocks = nn.ModuleList([block_cls(d_model, n_heads) for _ in range(n_layers)])
        self.ln_f = nn.LayerNorm(d_model)
        self.head = nn.Linear(d_model, N_VALUES)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, list[torch.Tensor]]:
        h = self.tok(x) + self.pos[: x.shape[1]]
        maps = []
        for block in self.blocks:
            h, w = block(h)
            maps.append(w)
        return self.head(self.ln_f(h[:, -1])), maps


class RecallMLP(nn.Module):
    """Same token embedding, then the whole sequence flattened into an MLP. forward(x) -> logits, [] (no maps)."""

    def __init__(self, d_model: int = 32, hidden: int = 128, n_hidden: int = 2, T: int = 2 * N_PAIRS + 1):
        super().__init__()
        self.tok = nn.Embedding(RECALL_VOCAB, d_model)
        layers, width = [], T * d_model
        for _ in range(n_hidden):
            layers += [nn.Linear(width, hidden), nn.GELU()]
            width = hidden
        self.mlp = nn.Sequential(*layers, nn.Linear(width, N_VALUES))

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, list]:
        return self.mlp(self.tok(x).flatten(1)), []


def n_params(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


def train_recall(model: nn.Module, steps: int = 1000, batch_size: int = 256, lr: float = 5e-3,
                 seed: int = 0) -> list[float]:
    """AdamW with a linear warm-up (100 steps) and cosine decay, fresh batches every step (an endless stream of
    new examples, so memorising is impossible), exactly ``steps`` steps. Returns the losses."""
    opt = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=0.01)
    losses = []
    model.train()
    for step in range(steps):
        x, y = recall_batch(batch_size, seed=seed * 1_000_003 + step + 1)
        for group in opt.param_groups:
            group["lr"] = lr * min(1.0, (step + 1) / 100) * 0.5 * (1 + math.cos(math.pi * step / steps))
        loss = F.cross_entropy(model(x)[0], y)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        losses.append(loss.item())
    model.eval()
    return losses


@torch.no_grad()
def accuracy(model: nn.Module, x: torch.Tensor, y: torch.Tensor) -> float:
    return (model(x)[0].argmax(-1) == y).float().mean().item()


def plot_attention(maps: list[torch.Tensor], x: torch.Tensor, layer: int, head: int, example: int) -> plt.Figure:
    """Heat map of the attention weights maps[layer][example, head] (T, T) with the tokens as axis labels."""
    w = maps[layer][example, head].detach().cpu().numpy()
    labels = recall_tokens(x[example])
    fig, ax = plt.subplots(figsize=(5.2, 4.6))
    im = ax.imshow(w, cmap="viridis", vmin=0, vmax=1)
    ax.set_xticks(range(len(labels)), labels, rotation=90, fontsize=8)
    ax.set_yticks(range(len(labels)), labels, fontsize=8)
    ax.set_xlabel("key (attended-to token)")
    ax.set_ylabel("query (attending token)")
    ax.set_title(f"layer {layer}, head {head}, example {example}")
    fig.colorbar(im, ax=ax, fraction=0.046, label="weight")
    fig.tight_layout()
    return fig


# ------------------------------------------------------------------------------------------------ registry
EXERCISES = [
    Exercise(
        name="attention",
        reference=attention,
        cases=_attention_cases,
        mistakes={
            "forgot the 1/sqrt(d) scale": _attention_no_scale,
            "scaled by 1/d instead of 1/sqrt(d)": _attention_scale_by_d,
            "softmax over the queries (dim=-2) instead of the keys (dim=-1)": _attention_softmax_over_queries,
            "masked with 0 instead of -inf (a score of 0 still gets weight)": _attention_mask_with_zero,
        },
        hint="scores = q @ k.transpose(-2, -1) / sqrt(d); masked_fill(~mask, -inf); softmax over the last dim "
             "(the keys); return (weights @ v, weights).",
        atol=1e-4, rtol=1e-4,
    ),
    Exercise(
        name="causal_mask",
        reference=causal_mask,
        cases=lambda: [Case((1,), label="T=1"), Case((4,), label="T=4"), Case((9,), label="T=9")],
        mistakes={"upper triangle: queries see the future, not the past": _causal_upper,
                  "strict lower triangle: a token cannot see itself (row 0 sees nothing)": _causal_strict},
        hint="Row i is the query, column j the key; allowed when j <= i: torch.ones(T, T, dtype=torch.bool).tril().",
    ),
    Exercise(
        name="padding_mask",
        reference=padding_mask,
        cases=lambda: [Case((torch.tensor([3, 5, 1]), 5), label="lengths 3, 5, 1 padded to T=5"),
                       Case((torch.tensor([2]), 4), label="one sequence of length 2 padded to 4")],
        mistakes={"True at the padding instead of at the real tokens": _padding_inverted,
                  "off by one: position == length counted as a real token": _padding_off_by_one,
                  "returned (B, T): it must be (B, 1, 1, T) to broadcast over heads and queries": _padding_flat},
        hint="torch.arange(T)[None, :] < lengths[:, None] gives (B, T); "
             "add the head and query axes with [:, None, None, :].",
    ),
    Exercise(
        name="MultiHeadAttention",
        reference=MultiHeadAttention,
        cases=_mha_cases,
        runner=run_module(MultiHeadAttention, outputs=["out", "weights"]),
        mistakes={"split heads with a reshape to (B, H, T, d) instead of view(B, T, H, d).transpose(1, 2)":
                  _MHAWrongSplit,
                  "forgot the output projection self.proj": _MHANoProj,
                  "scaled by 1/sqrt(C) (the model width) instead of 1/sqrt(C/H) (the head size)": _MHAScaleByModelDim},
        hint="q, k, v = self.qkv(x).split(C, -1); each .view(B, T, H, C // H).transpose(1, 2); "
             "attention(q, k, v, mask); out.transpose(1, 2).reshape(B, T, C); then self.proj.",
        atol=1e-4, rtol=1e-4,
    ),
    Exercise(
        name="Block",
        reference=Block,
        cases=_block_cases,
        runner=run_module(Block, outputs=["x", "weights"]),
        mistakes={"post-norm (normalise after adding) instead of pre-norm": _BlockPostNorm,
                  "no residual around the MLP (x = mlp(...) overwrites the stream)": _BlockNoMLPResidual,
                  "forgot ln2 before the MLP": _BlockNormAfterAdd},
        hint="written, w = self.attn(self.ln1(x), mask); x = x + written; x = x + self.mlp(self.ln2(x)); return x, w.",
        atol=1e-4, rtol=1e-4,
    ),
]
