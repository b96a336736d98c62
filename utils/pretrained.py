"""The course's own "pretrained" models: small checkpoints committed to the repo, trained by the course itself.

No weights can be downloaded, so the models that later lectures start from are trained here, once, by a
recipe in this file, and committed under ``utils/checkpoints/`` (each ≤ 5 MB) with a JSON record of how they
were made and what they scored::

    model, tok = utils.pretrained("char_english")   # a 4-layer char-level GPT on the built-in English text
    judge = utils.pretrained("digit_judge")         # a 16×16 digit classifier with an 11th "junk" class
    utils.pretrained.info("char_english")["val_loss"]

A missing checkpoint is trained deterministically (fixed seed, fixed number of steps) and saved on first use;
``python -m utils.pretrained build NAME`` rebuilds one from scratch and rewrites its record. The unit tests
re-evaluate every committed checkpoint and compare with the recorded metric.
"""
from __future__ import annotations

import argparse
import importlib
import json
import math
import sys
import time
import types
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Callable, Sequence

import torch
import torch.nn as nn
import torch.nn.functional as F

from utils.data import atomic_write, font_digits, text_corpus
from utils.gpt import GPT, GPTConfig, estimate_loss

__all__ = ["CharTokenizer", "DigitJudge", "Spec", "load", "info", "build", "evaluate", "names",
           "LECTURE_MODELS", "CHECKPOINT_DIR", "train_gpt", "load_char_gpt", "junk_images", "judge_report"]

CHECKPOINT_DIR = Path(__file__).resolve().parent / "checkpoints"
MAX_CHECKPOINT_BYTES = 5 * 1024 * 1024


# ------------------------------------------------------------------------------------------------ tokenizer
class CharTokenizer:
    """One token per character: ``encode(str) -> list[int]``, ``decode(list[int]) -> str``.

    The vocabulary is fixed when the model is trained (``chars``); a character outside it is an error, not a
    silent substitution, because the model has never seen it.
    """

    def __init__(self, chars: Sequence[str]):
        self.chars = list(chars)
        if len(set(self.chars)) != len(self.chars):
            raise ValueError("CharTokenizer: duplicate characters in the vocabulary")
        self.stoi = {c: i for i, c in enumerate(self.chars)}

    @classmethod
    def from_text(cls, text: str) -> CharTokenizer:
        return cls(sorted(set(text)))

    @property
    def vocab_size(self) -> int:
        return len(self.chars)

    def encode(self, text: str) -> list[int]:
        unknown = sorted(set(text) - self.stoi.keys())
        if unknown:
            raise ValueError(f"characters not in the vocabulary: {unknown!r}")
        return [self.stoi[c] for c in text]

    def decode(self, ids: Sequence[int]) -> str:
        return "".join(self.chars[int(i)] for i in ids)

    def __repr__(self) -> str:
        return f"CharTokenizer(vocab_size={self.vocab_size})"


