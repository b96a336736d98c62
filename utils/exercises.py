"""Checked exercises that never break Run-All (COURSE_DESIGN §2).

In a notebook::

    ex = utils.exercises.for_lecture(2)

    def relu(x):
        '''x: any shape. Return max(x, 0) elementwise.'''
        raise NotImplementedError  # your code here

    relu = ex.check(relu)

`ex.check` runs the student's code on the cases registered for it in ``solutions/lNN_*.py`` and

* **not implemented** (raises ``NotImplementedError`` or returns ``None``): prints one line and returns the
  reference, so the rest of the lecture keeps running;
* **correct**: prints "relu: passed N checks" and returns the student's code;
* **wrong**: raises :class:`ExerciseError` naming the case, the shape mismatch first, then the values (max abs
  diff and where), and, when the output equals a registered *common mistake*, names that mistake.

A solutions module registers its exercises in a module-level list ``EXERCISES`` of :class:`Exercise`.
"""
from __future__ import annotations

import contextlib
import copy
import importlib
import inspect
import math
import pkgutil
from dataclasses import dataclass, field
from typing import Any, Callable, Iterator, Sequence

import numpy as np
import torch

__all__ = [
    "Case", "Exercise", "ExerciseError", "LectureExercises", "compare", "for_lecture", "run_module", "run_optimizer",
    "optimizer_runner",
]


class ExerciseError(AssertionError):
    """A student's solution gave a wrong answer; the message says which case, what and (maybe) why."""


class _NotImplemented(Exception):
    """Internal: the student's code is still a stub."""


@dataclass
class Case:
    """One input to an exercise: positional and keyword arguments, a label shown in diagnoses, a seed set
    right before each call (so stochastic code sees the same random numbers for reference and student)."""

    args: tuple = ()
    kwargs: dict = field(default_factory=dict)
    label: str = ""
    seed: int = 0

    def describe(self) -> str:
        if self.label:
            return self.label
        parts = [_short(a) for a in self.args] + [f"{k}={_short(v)}" for k, v in self.kwargs.items()]
        return ", ".join(parts)


Runner = Callable[[Any, Case], Any]
Comparer = Callable[[Any, Any], "str | None"]


@dataclass
class Exercise:
    """An exercise registered by a solutions module.

    name:      the function/class name the student writes (``ex.check`` matches on it).
    reference: the reference implementation (function or class).
    cases:     list of :class:`Case`, or a zero-argument callable building them (lazy, so import is cheap).
    mistakes:  ``{"forgot the 1/sqrt(d) scale": wrong_impl}``; a wrong answer equal to one of these is named.
    hint:      one or two sentences printed by ``ex.hint(name)`` and appended to every diagnosis.
    runner:    ``runner(impl, case) -> output`` to compare; default calls ``impl(*case.args, **case.kwargs)``
               on deep copies (so in-place code cannot corrupt the next case). Use :func:`run_module` for
               ``nn.Module`` classes.
    compare:   ``compare(expected, got) -> None | str`` (the difference); default :func:`compare` with
               ``atol``/``rtol``. Outcome exercises (training loops, samplers) pass a threshold check here.
    """

    name: str
    reference: Any
    cases: list[Case] | Callable[[], list[Case]]
    mistakes: dict[str, Any] = field(default_factory=dict)
    hint: str = ""
    runner: Runner | None = None
    compare: Comparer | None = None
    atol: float = 1e-5
    rtol: float = 1e-5

    def get_cases(self) -> list[Case]:
        cases = self.cases() if callable(self.cases) else self.cases
        if not cases:
            raise ValueError(f"exercise {self.name!r} has no cases")
        return cases

    def run(self, impl: Any, case: Case) -> Any:
        _seed(case.seed)
        if self.runner is not None:
            return self.runner(impl, case)
        return impl(*copy.deepcopy(case.args), **copy.deepcopy(case.kwargs))

    def differ(self, expected: Any, got: Any) -> str | None:
        if self.compare is not None:
            return self.compare(expected, got)
        return compare(expected, got, atol=self.atol, rtol=self.rtol)

    def diagnose(self, impl: Any) -> tuple[str, int]:
        """Run ``impl`` on every case. Returns ("passed", n), ("not implemented", 0) or raises ExerciseError."""
        cases = self.get_cases()
        for i, case in enumerate(cases, 1):
            where = f"{self.name} — case {i} of {len(cases)} ({case.describe()})"
            try:
                got = self.run(impl, case)
            except NotImplementedError:
                raise _NotImplemented from None
            except ExerciseError:
                raise
            except Exception as e:  # the student's code crashed: show the case and the error
                raise ExerciseError(f"{where}: your code raised {type(e).__name__}: {e}"
                                    + self._hint_line()) from e
            if got is None:
                if i == 1:  # a stub that only has `pass` / a docstring
                    raise _NotImplemented
                raise ExerciseError(f"{where}: your code returned None (a missing `return`?)" + self._hint_line())
            expected = self.run(self.reference, case)
            problem = self.differ(expected, got)
            if problem is not None:
                raise ExerciseError(f"{where}:\n  {problem}" + self._mistake_line(case, got)
                                    + self._hint_line())
        return "passed", len(cases)

    def _mistake_line(self, case: Case, got: Any) -> str:
        for label, wrong in self.mistakes.items():
            try:
                wrong_out = self.run(wrong, case)
            except Exception:
                continue
            if self.differ(wrong_out, got) is None:
                return f"\n  likely mistake: {label} (your output matches that mistake exactly)"
        return ""

    def _hint_line(self) -> str:
        return f"\n  hint: {self.hint}" if self.hint else ""


