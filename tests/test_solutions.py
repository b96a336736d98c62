"""Every registered exercise of every lecture: the reference passes its own checks, each common mistake is
caught *and named*, and an unimplemented stub falls back to the reference (COURSE_DESIGN §2)."""
from __future__ import annotations

import importlib
import pkgutil

import pytest

import solutions
from utils.exercises import ExerciseError, LectureExercises

MODULES = sorted(m.name for m in pkgutil.iter_modules(solutions.__path__) if m.name.startswith("l"))
EXERCISES = [(mod, e.name) for mod in MODULES for e in importlib.import_module(f"solutions.{mod}").EXERCISES]
MISTAKES = [(mod, e.name, label) for mod in MODULES
            for e in importlib.import_module(f"solutions.{mod}").EXERCISES for label in e.mistakes]


def checker(mod: str) -> LectureExercises:
    return LectureExercises(importlib.import_module(f"solutions.{mod}"), verbose=False)


def test_every_lecture_module_registers_exercises():
    for mod in MODULES:
        n = len(importlib.import_module(f"solutions.{mod}").EXERCISES)
        assert 3 <= n <= 6, f"{mod} registers {n} exercises; COURSE_DESIGN §2 asks for 3-6"


@pytest.mark.parametrize("mod,name", EXERCISES)
def test_reference_passes(mod, name):
    ex = checker(mod)
    reference = ex.exercises[name].reference
    assert ex.check(reference, name=name) is reference
    assert ex.status[name] == "passed"


@pytest.mark.parametrize("mod,name", EXERCISES)
def test_stub_falls_back_to_reference(mod, name):
    ex = checker(mod)

    def stub(*args, **kwargs):
        raise NotImplementedError  # your code here

    assert ex.check(stub, name=name) is ex.exercises[name].reference
    assert ex.status[name] == "not yet"


@pytest.mark.parametrize("mod,name,label", MISTAKES)
def test_common_mistake_is_caught_and_named(mod, name, label):
    ex = checker(mod)
    wrong = ex.exercises[name].mistakes[label]
    with pytest.raises(ExerciseError) as info:
        ex.check(wrong, name=name)
    message = str(info.value)
    assert name in message and "case" in message
    assert f"likely mistake: {label}" in message, f"mistake {label!r} was caught but not named:\n{message}"
    assert ex.status[name] == "failed"


@pytest.mark.parametrize("mod,name", EXERCISES)
def test_exercise_has_hint_and_cases(mod, name):
    exercise = checker(mod).exercises[name]
    assert exercise.hint, f"{mod}.{name} has no hint"
    assert exercise.get_cases(), f"{mod}.{name} has no cases"
