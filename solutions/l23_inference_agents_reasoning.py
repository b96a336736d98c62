"""Lecture 23 — inference systems, test-time compute, reasoning and agents.

Reference solutions and the exercise registry (COURSE_DESIGN §2):

* ``cached_attention_step``: one decoding step of attention with a KV cache — the new query (B, H, 1, d)
  attends to the cached keys/values plus its own, and the new key/value are appended;
* ``quantize`` (with ``dequantize``): symmetric absmax integer quantization of a weight matrix, per tensor or
  per output channel, int8 or int4;
* ``majority_vote``: self-consistency's answer aggregation (ties go to the answer seen first);
* ``dispatch``: the tool-dispatch step of a ReAct loop — parse ``name(argument)``, run the tool, return the
  observation text, and turn every failure into an ``error: ...`` observation instead of a crash.

Beyond the exercises: KV-cache timing (``time_decoding``), weight quantization of a whole GPT
(``quantize_model``), speculative decoding (``speculative_generate``, ``speculative_first_token``), a small draft
model (``train_char_gpt``), the arithmetic reasoner checkpoint ``arith_reasoner`` (formats ``format_problem``,
batched generation ``complete``, ``parse_answer``, the rule-based process verifier ``verify_cot``), test-time
compute curves (``tts_curves``), a short GRPO fine-tuning (``grpo_finetune``), the ReAct loop (``react``) and
the plot behind the widget (``plot_tts``).
"""
from __future__ import annotations

import collections
import copy
import math
import re
import time
from dataclasses import asdict
from typing import Any, Callable, Sequence

import matplotlib.pyplot as plt
import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F

import utils
from utils.exercises import Case, Exercise
from utils.gpt import GPT, GPTConfig, KVCache
from utils.pretrained import CharTokenizer

__all__ = [
    "cached_attention_step", "quantize", "dequantize", "majority_vote", "dispatch", "calculator", "TOOLS",
    "time_decoding", "quantize_model", "model_nbytes", "train_char_gpt", "speculative_generate",
    "speculative_first_token", "CHARS", "reasoner_tokenizer", "format_problem", "multiplication_problems",
    "complete", "parse_answer", "verify_cot", "accuracy", "sample_answers", "tts_curves", "grpo_finetune",
    "react", "plot_tts", "PRETRAINED", "EXERCISES",
]


