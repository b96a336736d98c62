# Two commands on a fresh machine (see README):
#   make lab    create .venv if missing, install, open JupyterLab on lectures/
#   make test   create .venv if missing, install, run unit tests + every notebook (nbval), print timings
#   make slides / make site / make test-browser   instructor tooling (README, "For instructors")
# All are idempotent; the install step re-runs only when requirements.txt or pyproject.toml change.

PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed
# two pytest workers, one thread each: two kernels on two cores must not fight over threads
WORKERS ?= 2
export OMP_NUM_THREADS ?= 1
export MPLBACKEND ?= Agg
export PIP_DISABLE_PIP_VERSION_CHECK = 1

.PHONY: install lab test test-unit test-notebooks lint bench clean-notebooks clean slides site test-browser browser-deps

install: $(STAMP)

$(STAMP): requirements.txt pyproject.toml
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet -r requirements.txt
	$(BIN)/python -m pip install --quiet --no-deps -e .
	@if git rev-parse --git-dir >/dev/null 2>&1; then $(BIN)/nbstripout --install --attributes .git/info/attributes; fi
	@touch $(STAMP)

# root (containers, cloud VMs) must be allowed explicitly by Jupyter
LAB_FLAGS ?= $(if $(filter 0,$(shell id -u)),--allow-root)

lab: install
	$(BIN)/jupyter lab $(LAB_FLAGS) lectures/

test: install
	$(BIN)/python -m pytest -n $(WORKERS) --dist loadfile

test-unit: install
	$(BIN)/python -m pytest -n $(WORKERS) --dist loadfile tests

test-notebooks: install
	$(BIN)/python -m pytest -n $(WORKERS) --dist loadfile lectures

bench: install
	OMP_NUM_THREADS= $(BIN)/python benchmarks/gpt_speed.py

# ---- instructor tooling: offline reveal.js slides, a static course site, real-browser tests -----------------
# front-end files (reveal.js, MathJax, require.js, jQuery, widget renderer) come from npm, pinned by package-lock.json
NODE_STAMP := node_modules/.installed
$(NODE_STAMP): package.json package-lock.json
	npm ci --no-audit --no-fund --loglevel=error
	@touch $(NODE_STAMP)

slides: install $(NODE_STAMP)
	$(BIN)/python tools/build_html.py slides

site: install $(NODE_STAMP)
	$(BIN)/python tools/build_html.py site

# Debian's chromium, driven by Playwright (browser downloads are impossible offline)
SUDO := $(if $(filter 0,$(shell id -u)),,sudo)
browser-deps:
	@test -x /usr/bin/chromium || ($(SUDO) apt-get update -qq && $(SUDO) apt-get install -y -qq chromium)

test-browser: install browser-deps slides site
	DL_COURSE_BROWSER_TESTS=1 $(BIN)/python -m pytest tests/browser --screenshot=only-on-failure --output=build/screenshots/failures

lint: install
	$(BIN)/ruff check .

clean-notebooks: install
	$(BIN)/nbstripout --drop-empty-cells --extra-keys "metadata.widgets" lectures/*.ipynb

clean:
	rm -rf build .pytest_cache .ruff_cache
