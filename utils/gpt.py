"""A small, readable GPT in the style of nanoGPT (Karpathy): the model Lecture 13 builds piece by piece and the
later lectures (scaling, alignment, inference, interpretability) import.

    config = GPTConfig(vocab_size=65, block_size=64, n_layer=4, n_head=4, n_embd=128)
    model = GPT(config)
    logits, loss = model(idx, targets)          # idx, targets: (B, T) int64
    out = model.generate(idx, max_new_tokens=100, temperature=0.8, top_k=20)
    out = model.generate(idx, max_new_tokens=100, use_cache=True)   # same tokens, keys/values kept (L23)
    x, y = get_batch(ids, block_size=64, batch_size=32)            # random windows of a token stream
    estimate_loss(model, val_ids, block_size=64)                   # held-out loss, consecutive windows

Pre-norm blocks (LayerNorm → attention → residual add; LayerNorm → MLP → residual add), learned positions,
weight tying between the token embedding and the output layer, causal attention through
``F.scaled_dot_product_attention`` (the fused kernel; L12 writes the same thing by hand).
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn as nn
import torch.nn.functional as F

__all__ = ["GPTConfig", "GPT", "CausalSelfAttention", "MLP", "Block", "KVCache", "RMSNorm", "top_k_filter",
           "top_p_filter", "get_batch", "estimate_loss"]


def top_k_filter(logits: torch.Tensor, k: int) -> torch.Tensor:
    """Keep the k largest logits of each row of logits (B, V) and set the rest to -inf. Returns (B, V).

    k ≥ V keeps everything. After a softmax the -inf entries get probability exactly 0.
    """
    if k < 1:
        raise ValueError(f"top_k must be at least 1, got {k}")
    kth = torch.topk(logits, min(k, logits.size(-1)), dim=-1).values[:, [-1]]  # (B, 1): the k-th largest
    return logits.masked_fill(logits < kth, float("-inf"))


def top_p_filter(logits: torch.Tensor, p: float) -> torch.Tensor:
    """Nucleus filtering of logits (B, V): keep the most likely tokens, in order, until their probability mass
    reaches p — the smallest such set, always at least the top token — and set the rest to -inf. p = 1 keeps all.
    """
    if not 0 < p <= 1:
        raise ValueError(f"top_p must be in (0, 1], got {p}")
    if p >= 1:
        return logits.clone()
    probs = logits.softmax(dim=-1)
    sorted_probs, order = probs.sort(dim=-1, descending=True)
    mass_before = sorted_probs.cumsum(dim=-1) - sorted_probs   # probability of the tokens ranked above this one
    remove_sorted = mass_before >= p                            # already reached p without this token: drop it
    remove = remove_sorted.scatter(-1, order, remove_sorted)    # back to vocabulary order
    return logits.masked_fill(remove, float("-inf"))


class RMSNorm(nn.Module):
    """x / sqrt(mean(x²) + eps) * weight over the last dim: LayerNorm without subtracting the mean (or a bias)."""

    def __init__(self, d: int, eps: float = 1e-6):
        super().__init__()
        self.eps = eps
        self.weight = nn.Parameter(torch.ones(d))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + self.eps) * self.weight


def get_batch(ids: torch.Tensor, block_size: int, batch_size: int,
              generator: torch.Generator | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """Random windows of a token stream ids (N,). Returns x, y, each (B, T) with y = x shifted left by one:
    y[b, t] is the token that follows x[b, :t+1], so one window holds T training examples."""
    if len(ids) <= block_size:
        raise ValueError(f"need more than block_size={block_size} tokens, got {len(ids)}")
    starts = torch.randint(len(ids) - block_size, (batch_size,), generator=generator)
    offsets = torch.arange(block_size)
    x = ids[starts[:, None] + offsets]          # (B, T) gathered in one indexing op
    y = ids[starts[:, None] + offsets + 1]
    return x, y


@torch.no_grad()
def estimate_loss(model: torch.nn.Module, ids: torch.Tensor, block_size: int, max_blocks: int | None = None,
                  batch_size: int = 256) -> float:
    """Mean next-token cross-entropy (nats) of ``model`` over consecutive non-overlapping windows of ids (N,).
    ``max_blocks`` limits the cost: that many windows spread evenly over the text (not just its beginning,
    which may be an unusual page). Deterministic; leaves the model's mode unchanged."""
    n_all = (len(ids) - 1) // block_size
    x = ids[: n_all * block_size].view(n_all, block_size)
    y = ids[1: n_all * block_size + 1].view(n_all, block_size)
    if max_blocks is not None and max_blocks < n_all:
        keep = torch.linspace(0, n_all - 1, max_blocks).long()
        x, y = x[keep], y[keep]
    n = len(x)
    was_training = model.training
    model.eval()
    total = 0.0
    for i in range(0, n, batch_size):
        _, loss = model(x[i:i + batch_size], y[i:i + batch_size])
        total += loss.item() * len(x[i:i + batch_size])
    model.train(was_training)
    return total / n


