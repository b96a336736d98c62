"""utils.exercises: the checker's verdicts and the wording of its diagnoses."""
from __future__ import annotations

import types

import numpy as np
import pytest
import torch

from utils.exercises import Case, Exercise, ExerciseError, LectureExercises, compare, for_lecture, run_module


def ref_softmax(x: torch.Tensor) -> torch.Tensor:
    return torch.softmax(x, dim=-1)


def softmax_wrong_dim(x: torch.Tensor) -> torch.Tensor:
    return torch.softmax(x, dim=0)


class RefBlock(torch.nn.Module):
    def __init__(self, d: int = 4):
        super().__init__()
        self.lin = torch.nn.Linear(d, d)

    def forward(self, x):
        return x + torch.tanh(self.lin(x))


class BlockNoSkip(RefBlock):
    def forward(self, x):
        return torch.tanh(self.lin(x))


def make_checker() -> LectureExercises:
    module = types.ModuleType("solutions.l99_fake")
    module.EXERCISES = [
        Exercise("softmax", ref_softmax, lambda: [Case((torch.randn(3, 5),), label="3x5 logits", seed=1),
                                                 Case((torch.zeros(2, 2),), label="all zeros")],
                 mistakes={"softmax over the wrong dim": softmax_wrong_dim}, hint="normalise the last dim"),
        Exercise("Block", RefBlock, [Case((torch.randn(2, 4),), {"d": 4}, label="d=4")], runner=run_module(RefBlock),
                 mistakes={"forgot the skip connection": BlockNoSkip}, hint="x + f(x)"),
    ]
    return LectureExercises(module, verbose=True)


def test_correct_solution_passes_and_is_returned(capsys):
    ex = make_checker()

    def softmax(x):
        e = x.exp()
        return e / e.sum(-1, keepdim=True)

    assert ex.check(softmax) is softmax
    assert "softmax: passed 2 checks" in capsys.readouterr().out


def test_stub_falls_back_with_one_line(capsys):
    ex = make_checker()

    def softmax(x):
        raise NotImplementedError

    assert ex.check(softmax) is ref_softmax
    out = capsys.readouterr().out
    assert out.strip() == "softmax: not implemented yet, using the reference solution so the lecture keeps running"


def test_function_returning_none_first_is_a_stub_later_is_an_error():
    ex = make_checker()

    def softmax(x):
        pass

    assert ex.check(softmax) is ref_softmax
    calls = []

    def softmax(x):  # noqa: F811  (the student redefines the same name)
        calls.append(1)
        return ref_softmax(x) if len(calls) == 1 else None

    with pytest.raises(ExerciseError, match="returned None"):
        ex.check(softmax)


def test_shape_mismatch_is_reported_before_values():
    ex = make_checker()
    with pytest.raises(ExerciseError) as info:
        ex.check(lambda x: torch.softmax(x, -1)[:, :2], name="softmax")
    msg = str(info.value)
    assert "case 1 of 2 (3x5 logits)" in msg
    assert "shape mismatch: expected (3, 5), got (3, 2)" in msg
    assert "hint: normalise the last dim" in msg


def test_wrong_values_name_the_common_mistake():
    ex = make_checker()
    with pytest.raises(ExerciseError) as info:
        ex.check(softmax_wrong_dim, name="softmax")
    msg = str(info.value)
    assert "values differ: max abs diff" in msg and "at index" in msg
    assert "likely mistake: softmax over the wrong dim" in msg
    assert ex.status["softmax"] == "failed"


def test_unrecognised_mistake_has_no_mistake_line():
    ex = make_checker()
    with pytest.raises(ExerciseError) as info:
        ex.check(lambda x: torch.softmax(2 * x, -1), name="softmax")
    assert "likely mistake" not in str(info.value)


def test_crash_in_student_code_is_reported_with_the_case():
    ex = make_checker()

    def softmax(x):
        return x.nosuchmethod()

    with pytest.raises(ExerciseError, match=r"case 1 of 2 \(3x5 logits\): your code raised AttributeError"):
        ex.check(softmax)


