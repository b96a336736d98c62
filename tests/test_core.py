"""utils: seeding, device choice, environment report."""
from __future__ import annotations

import random

import numpy as np
import torch

import utils


def test_seed_everything_reproduces_all_generators():
    utils.seed_everything(123)
    a = (random.random(), np.random.rand(), torch.rand(3))
    utils.seed_everything(123)
    b = (random.random(), np.random.rand(), torch.rand(3))
    assert a[0] == b[0] and a[1] == b[1] and torch.equal(a[2], b[2])
    utils.seed_everything(124)
    assert not torch.equal(torch.rand(3), a[2])


def test_device_is_cpu_here_and_can_be_forced(monkeypatch):
    monkeypatch.delenv("DL_COURSE_DEVICE", raising=False)
    expected = "cuda" if torch.cuda.is_available() else "cpu"
    if not torch.cuda.is_available() and torch.backends.mps.is_available():
        expected = "mps"
    assert utils.device().type == expected
    monkeypatch.setenv("DL_COURSE_DEVICE", "cpu")
    assert utils.device() == torch.device("cpu")


def test_env_report_prints_versions(capsys):
    info = utils.env_report()
    out = capsys.readouterr().out
    for key in ("python", "torch", "numpy", "device", "threads"):
        assert key in info and info[key] in out
    assert info["torch"] == torch.__version__
