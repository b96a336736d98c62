"""Lecture 24 — mechanistic interpretability: reading a trained network instead of only training it.

Reference solutions and the exercise registry (COURSE_DESIGN §2):

* ``logit_lens``: decode any residual-stream vector with the model's own final LayerNorm and unembedding;
* ``induction_score``: how much each head attends from a repeated token to the token *after* its previous
  occurrence (the induction pattern), from attention patterns (B, H, T, T);
* ``patch_head``: overwrite one head's output at one position with its value from another run (activation patching);
* ``sae_loss``: a sparse autoencoder's objective, reconstruction error plus an L1 penalty on the feature activations;
* ``clamp_feature``: set one SAE feature to a chosen value inside the residual stream, keeping everything else.

Beyond the exercises: forward-hook plumbing (``hooks``, ``residual_stream``, ``stream_parts``, ``gpt_attention``),
the 2-layer attention-only model with hook points (``AttnOnly``), its data and training (``repeat_batch``,
``repeated_tokens``, ``train_induction``), activation patching (``patching_effects``), the toy models of
superposition (``train_toy_models``), the sparse autoencoder (``SAE``, ``train_sae``, ``sae_stats``,
``feature_recovery``, ``top_activating``), steering measurements (``steer_kl``, ``generate_steered``), in-context
linear regression with one linear-attention layer (``LinearSelfAttention``, ``train_icl``, ``icl_curves``) and the
plots behind the widgets (``plot_head``, ``plot_steering``).
"""
from __future__ import annotations

import contextlib
import math
from typing import Callable, Iterator

import matplotlib.pyplot as plt
import torch
import torch.nn as nn
import torch.nn.functional as F

from utils.exercises import Case, Exercise
from utils.gpt import GPT

__all__ = [
    "hooks", "residual_stream", "stream_parts", "logit_lens", "lens_metrics", "gpt_attention",
    "AttnOnly", "repeat_batch", "repeated_tokens", "train_induction", "position_losses", "induction_score",
    "prev_token_score", "patch_head", "patching_setup", "patching_effects", "plot_head",
    "train_toy_models", "represented", "plot_superposition", "SAE", "sae_loss", "train_sae", "sae_stats",
    "feature_recovery", "top_activating", "clamp_feature", "steer_kl", "generate_steered", "plot_steering",
    "LinearSelfAttention", "linear_tasks", "train_icl", "gd_step_prediction", "least_squares_prediction",
    "icl_curves", "patterns_of", "EXERCISES",
]


# ============================================================================================ hooks and lens
@contextlib.contextmanager
def hooks(*specs: tuple[nn.Module, Callable, str]) -> Iterator[None]:
    """Register hooks for the duration of a ``with`` block, then remove them (even after an exception).

    specs: ``(module, fn, "forward")`` — ``fn(module, inputs, output)``, may return a replacement output — or
    ``(module, fn, "pre")`` — ``fn(module, inputs)``, may return replacement inputs (a tuple).
    A hook left behind silently changes every later forward pass, hence the context manager.
    """
    handles = []
    try:
        for module, fn, kind in specs:
            if kind == "forward":
                handles.append(module.register_forward_hook(fn))
            elif kind == "pre":
                handles.append(module.register_forward_pre_hook(fn))
            else:
                raise ValueError(f"hook kind must be 'forward' or 'pre', got {kind!r}")
        yield
    finally:
        for h in handles:
            h.remove()


@torch.no_grad()
def residual_stream(model: GPT, idx: torch.Tensor) -> list[torch.Tensor]:
    """The residual stream of a GPT on idx (B, T): a list of n_layer + 1 tensors (B, T, C) — after the
    embeddings, then after each block. The last one is what ``ln_f`` and ``lm_head`` read."""
    saved: list[torch.Tensor] = []
    first = model.transformer.h[0]
    specs = [(first, lambda m, inp: saved.append(inp[0].clone()), "pre")]  # the embeddings enter block 0
    specs += [(b, lambda m, inp, out: saved.append(out.clone()), "forward") for b in model.transformer.h]
    with hooks(*specs):
        model(idx)
    return saved


@torch.no_grad()
def stream_parts(model: GPT, idx: torch.Tensor) -> dict[str, torch.Tensor]:
    """Every write to the residual stream, in order: ``{"embed": ..., "attn0": ..., "mlp0": ..., ...}``, each
    (B, T, C). Their sum is the final residual stream (the whiteboard is the sum of everything written on it)."""
    parts: dict[str, torch.Tensor] = {}
    specs = [(model.transformer.h[0], lambda m, inp: parts.__setitem__("embed", inp[0].clone()), "pre")]
    for i, b in enumerate(model.transformer.h):
        specs.append((b.attn, lambda m, inp, out, i=i: parts.__setitem__(f"attn{i}", out.clone()), "forward"))
        specs.append((b.mlp, lambda m, inp, out, i=i: parts.__setitem__(f"mlp{i}", out.clone()), "forward"))
    with hooks(*specs):
        model(idx)
    return parts


# ------------------------------------------------------------------------------------ exercise 1: logit lens
def logit_lens(resid: torch.Tensor, ln_f: nn.Module, W_U: torch.Tensor) -> torch.Tensor:
    """Read a residual stream as if it were the last layer.

    resid: (B, T, C) the stream at some depth; ln_f: the model's final LayerNorm; W_U: (V, C) the unembedding
    (``model.lm_head.weight``). Returns logits (B, T, V) = ln_f(resid) @ W_Uᵀ.
    """
    return ln_f(resid) @ W_U.T   # the final LayerNorm is part of the read-out: without it the scale is wrong