# ======================================================================== exercise 1: the KV-cache step
def cached_attention_step(q: torch.Tensor, k_new: torch.Tensor, v_new: torch.Tensor, k_cache: torch.Tensor,
                          v_cache: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """One decoding step of attention with a KV cache.

    q, k_new, v_new: (B, H, 1, d) — the newest token's query, key and value.
    k_cache, v_cache: (B, H, T, d) — the keys and values of the T tokens before it (T may be 0).
    Returns out (B, H, 1, d) = softmax(q Kᵀ / sqrt(d)) V over all T + 1 keys, and the grown caches
    k_all, v_all (B, H, T + 1, d) with the new key/value appended at the end (position T).
    No mask is needed: the newest token may look at everything before it and at itself.
    """
    k_all = torch.cat([k_cache, k_new], dim=2)  # append along the time axis
    v_all = torch.cat([v_cache, v_new], dim=2)
    scores = q @ k_all.transpose(-2, -1) / math.sqrt(q.size(-1))  # (B, H, 1, T + 1)
    return scores.softmax(-1) @ v_all, k_all, v_all


def _step_no_self(q, k_new, v_new, k_cache, v_cache):
    k_all, v_all = torch.cat([k_cache, k_new], 2), torch.cat([v_cache, v_new], 2)
    if k_cache.size(2) == 0:
        return torch.zeros_like(q), k_all, v_all
    out = (q @ k_cache.transpose(-2, -1) / math.sqrt(q.size(-1))).softmax(-1) @ v_cache
    return out, k_all, v_all


def _step_no_scale(q, k_new, v_new, k_cache, v_cache):
    k_all, v_all = torch.cat([k_cache, k_new], 2), torch.cat([v_cache, v_new], 2)
    return (q @ k_all.transpose(-2, -1)).softmax(-1) @ v_all, k_all, v_all


def _step_prepend(q, k_new, v_new, k_cache, v_cache):
    k_all, v_all = torch.cat([k_new, k_cache], 2), torch.cat([v_new, v_cache], 2)
    return (q @ k_all.transpose(-2, -1) / math.sqrt(q.size(-1))).softmax(-1) @ v_all, k_all, v_all


def _step_cases() -> list[Case]:
    g = torch.Generator().manual_seed(0)

    def r(*shape):
        return torch.randn(*shape, generator=g)

    return [
        Case((r(1, 1, 1, 4), r(1, 1, 1, 4), r(1, 1, 1, 4), r(1, 1, 3, 4), r(1, 1, 3, 4)), label="one head, T=3, d=4"),
        Case((r(2, 4, 1, 8), r(2, 4, 1, 8), r(2, 4, 1, 8), r(2, 4, 7, 8), r(2, 4, 7, 8)),
             label="B=2, H=4, T=7, d=8"),
        Case((r(1, 2, 1, 4), r(1, 2, 1, 4), r(1, 2, 1, 4), r(1, 2, 0, 4), r(1, 2, 0, 4)),
             label="empty cache (T=0): the first token attends only to itself"),
        Case((3 * r(1, 2, 1, 64), 3 * r(1, 2, 1, 64), r(1, 2, 1, 64), 3 * r(1, 2, 5, 64), r(1, 2, 5, 64)),
             label="d=64, large scores"),
    ]


# ==================================================================== exercise 2: weight quantization
def quantize(w: torch.Tensor, bits: int = 8, per_channel: bool = False) -> tuple[torch.Tensor, torch.Tensor]:
    """Symmetric absmax quantization of a weight matrix w (out, in).

    The integers live in [-qmax, qmax] with qmax = 2**(bits-1) - 1 (127 for int8, 7 for int4); the scale maps
    the largest |w| onto qmax. per_channel=False: one scale for the whole tensor, shape (1, 1);
    per_channel=True: one scale per output row, shape (out, 1). Returns q (out, in) int8 (int4 values are stored
    in an int8 container) and scale (float, broadcastable to w), so that w ≈ q * scale. An all-zero row must not
    divide by zero.
    """
    qmax = 2 ** (bits - 1) - 1
    absmax = w.abs().amax(dim=1, keepdim=True) if per_channel else w.abs().max().reshape(1, 1)
    scale = absmax.clamp_min(1e-12) / qmax  # a zero row gets a tiny scale and quantizes to zeros
    q = torch.round(w / scale).clamp(-qmax, qmax).to(torch.int8)
    return q, scale


def dequantize(q: torch.Tensor, scale: torch.Tensor) -> torch.Tensor:
    """Back to floats: q (out, in) int8 times scale (broadcastable). Returns (out, in) float32."""
    return q.float() * scale


def _quant_full_range(w, bits=8, per_channel=False):
    qmax = 2 ** (bits - 1)  # 128: the scale is too small and +max overflows
    absmax = w.abs().amax(dim=1, keepdim=True) if per_channel else w.abs().max().reshape(1, 1)
    scale = absmax.clamp_min(1e-12) / qmax
    return torch.round(w / scale).clamp(-qmax, qmax - 1).to(torch.int8), scale


def _quant_truncate(w, bits=8, per_channel=False):
    qmax = 2 ** (bits - 1) - 1
    absmax = w.abs().amax(dim=1, keepdim=True) if per_channel else w.abs().max().reshape(1, 1)
    scale = absmax.clamp_min(1e-12) / qmax
    return (w / scale).clamp(-qmax, qmax).to(torch.int8), scale  # .to(int8) truncates towards zero


def _quant_wrong_axis(w, bits=8, per_channel=False):
    qmax = 2 ** (bits - 1) - 1
    absmax = w.abs().amax(dim=0, keepdim=True) if per_channel else w.abs().max().reshape(1, 1)
    scale = absmax.clamp_min(1e-12) / qmax
    return torch.round(w / scale).clamp(-qmax, qmax).to(torch.int8), scale


def _quantize_cases() -> list[Case]:
    g = torch.Generator().manual_seed(0)
    w = torch.randn(6, 5, generator=g) * torch.tensor([0.1, 1.0, 3.0, 0.5, 0.01, 2.0])[:, None]
    zero_row = torch.randn(3, 4, generator=g)
    zero_row[1] = 0
    return [
        Case((torch.tensor([[0.5, -1.0], [0.25, 0.0]]),), label="2x2 by hand, int8 per tensor"),
        Case((w,), {"bits": 8, "per_channel": False}, label="rows of very different size, int8 per tensor"),
        Case((w,), {"bits": 8, "per_channel": True}, label="same, int8 per channel"),
        Case((w,), {"bits": 4, "per_channel": True}, label="int4 per channel"),
        Case((zero_row,), {"bits": 4, "per_channel": True}, label="an all-zero row (no division by zero)"),
    ]


# ============================================================================ exercise 3: majority vote
def majority_vote(answers: Sequence[str | None]) -> str | None:
    """Self-consistency: the most common answer among samples. ``None`` marks a sample that gave no answer and
    never wins; ties go to the answer that appeared first; no answers at all → None."""
    counts = collections.Counter(a for a in answers if a is not None)
    if not counts:
        return None
    best = max(counts.values())
    return next(a for a in answers if a is not None and counts[a] == best)  # first seen among the tied


def _vote_last_tie(answers):
    answers = list(answers)
    counts = collections.Counter(a for a in answers if a is not None)
    if not counts:
        return None
    return max(counts, key=lambda a: (counts[a], answers.index(a)))  # among ties: the one first seen latest


def _vote_first(answers):
    return next((a for a in answers if a is not None), None)


def _vote_cases() -> list[Case]:
    return [
        Case((["12", "13", "12"],), label="clear majority"),
        Case(([None, None, "5"],), label="failed samples never win"),
        Case((["3", "4", "4", "3"],), label="a tie: the first seen wins"),
        Case((["7"],), label="a single sample"),
        Case(([None, "2", "8", None, "8"],), label="failed samples mixed in"),
        Case((["9", "1", "1"],), label="majority is not the first sample"),
    ]


# ============================================================================= exercise 4: tool dispatch
def calculator(expression: str) -> str:
    """A safe calculator for ``a+b``, ``a-b``, ``a*b`` with non-negative integers (no ``eval``!)."""
    m = re.fullmatch(r"\s*(\d+)\s*([-+*])\s*(\d+)\s*", expression)
    if m is None:
        raise ValueError(f"cannot compute {expression!r}")
    a, op, b = int(m.group(1)), m.group(2), int(m.group(3))
    return str({"+": a + b, "-": a - b, "*": a * b}[op])


TOOLS: dict[str, Callable[[str], str]] = {"calc": calculator}


def dispatch(action: str, tools: dict[str, Callable[[str], str]]) -> str:
    """Run one agent action ``name(argument)`` and return the observation text.

    ``tools`` maps names to functions str -> str. Never raises: an action that is not ``name(argument)`` gives
    ``"error: malformed action"``, an unknown name ``"error: unknown tool <name>"``, a tool that raises
    ``"error: <its message>"`` — the agent reads the error and can try again, the loop does not crash.
    """
    m = re.fullmatch(r"(\w+)\((.*)\)", action.strip())
    if m is None:
        return "error: malformed action"
    name, argument = m.groups()
    if name not in tools:
        return f"error: unknown tool {name}"
    try:
        return str(tools[name](argument))
    except Exception as e:  # a tool failure is an observation, not a crash of the agent
        return f"error: {e}"


def _dispatch_no_unknown_check(action, tools):
    m = re.fullmatch(r"(\w+)\((.*)\)", action.strip())
    if m is None:
        return "error: malformed action"
    try:
        return str(tools.get(m.group(1), calculator)(m.group(2)))
    except Exception as e:
        return f"error: {e}"


def _dispatch_whole_action(action, tools):
    m = re.fullmatch(r"(\w+)\((.*)\)", action.strip())
    if m is None:
        return "error: malformed action"
    if m.group(1) not in tools:
        return f"error: unknown tool {m.group(1)}"
    try:
        return str(tools[m.group(1)](action))  # passes "calc(…)" instead of the argument
    except Exception as e:
        return f"error: {e}"


def _dispatch_swallow(action, tools):
    m = re.fullmatch(r"(\w+)\((.*)\)", action.strip())
    if m is None or m.group(1) not in tools:
        return ""
    try:
        return str(tools[m.group(1)](m.group(2)))
    except Exception:
        return ""


def _dispatch_cases() -> list[Case]:
    tools = {"calc": calculator, "echo": lambda s: s.upper()}
    return [
        Case(("calc(347*268)", tools), label="calc(347*268)"),
        Case(("echo(hi)", tools), label="a second tool"),
        Case(("calc(12+30)", {"calc": calculator}), label="addition"),
        Case(("search(cats)", tools), label="an unknown tool"),
        Case(("calc 3*4", tools), label="malformed: no parentheses"),
        Case(("calc(3/4)", tools), label="the tool raises"),
    ]


# ==================================================================================== KV cache timing
@torch.no_grad()
def time_decoding(model: GPT, length: int, n_new: int = 16, use_cache: bool = True, seed: int = 0) -> float:
    """Seconds to generate the last ``n_new`` tokens of a length-``length`` sequence (batch 1, greedy),
    including the prefill of the first ``length - n_new`` tokens. Returns seconds per generated token."""
    g = torch.Generator().manual_seed(seed)
    idx = torch.randint(model.config.vocab_size, (1, length - n_new), generator=g)
    t0 = time.perf_counter()
    model.generate(idx, n_new, top_k=1, use_cache=use_cache)
    return (time.perf_counter() - t0) / n_new


# ============================================================================== quantizing a whole GPT
def quantize_model(model: nn.Module, bits: int = 8, per_channel: bool = False,
                   quantizer: Callable[..., tuple[torch.Tensor, torch.Tensor]] = quantize) -> nn.Module:
    """A copy of ``model`` whose every 2-D weight (linear layers and embeddings) went through quantize →
    dequantize ("fake quantization": the stored integers and scales determine the weights exactly, we just
    compute in float). Biases and LayerNorms stay float — they are a tiny fraction of the bytes.
    ``quantizer(w, bits, per_channel) -> (q, scale)`` lets the notebook plug in the student's function."""
    qm = copy.deepcopy(model)
    with torch.no_grad():
        for p in qm.parameters():  # tied weights are one Parameter, quantized once
            if p.dim() == 2:
                p.copy_(dequantize(*quantizer(p, bits, per_channel)))
    return qm.eval()


def model_nbytes(model: nn.Module, bits: int = 32, per_channel: bool = False) -> int:
    """Storage of the model with 2-D weights at ``bits`` bits (plus one float32 scale per tensor or per row)
    and everything else in float32."""
    total = 0
    for p in model.parameters():
        if p.dim() == 2 and bits < 32:
            total += math.ceil(p.numel() * bits / 8) + 4 * (p.size(0) if per_channel else 1)
        else:
            total += 4 * p.numel()
    return total


# ========================================================================== a small char GPT (the draft)
def train_char_gpt(config: GPTConfig, tok: CharTokenizer, text: str, steps: int = 300, batch_size: int = 32,
                   lr: float = 3e-3, seed: int = 0) -> tuple[GPT, list[float]]:
    """Train a char GPT on ``text`` for a fixed number of steps (AdamW, cosine decay). Returns (model, losses)."""
    torch.manual_seed(seed)
    data = torch.tensor(tok.encode(text), dtype=torch.long)
    model = GPT(config)
    opt = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=0.0)
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, steps, eta_min=lr / 10)
    g = torch.Generator().manual_seed(seed)
    T, losses = config.block_size, []
    model.train()
    for _ in range(steps):
        starts = torch.randint(len(data) - T - 1, (batch_size,), generator=g)
        xb = torch.stack([data[s:s + T] for s in starts])
        yb = torch.stack([data[s + 1:s + T + 1] for s in starts])
        _, loss = model(xb, yb)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        sched.step()
        losses.append(loss.item())
    return model.eval(), losses


