"""utils.pretrained: the committed checkpoints load fast, stay small and still score what their records say; the
recipes rebuild deterministically; the tokenizer and the judge behave (and fail) as documented."""
from __future__ import annotations

import subprocess
import sys
import time
import types

import pytest
import torch

import utils
from utils import pretrained as P
from utils.gpt import GPT


# ------------------------------------------------------------------------------------------------ tokenizer
def test_char_tokenizer_round_trip_and_errors():
    tok = P.CharTokenizer.from_text("hello world")
    assert tok.chars == sorted(set("hello world")) and tok.vocab_size == 8
    assert tok.encode("hello") == [3, 2, 4, 4, 5]
    assert tok.decode(tok.encode("world hello")) == "world hello"
    with pytest.raises(ValueError, match=r"not in the vocabulary: \['!', 'x'\]"):
        tok.encode("hex!")
    with pytest.raises(ValueError, match="duplicate"):
        P.CharTokenizer(["a", "b", "a"])


# ------------------------------------------------------------------------------------------ committed models
@pytest.mark.parametrize("name", P.names())
def test_checkpoint_is_committed_small_and_recorded(name):
    pt, js = P._paths(name)
    assert pt.exists() and js.exists(), f"missing checkpoint: run python -m utils.pretrained build {name}"
    assert pt.stat().st_size <= P.MAX_CHECKPOINT_BYTES
    record = P.info(name)
    assert record["build_command"] == f"python -m utils.pretrained build {name}"
    assert record["recipe"] == P.spec(name).recipe(), "the recipe changed since the checkpoint was built: rebuild it"


def test_checkpoints_total_under_20_mb():
    assert sum(p.stat().st_size for p in P.CHECKPOINT_DIR.glob("*.pt")) <= 20 * 1024 * 1024


def test_char_english_loads_fast_and_matches_its_recorded_val_loss():
    t0 = time.perf_counter()
    model, tok = utils.pretrained("char_english")
    assert time.perf_counter() - t0 < 1.0
    assert isinstance(model, GPT) and not model.training
    assert model.config.vocab_size == tok.vocab_size
    measured = P.evaluate("char_english", (model, tok))["val_loss"]
    recorded = P.info("char_english")["val_loss"]
    assert measured == pytest.approx(recorded, abs=1e-3)
    # the point of pretraining: far below the bigram baseline of the same text (≈ 2.45 nats)
    assert recorded < 1.5


def test_char_english_generates_text_from_its_vocabulary():
    model, tok = utils.pretrained("char_english")
    torch.manual_seed(0)
    out = model.generate(torch.tensor([tok.encode("The ")]), max_new_tokens=200, temperature=0.8)
    text = tok.decode(out[0].tolist())
    words = text.split()
    assert text.startswith("The ") and len(words) > 20
    # a trained model writes mostly real words: most of them appear in the training text
    vocab = set(utils.data.text_corpus("english", "train").split())
    assert sum(w in vocab for w in words) / len(words) > 0.5


def test_digit_judge_matches_its_record_and_rejects_junk():
    judge = utils.pretrained("digit_judge")
    measured, recorded = P.evaluate("digit_judge", judge), P.info("digit_judge")
    for key, value in measured.items():
        assert value == pytest.approx(recorded[key], abs=1e-4), key
    assert recorded["val_digit_accuracy"] > 0.95 and recorded["val_junk_recall"] > 0.8
    X, y = utils.data.font_digits(2000, size=16, split="test")
    real = P.judge_report(judge, X, y)
    noise = P.judge_report(judge, torch.rand(500, 1, 16, 16))
    assert real["accuracy"] > 0.95 and real["recognised"] > 0.8 and real["diversity"] == 10
    assert noise["recognised"] < 0.02 and noise["junk"] > 0.95
    with pytest.raises(ValueError, match=r"expects \(N, 1, 16, 16\)"):
        judge(torch.rand(2, 1, 28, 28))


def test_junk_images_shapes_and_range():
    X, _ = utils.data.font_digits(200, size=16, split="val")
    J = P.junk_images(10, X, seed=0)
    assert J.shape == (10, 1, 16, 16) and J.min() >= 0 and J.max() <= 1
    assert torch.equal(J, P.junk_images(10, X, seed=0))


