"""Offline datasets for the course (COURSE_DESIGN §4). Nothing here touches the network except
:func:`download`, and only when the user opts in.

* 2-D toy sets: :func:`moons`, :func:`circles`, :func:`spirals`, :func:`gaussian_mixture`
* real small images: :func:`digits` (scikit-learn's 8×8 digits), :func:`mnist1d` (procedural, offline)
* :func:`font_digits`: MNIST-like 28×28 digits rendered from the fonts matplotlib ships, cached on disk
* :func:`shapes`: RGB scenes of coloured shapes with labels, boxes, masks and captions
* text: :func:`text_corpus` ("english" prose from CPython's docs, "python" source from the stdlib)
* procedural tasks: :func:`copy_task`, :func:`reversal_task`, :func:`sorting_task`, :func:`addition_problems`,
  :func:`modular_arithmetic`, :func:`kv_recall`, :func:`word_problems`
* :func:`download`: optional real datasets (MNIST, Fashion-MNIST, CIFAR-10), opt-in and checksummed.

Images are float32 tensors in [0, 1], shaped (N, C, H, W); labels are int64 tensors.
"""
from __future__ import annotations

import hashlib
import http.client
import math
import os
import sysconfig
import tempfile
import urllib.error
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path
from typing import BinaryIO, Callable

import numpy as np
import torch
import torch.nn.functional as F

__all__ = [
    "moons", "circles", "spirals", "gaussian_mixture", "digits", "mnist1d", "font_digits", "shapes", "Scenes",
    "text_corpus", "copy_task", "reversal_task", "sorting_task", "addition_problems", "modular_arithmetic",
    "kv_recall", "word_problems", "cache_dir", "atomic_write", "download", "download_file", "DownloadError", "DATASETS",
]


def _check_positive(**values: float) -> None:
    for name, v in values.items():
        if v is None or v <= 0:
            raise ValueError(f"{name} must be positive, got {v!r}")


def cache_dir() -> Path:
    """Where generated and downloaded data is cached: ``$DL_COURSE_CACHE`` or ``~/.cache/dl-course``."""
    path = Path(os.environ.get("DL_COURSE_CACHE", Path.home() / ".cache" / "dl-course"))
    path.mkdir(parents=True, exist_ok=True)
    return path


