"""Lecture 13 — a character-level GPT (nanoGPT) on the built-in English text.

Reference solutions and the exercise registry (COURSE_DESIGN §2):

* ``bigram_probs``: the count-based bigram language model with add-alpha smoothing, the baseline to beat;
* ``top_k_filter`` and ``top_p_filter``: keep the k most likely tokens / the smallest nucleus holding mass p,
  returning logits with ``-inf`` everywhere else, (B, V) → (B, V) (references: ``utils.gpt``'s, which
  ``GPT.generate`` uses);
* ``train_step``: one optimisation step — zero the gradients, forward, backward, clip, step.

Beyond the exercises: the data pipeline (``encode_text``, ``get_batch``), the loss on a split
(``estimate_loss``), the parameter-count formula (``gpt_param_count``), the renaming from Lecture 12's block to
nanoGPT's names (``to_nanogpt_names``), one sampling step (``sample_next``; whole samples come from
``GPT.generate(..., generator=...)``), a word-level sanity
statistic of samples (``real_word_fraction``) and the widget's figure (``plot_sample``). The model itself is
``utils.gpt.GPT`` (re-exported here); the schedule is Lecture 05's ``warmup_cosine``.
"""
from __future__ import annotations

import re
import textwrap

import matplotlib.pyplot as plt
import torch

from utils.exercises import Case, Exercise, ExerciseError
from utils.gpt import GPT, GPTConfig, estimate_loss, get_batch, top_k_filter, top_p_filter
from utils.training import warmup_cosine

__all__ = [
    "GPT", "GPTConfig", "warmup_cosine", "encode_text", "get_batch", "estimate_loss", "bigram_probs",
    "cross_entropy_of", "gpt_param_count", "to_nanogpt_names", "top_k_filter", "top_p_filter", "sample_next",
    "train_step", "real_word_fraction", "plot_sample", "EXERCISES",
]


# --------------------------------------------------------------------------------------------- data pipeline
def encode_text(text: str, chars: list[str]) -> torch.Tensor:
    """Map every character of ``text`` to its index in ``chars``. Returns (N,) int64."""
    stoi = {c: i for i, c in enumerate(chars)}
    unknown = sorted(set(text) - set(stoi))
    if unknown:
        raise ValueError(f"characters not in the vocabulary: {unknown[:10]}")
    return torch.tensor([stoi[c] for c in text], dtype=torch.long)


# ----------------------------------------------------------------------------- exercise 1: the bigram baseline
def bigram_probs(ids: torch.Tensor, vocab_size: int, alpha: float = 1.0) -> torch.Tensor:
    """The bigram model counted from a token stream ids (N,), with add-alpha smoothing.

    Returns P (V, V): P[a, b] = (count(a followed by b) + alpha) / (count(a followed by anything) + V·alpha),
    so every row sums to 1 and no pair gets probability 0 (a single unseen pair in val would cost infinity).
    """
    counts = torch.zeros(vocab_size, vocab_size)
    counts.index_put_((ids[:-1], ids[1:]), torch.ones(len(ids) - 1), accumulate=True)  # row = previous token
    counts += alpha
    return counts / counts.sum(dim=1, keepdim=True)


def _bigram_no_smoothing(ids, vocab_size, alpha=1.0):
    counts = torch.zeros(vocab_size, vocab_size)
    counts.index_put_((ids[:-1], ids[1:]), torch.ones(len(ids) - 1), accumulate=True)
    return counts / counts.sum(dim=1, keepdim=True)


def _bigram_normalise_columns(ids, vocab_size, alpha=1.0):
    counts = torch.zeros(vocab_size, vocab_size)
    counts.index_put_((ids[:-1], ids[1:]), torch.ones(len(ids) - 1), accumulate=True)
    counts += alpha
    return counts / counts.sum(dim=0, keepdim=True)


def _bigram_transposed(ids, vocab_size, alpha=1.0):
    counts = torch.zeros(vocab_size, vocab_size)
    counts.index_put_((ids[1:], ids[:-1]), torch.ones(len(ids) - 1), accumulate=True)
    counts += alpha
    return counts / counts.sum(dim=1, keepdim=True)