# ================================================================================ speculative decoding
@torch.no_grad()
def _next_probs(model: GPT, idx: torch.Tensor, temperature: float) -> torch.Tensor:
    """Next-token probabilities (V,) after the sequence idx (T,) — the context cropped to block_size."""
    logits, _ = model(idx[None, -model.config.block_size:])
    return F.softmax(logits[0, -1] / temperature, -1)


@torch.no_grad()
def speculative_generate(target: GPT, draft: GPT, idx: torch.Tensor, max_new_tokens: int, k: int = 4,
                         temperature: float | None = None, generator: torch.Generator | None = None
                         ) -> tuple[torch.Tensor, dict[str, float]]:
    """Speculative decoding (Leviathan et al. 2023; Chen et al. 2023) for one sequence idx (T,).

    The cheap draft proposes k tokens one by one; the target scores all of them in ONE forward pass; each
    proposal x is accepted with probability min(1, p(x) / q(x)) (p target, q draft); at the first rejection a
    token is drawn from the leftover max(p − q, 0) (renormalised) and the round ends; if all k pass, the target's
    own next token comes free. The output is distributed exactly as sampling from the target alone.
    temperature=None means greedy (accept while the draft agrees with the target's arg-max — identical output).
    Returns (idx with the new tokens, stats: accepted, proposed, target_calls, tokens).
    """
    greedy = temperature is None
    t = 1.0 if greedy else temperature
    stats = {"accepted": 0, "proposed": 0, "target_calls": 0, "tokens": 0}
    n_start = idx.numel()
    while idx.numel() - n_start < max_new_tokens:
        kk = min(k, max_new_tokens - (idx.numel() - n_start))
        # 1. the draft proposes kk tokens autoregressively (it is cheap)
        seq, q_list = idx.clone(), []
        for _ in range(kk):
            q = _next_probs(draft, seq, t)
            x = q.argmax() if greedy else torch.multinomial(q, 1, generator=generator)[0]
            q_list.append(q)
            seq = torch.cat([seq, x.view(1)])
        proposals = seq[idx.numel():]
        # 2. the target scores the context + all proposals in one pass: kk + 1 next-token distributions
        ctx = seq[-target.config.block_size:]
        logits, _ = target(ctx[None])
        p_all = F.softmax(logits[0, -(kk + 1):] / t, -1)  # p_all[i]: target's distribution for proposal i
        stats["target_calls"] += 1
        stats["proposed"] += kk
        new = []
        for i in range(kk):
            x, p, q = proposals[i], p_all[i], q_list[i]
            ok = (p.argmax() == x) if greedy else (torch.rand(1, generator=generator)[0] < (p[x] / q[x]).clamp(max=1))
            if ok:
                new.append(x)
                continue
            if greedy:  # the target's own choice replaces the first disagreement
                new.append(p.argmax())
            else:       # resample from what the draft under-proposed: max(p - q, 0)
                residual = (p - q).clamp(min=0)
                new.append(torch.multinomial(residual / residual.sum(), 1, generator=generator)[0])
            break
        else:  # every proposal accepted: the target's distribution after the last one is a free extra token
            p = p_all[kk]
            new.append(p.argmax() if greedy else torch.multinomial(p, 1, generator=generator)[0])
        stats["accepted"] += sum(1 for i in range(min(len(new), kk)) if bool(new[i] == proposals[i]))
        idx = torch.cat([idx, torch.stack(new)])
        stats["tokens"] += len(new)
    extra = idx.numel() - n_start - max_new_tokens
    if extra > 0:  # the free bonus token can overshoot by one
        idx, stats["tokens"] = idx[:-extra], stats["tokens"] - extra
    return idx, stats


