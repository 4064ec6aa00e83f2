# Deep Generative Models course book: build, test, grade.
#
#   make book        render the book to _build/html (offline; executes the pages)
#   make test        the whole test suite: gmlib, grading and its integrity (every lab autograded), book
#   make grade       nbgrader demo: generate, autograde example submissions, export CSV
#   make lab         JupyterLab on notebooks/ with the nbgrader extension
#   make formgrader  nbgrader's formgrader on the course, for instructors
#   make student-dist  the labs and gmlib for students, without solutions (_build/student)
#   make bench       the benchmark scripts (gmlib/bench): speed figures, printed
#
# The first target you run creates .venv and installs requirements.txt into it;
# later runs skip the install until requirements.txt or pyproject.toml change.

SHELL      := /bin/bash
PYTHON     ?= python3
VENV       ?= .venv
BIN        := $(VENV)/bin
STAMP      := $(VENV)/.installed
# Extra pip arguments, e.g. PIP_ARGS="--index-url https://download.pytorch.org/whl/cpu"
PIP_ARGS   ?=
# A local folder of wheels (a CPU torch wheel, say) is used when present.
WHEELS     ?= /opt/wheels
FIND_LINKS := $(if $(wildcard $(WHEELS)/*.whl),--find-links $(WHEELS))
# Extra pytest arguments, e.g. PYTEST_ARGS="-x -k kl"
PYTEST_ARGS ?=
BUILD      := _build
CHP_VERSION := 5.3.0

# nbgrader runs `alembic` from PATH: make the venv's win for nbgrader started from `make lab`
# (the formgrader) or by hand; autograder.grading sets PATH for its own nbgrader calls.
export PATH := $(abspath $(BIN)):$(PATH)
export PYTHONHASHSEED := 0
export MPLBACKEND := Agg
# Labs and pages run on the CPU in tests unless you override it.
export GMLIB_DEVICE ?= cpu

.PHONY: help install book book-check test test-code test-pages test-lib test-grading test-integrity test-labs grade student-dist lab formgrader bench integrity lock clean

help:
	@sed -n '3,13p' Makefile | sed 's/^# \{0,1\}//'

install: $(STAMP)

$(STAMP): requirements.txt pyproject.toml
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --disable-pip-version-check -q --no-compile $(FIND_LINKS) $(PIP_ARGS) -r requirements.txt
	@# pip compiles the .pyc files one at a time; compileall uses every core (119 -> 89 s on 2 cores).
	@# Like pip, it leaves out the few files that are not valid on this Python (torch ships 3.12-only ones).
	@$(BIN)/python -m compileall -qq -j 0 $$($(BIN)/python -c 'import sysconfig; print(sysconfig.get_paths()["purelib"])') || true
	@# JupyterHub's proxy (deploy/jupyterhub_config.py, tests/test_jupyterhub.py), from the npm registry
	@if command -v npm >/dev/null; then \
	  npm install --silent --no-audit --no-fund --prefix $(VENV)/node configurable-http-proxy@$(CHP_VERSION) >/dev/null && \
	  ln -sf ../node/node_modules/.bin/configurable-http-proxy $(BIN)/configurable-http-proxy; \
	else echo "npm not found: JupyterHub's configurable-http-proxy not installed (apt-get install npm, then make install)"; fi
	@touch $@
	@echo "installed into $(VENV)"

# MPLBACKEND is unset for the build: with Agg inherited, the kernels never switch to the
# inline backend and plt.show() silently draws nothing into the pages.
book: $(STAMP)
	env -u MPLBACKEND $(BIN)/jupyter-book build . --path-output . -W -n --keep-going
	@$(MAKE) --no-print-directory book-check

# The built site must load nothing from the network: no remote scripts,
# images, styles or fonts, and MathJax served from _static; every chapter page has figures; no
# page shows build plumbing (equation labels, glue calls, Thebe's script, nbval markers); then every
# page opened in headless Chromium at 1400 and 390 px (tests/check_book_pages.py; its docstring lists
# what fails it: figures, equations, weight, icons, plumbing, console, network). The site under 15 MB.
book-check:
	@html=$(BUILD)/html; \
	test -f $$html/index.html || { echo "book-check: $$html/index.html missing; run make book"; exit 1; }; \
	test -f $$html/_static/mathjax/startup.js || { echo "book-check: offline MathJax missing from $$html/_static"; exit 1; }; \
	size=$$(du -sk $$html | cut -f1); test $$size -le 15000 || { echo "book-check: the site is $$size kB, over 15 MB"; exit 1; }; \
	if grep -rEl 'src="https?://|<link[^>]+href="https?://[^"]+\.(css|js)' $$html --include='*.html'; then \
	  echo "book-check: the pages above load resources from the network"; exit 1; fi; \
	if grep -rEl '(src|href)="https?://[^"]*(cdn|unpkg|jsdelivr|googleapis)' $$html --include='*.html'; then \
	  echo "book-check: the pages above reference a CDN"; exit 1; fi; \
	if grep -rlE '\(ch[0-9]{2}-[a-z][a-z0-9_-]*\)|(^|[[:space:]>])glue(</span>)?(<span class="p">)?\(|THEBE_JS_URL|NBVAL' $$html/book $$html/notebooks --include='*.html'; then \
	  echo "book-check: the pages above show build plumbing (an equation label, a glue call, Thebe's script or a test marker)"; exit 1; fi; \
	for page in $$html/book/ch[0-9][0-9]_*.html; do \
	  grep -q '<img' $$page || { echo "book-check: $$page has no figures (were the plots drawn?)"; exit 1; }; done; \
	echo "book-check: $$(ls $$html/book/*.html $$html/notebooks/*/*.html 2>/dev/null | wc -l) pages, $$size kB, no remote resources, MathJax offline, figures in every chapter, no build plumbing shown"; \
	$(BIN)/python tests/check_book_pages.py $$html

# Four streams, two at a time (one per core): the grading pipeline (its parallel and PostgreSQL
# runs included) beside the autograder's integrity; then the book and the fast tests, each on the
# first core free. The grading ends first (about 415 against 455 s on 2 cores, 2026-12-07), so the
# book (about 330 s) follows it and the fast tests (about 295 s) the integrity: the two pairs end
# close together (about 745 and 750 s), where the fast tests after the grading and the book after the
# integrity would end about 80 s apart. The solutions' nbval run (`make test-labs`) is not among
# them: the integrity run autogrades every lab's solution under nbgrader, requires full marks and no
# cell that raised (demonstrations included, in the graded kernel's edition of the library), and so
# checks more than nbval did, about 95 stream-seconds sooner.
# Each stream's output is printed when it ends (--output-sync).
# Two streams share the cores: each gets half of them for its torch and OpenMP threads (one each on
# 2 cores), as a second thread per stream only adds contention there (a 5 s test took 43 s).
TEST_THREADS := $(shell n=$$(nproc 2>/dev/null || echo 2); echo $$(( n / 2 > 0 ? n / 2 : 1 )))
# The grading kernels are forked from a preloaded zygote (autograder.sandbox.zygote), which would
# otherwise stay up until idle for 2 minutes: stopped at the end, whatever the outcome.
test: $(STAMP)
	OMP_NUM_THREADS=$(TEST_THREADS) GMLIB_TEST_THREADS=$(TEST_THREADS) \
	  $(MAKE) --no-print-directory -j2 --output-sync=recurse test-grading test-integrity book test-lib; \
	  status=$$?; $(BIN)/python -I autograder/sandbox/zygote.py stop; exit $$status

test-code: $(STAMP)
	$(MAKE) --no-print-directory test-lib
	$(MAKE) --no-print-directory test-grading

test-pages: $(STAMP)
	$(MAKE) --no-print-directory test-labs
	$(MAKE) --no-print-directory book

# gmlib: the mathematics, data, training loop; the autograder's pieces, in process (fast)
test-lib: $(STAMP)
	$(BIN)/pytest tests -m "not slow" -q $(PYTEST_ARGS)

# nbgrader: the demo (first lab: solution = full marks, blank = 0; releases in sync, warnings
# harmless), PostgreSQL, a class graded in parallel on Dask with a killed worker, the benchmark's smoke test
test-grading: $(STAMP)
	$(BIN)/pytest tests -m slow -q --ignore=tests/test_integrity.py $(PYTEST_ARGS)

# every lab's solution (full marks), blank release (0) and a sample of its mutants (the first and
# the last exercise: it loses points there, no other exercise changes) autograded by nbgrader;
# hostile submissions, feedback without hidden tests, killed batches.
test-integrity: $(STAMP)
	$(BIN)/pytest tests/test_integrity.py -q -s $(PYTEST_ARGS)

# every solution notebook executes in a plain kernel, and its marked outputs match (not part of
# `make test`: the integrity run autogrades every solution, see above)
test-labs: $(STAMP)
	$(BIN)/pytest --nbval-lax solutions/ -q -p no:cacheprovider $(PYTEST_ARGS)

grade: $(STAMP)
	$(BIN)/python -m autograder demo

# The labs and gmlib for students, without solutions, hidden tests or reference versions (_build/student)
student-dist: $(STAMP)
	$(BIN)/python -m autograder student-dist

# The autograder's integrity figures: every mutant of every lab autograded by nbgrader, and the
# hostile submissions (INTEGRITY_ARGS, e.g. "--per-exercise 1" for a quicker run)
INTEGRITY_ARGS ?=
integrity: $(STAMP)
	$(BIN)/python -m autograder.integrity figures $(INTEGRITY_ARGS)

# Every gmlib/bench/<name>.py, each printing its figures; BENCH_ARGS go to each, e.g. "--device cuda"
BENCH_ARGS ?=
bench: $(STAMP)
	@for m in $$(ls gmlib/bench/*.py | xargs -n1 basename | grep -v '^_' | sed 's/\.py$$//'); do \
	  echo "== python -m gmlib.bench.$$m $(BENCH_ARGS)"; \
	  $(BIN)/python -m gmlib.bench.$$m $(BENCH_ARGS) || exit 1; done

# Extra JupyterLab arguments, e.g. LAB_ARGS="--no-browser --port 8899"
LAB_ARGS ?=
ALLOW_ROOT := $(if $(filter 0,$(shell id -u)),--allow-root)
JUPYTER ?= $(BIN)/jupyter
# The labs' kernels get neither MPLBACKEND=Agg (exported above for the tests: with it plt.show()
# draws nothing in JupyterLab) nor the tests' GMLIB_DEVICE=cpu (gmlib picks CUDA when present);
# a GMLIB_DEVICE you set yourself is kept.
LAB_ENV := -u MPLBACKEND $(if $(filter file,$(origin GMLIB_DEVICE)),-u GMLIB_DEVICE)
# LAB_ROOT: the folder JupyterLab serves (the labs; the tests give a scratch copy)
LAB_ROOT ?= notebooks
lab: $(STAMP)
	env $(LAB_ENV) $(JUPYTER) lab --ServerApp.root_dir=$(LAB_ROOT) $(ALLOW_ROOT) $(LAB_ARGS)

# nbgrader's formgrader (assignments, submissions, scores, feedback) for the instructor, in JupyterLab
# served from the course's root: its links open solutions/ and notebooks/, which `make lab` (rooted at
# notebooks/) cannot serve. COURSE is that root (this repository unless you name another course).
COURSE ?= .
formgrader: $(STAMP)
	cd $(COURSE) && env $(LAB_ENV) $(abspath $(JUPYTER)) lab --ServerApp.root_dir=. \
	  --ServerApp.default_url=/formgrader $(ALLOW_ROOT) $(LAB_ARGS)

# Re-resolve the pinned set from the direct requirements (needs the package index).
lock:
	rm -rf /tmp/gmlib-lock && $(PYTHON) -m venv /tmp/gmlib-lock
	grep -B1000 -- '^-e \.' requirements.txt | grep -v '^#' | grep -v '^-e' | grep . > /tmp/gmlib-lock/direct.txt
	/tmp/gmlib-lock/bin/pip install -q $(FIND_LINKS) $(PIP_ARGS) -r /tmp/gmlib-lock/direct.txt
	@echo "resolved; compare /tmp/gmlib-lock/bin/pip freeze with requirements.txt"

clean:
	rm -rf $(BUILD) _grading .pytest_cache
