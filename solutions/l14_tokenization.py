"""Lecture 14 — tokenization: UTF-8 bytes, byte-pair encoding (BPE), regex pre-splitting, special tokens,
compression and the quirks that bite LLMs.

Reference solutions and the exercise registry (COURSE_DESIGN §2), minbpe-style:

* ``get_stats``: count every pair of consecutive ids (overlapping pairs included);
* ``merge``: replace every non-overlapping occurrence of a pair, left to right, by a new id;
* ``encode``: text -> UTF-8 bytes -> apply the learned merges, earliest-learned first;
* ``decode``: ids -> bytes (through the vocab) -> text (``errors="replace"``).

Beyond the exercises (unit-tested in tests/test_l14_tokenization.py): the two trainers ``train_simple`` (recount
everything after every merge) and ``train_fast`` (deduplicated chunks, pair counts updated only where a merge
happens, a lazy max-heap) which learn *identical* merges; the tokenizers ``BasicTokenizer`` and
``RegexTokenizer`` (GPT-2 / GPT-4 split patterns, special tokens) with minbpe's API (``train``, ``encode``,
``decode``, ``.merges``, ``.vocab``, ``save``/``load``); ``truncated`` (the same tokenizer with fewer merges),
``compression_ratio`` and ``token_html`` (the widget's coloured token boundaries).

Ties between equally frequent pairs are broken by the smallest pair (lexicographic), in both trainers, so the
result does not depend on dictionary order.
"""
from __future__ import annotations

import heapq
import html
import json
from collections import Counter, defaultdict
from pathlib import Path
from typing import Iterable, Sequence

import regex

from utils.exercises import Case, Exercise

__all__ = [
    "GPT2_SPLIT_PATTERN", "GPT4_SPLIT_PATTERN", "get_stats", "merge", "encode", "decode", "build_vocab",
    "best_pair", "train_simple", "train_fast", "Tokenizer", "BasicTokenizer", "RegexTokenizer", "truncated",
    "compression_ratio", "token_html", "EXERCISES",
]

# the pre-split patterns of GPT-2 and GPT-4 (cl100k_base), as in tiktoken / minbpe
GPT2_SPLIT_PATTERN = r"""'(?:[sdmt]|ll|ve|re)| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+"""
GPT4_SPLIT_PATTERN = (r"""'(?i:[sdmt]|ll|ve|re)|[^\r\n\p{L}\p{N}]?+\p{L}+|\p{N}{1,3}| ?[^\s\p{L}\p{N}]++[\r\n]*|"""
                      r"""\s*[\r\n]|\s+(?!\S)|\s+""")

Pair = tuple[int, int]


# ------------------------------------------------------------------------------------------------ exercises
def get_stats(ids: Sequence[int], counts: dict[Pair, int] | None = None) -> dict[Pair, int]:
    """Count consecutive pairs. ids: list of n ints -> {(a, b): how often b follows a} (n - 1 pairs in total,
    overlapping ones included: [1, 1, 1] has the pair (1, 1) twice). If ``counts`` is given, add to it in place
    (and return it), so the counts of many chunks can be summed."""
    counts = {} if counts is None else counts
    for pair in zip(ids, ids[1:]):
        counts[pair] = counts.get(pair, 0) + 1
    return counts


def merge(ids: Sequence[int], pair: Pair, idx: int) -> list[int]:
    """Replace every occurrence of ``pair`` in ``ids``, scanning left to right without overlaps, by ``idx``.
    ids: list of n ints -> new list of <= n ints. merge([5, 5, 5], (5, 5), 9) == [9, 5]."""
    out, i = [], 0
    while i < len(ids):
        if i < len(ids) - 1 and ids[i] == pair[0] and ids[i + 1] == pair[1]:
            out.append(idx)
            i += 2  # skip both halves of the pair
        else:
            out.append(ids[i])
            i += 1
    return out