# ----------------------------------------------------------------------------------------------- comparing
def compare(expected: Any, got: Any, atol: float = 1e-5, rtol: float = 1e-5, path: str = "output") -> str | None:
    """Describe the first difference between two (nested) outputs, or return None if they match.

    Tensors and arrays: shape first, then values (max abs diff and where). Numbers: with tolerance.
    Tuples/lists: length, then elementwise. Dicts: keys, then values. Anything else: ``==``.
    """
    if isinstance(expected, (torch.Tensor, np.ndarray)):
        if not isinstance(got, (torch.Tensor, np.ndarray)):
            return f"{path}: expected a {type(expected).__name__} of shape {tuple(expected.shape)}, got {_short(got)}"
        e = torch.as_tensor(np.asarray(expected) if isinstance(expected, np.ndarray) else expected.detach())
        g = torch.as_tensor(np.asarray(got) if isinstance(got, np.ndarray) else got.detach())
        if tuple(e.shape) != tuple(g.shape):
            return f"{path}: shape mismatch: expected {tuple(e.shape)}, got {tuple(g.shape)}"
        if e.dtype == torch.bool or g.dtype == torch.bool or not (e.is_floating_point() or g.is_floating_point()):
            bad = (e != g)
            if bad.any():
                idx = tuple(int(i) for i in torch.nonzero(bad)[0])
                return (f"{path}: {int(bad.sum())} of {e.numel()} entries differ; first at index {idx}: "
                        f"expected {e[idx].item()}, got {g[idx].item()}")
            return None
        e, g = e.double().cpu(), g.double().cpu()
        if torch.isnan(g).any() and not torch.isnan(e).any():
            idx = tuple(int(i) for i in torch.nonzero(torch.isnan(g))[0])
            return f"{path}: your output has NaN (first at index {idx}); the expected output has none"
        diff = (e - g).abs().nan_to_num(0.0)
        tol = atol + rtol * e.abs().nan_to_num(0.0)
        if (diff > tol).any():
            flat = int(torch.argmax(diff - tol))
            idx = tuple(int(i) for i in np.unravel_index(flat, tuple(e.shape))) if e.dim() else ()
            return (f"{path}: values differ: max abs diff {diff.max().item():.3g} (tolerance {atol:g}) at index "
                    f"{idx}: expected {e[idx].item():.6g}, got {g[idx].item():.6g}")
        return None
    if isinstance(expected, (int, float)) and not isinstance(expected, bool):
        if not isinstance(got, (int, float, np.number)) and not (isinstance(got, torch.Tensor) and got.numel() == 1):
            return f"{path}: expected a number ({expected:.6g}), got {_short(got)}"
        g = float(got)
        if math.isnan(g) and not math.isnan(expected):
            return f"{path}: expected {expected:.6g}, got NaN"
        if abs(g - expected) > atol + rtol * abs(expected):
            return f"{path}: expected {expected:.6g}, got {g:.6g} (diff {abs(g - expected):.3g})"
        return None
    if isinstance(expected, (tuple, list)):
        if not isinstance(got, (tuple, list)):
            return f"{path}: expected a {type(expected).__name__} of length {len(expected)}, got {_short(got)}"
        if len(expected) != len(got):
            return f"{path}: expected length {len(expected)}, got length {len(got)}"
        for i, (e, g) in enumerate(zip(expected, got)):
            problem = compare(e, g, atol, rtol, f"{path}[{i}]")
            if problem:
                return problem
        return None
    if isinstance(expected, dict):
        if not isinstance(got, dict):
            return f"{path}: expected a dict with keys {sorted(expected)}, got {_short(got)}"
        if set(expected) != set(got):
            return f"{path}: expected keys {sorted(expected)}, got {sorted(got)}"
        for k in expected:
            problem = compare(expected[k], got[k], atol, rtol, f"{path}[{k!r}]")
            if problem:
                return problem
        return None
    if expected != got:
        return f"{path}: expected {_short(expected)}, got {_short(got)}"
    return None