def _bigram_smooth_after_normalising(ids, vocab_size, alpha=1.0):
    counts = torch.zeros(vocab_size, vocab_size)
    counts.index_put_((ids[:-1], ids[1:]), torch.ones(len(ids) - 1), accumulate=True)
    return counts / counts.sum(dim=1, keepdim=True) + alpha


def _bigram_cases() -> list[Case]:
    g = torch.Generator().manual_seed(0)
    return [
        Case((torch.tensor([0, 1, 2, 0, 1, 1, 2, 0]), 3), label="8 tokens, V=3, alpha=1"),
        Case((torch.randint(6, (200,), generator=g), 6), {"alpha": 0.1}, label="200 random tokens, V=6, alpha=0.1"),
        Case((torch.tensor([0, 1, 2, 3, 0, 2, 1, 3, 3, 0]), 5), {"alpha": 0.5},
             label="token 4 never occurs (its row must be uniform)"),
    ]


def cross_entropy_of(P: torch.Tensor, ids: torch.Tensor) -> float:
    """Mean −log P[previous, next] over the pairs of a token stream ids (N,), in nats. P: (V, V)."""
    return -P[ids[:-1], ids[1:]].log().mean().item()


# ----------------------------------------------------------------------------------------- parameter count
def gpt_param_count(vocab_size: int, block_size: int, n_layer: int, n_embd: int, tied: bool = True) -> int:
    """Every parameter of ``utils.gpt.GPT`` (biases and LayerNorms included), counted by formula:

    embeddings V·C + T·C; per block 12C² + 13C (attention 4C² + 4C, MLP 8C² + 5C, two LayerNorms 4C);
    final LayerNorm 2C; output layer V·C more when it is *not* tied to the token embedding.
    """
    C = n_embd
    n = vocab_size * C + block_size * C + n_layer * (12 * C * C + 13 * C) + 2 * C
    return n if tied else n + vocab_size * C


# L12 wrote the block with short names; nanoGPT (and utils.gpt) uses GPT-2's. Same tensors, other keys.
_L12_TO_NANOGPT = [("ln1.", "ln_1."), ("ln2.", "ln_2."), ("attn.qkv.", "attn.c_attn."), ("attn.proj.", "attn.c_proj."),
                   ("mlp.0.", "mlp.c_fc."), ("mlp.2.", "mlp.c_proj.")]