# ------------------------------------------------------------------------------------------------ building
@pytest.mark.parametrize("name", P.names())
def test_build_is_deterministic_and_loadable(name, tmp_path):
    torch.set_num_threads(1)
    a = P.build(name, tmp_path / "a", steps=3, log=lambda s: None)
    P.build(name, tmp_path / "b", steps=3, log=lambda s: None)
    assert a["recipe"]["train"]["steps"] == 3 and a["threads"] == 1
    sa = torch.load(tmp_path / "a" / f"{name}.pt", weights_only=True)["state_dict"]
    sb = torch.load(tmp_path / "b" / f"{name}.pt", weights_only=True)["state_dict"]
    assert sa.keys() == sb.keys() and all(torch.equal(sa[k], sb[k]) for k in sa)
    loaded = P.load(name, tmp_path / "a", build_if_missing=False)
    assert P.info(name, tmp_path / "a")["name"] == name
    assert loaded is not None
    assert not list((tmp_path / "a").glob("*.tmp")), "atomic writes leave no temporary files"


def test_missing_and_unknown_models_fail_with_instructions(tmp_path):
    with pytest.raises(FileNotFoundError, match="python -m utils.pretrained build char_english"):
        P.load("char_english", tmp_path, build_if_missing=False)
    with pytest.raises(FileNotFoundError, match="python -m utils.pretrained build digit_judge"):
        P.info("digit_judge", tmp_path)
    with pytest.raises(KeyError, match="available: char_english, digit_judge"):
        utils.pretrained("gpt5")


def test_command_line_builds_quietly(tmp_path):
    result = subprocess.run([sys.executable, "-m", "utils.pretrained", "build", "char_english", "--steps", "1",
                             "--dir", str(tmp_path)], capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    assert "RuntimeWarning" not in result.stderr
    assert (tmp_path / "char_english.pt").exists() and "wrote" in result.stdout


# ------------------------------------------------------------------------------------------ lecture models
def _toy_spec() -> P.Spec:
    """A 'model' that is one learned number (the mean of a fixed sample) — enough to exercise the plumbing."""
    def recipe():
        return {"kind": "toy_mean", "train": {"steps": 50, "seed": 0}}

    def train(recipe, steps, log):
        g = torch.Generator().manual_seed(recipe["train"]["seed"])
        w = torch.zeros(1, requires_grad=True)
        data = torch.randn(100, generator=g) + 3.0
        opt = torch.optim.SGD([w], lr=0.1)
        for _ in range(steps):
            loss = ((w - data) ** 2).mean()
            opt.zero_grad()
            loss.backward()
            opt.step()
        return {"state_dict": {"w": w.detach()}}, {"val_error": abs(w.item() - data.mean().item())}

    def load(payload):
        return payload["state_dict"]["w"]

    def evaluate(w):
        data = torch.randn(100, generator=torch.Generator().manual_seed(0)) + 3.0
        return {"val_error": abs(w.item() - data.mean().item())}

    return P.Spec(recipe, train, load, evaluate)


def test_a_lecture_model_is_found_in_its_solutions_module(tmp_path, monkeypatch):
    module = types.ModuleType("solutions.l99_fake")
    module.PRETRAINED = {"toy_mean": _toy_spec()}
    monkeypatch.setitem(sys.modules, "solutions.l99_fake", module)
    monkeypatch.setitem(P.LECTURE_MODELS, "toy_mean", "solutions.l99_fake")
    record = P.build("toy_mean", tmp_path, log=lambda s: None)
    assert "toy_mean" in P.names() and record["recipe"]["train"]["steps"] == 50
    w = P.load("toy_mean", tmp_path, build_if_missing=False)
    assert w.item() == pytest.approx(3.0, abs=0.3)
    assert P.evaluate("toy_mean", w)["val_error"] == pytest.approx(record["val_error"], abs=1e-7)
    assert record["val_error"] < 1e-3
    assert P.info("toy_mean", tmp_path)["build_command"] == "python -m utils.pretrained build toy_mean"
    # a module that was named but defines no such model is an error that says where it looked
    monkeypatch.setitem(P.LECTURE_MODELS, "ghost", "solutions.l99_fake")
    with pytest.raises(KeyError, match=r"solutions.l99_fake defines no PRETRAINED\['ghost'\]"):
        P.load("ghost", tmp_path)
