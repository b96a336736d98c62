"""Shared helpers of the course "Deep Learning — from neural nets to frontier models".

Flat and small: `utils.data` (offline datasets), `utils.exercises` (checked exercises), `utils.gpt` (a
nanoGPT-style GPT), `utils.diffusion` (the DDPM pieces L21 and L22 share), `utils.pretrained` (the course's
committed tiny models), `utils.plotting`, `utils.widgets`, `utils.training` (`fit`/`evaluate` for lectures after
L03, `warmup_cosine`).
The functions here set up a reproducible run: `seed_everything`, `device`, `env_report`.
"""
from __future__ import annotations

import os
import platform
import random

import numpy as np
import torch

from utils import data, exercises, gpt, plotting, training, widgets  # noqa: F401  (re-exported submodules)

__all__ = ["seed_everything", "device", "env_report", "data", "exercises", "gpt", "plotting", "pretrained", "training",
           "widgets"]


def __getattr__(name: str):
    # `utils.pretrained` is imported on first use (PEP 562), so `python -m utils.pretrained build NAME` runs the
    # module fresh instead of re-executing one that the package already imported
    if name == "pretrained":
        import importlib

        return importlib.import_module("utils.pretrained")
    raise AttributeError(f"module 'utils' has no attribute {name!r}")


def seed_everything(seed: int = 0) -> None:
    """Seed Python, NumPy and torch (CPU and CUDA) so a fresh kernel reproduces the same numbers."""
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)  # also seeds CUDA/MPS generators
    os.environ["PYTHONHASHSEED"] = str(seed)


def device() -> torch.device:
    """The best available device: cuda, then mps (Apple silicon), then cpu.

    The lectures are designed for the CPU; set ``DL_COURSE_DEVICE=cpu`` to force it on a GPU machine.
    """
    forced = os.environ.get("DL_COURSE_DEVICE")
    if forced:
        return torch.device(forced)
    if torch.cuda.is_available():
        return torch.device("cuda")
    if getattr(torch.backends, "mps", None) is not None and torch.backends.mps.is_available():
        return torch.device("mps")
    return torch.device("cpu")


def env_report(show: bool = True) -> dict[str, str]:
    """Versions, device and threads — printed by every lecture's setup cell so runs can be compared."""
    import matplotlib

    info = {
        "python": platform.python_version(),
        "torch": torch.__version__,
        "numpy": np.__version__,
        "matplotlib": matplotlib.__version__,
        "device": str(device()),
        "threads": str(torch.get_num_threads()),
        "platform": platform.platform(terse=True),
    }
    if show:
        print(" | ".join(f"{k} {v}" for k, v in info.items()))
    return info