def speculative_first_token(p: torch.Tensor, q: torch.Tensor, n: int, seed: int = 0) -> torch.Tensor:
    """The accept/resample rule for ONE proposal, run n times in parallel: the draft samples x ~ q, keeps it with
    probability min(1, p(x)/q(x)), otherwise a token is drawn from max(p − q, 0) normalised. p, q: (V,).
    Returns the n emitted tokens (n,) — their histogram should match p, not q."""
    g = torch.Generator().manual_seed(seed)
    x = torch.multinomial(q, n, replacement=True, generator=g)
    keep = torch.rand(n, generator=g) < (p[x] / q[x]).clamp(max=1)
    residual = (p - q).clamp(min=0)
    y = torch.multinomial(residual / residual.sum(), n, replacement=True, generator=g)
    return torch.where(keep, x, y)


# ======================================================================== the arithmetic reasoner's data
# Four formats, chosen by the first character of the prompt (all operands zero-padded to 3 digits):
#   A  direct addition        A042+317=  → 0359$
#   C  chain of thought       C042+317=  → 2+7+0=09,4+1+0=05,0+3+0=03;0359$   (digit, digit, carry-in = carry,digit)
#   M  direct multiplication  M347*268=  → 092996$
#   T  ReAct with a tool      T347*268=  → think:mul;act:calc(347*268);  [loop adds obs:92996;]  ans:092996$
CHARS = "$0123456789+-*=,;:()'. ACMTabcdefghijklmnopqrstuvwxyz"
END = "$"