def encode(text: str, merges: dict[Pair, int]) -> list[int]:
    """text -> its UTF-8 bytes (ints 0..255) -> repeatedly merge the pair that was learned EARLIEST (the smallest
    new id in ``merges``) until no mergeable pair is left. Returns the list of token ids."""
    ids = list(text.encode("utf-8"))
    while len(ids) >= 2:
        stats = get_stats(ids)
        pair = min(stats, key=lambda p: merges.get(p, float("inf")))  # the earliest-learned merge present
        if pair not in merges:
            break  # nothing left to merge
        ids = merge(ids, pair, merges[pair])
    return ids


def decode(ids: Sequence[int], vocab: dict[int, bytes]) -> str:
    """ids -> concatenate their bytes (``vocab[id]``) -> decode the whole byte string as UTF-8. Invalid UTF-8
    (a model can emit any id sequence) becomes the replacement character U+FFFD (``errors="replace"``)."""
    return b"".join(vocab[i] for i in ids).decode("utf-8", errors="replace")


# ------------------------------------------------------------------------------------- the common mistakes
def _stats_step_two(ids, counts=None):
    counts = {} if counts is None else counts
    for pair in zip(ids[::2], ids[1::2]):  # only pairs starting at even positions
        counts[pair] = counts.get(pair, 0) + 1
    return counts


def _stats_presence(ids, counts=None):
    counts = {} if counts is None else counts
    for pair in zip(ids, ids[1:]):
        counts[pair] = 1  # overwrites instead of counting
    return counts


def _merge_overlapping(ids, pair, idx):
    out, i = [], 0
    while i < len(ids):
        if i < len(ids) - 1 and ids[i] == pair[0] and ids[i + 1] == pair[1]:
            out.append(idx)
            i += 1  # forgot to skip the second half of the pair
        else:
            out.append(ids[i])
            i += 1
    return out


def _merge_drops_last(ids, pair, idx):
    out, i = [], 0
    while i < len(ids) - 1:  # the last element is never visited
        if ids[i] == pair[0] and ids[i + 1] == pair[1]:
            out.append(idx)
            i += 2
        else:
            out.append(ids[i])
            i += 1
    return out


def _encode_code_points(text, merges):
    ids = [ord(c) for c in text]  # code points, not bytes
    while len(ids) >= 2:
        stats = get_stats(ids)
        pair = min(stats, key=lambda p: merges.get(p, float("inf")))
        if pair not in merges:
            break
        ids = merge(ids, pair, merges[pair])
    return ids


def _encode_most_frequent(text, merges):
    ids = list(text.encode("utf-8"))
    while len(ids) >= 2:
        stats = get_stats(ids)
        candidates = {p: c for p, c in stats.items() if p in merges}
        if not candidates:
            break
        pair = max(candidates, key=candidates.get)  # most frequent here, not earliest learned
        ids = merge(ids, pair, merges[pair])
    return ids


def _decode_per_token(ids, vocab):
    return "".join(vocab[i].decode("utf-8", errors="replace") for i in ids)  # splits multi-byte characters


def _decode_latin1(ids, vocab):
    return b"".join(vocab[i] for i in ids).decode("latin-1")


# --------------------------------------------------------------------------------------------- the trainers
def build_vocab(merges: dict[Pair, int], special_tokens: dict[str, int] | None = None) -> dict[int, bytes]:
    """id -> bytes: the 256 single bytes, then each merge's new id as the concatenation of its two halves
    (in the order the merges were learned), then the special tokens."""
    vocab = {i: bytes([i]) for i in range(256)}
    for (a, b), idx in sorted(merges.items(), key=lambda kv: kv[1]):
        vocab[idx] = vocab[a] + vocab[b]
    for s, idx in (special_tokens or {}).items():
        vocab[idx] = s.encode("utf-8")
    return vocab


def best_pair(stats: dict[Pair, int]) -> Pair:
    """The most frequent pair; ties go to the smallest pair, so the choice never depends on dict order."""
    return min(stats, key=lambda p: (-stats[p], p))


