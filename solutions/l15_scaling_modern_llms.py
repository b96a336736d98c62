"""Lecture 15 — scaling laws measured, the modern LLM block, and training on many processes.

Reference solutions and the exercise registry (COURSE_DESIGN §2):

* ``fit_power_law``: fit L = a · N^(-alpha) + c for a given c by a straight line in log-log space
  (``fit_scaling_law`` scans c around it);
* ``apply_rope``: rotary position embedding, rotate channel pairs of q and k by position-dependent angles;
* ``GroupedQueryAttention``: causal attention with RoPE where groups of query heads share key/value heads
  (MHA, GQA and MQA in one module);
* ``top_k_route``: a mixture-of-experts router — k experts per token, weights renormalised over the chosen;
* ``ring_allreduce``: the averaging all-reduce of data-parallel training, simulated as a ring.

Beyond the exercises: the scaling family (``char_data``, ``make_gpt``, ``scaling_params``, ``train_lm``), the
cached grid of runs ``PRETRAINED["scaling_runs"]`` (rebuild: ``python -m utils.pretrained build scaling_runs``)
with its IsoFLOP analysis (``isoflop_curves``, ``plot_isoflop``) and the widget's figure (``scaling_widget``);
``rope_angles``, ``kv_cache_bytes`` / ``mla_cache_bytes`` (Lecture 23 imports them), ``LatentAttention``
(DeepSeek's multi-head latent attention), ``SwiGLU``, ``ModernBlock`` (``RMSNorm`` is Lecture 12's);
``MoE`` with ``load_balancing_loss``, its toy task and ``train_moe``; data parallelism with real processes
(``ddp_worker``, ``run_ddp``, ``single_process_reference``) and the memory arithmetic of ZeRO/FSDP, tensor and
pipeline parallelism (``training_memory_gb``).
"""
from __future__ import annotations

import functools
import math
from typing import Any, Callable, Sequence

import matplotlib.pyplot as plt
import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F

import utils
from utils.data import text_corpus
from utils.exercises import Case, Exercise, run_module
from utils.gpt import GPT, GPTConfig, RMSNorm, estimate_loss, get_batch
from utils.pretrained import CharTokenizer, Spec
from utils.training import warmup_cosine

__all__ = [
    "char_data", "make_gpt", "scaling_params", "train_lm", "fit_power_law", "fit_scaling_law", "power_law",
    "plot_scaling_fit", "scaling_runs_recipe", "total_params", "isoflop_curves", "plot_isoflop", "scaling_widget",
    "PRETRAINED",
    "rope_angles", "apply_rope", "GroupedQueryAttention", "kv_cache_bytes", "mla_cache_bytes", "LatentAttention",
    "SwiGLU", "RMSNorm", "ModernBlock", "top_k_route", "load_balancing_loss", "MoE", "moe_task", "train_moe",
    "ring_allreduce", "ddp_model", "ddp_data", "ddp_worker", "run_ddp", "single_process_reference",
    "max_relative_error", "training_memory_gb", "EXERCISES",
]

# ================================================================================== part 1: scaling laws
@functools.lru_cache(maxsize=1)
def char_data() -> tuple[torch.Tensor, torch.Tensor, int]:
    """The built-in English text as character ids with the course's vocabulary (V = 103, the one of
    ``utils.pretrained("char_english")``). Returns train ids (N,), val ids (M,), vocab size."""
    tok = CharTokenizer.from_text(text_corpus("english", "all"))
    train = torch.tensor(tok.encode(text_corpus("english", "train")), dtype=torch.long)
    val = torch.tensor(tok.encode(text_corpus("english", "val")), dtype=torch.long)
    return train, val, tok.vocab_size


