"""utils.data: shapes, ranges, determinism, caching and argument errors of every offline dataset."""
from __future__ import annotations

import time

import numpy as np
import pytest
import torch

from utils import data


@pytest.fixture(autouse=True)
def isolated_cache(tmp_path, monkeypatch):
    monkeypatch.setenv("DL_COURSE_CACHE", str(tmp_path / "cache"))


@pytest.mark.parametrize("make,n_classes", [
    (lambda: data.moons(200), 2), (lambda: data.circles(200), 2),
    (lambda: data.spirals(300, n_classes=3), 3), (lambda: data.gaussian_mixture(400, n_components=8), 8),
])
def test_toy_2d_sets(make, n_classes):
    X, y = make()
    assert X.dtype == torch.float32 and X.shape[1] == 2 and y.dtype == torch.int64
    assert set(y.tolist()) == set(range(n_classes))
    X2, y2 = make()
    assert torch.equal(X, X2) and torch.equal(y, y2), "same seed must give the same data"


def test_gaussian_mixture_points_sit_on_their_component():
    X, y = data.gaussian_mixture(500, n_components=4, radius=2.0, std=0.01)
    angle = 2 * np.pi * y.numpy() / 4
    centres = np.stack([2 * np.cos(angle), 2 * np.sin(angle)], 1)
    assert np.abs(X.numpy() - centres).max() < 0.1


@pytest.mark.parametrize("call,match", [
    (lambda: data.moons(0), "n must be positive"),
    (lambda: data.circles(10, factor=1.5), "factor must be in"),
    (lambda: data.spirals(10, n_classes=0), "n_classes must be positive"),
    (lambda: data.gaussian_mixture(10, std=-1), "std must be positive"),
])
def test_toy_sets_reject_bad_arguments(call, match):
    with pytest.raises(ValueError, match=match):
        call()


def test_sklearn_digits():
    X, y = data.digits()
    assert X.shape == (1797, 1, 8, 8) and 0 <= X.min() and X.max() <= 1 and y.max() == 9


def test_mnist1d_is_generated_offline():
    d = data.mnist1d(n=500)
    assert d["x"].shape == (400, 40) and d["x_test"].shape == (100, 40)
    assert set(d["y"].tolist()) <= set(range(10))


def test_font_digits_shapes_balance_and_determinism():
    X, y = data.font_digits(n=2000, cache=False)
    assert X.shape == (2000, 1, 28, 28) and X.dtype == torch.float32 and y.dtype == torch.int64
    assert 0 <= X.min() and X.max() <= 1
    counts = torch.bincount(y, minlength=10)
    assert counts.min() > 150, f"classes should be roughly balanced, got {counts.tolist()}"
    X2, y2 = data.font_digits(n=2000, cache=False)
    assert torch.equal(X, X2) and torch.equal(y, y2)
    Xv, _ = data.font_digits(n=2000, split="val", cache=False)
    assert not torch.equal(X, Xv), "train and val must be independent draws"


def test_font_digits_classes_differ_visibly():
    X, y = data.font_digits(n=3000, cache=False)
    means = torch.stack([X[y == d].mean(0) for d in range(10)])
    # class-mean images must differ clearly (a generator bug would make them all alike)
    dists = torch.cdist(means.flatten(1), means.flatten(1))
    assert dists[~torch.eye(10, dtype=bool)].min() > 1.0


def test_font_digits_fast_first_time_and_cached():
    t = time.perf_counter()
    X, y = data.font_digits(n=20000)
    first = time.perf_counter() - t
    t = time.perf_counter()
    X2, y2 = data.font_digits(n=20000)
    cached = time.perf_counter() - t
    assert first <= 15, f"building 20k digits took {first:.1f}s"
    assert cached <= 1, f"loading 20k cached digits took {cached:.2f}s"
    assert torch.equal(X, X2) and torch.equal(y, y2), "the cache must return exactly what was built"
    assert list((data.cache_dir()).glob("*.tmp*")) == [], "no temp files left behind"


@pytest.mark.parametrize("size", [8, 16])
def test_font_digits_small_sizes(size):
    X, _ = data.font_digits(n=100, size=size, cache=False)
    assert X.shape == (100, 1, size, size)


@pytest.mark.parametrize("kwargs,match", [({"size": 20}, "size must be one of"), ({"split": "dev"}, "split must be"),
                                          ({"n": 0}, "n must be positive")])
def test_font_digits_rejects_bad_arguments(kwargs, match):
    with pytest.raises(ValueError, match=match):
        data.font_digits(cache=False, **kwargs)