def to_nanogpt_names(state_dict: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Rename a state_dict written with Lecture 12's names (``ln1``, ``attn.qkv``, ``attn.proj``, ``mlp.0``,
    ``mlp.2``; a model's ``wte``/``wpe``/``blocks.i``/``ln_f``) to nanoGPT's (``ln_1``, ``attn.c_attn``,
    ``attn.c_proj``, ``mlp.c_fc``, ``mlp.c_proj``; ``transformer.wte``/``transformer.h.i``/…)."""
    out = {}
    for key, value in state_dict.items():
        new = key
        for old, nano in _L12_TO_NANOGPT:
            new = re.sub(r"(^|\.)" + re.escape(old), lambda m, nano=nano: m.group(1) + nano, new)
        new = re.sub(r"^blocks\.", "transformer.h.", new)
        new = re.sub(r"^(wte|wpe|ln_f)\.", r"transformer.\1.", new)
        out[new] = value
    return out


# ------------------------------------------------------------------------------- exercise 2: top-k filtering
# the reference is utils.gpt.top_k_filter (GPT.generate uses it), re-exported here


def _top_k_smallest(logits, k):
    kth = torch.topk(logits, min(k, logits.size(-1)), dim=-1, largest=False).values[:, [-1]]
    return logits.masked_fill(logits > kth, float("-inf"))


def _top_k_zero(logits, k):
    kth = torch.topk(logits, min(k, logits.size(-1)), dim=-1).values[:, [-1]]
    return logits.masked_fill(logits < kth, 0.0)


def _top_k_off_by_one(logits, k):
    kth = torch.topk(logits, min(k, logits.size(-1)), dim=-1).values[:, [-1]]
    return logits.masked_fill(logits <= kth, float("-inf"))


def _top_k_cases() -> list[Case]:
    g = torch.Generator().manual_seed(0)
    return [
        Case((torch.tensor([[1.0, 3.0, 2.0, -1.0, 0.5]]), 2), label="one row, V=5, k=2"),
        Case((torch.randn(4, 10, generator=g), 3), label="B=4, V=10, k=3"),
        Case((torch.randn(2, 7, generator=g), 1), label="k=1 (greedy)"),
        Case((torch.randn(3, 6, generator=g), 6), label="k=V keeps everything"),
        Case((torch.randn(2, 5, generator=g), 50), label="k > V keeps everything"),
    ]


# ---------------------------------------------------------------------------- exercise 3: top-p (nucleus)
# the reference is utils.gpt.top_p_filter (GPT.generate uses it), re-exported here


def _top_p_drop_crossing(logits, p):
    if p >= 1:
        return logits.clone()
    probs = logits.softmax(-1)
    sp, order = probs.sort(-1, descending=True)
    remove_sorted = sp.cumsum(-1) > p                           # also drops the token that crosses p
    return logits.masked_fill(remove_sorted.scatter(-1, order, remove_sorted), float("-inf"))


def _top_p_unsorted(logits, p):
    if p >= 1:
        return logits.clone()
    probs = logits.softmax(-1)
    remove = probs.cumsum(-1) - probs >= p                      # cumulative sum in vocabulary order
    return logits.masked_fill(remove, float("-inf"))


def _top_p_inverted(logits, p):
    if p >= 1:
        return logits.clone()
    probs = logits.softmax(-1)
    sp, order = probs.sort(-1, descending=True)
    keep_sorted = sp.cumsum(-1) - sp >= p
    return logits.masked_fill(~keep_sorted.scatter(-1, order, keep_sorted), float("-inf"))


def _top_p_cases() -> list[Case]:
    g = torch.Generator().manual_seed(1)
    return [
        Case((torch.tensor([[0.0, 2.0, 1.0, -1.0, 3.0]]), 0.7), label="one row, V=5, p=0.7"),
        Case((2 * torch.randn(4, 12, generator=g), 0.9), label="B=4, V=12, p=0.9"),
        Case((torch.tensor([[5.0, 0.0, 1.0, 0.5]]), 0.5), label="top token alone holds > p: keep only it"),
        Case((torch.randn(3, 8, generator=g), 1.0), label="p=1 keeps everything"),
        Case((3 * torch.randn(2, 20, generator=g), 0.3), label="B=2, V=20, p=0.3"),
    ]


# ---------------------------------------------------------------------------------------------- sampling
def sample_next(logits: torch.Tensor, temperature: float = 1.0, top_k: int | None = None,
                top_p: float | None = None, generator: torch.Generator | None = None) -> torch.Tensor:
    """Sample one token per row from logits (B, V): divide by the temperature, then top-k, then top-p, then
    softmax and draw. Returns (B,) int64. ``top_k=None``/``top_p=None`` switch the filters off."""
    if temperature <= 0:
        raise ValueError(f"temperature must be positive, got {temperature}")
    logits = logits / temperature           # < 1 sharpens towards the arg-max, > 1 flattens towards uniform
    if top_k is not None:
        logits = top_k_filter(logits, top_k)
    if top_p is not None:
        logits = top_p_filter(logits, top_p)
    return torch.multinomial(logits.softmax(dim=-1), num_samples=1, generator=generator).squeeze(1)


def real_word_fraction(text: str, words: set[str]) -> float:
    """Fraction of the lowercase letter-words of ``text`` (2+ letters) that occur in ``words``; 0 if none."""
    found = re.findall(r"[a-z]{2,}", text.lower())
    return sum(w in words for w in found) / len(found) if found else 0.0


# ----------------------------------------------------------------------------- exercise 4: the training step
def train_step(model: torch.nn.Module, optimizer: torch.optim.Optimizer, xb: torch.Tensor, yb: torch.Tensor,
               clip: float = 1.0) -> float:
    """One optimisation step on a batch xb, yb (B, T); ``model(xb, yb)`` returns (logits, loss).

    Zero the old gradients, forward, backward, clip the global gradient norm to ``clip``, step.
    Returns the loss as a Python float (``.item()``: no graph kept alive).
    """
    optimizer.zero_grad(set_to_none=True)   # .backward() adds to .grad: clear last step's first
    _, loss = model(xb, yb)
    loss.backward()
    torch.nn.utils.clip_grad_norm_(model.parameters(), clip)   # after backward, before the step
    optimizer.step()
    return loss.item()


def _train_step_no_zero_grad(model, optimizer, xb, yb, clip=1.0):
    _, loss = model(xb, yb)
    loss.backward()
    torch.nn.utils.clip_grad_norm_(model.parameters(), clip)
    optimizer.step()
    return loss.item()


def _train_step_clip_after_step(model, optimizer, xb, yb, clip=1.0):
    optimizer.zero_grad(set_to_none=True)
    _, loss = model(xb, yb)
    loss.backward()
    optimizer.step()
    torch.nn.utils.clip_grad_norm_(model.parameters(), clip)
    return loss.item()


def _train_step_zero_grad_before_step(model, optimizer, xb, yb, clip=1.0):
    _, loss = model(xb, yb)
    loss.backward()
    torch.nn.utils.clip_grad_norm_(model.parameters(), clip)
    optimizer.zero_grad(set_to_none=False)
    optimizer.step()
    return loss.item()


def _run_train_step(impl, case: Case) -> dict[str, object] | None:
    """Train a tiny seeded GPT for a few steps with ``impl``; return the losses and the final parameters."""
    kw = case.kwargs
    torch.manual_seed(case.seed)
    model = GPT(GPTConfig(vocab_size=11, block_size=8, n_layer=2, n_head=2, n_embd=16))
    # SGD with momentum: clipping changes its step directly (Adam would divide most of the scale away again)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.5, momentum=0.9, weight_decay=0.1)
    g = torch.Generator().manual_seed(case.seed)
    data = torch.randint(11, (500,), generator=g)
    losses = []
    for _ in range(kw["steps"]):
        xb, yb = get_batch(data, 8, 4, generator=g)
        loss = impl(model, optimizer, xb, yb, clip=kw["clip"])
        if loss is None:
            return None
        if isinstance(loss, torch.Tensor) and loss.requires_grad:
            raise ExerciseError("train_step: return loss.item() (a float), not the tensor: a tensor keeps the "
                                "whole graph alive")
        losses.append(float(loss))
    return {"losses": torch.tensor(losses), **{n: p.detach().clone() for n, p in model.named_parameters()}}


# ----------------------------------------------------------------------------------------------- the widget
def plot_sample(model: GPT, chars: list[str], prompt: str = "The ", temperature: float = 1.0, top_k: int = 0,
                top_p: float = 1.0, seed: int = 0, length: int = 240) -> plt.Figure:
    """The widget's figure: the next-character distribution after ``prompt`` once temperature, top-k
    (0 = off) and top-p (1 = off) are applied, and a fresh sample of ``length`` characters drawn with them."""
    top_k_arg = top_k if top_k and top_k > 0 else None
    top_p_arg = top_p if top_p < 1 else None
    idx = encode_text(prompt, chars)[None, :]
    with torch.no_grad():
        was_training = model.training
        model.eval()
        logits = model(idx[:, -model.config.block_size:])[0][:, -1, :] / temperature
        model.train(was_training)
    if top_k_arg is not None:
        logits = top_k_filter(logits, top_k_arg)
    if top_p_arg is not None:
        logits = top_p_filter(logits, top_p_arg)
    probs = logits.softmax(-1)[0]
    kept = int((probs > 0).sum())
    out = model.generate(idx, length, temperature, top_k_arg, top_p_arg, generator=torch.Generator().manual_seed(seed))
    text = "".join(chars[i] for i in out[0].tolist())

    fig, (ax_bar, ax_txt) = plt.subplots(2, 1, figsize=(10, 5.5), gridspec_kw={"height_ratios": [1, 1]})
    top = probs.topk(min(20, len(chars)))
    labels = [repr(chars[i])[1:-1].replace(" ", "␣") for i in top.indices.tolist()]
    ax_bar.bar(range(len(labels)), top.values.numpy(), color="tab:blue")
    ax_bar.set_xticks(range(len(labels)), labels, fontfamily="monospace")
    ax_bar.set(xlabel=f"next character after {prompt!r} (20 most likely)", ylabel="probability", ylim=(0, 1),
               title=f"T={temperature:.2f}, top-k={top_k_arg or 'off'}, top-p={top_p_arg or 'off'}: "
                     f"{kept} of {len(chars)} characters can be drawn")
    wrapped = "\n".join(textwrap.fill(line, 95) for line in text.splitlines()[:14])
    ax_txt.text(0.0, 1.0, wrapped, va="top", ha="left", family="monospace", fontsize=8.5, transform=ax_txt.transAxes)
    ax_txt.set_title(f"a fresh sample (seed {seed})", loc="left")
    ax_txt.axis("off")
    fig.tight_layout()
    return fig


# ------------------------------------------------------------------------------------------------ registry
EXERCISES = [
    Exercise(
        name="bigram_probs",
        reference=bigram_probs,
        cases=_bigram_cases,
        mistakes={
            "forgot the smoothing: unseen pairs get probability 0 (infinite loss on val)": _bigram_no_smoothing,
            "normalised the columns (dim=0) instead of the rows": _bigram_normalise_columns,
            "counted (next, previous) instead of (previous, next): the matrix is transposed": _bigram_transposed,
            "added alpha after normalising: rows no longer sum to 1": _bigram_smooth_after_normalising,
        },
        hint="counts = zeros(V, V); counts[prev, next] += 1 for every pair (index_put_ with accumulate=True); "
             "add alpha; divide each row by its sum (dim=1, keepdim=True).",
    ),
    Exercise(
        name="top_k_filter",
        reference=top_k_filter,
        cases=_top_k_cases,
        mistakes={
            "kept the k smallest logits (topk(..., largest=False))": _top_k_smallest,
            "masked with 0 instead of -inf: softmax still gives those tokens weight": _top_k_zero,
            "used <= the k-th value: only k-1 tokens survive": _top_k_off_by_one,
        },
        hint="kth = torch.topk(logits, min(k, V), dim=-1).values[:, [-1]] is (B, 1); "
             "logits.masked_fill(logits < kth, float('-inf')).",
    ),
    Exercise(
        name="top_p_filter",
        reference=top_p_filter,
        cases=_top_p_cases,
        mistakes={
            "dropped the token that crosses p: the nucleus is too small (even empty)": _top_p_drop_crossing,
            "took the cumulative sum in vocabulary order instead of sorted by probability": _top_p_unsorted,
            "inverted the mask: kept the tail instead of the nucleus": _top_p_inverted,
        },
        hint="probs = softmax; sort descending; mass_before = cumsum - sorted_probs; remove where mass_before >= p; "
             "scatter the mask back with the sort order; masked_fill with -inf. Return logits.clone() when p == 1.",
    ),
    Exercise(
        name="train_step",
        reference=train_step,
        cases=lambda: [Case(kwargs={"steps": 3, "clip": 0.05}, label="3 steps, clip 0.05 (clipping active)"),
                       Case(kwargs={"steps": 4, "clip": 1.0}, seed=1, label="4 steps, clip 1.0, seed 1")],
        runner=_run_train_step,
        mistakes={
            "forgot optimizer.zero_grad(): gradients pile up across steps": _train_step_no_zero_grad,
            "clipped after optimizer.step(): the step already used the raw gradient": _train_step_clip_after_step,
            "zeroed the gradients between backward and step: only weight decay moves the weights":
                _train_step_zero_grad_before_step,
        },
        hint="optimizer.zero_grad(); _, loss = model(xb, yb); loss.backward(); "
             "torch.nn.utils.clip_grad_norm_(model.parameters(), clip); optimizer.step(); return loss.item().",
        atol=1e-5, rtol=1e-4,
    ),
]
