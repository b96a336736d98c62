"""Lecture 16 — alignment: from a pretrained tiny GPT to an assistant.

The task the course aligns the model to: **reverse a short word** (``"rev cat:"`` → ``" tac."``). The base model
is Lecture 13's char GPT (``utils.pretrained("char_english")``), which has read English but never seen the task.

Reference solutions and the exercise registry (COURSE_DESIGN §2):

* ``sft_loss``: next-token cross-entropy averaged over the *response* tokens only (the prompt is given, not learned);
* ``LoRALinear``: a frozen ``nn.Linear`` plus a trainable low-rank update ``(α/r)·B·A``, ``merge()`` folds it back;
* ``bradley_terry_loss``: the reward model's loss on preference pairs, ``-log σ(r_chosen - r_rejected)``;
* ``dpo_loss``: Direct Preference Optimisation from policy and reference log-probs of chosen/rejected responses;
* ``group_relative_advantages``: GRPO's per-group normalised rewards (no value model).

Beyond the exercises: the task data (``reversal_words``, ``make_prompt``, ``encode_sft_batch``, ``preference_pairs``),
log-probs of responses (``token_logprobs``, ``sequence_logprobs``), sampling with a KV cache and grading
(``sample_responses``, ``reversal_accuracy``, ``sampled_accuracy``), the training loops
(``train_sft``, ``train_reward_model``, ``train_rlhf``, ``train_dpo``, ``train_grpo``, ``distill``), the
critique-and-revise rule checker (``critique``, ``revise``) and the widget's figure (``plot_kl_tradeoff``).
"""
from __future__ import annotations

import copy
import math
import re
import time
from typing import Callable, Sequence

import matplotlib.pyplot as plt
import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F

from utils.data import text_corpus
from utils.exercises import Case, Exercise, ExerciseError
from utils.gpt import GPT, GPTConfig

__all__ = [
    "PROMPT_WIDTH", "MAX_NEW", "LETTERS", "reversal_words", "make_prompt", "make_response", "encode_prompts",
    "encode_sft_batch", "sft_loss", "token_logprobs", "sequence_logprobs", "sample_responses",
    "decode_responses",
    "reversal_accuracy", "sampled_accuracy", "is_correct", "response_mask",
    "CONSTITUTION", "train_sft", "LoRALinear", "add_lora", "merge_lora", "count_trainable",
    "corrupt", "preference_pairs", "encode_pairs", "BagRewardModel", "bag_features", "bradley_terry_loss",
    "train_reward_model", "reward_scores", "train_rlhf", "smooth", "dpo_loss", "pair_logprobs", "train_dpo",
    "group_relative_advantages", "train_grpo", "critique", "revise", "distill", "distill_loss",
    "plot_kl_tradeoff", "kl_tradeoff", "Timer", "EXERCISES",
]

PROMPT_WIDTH = 10        # prompts are left-padded with spaces to this width, so a batch needs no attention mask
MAX_NEW = 8              # tokens sampled per response: " " + up to 5 letters + "." fits with one to spare
LETTERS = "abcdefghijklmnopqrstuvwxyz"


class Timer:
    """``with Timer("SFT"):`` prints how long a section took (the lecture has a budget of ~90 s)."""

    def __init__(self, name: str):
        self.name = name

    def __enter__(self) -> Timer:
        self.t0 = time.perf_counter()
        return self

    def __exit__(self, *exc: object) -> None:
        self.seconds = time.perf_counter() - self.t0
        print(f"[{self.name}: {self.seconds:.1f} s]")


# ------------------------------------------------------------------------------------------------- the task
def reversal_words(n_train: int = 200, n_test: int = 100, seed: int = 0) -> tuple[list[str], list[str]]:
    """Distinct lower-case words of 3–5 letters from the built-in English text, shuffled with ``seed`` and split
    into disjoint train and test lists (test words are never seen in fine-tuning: we measure generalisation)."""
    words = sorted(set(re.findall(r"\b[a-z]{3,5}\b", text_corpus("english", "all"))))
    if n_train + n_test > len(words):
        raise ValueError(f"only {len(words)} distinct words available, asked for {n_train + n_test}")
    g = torch.Generator().manual_seed(seed)
    order = torch.randperm(len(words), generator=g).tolist()
    chosen = [words[i] for i in order[: n_train + n_test]]
    return chosen[:n_train], chosen[n_train:]


def make_prompt(word: str) -> str:
    """The instruction template: ``"rev cat:"`` left-padded with spaces to ``PROMPT_WIDTH`` characters."""
    prompt = f"rev {word}:"
    if len(prompt) > PROMPT_WIDTH:
        raise ValueError(f"word {word!r} too long for the prompt width {PROMPT_WIDTH}")
    return prompt.rjust(PROMPT_WIDTH)


def make_response(word: str) -> str:
    """The ideal answer: a space, the reversed word, and "." as the end-of-answer marker."""
    return f" {word[::-1]}."


def encode_prompts(tok, words: Sequence[str]) -> torch.Tensor:
    """Prompts for ``words`` as token ids (B, PROMPT_WIDTH)."""
    return torch.tensor([tok.encode(make_prompt(w)) for w in words], dtype=torch.long)