def test_shapes_single_object_labels_masks_boxes_captions():
    s = data.shapes(200, size=32, seed=3)
    assert s.images.shape == (200, 3, 32, 32) and len(s) == 200
    assert (s.n_objects == 1).all() and (s.labels[:, 0] >= 0).all()
    for i in range(20):
        m = s.masks[i, 0]
        ys, xs = torch.nonzero(m, as_tuple=True)
        assert s.boxes[i, 0].tolist() == [xs.min().item(), ys.min().item(), xs.max().item() + 1, ys.max().item() + 1]
        # the object's pixels carry its colour; the background is dark
        assert s.images[i][:, m].mean() > 0.3 and s.images[i][:, ~m].mean() < 0.1
        assert s.captions[i] == f"a {s.color_names[s.colors[i, 0]]} {s.shape_names[s.labels[i, 0]]}"


def test_shapes_multi_object_overlap_and_semantic_masks():
    s = data.shapes(100, min_objects=2, max_objects=3, overlap=True, seed=1)
    assert ((s.n_objects >= 2) & (s.n_objects <= 3)).all()
    valid = s.labels >= 0
    assert (s.masks.sum((2, 3))[valid] > 0).all(), "every object stays visible"
    overlaps = (s.masks.sum(1) > 1).any()
    assert not overlaps, "visible masks of one scene must not overlap"
    sem = s.semantic_masks()
    assert sem.shape == (100, 32, 32) and sem.max() <= 3
    assert all(" and " in c for c in s.captions)


def test_shapes_combos_hold_out_pairs():
    s = data.shapes(300, combos=[("red", "circle"), ("blue", "square")], seed=0)
    pairs = {(s.color_names[c], s.shape_names[l]) for c, l in zip(s.colors[:, 0].tolist(), s.labels[:, 0].tolist())}
    assert pairs == {("red", "circle"), ("blue", "square")}


@pytest.mark.parametrize("kwargs,match", [
    ({"max_objects": 0}, "max_objects"), ({"max_radius": 20}, "max_radius < size/2"),
    ({"combos": [("pink", "circle")]}, "combos must be"), ({"combos": []}, "combos must be"),
])
def test_shapes_rejects_bad_arguments(kwargs, match):
    with pytest.raises(ValueError, match=match):
        data.shapes(10, **kwargs)


@pytest.mark.parametrize("name", ["english", "python"])
def test_text_corpus_split(name):
    train, val, full = (data.text_corpus(name, s) for s in ("train", "val", "all"))
    assert train + val == full and len(val) / len(full) == pytest.approx(0.1, abs=0.001)
    assert len(full) > 300_000


def test_text_corpus_errors():
    with pytest.raises(ValueError, match="unknown corpus"):
        data.text_corpus("klingon")
    with pytest.raises(ValueError, match="split must be"):
        data.text_corpus("english", "test")


def test_sequence_tasks():
    x, y = data.copy_task(5, 7, vocab_size=4)
    assert x.shape == (5, 7) and torch.equal(x, y) and x.max() < 4
    x, y = data.reversal_task(5, 7)
    assert torch.equal(y, x.flip(1))
    x, y = data.sorting_task(5, 7)
    assert torch.equal(y, x.sort(1).values)


def test_addition_problems_are_correct_and_fixed_length():
    problems = data.addition_problems(50, n_digits=3)
    for prompt, answer in problems:
        a, b = prompt.rstrip("=").split("+")
        assert len(a) == len(b) == 3 and len(answer) == 4 and int(a) + int(b) == int(answer)


def test_modular_arithmetic():
    x, c = data.modular_arithmetic(7, "*")
    assert x.shape == (49, 2) and torch.equal(c, (x[:, 0] * x[:, 1]) % 7)
    with pytest.raises(ValueError, match="op must be"):
        data.modular_arithmetic(7, "/")


def test_kv_recall_answer_is_the_value_stored_with_the_query_key():
    x, y = data.kv_recall(100, n_pairs=3, n_keys=8, n_values=5)
    assert x.shape == (100, 7)
    for seq, target in zip(x.tolist(), y.tolist()):
        pairs = dict(zip(seq[0:6:2], seq[1:6:2]))
        assert len(pairs) == 3, "keys within a sequence are distinct"
        assert pairs[seq[-1]] == target and 8 <= target < 13
    with pytest.raises(ValueError, match="cannot exceed n_keys"):
        data.kv_recall(1, n_pairs=9, n_keys=8)


def test_word_problems_steps_compute_the_answer():
    for p in data.word_problems(40):
        lhs, result = p["steps"][-1].split(" = ")
        assert eval(lhs) == int(result) == p["answer"]
        first_lhs, first_result = p["steps"][0].split(" = ")
        assert eval(first_lhs) == int(first_result)
        assert p["question"].endswith("now?")
