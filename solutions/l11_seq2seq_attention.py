"""Lecture 11 — sequence-to-sequence models, the fixed-vector bottleneck, attention and beam search.

Reference solutions and the exercise registry (COURSE_DESIGN §2):

* ``AdditiveAttention``: Bahdanau's score ``v·tanh(W_q q + W_k k)``, softmax over the source positions, the
  weighted average of the encoder states (an optional mask hides padding);
* ``Decoder``: one call runs the decoder GRU over T target tokens (T = 1 when generating, T = all of them under
  teacher forcing), attends from every output state to the encoder states and reads out the next-token logits;
* ``beam_search``: keep the ``beam_width`` most probable prefixes; start from the greedy answer, so the result's
  log-probability is never below greedy's.

Beyond the exercises: the task (``reversal_batch``), ``Encoder``, ``DotAttention``, ``Seq2Seq``, ``train_seq2seq``,
``decoder_step_fn``, ``greedy_decode``, ``evaluate_lengths``, the toy language model ``TableLM`` of the beam-search
checks, and the plots behind the lecture's figures and widget (``plot_alignment``, ``show_decoding``).
"""
from __future__ import annotations

import math
from typing import Callable, Sequence

import matplotlib.pyplot as plt
import torch
import torch.nn as nn
import torch.nn.functional as F

import utils
from utils.exercises import Case, Exercise, run_module

__all__ = [
    "N_DIGITS", "BOS", "EOS", "VOCAB", "TOKENS", "reversal_batch", "AdditiveAttention", "DotAttention", "Encoder",
    "Decoder", "Seq2Seq", "train_seq2seq", "decoder_step_fn", "greedy_decode", "beam_search", "trim_at_eos",
    "evaluate_lengths", "TableLM", "plot_alignment", "show_decoding", "EXERCISES",
]

# ------------------------------------------------------------------------------------------------- the task
N_DIGITS = 10                    # source tokens are the digits 0..9
BOS, EOS = 10, 11                # start-of-output and end-of-output tokens
VOCAB = 12
TOKENS = [str(d) for d in range(N_DIGITS)] + ["<s>", "</s>"]