def encode_sft_batch(tok, prompts: Sequence[str], responses: Sequence[str]
                     ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Concatenate prompt + response, right-pad with "." to a common length and shift by one.

    Returns x (B, T), y (B, T) with y[:, t] the token after x[:, :t+1], and mask (B, T) float: 1 where y is a
    response token (the answer, including its final "."), 0 on prompt and padding positions.
    """
    seqs = [tok.encode(p + r) for p, r in zip(prompts, responses)]
    T = max(len(s) for s in seqs) - 1
    pad = tok.encode(".")[0]
    x = torch.full((len(seqs), T), pad, dtype=torch.long)
    y = torch.full((len(seqs), T), pad, dtype=torch.long)
    mask = torch.zeros(len(seqs), T)
    for i, (s, p) in enumerate(zip(seqs, prompts)):
        s = torch.tensor(s)
        x[i, : len(s) - 1] = s[:-1]
        y[i, : len(s) - 1] = s[1:]
        mask[i, len(p) - 1: len(s) - 1] = 1.0  # y[len(p)-1] is the first response token
    return x, y, mask


# ------------------------------------------------------------------------------- exercise 1: masked SFT loss
def sft_loss(logits: torch.Tensor, targets: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Response-masked cross-entropy. logits (B, T, V), targets (B, T) int64, mask (B, T) in {0, 1}.

    Returns the scalar mean of -log p(target) over the positions where mask = 1 — every response *token* counts
    once, so a long answer weighs more than a short one (as in nanoGPT-style SFT code).
    """
    nll = F.cross_entropy(logits.flatten(0, 1), targets.flatten(), reduction="none").view_as(targets.float())
    return (nll * mask).sum() / mask.sum().clamp(min=1)


def _sft_all_tokens(logits, targets, mask):
    return F.cross_entropy(logits.flatten(0, 1), targets.flatten())


def _sft_sum(logits, targets, mask):
    nll = F.cross_entropy(logits.flatten(0, 1), targets.flatten(), reduction="none").view_as(targets.float())
    return (nll * mask).sum()


def _sft_per_sequence(logits, targets, mask):
    nll = F.cross_entropy(logits.flatten(0, 1), targets.flatten(), reduction="none").view_as(targets.float())
    return ((nll * mask).sum(1) / mask.sum(1).clamp(min=1)).mean()


def _sft_divide_by_all(logits, targets, mask):
    nll = F.cross_entropy(logits.flatten(0, 1), targets.flatten(), reduction="none").view_as(targets.float())
    return (nll * mask).sum() / mask.numel()


def _sft_cases() -> list[Case]:
    g = torch.Generator().manual_seed(0)
    logits = torch.randn(3, 6, 7, generator=g)
    targets = torch.randint(0, 7, (3, 6), generator=g)
    mask = torch.tensor([[0, 0, 1, 1, 1, 1], [0, 0, 0, 1, 1, 0], [0, 1, 0, 0, 0, 0]], dtype=torch.float)
    single = torch.tensor([[0, 0, 0, 0, 0, 1.0]])
    return [Case((logits, targets, mask), label="B=3, T=6, V=7, answers of different lengths"),
            Case((logits[:1] * 3, targets[:1], single), label="one sequence, only its last token is the answer"),
            Case((torch.randn(2, 4, 5, generator=g), torch.randint(0, 5, (2, 4), generator=g),
                  torch.tensor([[0, 1, 1, 1], [1, 1, 1, 0.0]])), label="B=2, T=4, V=5")]


# ------------------------------------------------------------------------------ log-probs, sampling, grading
def token_logprobs(model: nn.Module, prompt_ids: torch.Tensor, response_ids: torch.Tensor) -> torch.Tensor:
    """log p(response_ids[:, t] | prompt, response[:, :t]) for every response position.

    prompt_ids (B, P), response_ids (B, R) → (B, R). One forward pass over the concatenation (B, P + R - 1)."""
    x = torch.cat([prompt_ids, response_ids], dim=1)[:, :-1]
    logits, _ = model(x)
    logp = logits[:, prompt_ids.size(1) - 1:].log_softmax(-1)  # (B, R, V): the positions that predict the response
    return logp.gather(-1, response_ids.unsqueeze(-1)).squeeze(-1)


def sequence_logprobs(model: nn.Module, prompt_ids: torch.Tensor, response_ids: torch.Tensor,
                      mask: torch.Tensor) -> torch.Tensor:
    """log π(response | prompt) = sum of the token log-probs where mask (B, R) = 1. Returns (B,)."""
    return (token_logprobs(model, prompt_ids, response_ids) * mask).sum(1)


def response_mask(response_ids: torch.Tensor, stop_id: int) -> torch.Tensor:
    """(B, R) float mask: 1 up to and including the first ``stop_id`` of each row (everything if none)."""
    is_stop = (response_ids == stop_id).long()
    before = is_stop.cumsum(1) - is_stop  # how many stops came strictly before position t
    return (before == 0).float()


@torch.no_grad()
def sample_responses(model: GPT, prompt_ids: torch.Tensor, tok, greedy: bool = False,
                     generator: torch.Generator | None = None, max_new: int = MAX_NEW
                     ) -> tuple[torch.Tensor, torch.Tensor]:
    """Sample (temperature 1) or greedily decode ``max_new`` tokens after prompt_ids (B, P).

    Returns response ids (B, max_new) and their mask (B, max_new): the answer ends at the first "."."""
    # the KV cache (Lecture 23) makes each new token cost one position: plumbing that keeps the RL loops in budget
    out = model.generate(prompt_ids, max_new, top_k=1 if greedy else None, generator=generator, use_cache=True)
    resp = out[:, prompt_ids.size(1):]
    return resp, response_mask(resp, tok.encode(".")[0])


def decode_responses(tok, response_ids: torch.Tensor, mask: torch.Tensor) -> list[str]:
    """The answers as strings (up to and including the first ".")."""
    return [tok.decode(r[m.bool()].tolist()) for r, m in zip(response_ids, mask)]


def is_correct(word: str, response: str) -> bool:
    """The verifiable ground truth: exactly the reversed word, in the template."""
    return response == make_response(word)


@torch.no_grad()
def reversal_accuracy(model: GPT, tok, words: Sequence[str], batch_size: int = 128) -> float:
    """Fraction of ``words`` the model reverses exactly with greedy decoding."""
    hits = 0
    for i in range(0, len(words), batch_size):
        chunk = list(words[i:i + batch_size])
        resp, mask = sample_responses(model, encode_prompts(tok, chunk), tok, greedy=True)
        hits += sum(is_correct(w, r) for w, r in zip(chunk, decode_responses(tok, resp, mask)))
    return hits / len(words)


@torch.no_grad()
def sampled_accuracy(model: GPT, tok, words: Sequence[str], samples: int = 4, seed: int = 0) -> float:
    """Fraction of answers sampled at temperature 1 (``samples`` per word) that are exactly right — what a policy
    gradient method actually optimises (greedy decoding only sees the single most likely answer)."""
    g = torch.Generator().manual_seed(seed)
    batch = [w for w in words for _ in range(samples)]
    resp, mask = sample_responses(model, encode_prompts(tok, batch), tok, generator=g)
    return float(np.mean([is_correct(w, r) for w, r in zip(batch, decode_responses(tok, resp, mask))]))


def _adamw(params, lr: float) -> torch.optim.Optimizer:
    """AdamW without weight decay over the trainable parameters (or over given parameter groups)."""
    params = list(params)
    if params and isinstance(params[0], dict):
        return torch.optim.AdamW(params, lr=lr, weight_decay=0.0, betas=(0.9, 0.95))
    return torch.optim.AdamW([p for p in params if p.requires_grad], lr=lr, weight_decay=0.0, betas=(0.9, 0.95))


def train_sft(model: GPT, tok, train_words: Sequence[str], eval_words: Sequence[str], steps: int = 200,
              batch_size: int = 32, lr: float = 1e-3, eval_every: int = 25, stop_at: float | None = None,
              loss_fn: Callable = sft_loss, seed: int = 0, params: Sequence[nn.Parameter] | None = None
              ) -> dict[str, list[float]]:
    """Supervised fine-tuning on (prompt, ideal response) pairs with the response-masked loss.

    Every ``eval_every`` steps the greedy accuracy on ``eval_words`` is measured; with ``stop_at`` training stops
    at the first evaluation that reaches it (the checkpoint is chosen by accuracy, not by a step count). Only
    ``params`` (default: all trainable parameters) are updated. Returns {"loss", "eval_step", "accuracy"}."""
    g = torch.Generator().manual_seed(seed)
    opt = _adamw(params if params is not None else model.parameters(), lr)
    hist: dict[str, list[float]] = {"loss": [], "eval_step": [], "accuracy": []}
    for step in range(1, steps + 1):
        idx = torch.randint(len(train_words), (batch_size,), generator=g).tolist()
        words = [train_words[i] for i in idx]
        x, y, mask = encode_sft_batch(tok, [make_prompt(w) for w in words], [make_response(w) for w in words])
        model.train()
        logits, _ = model(x)
        loss = loss_fn(logits, y, mask)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        hist["loss"].append(loss.item())
        if step % eval_every == 0 or step == steps:
            acc = reversal_accuracy(model, tok, eval_words)
            hist["eval_step"].append(step)
            hist["accuracy"].append(acc)
            if stop_at is not None and acc >= stop_at:
                break
    model.eval()
    return hist


# ------------------------------------------------------------------------------------------ exercise 2: LoRA
class LoRALinear(nn.Module):
    """y = base(x) + (α/r) · x Aᵀ Bᵀ with the base layer frozen. x (..., in) → (..., out).

    A (r, in) starts random (Kaiming-uniform, like nn.Linear), B (out, r) starts at zero, so at initialisation the
    layer is exactly the pretrained one and fine-tuning starts from the base model. α/r keeps the size of the update
    roughly independent of the rank r (LoRA, Hu et al. 2021). ``merge()`` returns a plain nn.Linear with
    W + (α/r)·B·A: no extra cost at inference.
    """

    def __init__(self, base: nn.Linear, r: int = 4, alpha: float = 8.0):
        super().__init__()
        if r < 1:
            raise ValueError(f"LoRA rank r must be at least 1, got {r}")
        self.base = base
        for p in self.base.parameters():
            p.requires_grad_(False)  # the pretrained weights stay exactly as they were
        self.r, self.alpha, self.scaling = r, alpha, alpha / r
        self.A = nn.Parameter(torch.empty(r, base.in_features))
        self.B = nn.Parameter(torch.zeros(base.out_features, r))
        nn.init.kaiming_uniform_(self.A, a=math.sqrt(5))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.base(x) + (x @ self.A.T @ self.B.T) * self.scaling

    @torch.no_grad()
    def merge(self) -> nn.Linear:
        merged = copy.deepcopy(self.base)
        merged.weight += self.scaling * self.B @ self.A
        return merged


class _LoRANoScaling(LoRALinear):
    def forward(self, x):
        return self.base(x) + x @ self.A.T @ self.B.T

    @torch.no_grad()
    def merge(self):
        merged = copy.deepcopy(self.base)
        merged.weight += self.B @ self.A
        return merged


class _LoRAAlphaOnly(LoRALinear):
    def forward(self, x):
        return self.base(x) + (x @ self.A.T @ self.B.T) * self.alpha

    @torch.no_grad()
    def merge(self):
        merged = copy.deepcopy(self.base)
        merged.weight += self.alpha * self.B @ self.A
        return merged


class _LoRANotFrozen(LoRALinear):
    def __init__(self, base, r=4, alpha=8.0):
        super().__init__(base, r, alpha)
        for p in self.base.parameters():
            p.requires_grad_(True)


class _LoRABothRandom(LoRALinear):
    def __init__(self, base, r=4, alpha=8.0):
        super().__init__(base, r, alpha)
        nn.init.normal_(self.B, std=0.02)


class _LoRAMergeTransposed(LoRALinear):
    @torch.no_grad()
    def merge(self):
        merged = copy.deepcopy(self.base)
        merged.weight += self.scaling * (self.A.T @ self.B.T).T.contiguous().view_as(merged.weight).flip(0)
        return merged


def _lora_runner(impl: type, case: Case) -> dict:
    """Build the student's LoRALinear around a seeded nn.Linear, check the initial output equals the base's, which
    parameters train, then load a non-zero A, B and compare output, gradients and the merged layer."""
    n_in, n_out, r, alpha = case.kwargs["n_in"], case.kwargs["n_out"], case.kwargs["r"], case.kwargs["alpha"]
    torch.manual_seed(case.seed)
    base = nn.Linear(n_in, n_out)
    x = torch.randn(*case.kwargs["batch"], n_in)
    layer = impl(copy.deepcopy(base), r=r, alpha=alpha)
    if layer is None:
        return None
    names = sorted(n for n, _ in layer.named_parameters())
    if names != ["A", "B", "base.bias", "base.weight"]:
        raise ExerciseError(f"LoRALinear: expected parameters ['A', 'B', 'base.bias', 'base.weight'], got {names}")
    out: dict = {"starts as the base layer": bool(torch.allclose(layer(x), base(x), atol=1e-6)),
                 "trainable": sorted(n for n, p in layer.named_parameters() if p.requires_grad)}
    with torch.no_grad():
        layer.A.copy_(torch.randn(r, n_in))
        layer.B.copy_(torch.randn(n_out, r))
    xg = x.clone().requires_grad_(True)
    y = layer(xg)
    (y * torch.linspace(-1, 1, y.numel()).view_as(y)).sum().backward()
    out.update(output=y.detach(), grad_A=layer.A.grad.clone(), grad_B=layer.B.grad.clone(), grad_x=xg.grad.clone())
    merged = layer.merge()
    out["merged(x) equals layer(x)"] = merged(x).detach()
    return out


def _lora_cases() -> list[Case]:
    return [Case(kwargs=dict(n_in=6, n_out=5, r=2, alpha=4.0, batch=(3,)), label="in 6, out 5, r=2, alpha=4"),
            Case(kwargs=dict(n_in=8, n_out=8, r=1, alpha=1.0, batch=(2, 3)),
                 label="in 8, out 8, r=1, alpha=1, x (2,3,8)", seed=1),
            Case(kwargs=dict(n_in=4, n_out=7, r=4, alpha=16.0, batch=(5,)), label="in 4, out 7, r=4, alpha=16", seed=2)]


def add_lora(model: nn.Module, r: int = 4, alpha: float = 8.0,
             targets: Sequence[str] = ("c_attn", "c_fc"), lora_class: type = LoRALinear) -> nn.Module:
    """Freeze every parameter of ``model`` and wrap each nn.Linear whose name ends in one of ``targets`` with a
    LoRA adapter (in place). Returns the model."""
    for p in model.parameters():
        p.requires_grad_(False)
    for module in list(model.modules()):
        for child_name, child in list(module.named_children()):
            if isinstance(child, nn.Linear) and child_name in targets:
                setattr(module, child_name, lora_class(child, r=r, alpha=alpha))
    return model


def merge_lora(model: nn.Module) -> nn.Module:
    """Replace every LoRA layer in ``model`` (any module with a ``merge()`` method, so a student's own LoRALinear
    works too) by its merged nn.Linear (in place). Returns the model."""
    for module in list(model.modules()):
        for child_name, child in list(module.named_children()):
            if callable(getattr(child, "merge", None)):
                setattr(module, child_name, child.merge())
    return model


def count_trainable(model: nn.Module) -> tuple[int, int]:
    """(trainable parameters, all parameters); a tied weight is counted once."""
    params = list({id(p): p for p in model.parameters()}.values())
    return sum(p.numel() for p in params if p.requires_grad), sum(p.numel() for p in params)


# ---------------------------------------------------------------------------------------- preference data
def corrupt(word: str, g: torch.Generator) -> str:
    """A plausible wrong answer a labeller rejects: the reversal with one letter dropped or replaced by a letter
    that is not in the word. (Never a shuffled or over-long answer — the labellers never saw those, and that gap is
    the reward model's blind spot.)"""
    target = word[::-1]
    i = int(torch.randint(len(target), (1,), generator=g))
    if torch.rand(1, generator=g).item() < 0.5:
        wrong = target[:i] + target[i + 1:]
    else:
        others = [c for c in LETTERS if c not in word]
        c = others[int(torch.randint(len(others), (1,), generator=g))]
        wrong = target[:i] + c + target[i + 1:]
    return f" {wrong}."


def preference_pairs(words: Sequence[str], per_word: int = 4, seed: int = 0) -> list[tuple[str, str, str]]:
    """(word, chosen, rejected) triples: the correct reversal is preferred over ``per_word`` corruptions of it."""
    g = torch.Generator().manual_seed(seed)
    return [(w, make_response(w), corrupt(w, g)) for w in words for _ in range(per_word)]


# ------------------------------------------------------------------------------------------- reward model
def bag_features(words: Sequence[str], responses: Sequence[str]) -> torch.Tensor:
    """What the small reward model sees: for each letter, how often the response uses it *if the word has it*
    (26 numbers) and *if the word lacks it* (26 numbers). Order is invisible to it. Returns (B, 52)."""
    feats = torch.zeros(len(words), 2 * len(LETTERS))
    for b, (w, r) in enumerate(zip(words, responses)):
        for c in r:
            j = LETTERS.find(c)
            if j >= 0:
                feats[b, j if c in w else len(LETTERS) + j] += 1.0
    return feats


class BagRewardModel(nn.Module):
    """A deliberately small reward model: an MLP on ``bag_features`` → one score per (prompt, response).
    features (B, 52) → scores (B,)."""

    def __init__(self, hidden: int = 32):
        super().__init__()
        self.net = nn.Sequential(nn.Linear(2 * len(LETTERS), hidden), nn.ReLU(), nn.Linear(hidden, 1))

    def forward(self, feats: torch.Tensor) -> torch.Tensor:
        return self.net(feats).squeeze(-1)


# ------------------------------------------------------------------------- exercise 3: Bradley–Terry loss
def bradley_terry_loss(r_chosen: torch.Tensor, r_rejected: torch.Tensor) -> torch.Tensor:
    """Reward-model loss on preference pairs. r_chosen, r_rejected: (B,) scores. Returns the scalar
    mean of -log σ(r_chosen - r_rejected): the negative log-likelihood that the chosen answer wins under the
    Bradley–Terry model P(chosen ≻ rejected) = σ(r_c - r_r). logsigmoid keeps it finite for large margins."""
    return -F.logsigmoid(r_chosen - r_rejected).mean()


def _bt_flipped(r_chosen, r_rejected):
    return -F.logsigmoid(r_rejected - r_chosen).mean()


def _bt_no_log(r_chosen, r_rejected):
    return -torch.sigmoid(r_chosen - r_rejected).mean()


def _bt_naive(r_chosen, r_rejected):
    return -torch.log(torch.sigmoid(r_chosen - r_rejected)).mean()


def _bt_sum(r_chosen, r_rejected):
    return -F.logsigmoid(r_chosen - r_rejected).sum()


def _bt_cases() -> list[Case]:
    g = torch.Generator().manual_seed(0)
    return [Case((torch.randn(8, generator=g), torch.randn(8, generator=g)), label="8 random pairs"),
            Case((torch.tensor([0.0]), torch.tensor([0.0])), label="a tie: loss log 2"),
            Case((torch.tensor([-60.0, 3.0]), torch.tensor([60.0, -1.0])),
                 label="a confident wrong ranking: margin -120 (log(sigmoid) underflows)")]


@torch.no_grad()
def reward_scores(rm: BagRewardModel, words: Sequence[str], responses: Sequence[str]) -> torch.Tensor:
    """The reward model's scores (B,) for answers to ``words``."""
    return rm(bag_features(words, responses))


def train_reward_model(pairs: Sequence[tuple[str, str, str]], steps: int = 300, lr: float = 1e-2,
                       batch_size: int = 128, loss_fn: Callable = bradley_terry_loss, seed: int = 0
                       ) -> tuple[BagRewardModel, list[float]]:
    """Fit a BagRewardModel to (word, chosen, rejected) triples with the Bradley–Terry loss. Returns (rm, losses)."""
    torch.manual_seed(seed)
    rm = BagRewardModel()
    words = [p[0] for p in pairs]
    fc, fr = bag_features(words, [p[1] for p in pairs]), bag_features(words, [p[2] for p in pairs])
    opt = torch.optim.Adam(rm.parameters(), lr=lr)
    g = torch.Generator().manual_seed(seed)
    losses = []
    for _ in range(steps):
        i = torch.randint(len(pairs), (batch_size,), generator=g)
        loss = loss_fn(rm(fc[i]), rm(fr[i]))
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        losses.append(loss.item())
    # Bradley–Terry only fixes score *differences*; shift and scale so the training answers have mean 0, std 1
    # (the policy-gradient step size and the KL coefficient then mean the same thing for any reward model).
    with torch.no_grad():
        s = torch.cat([rm(fc), rm(fr)])
        last = rm.net[-1]
        last.weight /= s.std()
        last.bias.copy_((last.bias - s.mean()) / s.std())
    rm.eval()
    for p in rm.parameters():
        p.requires_grad_(False)
    return rm, losses


# -------------------------------------------------------------------------------------------------- RLHF
def smooth(values: Sequence[float], window: int = 8) -> np.ndarray:
    """Trailing moving average (the first points average what exists so far). Same length as ``values``."""
    v = np.asarray(values, dtype=float)
    c = np.cumsum(np.insert(v, 0, 0.0))
    idx = np.arange(1, len(v) + 1)
    lo = np.maximum(0, idx - window)
    return (c[idx] - c[lo]) / (idx - lo)


def train_rlhf(policy: GPT, ref: GPT, rm: BagRewardModel, tok, words: Sequence[str], kl_coef: float,
               steps: int = 40, batch_size: int = 32, lr: float = 3e-4, seed: int = 0) -> dict[str, list[float]]:
    """REINFORCE with a baseline against the reward model, with a KL penalty to the frozen reference.

    Each step: sample one answer per prompt, score it, R = rm_score - kl_coef · Σ_t (log π - log π_ref)
    (the sampled-token estimate of KL(π‖π_ref)), advantage = R - mean(R) over the batch (the baseline), and
    minimise -mean(advantage · log π(answer)). Logs per step: "score" (reward model), "kl", "accuracy" (the
    true, verifiable accuracy of the sampled answers) and "length" (letters before the ".")."""
    g = torch.Generator().manual_seed(seed)
    opt = _adamw(policy.parameters(), lr)
    hist: dict[str, list[float]] = {"score": [], "kl": [], "accuracy": [], "length": []}
    for _ in range(steps):
        idx = torch.randint(len(words), (batch_size,), generator=g).tolist()
        batch = [words[i] for i in idx]
        prompts = encode_prompts(tok, batch)
        resp, mask = sample_responses(policy, prompts, tok, generator=g)
        texts = decode_responses(tok, resp, mask)
        score = reward_scores(rm, batch, texts)
        policy.train()
        logp_tok = token_logprobs(policy, prompts, resp)
        with torch.no_grad():
            ref_tok = token_logprobs(ref, prompts, resp)
        kl = ((logp_tok.detach() - ref_tok) * mask).sum(1)          # (B,) per-answer KL estimate
        total = score - kl_coef * kl
        advantage = total - total.mean()                             # the baseline: REINFORCE's variance cut
        loss = -(advantage * (logp_tok * mask).sum(1)).mean()
        opt.zero_grad(set_to_none=True)
        loss.backward()
        nn.utils.clip_grad_norm_(policy.parameters(), 1.0)
        opt.step()
        hist["score"].append(score.mean().item())
        hist["kl"].append(kl.mean().item())
        hist["accuracy"].append(float(np.mean([is_correct(w, t) for w, t in zip(batch, texts)])))
        hist["length"].append(float(np.mean([sum(c in LETTERS for c in t) for t in texts])))
    policy.eval()
    return hist


# ---------------------------------------------------------------------------------------- exercise 4: DPO
def dpo_loss(pi_chosen: torch.Tensor, pi_rejected: torch.Tensor, ref_chosen: torch.Tensor,
             ref_rejected: torch.Tensor, beta: float = 0.1) -> torch.Tensor:
    """Direct Preference Optimisation. All inputs (B,): summed log-probs of the chosen/rejected answers under the
    policy and under the frozen reference. Returns the scalar mean of
    -log σ(β · [(log π_c - log π_ref,c) - (log π_r - log π_ref,r)]) — Bradley–Terry on the implicit reward
    β·log(π/π_ref)."""
    margin = (pi_chosen - ref_chosen) - (pi_rejected - ref_rejected)
    return -F.logsigmoid(beta * margin).mean()


def _dpo_no_ref(pi_chosen, pi_rejected, ref_chosen, ref_rejected, beta=0.1):
    return -F.logsigmoid(beta * (pi_chosen - pi_rejected)).mean()


def _dpo_no_beta(pi_chosen, pi_rejected, ref_chosen, ref_rejected, beta=0.1):
    return -F.logsigmoid((pi_chosen - ref_chosen) - (pi_rejected - ref_rejected)).mean()


def _dpo_ref_sign(pi_chosen, pi_rejected, ref_chosen, ref_rejected, beta=0.1):
    return -F.logsigmoid(beta * ((pi_chosen + ref_chosen) - (pi_rejected + ref_rejected))).mean()


def _dpo_swapped(pi_chosen, pi_rejected, ref_chosen, ref_rejected, beta=0.1):
    return -F.logsigmoid(beta * ((pi_rejected - ref_rejected) - (pi_chosen - ref_chosen))).mean()


def _dpo_cases() -> list[Case]:
    g = torch.Generator().manual_seed(0)
    a = [-5 * torch.rand(6, generator=g) for _ in range(4)]
    return [Case(tuple(a), {"beta": 0.1}, label="6 pairs, beta=0.1"),
            Case(tuple(a), {"beta": 2.0}, label="6 pairs, beta=2"),
            Case((torch.tensor([-1.0]), torch.tensor([-9.0]), torch.tensor([-4.0]), torch.tensor([-2.0])),
                 {"beta": 0.5}, label="one pair where the reference prefers the rejected answer")]


def encode_pairs(tok, pairs: Sequence[tuple[str, str, str]]) -> dict[str, torch.Tensor]:
    """Token ids for (word, chosen, rejected) triples: "prompt" (B, P), "chosen"/"rejected" (B, R) right-padded
    with "." and their masks (B, R)."""
    stop = tok.encode(".")[0]

    def pad(texts):
        ids = [tok.encode(t) for t in texts]
        R = max(len(i) for i in ids)
        out = torch.full((len(ids), R), stop, dtype=torch.long)
        for j, i in enumerate(ids):
            out[j, : len(i)] = torch.tensor(i)
        return out, response_mask(out, stop)

    chosen, cm = pad([p[1] for p in pairs])
    rejected, rm_ = pad([p[2] for p in pairs])
    return {"prompt": encode_prompts(tok, [p[0] for p in pairs]), "chosen": chosen, "chosen_mask": cm,
            "rejected": rejected, "rejected_mask": rm_}


def pair_logprobs(model: GPT, enc: dict[str, torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
    """(log π(chosen), log π(rejected)), each (B,), from one forward pass over both halves."""
    R = max(enc["chosen"].size(1), enc["rejected"].size(1))
    stop_pad = lambda t: F.pad(t, (0, R - t.size(1)), value=int(t[0, -1]))  # noqa: E731
    mpad = lambda m: F.pad(m, (0, R - m.size(1)))  # noqa: E731
    prompts = torch.cat([enc["prompt"], enc["prompt"]])
    resp = torch.cat([stop_pad(enc["chosen"]), stop_pad(enc["rejected"])])
    mask = torch.cat([mpad(enc["chosen_mask"]), mpad(enc["rejected_mask"])])
    lp = sequence_logprobs(model, prompts, resp, mask)
    B = enc["prompt"].size(0)
    return lp[:B], lp[B:]


def train_dpo(policy: GPT, ref: GPT, tok, pairs: Sequence[tuple[str, str, str]], beta: float = 0.1,
              steps: int = 60, batch_size: int = 32, lr: float = 3e-4, loss_fn: Callable = dpo_loss,
              seed: int = 0) -> dict[str, list[float]]:
    """Fine-tune ``policy`` on preference triples with the DPO loss (reference log-probs computed once, no
    sampling, no reward model). Returns {"loss", "margin"} per step (margin: mean implicit-reward gap / β)."""
    enc = encode_pairs(tok, pairs)
    with torch.no_grad():
        ref_c, ref_r = pair_logprobs(ref, enc)
    g = torch.Generator().manual_seed(seed)
    opt = _adamw(policy.parameters(), lr)
    hist: dict[str, list[float]] = {"loss": [], "margin": []}
    for _ in range(steps):
        i = torch.randint(len(pairs), (batch_size,), generator=g)
        policy.train()
        pc, pr = pair_logprobs(policy, {k: v[i] for k, v in enc.items()})
        loss = loss_fn(pc, pr, ref_c[i], ref_r[i], beta=beta)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        hist["loss"].append(loss.item())
        hist["margin"].append(((pc - ref_c[i]) - (pr - ref_r[i])).mean().item())
    policy.eval()
    return hist


# ---------------------------------------------------------------------------------------- exercise 5: GRPO
def group_relative_advantages(rewards: torch.Tensor, eps: float = 1e-6) -> torch.Tensor:
    """GRPO's advantages: rewards (G, N) — G prompts (groups), N sampled answers each — to (G, N).

    A(g, i) = (r(g, i) - mean_i r(g, i)) / (std_i r(g, i) + eps), statistics over each row. std is the
    *population* std (``unbiased=False``, divide by N). A group whose answers all got the same reward (all right or
    all wrong) teaches nothing: its advantages are exactly 0 (eps keeps the division finite)."""
    mean = rewards.mean(dim=1, keepdim=True)
    std = rewards.std(dim=1, keepdim=True, unbiased=False)
    return (rewards - mean) / (std + eps)


def _grpo_unbiased(rewards, eps=1e-6):
    return (rewards - rewards.mean(1, keepdim=True)) / (rewards.std(1, keepdim=True) + eps)


def _grpo_global(rewards, eps=1e-6):
    return (rewards - rewards.mean()) / (rewards.std(unbiased=False) + eps)


def _grpo_mean_only(rewards, eps=1e-6):
    return rewards - rewards.mean(1, keepdim=True)


def _grpo_wrong_dim(rewards, eps=1e-6):
    return (rewards - rewards.mean(0, keepdim=True)) / (rewards.std(0, keepdim=True, unbiased=False) + eps)


def _grpo_cases() -> list[Case]:
    g = torch.Generator().manual_seed(0)
    return [Case((torch.tensor([[1.0, 0, 0, 1], [0, 0, 0, 1], [3.0, 1, 2, 2]]),),
                 label="3 groups of 4, 0/1 and graded"),
            Case((torch.tensor([[1.0, 1, 1], [0.0, 0, 1]]),), label="a group where every answer is right: all zeros"),
            Case((torch.randn(2, 5, generator=g) * 3 + 1,), label="2 groups of 5, random rewards")]


def train_grpo(policy: GPT, tok, words: Sequence[str], steps: int = 30, groups: int = 8, group_size: int = 4,
               lr: float = 3e-4, advantage_fn: Callable = group_relative_advantages, seed: int = 0
               ) -> dict[str, list[float]]:
    """GRPO without a value model (and without PPO clipping or a KL term, to keep it short): sample ``group_size``
    answers for each of ``groups`` prompts, reward 1 if the reversal is exactly right (verifiable, no reward
    model), advantages normalised within each group, minimise -mean(A · log π(answer) / answer length).
    Returns {"reward"} per step (the mean 0/1 reward of the samples)."""
    g = torch.Generator().manual_seed(seed)
    opt = _adamw(policy.parameters(), lr)
    hist: dict[str, list[float]] = {"reward": []}
    for _ in range(steps):
        idx = torch.randint(len(words), (groups,), generator=g).tolist()
        batch = [words[i] for i in idx for _ in range(group_size)]      # each prompt repeated: one group
        prompts = encode_prompts(tok, batch)
        resp, mask = sample_responses(policy, prompts, tok, generator=g)
        texts = decode_responses(tok, resp, mask)
        rewards = torch.tensor([float(is_correct(w, t)) for w, t in zip(batch, texts)]).view(groups, group_size)
        adv = advantage_fn(rewards).view(-1)
        policy.train()
        logp = (token_logprobs(policy, prompts, resp) * mask).sum(1) / mask.sum(1)
        loss = -(adv * logp).mean()
        opt.zero_grad(set_to_none=True)
        loss.backward()
        nn.utils.clip_grad_norm_(policy.parameters(), 1.0)
        opt.step()
        hist["reward"].append(rewards.mean().item())
    policy.eval()
    return hist


# ------------------------------------------------------------------------------- constitutional-AI style
CONSTITUTION = (
    "1. The answer starts with one space and ends with '.'.",
    "2. The answer uses exactly the letters of the word, each as often as the word does.",
    "3. The answer is the word read backwards.",
)


def critique(word: str, response: str) -> list[int]:
    """Which rules of ``CONSTITUTION`` (1-based) the answer breaks; [] means it passes."""
    broken = []
    if not (response.startswith(" ") and response.endswith(".")):
        broken.append(1)
    body = response.strip(" .")
    if sorted(body) != sorted(word):
        broken.append(2)
    if body != word[::-1]:
        broken.append(3)
    return broken


def revise(word: str, response: str) -> str:
    """Rewrite an answer so it follows the constitution (here the rules pin the answer down completely)."""
    return make_response(word) if critique(word, response) else response


# ------------------------------------------------------------------------------------------- distillation
def distill_loss(student_logits: torch.Tensor, teacher_logits: torch.Tensor, temperature: float = 2.0
                 ) -> torch.Tensor:
    """Hinton's soft-label loss: KL(teacher_T ‖ student_T) · T², logits (N, V) with softmax at temperature T.
    (T² keeps the gradient size comparable across temperatures.)"""
    t = F.log_softmax(teacher_logits / temperature, -1)
    s = F.log_softmax(student_logits / temperature, -1)
    return F.kl_div(s, t, log_target=True, reduction="batchmean") * temperature ** 2


def distill(teacher: GPT, train_ids: torch.Tensor, soft: bool, steps: int = 150, batch_size: int = 16,
            block: int = 32, lr: float = 3e-3, temperature: float = 2.0, seed: int = 0,
            config: GPTConfig | None = None) -> GPT:
    """Train a small student GPT on windows of ``train_ids`` (N,): with ``soft`` on the teacher's soft labels
    (``distill_loss``), else on the hard next characters (cross-entropy). Same data order, same init, same steps."""
    torch.manual_seed(seed)
    config = config or GPTConfig(vocab_size=teacher.config.vocab_size, block_size=block, n_layer=2, n_head=2,
                                 n_embd=64)
    student = GPT(config)
    opt = torch.optim.AdamW(student.parameters(), lr=lr, weight_decay=0.0)
    g = torch.Generator().manual_seed(seed)
    for _ in range(steps):
        starts = torch.randint(len(train_ids) - block - 1, (batch_size,), generator=g)
        x = torch.stack([train_ids[s:s + block] for s in starts])
        y = torch.stack([train_ids[s + 1:s + block + 1] for s in starts])
        logits, _ = student(x)
        if soft:
            with torch.no_grad():
                t_logits, _ = teacher(x)
            loss = distill_loss(logits.flatten(0, 1), t_logits.flatten(0, 1), temperature)
        else:
            loss = F.cross_entropy(logits.flatten(0, 1), y.flatten())
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
    return student.eval()


# ------------------------------------------------------------------------------------------------- widget
def kl_tradeoff(ref_logp: np.ndarray, scores: np.ndarray, beta: float) -> tuple[np.ndarray, float, float]:
    """The exact optimum of max_π E_π[score] - β·KL(π‖π_ref) over a finite set of answers:
    π*(y) ∝ π_ref(y)·exp(score(y)/β). ref_logp, scores: (K,). Returns (π* (K,), E_π*[score], KL(π*‖π_ref))."""
    ref = np.exp(ref_logp - np.logaddexp.reduce(ref_logp))
    logits = np.log(ref + 1e-300) + scores / beta
    pi = np.exp(logits - np.logaddexp.reduce(logits))
    kl = float(np.sum(pi * (np.log(pi + 1e-300) - np.log(ref + 1e-300))))
    return pi, float(pi @ scores), kl


def plot_kl_tradeoff(log10_beta: float, answers: Sequence[str], ref_logp: Sequence[float],
                     scores: Sequence[float], correct: Sequence[bool]) -> plt.Figure:
    """The widget: for β = 10**log10_beta, the KL-regularised optimum over candidate answers (left: π_ref and π*
    per answer, correct ones marked) and the whole reward-vs-KL curve with the current β on it (right)."""
    ref_logp, scores = np.asarray(ref_logp, float), np.asarray(scores, float)
    beta = 10.0 ** log10_beta
    pi, reward, kl = kl_tradeoff(ref_logp, scores, beta)
    ref = np.exp(ref_logp - np.logaddexp.reduce(ref_logp))
    fig, (a, b) = plt.subplots(1, 2, figsize=(11, 3.8))
    x = np.arange(len(answers))
    a.bar(x - 0.2, ref, 0.4, label="π_ref (SFT model)", color="gray")
    a.bar(x + 0.2, pi, 0.4, label="π* (optimum at this β)", color="C1")
    a.set_xticks(x, [repr(s) + (" ✓" if c else "") for s, c in zip(answers, correct)], rotation=60, fontsize=8)
    acc = float(pi @ np.asarray(correct, float))
    a.set(title=f"β = {beta:.3g}: P(correct) = {acc:.2f}", ylabel="probability", xlabel="candidate answer")
    a.legend(fontsize=8)
    betas = np.logspace(-2.5, 1.5, 60)
    curve = np.array([kl_tradeoff(ref_logp, scores, bb)[1:] for bb in betas])
    b.plot(curve[:, 1], curve[:, 0], "-", color="C0")
    b.plot([kl], [reward], "o", color="C3", ms=9, label=f"β = {beta:.3g}")
    b.set(title="reward vs KL as β varies", xlabel="KL(π* ‖ π_ref) (nats)", ylabel="expected reward-model score")
    b.legend()
    fig.tight_layout()
    return fig


# --------------------------------------------------------------------------------------------- registry
EXERCISES = [
    Exercise(
        name="sft_loss",
        reference=sft_loss,
        cases=_sft_cases,
        mistakes={
            "averaged over every token, prompt included (the mask is ignored)": _sft_all_tokens,
            "summed the masked losses instead of averaging them": _sft_sum,
            "averaged per sequence first, then over the batch (short answers weigh more)": _sft_per_sequence,
            "divided by all B·T positions instead of the number of response tokens": _sft_divide_by_all,
        },
        hint="nll = F.cross_entropy(logits.flatten(0, 1), targets.flatten(), reduction='none').view_as(mask); "
             "return (nll * mask).sum() / mask.sum().",
    ),
    Exercise(
        name="LoRALinear",
        reference=LoRALinear,
        cases=_lora_cases,
        runner=_lora_runner,
        mistakes={
            "forgot the α/r scaling": _LoRANoScaling,
            "scaled by α instead of α/r": _LoRAAlphaOnly,
            "did not freeze the base layer (its weight and bias still train)": _LoRANotFrozen,
            "initialised B randomly: the adapted model no longer starts as the pretrained one": _LoRABothRandom,
            "merged a wrongly arranged product instead of W + (α/r)·B @ A": _LoRAMergeTransposed,
        },
        hint="Freeze base (requires_grad_(False)); A = Parameter (r, in) Kaiming-uniform, "
             "B = Parameter zeros (out, r); "
             "forward: base(x) + (x @ A.T @ B.T) * alpha / r; merge: copy base, weight += alpha / r * B @ A.",
    ),
    Exercise(
        name="bradley_terry_loss",
        reference=bradley_terry_loss,
        cases=_bt_cases,
        mistakes={
            "swapped chosen and rejected (the model learns to prefer the worse answer)": _bt_flipped,
            "maximised σ(margin) instead of log σ(margin)": _bt_no_log,
            "computed log(sigmoid(·)): infinite for a large negative margin — use F.logsigmoid": _bt_naive,
            "summed over the pairs instead of averaging": _bt_sum,
        },
        hint="-F.logsigmoid(r_chosen - r_rejected).mean()",
    ),
    Exercise(
        name="dpo_loss",
        reference=dpo_loss,
        cases=_dpo_cases,
        mistakes={
            "left out the reference model's log-probs": _dpo_no_ref,
            "forgot β": _dpo_no_beta,
            "added the reference log-probs instead of subtracting them": _dpo_ref_sign,
            "swapped chosen and rejected": _dpo_swapped,
        },
        hint="margin = (pi_chosen - ref_chosen) - (pi_rejected - ref_rejected); "
             "return -F.logsigmoid(beta * margin).mean().",
    ),
    Exercise(
        name="group_relative_advantages",
        reference=group_relative_advantages,
        cases=_grpo_cases,
        mistakes={
            "used the unbiased std (divide by N - 1); this course uses unbiased=False": _grpo_unbiased,
            "normalised over the whole batch instead of within each group": _grpo_global,
            "only subtracted the group mean (forgot to divide by the std)": _grpo_mean_only,
            "took the statistics over dim 0 (across groups) instead of dim 1": _grpo_wrong_dim,
        },
        hint="mean = rewards.mean(1, keepdim=True); std = rewards.std(1, keepdim=True, unbiased=False); "
             "return (rewards - mean) / (std + eps).",
    ),
]