def reasoner_tokenizer() -> CharTokenizer:
    """The reasoner's character vocabulary (digits, operators, punctuation, format letters, lowercase)."""
    return CharTokenizer(list(CHARS))


def multiplication_problems(n: int, n_digits: int = 3, seed: int = 0) -> list[tuple[str, str]]:
    """``n`` products of zero-padded operands: ("347*268=", "092996"); the answer has 2·n_digits digits."""
    rng = np.random.default_rng(seed)
    a, b = rng.integers(0, 10 ** n_digits, (2, n))
    return [(f"{x:0{n_digits}d}*{y:0{n_digits}d}=", f"{x * y:0{2 * n_digits}d}") for x, y in zip(a, b)]


def cot_steps(question: str) -> str:
    """The worked steps for an addition "042+317=": one step per digit from the right, "a+b+carry=cd"
    (c = the carry out, d = the digit written), then ";" and the zero-padded answer."""
    a, b = question.rstrip("=").split("+")
    carry, steps, digits = 0, [], []
    for da, db in zip(reversed(a), reversed(b)):
        s = int(da) + int(db) + carry
        steps.append(f"{da}+{db}+{carry}={s // 10}{s % 10}")
        digits.append(str(s % 10))
        carry = s // 10
    return ",".join(steps) + ";" + str(carry) + "".join(reversed(digits))


def format_problem(fmt: str, question: str, answer: str) -> tuple[str, str, list[tuple[int, int]]]:
    """(prompt, full text, spans) for one problem in format ``fmt`` (A, C, M or T). spans: (start, end) character
    ranges of the full text that the *environment* writes (tool observations) — no loss is taken on them."""
    prompt = fmt + question
    if fmt in "AM":
        return prompt, prompt + answer + END, []
    if fmt == "C":
        return prompt, prompt + cot_steps(question) + END, []
    if fmt == "T":
        expr = question.rstrip("=")
        head = prompt + f"think:{'mul' if '*' in expr else 'add'};act:calc({expr});"
        obs = f"obs:{calculator(expr)};"
        return prompt, head + obs + f"ans:{answer}{END}", [(len(head), len(head) + len(obs))]
    raise ValueError(f"unknown format {fmt!r}; use A, C, M or T")


def _training_text(rng: np.random.Generator) -> tuple[str, str, list[tuple[int, int]]]:
    fmt = rng.choice(list("ACMT"), p=[0.25, 0.3, 0.15, 0.3])
    x, y = (int(v) for v in rng.integers(0, 1000, 2))
    if fmt in "AC" or (fmt == "T" and rng.random() < 0.3):
        q, a = f"{x:03d}+{y:03d}=", f"{x + y:04d}"
    else:
        q, a = f"{x:03d}*{y:03d}=", f"{x * y:06d}"
    return format_problem(fmt, q, a)


def reasoner_batch(tok: CharTokenizer, batch_size: int, block_size: int, rng: np.random.Generator
                   ) -> tuple[torch.Tensor, torch.Tensor]:
    """A batch of random problems in random formats, padded with END: x, y (B, block_size); y = -1 on the
    prompt, on tool observations and after the end, so the loss is only on what the model itself must write."""
    x = torch.full((batch_size, block_size), tok.stoi[END], dtype=torch.long)
    y = torch.full((batch_size, block_size), -1, dtype=torch.long)
    for i in range(batch_size):
        prompt, text, spans = _training_text(rng)
        ids = torch.tensor(tok.encode(text))
        n = min(len(ids), block_size + 1)
        x[i, :n - 1] = ids[:n - 1]
        target = ids[1:n].clone()
        target[:len(prompt) - 1] = -1
        for s, e in spans:
            target[s - 1:e - 1] = -1
        y[i, :n - 1] = target
    return x, y