# ---------------------------------------------------------------------------------------------- 2-D toys
def moons(n: int = 500, noise: float = 0.1, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """Two interleaving half-moons. Returns X (n, 2) float32, y (n,) int64 in {0, 1}."""
    from sklearn.datasets import make_moons

    _check_positive(n=n)
    X, y = make_moons(n_samples=n, noise=noise, random_state=seed)
    return torch.tensor(X, dtype=torch.float32), torch.tensor(y, dtype=torch.int64)


def circles(n: int = 500, noise: float = 0.05, factor: float = 0.5, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """A small circle inside a large one. Returns X (n, 2), y (n,) in {0, 1}."""
    from sklearn.datasets import make_circles

    _check_positive(n=n)
    if not 0 < factor < 1:
        raise ValueError(f"factor must be in (0, 1), got {factor}")
    X, y = make_circles(n_samples=n, noise=noise, factor=factor, random_state=seed)
    return torch.tensor(X, dtype=torch.float32), torch.tensor(y, dtype=torch.int64)


def spirals(n: int = 600, n_classes: int = 3, noise: float = 0.2, turns: float = 1.0,
            seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """``n_classes`` interleaved spiral arms (the CS231n classic). Returns X (n, 2), y (n,)."""
    _check_positive(n=n, n_classes=n_classes, turns=turns)
    rng = np.random.default_rng(seed)
    y = np.arange(n) % n_classes
    r = rng.uniform(0.05, 1.0, n)
    theta = 2 * np.pi * (turns * r + y / n_classes) + rng.normal(0, noise, n) * r
    X = np.stack([r * np.cos(theta), r * np.sin(theta)], 1)
    return torch.tensor(X, dtype=torch.float32), torch.tensor(y, dtype=torch.int64)


def gaussian_mixture(n: int = 1000, n_components: int = 8, radius: float = 2.0, std: float = 0.05,
                     seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """Gaussians evenly spaced on a circle (the GAN mode-collapse classic). Returns X (n, 2) and the
    component index y (n,)."""
    _check_positive(n=n, n_components=n_components, radius=radius, std=std)
    rng = np.random.default_rng(seed)
    y = rng.integers(0, n_components, n)
    angle = 2 * np.pi * y / n_components
    X = np.stack([radius * np.cos(angle), radius * np.sin(angle)], 1) + rng.normal(0, std, (n, 2))
    return torch.tensor(X, dtype=torch.float32), torch.tensor(y, dtype=torch.int64)


# ------------------------------------------------------------------------------------------- small images
def digits() -> tuple[torch.Tensor, torch.Tensor]:
    """scikit-learn's 1,797 real handwritten 8×8 digits (ships with the package). X (N, 1, 8, 8) in [0, 1]."""
    from sklearn.datasets import load_digits

    d = load_digits()
    X = torch.tensor(d.images / 16.0, dtype=torch.float32).unsqueeze(1)
    return X, torch.tensor(d.target, dtype=torch.int64)


def mnist1d(n: int = 5000, seed: int = 42) -> dict[str, torch.Tensor]:
    """MNIST-1D (Greydanus 2020), generated offline with the package's ``make_dataset`` (never its downloader).

    Returns {"x": (0.8n, 40), "y": (0.8n,), "x_test": (0.2n, 40), "y_test": (0.2n,)}.
    """
    from mnist1d.data import get_dataset_args, make_dataset

    _check_positive(n=n)
    args = get_dataset_args()
    args.num_samples, args.seed = n, seed
    d = make_dataset(args)
    return {"x": torch.tensor(d["x"], dtype=torch.float32), "y": torch.tensor(d["y"], dtype=torch.int64),
            "x_test": torch.tensor(d["x_test"], dtype=torch.float32),
            "y_test": torch.tensor(d["y_test"], dtype=torch.int64)}


# ----------------------------------------------------------------------------------------------- font digits
FONT_FILES = [  # digits from the fonts matplotlib ships: sans, serif, mono, bold, italic
    "DejaVuSans.ttf", "DejaVuSans-Bold.ttf", "DejaVuSans-Oblique.ttf", "DejaVuSans-BoldOblique.ttf",
    "DejaVuSansMono.ttf", "DejaVuSansMono-Bold.ttf", "DejaVuSerif.ttf", "DejaVuSerif-Bold.ttf",
    "DejaVuSerif-Italic.ttf", "DejaVuSerif-BoldItalic.ttf", "STIXGeneral.ttf", "STIXGeneralBol.ttf",
    "STIXGeneralItalic.ttf", "STIXGeneralBolIta.ttf", "cmr10.ttf", "cmss10.ttf", "cmtt10.ttf", "cmb10.ttf",
    "cmti10.ttf",
]
_FONT_DIGITS_VERSION = 1  # bump when the generator changes, so stale caches are not reused
_SPLIT_OFFSET = {"train": 0, "val": 1_000_003, "test": 2_000_003}


def _glyph_templates(canvas: int) -> torch.Tensor:
    """Every digit of every font, centred by mass in a ``canvas``² box (MNIST-style: glyph fits 5/7 of it).

    Returns (len(FONT_FILES) * 10, canvas, canvas) float32 in [0, 1]; index = font * 10 + digit.
    """
    import matplotlib
    from matplotlib import ft2font

    font_dir = Path(matplotlib.get_data_path()) / "fonts" / "ttf"
    box = int(round(canvas * 5 / 7))
    out = torch.zeros(len(FONT_FILES) * 10, canvas, canvas)
    for f_idx, name in enumerate(FONT_FILES):
        font = ft2font.FT2Font(str(font_dir / name))
        font.set_size(64, 72)
        for d in range(10):
            font.set_text(str(d))
            font.draw_glyphs_to_bitmap()
            glyph = torch.tensor(np.asarray(font.get_image()), dtype=torch.float32) / 255.0
            rows, cols = torch.nonzero(glyph > 0.05, as_tuple=True)
            glyph = glyph[rows.min():rows.max() + 1, cols.min():cols.max() + 1]
            scale = box / max(glyph.shape)
            h, w = max(1, round(glyph.shape[0] * scale)), max(1, round(glyph.shape[1] * scale))
            glyph = F.interpolate(glyph[None, None], size=(h, w), mode="area")[0, 0]
            ys, xs = torch.meshgrid(torch.arange(h), torch.arange(w), indexing="ij")
            mass = glyph.sum()
            cy, cx = float((ys * glyph).sum() / mass), float((xs * glyph).sum() / mass)
            top = min(max(int(round(canvas / 2 - cy)), 0), canvas - h)
            left = min(max(int(round(canvas / 2 - cx)), 0), canvas - w)
            out[f_idx * 10 + d, top:top + h, left:left + w] = glyph
    return out.clamp(0, 1)


def _render_font_digits(n: int, size: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Random affine jitter, stroke width and noise on the glyph templates. Returns uint8 (n, size, size), y."""
    gen = torch.Generator().manual_seed(seed)
    hi = 2 * size  # render at 2× and average-pool: cheap anti-aliasing
    templates = _glyph_templates(hi)
    # stroke width: erode (thin), as is, dilate (bold), dilate twice (very bold), done on the 2× canvas
    t = templates[:, None]
    thin = -F.max_pool2d(-t, 3, 1, 1)
    bold = F.max_pool2d(t, 3, 1, 1)
    strokes = torch.stack([thin, t, bold, F.max_pool2d(bold, 3, 1, 1)], 0)[:, :, 0]  # (4, F*10, hi, hi)
    n_fonts = len(FONT_FILES)
    y = torch.randint(0, 10, (n,), generator=gen)
    font = torch.randint(0, n_fonts, (n,), generator=gen)
    stroke = torch.multinomial(torch.tensor([0.2, 0.4, 0.3, 0.1]), n, replacement=True, generator=gen)
    angle = (torch.rand(n, generator=gen) * 2 - 1) * math.radians(15)
    scale = 0.85 + 0.3 * torch.rand(n, generator=gen)
    shear = (torch.rand(n, generator=gen) * 2 - 1) * 0.25
    shift = (torch.rand(n, 2, generator=gen) * 2 - 1) * 0.12
    contrast = 0.75 + 0.25 * torch.rand(n, generator=gen)
    noise_std = 0.08 * torch.rand(n, generator=gen)
    images = np.empty((n, size, size), dtype=np.uint8)
    for start in range(0, n, 4096):
        sl = slice(start, min(n, start + 4096))
        src = strokes[stroke[sl], font[sl] * 10 + y[sl]][:, None]  # (b, 1, hi, hi)
        cos, sin = torch.cos(angle[sl]), torch.sin(angle[sl])
        # inverse map output -> input coordinates: rotate, shear, scale, shift
        theta = torch.zeros(len(src), 2, 3)
        theta[:, 0, 0] = cos / scale[sl]
        theta[:, 0, 1] = (-sin + shear[sl] * cos) / scale[sl]
        theta[:, 1, 0] = sin / scale[sl]
        theta[:, 1, 1] = (cos + shear[sl] * sin) / scale[sl]
        theta[:, :, 2] = shift[sl]
        grid = F.affine_grid(theta, list(src.shape), align_corners=False)
        warped = F.avg_pool2d(F.grid_sample(src, grid, align_corners=False), 2)[:, 0]
        warped = warped * contrast[sl, None, None]
        warped = warped + noise_std[sl, None, None] * torch.randn(warped.shape, generator=gen)
        images[sl] = (warped.clamp(0, 1) * 255).round().to(torch.uint8).numpy()
    return images, y.numpy()


def font_digits(n: int = 20000, size: int = 28, split: str = "train", seed: int = 0,
                cache: bool = True) -> tuple[torch.Tensor, torch.Tensor]:
    """MNIST-like digits rendered from DejaVu, STIX and Computer Modern fonts with random rotation, scale,
    shear, shift, stroke width, contrast and noise. Deterministic for (n, size, split, seed).

    The first call builds and caches the set (20k at 28×28 in a few seconds); later calls load it (< 1 s).
    ``split`` picks an independent draw: "train", "val" or "test".

    Returns X (n, 1, size, size) float32 in [0, 1] and y (n,) int64.
    """
    _check_positive(n=n)
    if size not in (8, 16, 28, 32):
        raise ValueError(f"size must be one of 8, 16, 28, 32, got {size}")
    if split not in _SPLIT_OFFSET:
        raise ValueError(f"split must be one of {sorted(_SPLIT_OFFSET)}, got {split!r}")
    path = cache_dir() / f"font_digits_v{_FONT_DIGITS_VERSION}_{split}_n{n}_s{size}_seed{seed}.npz"
    if cache and path.exists():
        with np.load(path) as f:
            images, labels = f["images"], f["labels"]
    else:
        images, labels = _render_font_digits(n, size, seed + _SPLIT_OFFSET[split])
        if cache:
            _atomic_save_npz(path, images=images, labels=labels)
    X = torch.from_numpy(images).float().div_(255.0).unsqueeze(1)
    return X, torch.from_numpy(labels).long()


def _atomic_save_npz(path: Path, **arrays: np.ndarray) -> None:
    atomic_write(path, lambda f: np.savez_compressed(f, **arrays))


def atomic_write(path: Path, write: Callable[[BinaryIO], object]) -> None:
    """Write a file so that readers see either the old file or the complete new one: ``write(f)`` fills a
    temporary file in the same directory, which is then renamed over ``path`` (removed if ``write`` fails).
    Used for the data cache and the committed checkpoints."""
    fd, tmp = tempfile.mkstemp(dir=path.parent, suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            write(f)
        os.chmod(tmp, 0o644)  # mkstemp makes files private; cached data and checkpoints are meant to be shared
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.remove(tmp)


# ---------------------------------------------------------------------------------------------------- shapes
SHAPE_NAMES = ("circle", "square", "triangle")
COLOR_NAMES = ("red", "green", "blue", "yellow", "purple", "cyan")
_RGB = np.array([[0.95, 0.15, 0.1], [0.15, 0.8, 0.2], [0.2, 0.35, 1.0], [0.95, 0.9, 0.15], [0.65, 0.2, 0.85],
                 [0.1, 0.85, 0.9]], dtype=np.float32)


@dataclass
class Scenes:
    """A batch of ``shapes`` scenes. K = max_objects; missing objects are padded with -1 / zeros.

    images (N, 3, S, S) float32 in [0, 1]; labels, colors (N, K) int64 shape/colour index or -1;
    boxes (N, K, 4) float32 (x0, y0, x1, y1) of the visible pixels, x1/y1 exclusive; masks (N, K, S, S) bool
    (visible pixels, occlusion applied); n_objects (N,); captions: objects named left to right.
    """

    images: torch.Tensor
    labels: torch.Tensor
    colors: torch.Tensor
    boxes: torch.Tensor
    masks: torch.Tensor
    n_objects: torch.Tensor
    captions: list[str]
    shape_names: tuple[str, ...] = field(default=SHAPE_NAMES)
    color_names: tuple[str, ...] = field(default=COLOR_NAMES)

    def __len__(self) -> int:
        return len(self.images)

    def semantic_masks(self) -> torch.Tensor:
        """(N, S, S) int64 per-pixel class: 0 background, 1 + shape index otherwise."""
        out = torch.zeros(self.masks.shape[0], *self.masks.shape[2:], dtype=torch.int64)
        for k in range(self.masks.shape[1]):
            cls = (self.labels[:, k] + 1).clamp(min=0)[:, None, None]
            out = torch.where(self.masks[:, k], cls, out)
        return out


def _shape_mask(kind: int, cx: float, cy: float, r: float, yy: np.ndarray, xx: np.ndarray) -> np.ndarray:
    if kind == 0:  # circle
        return (xx - cx) ** 2 + (yy - cy) ** 2 <= r ** 2
    if kind == 1:  # axis-aligned square with half-side r * 0.85 (similar area to the circle)
        h = 0.85 * r
        return (np.abs(xx - cx) <= h) & (np.abs(yy - cy) <= h)
    # upward triangle inscribed in the circle of radius 1.15 r: inside all three edges' half-planes
    R = 1.15 * r
    pts = [(cx + R * math.cos(a), cy - R * math.sin(a)) for a in (math.pi / 2, math.pi * 7 / 6, -math.pi / 6)]
    inside = np.ones_like(xx, dtype=bool)
    for (x1, y1), (x2, y2) in zip(pts, pts[1:] + pts[:1]):
        inside &= (x2 - x1) * (yy - y1) - (y2 - y1) * (xx - x1) <= 0
    return inside


def shapes(n: int = 1000, size: int = 32, min_objects: int = 1, max_objects: int = 1, min_radius: float = 4.0,
           max_radius: float = 8.0, overlap: bool = False, combos: list[tuple[str, str]] | None = None,
           noise: float = 0.02, seed: int = 0) -> Scenes:
    """Scenes of coloured circles, squares and triangles on a dark background.

    ``combos``: allowed (colour, shape) pairs, e.g. to hold some out for zero-shot tests; default all 18.
    ``overlap``: let objects overlap (later ones occlude earlier ones, each keeps >= 40 % of itself visible;
    masks and boxes describe the visible part).
    One generator serves classification (max_objects=1: ``labels[:, 0]``), detection (boxes), segmentation
    (masks), CLIP/VLM (captions) and conditional generation.
    """
    _check_positive(n=n, size=size, min_objects=min_objects, min_radius=min_radius)
    if max_objects < min_objects:
        raise ValueError(f"max_objects ({max_objects}) must be >= min_objects ({min_objects})")
    if not min_radius <= max_radius < size / 2:
        raise ValueError(f"need min_radius <= max_radius < size/2, got {min_radius}, {max_radius}, size {size}")
    if combos is None:
        pairs = [(c, s) for c in range(len(COLOR_NAMES)) for s in range(len(SHAPE_NAMES))]
    else:
        unknown = [p for p in combos if p[0] not in COLOR_NAMES or p[1] not in SHAPE_NAMES]
        if unknown or not combos:
            raise ValueError(f"combos must be non-empty (colour, shape) pairs from {COLOR_NAMES} x {SHAPE_NAMES}; "
                             f"bad: {unknown}")
        pairs = [(COLOR_NAMES.index(c), SHAPE_NAMES.index(s)) for c, s in combos]
    rng = np.random.default_rng(seed)
    K = max_objects
    yy, xx = np.mgrid[0:size, 0:size].astype(np.float32) + 0.5
    images = np.zeros((n, size, size, 3), dtype=np.float32)
    labels = -np.ones((n, K), dtype=np.int64)
    colors = -np.ones((n, K), dtype=np.int64)
    boxes = np.zeros((n, K, 4), dtype=np.float32)
    masks = np.zeros((n, K, size, size), dtype=bool)
    counts = np.zeros(n, dtype=np.int64)
    captions = []
    for i in range(n):
        k_target = int(rng.integers(min_objects, max_objects + 1))
        placed: list[tuple[float, float, float]] = []
        full_area: list[int] = []
        for _ in range(100 * k_target):  # rejection sampling of positions
            if len(placed) == k_target:
                break
            r = float(rng.uniform(min_radius, max_radius))
            cx, cy = (float(v) for v in rng.uniform(r + 1, size - r - 1, 2))
            c, s = pairs[int(rng.integers(len(pairs)))]
            m = _shape_mask(s, cx, cy, r, yy, xx)
            k = len(placed)
            if overlap:  # occlusion allowed, but every earlier object keeps >= 40 % of itself visible
                if any((masks[i, j] & ~m).sum() < 0.4 * full_area[j] for j in range(k)):
                    continue
            elif any((cx - px) ** 2 + (cy - py) ** 2 <= (r + pr + 2) ** 2 for px, py, pr in placed):
                continue
            masks[i, :k] &= ~m  # later objects occlude earlier ones
            masks[i, k] = m
            labels[i, k], colors[i, k] = s, c
            images[i][m] = _RGB[c] * rng.uniform(0.85, 1.0)
            placed.append((cx, cy, r))
            full_area.append(int(m.sum()))
        if len(placed) < min_objects:
            raise ValueError(f"could not place {min_objects} objects in a {size}px scene; use smaller radii")
        counts[i] = len(placed)
        for k in range(len(placed)):
            ys_, xs_ = np.nonzero(masks[i, k])
            if len(ys_):
                boxes[i, k] = (xs_.min(), ys_.min(), xs_.max() + 1, ys_.max() + 1)
        order = sorted(range(len(placed)), key=lambda k: placed[k][0])
        names = [f"a {COLOR_NAMES[colors[i, k]]} {SHAPE_NAMES[labels[i, k]]}" for k in order]
        captions.append(names[0] if len(names) == 1 else ", ".join(names[:-1]) + " and " + names[-1])
    images = np.clip(images + rng.normal(0, noise, images.shape).astype(np.float32), 0, 1) if noise else images
    return Scenes(images=torch.from_numpy(images).permute(0, 3, 1, 2).contiguous(),
                  labels=torch.from_numpy(labels), colors=torch.from_numpy(colors), boxes=torch.from_numpy(boxes),
                  masks=torch.from_numpy(masks), n_objects=torch.from_numpy(counts), captions=captions)


# ------------------------------------------------------------------------------------------------------ text
_PYTHON_SOURCES = ["textwrap.py", "heapq.py", "bisect.py", "functools.py", "dataclasses.py", "fractions.py",
                   "statistics.py", "string.py", "shlex.py", "difflib.py", "graphlib.py", "colorsys.py",
                   "calendar.py", "glob.py", "fnmatch.py", "ipaddress.py", "json/decoder.py", "json/encoder.py",
                   "collections/__init__.py", "random.py"]


def text_corpus(name: str = "english", split: str = "train", val_fraction: float = 0.1) -> str:
    """Built-in text, no download.

    "english": the prose of CPython's help topics (``pydoc_data.topics``, ~1 MB of English);
    "python": ~0.9 MB of Python source from a fixed list of standard-library modules.
    ``split``: "train" (first 1 - val_fraction of the characters), "val" (the rest) or "all".
    """
    if name == "english":
        from pydoc_data.topics import topics

        text = "\n\n".join(topics[k].strip() for k in sorted(topics))
    elif name == "python":
        stdlib = Path(sysconfig.get_paths()["stdlib"])
        text = "\n\n".join((stdlib / p).read_text(encoding="utf-8") for p in _PYTHON_SOURCES)
    else:
        raise ValueError(f"unknown corpus {name!r}; choose 'english' or 'python'")
    if not 0 < val_fraction < 1:
        raise ValueError(f"val_fraction must be in (0, 1), got {val_fraction}")
    cut = int(len(text) * (1 - val_fraction))
    if split == "train":
        return text[:cut]
    if split == "val":
        return text[cut:]
    if split == "all":
        return text
    raise ValueError(f"split must be 'train', 'val' or 'all', got {split!r}")


# ------------------------------------------------------------------------------------------ procedural tasks
def copy_task(n: int, length: int, vocab_size: int = 10, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """Random token sequences and themselves. Returns x, y (n, length) int64 in [0, vocab_size)."""
    _check_positive(n=n, length=length, vocab_size=vocab_size)
    x = torch.randint(0, vocab_size, (n, length), generator=torch.Generator().manual_seed(seed))
    return x, x.clone()


def reversal_task(n: int, length: int, vocab_size: int = 10, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """Random sequences and their reversal. Returns x, y (n, length) int64."""
    x, _ = copy_task(n, length, vocab_size, seed)
    return x, x.flip(1)


def sorting_task(n: int, length: int, vocab_size: int = 10, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """Random sequences and their sorted version. Returns x, y (n, length) int64."""
    x, _ = copy_task(n, length, vocab_size, seed)
    return x, x.sort(1).values


def addition_problems(n: int, n_digits: int = 3, seed: int = 0) -> list[tuple[str, str]]:
    """``n`` additions of zero-padded ``n_digits``-digit operands: ("042+317=", "0359"); the answer has
    n_digits + 1 digits (zero-padded) so every problem has the same length."""
    _check_positive(n=n, n_digits=n_digits)
    rng = np.random.default_rng(seed)
    a, b = rng.integers(0, 10 ** n_digits, (2, n))
    return [(f"{x:0{n_digits}d}+{y:0{n_digits}d}=", f"{x + y:0{n_digits + 1}d}") for x, y in zip(a, b)]


def modular_arithmetic(p: int = 97, op: str = "+") -> tuple[torch.Tensor, torch.Tensor]:
    """All p² equations ``a op b = c (mod p)`` (the grokking task). Returns x (p², 2) and c (p²,) int64."""
    _check_positive(p=p)
    a, b = torch.meshgrid(torch.arange(p), torch.arange(p), indexing="ij")
    a, b = a.flatten(), b.flatten()
    ops = {"+": lambda: (a + b) % p, "-": lambda: (a - b) % p, "*": lambda: (a * b) % p}
    if op not in ops:
        raise ValueError(f"op must be one of {sorted(ops)}, got {op!r}")
    return torch.stack([a, b], 1), ops[op]()


def kv_recall(n: int, n_pairs: int = 4, n_keys: int = 16, n_values: int = 16,
              seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """Associative recall: ``k1 v1 k2 v2 ... kq`` → the value stored with key kq.

    Keys are tokens [0, n_keys) (distinct within a sequence), values [n_keys, n_keys + n_values).
    Returns x (n, 2 * n_pairs + 1) and y (n,) int64 (a value token).
    """
    _check_positive(n=n, n_pairs=n_pairs, n_keys=n_keys, n_values=n_values)
    if n_pairs > n_keys:
        raise ValueError(f"n_pairs ({n_pairs}) cannot exceed n_keys ({n_keys}): keys must be distinct")
    gen = torch.Generator().manual_seed(seed)
    keys = torch.rand(n, n_keys, generator=gen).argsort(1)[:, :n_pairs]
    values = torch.randint(n_keys, n_keys + n_values, (n, n_pairs), generator=gen)
    which = torch.randint(0, n_pairs, (n,), generator=gen)
    x = torch.stack([keys, values], 2).reshape(n, 2 * n_pairs)
    query = keys[torch.arange(n), which]
    return torch.cat([x, query[:, None]], 1), values[torch.arange(n), which]


_NAMES = ["Ann", "Ben", "Cleo", "Dev", "Eva", "Finn", "Gus", "Hana", "Ivo", "Jun"]
_ITEMS = ["apples", "marbles", "stickers", "coins", "books", "shells", "pencils", "cards"]


def word_problems(n: int, seed: int = 0, max_start: int = 50) -> list[dict]:
    """Two-step arithmetic word problems with worked steps (for chain-of-thought and verifiers).

    Each item: {"question": str, "steps": ["12 + 7 = 19", "19 - 5 = 14"], "answer": 14}.
    """
    _check_positive(n=n, max_start=max_start)
    rng = np.random.default_rng(seed)
    out = []
    for _ in range(n):
        who, item = _NAMES[rng.integers(len(_NAMES))], _ITEMS[rng.integers(len(_ITEMS))]
        start, gain = int(rng.integers(2, max_start)), int(rng.integers(1, 30))
        mid = start + gain
        if rng.random() < 0.5:
            loss = int(rng.integers(1, mid))
            q2, step2, answer = f"gives away {loss}", f"{mid} - {loss} = {mid - loss}", mid - loss
        else:
            k = int(rng.integers(2, 4))
            q2, step2, answer = f"then {'doubles' if k == 2 else 'triples'} them", f"{mid} * {k} = {mid * k}", mid * k
        out.append({"question": f"{who} has {start} {item}. {who} gets {gain} more and {q2}. "
                                f"How many {item} does {who} have now?",
                    "steps": [f"{start} + {gain} = {mid}", step2], "answer": answer})
    return out


# ------------------------------------------------------------------------------------------------- download
class DownloadError(RuntimeError):
    """A download was refused (not opted in) or failed (network, server, checksum, size)."""


@dataclass(frozen=True)
class RemoteFile:
    url: str
    checksum: str  # "sha256:<hex>" (preferred) or "md5:<hex>" (as published by the dataset/torchvision)
    filename: str


def _idx_files(base_url: str, folder: str, md5s: list[str]) -> list[RemoteFile]:
    names = ["train-images-idx3-ubyte.gz", "train-labels-idx1-ubyte.gz", "t10k-images-idx3-ubyte.gz",
             "t10k-labels-idx1-ubyte.gz"]
    return [RemoteFile(base_url + n, f"md5:{h}", f"{folder}/{n}") for n, h in zip(names, md5s)]


DATASETS: dict[str, list[RemoteFile]] = {
    # checksums as published by torchvision's dataset classes for these exact files
    "mnist": _idx_files("https://ossci-datasets.s3.amazonaws.com/mnist/", "mnist", [
        "f68b3c2dcbeaaa9fbdd348bbdeb94873", "d53e105ee54ea40749a09fcbcd1e9432",
        "9fb629c4189551a2d022fa330f9573f3", "ec29112dd5afa0611ce80d1b7f02629c"]),
    "fashion-mnist": _idx_files("http://fashion-mnist.s3-website.eu-central-1.amazonaws.com/", "fashion-mnist", [
        "8d4fb7e6c68d591d4c3dfef9ec88bf0d", "25c81989df183df01b3e8a0aad5dffbe",
        "bef4ecab320f06d8554ea6380940ec79", "bb300cfdad3c16e7a12a480ee83cd310"]),
    "cifar10": [RemoteFile("https://www.cs.toronto.edu/~kriz/cifar-10-python.tar.gz",
                           "md5:c58f30108f718f92721af3b95e74349a", "cifar10/cifar-10-python.tar.gz")],
}
ALLOW_ENV = "DL_COURSE_ALLOW_DOWNLOAD"


def _allowed(allow_download: bool | None) -> bool:
    if allow_download is not None:
        return allow_download
    return os.environ.get(ALLOW_ENV, "").strip().lower() in {"1", "true", "yes"}


def download(name: str, allow_download: bool | None = None, timeout: float = 60.0) -> list[Path]:
    """Fetch an optional real dataset into the cache dir and return its files' paths.

    Off by default: pass ``allow_download=True`` or set ``DL_COURSE_ALLOW_DOWNLOAD=1``. Files already in the
    cache with the right checksum are not fetched again. Every lecture runs without this.
    """
    if name not in DATASETS:
        raise ValueError(f"unknown dataset {name!r}; available: {', '.join(sorted(DATASETS))}")
    paths = []
    for remote in DATASETS[name]:
        dest = cache_dir() / remote.filename
        if not (dest.exists() and _digest(dest, remote.checksum) == remote.checksum):
            if not _allowed(allow_download):
                raise DownloadError(f"{name} is not in the cache ({dest}) and downloads are off. The course runs "
                                    f"offline; to fetch it, call download({name!r}, allow_download=True) or set "
                                    f"{ALLOW_ENV}=1.")
            download_file(remote.url, remote.checksum, dest, timeout=timeout)
        paths.append(dest)
    return paths


def download_file(url: str, checksum: str, dest: Path | str, timeout: float = 60.0) -> Path:
    """Download ``url`` to ``dest`` atomically: stream to a temp file in the same directory, verify the length
    (when the server sends one) and the checksum ("sha256:<hex>" or "md5:<hex>"), then rename. On any error
    the temp file is removed, so the cache never holds a partial or corrupt file."""
    dest = Path(dest)
    algo = checksum.split(":", 1)[0]
    if algo not in ("sha256", "md5") or ":" not in checksum:
        raise ValueError(f"checksum must look like 'sha256:<hex>', got {checksum!r}")
    dest.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp_name = tempfile.mkstemp(dir=dest.parent, prefix=dest.name + ".", suffix=".part")
    tmp = Path(tmp_name)
    try:
        try:
            with os.fdopen(fd, "wb") as out, urllib.request.urlopen(url, timeout=timeout) as response:
                expected_len = response.headers.get("Content-Length")
                received = 0
                try:
                    while chunk := response.read(1 << 20):
                        out.write(chunk)
                        received += len(chunk)
                except http.client.IncompleteRead as e:  # the server hung up before Content-Length bytes
                    received += len(e.partial)
        except urllib.error.HTTPError as e:
            raise DownloadError(f"server answered {e.code} {e.reason} for {url}; try again later or fetch the file "
                                f"by hand into {dest}") from e
        except (TimeoutError, OSError) as e:  # URLError is an OSError; socket.timeout is TimeoutError
            raise DownloadError(f"could not download {url} within {timeout:g}s ({e}); check your connection or "
                                f"pass a larger timeout") from e
        if expected_len is not None and received != int(expected_len):
            raise DownloadError(f"truncated download of {url}: got {received} of {expected_len} bytes; try again")
        got = _digest(tmp, checksum)
        if got != checksum:
            raise DownloadError(f"checksum mismatch for {url}: expected {checksum}, got {got}. The file was not "
                                f"saved; the source may have changed or the transfer was corrupted")
        os.replace(tmp, dest)
    finally:
        if tmp.exists():
            tmp.unlink()
    return dest


def _digest(path: Path, like: str) -> str:
    algo = like.split(":", 1)[0]
    h = hashlib.new(algo)
    with open(path, "rb") as f:
        while chunk := f.read(1 << 20):
            h.update(chunk)
    return f"{algo}:{h.hexdigest()}"