@dataclass
class GPTConfig:
    vocab_size: int = 65
    block_size: int = 64  # the longest context the model sees
    n_layer: int = 4
    n_head: int = 4
    n_embd: int = 128
    dropout: float = 0.0
    bias: bool = True
    tie_weights: bool = True  # share the token embedding with the output layer (saves vocab × n_embd params)


class KVCache:
    """The keys and values every layer has computed so far, so generating one more token costs one position's
    work instead of re-running the whole context (Lecture 23).

    k, v: (n_layer, B, n_head, max_len, head_dim), preallocated — appending is a copy, not a concatenation.
    ``length`` tokens are stored; the next forward pass with this cache puts its tokens at positions
    length, length + 1, …
    """

    def __init__(self, config: GPTConfig, batch_size: int, max_len: int | None = None,
                 dtype: torch.dtype = torch.float32, device: torch.device | str | None = None):
        self.max_len = config.block_size if max_len is None else max_len
        if not 0 < self.max_len <= config.block_size:
            raise ValueError(f"max_len must be in 1..block_size ({config.block_size}), got {self.max_len}")
        shape = (config.n_layer, batch_size, config.n_head, self.max_len, config.n_embd // config.n_head)
        self.k = torch.zeros(shape, dtype=dtype, device=device)
        self.v = torch.zeros(shape, dtype=dtype, device=device)
        self.length = 0

    def update(self, layer: int, k: torch.Tensor, v: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Store the new keys/values k, v (B, n_head, T_new, head_dim) of ``layer``; return all of that layer's
        keys and values so far, (B, n_head, length + T_new, head_dim). ``length`` moves on in :meth:`advance`,
        once every layer has stored its part."""
        start, end = self.length, self.length + k.size(2)
        if end > self.max_len:
            raise ValueError(f"KV cache is full: {self.length} + {k.size(2)} tokens > max_len {self.max_len}")
        self.k[layer, :, :, start:end] = k
        self.v[layer, :, :, start:end] = v
        return self.k[layer, :, :, :end], self.v[layer, :, :, :end]

    def advance(self, n_tokens: int) -> None:
        self.length += n_tokens

    @property
    def nbytes(self) -> int:
        """Bytes of the keys and values stored so far (all layers, K and V)."""
        return 2 * self.k[:, :, :, :self.length].numel() * self.k.element_size()


class CausalSelfAttention(nn.Module):
    """Multi-head self-attention where position t only sees positions ≤ t. x: (B, T, C) → (B, T, C)."""

    def __init__(self, config: GPTConfig):
        super().__init__()
        if config.n_embd % config.n_head != 0:
            raise ValueError(f"n_embd ({config.n_embd}) must be divisible by n_head ({config.n_head})")
        self.n_head = config.n_head
        self.c_attn = nn.Linear(config.n_embd, 3 * config.n_embd, bias=config.bias)  # q, k, v in one matmul
        self.c_proj = nn.Linear(config.n_embd, config.n_embd, bias=config.bias)
        self.dropout = config.dropout
        self.resid_dropout = nn.Dropout(config.dropout)

    def forward(self, x: torch.Tensor, cache: KVCache | None = None, layer: int = 0) -> torch.Tensor:
        B, T, C = x.shape
        q, k, v = self.c_attn(x).split(C, dim=2)
        # (B, T, C) -> (B, n_head, T, head_dim): every head attends independently
        q, k, v = (t.view(B, T, self.n_head, C // self.n_head).transpose(1, 2) for t in (q, k, v))
        dropout_p = self.dropout if self.training else 0.0
        if cache is None:
            y = F.scaled_dot_product_attention(q, k, v, is_causal=True, dropout_p=dropout_p)
        else:
            start = cache.length
            k, v = cache.update(layer, k, v)  # the past keys/values plus these T new ones
            # new token i sits at position start + i and may look at keys 0 … start + i
            mask = torch.ones(T, start + T, dtype=torch.bool, device=x.device).tril(diagonal=start)
            y = F.scaled_dot_product_attention(q, k, v, attn_mask=mask, dropout_p=dropout_p)
        y = y.transpose(1, 2).contiguous().view(B, T, C)  # concatenate the heads again
        return self.resid_dropout(self.c_proj(y))


class MLP(nn.Module):
    """The position-wise feed-forward network: C → 4C → GELU → C."""

    def __init__(self, config: GPTConfig):
        super().__init__()
        self.c_fc = nn.Linear(config.n_embd, 4 * config.n_embd, bias=config.bias)
        self.c_proj = nn.Linear(4 * config.n_embd, config.n_embd, bias=config.bias)
        self.dropout = nn.Dropout(config.dropout)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.dropout(self.c_proj(F.gelu(self.c_fc(x))))


class Block(nn.Module):
    """A pre-norm transformer block: attention and the MLP each read the residual stream and add to it."""

    def __init__(self, config: GPTConfig):
        super().__init__()
        self.ln_1 = nn.LayerNorm(config.n_embd, bias=config.bias)
        self.attn = CausalSelfAttention(config)
        self.ln_2 = nn.LayerNorm(config.n_embd, bias=config.bias)
        self.mlp = MLP(config)

    def forward(self, x: torch.Tensor, cache: KVCache | None = None, layer: int = 0) -> torch.Tensor:
        x = x + self.attn(self.ln_1(x), cache, layer)
        return x + self.mlp(self.ln_2(x))


class GPT(nn.Module):
    """A decoder-only transformer language model (GPT-2 layout, nanoGPT API)."""

    def __init__(self, config: GPTConfig):
        super().__init__()
        self.config = config
        self.transformer = nn.ModuleDict(dict(
            wte=nn.Embedding(config.vocab_size, config.n_embd),
            wpe=nn.Embedding(config.block_size, config.n_embd),
            drop=nn.Dropout(config.dropout),
            h=nn.ModuleList([Block(config) for _ in range(config.n_layer)]),
            ln_f=nn.LayerNorm(config.n_embd, bias=config.bias),
        ))
        self.lm_head = nn.Linear(config.n_embd, config.vocab_size, bias=False)
        if config.tie_weights:
            self.lm_head.weight = self.transformer.wte.weight
        self.apply(self._init_weights)
        # GPT-2: scale the residual projections by 1/sqrt(2 * n_layer) so the stream's variance stays O(1)
        for name, p in self.named_parameters():
            if name.endswith("c_proj.weight"):
                nn.init.normal_(p, mean=0.0, std=0.02 / math.sqrt(2 * config.n_layer))

    @staticmethod
    def _init_weights(module: nn.Module) -> None:
        if isinstance(module, (nn.Linear, nn.Embedding)):
            nn.init.normal_(module.weight, mean=0.0, std=0.02)
        if isinstance(module, nn.Linear) and module.bias is not None:
            nn.init.zeros_(module.bias)

    def num_params(self, non_embedding: bool = True) -> int:
        """Parameter count (a tied weight counted once); by default without the position embedding."""
        n = sum(p.numel() for p in self.parameters())
        return n - self.transformer.wpe.weight.numel() if non_embedding else n

    def forward(self, idx: torch.Tensor, targets: torch.Tensor | None = None, cache: KVCache | None = None
                ) -> tuple[torch.Tensor, torch.Tensor | None]:
        """idx (B, T) token ids, T ≤ block_size. Returns logits (B, T, vocab) and, given targets (B, T),
        the mean cross-entropy of predicting targets[:, t] from idx[:, :t+1] (else None).

        With a :class:`KVCache`, idx are the *next* T tokens after the ``cache.length`` already stored: they
        attend to the cached keys/values as well as to each other, and the cache keeps theirs too.
        """
        B, T = idx.shape
        start = 0 if cache is None else cache.length
        if start + T > self.config.block_size:
            raise ValueError(f"sequence length {start + T} exceeds block_size {self.config.block_size}")
        pos = torch.arange(start, start + T, device=idx.device)
        x = self.transformer.drop(self.transformer.wte(idx) + self.transformer.wpe(pos))
        for layer, block in enumerate(self.transformer.h):
            x = block(x, cache, layer)
        if cache is not None:
            cache.advance(T)
        logits = self.lm_head(self.transformer.ln_f(x))
        loss = None
        if targets is not None:
            loss = F.cross_entropy(logits.view(-1, logits.size(-1)), targets.reshape(-1), ignore_index=-1)
        return logits, loss

    @torch.no_grad()
    def generate(self, idx: torch.Tensor, max_new_tokens: int, temperature: float = 1.0,
                 top_k: int | None = None, top_p: float | None = None,
                 generator: torch.Generator | None = None, use_cache: bool = False) -> torch.Tensor:
        """Append ``max_new_tokens`` sampled tokens to idx (B, T); returns (B, T + max_new_tokens).

        The context is cropped to the last ``block_size`` tokens. ``temperature`` → 0 approaches greedy
        decoding; ``top_k`` samples only among the k most likely tokens; ``top_p`` (nucleus sampling) only
        among the fewest most likely tokens whose probabilities add up to at least p. ``generator`` makes the
        draws reproducible without touching the global seed. ``use_cache`` keeps every layer's keys and values
        (:class:`KVCache`) so each new token costs one position instead of the whole context — same logits.
        Once the text outgrows block_size the window slides, every position moves, and the cache is refilled.
        """
        if temperature <= 0:
            raise ValueError(f"temperature must be positive, got {temperature}")
        was_training = self.training
        self.eval()
        cache = None
        for _ in range(max_new_tokens):
            if not use_cache:
                logits, _ = self(idx[:, -self.config.block_size:])
            elif cache is None or idx.size(1) > self.config.block_size:  # start, or the window slid: refill
                cache = KVCache(self.config, idx.size(0), dtype=self.lm_head.weight.dtype, device=idx.device)
                logits, _ = self(idx[:, -self.config.block_size:], cache=cache)
            else:
                logits, _ = self(idx[:, -1:], cache=cache)  # only the newest token is new
            logits = logits[:, -1, :] / temperature
            if top_k is not None:
                logits = top_k_filter(logits, top_k)
            if top_p is not None:
                logits = top_p_filter(logits, top_p)
            next_id = torch.multinomial(F.softmax(logits, dim=-1), num_samples=1, generator=generator)
            idx = torch.cat([idx, next_id], dim=1)
        self.train(was_training)
        return idx
