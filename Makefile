# Two commands for a new user (see README): `make book` sets up and builds the book, executing every
# chapter; `make test` runs every test. Both create the virtual environment on first use.
PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed-$(shell cat requirements.txt pyproject.toml | cksum | cut -d' ' -f1)
# Chapters run on the CPU in tests so that a GPU host's warnings never become cell output;
# an inherited MPLBACKEND=Agg would make every figure vanish from the book.
RUN := env -u MPLBACKEND JAX_PLATFORMS=cpu PYTHONHASHSEED=0
# Chapters run with a results cache inside _build (made fresh by every build), so a stale cache can
# never vouch for changed code. A user's own cache (./cache) is never touched.
TESTCACHE := COMPANION_CACHE=$(CURDIR)/_build/cache
# Each chapter executes once per build: tests/execute.py runs them (two at a time) into EXECUTED and
# stores them in the build's jupyter-cache, which the build (execute_notebooks: cache) renders; the
# tests compare EXECUTED with the reference notebooks (tests/outputs.py, nbval's rules).
EXECUTED := $(CURDIR)/_build/executed
# pytest runs in two worker processes, each test file on one worker (its module fixtures computed once);
# pytest-cov gathers both workers' coverage into the data file pyproject.toml names.
XDIST := -n 2 --dist loadfile
# Each stage's wall time goes to .timings.jsonl; `python3 tests/timing.py report` prints the breakdown.
TIMED := python3 tests/timing.py run

.PHONY: setup book lint test unit coverage nbval notebooks portability benchmark clean pdf pdf-from-build

setup: $(STAMP)

$(STAMP): requirements.txt pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	$(BIN)/python -m pip install -q -r requirements.txt
	rm -f $(VENV)/.installed-*
	touch $@

# A clean build: the execution cache cannot see edits to companion/, so never reuse _build; every
# chapter is executed afresh by tests/execute.py, then rendered from its outputs.
book: $(STAMP)
	rm -rf _build
	$(TIMED) "execute chapters" -- $(RUN) $(TESTCACHE) $(BIN)/python tests/execute.py --out $(EXECUTED) \
	  --cache _build/.jupyter_cache
	$(TIMED) "render book" -- $(RUN) $(TESTCACHE) $(BIN)/jupyter-book build -W -n --keep-going .
	@echo "The book is in _build/html/index.html"

# Lint, format check and type check (configured in pyproject.toml); `make test` runs them first.
lint: $(STAMP)
	$(TIMED) lint -- sh -c '$(BIN)/ruff check . && $(BIN)/ruff format --check . && $(BIN)/mypy'

# The whole book as one PDF (_build/html/companion-book.pdf, linked from the introduction):
# Sphinx's single-page HTML, built from the HTML build's doctrees (no chapter executes twice),
# printed by headless Chromium after MathJax ran. Needs Debian's chromium and poppler-utils.
pdf: book pdf-from-build

pdf-from-build: $(STAMP)
	$(TIMED) pdf -- sh -c '$(RUN) $(TESTCACHE) $(BIN)/jupyter-book build -W -n --keep-going --builder singlehtml . \
	  && $(BIN)/python tests/pdf.py --html _build/singlehtml --out _build/html/companion-book.pdf'

# Every test: lint, the strict book build (and its PDF where Chromium is installed), then unit
# tests, reference-notebook sync checks and the comparison of the build's executed chapters with
# the reference notebooks (nbval's rules, no second execution), under coverage; fails if any module
# of companion/ is below 85% line coverage.
test: lint book
	@if { command -v chromium || command -v google-chrome; } >/dev/null 2>&1 && command -v pdftotext >/dev/null 2>&1; then \
	  $(MAKE) --no-print-directory pdf-from-build; \
	else echo "chromium or poppler-utils missing: no PDF (its test skips)"; fi
	$(TIMED) pytest -- $(RUN) $(TESTCACHE) COMPANION_EXECUTED=$(EXECUTED) $(BIN)/python -m pytest -q \
	  $(XDIST) --cov --cov-report= --durations=20 --junitxml=_build/pytest.xml tests
	$(BIN)/python tests/check_coverage.py

unit: $(STAMP)
	$(RUN) $(BIN)/python -m pytest -q $(XDIST) tests

# Unit tests alone under coverage, with the per-module check (no book build).
coverage: $(STAMP)
	$(RUN) $(BIN)/python -m pytest -q $(XDIST) --cov --cov-report= tests
	$(BIN)/python tests/check_coverage.py

# nbval itself over the reference notebooks (executes every chapter again; `make test` does not).
nbval: $(STAMP)
	$(RUN) $(TESTCACHE) $(BIN)/python -m pytest -q --nbval --nbval-current-env \
	  --nbval-sanitize-with tests/nbval_sanitize.cfg book

# Regenerate the committed reference notebooks from the chapter sources (all, or CHAPTERS="...").
notebooks: $(STAMP)
	rm -rf _build/regenerate-cache
	$(RUN) COMPANION_CACHE=$(CURDIR)/_build/regenerate-cache $(BIN)/python tests/regenerate.py $(CHAPTERS)

# Re-execute the chapters (all, or CHAPTERS="...") under perturbations that stand in for another
# machine (one ulp in every start, XLA limited to AVX2, every core per kernel) and fail if any printed value
# moves; writes book/results/portability.json. About three book executions: not part of `make test`.
portability: $(STAMP)
	$(RUN) $(BIN)/python tests/portability.py $(CHAPTERS)

benchmark: $(STAMP)
	$(RUN) $(BIN)/python benchmarks/run.py
	$(RUN) $(BIN)/python benchmarks/flow.py

clean:
	rm -rf _build