# ================================================================================== generation helpers
@torch.no_grad()
def complete(model: GPT, tok: CharTokenizer, prompts: Sequence[str], max_new_tokens: int = 48,
             temperature: float = 0.0, generator: torch.Generator | None = None, stop: str = END,
             batch_size: int = 512) -> list[str]:
    """Continue each prompt (all the same length) until ``stop`` or max_new_tokens, batched, with a KV cache.
    temperature 0 = greedy. Returns the completions (without the prompt, cut after the first ``stop``)."""
    model.eval()
    outs: list[str] = []
    for b0 in range(0, len(prompts), batch_size):
        chunk = prompts[b0:b0 + batch_size]
        idx = torch.tensor([tok.encode(p) for p in chunk])
        n_new = min(max_new_tokens, model.config.block_size - idx.size(1))
        cache = KVCache(model.config, len(chunk), max_len=idx.size(1) + n_new)
        logits, _ = model(idx, cache=cache)
        new = []
        done = torch.zeros(len(chunk), dtype=torch.bool)
        for step in range(n_new):
            last = logits[:, -1]
            if temperature == 0:
                nxt = last.argmax(-1)
            else:
                nxt = torch.multinomial(F.softmax(last / temperature, -1), 1, generator=generator)[:, 0]
            new.append(nxt)
            done |= nxt == tok.stoi[stop]
            if done.all() or step == n_new - 1:
                break
            logits, _ = model(nxt[:, None], cache=cache)
        text = [tok.decode(row) for row in torch.stack(new, 1).tolist()]
        outs += [t[:t.index(stop) + 1] if stop in t else t for t in text]
    return outs


def parse_answer(completion: str) -> str | None:
    """The final answer of a completion: the digits after the last ';' (CoT), after 'ans:' (agent) or the whole
    completion (direct), ending at END. None if the completion never finished or is not a number."""
    if not completion.endswith(END):
        return None
    body = completion[:-1]
    if "ans:" in body:
        body = body.rsplit("ans:", 1)[1]
    elif ";" in body:
        body = body.rsplit(";", 1)[1]
    return body if body.isdigit() else None


def verify_cot(question: str, completion: str) -> bool:
    """A rule-based *process* verifier: recompute every written step of an addition CoT.

    Checks that there is one step per digit, that each step reads the right digits of the operands and the
    carry from the step before, that its sum is right, and that the final answer is the carry + written digits.
    """
    a, b = question.rstrip("=").split("+")
    if not completion.endswith(END) or ";" not in completion:
        return False
    steps_text, answer = completion[:-1].rsplit(";", 1)
    steps = steps_text.split(",")
    if len(steps) != len(a):
        return False
    carry, digits = 0, []
    for step, da, db in zip(steps, reversed(a), reversed(b)):
        m = re.fullmatch(r"(\d)\+(\d)\+(\d)=(\d)(\d)", step)
        if m is None or m.group(1) != da or m.group(2) != db or int(m.group(3)) != carry:
            return False
        s = int(da) + int(db) + carry
        if int(m.group(4)) != s // 10 or int(m.group(5)) != s % 10:
            return False
        carry = s // 10
        digits.append(m.group(5))
    return answer == str(carry) + "".join(reversed(digits))


def accuracy(completions: Sequence[str], answers: Sequence[str]) -> float:
    """Fraction of completions whose parsed answer equals the reference answer."""
    return float(np.mean([parse_answer(c) == a for c, a in zip(completions, answers)]))


# ============================================================================== test-time compute curves
def sample_answers(model: GPT, tok: CharTokenizer, problems: Sequence[tuple[str, str]], n: int,
                   temperature: float = 1.0, seed: int = 0) -> tuple[list[list[str | None]], list[list[bool]]]:
    """n sampled CoT completions per problem. Returns answers[i][j] (parsed, None if unfinished) and
    verified[i][j] (the process verifier's verdict)."""
    g = torch.Generator().manual_seed(seed)
    prompts = [("C" + q) for q, _ in problems for _ in range(n)]
    comps = complete(model, tok, prompts, temperature=temperature, generator=g)
    answers = [[parse_answer(c) for c in comps[i * n:(i + 1) * n]] for i in range(len(problems))]
    verified = [[verify_cot(q, c) for c in comps[i * n:(i + 1) * n]] for i, (q, _) in enumerate(problems)]
    return answers, verified


def tts_curves(answers: list[list[str | None]], verified: list[list[bool]], truth: Sequence[str],
               ns: Sequence[int], vote: Callable[[Sequence[str | None]], str | None] = majority_vote
               ) -> dict[str, list[float]]:
    """Accuracy vs number of samples N (using the first N samples of each problem) for
    ``majority`` (self-consistency) and ``verifier`` (best-of-N: the first sample the verifier accepts, else the
    majority answer)."""
    out: dict[str, list[float]] = {"majority": [], "verifier": []}
    for n in ns:
        maj, ver = [], []
        for ans, ok, t in zip(answers, verified, truth):
            m = vote(ans[:n])
            maj.append(m == t)
            chosen = next((a for a, v in zip(ans[:n], ok[:n]) if v), m)
            ver.append(chosen == t)
        out["majority"].append(float(np.mean(maj)))
        out["verifier"].append(float(np.mean(ver)))
    return out