# -------------------------------------------------------------------------------------------------- modules
def run_module(reference: type[torch.nn.Module], build: Callable[[Case], dict] | None = None,
               outputs: Sequence[str] | None = None) -> Runner:
    """A runner for ``nn.Module`` exercises.

    Each case is ``Case(args=(inputs...), kwargs={constructor kwargs})``; inputs may be tensors or tuples of
    tensors (an LSTM's ``(h, c)``). The student's class is built with the same constructor arguments
    (``build(case)`` if given, else ``case.kwargs``), the reference's freshly seeded weights are copied into it (so
    parameter names must match), then the outputs and the gradients of every parameter and input tensor (of a
    fixed random projection of all floating outputs) are returned for comparison. A module returning a tuple
    (``None`` entries allowed) names its outputs with ``outputs=["context", "weights"]``.
    """

    def with_grad(a: Any) -> Any:
        if isinstance(a, torch.Tensor):
            return a.detach().clone().requires_grad_(a.is_floating_point())
        if isinstance(a, tuple):
            return tuple(with_grad(t) for t in a)
        return a

    def leaves(a: Any) -> list[torch.Tensor]:
        if isinstance(a, torch.Tensor):
            return [a]
        return [t for x in a for t in leaves(x)] if isinstance(a, tuple) else []

    def runner(impl: type[torch.nn.Module], case: Case) -> dict[str, Any] | None:
        kwargs = build(case) if build is not None else case.kwargs
        _seed(case.seed)
        ref_state = reference(**kwargs).state_dict()
        _seed(case.seed)
        model = impl(**kwargs)
        if model is None:
            return None
        names, ref_names = sorted(model.state_dict()), sorted(ref_state)
        if names != ref_names:
            raise ExerciseError(f"{getattr(impl, '__name__', impl)}: parameter/buffer names differ from the "
                                f"reference: expected {ref_names}, got {names}")
        model.load_state_dict(ref_state)
        inputs = [with_grad(a) for a in copy.deepcopy(case.args)]
        out = model(*inputs)
        if out is None:
            return None
        outs = out if isinstance(out, tuple) else (out,)
        if outputs is not None and len(outs) != len(outputs):
            raise ExerciseError(f"{getattr(impl, '__name__', impl)} should return {len(outputs)} values "
                                f"({', '.join(outputs)}), got {len(outs)}")
        labels = list(outputs) if outputs is not None else (
            [f"output[{i}]" for i in range(len(outs))] if isinstance(out, tuple) else ["output"])
        gen = torch.Generator().manual_seed(1234)
        floating = [o for o in outs if isinstance(o, torch.Tensor) and o.is_floating_point() and o.requires_grad]
        if floating:
            sum((o * torch.randn(o.shape, generator=gen, dtype=o.dtype)).sum() for o in floating).backward()
        result: dict[str, Any] = {k: (o.detach() if isinstance(o, torch.Tensor) else o) for k, o in zip(labels, outs)}
        for name, p in model.named_parameters():
            result[f"grad of {name}"] = p.grad.detach() if p.grad is not None else torch.zeros_like(p)
        for i, t in enumerate(leaves(tuple(inputs))):
            if t.requires_grad:
                result[f"grad of input tensor {i}"] = t.grad.detach() if t.grad is not None else torch.zeros_like(t)
        return result

    return runner