def train_simple(chunks: Iterable[Sequence[int]], num_merges: int, verbose: bool = False) -> dict[Pair, int]:
    """The textbook trainer: after every merge, recount all pairs of all chunks. O(num_merges × text length).
    chunks: lists of byte ids (pairs never cross a chunk boundary). Returns {pair: new id}, ids 256, 257, ..."""
    chunks = [list(c) for c in chunks]
    merges: dict[Pair, int] = {}
    for k in range(num_merges):
        stats: dict[Pair, int] = {}
        for c in chunks:
            get_stats(c, stats)
        if not stats:
            break  # everything is one token already
        pair, idx = best_pair(stats), 256 + k
        chunks = [merge(c, pair, idx) for c in chunks]
        merges[pair] = idx
        if verbose:
            print(f"merge {k + 1}/{num_merges}: {pair} -> {idx} ({stats[pair]} occurrences)")
    return merges


def train_fast(chunks: Iterable[Sequence[int]], num_merges: int, verbose: bool = False) -> dict[Pair, int]:
    """Same merges as :func:`train_simple`, much faster:

    1. identical chunks (the word " the" appears thousands of times) are stored once with a count;
    2. pair counts are kept between merges and updated only in the chunks that contain the merged pair
       (``where[pair]`` = the set of those chunks);
    3. the best pair comes from a max-heap of (-count, pair); entries whose count went stale are skipped
       when popped ("lazy deletion").
    """
    freq = Counter(tuple(c) for c in chunks)
    words = [list(w) for w in freq]
    counts = list(freq.values())
    stats: dict[Pair, int] = defaultdict(int)
    where: dict[Pair, set[int]] = defaultdict(set)
    for w, (word, n) in enumerate(zip(words, counts)):
        for pair in zip(word, word[1:]):
            stats[pair] += n
            where[pair].add(w)
    heap = [(-c, p) for p, c in stats.items()]
    heapq.heapify(heap)
    merges: dict[Pair, int] = {}
    for k in range(num_merges):
        while heap and (heap[0][0] != -stats.get(heap[0][1], 0) or heap[0][0] == 0):
            heapq.heappop(heap)  # stale entry: its count changed since it was pushed
        if not heap:
            break
        neg, pair = heapq.heappop(heap)
        idx = 256 + k
        merges[pair] = idx
        if verbose:
            print(f"merge {k + 1}/{num_merges}: {pair} -> {idx} ({-neg} occurrences)")
        changed: set[Pair] = set()
        for w in where.pop(pair):
            word, n = words[w], counts[w]
            for p in zip(word, word[1:]):  # remove this chunk's old pairs ...
                stats[p] -= n
                changed.add(p)
            word = words[w] = merge(word, pair, idx)
            for p in zip(word, word[1:]):  # ... and add its new ones
                stats[p] += n
                where[p].add(w)
                changed.add(p)
        stats.pop(pair, None)
        for p in changed:
            if stats.get(p, 0) > 0:
                heapq.heappush(heap, (-stats[p], p))
            else:
                stats.pop(p, None)
    return merges