def test_module_exercise_copies_weights_and_compares_grads():
    ex = make_checker()

    class Block(torch.nn.Module):
        def __init__(self, d: int = 4):
            super().__init__()
            self.lin = torch.nn.Linear(d, d)

        def forward(self, x):
            return torch.tanh(self.lin(x)) + x

    assert ex.check(Block) is Block
    with pytest.raises(ExerciseError, match="likely mistake: forgot the skip connection"):
        ex.check(BlockNoSkip, name="Block")


def test_module_with_different_parameter_names_is_explained():
    ex = make_checker()

    class Block(torch.nn.Module):
        def __init__(self, d: int = 4):
            super().__init__()
            self.linear = torch.nn.Linear(d, d)

        def forward(self, x):
            return x + torch.tanh(self.linear(x))

    with pytest.raises(ExerciseError, match=r"names differ from the reference: expected \['lin.bias', 'lin.weight'\]"):
        ex.check(Block)


def test_module_stub_falls_back():
    ex = make_checker()

    class Block(torch.nn.Module):
        def __init__(self, d: int = 4):
            raise NotImplementedError

    assert ex.check(Block) is RefBlock


def test_unknown_exercise_name_lists_the_registered_ones():
    with pytest.raises(KeyError, match="registered: softmax, Block"):
        make_checker().check(lambda x: x, name="nope")


def test_hint_solution_and_summary(capsys):
    ex = make_checker()
    assert ex.hint("softmax") == "normalise the last dim"
    assert "torch.softmax(x, dim=-1)" in ex.solution("softmax")
    ex.check(ref_softmax, name="softmax")
    assert ex.summary() is None and ex.status == {"softmax": "passed", "Block": "not yet"}
    assert "1/2 passed" in capsys.readouterr().out


def test_stochastic_code_sees_the_same_seed_for_reference_and_student():
    module = types.ModuleType("solutions.l98_fake")
    module.EXERCISES = [Exercise("noisy", lambda n: torch.randn(n), [Case((3,), seed=7)], hint="use torch.randn")]
    ex = LectureExercises(module, verbose=False)
    ex.check(lambda n: torch.randn(n), name="noisy")
    with pytest.raises(ExerciseError):
        ex.check(lambda n: torch.rand(n), name="noisy")


@pytest.mark.parametrize("expected,got,needle", [
    (torch.ones(2), np.ones(2), None),
    (1.0, 1.0 + 1e-7, None),
    (1.0, 1.1, "expected 1, got 1.1"),
    ((1, 2), (1,), "expected length 2, got length 1"),
    ({"a": 1}, {"b": 1}, "expected keys ['a'], got ['b']"),
    (torch.ones(2), torch.tensor([1.0, float("nan")]), "NaN"),
    (torch.tensor([1, 2]), torch.tensor([1, 3]), "1 of 2 entries differ; first at index (1,)"),
    (torch.ones(2), "a string", "expected a Tensor of shape (2,)"),
    ("abc", "abd", "expected 'abc', got 'abd'"),
])
def test_compare(expected, got, needle):
    problem = compare(expected, got)
    if needle is None:
        assert problem is None
    else:
        assert needle in problem


def test_for_lecture_unknown_lecture_is_explained():
    with pytest.raises(LookupError, match=r"solutions/l77_\*\.py"):
        for_lecture(77)


def test_exercise_without_cases_is_a_registry_bug():
    with pytest.raises(ValueError, match="has no cases"):
        Exercise("f", abs, []).get_cases()


def test_check_does_not_disturb_the_lectures_random_stream():
    import random

    ex = make_checker()
    torch.manual_seed(5)
    np.random.seed(5)
    random.seed(5)
    expected = (torch.rand(3), np.random.rand(), random.random())
    torch.manual_seed(5)
    np.random.seed(5)
    random.seed(5)
    ex.check(ref_softmax, name="softmax")  # the cases seed every generator
    got = (torch.rand(3), np.random.rand(), random.random())
    assert torch.equal(expected[0], got[0]) and expected[1:] == got[1:]