# ----------------------------------------------------------------------------------------------- optimizers
def _tiny_regression(seed: int = 0) -> tuple[torch.nn.Module, torch.Tensor, torch.Tensor]:
    """A 5 → 8 → 2 tanh network and a fixed batch (X (16, 5), Y (16, 2)) for the optimizer checks."""
    gen = torch.Generator().manual_seed(seed)
    X = torch.randn(16, 5, generator=gen)
    Y = torch.randn(16, 2, generator=gen)
    torch.manual_seed(seed)
    model = torch.nn.Sequential(torch.nn.Linear(5, 8), torch.nn.Tanh(), torch.nn.Linear(8, 2))
    return model, X, Y


def run_optimizer(optimizer_class: Callable, steps: int = 10, seed: int = 0, loss_scale: float = 1.0,
                  lr_schedule: Sequence[float] | None = None, groups: dict | None = None, freeze_bias: bool = False,
                  **hparams: Any) -> dict[str, torch.Tensor]:
    """Train a small fixed network with ``optimizer_class(params, **hparams)`` for ``steps`` full-batch steps.

    The initial weights and the data depend only on ``seed``, so two optimizer classes that implement the same
    update rule end with the same parameters (the check for optimizer exercises, L04/L05). Options:
    ``loss_scale`` multiplies the MSE loss (tiny scales make ``eps`` matter); ``lr_schedule``: the lr of every
    group at each step (set through ``param_groups``, as a scheduler does); ``groups``: hyperparameters of a second
    parameter group holding the last layer, e.g. ``{"lr": 0.01}``; ``freeze_bias``: the first layer's bias gets
    no gradient (``p.grad is None``: must be skipped). Returns ``{parameter name: final value}``.
    """
    model, X, Y = _tiny_regression(seed)
    if freeze_bias:
        model[0].bias.requires_grad_(False)
    params: Any = model.parameters()
    if groups is not None:
        params = [{"params": model[0].parameters()}, {"params": model[2].parameters(), **groups}]
    opt = optimizer_class(params, **hparams)
    for step in range(steps):
        if lr_schedule is not None:
            for group in opt.param_groups:
                group["lr"] = lr_schedule[step]
        opt.zero_grad()
        (loss_scale * torch.nn.functional.mse_loss(model(X), Y)).backward()
        opt.step()
    return {name: p.detach().clone() for name, p in model.named_parameters()}


def optimizer_runner(impl: Callable, case: Case) -> dict[str, torch.Tensor]:
    """Runner for optimizer-class exercises: ``run_optimizer(impl, **case.kwargs)``."""
    return run_optimizer(impl, **case.kwargs)