def reversal_batch(n: int, length: int, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """``n`` random digit strings of ``length`` and their reversal, ready for teacher forcing.

    Returns x (n, length): the source; y_in (n, length + 1): ``<s>`` then the reversed digits (what the decoder
    reads); y_out (n, length + 1): the reversed digits then ``</s>`` (what it must predict). All int64.
    """
    x, y = utils.data.reversal_task(n, length, N_DIGITS, seed)
    y_in = torch.cat([torch.full((n, 1), BOS), y], 1)
    y_out = torch.cat([y, torch.full((n, 1), EOS)], 1)
    return x, y_in, y_out


# ------------------------------------------------------------------------------------ exercise 1: attention
class AdditiveAttention(nn.Module):
    """Bahdanau (additive) attention: score(q, k) = v · tanh(W_q q + W_k k).

    forward(query (B, T, Dq), keys (B, S, Dk), mask (B, S) bool or None) -> context (B, T, Dk), weights (B, T, S).
    ``weights[b, t]`` is a softmax over the S source positions (masked positions get weight 0) and
    ``context[b, t] = sum_s weights[b, t, s] * keys[b, s]``: the keys double as the values.
    """

    def __init__(self, query_dim: int, key_dim: int, attn_dim: int):
        super().__init__()
        self.W_q = nn.Linear(query_dim, attn_dim, bias=False)
        self.W_k = nn.Linear(key_dim, attn_dim, bias=False)
        self.v = nn.Linear(attn_dim, 1, bias=False)

    def forward(self, query: torch.Tensor, keys: torch.Tensor,
                mask: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        # every query against every key: (B, T, 1, A) + (B, 1, S, A) -> (B, T, S, A) -> scores (B, T, S)
        scores = self.v(torch.tanh(self.W_q(query)[:, :, None] + self.W_k(keys)[:, None])).squeeze(-1)
        if mask is not None:
            scores = scores.masked_fill(~mask[:, None, :], float("-inf"))  # exp(-inf) = 0: padding gets no weight
        weights = scores.softmax(dim=-1)  # over the source positions S: each query distributes 1 unit of attention
        return weights @ keys, weights


class _AttnSoftmaxOverQueries(AdditiveAttention):
    def forward(self, query, keys, mask=None):
        scores = self.v(torch.tanh(self.W_q(query)[:, :, None] + self.W_k(keys)[:, None])).squeeze(-1)
        if mask is not None:
            scores = scores.masked_fill(~mask[:, None, :], float("-inf"))
        weights = scores.softmax(dim=1)
        return weights @ keys, weights


class _AttnNoTanh(AdditiveAttention):
    def forward(self, query, keys, mask=None):
        scores = self.v(self.W_q(query)[:, :, None] + self.W_k(keys)[:, None]).squeeze(-1)
        if mask is not None:
            scores = scores.masked_fill(~mask[:, None, :], float("-inf"))
        weights = scores.softmax(dim=-1)
        return weights @ keys, weights


class _AttnIgnoresMask(AdditiveAttention):
    def forward(self, query, keys, mask=None):
        return super().forward(query, keys, None)


class _AttnMaskWithZero(AdditiveAttention):
    def forward(self, query, keys, mask=None):
        scores = self.v(torch.tanh(self.W_q(query)[:, :, None] + self.W_k(keys)[:, None])).squeeze(-1)
        if mask is not None:
            scores = scores.masked_fill(~mask[:, None, :], 0.0)
        weights = scores.softmax(dim=-1)
        return weights @ keys, weights


class DotAttention(nn.Module):
    """Dot-product attention (Luong's "general" score): score(q, k) = (W_q q) · k / sqrt(Dk).

    Same interface as :class:`AdditiveAttention`: forward(query (B, T, Dq), keys (B, S, Dk), mask) ->
    context (B, T, Dk), weights (B, T, S). One matrix product instead of a small tanh network per pair.
    """

    def __init__(self, query_dim: int, key_dim: int, attn_dim: int | None = None):
        super().__init__()
        self.W_q = nn.Linear(query_dim, key_dim, bias=False)  # attn_dim unused: the score lives in key space

    def forward(self, query: torch.Tensor, keys: torch.Tensor,
                mask: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        scores = self.W_q(query) @ keys.transpose(1, 2) / math.sqrt(keys.shape[-1])  # (B, T, S)
        if mask is not None:
            scores = scores.masked_fill(~mask[:, None, :], float("-inf"))
        weights = scores.softmax(dim=-1)
        return weights @ keys, weights


ATTENTIONS: dict[str, type[nn.Module]] = {"additive": AdditiveAttention, "dot": DotAttention}


# ------------------------------------------------------------------------------- encoder and exercise 2
class Encoder(nn.Module):
    """Embedding + bidirectional GRU. forward(x (B, S)) -> states (B, S, 2H), summary (B, 2H).

    ``states[:, s]`` describes token s in its context (left half: what came before, right half: what comes after);
    ``summary`` is the final state of each direction — the one fixed-size vector a plain seq2seq model gets.
    """

    def __init__(self, vocab_size: int = VOCAB, emb_dim: int = 16, hidden: int = 64):
        super().__init__()
        self.embed = nn.Embedding(vocab_size, emb_dim)
        self.rnn = nn.GRU(emb_dim, hidden, batch_first=True, bidirectional=True)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        states, last = self.rnn(self.embed(x))  # last (2, B, H): forward direction's end, backward direction's end
        return states, torch.cat([last[0], last[1]], dim=-1)


class Decoder(nn.Module):
    """A GRU decoder that reads a context vector at every output step.

    ``forward(prev (B, T), h (B, H), states (B, S, D), summary (B, D))`` runs the GRU over the T previous tokens
    (input at step t: the embedding of prev[:, t] concatenated with ``summary``), then gets a context per output
    state: ``attention(outputs, states)`` if the decoder has attention, else ``summary`` at every step (the
    bottleneck). Returns logits (B, T, vocab) = out([output_t; context_t]), the last hidden state (B, H) and the
    attention weights (B, T, S) (None without attention). T = 1 while generating; T = target length under
    teacher forcing, where every previous token is known in advance and one call does them all.
    """

    def __init__(self, vocab_size: int, emb_dim: int, hidden: int, enc_dim: int, attention: nn.Module | None):
        super().__init__()
        self.embed = nn.Embedding(vocab_size, emb_dim)
        self.init = nn.Linear(enc_dim, hidden)
        self.rnn = nn.GRU(emb_dim + enc_dim, hidden, batch_first=True)
        self.out = nn.Linear(hidden + enc_dim, vocab_size)
        self.attention = attention

    def start(self, summary: torch.Tensor) -> torch.Tensor:
        """The first hidden state (B, H) from the encoder's summary (B, D)."""
        return torch.tanh(self.init(summary))

    def forward(self, prev: torch.Tensor, h: torch.Tensor, states: torch.Tensor,
                summary: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor | None]:
        T = prev.shape[1]
        fixed = summary[:, None].expand(-1, T, -1)                        # (B, T, D): the same vector every step
        outputs, h_last = self.rnn(torch.cat([self.embed(prev), fixed], -1), h[None])  # (B, T, H), (1, B, H)
        if self.attention is None:
            context, weights = fixed, None
        else:
            context, weights = self.attention(outputs, states)            # (B, T, D), (B, T, S): a fresh look
        logits = self.out(torch.cat([outputs, context], -1))              # (B, T, vocab)
        return logits, h_last[0], weights


class _DecoderNeverAttends(Decoder):
    def forward(self, prev, h, states, summary):
        T = prev.shape[1]
        fixed = summary[:, None].expand(-1, T, -1)
        outputs, h_last = self.rnn(torch.cat([self.embed(prev), fixed], -1), h[None])
        weights = self.attention(outputs, states)[1] if self.attention is not None else None
        return self.out(torch.cat([outputs, fixed], -1)), h_last[0], weights


class _DecoderZeroState(Decoder):
    def forward(self, prev, h, states, summary):
        T = prev.shape[1]
        fixed = summary[:, None].expand(-1, T, -1)
        outputs, h_last = self.rnn(torch.cat([self.embed(prev), fixed], -1))  # h not passed: starts from zeros
        context, weights = (fixed, None) if self.attention is None else self.attention(outputs, states)
        return self.out(torch.cat([outputs, context], -1)), h_last[0], weights


class _DecoderQueryIsIncomingState(Decoder):
    def forward(self, prev, h, states, summary):
        T = prev.shape[1]
        fixed = summary[:, None].expand(-1, T, -1)
        outputs, h_last = self.rnn(torch.cat([self.embed(prev), fixed], -1), h[None])
        if self.attention is None:
            context, weights = fixed, None
        else:  # every step asks with the state it was given, not the one the GRU just computed
            context, weights = self.attention(h[:, None].expand(-1, T, -1), states)
        return self.out(torch.cat([outputs, context], -1)), h_last[0], weights


class _DecoderReturnsIncomingState(Decoder):
    def forward(self, prev, h, states, summary):
        logits, _, weights = Decoder.forward(self, prev, h, states, summary)
        return logits, h, weights


class Seq2Seq(nn.Module):
    """Encoder + decoder. ``attention``: "none" (the bottleneck), "additive" or "dot".

    forward(x (B, S), y_in (B, T)) -> logits (B, T, vocab), attention weights (B, T, S) or None: teacher forcing,
    the decoder reads the true previous tokens ``y_in``.
    """

    def __init__(self, attention: str = "additive", emb_dim: int = 16, hidden: int = 64,
                 decoder_cls: type[nn.Module] = Decoder, attention_classes: dict | None = None):
        super().__init__()
        classes = attention_classes or ATTENTIONS
        attn = None if attention == "none" else classes[attention](hidden, 2 * hidden, hidden)  # built first, as
        self.encoder = Encoder(VOCAB, emb_dim, hidden)  # in the lecture, so the same seed gives the same weights
        self.decoder = decoder_cls(VOCAB, emb_dim, hidden, 2 * hidden, attn)

    def forward(self, x: torch.Tensor, y_in: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor | None]:
        states, summary = self.encoder(x)
        logits, _, weights = self.decoder(y_in, self.decoder.start(summary), states, summary)
        return logits, weights


def train_seq2seq(model: nn.Module, steps: int = 600, lengths: Sequence[int] = range(3, 21), batch_size: int = 64,
                  lr: float = 1e-2, seed: int = 0) -> list[float]:
    """Teacher-forced training for exactly ``steps`` steps: every batch has one length drawn from ``lengths``
    (so no padding is needed), Adam with a cosine-decayed ``lr``, gradients clipped at norm 1. Returns the losses."""
    opt = torch.optim.Adam(model.parameters(), lr=lr)
    gen = torch.Generator().manual_seed(seed)
    lengths = list(lengths)
    losses = []
    model.train()
    for step in range(steps):
        length = lengths[int(torch.randint(len(lengths), (1,), generator=gen))]
        x, y_in, y_out = reversal_batch(batch_size, length, seed=seed * 1_000_003 + step)
        for group in opt.param_groups:
            group["lr"] = lr * 0.5 * (1 + math.cos(math.pi * step / steps))
        logits, _ = model(x, y_in)
        loss = F.cross_entropy(logits.flatten(0, 1), y_out.flatten())
        opt.zero_grad(set_to_none=True)
        loss.backward()
        nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        losses.append(loss.item())
    model.eval()
    return losses


# ------------------------------------------------------------------------------------------------- decoding
Step = Callable[[torch.Tensor, torch.Tensor], tuple[torch.Tensor, torch.Tensor]]


def decoder_step_fn(model: nn.Module, x: torch.Tensor) -> tuple[Step, torch.Tensor]:
    """Encode x (B, S) once; return ``step(prev (K,), h (K, H)) -> (log_probs (K, vocab), h (K, H))`` and h0 (B, H).

    K = B (one hypothesis per input), or any K when B = 1 (K beams of one input share its encoder states).
    """
    states, summary = model.encoder(x)

    def step(prev: torch.Tensor, h: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        k = prev.shape[0]
        st, sm = (states, summary) if k == states.shape[0] else (states.expand(k, -1, -1), summary.expand(k, -1))
        logits, h, _ = model.decoder(prev[:, None], h, st, sm)
        return logits[:, 0].log_softmax(-1), h

    return step, model.decoder.start(summary)


@torch.no_grad()
def greedy_decode(step: Step, h0: torch.Tensor, max_len: int, bos: int = BOS,
                  eos: int = EOS) -> tuple[torch.Tensor, torch.Tensor]:
    """Feed back the most probable token each step, for a batch. h0 (B, H).

    Returns tokens (B, max_len) — after a row's first ``eos`` the rest is ``eos`` — and the log-probability (B,)
    of each row up to and including its first ``eos`` (of all max_len tokens if it never ends).
    """
    prev, h = torch.full((h0.shape[0],), bos), h0
    done = torch.zeros(h0.shape[0], dtype=torch.bool)
    total, out = torch.zeros(h0.shape[0]), []
    for _ in range(max_len):
        log_probs, h = step(prev, h)
        token = torch.where(done, eos, log_probs.argmax(-1))
        total += torch.where(done, 0.0, log_probs.gather(1, token[:, None])[:, 0])
        done |= token == eos
        out.append(token)
        prev = token
    return torch.stack(out, 1), total


def trim_at_eos(tokens: Sequence[int], eos: int = EOS) -> list[int]:
    """The tokens up to and including the first ``eos`` (all of them if there is none), as a list of ints."""
    tokens = [int(t) for t in tokens]
    return tokens[:tokens.index(eos) + 1] if eos in tokens else tokens


@torch.no_grad()
def beam_search(step: Step, h0: torch.Tensor, beam_width: int, max_len: int, bos: int = BOS,
                eos: int = EOS) -> tuple[list[int], float]:
    """The most probable output sequence we can find by keeping the ``beam_width`` best prefixes at every step.

    step(prev (K,), h (K, H)) -> (log_probs (K, vocab), h (K, H)); h0 (1, H): one input. A sequence's score is the
    sum of its tokens' log-probabilities; it ends with ``eos`` or is cut at ``max_len`` tokens.
    Returns (tokens, log_prob): the tokens as a list of ints (without ``bos``, ending with ``eos`` unless cut).

    1. Incumbent: start from the greedy answer, so the search can only improve on it.
    2. Each step extend every alive prefix by every token: score = prefix score + log p(token).
       An extension by ``eos`` is a finished sequence: keep it if it beats the best so far.
       Keep the ``beam_width`` best other extensions alive (and reorder h with them).
    3. Log-probabilities never rise, so a prefix that does not beat the best finished score can never win:
       drop it; stop when no prefix is left. At ``max_len``, a cut prefix counts as a sequence too.
    """
    tokens, score = greedy_decode(step, h0, max_len, bos, eos)
    best, best_score = trim_at_eos(tokens[0].tolist(), eos), float(score[0])
    prefixes, scores = [[]], torch.zeros(1)
    prev, h = torch.tensor([bos]), h0
    for _ in range(max_len):
        log_probs, h = step(prev, h)
        total = scores[:, None] + log_probs                       # (K, vocab): every one-token extension
        for k in range(len(prefixes)):
            if total[k, eos] > best_score:
                best, best_score = prefixes[k] + [eos], float(total[k, eos])
        total[:, eos] = float("-inf")                              # finished sequences leave the beam
        top, index = total.flatten().topk(min(beam_width, total.numel()))
        keep = top > best_score                                    # the others can never catch up
        if not keep.any():
            return best, best_score
        top, index = top[keep], index[keep]
        beam, token = index // total.shape[1], index % total.shape[1]
        prefixes = [prefixes[b] + [int(t)] for b, t in zip(beam, token)]
        scores, prev, h = top, token, h[beam]
    k = int(scores.argmax())                                       # max_len reached: cut prefixes compete too
    if scores[k] > best_score:
        best, best_score = prefixes[k], float(scores[k])
    return best, best_score


def _beam_no_incumbent(step, h0, beam_width, max_len, bos=BOS, eos=EOS):
    best, best_score = None, float("-inf")
    prefixes, scores = [[]], torch.zeros(1)
    prev, h = torch.tensor([bos]), h0
    for _ in range(max_len):
        log_probs, h = step(prev, h)
        total = scores[:, None] + log_probs
        for k in range(len(prefixes)):
            if total[k, eos] > best_score:
                best, best_score = prefixes[k] + [eos], float(total[k, eos])
        total[:, eos] = float("-inf")
        top, index = total.flatten().topk(min(beam_width, total.numel()))
        keep = top > best_score
        if not keep.any():
            return best, best_score
        top, index = top[keep], index[keep]
        beam, token = index // total.shape[1], index % total.shape[1]
        prefixes = [prefixes[b] + [int(t)] for b, t in zip(beam, token)]
        scores, prev, h = top, token, h[beam]
    k = int(scores.argmax())
    if scores[k] > best_score:
        best, best_score = prefixes[k], float(scores[k])
    return best, best_score


def _beam_variant(*, add_prefix: bool = True, stop_at_first_eos: bool = False, reorder_h: bool = True,
                  length_norm: bool = False) -> Callable:
    """A (wrong) beam search for the registry of common mistakes; greedy incumbent as in the reference."""

    def search(step, h0, beam_width, max_len, bos=BOS, eos=EOS):
        tokens, score = greedy_decode(step, h0, max_len, bos, eos)
        best, best_score = trim_at_eos(tokens[0].tolist(), eos), float(score[0])

        def rank(s, n):  # the value used to compare hypotheses
            return s / n if length_norm else s

        best_rank = rank(best_score, len(best))
        prefixes, scores = [[]], torch.zeros(1)
        prev, h = torch.tensor([bos]), h0
        for _ in range(max_len):
            log_probs, h = step(prev, h)
            total = (scores[:, None] if add_prefix else 0.0) + log_probs
            true_total = scores[:, None] + log_probs
            for k in range(len(prefixes)):
                r = rank(float(total[k, eos]), len(prefixes[k]) + 1)
                if r > best_rank:
                    best, best_score, best_rank = prefixes[k] + [eos], float(true_total[k, eos]), r
                    if stop_at_first_eos:
                        return best, best_score
            total = total.clone()
            total[:, eos] = float("-inf")
            ranked = total / (len(prefixes[0]) + 1) if length_norm else total
            top, index = ranked.flatten().topk(min(beam_width, total.numel()))
            keep = top > best_rank if not length_norm else torch.ones_like(top, dtype=torch.bool)
            if not keep.any():
                return best, best_score
            index = index[keep]
            beam, token = index // total.shape[1], index % total.shape[1]
            prefixes = [prefixes[b] + [int(t)] for b, t in zip(beam, token)]
            scores = true_total[beam, token]
            prev = token
            h = h[beam] if reorder_h else h[:len(beam)] if len(beam) <= len(h) else h[beam]
        k = int(scores.argmax())
        if rank(float(scores[k]), len(prefixes[k])) > best_rank:
            best, best_score = prefixes[k], float(scores[k])
        return best, best_score

    return search


# ------------------------------------------------------------------------- toy language models for checks
class TableLM:
    """A hand-written "language model": next-token probabilities looked up by the prefix generated so far.

    ``table``: {prefix string: {token: probability}}, tokens as single characters (``"$"`` is the end token);
    unknown prefixes use ``default``. ``step``/``h0`` follow the decoder interface: the hidden state (K, 1) is
    just the index of each hypothesis' prefix in an internal list, so beams must reorder it like a real state.
    """

    def __init__(self, symbols: str, table: dict[str, dict[str, float]], default: dict[str, float]):
        self.symbols = symbols + "$"
        self.eos = len(symbols)
        self.bos = len(symbols) + 1
        self.table, self.default = table, default
        self.prefixes: list[str] = [""]

    @property
    def h0(self) -> torch.Tensor:
        return torch.zeros(1, 1)

    def step(self, prev: torch.Tensor, h: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        rows, new_h = [], []
        for p, i in zip(prev.tolist(), h[:, 0].long().tolist()):
            prefix = self.prefixes[i] + (self.symbols[p] if p < len(self.symbols) else "")
            self.prefixes.append(prefix)
            new_h.append(len(self.prefixes) - 1)
            probs = self.table.get(prefix, self.default)
            row = torch.full((len(self.symbols) + 1,), 1e-12)  # + bos (never generated)
            for s, q in probs.items():
                row[self.symbols.index(s)] = q
            rows.append((row / row.sum()).log())
        return torch.stack(rows), torch.tensor(new_h, dtype=torch.float32)[:, None]

    def decode(self, tokens: Sequence[int]) -> str:
        return "".join(self.symbols[t] for t in tokens)


def toy_lm(name: str) -> TableLM:
    """The hand-made language models of the beam-search checks and of the lecture's first beam example."""
    if name == "greedy is not the most probable":
        # "a" is the likelier first token, but after it everything is uncertain; "b" is followed by a sure end
        return TableLM("ab", {"": {"a": 0.6, "b": 0.4}, "a": {"a": 0.3, "b": 0.25, "$": 0.45},
                              "b": {"$": 0.9, "a": 0.06, "b": 0.04}},
                       default={"a": 0.5, "b": 0.3, "$": 0.2})
    if name == "plain beam prunes the greedy path":
        # width 2 keeps "ba", "bb" (0.198 each) over greedy's "aa" (0.16); both then dissolve, "aa" ends surely
        return TableLM("abc", {"": {"a": 0.4, "b": 0.36, "c": 0.24}, "a": {"a": 0.4, "b": 0.31, "c": 0.29},
                               "b": {"a": 0.55, "b": 0.45}, "aa": {"$": 1.0}},
                       default={"a": 0.3, "b": 0.28, "c": 0.26, "$": 0.16})
    if name == "never ends":
        return TableLM("ab", {}, default={"a": 0.7, "b": 0.3})
    raise KeyError(name)


class _RandomGRULM(nn.Module):
    """A random GRU language model (vocab 6 + bos; token 4 is the end): a realistic, tie-free step function."""

    def __init__(self, seed: int, eos_bias: float = 0.0):
        super().__init__()
        torch.manual_seed(seed)
        self.embed, self.cell, self.out = nn.Embedding(7, 4), nn.GRUCell(4, 8), nn.Linear(8, 6)
        with torch.no_grad():
            self.out.weight.mul_(6.0)
            self.out.bias[4] += eos_bias

    def step(self, prev, h):
        h = self.cell(self.embed(prev), h)
        return self.out(h).log_softmax(-1), h


def _beam_runner(impl: Callable, case: Case) -> tuple[list[int], float] | None:
    kind, name, width, max_len = case.args
    if kind == "table":
        lm = toy_lm(name)
        step, h0, bos, eos = lm.step, lm.h0, lm.bos, lm.eos
    else:
        lm = _RandomGRULM(seed=name, eos_bias=case.kwargs.get("eos_bias", 0.0))
        step, h0, bos, eos = lm.step, torch.randn(1, 8, generator=torch.Generator().manual_seed(name)), 6, 4
    with torch.no_grad():
        out = impl(step, h0, beam_width=width, max_len=max_len, bos=bos, eos=eos)
    if out is None:
        return None
    tokens, log_prob = out
    return [int(t) for t in tokens], float(log_prob)


def _beam_cases() -> list[Case]:
    return [
        Case(("table", "greedy is not the most probable", 2, 5),
             label="toy LM where greedy's first choice is a trap, width 2"),
        Case(("table", "plain beam prunes the greedy path", 2, 4),
             label="toy LM where a width-2 beam drops greedy's path (the incumbent must save it)"),
        Case(("table", "never ends", 3, 4), label="toy LM that never emits the end token (cut at max_len=4)"),
        Case(("gru", 0, 1, 8), label="random GRU LM, width 1"),
        Case(("gru", 1, 3, 8), label="random GRU LM, width 3"),
        Case(("gru", 2, 5, 10), {"eos_bias": -2.0}, label="random GRU LM, width 5, rare end token"),
        Case(("gru", 3, 20, 6), label="random GRU LM, width 20 (more than the vocabulary)"),
    ]


# ------------------------------------------------------------------------------------------ module checks
def _attention_cases() -> list[Case]:
    g = torch.Generator().manual_seed(0)
    mask = torch.tensor([[True] * 6, [True] * 4 + [False] * 2, [True] + [False] * 5])
    return [
        Case((torch.randn(2, 3, 5, generator=g), torch.randn(2, 4, 6, generator=g)),
             dict(query_dim=5, key_dim=6, attn_dim=7), label="B=2, T=3 queries, S=4 keys", seed=1),
        Case((torch.randn(4, 1, 8, generator=g), torch.randn(4, 7, 8, generator=g)),
             dict(query_dim=8, key_dim=8, attn_dim=4), label="one query per example (a decoding step), S=7", seed=2),
        Case((torch.randn(3, 2, 4, generator=g), torch.randn(3, 6, 5, generator=g), mask),
             dict(query_dim=4, key_dim=5, attn_dim=6),
             label="padding mask: example 1 has 4 real keys, example 2 only one", seed=3),
        Case((3 * torch.randn(2, 5, 3, generator=g), 3 * torch.randn(2, 3, 3, generator=g)),
             dict(query_dim=3, key_dim=3, attn_dim=8), label="large inputs (tanh saturates)", seed=4),
    ]


def _decoder_build(case: Case) -> dict:
    kw = dict(case.kwargs)
    kind = kw.pop("attention")
    attention = None if kind is None else ATTENTIONS[kind](kw["hidden"], kw["enc_dim"], kw["hidden"])
    return dict(kw, attention=attention)


def _decoder_cases() -> list[Case]:
    def inputs(seed, B, T, S, H, D):
        g = torch.Generator().manual_seed(seed)
        return (torch.randint(0, VOCAB, (B, T), generator=g), torch.randn(B, H, generator=g),
                torch.randn(B, S, D, generator=g), torch.randn(B, D, generator=g))

    dims = dict(vocab_size=VOCAB, emb_dim=4, hidden=6, enc_dim=8)
    return [
        Case(inputs(0, 3, 1, 5, 6, 8), dict(dims, attention="additive"),
             label="additive attention, one step (T=1), B=3, S=5", seed=1),
        Case(inputs(1, 2, 4, 6, 6, 8), dict(dims, attention="additive"),
             label="additive attention, teacher forcing over T=4 tokens", seed=2),
        Case(inputs(2, 2, 3, 4, 6, 8), dict(dims, attention="dot"), label="dot-product attention, T=3", seed=3),
        Case(inputs(3, 2, 3, 4, 6, 8), dict(dims, attention=None),
             label="no attention (the bottleneck): context = summary", seed=4),
    ]


# ------------------------------------------------------------------------------------------------- measuring
@torch.no_grad()
def evaluate_lengths(model: nn.Module, lengths: Sequence[int], n: int = 500, seed: int = 10_000) -> dict[int, dict]:
    """Greedy decoding of ``n`` fresh inputs per length. For each length: "seq_acc" (whole output right, ``</s>``
    included), "tok_acc", "per_position" (L + 1,) accuracy by output position, and "teacher_forced_tok_acc"
    (argmax of the logits when the true previous tokens are fed: no compounding of mistakes) and
    "teacher_forced_per_position"."""
    results = {}
    for length in lengths:
        x, y_in, y_out = reversal_batch(n, length, seed=seed + length)
        step, h0 = decoder_step_fn(model, x)
        pred, _ = greedy_decode(step, h0, max_len=length + 1)
        right = pred == y_out
        logits, _ = model(x, y_in)
        results[length] = {
            "seq_acc": right.all(1).float().mean().item(),
            "tok_acc": right.float().mean().item(),
            "per_position": right.float().mean(0),
            "teacher_forced_tok_acc": (logits.argmax(-1) == y_out).float().mean().item(),
            "teacher_forced_per_position": (logits.argmax(-1) == y_out).float().mean(0),
        }
    return results


# --------------------------------------------------------------------------------------------------- plots
def plot_alignment(weights: torch.Tensor, source: Sequence[int], output: Sequence[int], ax: plt.Axes | None = None,
                   title: str = "attention weights") -> plt.Figure:
    """Heat-map of attention weights (T, S): one row per output token, one column per source token."""
    weights = torch.as_tensor(weights).detach().float()
    if weights.shape != (len(output), len(source)):
        raise ValueError(f"weights {tuple(weights.shape)} do not match (output, source) = ({len(output)}, "
                         f"{len(source)})")
    if ax is None:
        fig, ax = plt.subplots(figsize=(0.28 * len(source) + 1.6, 0.28 * len(output) + 1.2))
    else:
        fig = ax.figure
    im = ax.imshow(weights.numpy(), cmap="viridis", vmin=0, vmax=1, aspect="auto")
    ax.set_xticks(range(len(source)), [TOKENS[t] for t in source], fontsize=7)
    ax.set_yticks(range(len(output)), [TOKENS[t] for t in output], fontsize=7)
    ax.set(title=title, xlabel="source token (input)", ylabel="output token (generated)")
    fig.colorbar(im, ax=ax, fraction=0.04, pad=0.02, label="weight")
    return fig


@torch.no_grad()
def show_decoding(model: nn.Module, source: torch.Tensor, beam_width: int = 1,
                  baseline: nn.Module | None = None, name: str = "attention model",
                  search: Callable = beam_search) -> plt.Figure:
    """Decode one source (S,) with ``search`` (a beam search), then plot where the model looked while writing
    each output token. The greedy output of ``baseline`` (a no-attention model) is printed below for comparison.
    """
    source = torch.as_tensor(source).long()
    target = source.flip(0).tolist() + [EOS]
    step, h0 = decoder_step_fn(model, source[None])
    output, log_prob = search(step, h0, beam_width, max_len=len(source) + 1)
    output = [int(t) for t in output]
    prev = torch.tensor([[BOS] + output[:-1]])
    _, weights = model(source[None], prev)                  # the weights behind each generated token
    fig, ax = plt.subplots(figsize=(7, 5.6))
    ok = "right" if output == target else "WRONG"
    plot_alignment(weights[0], source.tolist(), output, ax=ax,
                   title=f"{name}, beam width {beam_width}: {ok}, log p = {log_prob:.3f}")
    lines = ["input    " + " ".join(TOKENS[t] for t in source.tolist()),
             "target   " + " ".join(TOKENS[t] for t in target),
             "output   " + " ".join(TOKENS[t] if t == g else "×" for t, g in zip(output, target + [None] * 99))
             + ("" if output == target else "   (× = wrong)")]
    if baseline is not None:
        b_step, b_h0 = decoder_step_fn(baseline, source[None])
        b_out = trim_at_eos(greedy_decode(b_step, b_h0, len(source) + 1)[0][0].tolist())
        marks = " ".join(TOKENS[t] if t == g else "×" for t, g in zip(b_out, target))
        lines.append(f"no attn  {marks}   ({sum(t == g for t, g in zip(b_out, target))}/{len(target)} right, "
                     f"× = wrong)")
    fig.subplots_adjust(top=0.94, bottom=0.27)
    fig.text(0.02, 0.01, "\n".join(lines), family="monospace", fontsize=8.5, va="bottom")
    return fig


# ----------------------------------------------------------------------------------------------- registry
EXERCISES = [
    Exercise(
        name="AdditiveAttention",
        reference=AdditiveAttention,
        cases=_attention_cases,
        runner=run_module(AdditiveAttention, outputs=["context", "weights"]),
        mistakes={
            "softmax over the queries (dim 1) instead of over the source positions (last dim)":
                _AttnSoftmaxOverQueries,
            "forgot the tanh: then the query term is the same for every key and cancels in the softmax":
                _AttnNoTanh,
            "ignored the mask: padding positions still get attention": _AttnIgnoresMask,
            "masked with 0 instead of -inf: a score of 0 still gets weight after the softmax": _AttnMaskWithZero,
        },
        hint="scores = self.v(torch.tanh(self.W_q(query)[:, :, None] + self.W_k(keys)[:, None])).squeeze(-1) "
             "gives (B, T, S); masked_fill(~mask[:, None, :], float('-inf')); softmax(dim=-1); "
             "context = weights @ keys.",
        atol=1e-5, rtol=1e-4,
    ),
    Exercise(
        name="Decoder",
        reference=Decoder,
        cases=_decoder_cases,
        runner=run_module(Decoder, build=_decoder_build, outputs=["logits", "h", "weights"]),
        mistakes={
            "never used the attention's context: the output layer still reads the fixed summary":
                _DecoderNeverAttends,
            "did not pass h to the GRU, so every call starts from a zero state": _DecoderZeroState,
            "attended with the incoming state h instead of the GRU's new outputs": _DecoderQueryIsIncomingState,
            "returned the incoming h instead of the GRU's last state": _DecoderReturnsIncomingState,
        },
        hint="inputs = cat([embed(prev), summary repeated T times], -1); outputs, h_last = self.rnn(inputs, h[None]); "
             "context, weights = self.attention(outputs, states) (or the repeated summary and None); "
             "logits = self.out(cat([outputs, context], -1)); return logits, h_last[0], weights.",
        atol=1e-5, rtol=1e-4,
    ),
    Exercise(
        name="beam_search",
        reference=beam_search,
        cases=_beam_cases,
        runner=_beam_runner,
        mistakes={
            "no greedy incumbent: plain beam search can drop the greedy path and end below it": _beam_no_incumbent,
            "ranked extensions by the new token's log-prob only, without the prefix's score":
                _beam_variant(add_prefix=False),
            "returned the first finished sequence that beat greedy instead of searching on":
                _beam_variant(stop_at_first_eos=True),
            "did not reorder the hidden states with the surviving beams (h[beam])": _beam_variant(reorder_h=False),
            "compared length-normalised scores (log p / length) instead of log p": _beam_variant(length_norm=True),
        },
        hint="Start from greedy_decode's answer (best, best_score). Each step: total = scores[:, None] + log_probs; "
             "harvest total[:, eos] into best; set that column to -inf; topk(beam_width) over total.flatten(); "
             "beam = index // vocab, token = index % vocab; drop prefixes not above best_score; h = h[beam].",
        atol=1e-5, rtol=1e-5,
    ),
]