# ---------------------------------------------------------------------------------------------- tokenizers
class Tokenizer:
    """Base class (minbpe's API): ``merges`` {pair: id}, ``vocab`` {id: bytes}, ``save``/``load``."""

    pattern: str = ""

    def __init__(self) -> None:
        self.merges: dict[Pair, int] = {}
        self.special_tokens: dict[str, int] = {}
        self.vocab: dict[int, bytes] = build_vocab(self.merges)

    def _chunks(self, text: str) -> list[list[int]]:
        return [list(text.encode("utf-8"))]

    def train(self, text: str, vocab_size: int, verbose: bool = False, fast: bool = False) -> None:
        """Learn ``vocab_size - 256`` merges from ``text``. ``fast=True`` uses :func:`train_fast` (same result)."""
        if vocab_size < 256:
            raise ValueError(f"vocab_size must be >= 256 (the bytes), got {vocab_size}")
        trainer = train_fast if fast else train_simple
        self.merges = trainer(self._chunks(text), vocab_size - 256, verbose=verbose)
        self.vocab = build_vocab(self.merges, self.special_tokens)

    def encode_ordinary(self, text: str) -> list[int]:
        return encode(text, self.merges)

    def encode(self, text: str) -> list[int]:
        return self.encode_ordinary(text)

    def decode(self, ids: Sequence[int]) -> str:
        return decode(ids, self.vocab)

    def save(self, path: str | Path) -> None:
        """Write the tokenizer to ``path`` (JSON: class, pattern, merges in order, special tokens)."""
        data = {"type": type(self).__name__, "pattern": self.pattern,
                "merges": [[a, b, idx] for (a, b), idx in sorted(self.merges.items(), key=lambda kv: kv[1])],
                "special_tokens": self.special_tokens}
        Path(path).write_text(json.dumps(data), encoding="utf-8")

    def load(self, path: str | Path) -> Tokenizer:
        """Read what :meth:`save` wrote (into this tokenizer; returns it)."""
        data = json.loads(Path(path).read_text(encoding="utf-8"))
        if data["type"] != type(self).__name__:
            raise ValueError(f"{path} holds a {data['type']}, not a {type(self).__name__}")
        self.pattern = data["pattern"]
        self.merges = {(a, b): idx for a, b, idx in data["merges"]}
        self.special_tokens = dict(data["special_tokens"])
        self.vocab = build_vocab(self.merges, self.special_tokens)
        return self


class BasicTokenizer(Tokenizer):
    """Byte-level BPE on the raw text: merges may cross word boundaries (" the" + "m" ...)."""


class RegexTokenizer(Tokenizer):
    """BPE inside the chunks of a split pattern (GPT-4's by default), so merges never cross e.g. a letter/space
    or letter/digit boundary; plus special tokens such as ``<|endoftext|>`` that bypass BPE."""

    def __init__(self, pattern: str | None = None) -> None:
        super().__init__()
        self.pattern = GPT4_SPLIT_PATTERN if pattern is None else pattern
        self._cache: dict[str, list[int]] = {}

    def _chunks(self, text: str) -> list[list[int]]:
        return [list(c.encode("utf-8")) for c in regex.findall(self.pattern, text)]

    def train(self, text: str, vocab_size: int, verbose: bool = False, fast: bool = True) -> None:
        self._cache = {}
        super().train(text, vocab_size, verbose=verbose, fast=fast)

    def load(self, path: str | Path) -> RegexTokenizer:
        self._cache = {}
        return super().load(path)

    def register_special_tokens(self, special_tokens: dict[str, int]) -> None:
        """e.g. {"<|endoftext|>": 100257}; ids must not collide with the merges."""
        clash = set(special_tokens.values()) & set(self.merges.values())
        if clash or min(special_tokens.values(), default=256) < 256:
            raise ValueError(f"special token ids {sorted(clash)} collide with byte or merge ids")
        self.special_tokens = dict(special_tokens)
        self.vocab = build_vocab(self.merges, self.special_tokens)

    def encode_ordinary(self, text: str) -> list[int]:
        """Encode ignoring special tokens: split with the pattern, BPE each chunk (memoised: chunks repeat)."""
        ids: list[int] = []
        for chunk in regex.findall(self.pattern, text):
            if chunk not in self._cache:
                self._cache[chunk] = encode(chunk, self.merges)
            ids.extend(self._cache[chunk])
        return ids

    def encode(self, text: str, allowed_special: str | set[str] = "none_raise") -> list[int]:
        """``allowed_special``: "all", "none" (encode them as ordinary text), "none_raise" (the default: raise if
        the text contains one — a user must not be able to inject <|endoftext|>) or a set of allowed tokens."""
        if allowed_special == "all":
            special = self.special_tokens
        elif allowed_special in ("none", "none_raise"):
            special = {}
            if allowed_special == "none_raise":
                found = [s for s in self.special_tokens if s in text]
                if found:
                    raise ValueError(f"text contains special tokens {found}; pass allowed_special")
        elif isinstance(allowed_special, set):
            special = {s: i for s, i in self.special_tokens.items() if s in allowed_special}
        else:
            raise ValueError(f"allowed_special={allowed_special!r} not understood")
        if not special:
            return self.encode_ordinary(text)
        parts = regex.split("(" + "|".join(regex.escape(s) for s in special) + ")", text)
        ids: list[int] = []
        for part in parts:
            ids.extend([special[part]] if part in special else self.encode_ordinary(part))
        return ids