def make_gpt(n_layer: int, n_embd: int, vocab_size: int = 103, block_size: int = 32) -> GPT:
    """A tiny ``utils.gpt.GPT`` of the scaling family: heads of size 16 (at least one), no biases."""
    return GPT(GPTConfig(vocab_size=vocab_size, block_size=block_size, n_layer=n_layer,
                         n_head=max(1, n_embd // 16), n_embd=n_embd, bias=False))


def scaling_params(model: GPT) -> int:
    """Kaplan et al.'s N: parameters *without* the embeddings. ``model.num_params()`` already leaves out the
    position table (nanoGPT's convention); we also take out the token table (tied to the output layer), because
    at this scale a 103 × d embedding would dominate the smallest models and bend the curve."""
    return model.num_params() - model.transformer.wte.weight.numel()


def train_lm(n_layer: int, n_embd: int, tokens: int, batch_size: int = 32, block_size: int = 32, lr: float = 1e-2,
             seed: int = 0, eval_blocks: int = 400) -> dict[str, float]:
    """Train one member of the family on ``tokens`` training tokens (steps = tokens / (batch · block)) with AdamW,
    10 % linear warmup and cosine decay to lr/10 (every run gets a schedule matched to its length — Chinchilla's
    correction to Kaplan). Returns n_layer, n_embd, params N (non-embedding), steps, tokens D, flops C = 6ND
    and the val loss (nats per character, on ``eval_blocks`` windows spread over the val text)."""
    train, val, V = char_data()
    torch.manual_seed(seed)
    model = make_gpt(n_layer, n_embd, V, block_size)
    steps = max(1, round(tokens / (batch_size * block_size)))
    opt = torch.optim.AdamW(model.parameters(), lr=lr, betas=(0.9, 0.95), weight_decay=0.0)
    g = torch.Generator().manual_seed(seed)
    model.train()
    for step in range(steps):
        for group in opt.param_groups:
            group["lr"] = warmup_cosine(step, steps, max(1, steps // 10), lr, lr / 10)
        xb, yb = get_batch(train, block_size, batch_size, generator=g)
        _, loss = model(xb, yb)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
    N = scaling_params(model)
    D = steps * batch_size * block_size
    return {"n_layer": n_layer, "n_embd": n_embd, "params": N, "steps": steps, "tokens": D, "flops": 6.0 * N * D,
            "val_loss": estimate_loss(model, val, block_size, max_blocks=eval_blocks)}


# ----------------------------------------------------------------------------- exercise 1: power-law fit
def fit_power_law(N: torch.Tensor, L: torch.Tensor, c: float) -> tuple[float, float]:
    """Fit L = a · N^(-alpha) + c for a *given* irreducible loss c: least squares on the straight line
    log(L - c) = log a - alpha · log N. N, L: (n,) with every L > c. Returns (a, alpha)."""
    x, y = N.double().log(), (L.double() - c).log()
    slope = ((x - x.mean()) * (y - y.mean())).sum() / ((x - x.mean()) ** 2).sum()
    intercept = y.mean() - slope * x.mean()
    return math.exp(intercept.item()), -slope.item()


def _fit_forgot_c(N, L, c):
    return fit_power_law(N, L, 0.0)


def _fit_no_exp(N, L, c):
    x, y = N.double().log(), (L.double() - c).log()
    slope = ((x - x.mean()) * (y - y.mean())).sum() / ((x - x.mean()) ** 2).sum()
    return (y.mean() - slope * x.mean()).item(), -slope.item()


def _fit_positive_slope(N, L, c):
    a, alpha = fit_power_law(N, L, c)
    return a, -alpha


def _fit_linear_space(N, L, c):
    x, y = N.double(), L.double() - c
    slope = ((x - x.mean()) * (y - y.mean())).sum() / ((x - x.mean()) ** 2).sum()
    return (y.mean() - slope * x.mean()).item(), -slope.item()


def _fit_cases() -> list[Case]:
    N = torch.tensor([1e3, 3e3, 1e4, 3e4, 1e5])
    noisy = 5.0 * N ** -0.3 + 1.5 + torch.tensor([0.01, -0.02, 0.015, 0.0, -0.01])
    return [
        Case((N, 20.0 * N ** -0.5, 0.0), label="exact power law, c = 0"),
        Case((N, 5.0 * N ** -0.3 + 1.5, 1.5), label="exact power law with c = 1.5"),
        Case((N, noisy, 1.4), label="noisy points, c = 1.4"),
        Case((torch.tensor([10.0, 100.0]), torch.tensor([3.0, 2.0]), 1.0), label="two points"),
    ]


def fit_scaling_law(N: torch.Tensor, L: torch.Tensor, fit: Callable = fit_power_law,
                    n_grid: int = 400) -> dict[str, float]:
    """Fit L(N) = a · N^(-alpha) + c with all three unknown: scan c over [0, min L) and keep the c whose
    (a, alpha) from ``fit`` (the exercise) gives the smallest squared error in L. Returns a, alpha, c and the
    R² of the fit, 1 - SS_res / SS_tot (1 = every point on the curve)."""
    N, L = torch.as_tensor(N, dtype=torch.float64), torch.as_tensor(L, dtype=torch.float64)
    best = None
    for c in torch.linspace(0.0, L.min().item() * 0.999, n_grid).tolist():
        a, alpha = fit(N, L, c)
        sse = ((a * N ** -alpha + c - L) ** 2).sum().item()
        if best is None or sse < best[0]:
            best = (sse, a, alpha, c)
    sse, a, alpha, c = best
    return {"a": a, "alpha": alpha, "c": c, "r2": 1.0 - sse / ((L - L.mean()) ** 2).sum().item()}


def power_law(N: Any, a: float, alpha: float, c: float) -> Any:
    """a · N^(-alpha) + c (works on floats, numpy arrays and tensors)."""
    return a * N ** -alpha + c


def plot_scaling_fit(N: Sequence[float], L: Sequence[float], fit: dict[str, float], held_out: Sequence = (),
                     ax: plt.Axes | None = None, title: str = "loss vs model size (fixed token budget)",
                     extrapolate: float = 10.0) -> plt.Figure:
    """Log-log plot of val loss against non-embedding parameters with the fitted power law, extrapolated
    ``extrapolate``× beyond the largest fitted model; ``held_out`` ((N, L) pairs) drawn as open circles."""
    fig, ax = (ax.figure, ax) if ax is not None else plt.subplots(figsize=(6, 4))
    N, L = np.asarray(N, dtype=float), np.asarray(L, dtype=float)
    grid = np.geomspace(N.min() / 1.5, N.max() * extrapolate, 200)
    ax.plot(N, L, "o", color="C0", label="trained (fitted)")
    if len(held_out):
        hN, hL = np.asarray(held_out, dtype=float).T
        ax.plot(hN, hL, "o", mfc="none", color="C3", label="trained (not fitted)")
    ax.plot(grid, power_law(grid, fit["a"], fit["alpha"], fit["c"]), "-", color="C1",
            label=f"fit: {fit['a']:.3g}·N^(-{fit['alpha']:.3f}) + {fit['c']:.2f}   (R² = {fit['r2']:.3f})")
    ax.axhline(fit["c"], color="gray", ls=":", lw=1, label="fitted irreducible loss c")
    ax.axvline(N.max(), color="gray", ls="--", lw=0.8)
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.set_xlabel("non-embedding parameters N")
    ax.set_ylabel("val loss (nats / char)")
    ax.set_title(title)
    ax.legend(fontsize=8)
    return fig


# ------------------------------------------------------------------------- the cached grid ("scaling_runs")
def scaling_runs_recipe() -> dict[str, Any]:
    """The grid behind the compute-optimal experiment: every width × every token budget, plus longer runs for
    the small widths (so that their IsoFLOP curves reach the data-rich side), each run trained from scratch with
    its own schedule. ``train.steps`` is the longest run's step count; building with fewer steps (tests) shrinks
    every run in proportion."""
    return {
        "kind": "scaling_runs", "corpus": "english", "n_layer": 1,
        "widths": [4, 6, 8, 12, 16, 24, 32, 48, 64],
        "tokens": [25600, 51200, 102400, 204800, 409600, 819200],
        "long_tokens": [1638400, 3276800], "long_max_width": 16,
        "train": {"steps": 3200, "batch_size": 32, "block_size": 32, "lr": 1e-2, "seed": 0, "eval_blocks": 400},
    }


def _train_scaling_runs(recipe: dict[str, Any], steps: int, log: Callable[[str], None]) -> tuple[dict, dict]:
    t = recipe["train"]
    per_step = t["batch_size"] * t["block_size"]
    scale = steps / t["steps"]
    rows = []
    for d in recipe["widths"]:
        budgets = recipe["tokens"] + (recipe["long_tokens"] if d <= recipe["long_max_width"] else [])
        for D in budgets:
            r = train_lm(recipe["n_layer"], d, max(per_step, round(D * scale / per_step) * per_step),
                         t["batch_size"], t["block_size"], t["lr"], t["seed"], t["eval_blocks"])
            rows.append(r)
            log(f"width {d:3d}  N {r['params']:7d}  D {r['tokens']:8d}  val loss {r['val_loss']:.4f}")
    table = {k: torch.tensor([r[k] for r in rows], dtype=torch.float64)
             for k in ("n_embd", "params", "tokens", "flops", "val_loss")}
    return {"state_dict": table}, _table_metrics(table)


def _table_metrics(table: dict[str, torch.Tensor]) -> dict[str, float]:
    """Summary numbers re-measured from a table: the L(N) fit over all widths at the largest token budget every
    width was trained on (819,200 in the committed table), and the mean loss."""
    widths = table["n_embd"].unique()
    D = min(table["tokens"][table["n_embd"] == w].max() for w in widths)
    sel = table["tokens"] == D
    fit = fit_scaling_law(table["params"][sel], table["val_loss"][sel])
    return {"fit_alpha": fit["alpha"], "fit_r2": fit["r2"], "mean_val_loss": table["val_loss"].mean().item()}


def _load_scaling_runs(payload: dict[str, Any]) -> dict[str, torch.Tensor]:
    return {k: v.clone() for k, v in payload["state_dict"].items()}


PRETRAINED = {"scaling_runs": Spec(scaling_runs_recipe, _train_scaling_runs, _load_scaling_runs, _table_metrics)}


def total_params(n_layer: int, n_embd: int, vocab_size: int = 103, block_size: int = 32) -> int:
    """All parameters of a family member, embeddings included (Chinchilla's count; the tied output layer once)."""
    return make_gpt(n_layer, n_embd, vocab_size, block_size).num_params(non_embedding=False)


def isoflop_curves(table: dict[str, torch.Tensor], budgets: Sequence[float], count: str = "total",
                   n_layer: int = 1) -> list[dict[str, Any]]:
    """For each compute budget C: the loss of every width when trained on D = C / (6N) tokens, read off that
    width's runs by linear interpolation of loss in log D (widths whose D falls outside the grid are skipped).
    ``count``: "total" counts every parameter (Chinchilla), "non_embedding" Kaplan's N.
    Returns per budget: C, N (k,), D (k,), loss (k,) and the winner's N_opt, D_opt and tokens per parameter."""
    if count not in ("total", "non_embedding"):
        raise ValueError(f"count must be 'total' or 'non_embedding', got {count!r}")
    out = []
    widths = table["n_embd"].unique()
    for C in budgets:
        Ns, Ds, Ls = [], [], []
        for w in widths:
            sel = table["n_embd"] == w
            N = table["params"][sel][0].item() if count == "non_embedding" else total_params(n_layer, int(w))
            logD, loss = table["tokens"][sel].log().numpy(), table["val_loss"][sel].numpy()
            D = C / (6 * N)
            if logD.min() - 1e-9 <= math.log(D) <= logD.max() + 1e-9:
                Ns.append(N)
                Ds.append(D)
                Ls.append(float(np.interp(math.log(D), logD, loss)))
        if not Ns:
            continue
        i = int(np.argmin(Ls))
        out.append({"C": C, "N": np.array(Ns), "D": np.array(Ds), "loss": np.array(Ls), "N_opt": Ns[i],
                    "D_opt": Ds[i], "tokens_per_param": Ds[i] / Ns[i]})
    return out


def plot_isoflop(curves: list[dict[str, Any]], ax: plt.Axes | None = None) -> plt.Figure:
    """IsoFLOP curves: loss against N at fixed compute, one line per budget, the winner of each starred."""
    fig, ax = (ax.figure, ax) if ax is not None else plt.subplots(figsize=(6, 4))
    for i, cur in enumerate(curves):
        ax.plot(cur["N"], cur["loss"], "o-", color=f"C{i}", label=f"C = {cur['C']:.1e} FLOPs")
        j = int(np.argmin(cur["loss"]))
        ax.plot(cur["N"][j], cur["loss"][j], "*", ms=16, color=f"C{i}", mec="k")
        ax.axvline(math.sqrt(cur["C"] / 120), color=f"C{i}", ls=":", lw=1.2)  # C = 6·N·(20N) = 120 N²
    ax.set_xscale("log")
    ax.set_xlabel("parameters N (with embeddings)")
    ax.set_ylabel("val loss (nats / char)")
    ax.set_title("IsoFLOP curves: at fixed compute, which size wins?\n"
                 "★ measured optimum, dotted: 20 tokens per parameter")
    ax.legend(fontsize=8)
    return fig


def scaling_widget(table: dict[str, torch.Tensor], smallest: int = 0, largest: int = 4, budget: int = 4,
                   extrapolate: float = 10.0) -> plt.Figure:
    """The "Try it" figure: fit L(N) on the widths ``smallest``…``largest`` (indices into the grid's widths,
    sorted) at token budget number ``budget`` (index into the sorted budgets) and extrapolate ``extrapolate``×;
    the other trained widths at that budget are drawn as open circles, so you can see whether the extrapolation
    holds. The fit needs 3 sizes (3 unknowns): a narrower range is widened to the right (or left at the end)."""
    budgets = table["tokens"].unique()
    if not 0 <= budget < len(budgets):
        raise ValueError(f"budget must be an index 0..{len(budgets) - 1}, got {budget}")
    sel = table["tokens"] == budgets[budget]
    N, L = table["params"][sel], table["val_loss"][sel]
    order = N.argsort()
    N, L = N[order], L[order]
    smallest = min(max(0, smallest), len(N) - 3)
    largest = min(max(largest, smallest + 2), len(N) - 1)
    keep = torch.zeros(len(N), dtype=torch.bool)
    keep[smallest:largest + 1] = True
    fit = fit_scaling_law(N[keep], L[keep])
    held = [(n, v) for n, v, k in zip(N.tolist(), L.tolist(), keep.tolist()) if not k]
    return plot_scaling_fit(N[keep].numpy(), L[keep].numpy(), fit, held, extrapolate=extrapolate,
                            title=f"fit on {int(keep.sum())} sizes, D = {int(budgets[budget]):,} tokens")


# ================================================================================ part 2: the modern block
# ------------------------------------------------------------------------------------- exercise 2: RoPE
def rope_angles(T: int, head_dim: int, base: float = 10000.0, offset: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """cos and sin of the rotation angles m·θ_i for positions m = offset … offset+T-1, θ_i = base^(-2i/head_dim).

    Returns cos, sin, each (T, head_dim // 2): pair i of the vector at position m turns by m·θ_i radians.
    Low pairs turn fast (fine position), high pairs slowly (coarse position) — the sinusoidal clock of L12.
    """
    if head_dim % 2:
        raise ValueError(f"RoPE rotates pairs of channels: head_dim must be even, got {head_dim}")
    # angles in float64: m·θ reaches thousands of radians in long contexts, where float32 rounding of the angle
    # itself would already cost ~1e-4; the tables are then stored in float32 like the activations
    theta = base ** (-torch.arange(0, head_dim, 2, dtype=torch.float64) / head_dim)   # (hd/2,)
    m = torch.arange(offset, offset + T, dtype=torch.float64)
    angles = m[:, None] * theta[None, :]                                                 # (T, hd/2)
    return angles.cos().float(), angles.sin().float()


def apply_rope(x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
    """Rotate each channel pair of x (..., T, hd) by its position's angle (rotary position embedding).

    The pairs are (x[..., i], x[..., i + hd/2]) — the "rotate half" layout of GPT-NeoX and Llama.
    cos, sin: (T, hd/2) from :func:`rope_angles`. Returns (..., T, hd), same norm as x at every position.
    """
    x1, x2 = x.chunk(2, dim=-1)                     # the two coordinates of every pair, (..., T, hd/2) each
    return torch.cat([x1 * cos - x2 * sin,          # a 2-D rotation by the angle: [cos -sin; sin cos]
                      x1 * sin + x2 * cos], dim=-1)


def _rope_wrong_direction(x, cos, sin):
    x1, x2 = x.chunk(2, dim=-1)
    return torch.cat([x1 * cos + x2 * sin, -x1 * sin + x2 * cos], dim=-1)


def _rope_interleaved(x, cos, sin):
    x1, x2 = x[..., 0::2], x[..., 1::2]
    return torch.cat([x1 * cos - x2 * sin, x1 * sin + x2 * cos], dim=-1)


def _rope_added(x, cos, sin):
    return x + torch.cat([cos, sin], dim=-1)


def _rope_cases() -> list[Case]:
    g = torch.Generator().manual_seed(0)
    c8, s8 = rope_angles(5, 8)
    c4, s4 = rope_angles(3, 4, offset=7)
    c16, s16 = rope_angles(6, 16, base=100.0)
    return [
        Case((torch.randn(5, 8, generator=g), c8, s8), label="one head, T=5, hd=8"),
        Case((torch.randn(2, 3, 5, 8, generator=g), c8, s8), label="(B, H, T, hd) = (2, 3, 5, 8)"),
        Case((torch.randn(1, 2, 3, 4, generator=g), c4, s4), label="positions 7..9 (a decoding offset), hd=4"),
        Case((torch.randn(2, 6, 16, generator=g), c16, s16), label="hd=16, base 100"),
    ]


class GroupedQueryAttention(nn.Module):
    """Causal self-attention with RoPE on q and k and ``n_kv_head`` key/value heads (grouped-query attention).

    n_kv_head = n_head is multi-head attention (MHA), n_kv_head = 1 multi-query attention (MQA), anything in
    between that divides n_head is GQA: query head h reads key/value head h // (n_head / n_kv_head).
    x: (B, T, C) → (B, T, C). Layers: ``q`` Linear(C, C), ``kv`` Linear(C, 2·n_kv_head·hd), ``proj`` Linear(C, C).
    """

    def __init__(self, d_model: int, n_head: int, n_kv_head: int, rope: bool = True):
        super().__init__()
        if d_model % n_head or n_head % n_kv_head:
            raise ValueError(f"need n_head | d_model and n_kv_head | n_head, got d_model={d_model}, "
                             f"n_head={n_head}, n_kv_head={n_kv_head}")
        self.n_head, self.n_kv_head, self.head_dim, self.rope = n_head, n_kv_head, d_model // n_head, rope
        self.q = nn.Linear(d_model, d_model, bias=False)
        self.kv = nn.Linear(d_model, 2 * n_kv_head * self.head_dim, bias=False)   # the only thing cached
        self.proj = nn.Linear(d_model, d_model, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        B, T, C = x.shape
        q = self.q(x).view(B, T, self.n_head, self.head_dim).transpose(1, 2)            # (B, H, T, hd)
        k, v = self.kv(x).view(B, T, 2, self.n_kv_head, self.head_dim).permute(2, 0, 3, 1, 4)  # (B, Hkv, T, hd)
        if self.rope:
            cos, sin = rope_angles(T, self.head_dim)
            q, k = apply_rope(q, cos, sin), apply_rope(k, cos, sin)
        # every group of n_head / n_kv_head consecutive query heads shares one key/value head
        group = self.n_head // self.n_kv_head
        k, v = k.repeat_interleave(group, dim=1), v.repeat_interleave(group, dim=1)      # (B, H, T, hd)
        y = F.scaled_dot_product_attention(q, k, v, is_causal=True)
        return self.proj(y.transpose(1, 2).reshape(B, T, C))


def _gqa_mistake(tiled: bool = False, causal: bool = True, rope_on_keys: bool = True) -> type[nn.Module]:
    """GroupedQueryAttention with one of the slips students make (the checker's common mistakes)."""

    class Mistake(GroupedQueryAttention):
        def forward(self, x):
            B, T, C = x.shape
            q = self.q(x).view(B, T, self.n_head, self.head_dim).transpose(1, 2)
            k, v = self.kv(x).view(B, T, 2, self.n_kv_head, self.head_dim).permute(2, 0, 3, 1, 4)
            if self.rope:
                cos, sin = rope_angles(T, self.head_dim)
                q = apply_rope(q, cos, sin)
                k = apply_rope(k, cos, sin) if rope_on_keys else k
            group = self.n_head // self.n_kv_head
            if tiled:  # heads 0,1,0,1 instead of 0,0,1,1
                k, v = k.repeat(1, group, 1, 1), v.repeat(1, group, 1, 1)
            else:
                k, v = k.repeat_interleave(group, dim=1), v.repeat_interleave(group, dim=1)
            y = F.scaled_dot_product_attention(q, k, v, is_causal=causal)
            return self.proj(y.transpose(1, 2).reshape(B, T, C))

    return Mistake


def _gqa_cases() -> list[Case]:
    g = torch.Generator().manual_seed(3)
    return [
        Case((torch.randn(2, 5, 16, generator=g),), {"d_model": 16, "n_head": 4, "n_kv_head": 2},
             label="GQA: 4 query heads share 2 kv heads"),
        Case((torch.randn(1, 6, 16, generator=g),), {"d_model": 16, "n_head": 4, "n_kv_head": 1},
             label="MQA: one kv head"),
        Case((torch.randn(2, 4, 24, generator=g),), {"d_model": 24, "n_head": 6, "n_kv_head": 2},
             label="6 query heads in 2 groups of 3"),
        Case((torch.randn(2, 5, 8, generator=g),), {"d_model": 8, "n_head": 2, "n_kv_head": 2},
             label="MHA (n_kv_head = n_head)"),
    ]


def kv_cache_bytes(n_layer: int, n_kv_heads: int, head_dim: int, seq_len: int, batch: int = 1,
                   bytes_per: int = 2) -> int:
    """Bytes of the KV cache of a decoder: a key and a value vector per layer, kv head, position and sequence.

    2 (k and v) · n_layer · n_kv_heads · head_dim · seq_len · batch · bytes_per (2 for fp16/bf16).
    MHA: n_kv_heads = n_head; GQA: fewer; MQA: 1. Lecture 23 imports this for its KV-cache lesson.
    """
    return 2 * n_layer * n_kv_heads * head_dim * seq_len * batch * bytes_per


def mla_cache_bytes(n_layer: int, kv_latent_dim: int, rope_dim: int, seq_len: int, batch: int = 1,
                    bytes_per: int = 2) -> int:
    """Bytes of multi-head latent attention's cache: per layer and position one compressed latent c_kv
    (kv_latent_dim) and one shared RoPE key (rope_dim) — independent of the number of heads."""
    return n_layer * (kv_latent_dim + rope_dim) * seq_len * batch * bytes_per


# --------------------------------------------------------------------------- multi-head latent attention
class LatentAttention(nn.Module):
    """Multi-head latent attention (DeepSeek-V2, 2024), causal. x: (B, T, C) → (B, T, C).

    Keys and values are not cached per head: each token is compressed to a latent c_kv = x W_dkv of size
    ``kv_latent`` (≪ 2 · n_head · head_dim), from which every head's key (content part) and value are
    re-expanded (``k_up``, ``v_up``). RoPE cannot pass through that compression (a rotation depends on the
    position, so it would not commute with absorbing ``k_up`` into the query), hence a separate small RoPE key
    k_rope = rope(x W_kr) of size ``rope_dim``, shared by all heads. The cache per token: c_kv and k_rope.
    """

    def __init__(self, d_model: int, n_head: int, kv_latent: int, rope_dim: int = 8):
        super().__init__()
        if d_model % n_head:
            raise ValueError(f"n_head ({n_head}) must divide d_model ({d_model})")
        self.n_head, self.head_dim, self.rope_dim = n_head, d_model // n_head, rope_dim
        self.q = nn.Linear(d_model, n_head * (self.head_dim + rope_dim), bias=False)  # content + rope query
        self.kv_down = nn.Linear(d_model, kv_latent, bias=False)    # → c_kv: the cached latent
        self.k_rope = nn.Linear(d_model, rope_dim, bias=False)      # → the cached, shared RoPE key
        self.k_up = nn.Linear(kv_latent, d_model, bias=False)       # latent → every head's content key
        self.v_up = nn.Linear(kv_latent, d_model, bias=False)       # latent → every head's value
        self.proj = nn.Linear(d_model, d_model, bias=False)

    def compress(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """What a decoder caches for tokens x (B, T, C): c_kv (B, T, kv_latent) and k_rope (B, T, rope_dim)."""
        cos, sin = rope_angles(x.shape[1], self.rope_dim)
        return self.kv_down(x), apply_rope(self.k_rope(x), cos, sin)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        B, T, C = x.shape
        H, hd, r = self.n_head, self.head_dim, self.rope_dim
        c_kv, k_r = self.compress(x)                                              # (B, T, L), (B, T, r)
        q = self.q(x).view(B, T, H, hd + r).transpose(1, 2)                      # (B, H, T, hd + r)
        cos, sin = rope_angles(T, r)
        q = torch.cat([q[..., :hd], apply_rope(q[..., hd:], cos, sin)], dim=-1)
        k_c = self.k_up(c_kv).view(B, T, H, hd).transpose(1, 2)                  # (B, H, T, hd)
        k = torch.cat([k_c, k_r[:, None].expand(B, H, T, r)], dim=-1)           # rope part shared by the heads
        v = self.v_up(c_kv).view(B, T, H, hd).transpose(1, 2)
        y = F.scaled_dot_product_attention(q, k, v, is_causal=True)              # scale 1/sqrt(hd + r)
        return self.proj(y.transpose(1, 2).reshape(B, T, C))


# --------------------------------------------------------------------------------------- SwiGLU and a block
class SwiGLU(nn.Module):
    """The gated feed-forward of Llama/PaLM: down( silu(gate(x)) * up(x) ). x: (B, T, C) → (B, T, C).

    Three matrices instead of two, so the hidden size is 2/3 · 4C (rounded up to a multiple of 8) to keep the
    parameter count of the 4C GELU MLP.
    """

    def __init__(self, d_model: int, hidden: int | None = None):
        super().__init__()
        hidden = hidden or 8 * ((2 * 4 * d_model // 3 + 7) // 8)
        self.gate = nn.Linear(d_model, hidden, bias=False)
        self.up = nn.Linear(d_model, hidden, bias=False)
        self.down = nn.Linear(hidden, d_model, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.down(F.silu(self.gate(x)) * self.up(x))   # the gate decides, per channel, how much passes


class ModernBlock(nn.Module):
    """A Llama-style block: x + attn(RMSNorm(x)), then x + SwiGLU(RMSNorm(x)); RoPE + GQA attention, no biases.
    x: (B, T, C) → (B, T, C)."""

    def __init__(self, d_model: int, n_head: int, n_kv_head: int):
        super().__init__()
        self.norm1, self.norm2 = RMSNorm(d_model), RMSNorm(d_model)
        self.attn = GroupedQueryAttention(d_model, n_head, n_kv_head)
        self.mlp = SwiGLU(d_model)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x + self.attn(self.norm1(x))
        return x + self.mlp(self.norm2(x))

# ============================================================================ part 3: mixture of experts
# ------------------------------------------------------------------------------ exercise 4: top-k routing
def top_k_route(logits: torch.Tensor, k: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Pick k experts per token from router logits (N, E) and weight them.

    Returns weights (N, k) — a softmax over the k chosen logits only, so they sum to 1 — and the chosen expert
    indices (N, k), best first (Mixtral's router). Raises ValueError unless 1 ≤ k ≤ E.
    """
    if not 1 <= k <= logits.shape[-1]:
        raise ValueError(f"k must be between 1 and the number of experts ({logits.shape[-1]}), got {k}")
    top_logits, experts = logits.topk(k, dim=-1)         # (N, k): the k largest logits and where they are
    return top_logits.softmax(dim=-1), experts          # renormalise among the chosen: weights sum to 1


def _route_softmax_then_topk(logits, k):
    probs, experts = logits.softmax(-1).topk(k, dim=-1)
    return probs, experts                                # not renormalised: weights sum to < 1


def _route_smallest(logits, k):
    top, experts = logits.topk(k, dim=-1, largest=False)
    return top.softmax(-1), experts


def _route_softmax_over_tokens(logits, k):
    top, experts = logits.topk(k, dim=-1)
    return top.softmax(0), experts


def _route_cases() -> list[Case]:
    g = torch.Generator().manual_seed(4)
    return [
        Case((torch.randn(6, 4, generator=g), 2), label="6 tokens, 4 experts, top-2"),
        Case((torch.randn(5, 8, generator=g), 1), label="top-1 (Switch Transformer): weight 1"),
        Case((3 * torch.randn(7, 8, generator=g), 3), label="8 experts, top-3, confident router"),
        Case((torch.randn(3, 3, generator=g), 3), label="k = E: every expert, weights = softmax"),
    ]


def load_balancing_loss(probs: torch.Tensor, experts: torch.Tensor) -> torch.Tensor:
    """Switch Transformer's auxiliary loss E · Σ_i f_i · P_i for router probabilities probs (N, E) and the
    chosen experts (N, k).

    f_i: fraction of the N·k routing slots that went to expert i (counted, not differentiable);
    P_i: mean router probability of expert i (differentiable). Both are uniform (1/E) at the minimum value 1;
    a router that sends everything to one expert it is sure about scores E.
    """
    E = probs.shape[-1]
    f = torch.bincount(experts.reshape(-1), minlength=E).float() / experts.numel()   # (E,)
    P = probs.mean(dim=0)                                                               # (E,)
    return E * (f * P).sum()


class MoE(nn.Module):
    """A mixture-of-experts feed-forward layer: a router sends each token to k of ``n_experts`` small MLPs
    (C → hidden → GELU → C) and mixes their outputs with the routing weights. x: (N, C) → y (N, C) and a dict
    with the ``aux_loss`` (load balancing) and the ``counts`` (routing slots per expert, for the usage histogram).

    Parameters grow with n_experts, compute per token does not: only k experts work on each token. The experts'
    weights are stacked, w1 (E, C, hidden), w2 (E, hidden, C), so :meth:`dispatch` can gather them per token.
    """

    def __init__(self, d_model: int, n_experts: int = 8, k: int = 2, hidden: int = 32):
        super().__init__()
        self.k = k
        self.router = nn.Linear(d_model, n_experts, bias=False)
        self.w1 = nn.Parameter(torch.randn(n_experts, d_model, hidden) / math.sqrt(d_model))
        self.b1 = nn.Parameter(torch.zeros(n_experts, hidden))
        self.w2 = nn.Parameter(torch.randn(n_experts, hidden, d_model) / math.sqrt(hidden))
        self.b2 = nn.Parameter(torch.zeros(n_experts, d_model))

    def expert(self, e: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        """Expert e[i] applied to token x[i]: e (M,) int, x (M, C) → (M, C)."""
        h = F.gelu(torch.einsum("mc,mch->mh", x, self.w1[e]) + self.b1[e])
        return torch.einsum("mh,mhc->mc", h, self.w2[e]) + self.b2[e]

    def dispatch(self, x: torch.Tensor, weights: torch.Tensor, chosen: torch.Tensor) -> torch.Tensor:
        """Send every token to its k chosen experts and add up their outputs with the routing weights.
        x (N, C), weights and chosen (N, k) → y (N, C)."""
        N, k = chosen.shape
        out = self.expert(chosen.reshape(-1), x.repeat_interleave(k, dim=0)).view(N, k, -1)   # (N, k, C)
        return (weights[..., None] * out).sum(dim=1)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        logits = self.router(x)                                   # (N, E)
        weights, chosen = top_k_route(logits, self.k)             # (N, k), (N, k)
        y = self.dispatch(x, weights, chosen)
        aux = load_balancing_loss(logits.softmax(dim=-1), chosen)
        return y, {"aux_loss": aux, "counts": torch.bincount(chosen.reshape(-1), minlength=self.w1.shape[0])}


def moe_task(n: int, d: int = 8, n_clusters: int = 8, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """A toy regression with 8 regimes: x (n, d) drawn around one of n_clusters centres, target y (n, d) a
    different random linear map (then tanh) per regime — work that splits naturally between experts.
    The maps and centres depend only on a fixed seed (the same task for every call); ``seed`` draws the points."""
    task = torch.Generator().manual_seed(1234)
    centres = 2.0 * torch.randn(n_clusters, d, generator=task)
    maps = torch.randn(n_clusters, d, d, generator=task) / math.sqrt(d)
    g = torch.Generator().manual_seed(seed)
    c = torch.randint(n_clusters, (n,), generator=g)
    x = centres[c] + torch.randn(n, d, generator=g)
    y = torch.tanh(torch.einsum("nij,nj->ni", maps[c], x))
    return x, y


def train_moe(balance: float, steps: int = 200, seed: int = 0, n_experts: int = 8, k: int = 1,
              batch_size: int = 128, lr: float = 1e-2) -> dict[str, Any]:
    """Train an :class:`MoE` (top-1 by default, like the Switch Transformer) on 4,096 points of
    :func:`moe_task` with loss MSE + balance · aux_loss. Returns the held-out MSE, the expert usage (fraction of
    the routing slots per expert, (E,)) on 2,000 held-out tokens, its entropy (nats; log E = perfectly even),
    its max/min ratio and the trained model."""
    torch.manual_seed(seed)
    moe = MoE(8, n_experts, k)
    opt = torch.optim.Adam(moe.parameters(), lr=lr)
    X, Y = moe_task(4096, seed=seed)
    g = torch.Generator().manual_seed(seed)
    for _ in range(steps):
        i = torch.randint(len(X), (batch_size,), generator=g)
        out, info = moe(X[i])
        loss = F.mse_loss(out, Y[i]) + balance * info["aux_loss"]
        opt.zero_grad()
        loss.backward()
        opt.step()
    with torch.no_grad():
        x, y = moe_task(2000, seed=10**9 + seed)
        out, info = moe(x)
    usage = info["counts"].float() / info["counts"].sum()
    entropy = -(usage * usage.clamp_min(1e-12).log()).sum().item()
    return {"mse": F.mse_loss(out, y).item(), "usage": usage, "entropy": entropy,
            "max_over_min": (usage.max() / usage.min().clamp_min(1e-12)).item(), "model": moe}


# ======================================================================= part 4: training on many processes
# -------------------------------------------------------------------------- exercise 5: averaging all-reduce
def ring_allreduce(per_rank: list[torch.Tensor]) -> list[torch.Tensor]:
    """The averaging all-reduce, simulated: rank r holds per_rank[r] (same shape on every rank); afterwards
    every rank holds the mean over ranks. Returns one tensor per rank (new tensors; inputs unchanged).

    Done as a *ring* all-reduce (what NCCL and gloo do for large tensors): each rank's tensor is cut into
    W chunks; in W-1 reduce-scatter steps every rank passes one chunk to its right neighbour, which adds it to its
    own, until rank r owns the full sum of chunk r+1; in W-1 all-gather steps the finished chunks travel round
    the ring. Every rank sends 2(W-1)/W of the tensor in total — independent of W, which is why it scales.
    """
    W = len(per_rank)
    shape = per_rank[0].shape
    chunks = [list(t.detach().reshape(-1).clone().tensor_split(W)) for t in per_rank]   # chunks[rank][c]
    for step in range(W - 1):               # reduce-scatter: rank r sends chunk (r - step) mod W to rank r+1
        sent = [chunks[r][(r - step) % W].clone() for r in range(W)]
        for r in range(W):
            chunks[(r + 1) % W][(r - step) % W] += sent[r]
    for step in range(W - 1):               # all-gather: rank r owns the sum of chunk (r + 1 - step) mod W
        sent = [chunks[r][(r + 1 - step) % W].clone() for r in range(W)]
        for r in range(W):
            chunks[(r + 1) % W][(r + 1 - step) % W] = sent[r]
    return [torch.cat(c).reshape(shape) / W for c in chunks]   # sum → mean: the gradient of the mean loss


def _allreduce_sum(per_rank):
    total = torch.stack(per_rank).sum(0)
    return [total.clone() for _ in per_rank]


def _allreduce_only_rank0(per_rank):
    mean = torch.stack(per_rank).mean(0)
    return [mean] + [t.clone() for t in per_rank[1:]]


def _allreduce_mean_of_elements(per_rank):
    return [t.clone().fill_(t.mean().item()) for t in per_rank]


def _allreduce_cases() -> list[Case]:
    g = torch.Generator().manual_seed(5)
    return [
        Case(([torch.randn(6, generator=g) for _ in range(2)],), label="2 ranks, 6 numbers"),
        Case(([torch.randn(3, 4, generator=g) for _ in range(4)],), label="4 ranks, (3, 4) gradients"),
        Case(([torch.randn(7, generator=g) for _ in range(3)],), label="3 ranks, 7 numbers (uneven chunks)"),
        Case(([torch.randn(2, 5, generator=g)],), label="a single rank: unchanged"),
    ]


def ddp_model(seed: int = 0) -> nn.Module:
    """The small classifier the data-parallel demo trains: 2 → 32 → 32 → 3 (on ``utils.data.spirals``)."""
    torch.manual_seed(seed)
    return nn.Sequential(nn.Linear(2, 32), nn.Tanh(), nn.Linear(32, 32), nn.Tanh(), nn.Linear(32, 3))


def ddp_data(n: int = 256) -> tuple[torch.Tensor, torch.Tensor]:
    """The global batch of the demo: n points of three spirals, X (n, 2), y (n,)."""
    return utils.data.spirals(n, seed=0)


def ddp_worker(rank: int, world_size: int, init_file: str, out_dir: str, steps: int = 5, lr: float = 0.1) -> None:
    """What each process runs (``torch.multiprocessing.start_processes`` calls it as fn(rank, *args)).

    1. Join the process group (gloo: CPU, TCP between processes; the rendezvous is a shared file).
    2. Gradient of the loss on *this rank's* slice of the global batch; ``dist.all_reduce`` (sum) / world size.
    3. A few SGD steps with ``DistributedDataParallel``, which does the same all-reduce in buckets,
       overlapped with the backward pass.
    Writes ``rank{r}.pt`` to out_dir: the local and the all-reduced gradients, and the final parameters.
    """
    import torch.distributed as dist
    from torch.nn.parallel import DistributedDataParallel

    torch.set_num_threads(1)
    dist.init_process_group("gloo", init_method=f"file://{init_file}", rank=rank, world_size=world_size)
    X, y = ddp_data()
    shard = slice(rank * len(X) // world_size, (rank + 1) * len(X) // world_size)   # this rank's half
    model = ddp_model()                                  # same seed → the same initial weights on every rank
    F.cross_entropy(model(X[shard]), y[shard]).backward()
    local = [p.grad.clone() for p in model.parameters()]
    for p in model.parameters():
        dist.all_reduce(p.grad, op=dist.ReduceOp.SUM)    # every rank now holds the sum over ranks…
        p.grad /= world_size                             # …and the mean is the gradient of the full batch
    reduced = [p.grad.clone() for p in model.parameters()]

    ddp = DistributedDataParallel(ddp_model())           # broadcasts rank 0's weights, hooks the all-reduce
    opt = torch.optim.SGD(ddp.parameters(), lr=lr)
    for _ in range(steps):
        opt.zero_grad()
        F.cross_entropy(ddp(X[shard]), y[shard]).backward()   # gradients arrive already averaged
        opt.step()
    torch.save({"local": local, "reduced": reduced,
                "final": [p.detach().clone() for p in ddp.module.parameters()]}, f"{out_dir}/rank{rank}.pt")
    dist.destroy_process_group()


def run_ddp(world_size: int = 2, steps: int = 5, lr: float = 0.1) -> list[dict[str, list[torch.Tensor]]]:
    """Launch ``world_size`` real processes running :func:`ddp_worker` (spawn: each starts a fresh Python that
    imports this module) and return what each rank saved."""
    import tempfile

    import torch.multiprocessing as mp

    with tempfile.TemporaryDirectory() as tmp:
        mp.start_processes(ddp_worker, args=(world_size, f"{tmp}/rendezvous", tmp, steps, lr), nprocs=world_size,
                           join=True, start_method="spawn")
        return [torch.load(f"{tmp}/rank{r}.pt", weights_only=True) for r in range(world_size)]


def single_process_reference(steps: int = 5, lr: float = 0.1) -> dict[str, list[torch.Tensor]]:
    """The same computation in one process on the whole batch: the full-batch gradient and the parameters after
    ``steps`` full-batch SGD steps — what data parallelism must reproduce."""
    X, y = ddp_data()
    model = ddp_model()
    F.cross_entropy(model(X), y).backward()
    grads = [p.grad.clone() for p in model.parameters()]
    model = ddp_model()
    opt = torch.optim.SGD(model.parameters(), lr=lr)
    for _ in range(steps):
        opt.zero_grad()
        F.cross_entropy(model(X), y).backward()
        opt.step()
    return {"grads": grads, "final": [p.detach().clone() for p in model.parameters()]}


def max_relative_error(a: list[torch.Tensor], b: list[torch.Tensor]) -> float:
    """max over tensors of ‖a - b‖ / ‖b‖."""
    return max(((x - z).norm() / z.norm()).item() for x, z in zip(a, b))


# ------------------------------------------------------------------------------------ memory arithmetic
def training_memory_gb(n_params: float, world: int = 8, strategy: str = "ddp") -> dict[str, float]:
    """Per-GPU memory (GB = 1e9 bytes) for weights, gradients and Adam states in mixed-precision training
    (ZeRO paper's accounting: 2 bytes fp16 weights + 2 bytes fp16 grads + 12 bytes fp32 master weights, m, v =
    16 bytes per parameter; activations not counted).

    strategy: "ddp" (everything replicated), "zero1" (optimizer states sharded over ``world``), "zero2" (+
    gradients), "zero3"/"fsdp" (+ weights), "tensor" (every matrix split ``world`` ways: all three split),
    "pipeline" (the layers split into ``world`` stages: all three split). Tensor and pipeline parallelism also
    split activations and compute; ZeRO only splits storage and gathers weights when a layer needs them.
    """
    w, g, o = 2 * n_params, 2 * n_params, 12 * n_params
    split = {"ddp": (1, 1, 1), "zero1": (1, 1, world), "zero2": (1, world, world), "zero3": (world, world, world),
             "fsdp": (world, world, world), "tensor": (world, world, world), "pipeline": (world, world, world)}
    if strategy not in split:
        raise ValueError(f"unknown strategy {strategy!r}; choose from {', '.join(split)}")
    sw, sg, so = split[strategy]
    out = {"weights": w / sw / 1e9, "grads": g / sg / 1e9, "adam": o / so / 1e9}
    out["total"] = sum(out.values())
    return out


# ================================================================================================ registry
EXERCISES = [
    Exercise(
        name="fit_power_law",
        reference=fit_power_law,
        cases=_fit_cases,
        mistakes={
            "forgot to subtract the irreducible loss c before taking the log": _fit_forgot_c,
            "returned log a (the intercept) instead of a = exp(intercept)": _fit_no_exp,
            "returned the slope itself: alpha = -slope, the exponent is negative": _fit_positive_slope,
            "fitted a straight line to L against N (linear axes) instead of log-log": _fit_linear_space,
        },
        hint="x = log N, y = log(L - c); slope and intercept of the least-squares line; a = exp(intercept), "
             "alpha = -slope.",
        atol=1e-6, rtol=1e-6,
    ),
    Exercise(
        name="apply_rope",
        reference=apply_rope,
        cases=_rope_cases,
        mistakes={
            "rotated the wrong way (the sign of sin is flipped)": _rope_wrong_direction,
            "paired neighbouring channels (0,1), (2,3)… instead of i and i + hd/2": _rope_interleaved,
            "added cos/sin to x like an absolute position embedding instead of rotating": _rope_added,
        },
        hint="x1, x2 = x.chunk(2, -1); return cat([x1·cos − x2·sin, x1·sin + x2·cos], -1).",
    ),
    Exercise(
        name="GroupedQueryAttention",
        reference=GroupedQueryAttention,
        cases=_gqa_cases,
        runner=run_module(GroupedQueryAttention),
        mistakes={
            "tiled the kv heads (.repeat: 0,1,0,1) instead of repeat_interleave (0,0,1,1)": _gqa_mistake(tiled=True),
            "forgot the causal mask": _gqa_mistake(causal=False),
            "applied RoPE to the queries but not the keys": _gqa_mistake(rope_on_keys=False),
        },
        hint="q: view (B, T, H, hd) → transpose; k, v: view (B, T, 2, Hkv, hd) → permute(2, 0, 3, 1, 4); RoPE "
             "on q and k; k.repeat_interleave(H // Hkv, dim=1) (same for v); then "
             "F.scaled_dot_product_attention(q, k, v, is_causal=True).",
        atol=1e-4, rtol=1e-4,
    ),
    Exercise(
        name="top_k_route",
        reference=top_k_route,
        cases=_route_cases,
        mistakes={
            "took the top-k of the softmax over all experts without renormalising": _route_softmax_then_topk,
            "picked the k smallest logits": _route_smallest,
            "took the softmax over the tokens (dim 0) instead of the chosen experts": _route_softmax_over_tokens,
        },
        hint="top, idx = logits.topk(k, dim=-1); return top.softmax(dim=-1), idx.",
    ),
    Exercise(
        name="ring_allreduce",
        reference=ring_allreduce,
        cases=_allreduce_cases,
        mistakes={
            "summed the gradients but forgot to divide by the number of ranks": _allreduce_sum,
            "only rank 0 got the result (a reduce, not an all-reduce)": _allreduce_only_rank0,
            "averaged over the elements of each tensor instead of over the ranks": _allreduce_mean_of_elements,
        },
        hint="Every rank must end with the same tensor: the mean over ranks, e.g. torch.stack(per_rank).mean(0) "
             "copied once per rank (the reference shows the ring algorithm that does it with little traffic).",
    ),
]