# ---------------------------------------------------------------------------------------------- digit judge
class DigitJudge(nn.Module):
    """A small CNN that grades generated digits: classes 0–9 plus 10 = "junk" (noise, shuffled pixels, blobs,
    two digits overlaid). Without the junk class a classifier calls pure noise a digit with high confidence,
    which would make every sample-quality number meaningless.

    Input: (N, 1, 16, 16) in [0, 1] (``font_digits(size=16)`` conventions). Output: logits (N, 11).
    """

    JUNK = 10

    def __init__(self, width: int = 32):
        super().__init__()
        self.net = nn.Sequential(
            nn.Conv2d(1, width, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),            # 8×8
            nn.Conv2d(width, 2 * width, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),    # 4×4
            nn.Flatten(), nn.Linear(2 * width * 16, 128), nn.ReLU(), nn.Linear(128, 11),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.dim() != 4 or x.shape[1:] != (1, 16, 16):
            raise ValueError(f"DigitJudge expects (N, 1, 16, 16) images in [0, 1], got {tuple(x.shape)}")
        return self.net(x)

    @torch.no_grad()
    def predict_proba(self, x: torch.Tensor, batch_size: int = 1024) -> torch.Tensor:
        """(N, 1, 16, 16) → class probabilities (N, 11); inputs are clipped to [0, 1] first."""
        self.eval()
        x = x.float().clamp(0, 1)
        return torch.cat([F.softmax(self(x[i:i + batch_size]), dim=-1) for i in range(0, len(x), batch_size)])


def judge_report(judge: DigitJudge, images: torch.Tensor, labels: torch.Tensor | None = None,
                 threshold: float = 0.9) -> dict[str, float]:
    """Grade samples (N, 1, 16, 16): ``recognised`` = fraction the judge calls a digit (not junk) with
    probability ≥ threshold; ``junk`` = fraction whose top class is junk; with ``labels`` (N,) also
    ``accuracy`` = fraction whose top class is the requested digit. ``diversity`` = how many of the 10 digits
    appear among the recognised samples."""
    p = judge.predict_proba(images)
    conf, top = p.max(dim=1)
    digit = top != DigitJudge.JUNK
    recognised = digit & (conf >= threshold)
    out = {"recognised": recognised.float().mean().item(), "junk": (~digit).float().mean().item(),
           "diversity": float(top[recognised].unique().numel())}
    if labels is not None:
        out["accuracy"] = (top == labels.to(top.device)).float().mean().item()
    return out


def junk_images(n: int, digits: torch.Tensor, seed: int = 0) -> torch.Tensor:
    """n images (n, 1, 16, 16) in [0, 1] that are *not* digits, four kinds in equal shares: uniform/Gaussian
    noise, digits with shuffled pixels (right ink statistics, no shape), smooth random blobs, and two different
    digits overlaid. ``digits`` (M, 1, 16, 16) supplies the ink for the last three."""
    g = torch.Generator().manual_seed(seed)
    k = n // 4
    noise = torch.where(torch.rand(k, 1, 1, 1, generator=g) < 0.5, torch.rand(k, 1, 16, 16, generator=g),
                        (0.3 + 0.3 * torch.randn(k, 1, 16, 16, generator=g)).clamp(0, 1))
    src = digits[torch.randint(len(digits), (k,), generator=g)].reshape(k, -1)
    shuffled = torch.stack([row[torch.randperm(256, generator=g)] for row in src]).reshape(k, 1, 16, 16)
    coarse = torch.rand(k, 1, 4, 4, generator=g) * (torch.rand(k, 1, 1, 1, generator=g) + 0.3)
    blobs = F.interpolate(coarse, size=16, mode="bicubic", align_corners=False).clamp(0, 1)
    m = n - 3 * k
    a, b = (digits[torch.randint(len(digits), (m,), generator=g)] for _ in range(2))
    shift = torch.randint(-3, 4, (2,), generator=g).tolist()
    overlaid = torch.maximum(a, torch.roll(b, shifts=shift, dims=(2, 3)))
    return torch.cat([noise, shuffled, blobs, overlaid])


# ----------------------------------------------------------------------------------------------- recipes
def _char_english_recipe() -> dict[str, Any]:
    return {
        "kind": "char_gpt",
        "corpus": "english",
        "config": dict(block_size=256, n_layer=4, n_head=4, n_embd=128, dropout=0.0, bias=True, tie_weights=True),
        "train": dict(steps=2000, batch_size=16, lr=2e-3, min_lr=1e-4, warmup=100, weight_decay=0.1,
                      grad_clip=1.0, seed=0),
    }


def _digit_judge_recipe() -> dict[str, Any]:
    return {
        "kind": "digit_judge",
        "config": dict(width=32),
        "train": dict(steps=1500, batch_size=128, lr=2e-3, n_digits=20000, n_junk=5000, seed=0),
    }


def _paths(name: str, directory: Path | None = None) -> tuple[Path, Path]:
    spec(name)  # an unknown name fails here, with the list of known ones
    d = Path(directory) if directory is not None else CHECKPOINT_DIR
    return d / f"{name}.pt", d / f"{name}.json"


# -------------------------------------------------------------------------------------------- evaluation
def char_val_loss(model: GPT, tok: CharTokenizer, text: str) -> float:
    """Mean next-character cross-entropy (nats) over ``text`` cut into consecutive windows of block_size + 1
    characters (every position predicted once, with the context since its window began)."""
    ids = torch.tensor(tok.encode(text), dtype=torch.long)
    return estimate_loss(model, ids, model.config.block_size, batch_size=64)


def _judge_data(train: dict[str, Any], split: str, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    X, y = font_digits(train["n_digits"] if split == "train" else 4000, size=16, split=split)
    n_junk = train["n_junk"] if split == "train" else 1000
    J = junk_images(n_junk, X, seed=seed)
    return torch.cat([X, J]), torch.cat([y, torch.full((len(J),), DigitJudge.JUNK)])


@torch.no_grad()
def _judge_metrics(judge: DigitJudge, train: dict[str, Any]) -> dict[str, float]:
    X, y = _judge_data(train, "val", seed=1)
    top = judge.predict_proba(X).argmax(1)
    digits = y != DigitJudge.JUNK
    return {"val_digit_accuracy": (top[digits] == y[digits]).float().mean().item(),
            "val_junk_recall": (top[~digits] == DigitJudge.JUNK).float().mean().item()}


# ---------------------------------------------------------------------------------------------- training
def _lr_at(step: int, steps: int, lr: float, min_lr: float, warmup: int) -> float:
    """Linear warmup to ``lr``, then cosine decay to ``min_lr`` (nanoGPT's schedule)."""
    if step < warmup:
        return lr * (step + 1) / warmup
    progress = (step - warmup) / max(1, steps - warmup)
    return min_lr + 0.5 * (lr - min_lr) * (1 + math.cos(math.pi * progress))


def train_gpt(model: GPT, next_batch: Callable[[int], tuple[torch.Tensor, torch.Tensor]], *, steps: int,
              lr: float, min_lr: float, warmup: int, weight_decay: float, grad_clip: float,
              log: Callable[[str], None] = print, log_every: int = 100,
              evaluate: Callable[[GPT], float] | None = None, eval_every: int = 500, **unused: Any) -> GPT:
    """The nanoGPT recipe every course GPT checkpoint is trained with: AdamW (betas 0.9/0.95, weight decay on
    the matrices only), linear warmup then cosine decay from ``lr`` to ``min_lr``, gradient-norm clipping.

    ``next_batch(step)`` returns inputs and targets (B, T) (targets -1 are ignored). ``evaluate(model)``, if
    given, is logged every ``eval_every`` steps. Extra keyword arguments (the rest of a recipe's ``train``
    dict, e.g. ``seed``, ``batch_size``) are ignored so a recipe can be passed as ``**recipe["train"]``
    (with ``steps`` overridden where a test builds a shorter run).
    Returns the model in eval mode.
    """
    decay = [p for p in model.parameters() if p.dim() >= 2]
    no_decay = [p for p in model.parameters() if p.dim() < 2]
    opt = torch.optim.AdamW([{"params": decay, "weight_decay": weight_decay},
                             {"params": no_decay, "weight_decay": 0.0}], lr=lr, betas=(0.9, 0.95))
    model.train()
    for step in range(steps):
        xb, yb = next_batch(step)
        for group in opt.param_groups:
            group["lr"] = _lr_at(step, steps, lr, min_lr, warmup)
        _, loss = model(xb, yb)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        nn.utils.clip_grad_norm_(model.parameters(), grad_clip)
        opt.step()
        if evaluate is not None and step % eval_every == 0 and step > 0:
            log(f"step {step:5d}/{steps}  loss {loss.item():.3f}  val {evaluate(model):.3f}")
            model.train()
        elif step % log_every == 0 or step == steps - 1:
            log(f"step {step:5d}/{steps}  loss {loss.item():.3f}")
    return model.eval()


def _train_char_gpt(recipe: dict[str, Any], steps: int, log: Callable[[str], None]) -> tuple[Any, dict]:
    t = recipe["train"]
    torch.manual_seed(t["seed"])
    text = text_corpus(recipe["corpus"], "all")
    tok = CharTokenizer.from_text(text)  # vocabulary from the whole corpus, so val text is encodable
    data = torch.tensor(tok.encode(text_corpus(recipe["corpus"], "train")), dtype=torch.long)
    config = GPTConfig(vocab_size=tok.vocab_size, **recipe["config"])
    model = GPT(config)
    g = torch.Generator().manual_seed(t["seed"])
    T, B = config.block_size, t["batch_size"]
    val_text = text_corpus(recipe["corpus"], "val")

    def random_windows(step: int) -> tuple[torch.Tensor, torch.Tensor]:
        starts = torch.randint(len(data) - T - 1, (B,), generator=g)
        return (torch.stack([data[s:s + T] for s in starts]), torch.stack([data[s + 1:s + T + 1] for s in starts]))

    train_gpt(model, random_windows, **{**t, "steps": steps}, log=log,
              evaluate=lambda m: char_val_loss(m, tok, val_text))
    payload = {"state_dict": model.state_dict(), "config": asdict(config), "chars": tok.chars}
    return payload, {"val_loss": char_val_loss(model, tok, val_text)}


def _train_digit_judge(recipe: dict[str, Any], steps: int, log: Callable[[str], None]) -> tuple[Any, dict]:
    t = recipe["train"]
    torch.manual_seed(t["seed"])
    X, y = _judge_data(t, "train", seed=0)
    judge = DigitJudge(**recipe["config"])
    opt = torch.optim.Adam(judge.parameters(), lr=t["lr"])
    g = torch.Generator().manual_seed(t["seed"])
    judge.train()
    for step in range(steps):
        i = torch.randint(len(X), (t["batch_size"],), generator=g)
        loss = F.cross_entropy(judge(X[i]), y[i])
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        if step % 250 == 0 or step == steps - 1:
            log(f"step {step:5d}/{steps}  loss {loss.item():.3f}")
    judge.eval()
    return {"state_dict": judge.state_dict(), "config": recipe["config"]}, _judge_metrics(judge, t)


def load_char_gpt(payload: dict[str, Any]) -> tuple[GPT, CharTokenizer]:
    """A char GPT and its tokenizer from a checkpoint payload {"state_dict", "config", "chars"}."""
    model = GPT(GPTConfig(**payload["config"]))
    model.load_state_dict(payload["state_dict"])
    return model.eval(), CharTokenizer(payload["chars"])


def _load_digit_judge(payload: dict[str, Any]) -> DigitJudge:
    judge = DigitJudge(**payload["config"])
    judge.load_state_dict(payload["state_dict"])
    return judge.eval()


# ---------------------------------------------------------------------------------------------- registry
@dataclass(frozen=True)
class Spec:
    """How one pretrained model is made, loaded and checked.

    recipe():                 JSON-able dict (architecture, data, steps, seed) recorded beside the checkpoint;
    train(recipe, steps, log): (payload for ``torch.save`` — tensors, dicts, lists only — , metrics dict);
    load(payload):            the model (in eval mode) the lecture uses;
    evaluate(model):          re-measures the recorded metrics (deterministic), so a test can compare them.
    """
    recipe: Callable[[], dict[str, Any]]
    train: Callable[[dict[str, Any], int, Callable[[str], None]], tuple[Any, dict[str, float]]]
    load: Callable[[Any], Any]
    evaluate: Callable[[Any], dict[str, float]]


BUILTIN: dict[str, Spec] = {
    "char_english": Spec(_char_english_recipe, _train_char_gpt, load_char_gpt,
                         lambda m: {"val_loss": char_val_loss(*m, text_corpus("english", "val"))}),
    "digit_judge": Spec(_digit_judge_recipe, _train_digit_judge, _load_digit_judge,
                        lambda judge: _judge_metrics(judge, _digit_judge_recipe()["train"])),
}

# Models only one lecture needs keep their recipe next to that lecture: ``PRETRAINED[name]`` (a Spec) in the
# solutions module named here. The checkpoints still live in utils/checkpoints and load the same way.
LECTURE_MODELS: dict[str, str] = {
    "scaling_runs": "solutions.l15_scaling_modern_llms",
    "arith_reasoner": "solutions.l23_inference_agents_reasoning",
}


def names() -> tuple[str, ...]:
    """Every model ``utils.pretrained(name)`` knows."""
    return tuple(BUILTIN) + tuple(LECTURE_MODELS)


def spec(name: str) -> Spec:
    """The :class:`Spec` of ``name`` (importing its lecture's solutions module if it lives there)."""
    if name in BUILTIN:
        return BUILTIN[name]
    if name not in LECTURE_MODELS:
        raise KeyError(f"unknown pretrained model {name!r}; available: {', '.join(names())}")
    module = importlib.import_module(LECTURE_MODELS[name])
    specs = getattr(module, "PRETRAINED", {})
    if name not in specs:
        raise KeyError(f"{LECTURE_MODELS[name]} defines no PRETRAINED[{name!r}]")
    return specs[name]


def evaluate(name: str, model: Any = None) -> dict[str, float]:
    """Re-measure the metrics recorded for ``name`` (on the loaded checkpoint unless ``model`` is given)."""
    return spec(name).evaluate(model if model is not None else load(name))


def build(name: str, directory: str | Path | None = None, steps: int | None = None,
          log: Callable[[str], None] = print) -> dict[str, Any]:
    """Train ``name`` from its recipe (deterministic: fixed seed and steps) and write ``<name>.pt`` and
    ``<name>.json`` atomically into ``directory`` (default: the committed ``utils/checkpoints``).
    ``steps`` overrides the recipe (tests build tiny versions). Returns the JSON record."""
    pt, js = _paths(name, directory)  # raises a helpful KeyError for an unknown name
    recipe = spec(name).recipe()
    steps = recipe["train"]["steps"] if steps is None else steps
    pt.parent.mkdir(parents=True, exist_ok=True)
    log(f"building {name!r}: {steps} steps on {torch.get_num_threads()} threads")
    t0 = time.time()
    payload, metrics = spec(name).train(recipe, steps, log)
    record = {"name": name, **metrics, "recipe": {**recipe, "train": {**recipe["train"], "steps": steps}},
              "build_command": f"python -m utils.pretrained build {name}",
              "train_seconds": round(time.time() - t0, 1), "threads": torch.get_num_threads(),
              "torch": torch.__version__}
    atomic_write(pt, lambda f: torch.save(payload, f))
    atomic_write(js, lambda f: f.write(json.dumps(record, indent=2).encode() + b"\n"))
    log(f"wrote {pt} ({pt.stat().st_size / 1e6:.2f} MB): " + ", ".join(f"{k} {v:.4f}" for k, v in metrics.items()))
    return record


# ---------------------------------------------------------------------------------------------- loading
def info(name: str, directory: str | Path | None = None) -> dict[str, Any]:
    """The JSON record beside the checkpoint: recipe, metrics (e.g. ``val_loss``), build command, train time."""
    _, js = _paths(name, directory)
    if not js.exists():
        raise FileNotFoundError(f"no record for {name!r} at {js}; "
                                f"build it with: python -m utils.pretrained build {name}")
    return json.loads(js.read_text())


def load(name: str, directory: str | Path | None = None, build_if_missing: bool = True) -> Any:
    """The pretrained model ``name`` in eval mode: ``(GPT, CharTokenizer)`` for ``"char_english"``, a
    :class:`DigitJudge` for ``"digit_judge"``, whatever its Spec's ``load`` returns for a lecture's model.
    Trains and saves it first if the checkpoint is missing."""
    pt, _ = _paths(name, directory)
    if not pt.exists():
        if not build_if_missing:
            raise FileNotFoundError(f"no checkpoint for {name!r} at {pt}; build it with: "
                                    f"python -m utils.pretrained build {name}")
        print(f"{pt.name} is missing: training it now (once; takes a few minutes)")
        build(name, directory)
    return spec(name).load(torch.load(pt, map_location="cpu", weights_only=True))


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m utils.pretrained", description=__doc__.split("\n\n")[0])
    sub = parser.add_subparsers(dest="command", required=True)
    b = sub.add_parser("build", help="train a model from its recipe and write its checkpoint + record")
    b.add_argument("names", nargs="+", choices=names() + ("all",))
    b.add_argument("--dir", default=None, help="output directory (default: utils/checkpoints)")
    b.add_argument("--steps", type=int, default=None, help="override the recipe's step count (for testing)")
    e = sub.add_parser("eval", help="re-measure a committed checkpoint and compare with its record")
    e.add_argument("names", nargs="+", choices=names() + ("all",))
    args = parser.parse_args(argv)
    for name in (names() if "all" in args.names else args.names):
        if args.command == "build":
            build(name, args.dir, args.steps)
        else:
            print(name, "measured", evaluate(name), "recorded",
                  {k: v for k, v in info(name).items() if k.startswith("val_")})


class _CallableModule(types.ModuleType):
    """Lets ``utils.pretrained("char_english")`` work while ``utils.pretrained`` stays a module
    (so ``python -m utils.pretrained build NAME`` and ``utils.pretrained.info(NAME)`` work too)."""

    def __call__(self, name: str, **kwargs: Any) -> Any:
        return load(name, **kwargs)


sys.modules[__name__].__class__ = _CallableModule

if __name__ == "__main__":
    main()