def _lens_no_ln(resid, ln_f, W_U):
    return resid @ W_U.T


def _lens_softmax(resid, ln_f, W_U):
    return (ln_f(resid) @ W_U.T).softmax(-1)


def _lens_cases() -> list[Case]:
    g = torch.Generator().manual_seed(0)
    ln = nn.LayerNorm(8)
    with torch.no_grad():
        ln.weight.copy_(1 + 0.5 * torch.randn(8, generator=g))
        ln.bias.copy_(0.3 * torch.randn(8, generator=g))
    return [
        Case((3 * torch.randn(2, 5, 8, generator=g), ln, torch.randn(11, 8, generator=g)), label="B=2, T=5, C=8, V=11"),
        Case((torch.randn(1, 1, 8, generator=g), nn.LayerNorm(8), torch.randn(3, 8, generator=g)),
             label="one position, fresh LayerNorm, V=3"),
    ]


@torch.no_grad()
def lens_metrics(model: GPT, idx: torch.Tensor, lens: Callable = logit_lens) -> dict[str, list[float]]:
    """Next-token loss and top-1 accuracy when each depth of the stream is decoded with the logit lens.
    idx: (B, T + 1) — the first T tokens are the input, the last T the targets. Returns lists of n_layer + 1."""
    x, y = idx[:, :-1], idx[:, 1:]
    out: dict[str, list[float]] = {"loss": [], "accuracy": []}
    for resid in residual_stream(model, x):
        logits = lens(resid, model.transformer.ln_f, model.lm_head.weight)
        out["loss"].append(F.cross_entropy(logits.transpose(1, 2), y).item())
        out["accuracy"].append((logits.argmax(-1) == y).float().mean().item())
    return out


