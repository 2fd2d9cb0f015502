# Two commands for a reader (README.md):  make book   and   make test
# Both set up what is missing first: the virtual environment $(VENV) from requirements.lock
# (generated from requirements.txt, installed with --require-hashes) and MathJax from the npm
# registry (tools/setup_env.sh).

VENV ?= .venv
PROFILE ?= quick
# Empty: $$DDM_DATA_ROOT if set, else data/ (ddm.config.resolve_data_root).
DATA_ROOT ?=
# Data set passed to every chapter instead of the profile's own, e.g. DATASET=cifar10-jpeg.
DATASET ?=
# Notebooks to execute, by file-name prefix, e.g. CHAPTERS="01 03" (empty: all of _toc.yml).
CHAPTERS ?=
# Notebooks executed side by side (empty: 2 at the quick and ci profiles, 1 at cpu and paper).
JOBS ?=
# pytest-xdist workers for `make test` (auto: one per core); each test file runs whole in one
# worker, so a file's shared fixtures are built once.
TEST_JOBS ?= auto
# Python that creates $(VENV) when it is missing.
PYTHON ?= python3

PY := $(VENV)/bin/python
BUILD_ARGS := --profile $(PROFILE) $(if $(DATA_ROOT),--data-root "$(DATA_ROOT)") $(if $(DATASET),--dataset $(DATASET)) $(if $(CHAPTERS),--chapters $(CHAPTERS)) $(if $(JOBS),--jobs $(JOBS))
TEST_ENV := $(if $(DATA_ROOT),DDM_DATA_ROOT="$(abspath $(DATA_ROOT))")

.PHONY: help setup book html test record check clean distclean

help:
	@echo "make book     set up, execute every chapter (PROFILE=$(PROFILE)) and build _build/html"
	@echo "make test     set up and run the tests"
	@echo "make html     rebuild the HTML from the chapters executed last time"
	@echo "make record   re-run the chapters with record=True: results/<PROFILE>/*.json"
	@echo "make check    open the built pages in headless Chromium; screenshots in _build/screenshots"
	@echo "make setup    create or update $(VENV) from requirements.lock (hash-checked); fetch MathJax"
	@echo "make clean    remove _build/ (distclean: also .venv/ and node_modules/)"
	@echo "variables: PROFILE=quick|ci|cpu|paper DATA_ROOT=path DATASET=cifar10-jpeg CHAPTERS=\"01 03\" JOBS=2 TEST_JOBS=auto VENV=.venv"

setup:
	@PYTHON="$(PYTHON)" tools/setup_env.sh "$(VENV)"

book: setup
	$(PY) tools/build_book.py $(BUILD_ARGS)

html: setup
	$(PY) tools/build_book.py --skip-execute

test: setup
	$(TEST_ENV) $(PY) -m pytest -q -n $(TEST_JOBS) --dist loadfile tests

record: setup
	$(PY) tools/build_book.py $(BUILD_ARGS) --record

check: setup
	$(PY) tools/check_pages.py

clean:
	rm -rf _build .pytest_cache

# Only the project's own .venv: a VENV=... given on the command line may be shared.
distclean: clean
	rm -rf .venv node_modules