def truncated(tokenizer: Tokenizer, vocab_size: int) -> Tokenizer:
    """The same tokenizer with only its first ``vocab_size - 256`` merges (BPE's merges are learned greedily,
    so this is exactly what training to ``vocab_size`` would have given)."""
    small = type(tokenizer)() if not isinstance(tokenizer, RegexTokenizer) else RegexTokenizer(tokenizer.pattern)
    small.merges = {p: i for p, i in tokenizer.merges.items() if i < vocab_size}
    small.vocab = build_vocab(small.merges)
    return small


def compression_ratio(tokenizer: Tokenizer, text: str) -> float:
    """UTF-8 bytes per token (1.0 = no compression)."""
    return len(text.encode("utf-8")) / max(1, len(tokenizer.encode_ordinary(text)))


# ------------------------------------------------------------------------------------------------ the widget
_COLOURS = ["#ffd6a5", "#caffbf", "#9bf6ff", "#bdb2ff", "#ffc6ff", "#fdffb6", "#a0c4ff", "#ffadad"]


def token_html(tokenizer: Tokenizer, text: str, show_ids: bool = True) -> str:
    """HTML with each token of ``text`` on its own coloured background (and its id below). A token that is only
    part of a multi-byte character is shown as its bytes in hex."""
    ids = tokenizer.encode_ordinary(text)
    spans = []
    for k, i in enumerate(ids):
        raw = tokenizer.vocab[i]
        try:
            piece = raw.decode("utf-8")
        except UnicodeDecodeError:
            piece = raw.hex(" ")
        piece = html.escape(piece).replace(" ", "&middot;").replace("\n", "&#8629;")
        label = f"<sub style='color:#555;font-size:70%'>{i}</sub>" if show_ids else ""
        spans.append(f"<span style='background:{_COLOURS[k % len(_COLOURS)]};padding:1px 2px;margin:1px;"
                     f"border-radius:3px;font-family:monospace;display:inline-block'>{piece}{label}</span>")
    n_bytes = len(text.encode("utf-8"))
    head = (f"<div style='font-size:90%'>{len(text)} characters, {n_bytes} bytes &rarr; <b>{len(ids)} tokens</b> "
            f"({n_bytes / max(1, len(ids)):.2f} bytes/token)</div>")
    return head + "<div style='line-height:2.2'>" + "".join(spans) + "</div>"


# ------------------------------------------------------------------------------------------------ registry
_TRAIN_TEXT = ("the cat sat on the mat; the hat is on the cat. ünïcödé café — naïve 👋🏽 日本語の文章 the end. "
               "aaabdaaabac")
_MIXED = "hello wörld! 你好 👋🏽 the cat, αβγ café"


def _toy_merges(vocab_size: int = 300) -> dict[Pair, int]:
    return train_simple([list(_TRAIN_TEXT.encode("utf-8"))], vocab_size - 256)


def _stats_cases() -> list[Case]:
    return [
        Case(([1, 2, 3, 1, 2],), label="[1, 2, 3, 1, 2]: (1, 2) twice"),
        Case(([5, 5, 5, 5],), label="[5, 5, 5, 5]: overlapping pairs count, (5, 5) three times"),
        Case(([7],), label="one id: no pairs"),
        Case(([],), label="empty list"),
        Case((list(b"aaabdaaabac"),), label="the bytes of 'aaabdaaabac'"),
        Case((list("héllo wörld 👋".encode()),), label="UTF-8 bytes of mixed text"),
        Case(([1, 2, 3], {(1, 2): 4, (9, 9): 1}), label="adds to existing counts in place"),
    ]