def plot_tts(curves: dict[str, list[float]], ns: Sequence[int], n: int, greedy: float | None = None) -> plt.Figure:
    """The widget's figure: accuracy vs number of samples, with the chosen N highlighted."""
    fig, ax = plt.subplots(figsize=(6.5, 3.8))
    for name, style in [("majority", "o-"), ("verifier", "s-")]:
        label = {"majority": "self-consistency (majority vote)", "verifier": "best-of-N with process verifier"}
        ax.plot(ns, curves[name], style, label=label[name])
    if greedy is not None:
        ax.axhline(greedy, color="gray", ls="--", label=f"greedy CoT ({greedy:.0%})")
    i = min(range(len(ns)), key=lambda j: abs(ns[j] - n))
    ax.axvline(ns[i], color="red", alpha=0.4)
    ax.set_title(f"N = {ns[i]}: majority {curves['majority'][i]:.0%}, verifier {curves['verifier'][i]:.0%}")
    ax.set_xscale("log", base=2)
    ax.set_xticks(list(ns), [str(k) for k in ns])
    ax.minorticks_off()
    ax.set_xlabel("samples per problem N (inference compute)")
    ax.set_ylabel("accuracy")
    ax.legend(loc="best", fontsize=8)
    fig.tight_layout()
    return fig


# =========================================================================================== GRPO
def _completion_logprob(model: GPT, tok: CharTokenizer, prompts: Sequence[str], comps: Sequence[str]
                        ) -> torch.Tensor:
    """Sum of log-probabilities of each completion given its prompt, (N,), with gradients."""
    texts = [p + c for p, c in zip(prompts, comps)]
    L = max(len(t) for t in texts)
    idx = torch.full((len(texts), L), tok.stoi[END], dtype=torch.long)
    mask = torch.zeros(len(texts), L - 1)
    for i, (p, t) in enumerate(zip(prompts, texts)):
        idx[i, :len(t)] = torch.tensor(tok.encode(t))
        mask[i, len(p) - 1:len(t) - 1] = 1  # positions that predict completion tokens
    logits, _ = model(idx[:, :-1])
    logp = F.log_softmax(logits, -1).gather(-1, idx[:, 1:, None])[..., 0]
    return (logp * mask).sum(1)


def grpo_finetune(model: GPT, tok: CharTokenizer, steps: int = 15, n_problems: int = 16, group: int = 8,
                  lr: float = 1e-4, temperature: float = 1.0, seed: int = 0,
                  advantage: Callable[[torch.Tensor], torch.Tensor] | None = None) -> tuple[GPT, list[float]]:
    """GRPO-style fine-tuning (Shao et al. 2024) of a copy of ``model`` on CoT addition with a 0/1 correctness
    reward: for each problem sample a group of completions, advantage = reward standardised within the group,
    loss = −mean(advantage · log π(completion)). No critic, no KL term (few small steps). Returns
    (fine-tuned copy, mean reward per step)."""
    if advantage is None:
        def advantage(r):  # r: (problems, group)
            return (r - r.mean(1, keepdim=True)) / (r.std(1, keepdim=True) + 1e-4)
    policy = copy.deepcopy(model)
    opt = torch.optim.Adam(policy.parameters(), lr=lr)
    g = torch.Generator().manual_seed(seed)
    rewards = []
    for step in range(steps):
        problems = utils.data.addition_problems(n_problems, 3, seed=10_000 + seed * 1000 + step)
        prompts = ["C" + q for q, _ in problems for _ in range(group)]
        comps = complete(policy, tok, prompts, temperature=temperature, generator=g)
        r = torch.tensor([float(parse_answer(c) == a) for c, (_, a) in zip(comps, [p for p in problems
                                                                                   for _ in range(group)])])
        rewards.append(r.mean().item())
        adv = advantage(r.view(n_problems, group)).flatten()
        policy.train()
        loss = -(adv * _completion_logprob(policy, tok, prompts, comps)).mean()
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        policy.eval()
    return policy, rewards


# =========================================================================================== ReAct
@torch.no_grad()
def react(model: GPT, tok: CharTokenizer, question: str, tools: dict[str, Callable[[str], str]] = TOOLS,
          dispatch_fn: Callable[[str, dict], str] = dispatch, max_steps: int = 4, max_tokens: int = 40,
          policy: Callable[[str], str] | None = None) -> tuple[str | None, str]:
    """A ReAct loop (Yao et al. 2023): the model writes a thought and an action ``act:name(arg);``, the loop runs
    the tool and appends ``obs:<result>;``, until the model writes ``ans:<answer>$``.

    Guards: at most ``max_steps`` actions and ``max_tokens`` per model turn; a malformed or unknown action comes
    back as an ``error: ...`` observation. ``policy(text) -> next chunk`` replaces the model (to test the guards).
    Returns (answer or None, the full trace).
    """
    text = "T" + question
    for _ in range(max_steps):
        chunk = policy(text) if policy is not None else _generate_until(model, tok, text, (";", END), max_tokens)
        text += chunk
        if chunk.endswith(END) or "ans:" in chunk:
            return parse_answer(chunk[chunk.find("ans:"):] if "ans:" in chunk else chunk), text
        if chunk.startswith("act:"):
            observation = dispatch_fn(chunk[len("act:"):].rstrip(";"), tools)
            text += "obs:" + "".join(c for c in observation if c in CHARS and c != END) + ";"
        elif not chunk.endswith(";"):
            return None, text + "  [stopped: turn too long]"
    return None, text + "  [stopped: step limit]"