@torch.no_grad()
def gpt_attention(model: GPT, idx: torch.Tensor) -> list[torch.Tensor]:
    """Attention patterns of every layer of a utils GPT on idx (B, T): list of (B, H, T, T).

    The GPT uses the fused ``F.scaled_dot_product_attention``, which never returns its weights, so we catch
    the input of each attention layer with a pre-hook and recompute softmax(q kᵀ / sqrt(d) + causal mask)
    from its own ``c_attn`` weights.
    """
    inputs: list[torch.Tensor] = []
    with hooks(*[(b.attn, lambda m, inp: inputs.append(inp[0]), "pre") for b in model.transformer.h]):
        model(idx)
    patterns = []
    for b, x in zip(model.transformer.h, inputs):
        B, T, C = x.shape
        H = b.attn.n_head
        q, k, _ = b.attn.c_attn(x).split(C, dim=2)
        q, k = (t.view(B, T, H, C // H).transpose(1, 2) for t in (q, k))
        scores = q @ k.transpose(-2, -1) / math.sqrt(C // H)
        scores = scores.masked_fill(~torch.ones(T, T, dtype=torch.bool).tril(), float("-inf"))
        patterns.append(scores.softmax(-1))
    return patterns


# ====================================================================================== induction heads
class HeadAttention(nn.Module):
    """Causal multi-head attention that exposes what interpretability needs: ``hook_pattern`` sees the
    attention weights (B, H, T, T) and ``hook_z`` the per-head outputs (B, T, H, d_head) before they are mixed
    by the output projection. Both are ``nn.Identity`` — places to attach forward hooks, as in TransformerLens."""

    def __init__(self, d_model: int, n_head: int):
        super().__init__()
        self.n_head = n_head
        self.qkv = nn.Linear(d_model, 3 * d_model, bias=False)
        self.proj = nn.Linear(d_model, d_model, bias=False)
        self.hook_pattern = nn.Identity()
        self.hook_z = nn.Identity()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        B, T, C = x.shape
        q, k, v = self.qkv(x).split(C, dim=2)
        q, k, v = (t.view(B, T, self.n_head, C // self.n_head).transpose(1, 2) for t in (q, k, v))
        scores = q @ k.transpose(-2, -1) / math.sqrt(C // self.n_head)
        scores = scores.masked_fill(~torch.ones(T, T, dtype=torch.bool, device=x.device).tril(), float("-inf"))
        pattern = self.hook_pattern(scores.softmax(-1))           # (B, H, T, T)
        z = self.hook_z((pattern @ v).transpose(1, 2))             # (B, T, H, d_head): one slot per head
        return self.proj(z.reshape(B, T, C))


class AttnOnly(nn.Module):
    """A transformer with attention layers only (no MLPs): x = emb + pos; x += attn_l(x) for each layer;
    logits = unembed(LN(x)). idx (B, T) → logits (B, T, V). Small enough to read head by head."""

    def __init__(self, vocab_size: int = 32, block_size: int = 40, d_model: int = 48, n_head: int = 4,
                 n_layer: int = 2):
        super().__init__()
        self.wte = nn.Embedding(vocab_size, d_model)
        self.wpe = nn.Embedding(block_size, d_model)
        self.layers = nn.ModuleList([HeadAttention(d_model, n_head) for _ in range(n_layer)])
        self.ln_f = nn.LayerNorm(d_model)
        self.unembed = nn.Linear(d_model, vocab_size, bias=False)

    def forward(self, idx: torch.Tensor) -> torch.Tensor:
        x = self.wte(idx) + self.wpe(torch.arange(idx.shape[1], device=idx.device))
        for layer in self.layers:
            x = x + layer(x)
        return self.unembed(self.ln_f(x))


def repeat_batch(B: int, T: int, vocab_size: int, periods: list[int], g: torch.Generator) -> torch.Tensor:
    """Training sequences (B, T): random tokens, then at a random start a segment of P *distinct* random tokens
    (P drawn from ``periods``) that repeats with period P until the end. Varying P and the start is what forces
    a real induction mechanism ("find my previous occurrence, copy what followed") instead of a fixed-offset
    lookup; distinct tokens make "the previous occurrence" unique."""
    x = torch.randint(vocab_size, (B, T), generator=g)
    for b in range(B):
        P = periods[int(torch.randint(len(periods), (1,), generator=g))]
        start = int(torch.randint(0, max(1, T - 3 * P), (1,), generator=g))
        seg = torch.randperm(vocab_size, generator=g)[:P]
        reps = seg.repeat(math.ceil((T - start) / P))[: T - start]
        x[b, start:] = reps
    return x


def repeated_tokens(period: int, B: int = 128, vocab_size: int = 32, seed: int = 1) -> torch.Tensor:
    """Test sequences (B, 2·period): a segment of distinct random tokens, then the same segment again."""
    g = torch.Generator().manual_seed(seed)
    seg = torch.stack([torch.randperm(vocab_size, generator=g)[:period] for _ in range(B)])
    return torch.cat([seg, seg], dim=1)


def train_induction(steps: int = 800, vocab_size: int = 32, block_size: int = 40, d_model: int = 48,
                    periods: tuple[int, ...] = (3, 4, 5, 6, 8, 9, 10, 11, 12), batch_size: int = 32,
                    lr: float = 1e-2, seed: int = 0) -> tuple[AttnOnly, list[float]]:
    """Train a 2-layer attention-only model on ``repeat_batch`` data (next-token cross-entropy, AdamW).
    Returns the model (eval mode) and the loss per step."""
    torch.manual_seed(seed)
    g = torch.Generator().manual_seed(seed)
    model = AttnOnly(vocab_size, block_size, d_model)
    opt = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=0.01)
    losses = []
    for _ in range(steps):
        x = repeat_batch(batch_size, block_size, vocab_size, list(periods), g)
        logits = model(x[:, :-1])
        loss = F.cross_entropy(logits.transpose(1, 2), x[:, 1:])
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        losses.append(loss.item())
    return model.eval(), losses


@torch.no_grad()
def position_losses(model: nn.Module, x: torch.Tensor) -> torch.Tensor:
    """Cross-entropy (T - 1,) of predicting x[:, t + 1] from x[:, :t + 1], averaged over the batch."""
    logits = model(x[:, :-1])
    return F.cross_entropy(logits.transpose(1, 2), x[:, 1:], reduction="none").mean(0)


@torch.no_grad()
def patterns_of(model: AttnOnly, x: torch.Tensor) -> list[torch.Tensor]:
    """Attention patterns (B, H, T, T) of every layer of an ``AttnOnly`` model, caught at ``hook_pattern``."""
    saved: list[torch.Tensor] = []
    with hooks(*[(layer.hook_pattern, lambda m, i, out: saved.append(out), "forward") for layer in model.layers]):
        model(x)
    return saved


# ------------------------------------------------------------------------------- exercise 2: induction score
def induction_score(pattern: torch.Tensor, period: int) -> torch.Tensor:
    """pattern: (B, H, T, T) attention weights on sequences whose token t equals token t - period for every
    t ≥ period. Returns (H,): the mean weight that a query at t ≥ period puts on key t - period + 1 — the token
    right *after* the previous occurrence of the current token (the one an induction head copies)."""
    T = pattern.shape[-1]
    t = torch.arange(period, T)                                 # queries that have a previous occurrence
    return pattern[:, :, t, t - period + 1].mean(dim=(0, 2))


def _score_previous_occurrence(pattern, period):
    T = pattern.shape[-1]
    t = torch.arange(period, T)
    return pattern[:, :, t, t - period].mean(dim=(0, 2))


def _score_all_queries(pattern, period):
    T = pattern.shape[-1]
    t = torch.arange(period - 1, T)
    return pattern[:, :, t, t - period + 1].mean(dim=(0, 2))


def _score_batch_only(pattern, period):
    T = pattern.shape[-1]
    t = torch.arange(period, T)
    return pattern[:, :, t, t - period + 1].mean(dim=0).sum(-1) / T


def _induction_cases() -> list[Case]:
    g = torch.Generator().manual_seed(0)
    causal = torch.ones(8, 8, dtype=torch.bool).tril()
    rand = torch.randn(2, 3, 8, 8, generator=g).masked_fill(~causal, float("-inf")).softmax(-1)
    ideal = torch.zeros(1, 2, 6, 6)
    ideal[0, 0, 0, 0] = 1                                       # head 0: a perfect induction head for period 3
    for t in range(1, 6):
        ideal[0, 0, t, t - 2 if t >= 3 else t - 1] = 1
        ideal[0, 1, t, t - 1] = 1                               # head 1: a previous-token head
    ideal[0, 1, 0, 0] = 1
    return [Case((rand, 4), label="random causal patterns, period 4"),
            Case((ideal, 3), label="an ideal induction head and a previous-token head, period 3"),
            Case((rand[:1], 2), label="random, period 2")]


def prev_token_score(pattern: torch.Tensor) -> torch.Tensor:
    """pattern (B, H, T, T) → (H,): mean weight a query at t ≥ 1 puts on key t - 1."""
    t = torch.arange(1, pattern.shape[-1])
    return pattern[:, :, t, t - 1].mean(dim=(0, 2))


# --------------------------------------------------------------------------- exercise 3: activation patching
def patch_head(z: torch.Tensor, z_clean: torch.Tensor, head: int, pos: int) -> torch.Tensor:
    """z, z_clean: (B, T, H, d_head) per-head outputs of one layer in the corrupted and the clean run.
    Return a copy of z whose slot [:, pos, head] comes from z_clean — every other head and position untouched."""
    z = z.clone()                      # never edit the activation in place: autograd and other hooks see it
    z[:, pos, head] = z_clean[:, pos, head]
    return z


def _patch_all_positions(z, z_clean, head, pos):
    z = z.clone()
    z[:, :, head] = z_clean[:, :, head]
    return z


def _patch_all_heads(z, z_clean, head, pos):
    z = z.clone()
    z[:, pos] = z_clean[:, pos]
    return z


def _patch_wrong_axis(z, z_clean, head, pos):
    z = z.clone()
    z[:, head, pos] = z_clean[:, head, pos]
    return z


def _patch_cases() -> list[Case]:
    g = torch.Generator().manual_seed(0)
    return [Case((torch.randn(2, 6, 6, 3, generator=g), torch.randn(2, 6, 6, 3, generator=g), 1, 4),
                 label="B=2, T=6, H=6, head 1 at position 4"),
            Case((torch.randn(1, 5, 5, 2, generator=g), torch.randn(1, 5, 5, 2, generator=g), 0, 3),
                 label="H=T=5, head 0 at position 3")]


def patching_setup(period: int = 10, j: int = 4, B: int = 64, vocab_size: int = 32, seed: int = 2
                   ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Clean and corrupted inputs (B, period + j + 1) for patching the induction circuit, and the answers (B,).

    clean = segment, then the segment again up to its token j: at the last position the model should predict
    segment[j + 1] by induction. corrupted = the same with the *first* occurrence of segment[j] replaced by an
    unused token, so there is nothing to look up.
    """
    x = repeated_tokens(period, B, vocab_size, seed)[:, : period + j + 1]
    g = torch.Generator().manual_seed(seed + 1)
    corrupt = x.clone()
    for b in range(B):
        unused = [v for v in range(vocab_size) if v not in set(x[b].tolist())]
        corrupt[b, j] = unused[int(torch.randint(len(unused), (1,), generator=g))]
    return x, corrupt, x[:, j + 1]


def _answer_margin(logits: torch.Tensor, answer: torch.Tensor) -> torch.Tensor:
    """Logit difference at the last position: the answer's logit minus the mean logit. → scalar."""
    last = logits[:, -1]
    return (last.gather(1, answer[:, None])[:, 0] - last.mean(-1)).mean()


@torch.no_grad()
def patching_effects(model: AttnOnly, clean: torch.Tensor, corrupt: torch.Tensor, answer: torch.Tensor,
                     patch: Callable = patch_head) -> tuple[torch.Tensor, float, float]:
    """Patch every head at every position, one at a time, from the clean into the corrupted run.

    Returns recovered (n_layer · H, T): (margin_patched - margin_corrupt) / (margin_clean - margin_corrupt) —
    1 means that single activation carries the whole difference — and the clean and corrupted margins.
    """
    clean_z: list[torch.Tensor] = []
    with hooks(*[(layer.hook_z, lambda m, i, out: clean_z.append(out), "forward") for layer in model.layers]):
        m_clean = _answer_margin(model(clean), answer).item()
    m_corrupt = _answer_margin(model(corrupt), answer).item()
    H, T = model.layers[0].n_head, clean.shape[1]
    recovered = torch.zeros(len(model.layers) * H, T)
    for li, layer in enumerate(model.layers):
        for h in range(H):
            for pos in range(T):
                def hook(m, inp, out, h=h, pos=pos, li=li):
                    return patch(out, clean_z[li], h, pos)      # a forward hook's return value replaces the output
                with hooks((layer.hook_z, hook, "forward")):
                    m_patch = _answer_margin(model(corrupt), answer).item()
                recovered[li * H + h, pos] = (m_patch - m_corrupt) / (m_clean - m_corrupt)
    return recovered, m_clean, m_corrupt


def plot_head(patterns: list[torch.Tensor], tokens: torch.Tensor, recovered: torch.Tensor, layer: int, head: int,
              example: int = 0) -> plt.Figure:
    """Widget view: the attention pattern of (layer, head) on one repeated sequence, and that head's patching
    effect per position. patterns: list of (B, H, T, T); tokens (B, T); recovered (n_layer · H, T')."""
    H = patterns[0].shape[1]
    if not (0 <= layer < len(patterns) and 0 <= head < H):
        raise ValueError(f"layer must be in [0, {len(patterns)}) and head in [0, {H}), got {layer}, {head}")
    fig, (a1, a2) = plt.subplots(1, 2, figsize=(11, 4.2), gridspec_kw={"width_ratios": [1.1, 1]})
    p = patterns[layer][example, head]
    a1.imshow(p.numpy(), cmap="Blues", vmin=0, vmax=1)
    ticks = [str(int(t)) for t in tokens[example]]
    a1.set_xticks(range(len(ticks)), ticks, fontsize=6)
    a1.set_yticks(range(len(ticks)), ticks, fontsize=6)
    a1.set(xlabel="key (token id)", ylabel="query (token id)", title=f"layer {layer}, head {head}: attention")
    row = recovered[layer * H + head]
    a2.bar(range(len(row)), row.numpy(), color="tab:orange")
    a2.set(xlabel="position patched", ylabel="fraction of logit difference recovered", ylim=(-0.2, 1.1),
           title=f"patching layer {layer}, head {head}")
    fig.tight_layout()
    return fig


# ========================================================================================= superposition
def train_toy_models(n: int = 20, m: int = 5, feature_probs: tuple[float, ...] = (1.0, 0.3, 0.1, 0.03),
                     importance_decay: float = 0.9, steps: int = 1500, batch_size: int = 512, lr: float = 1e-2,
                     seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """Elhage et al. (2022): n sparse features squeezed through m < n dims, h = W x, x̂ = ReLU(Wᵀ h + b).

    One model per feature probability (each feature is non-zero, uniform in [0, 1], with that probability),
    all trained at once. Loss: importance-weighted squared error, importance_i = decay^i.
    Returns W (S, m, n) and b (S, n) for the S probabilities.
    """
    g = torch.Generator().manual_seed(seed)
    S = len(feature_probs)
    W = nn.Parameter(torch.randn(S, m, n, generator=g) * math.sqrt(2 / m))
    b = nn.Parameter(torch.zeros(S, n))
    probs = torch.tensor(feature_probs)[:, None, None]          # (S, 1, 1)
    importance = importance_decay ** torch.arange(n).float()
    opt = torch.optim.AdamW([W, b], lr=lr, weight_decay=0.0)
    for _ in range(steps):
        on = torch.rand(S, batch_size, n, generator=g) < probs
        x = torch.rand(S, batch_size, n, generator=g) * on          # (S, B, n)
        h = torch.einsum("smn,sbn->sbm", W, x)                      # compress: (S, B, m)
        x_hat = F.relu(torch.einsum("smn,sbm->sbn", W, h) + b[:, None])
        loss = (importance * (x - x_hat) ** 2).sum(-1).mean()
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
    return W.detach(), b.detach()


def represented(W: torch.Tensor, threshold: float = 0.5) -> torch.Tensor:
    """W (m, n) → bool (n,): features whose embedding column has norm above threshold (the model kept them)."""
    return W.norm(dim=0) > threshold


def plot_superposition(W: torch.Tensor, feature_probs: tuple[float, ...]) -> plt.Figure:
    """Top row: WᵀW (n × n) for each model — the identity block = features with their own dimension,
    off-diagonal entries = features sharing dimensions (interference). Bottom: each feature's norm ‖W_i‖."""
    S, m, n = W.shape
    fig, axes = plt.subplots(2, S, figsize=(3.2 * S, 6), gridspec_kw={"height_ratios": [1.2, 1]})
    for s in range(S):
        a = axes[0, s]
        a.imshow((W[s].T @ W[s]).numpy(), cmap="RdBu_r", vmin=-1.2, vmax=1.2)
        a.set(title=f"P(feature on) = {feature_probs[s]}\n{int(represented(W[s]).sum())} of {n} represented",
              xlabel="feature", ylabel="feature")
        a = axes[1, s]
        a.bar(range(n), W[s].norm(dim=0).numpy(), color="tab:blue")
        a.axhline(0.5, ls=":", c="gray")
        a.set(ylim=(0, 1.3), xlabel="feature (importance ↓)", ylabel="‖W_i‖")
    fig.suptitle(f"{n} features in {m} dimensions: the sparser the features, the more the model packs in")
    fig.tight_layout()
    return fig


# ==================================================================================== sparse autoencoders
class SAE(nn.Module):
    """A sparse autoencoder: f = ReLU((x - b_dec) W_enc + b_enc), x̂ = f W_dec + b_dec.

    x: (..., d_in) → (x̂ (..., d_in), f (..., d_hidden)). d_hidden > d_in (an over-complete dictionary); the rows of
    W_dec (the feature directions) are kept at unit norm, so the L1 penalty cannot be dodged by shrinking f.
    """

    def __init__(self, d_in: int, d_hidden: int, seed: int = 0):
        super().__init__()
        g = torch.Generator().manual_seed(seed)
        W_dec = F.normalize(torch.randn(d_hidden, d_in, generator=g), dim=1)
        self.W_dec = nn.Parameter(W_dec)
        self.W_enc = nn.Parameter(W_dec.T.clone())          # start as the transpose: a common, stable init
        self.b_enc = nn.Parameter(torch.zeros(d_hidden))
        self.b_dec = nn.Parameter(torch.zeros(d_in))

    def encode(self, x: torch.Tensor) -> torch.Tensor:
        return F.relu((x - self.b_dec) @ self.W_enc + self.b_enc)

    def decode(self, f: torch.Tensor) -> torch.Tensor:
        return f @ self.W_dec + self.b_dec

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        f = self.encode(x)
        return self.decode(f), f


# ---------------------------------------------------------------------------------- exercise 4: the SAE loss
def sae_loss(x: torch.Tensor, x_hat: torch.Tensor, f: torch.Tensor, l1_coeff: float) -> torch.Tensor:
    """x, x_hat: (N, d) inputs and reconstructions; f: (N, F) feature activations. Returns the scalar
    mean over the N rows of  ‖x - x̂‖² (summed over d)  +  l1_coeff · ‖f‖₁ (summed over F)."""
    reconstruction = ((x_hat - x) ** 2).sum(-1).mean()
    sparsity = f.abs().sum(-1).mean()          # L1 pushes most activations to exactly 0 (ReLU), L2 would not
    return reconstruction + l1_coeff * sparsity


def _sae_loss_mean_over_dims(x, x_hat, f, l1_coeff):
    return ((x_hat - x) ** 2).mean() + l1_coeff * f.abs().mean()


def _sae_loss_l2(x, x_hat, f, l1_coeff):
    return ((x_hat - x) ** 2).sum(-1).mean() + l1_coeff * (f ** 2).sum(-1).mean()


def _sae_loss_no_square(x, x_hat, f, l1_coeff):
    return (x_hat - x).abs().sum(-1).mean() + l1_coeff * f.abs().sum(-1).mean()


def _sae_cases() -> list[Case]:
    g = torch.Generator().manual_seed(0)
    x = torch.randn(6, 4, generator=g)
    f = F.relu(torch.randn(6, 10, generator=g))
    return [Case((x, x + 0.3 * torch.randn(6, 4, generator=g), f, 0.1), label="N=6, d=4, F=10, l1 0.1"),
            Case((x, x + 0.5, 2 * f, 1.0), label="constant error 0.5, l1 1.0"),
            Case((x[:1], torch.zeros(1, 4), f[:1], 0.0), label="one row, no sparsity penalty")]


def train_sae(acts: torch.Tensor, d_hidden: int, l1_coeff: float, steps: int = 2000, batch_size: int = 512,
              lr: float = 3e-3, seed: int = 0, loss_fn: Callable = sae_loss) -> tuple[SAE, list[float]]:
    """Train an SAE on activations acts (N, d_in) with Adam; decoder rows re-normalised after every step.
    Returns the SAE and the loss per step."""
    torch.manual_seed(seed)
    g = torch.Generator().manual_seed(seed)
    sae = SAE(acts.shape[1], d_hidden, seed=seed)
    with torch.no_grad():
        sae.b_dec.copy_(acts.median(dim=0).values)          # centre: features then explain deviations
    opt = torch.optim.Adam(sae.parameters(), lr=lr)
    losses = []
    for _ in range(steps):
        x = acts[torch.randint(len(acts), (batch_size,), generator=g)]
        x_hat, f = sae(x)
        loss = loss_fn(x, x_hat, f, l1_coeff)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        with torch.no_grad():
            sae.W_dec.data = F.normalize(sae.W_dec.data, dim=1)
        losses.append(loss.item())
    return sae.eval(), losses


@torch.no_grad()
def sae_stats(sae: SAE, acts: torch.Tensor) -> dict[str, float]:
    """L0 (mean number of active features per input), fraction of variance explained, fraction of dead
    features (never active on acts (N, d_in))."""
    x_hat, f = sae(acts)
    fve = 1 - ((acts - x_hat) ** 2).sum() / ((acts - acts.mean(0)) ** 2).sum()
    return {"L0": (f > 0).float().sum(-1).mean().item(), "variance_explained": fve.item(),
            "dead_fraction": ((f > 0).sum(0) == 0).float().mean().item()}


def feature_recovery(W_true: torch.Tensor, W_dec: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """W_true (m, n): true feature directions as columns; W_dec (F, m): SAE dictionary rows.
    Returns the cosine matrix (n, F) and, per true feature, the best cosine over the dictionary (n,)."""
    cos = F.normalize(W_true.T, dim=1) @ F.normalize(W_dec, dim=1).T
    return cos, cos.max(dim=1).values


@torch.no_grad()
def top_activating(f: torch.Tensor, text: str, feature: int, k: int = 5, width: int = 24) -> list[tuple[float, str]]:
    """f: (N,) or (N, F) activations for each character of text (position i = text[i]). Returns the k strongest
    (activation, snippet) pairs, the snippet ending at the activating character, marked with ⟦ ⟧."""
    a = f[:, feature] if f.dim() == 2 else f
    out = []
    for i in a.topk(k).indices.tolist():
        snippet = text[max(0, i - width):i] + "⟦" + text[i] + "⟧"
        out.append((a[i].item(), snippet.replace("\n", "⏎")))
    return out


# ================================================================================================ steering
# --------------------------------------------------------------------------------- exercise 5: clamp a feature
def clamp_feature(x: torch.Tensor, sae: SAE, feature: int, value: float) -> torch.Tensor:
    """x: (B, T, C) residual stream. Return x with SAE feature ``feature`` set to ``value`` at every position:
    x + (value - f(x)) · d, with f(x) the feature's current activation (B, T) and d its decoder row (C,).
    Only that feature changes; whatever the SAE fails to reconstruct (the error term) is kept."""
    current = sae.encode(x)[..., feature]                      # (B, T)
    return x + (value - current)[..., None] * sae.W_dec[feature]


def _clamp_add_only(x, sae, feature, value):
    return x + value * sae.W_dec[feature]


def _clamp_replace_with_reconstruction(x, sae, feature, value):
    f = sae.encode(x)
    f[..., feature] = value
    return sae.decode(f)


def _clamp_encoder_direction(x, sae, feature, value):
    current = sae.encode(x)[..., feature]
    return x + (value - current)[..., None] * sae.W_enc[:, feature]


def _clamp_cases() -> list[Case]:
    g = torch.Generator().manual_seed(0)
    sae = SAE(6, 16, seed=1)
    with torch.no_grad():
        sae.W_enc.add_(0.3 * torch.randn(6, 16, generator=g))
        sae.b_enc.copy_(0.1 * torch.randn(16, generator=g))
        sae.b_dec.copy_(0.2 * torch.randn(6, generator=g))
    return [Case((torch.randn(2, 3, 6, generator=g), sae, 3, 4.0), label="B=2, T=3, C=6, feature 3 → 4.0"),
            Case((torch.randn(1, 5, 6, generator=g), sae, 0, 0.0), label="switch feature 0 off (value 0)")]


def _run_clamp(impl, case):
    with torch.no_grad():
        return impl(*case.args)


@torch.no_grad()
def steer_kl(model: GPT, idx: torch.Tensor, layer: int, edit: Callable[[torch.Tensor], torch.Tensor]
             ) -> tuple[float, torch.Tensor, torch.Tensor]:
    """Run idx (B, T) with ``edit`` applied to the residual stream entering block ``layer``.
    Returns the mean KL(p_clean ‖ p_edited) of the next-token distributions over all positions, and the
    clean and edited probabilities (B, T, V)."""
    p = model(idx)[0].softmax(-1)
    with hooks((model.transformer.h[layer], lambda m, inp: (edit(inp[0]),), "pre")):
        q = model(idx)[0].softmax(-1)
    kl = (p * (p.clamp_min(1e-12).log() - q.clamp_min(1e-12).log())).sum(-1).mean().item()
    return kl, p, q


@torch.no_grad()
def generate_steered(model: GPT, tok, prompt: str, layer: int, edit: Callable | None, n: int = 80,
                     seed: int = 0, temperature: float = 0.8) -> str:
    """Sample n characters after prompt with ``edit`` (or nothing) applied to the stream entering block
    ``layer`` at every step. Same seed → same draws, so a difference comes from the edit alone."""
    idx = torch.tensor([tok.encode(prompt)])
    g = torch.Generator().manual_seed(seed)
    specs = [] if edit is None else [(model.transformer.h[layer], lambda m, inp: (edit(inp[0]),), "pre")]
    with hooks(*specs):
        out = model.generate(idx, n, temperature=temperature, generator=g)
    return tok.decode(out[0, len(prompt):].tolist())


def plot_steering(model: GPT, tok, sae: SAE, layer: int, feature: int, value: float, prompt: str,
                  n: int = 60) -> plt.Figure:
    """Widget view: text generated with feature ``feature`` clamped to ``value`` (0 = switched off) next to the
    unsteered text, and the next-token distribution shift at the end of the prompt."""
    def edit(x: torch.Tensor) -> torch.Tensor:
        return clamp_feature(x, sae, feature, value)

    plain = generate_steered(model, tok, prompt, layer, None, n)
    steered = generate_steered(model, tok, prompt, layer, edit, n)
    idx = torch.tensor([tok.encode(prompt)])
    _, p, q = steer_kl(model, idx, layer, edit)
    p, q = p[0, -1], q[0, -1]
    top = torch.unique(torch.cat([p.topk(6).indices, q.topk(6).indices]))
    fig, (a1, a2) = plt.subplots(1, 2, figsize=(12, 3.8), gridspec_kw={"width_ratios": [1.4, 1]})
    a1.axis("off")

    def wrap(s: str) -> str:
        return "\n".join(s[i:i + 56] for i in range(0, len(s), 56))

    a1.text(0, 1, f"prompt: {prompt!r}\n\nplain:\n{wrap(plain)}\n\nfeature {feature} = {value:g}:\n{wrap(steered)}",
            va="top", family="monospace", fontsize=8)
    a1.set_title("generated text (same random seed)")
    labels = [repr(tok.decode([int(i)])) for i in top]
    xs = torch.arange(len(top))
    a2.bar(xs.numpy() - 0.2, p[top].numpy(), 0.4, label="plain")
    a2.bar(xs.numpy() + 0.2, q[top].numpy(), 0.4, label="clamped")
    a2.set_xticks(xs.tolist(), labels, fontsize=8)
    a2.set(xlabel="next character", ylabel="probability", title="next-character distribution after the prompt")
    a2.legend()
    fig.tight_layout()
    return fig


# ============================================================================ in-context learning as regression
class LinearSelfAttention(nn.Module):
    """One layer of linear self-attention (von Oswald et al., 2023): tokens z_i = (x_i, y_i) for the N examples,
    a query token (x_q, 0); the query's output is q + (1/N) Σ_i W_PV z_i (z_iᵀ W_KQ q) — attention without the
    softmax — and the prediction is its last coordinate. x: (B, N, D), y: (B, N), x_q: (B, D) → (B,)."""

    def __init__(self, dim: int = 4, seed: int = 0):
        super().__init__()
        g = torch.Generator().manual_seed(seed)
        self.W_KQ = nn.Parameter(0.01 * torch.randn(dim + 1, dim + 1, generator=g))
        self.W_PV = nn.Parameter(0.01 * torch.randn(dim + 1, dim + 1, generator=g))

    def forward(self, x: torch.Tensor, y: torch.Tensor, x_q: torch.Tensor) -> torch.Tensor:
        z = torch.cat([x, y[..., None]], -1)                          # (B, N, D+1): the context tokens
        q = torch.cat([x_q, torch.zeros(len(x_q), 1)], -1)           # (B, D+1): y unknown
        scores = (z @ self.W_KQ @ q[..., None])[..., 0]              # (B, N): key_i · query, no softmax
        update = (scores[..., None] * (z @ self.W_PV.T)).mean(1)     # (B, D+1): weighted sum of values
        return (q + update)[:, -1]


def linear_tasks(B: int, N: int, dim: int, g: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
    """B regression problems y = w · x, w ~ N(0, I), with N + 1 points x ~ N(0, I) each (the last is the
    query). Returns x (B, N + 1, dim), y (B, N + 1)."""
    x = torch.randn(B, N + 1, dim, generator=g)
    w = torch.randn(B, dim, 1, generator=g)
    return x, (x @ w)[..., 0]


def train_icl(steps: int = 800, dim: int = 4, max_points: int = 24, batch_size: int = 256, lr: float = 5e-3,
              seed: int = 0) -> tuple[LinearSelfAttention, list[float]]:
    """Train the linear-attention layer on a fresh batch of random linear functions every step, with a random
    number of in-context examples N ∈ [1, max_points]; loss = squared error on the query. Cosine-decayed Adam."""
    g = torch.Generator().manual_seed(seed)
    model = LinearSelfAttention(dim, seed)
    opt = torch.optim.Adam(model.parameters(), lr=lr)
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, steps)
    losses = []
    for _ in range(steps):
        N = int(torch.randint(1, max_points + 1, (1,), generator=g))
        x, y = linear_tasks(batch_size, N, dim, g)
        loss = F.mse_loss(model(x[:, :N], y[:, :N], x[:, N]), y[:, N])
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        sched.step()
        losses.append(loss.item())
    return model.eval(), losses


def gd_step_prediction(x: torch.Tensor, y: torch.Tensor, x_q: torch.Tensor, lr: float) -> torch.Tensor:
    """One step of gradient descent on the in-context squared loss ½·mean_i (w·x_i - y_i)², from w = 0, then
    predict: w₁ = lr · mean_i y_i x_i, ŷ = w₁ · x_q. x (B, N, D), y (B, N), x_q (B, D) → (B,)."""
    w1 = lr * (y[..., None] * x).mean(1)
    return (w1 * x_q).sum(-1)


def least_squares_prediction(x: torch.Tensor, y: torch.Tensor, x_q: torch.Tensor) -> torch.Tensor:
    """The minimum-norm least-squares fit on the N examples, evaluated at x_q. → (B,)."""
    w = torch.linalg.pinv(x) @ y[..., None]                    # (B, D, 1)
    return (x_q[:, None] @ w)[:, 0, 0]


@torch.no_grad()
def icl_curves(model: LinearSelfAttention, dim: int = 4, points: tuple[int, ...] = (1, 2, 4, 8, 16, 24),
               B: int = 2000, seed: int = 1) -> dict[str, list[float]]:
    """Squared error per dimension on the query after N in-context examples, for the transformer, one GD step
    with the step size read off the trained weights, and least squares. Also the agreement (R²) between the
    transformer's and the GD step's predictions."""
    g = torch.Generator().manual_seed(seed)
    eta = (model.W_KQ[:dim, :dim].diagonal().mean() * model.W_PV[dim, dim]).item()   # the learned step size
    out: dict[str, list[float]] = {"N": list(points), "transformer": [], "gd_step": [], "least_squares": [],
                                   "r2_vs_gd": [], "eta": [eta]}
    for N in points:
        x, y = linear_tasks(B, N, dim, g)
        xs, ys, xq, yq = x[:, :N], y[:, :N], x[:, N], y[:, N]
        p_tf, p_gd = model(xs, ys, xq), gd_step_prediction(xs, ys, xq, eta)
        out["transformer"].append(((p_tf - yq) ** 2).mean().item() / dim)
        out["gd_step"].append(((p_gd - yq) ** 2).mean().item() / dim)
        out["least_squares"].append(((least_squares_prediction(xs, ys, xq) - yq) ** 2).mean().item() / dim)
        out["r2_vs_gd"].append(1 - (((p_tf - p_gd) ** 2).sum() / ((p_tf - p_tf.mean()) ** 2).sum()).item())
    return out


# ================================================================================================ registry
EXERCISES = [
    Exercise(
        name="logit_lens",
        reference=logit_lens,
        cases=_lens_cases,
        mistakes={"forgot the final LayerNorm (decoded the raw stream)": _lens_no_ln,
                  "returned probabilities (softmax) instead of logits": _lens_softmax},
        hint="Apply the model's final LayerNorm first, then the unembedding: ln_f(resid) @ W_U.T (W_U is (V, C)).",
        atol=1e-4, rtol=1e-4,
    ),
    Exercise(
        name="induction_score",
        reference=induction_score,
        cases=_induction_cases,
        mistakes={"scored the previous occurrence itself (t - period) instead of the token after it": (
                      _score_previous_occurrence),
                  "included the query at t = period - 1, which has no previous occurrence": _score_all_queries,
                  "divided by T instead of averaging over the repeated queries": _score_batch_only},
        hint="Queries t = period .. T-1 have a previous occurrence at t - period; the induction head attends to "
             "the token after it, key t - period + 1. Index pattern[:, :, t, t - period + 1] and average over "
             "batch and queries.",
    ),
    Exercise(
        name="patch_head",
        reference=patch_head,
        cases=_patch_cases,
        mistakes={"patched the head at every position": _patch_all_positions,
                  "patched every head at the position": _patch_all_heads,
                  "indexed [:, head, pos] — z is (B, T, H, d_head), position comes first": _patch_wrong_axis},
        hint="z = z.clone(); z[:, pos, head] = z_clean[:, pos, head]; return z.",
    ),
    Exercise(
        name="sae_loss",
        reference=sae_loss,
        cases=_sae_cases,
        mistakes={"averaged over the dimensions instead of summing them per row": _sae_loss_mean_over_dims,
                  "penalised f² (L2) instead of |f| (L1)": _sae_loss_l2,
                  "used |x̂ - x| instead of the squared error": _sae_loss_no_square},
        hint="((x_hat - x) ** 2).sum(-1).mean() + l1_coeff * f.abs().sum(-1).mean()",
    ),
    Exercise(
        name="clamp_feature",
        reference=clamp_feature,
        cases=_clamp_cases,
        runner=_run_clamp,
        mistakes={"added value · d without removing the feature's current activation": _clamp_add_only,
                  "replaced the stream by the SAE reconstruction (lost the error term)": (
                      _clamp_replace_with_reconstruction),
                  "moved along the encoder column instead of the decoder row": _clamp_encoder_direction},
        hint="current = sae.encode(x)[..., feature]; return x + (value - current)[..., None] * sae.W_dec[feature]",
        atol=1e-5, rtol=1e-5,
    ),
]
