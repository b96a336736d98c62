"""Lecture 14: BPE pieces on hand-worked examples (Wikipedia's "aaabdaaabac"), exact round trips, the fast trainer
against the simple one (identical merges, speed-up), special tokens, save/load and the widget's HTML."""
from __future__ import annotations

import time

import pytest
import regex

from solutions import l14_tokenization as L
from utils.data import text_corpus

MIXED = "Tokenizers: héllo wörld! Привет, мир. 你好，世界。 こんにちは 👋🏽🚀 café ∑x² = 42\n\ttabs  and  spaces "


@pytest.fixture(scope="module")
def english() -> str:
    return text_corpus("english", "train")[:20_000]


def test_get_stats_and_merge_by_hand():
    assert L.get_stats([1, 2, 3, 1, 2]) == {(1, 2): 2, (2, 3): 1, (3, 1): 1}
    assert L.get_stats([5, 5, 5]) == {(5, 5): 2}
    assert L.merge([5, 5, 5], (5, 5), 9) == [9, 5]
    assert L.merge([1, 2, 3, 1, 2], (1, 2), 99) == [99, 3, 99]


def test_wikipedia_aaabdaaabac():
    """aa -> Z: ZabdZabac; ab -> Y (ties with Za, the smaller pair wins): ZYdZYac; ZY -> X: XdXac."""
    ids = list(b"aaabdaaabac")
    merges = L.train_simple([ids], 3)
    a, b = ord("a"), ord("b")
    assert list(merges.items()) == [((a, a), 256), ((a, b), 257), ((256, 257), 258)]
    assert L.encode("aaabdaaabac", merges) == [258, ord("d"), 258, a, ord("c")]
    assert L.train_fast([ids], 3) == merges
    vocab = L.build_vocab(merges)
    assert vocab[258] == b"aaab" and L.decode([258], vocab) == "aaab"
    # from XdXac on every pair occurs once; 4 more merges make it one token, then no pair is left to merge
    full = L.train_simple([ids], 100)
    assert full == L.train_fast([ids], 100) and len(full) == 7
    assert L.encode("aaabdaaabac", full) == [262]


@pytest.mark.parametrize("cls", [L.BasicTokenizer, L.RegexTokenizer])
def test_round_trip_mixed_scripts(cls, english):
    tok = cls()
    tok.train(english[:5000], 320)
    assert len(tok.vocab) == 320 and len(tok.merges) == 64
    for text in [MIXED, "", " ", "\n\n\n", "👋🏽" * 5, english[-300:]]:
        ids = tok.encode(text)
        assert tok.decode(ids) == text
        assert all(0 <= i < 320 for i in ids)
    assert len(tok.encode(english[:5000])) < 0.6 * len(english[:5000].encode())  # it compresses


def test_decode_invalid_utf8_is_replaced():
    vocab = L.build_vocab({})
    assert L.decode([0xE6, 0x97], vocab) == "\ufffd"


def test_fast_trainer_identical_and_faster(english):
    text = english[:20_000]
    chunks = [list(c.encode()) for c in regex.findall(L.GPT4_SPLIT_PATTERN, text)]
    t0 = time.perf_counter()
    slow = L.train_simple(chunks, 256)
    t1 = time.perf_counter()
    fast = L.train_fast(chunks, 256)
    t2 = time.perf_counter()
    assert list(slow.items()) == list(fast.items())
    assert (t1 - t0) / (t2 - t1) >= 5, f"speed-up only {(t1 - t0) / (t2 - t1):.1f}x"
    # also on one unsplit chunk (BasicTokenizer), and on the Python corpus
    raw = [list(text[:3000].encode())]
    assert L.train_fast(raw, 100) == L.train_simple(raw, 100)
    code = text_corpus("python", "train")[:5000]
    chunks = [list(c.encode()) for c in regex.findall(L.GPT2_SPLIT_PATTERN, code)]
    assert list(L.train_fast(chunks, 150).items()) == list(L.train_simple(chunks, 150).items())


def test_truncated_equals_training_to_that_size(english):
    big = L.RegexTokenizer()
    big.train(english, 600)
    small = L.RegexTokenizer()
    small.train(english, 400)
    assert L.truncated(big, 400).merges == small.merges
    r = [L.compression_ratio(L.truncated(big, s), english) for s in (256, 300, 400, 600)]
    assert r[0] == 1.0 and all(b > a for a, b in zip(r, r[1:]))


def test_special_tokens():
    tok = L.RegexTokenizer()
    tok.train("hello world " * 20, 270)
    tok.register_special_tokens({"<|endoftext|>": 1000})
    text = "hello<|endoftext|>world"
    ids = tok.encode(text, allowed_special="all")
    assert ids.count(1000) == 1 and tok.decode(ids) == text
    assert tok.encode(text, allowed_special={"<|endoftext|>"}) == ids
    assert 1000 not in tok.encode(text, allowed_special="none")
    assert tok.decode(tok.encode(text, allowed_special="none")) == text
    with pytest.raises(ValueError):
        tok.encode(text)
    with pytest.raises(ValueError):
        tok.register_special_tokens({"<|x|>": 260})  # collides with a merge


def test_gpt4_pattern_splits_digits_in_threes():
    assert regex.findall(L.GPT4_SPLIT_PATTERN, "12345") == ["123", "45"]
    assert regex.findall(L.GPT2_SPLIT_PATTERN, " 12345") == [" 12345"]
    assert regex.findall(L.GPT4_SPLIT_PATTERN, "I'VE seen") == ["I", "'VE", " seen"]


@pytest.mark.parametrize("cls", [L.BasicTokenizer, L.RegexTokenizer])
def test_save_load_round_trip(cls, tmp_path, english):
    tok = cls()
    tok.train(english[:4000], 300)
    if isinstance(tok, L.RegexTokenizer):
        tok.register_special_tokens({"<|endoftext|>": 300})
    path = tmp_path / "tok.json"
    tok.save(path)
    back = cls().load(path)
    assert back.merges == tok.merges and back.vocab == tok.vocab and back.pattern == tok.pattern
    assert back.special_tokens == tok.special_tokens
    assert back.encode(MIXED) == tok.encode(MIXED)
    with pytest.raises(ValueError):
        (L.RegexTokenizer if cls is L.BasicTokenizer else L.BasicTokenizer)().load(path)


def test_token_html_marks_every_token(english):
    tok = L.RegexTokenizer()
    tok.train(english[:4000], 300)
    text = "a <b> & 日本 👋"
    out = L.token_html(tok, text)
    assert out.count("<span") == len(tok.encode(text))
    assert "&lt;" in out and "&amp;" in out and "<b>&" not in out  # escaped
    assert "tokens" in out