def _merge_cases() -> list[Case]:
    return [
        Case(([1, 2, 3, 1, 2], (1, 2), 99), label="[1, 2, 3, 1, 2] merge (1, 2) -> 99"),
        Case(([5, 5, 5], (5, 5), 9), label="[5, 5, 5] merge (5, 5): left to right, no overlap -> [9, 5]"),
        Case(([5, 5, 5, 5], (5, 5), 9), label="[5, 5, 5, 5] merge (5, 5) -> [9, 9]"),
        Case(([1, 2, 3], (2, 3), 7), label="pair at the very end"),
        Case(([1, 2, 3, 4], (4, 1), 7), label="pair not present: unchanged"),
        Case(([3], (3, 3), 7), label="one id"),
        Case(([], (1, 2), 7), label="empty list"),
    ]


def _encode_cases() -> list[Case]:
    merges = _toy_merges()
    return [
        Case(("the cat sat on the mat", merges), label="ASCII text seen in training"),
        Case(("aaabdaaabac", merges), label="'aaabdaaabac'"),
        Case((_MIXED, merges), label="mixed scripts and emoji"),
        Case(("", merges), label="empty string"),
        Case(("x", merges), label="one character"),
        Case(("the cat", {}), label="no merges: just the UTF-8 bytes"),
        Case(("aaaa", {(97, 97): 256, (256, 256): 257}), label="'aaaa' with merges aa and aaaa"),
        Case(("abc", {(98, 99): 256, (97, 98): 257}), label="'abc': bc was learned before ab"),
    ]


def _decode_cases() -> list[Case]:
    merges = _toy_merges()
    vocab = build_vocab(merges)
    return [
        Case((encode("the cat sat on the mat", merges), vocab), label="ASCII"),
        Case((encode(_MIXED, merges), vocab), label="mixed scripts and emoji"),
        Case((list("日本".encode()), vocab), label="single bytes of multi-byte characters"),
        Case(([], vocab), label="no ids"),
        Case(([0xE6, 0x97], vocab), label="an incomplete character: becomes U+FFFD"),
    ]


EXERCISES = [
    Exercise(
        name="get_stats",
        reference=get_stats,
        cases=_stats_cases,
        mistakes={
            "stepped by two (zip(ids[::2], ids[1::2])): pairs starting at odd positions are missed": _stats_step_two,
            "set counts[pair] = 1 instead of adding 1: every pair counted once": _stats_presence,
        },
        hint="for pair in zip(ids, ids[1:]): counts[pair] = counts.get(pair, 0) + 1",
    ),
    Exercise(
        name="merge",
        reference=merge,
        cases=_merge_cases,
        mistakes={
            "advanced by one after a match instead of two: the second half of the pair is merged again":
                _merge_overlapping,
            "looped to len(ids) - 1 and forgot to append the last id": _merge_drops_last,
        },
        hint="Walk with an index i: if ids[i], ids[i+1] is the pair (check i < len(ids) - 1 first), append idx "
             "and i += 2, else append ids[i] and i += 1.",
    ),
    Exercise(
        name="encode",
        reference=encode,
        cases=_encode_cases,
        mistakes={
            "started from code points (ord) instead of UTF-8 bytes": _encode_code_points,
            "merged the most frequent pair of this text instead of the earliest-learned merge":
                _encode_most_frequent,
        },
        hint="ids = list(text.encode('utf-8')); loop: stats = get_stats(ids); pair = min(stats, key=lambda p: "
             "merges.get(p, float('inf'))); stop if pair not in merges; else ids = merge(ids, pair, merges[pair]).",
    ),
    Exercise(
        name="decode",
        reference=decode,
        cases=_decode_cases,
        mistakes={
            "decoded each token on its own: a character split across tokens becomes U+FFFD": _decode_per_token,
            "decoded the bytes as latin-1 instead of UTF-8": _decode_latin1,
        },
        hint="b''.join(vocab[i] for i in ids).decode('utf-8', errors='replace')",
    ),
]
