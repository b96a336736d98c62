"""Repository hygiene (COURSE_DESIGN §5): clean notebooks, one solutions module per lecture, the contract's
must-haves in every notebook, the README table, environment.yml ≡ requirements.txt, ruff clean."""
from __future__ import annotations

import importlib
import json
import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
STEMS = [
    "l01_why_deep_learning", "l02_mlp_autograd_residuals", "l03_training_recipe", "l04_sgd_momentum",
    "l05_adam_schedules", "l06_regularization", "l07_convolutions", "l08_cnn_architectures",
    "l09_detection_segmentation", "l10_rnn_lstm_gru", "l11_seq2seq_attention", "l12_transformer", "l13_nanogpt",
    "l14_tokenization", "l15_scaling_modern_llms", "l16_alignment", "l17_self_supervised", "l18_clip_vlm",
    "l19_vae", "l20_gan", "l21_ddpm", "l22_guidance_latent_diffusion", "l23_inference_agents_reasoning",
    "l24_interpretability",
]
NOTEBOOKS = sorted((ROOT / "lectures").glob("*.ipynb"))


def code_of(nb: dict) -> str:
    return "\n".join("".join(c["source"]) for c in nb["cells"] if c["cell_type"] == "code")


def test_all_24_lectures_are_written():
    assert [p.stem for p in NOTEBOOKS] == STEMS, "lectures/ must hold exactly the 24 notebooks of COURSE_DESIGN §7"


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.stem)
def test_notebook_is_clean_and_complete(path):
    nb = json.loads(path.read_text())
    stem = path.stem
    assert stem in STEMS, f"{path.name}: not one of the fixed stems in COURSE_DESIGN §7"
    assert nb["metadata"].get("kernelspec", {}).get("name") == "python3", "kernelspec must be python3"
    assert "widgets" not in nb["metadata"], "saved widget state: run `make clean-notebooks`"
    for i, cell in enumerate(nb["cells"]):
        if cell["cell_type"] == "code":
            assert not cell.get("outputs") and cell.get("execution_count") is None, \
                f"cell {i} has outputs: run `make clean-notebooks`"
        assert "slide_type" in cell.get("metadata", {}).get("slideshow", {}), f"cell {i} has no slideshow metadata"
    code = code_of(nb)
    n = int(stem[1:3])
    assert f"utils.exercises.for_lecture({n})" in code, "the setup cell must load this lecture's exercises"
    assert "utils.seed_everything(" in code
    assert len(re.findall(r"\bex\.check\(", code)) >= 3, "at least 3 checked exercises"
    assert re.search(r"utils\.widgets\.interact\(|ipywidgets", code), "a widget"
    assert re.search(r"^\s*assert\s", code, re.M), "an asserted outcome"
    assert (ROOT / "solutions" / f"{stem}.py").exists(), f"missing solutions/{stem}.py"


def test_every_solutions_module_has_its_lecture():
    modules = sorted(p.stem for p in (ROOT / "solutions").glob("l*.py"))
    assert modules == [p.stem for p in NOTEBOOKS]
    for stem in modules:
        assert importlib.import_module(f"solutions.{stem}").EXERCISES, f"{stem} registers no exercise"


def test_readme_lists_all_24_lectures():
    readme = (ROOT / "README.md").read_text()
    for stem in STEMS:
        assert re.search(rf"^\|\s*\[?`?{stem}`?", readme, re.M), f"README's lecture table lacks {stem}"
    for path in NOTEBOOKS:  # every lecture is linked from its row
        row = next(line for line in readme.splitlines() if path.stem in line and line.startswith("|"))
        assert "planned" not in row and f"lectures/{path.name}" in row


def requirement_lines(text: str) -> list[str]:
    return [line.split("#")[0].strip() for line in text.splitlines() if line.split("#")[0].strip()]


def test_environment_yml_matches_requirements():
    reqs = requirement_lines((ROOT / "requirements.txt").read_text())
    env = (ROOT / "environment.yml").read_text()
    assert re.search(r"^\s*-\s*python=3\.11\s*$", env, re.M)
    pip_section = env.split("- pip:", 1)[1]
    pins = [line.strip()[2:].strip() for line in pip_section.splitlines() if line.strip().startswith("- ")]
    assert sorted(p for p in pins if not p.startswith("-e")) == sorted(reqs)
    assert "torch==2.13.0" in reqs
    assert all("==" in r for r in reqs), "every direct dependency is pinned"
    assert not any(r.startswith("torchvision") for r in reqs), "torchvision cannot be installed beside this torch"


def test_ruff_clean():
    result = subprocess.run([sys.executable, "-m", "ruff", "check", "--quiet", str(ROOT)], capture_output=True,
                            text=True)
    assert result.returncode == 0, result.stdout + result.stderr