# ---------------------------------------------------------------------------------------- per lecture API
class LectureExercises:
    """The exercises of one lecture: ``check``, ``hint``, ``solution``, ``summary``."""

    def __init__(self, module: Any, verbose: bool = True):
        self.module = module
        self.exercises: dict[str, Exercise] = {e.name: e for e in getattr(module, "EXERCISES", [])}
        self.status: dict[str, str] = {name: "not yet" for name in self.exercises}
        self.verbose = verbose

    def __repr__(self) -> str:
        return f"<exercises of {self.module.__name__}: {', '.join(self.exercises)}>"

    def _get(self, name: str) -> Exercise:
        if name not in self.exercises:
            raise KeyError(f"no exercise named {name!r} in {self.module.__name__}; "
                           f"registered: {', '.join(self.exercises)}")
        return self.exercises[name]

    def check(self, impl: Any, name: str | None = None) -> Any:
        """Check ``impl`` against the reference; return what the lecture should use from here on."""
        name = name or getattr(impl, "__name__", None)
        exercise = self._get(name)
        try:
            with _preserved_rng():  # the cases reseed; the lecture's own random stream must not depend on them
                _, n = exercise.diagnose(impl)
        except _NotImplemented:
            self.status[name] = "not yet"
            self._say(f"{name}: not implemented yet, using the reference solution so the lecture keeps running")
            return exercise.reference
        except ExerciseError:
            self.status[name] = "failed"
            raise
        self.status[name] = "passed"
        self._say(f"{name}: passed {n} check{'s' if n != 1 else ''}")
        return impl

    def hint(self, name: str) -> str:
        """Print (and return) the hint for an exercise."""
        text = self._get(name).hint or "no hint for this one: re-read the docstring and the math above it."
        self._say(f"hint for {name}: {text}")
        return text

    def solution(self, name: str) -> str:
        """Print (and return) the source code of the reference solution."""
        src = inspect.getsource(self._get(name).reference)
        self._say(src)
        return src

    def summary(self) -> None:
        """Print a table of passed / not yet / failed (the same as a dict: ``ex.status``)."""
        width = max([len("exercise")] + [len(n) for n in self.status])
        lines = [f"{'exercise':<{width}}  status", f"{'-' * width}  -------"]
        lines += [f"{n:<{width}}  {s}" for n, s in self.status.items()]
        done = sum(s == "passed" for s in self.status.values())
        lines.append(f"{done}/{len(self.status)} passed")
        self._say("\n".join(lines))

    def _say(self, text: str) -> None:
        if self.verbose:
            print(text)


def lecture_module_name(n: int) -> str:
    """The solutions module for lecture ``n`` (e.g. 2 -> 'solutions.l02_mlp_autograd_residuals')."""
    import solutions

    prefix = f"l{n:02d}_"
    names = [m.name for m in pkgutil.iter_modules(solutions.__path__) if m.name.startswith(prefix)]
    if len(names) != 1:
        raise LookupError(f"expected one solutions module for lecture {n} (solutions/{prefix}*.py), found {names}")
    return f"solutions.{names[0]}"


def for_lecture(n: int, verbose: bool = True) -> LectureExercises:
    """The exercise checker for lecture ``n``; call once in the setup cell."""
    return LectureExercises(importlib.import_module(lecture_module_name(n)), verbose=verbose)


# ---------------------------------------------------------------------------------------------- internals
@contextlib.contextmanager
def _preserved_rng() -> Iterator[None]:
    """Restore Python's, NumPy's and torch's (CPU) random state on exit."""
    import random

    py_state, np_state = random.getstate(), np.random.get_state()
    with torch.random.fork_rng(devices=[]):
        try:
            yield
        finally:
            random.setstate(py_state)
            np.random.set_state(np_state)


def _seed(seed: int) -> None:
    import random

    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


def _short(x: Any) -> str:
    if isinstance(x, (torch.Tensor, np.ndarray)):
        return f"{type(x).__name__}{tuple(x.shape)}"
    text = repr(x)
    return text if len(text) <= 60 else text[:57] + "..."
