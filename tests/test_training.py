"""utils.training: fit runs a fixed number of steps, learns, evaluates in eval mode."""
from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

import utils
from utils.training import batches, evaluate, fit


def model_and_data():
    utils.seed_everything(0)
    X, y = utils.data.moons(400, noise=0.1)
    model = torch.nn.Sequential(torch.nn.Linear(2, 32), torch.nn.ReLU(), torch.nn.Linear(32, 2))
    return model, (X, y)


def test_fit_learns_moons_in_fixed_steps():
    model, train = model_and_data()
    before = evaluate(model, train)
    history = fit(model, train, steps=300, lr=1e-2, val=train, eval_every=100, progress=False)
    assert len(history["loss"]) == 300 and history["val_step"] == [100, 200, 300]
    after = evaluate(model, train)
    assert after["acc"] > 0.95 and before["acc"] < 0.9
    assert history["val_acc"][-1] == pytest.approx(after["acc"])


def test_fit_is_deterministic():
    runs = []
    for _ in range(2):
        model, train = model_and_data()
        runs.append(fit(model, train, steps=20, progress=False)["loss"])
    assert runs[0] == runs[1]


def test_evaluate_uses_eval_mode_and_restores_it():
    model = torch.nn.Sequential(torch.nn.Linear(2, 2), torch.nn.Dropout(0.9))
    X, y = torch.randn(64, 2), torch.randint(0, 2, (64,))
    model.train()
    first, second = evaluate(model, (X, y)), evaluate(model, (X, y))
    assert first == second, "dropout must be off during evaluation"
    assert model.training


def test_evaluate_regression_has_no_accuracy():
    model = torch.nn.Linear(3, 1)
    X, y = torch.randn(10, 3), torch.randn(10, 1)
    assert set(evaluate(model, (X, y), F.mse_loss)) == {"loss"}


def test_batches_cover_each_epoch_once():
    X, y = torch.arange(10).float(), torch.arange(10)
    stream = batches((X, y), batch_size=5)
    seen = torch.cat([next(stream)[1] for _ in range(2)])
    assert sorted(seen.tolist()) == list(range(10))
    with pytest.raises(ValueError, match="different lengths"):
        next(batches((X, y[:3]), 2))


def test_fit_rejects_bad_arguments():
    model, train = model_and_data()
    with pytest.raises(ValueError, match="must be positive"):
        fit(model, train, steps=0)