@torch.no_grad()
def _generate_until(model: GPT, tok: CharTokenizer, text: str, stops: tuple[str, ...], max_tokens: int) -> str:
    """Greedy continuation of text until one of ``stops`` (inclusive) or max_tokens characters."""
    idx = torch.tensor([tok.encode(text)])
    out = ""
    for _ in range(max_tokens):
        if idx.size(1) >= model.config.block_size:
            break
        logits, _ = model(idx)
        nxt = int(logits[0, -1].argmax())
        out += tok.chars[nxt]
        idx = torch.cat([idx, torch.tensor([[nxt]])], 1)
        if out[-1] in stops:
            break
    return out


# ================================================================================ the reasoner checkpoint
def _reasoner_recipe() -> dict[str, Any]:
    return {
        "kind": "arith_reasoner",
        "formats": "A direct add, C chain-of-thought add, M direct mul, T ReAct calc tool; operands 000-999",
        "config": dict(block_size=64, n_layer=3, n_head=4, n_embd=96, dropout=0.0, bias=True, tie_weights=True),
        "train": dict(steps=2000, batch_size=32, lr=3e-3, min_lr=1e-4, warmup=100, weight_decay=0.1,
                      grad_clip=1.0, seed=0),
    }


def _train_reasoner(recipe: dict[str, Any], steps: int, log: Callable[[str], None]) -> tuple[Any, dict]:
    t = recipe["train"]
    torch.manual_seed(t["seed"])
    tok = reasoner_tokenizer()
    config = GPTConfig(vocab_size=tok.vocab_size, **recipe["config"])
    model = GPT(config)
    rng = np.random.default_rng(t["seed"])
    next_batch = lambda step: reasoner_batch(tok, t["batch_size"], config.block_size, rng)  # noqa: E731
    utils.pretrained.train_gpt(model, next_batch, **{**t, "steps": steps}, log=log, log_every=250)
    payload = {"state_dict": model.state_dict(), "config": asdict(config), "chars": tok.chars}
    return payload, _reasoner_metrics((model, tok))


def _reasoner_metrics(m: tuple[GPT, CharTokenizer], n: int = 300) -> dict[str, float]:
    """Greedy accuracy of each format on held-out problems (seed 1)."""
    model, tok = m
    add = utils.data.addition_problems(n, 3, seed=1)
    mul = multiplication_problems(n, 3, seed=1)
    out = {}
    for fmt, probs in [("A", add), ("C", add), ("M", mul)]:
        out[f"val_{fmt}_accuracy"] = accuracy(complete(model, tok, [fmt + q for q, _ in probs]), [a for _, a in probs])
    return out


PRETRAINED = {"arith_reasoner": utils.pretrained.Spec(recipe=_reasoner_recipe, train=_train_reasoner,
                                                      load=utils.pretrained.load_char_gpt, evaluate=_reasoner_metrics)}


# ================================================================================================= registry
EXERCISES = [
    Exercise(
        name="cached_attention_step",
        reference=cached_attention_step,
        cases=_step_cases,
        mistakes={"attends only to the cached keys, not to the new token's own key": _step_no_self,
                  "forgot the 1/sqrt(d) scale": _step_no_scale,
                  "put the new key/value at the front of the cache instead of the end": _step_prepend},
        hint="Concatenate k_new after k_cache along dim 2 (time) first, then ordinary attention of the one query "
             "over all T + 1 keys: softmax(q @ k_all.transpose(-2, -1) / sqrt(d)) @ v_all.",
        atol=1e-5,
    ),
    Exercise(
        name="quantize",
        reference=quantize,
        cases=_quantize_cases,
        mistakes={"used 2**(bits-1) = 128 levels instead of 127 (asymmetric range, scale too small)":
                  _quant_full_range,
                  "truncated with .to(int8) instead of rounding": _quant_truncate,
                  "per-channel scale over the input columns (dim 0) instead of the output rows": _quant_wrong_axis},
        hint="qmax = 2**(bits-1) - 1; absmax over dim=1 with keepdim=True per channel (else over everything, "
             "shape (1, 1)); scale = absmax.clamp_min(1e-12) / qmax; q = round(w / scale).clamp(-qmax, qmax).",
    ),
    Exercise(
        name="majority_vote",
        reference=majority_vote,
        cases=_vote_cases,
        mistakes={"broke ties in favour of the answer seen last": _vote_last_tie,
                  "returned the first answer instead of the most common": _vote_first},
        hint="collections.Counter over the answers that are not None; among those with the highest count "
             "return the one that appears first in the list.",
    ),
    Exercise(
        name="dispatch",
        reference=dispatch,
        cases=_dispatch_cases,
        mistakes={"did not check that the tool exists (fell back to the calculator)": _dispatch_no_unknown_check,
                  "passed the whole action 'calc(...)' to the tool instead of its argument": _dispatch_whole_action,
                  "swallowed errors into an empty observation (the agent cannot see what went wrong)":
                  _dispatch_swallow},
        hint="re.fullmatch(r'(\\w+)\\((.*)\\)', action) gives name and argument; return 'error: malformed action' "
             "if it does not match, f'error: unknown tool {name}' if name not in tools, and wrap the call in "
             "try/except Exception as e → f'error: {e}'.",
    ),
]
