# gbadz developer commands. Every target bootstraps what it needs and is safe to re-run.
SHELL := /bin/bash
PYTHON ?= python3.11
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed
# The suite's PostgreSQL lane; `make test GBADZ_TEST_REQUIRE_POSTGRES=0` lets it skip visibly.
export GBADZ_TEST_POSTGRES_URL ?= postgresql://postgres@127.0.0.1:5432/test
export GBADZ_TEST_REQUIRE_POSTGRES ?= 1
# Test processes (pytest-xdist). Each worker starts its own SeaweedFS and uses its own SQLite
# file and PostgreSQL schema; tests of one module or class stay on one worker (loadscope).
TEST_WORKERS ?= 2

.PHONY: setup browser demo test test-fast lint fmt bench serve services services-down clean

setup: $(STAMP) browser

# The console's browser tests drive Debian's Chromium (never a downloaded browser); the CJK
# fonts make Chinese labels readable in their screenshots.
browser:
	@dpkg -s chromium chromium-driver fonts-noto-cjk poppler-utils >/dev/null 2>&1 || { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium chromium-driver fonts-noto-cjk poppler-utils >/dev/null; }

$(STAMP): requirements.lock pyproject.toml
	@test -x $(PY) || $(PYTHON) -m venv $(VENV)
	@$(PY) -m pip install --quiet --disable-pip-version-check "$$(grep -oE '^uv==[0-9.]+' requirements.lock)"
	$(VENV)/bin/uv pip sync --quiet --python $(PY) requirements.lock
	$(VENV)/bin/uv pip install --quiet --python $(PY) --no-deps -e .
	@touch $@

demo: $(STAMP)
	$(VENV)/bin/gbadz demo

test: $(STAMP) browser
	$(PY) -m pytest -n $(TEST_WORKERS) --dist loadscope

# The inner loop: no end-to-end tests (Airflow, CLI and demo subprocesses, browser, fuzzer) and
# only the SQLite lane (deselected, not skipped). `make test` is what CI runs.
test-fast: $(STAMP)
	$(PY) -m pytest -n $(TEST_WORKERS) --dist loadscope -m "not e2e" -k "not postgresql" -q

lint: $(STAMP)
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .
	$(VENV)/bin/mypy
	$(VENV)/bin/lint-imports --no-cache

fmt: $(STAMP)
	$(VENV)/bin/ruff format .
	$(VENV)/bin/ruff check --fix .

bench: $(STAMP)
	@command -v wrk >/dev/null || { apt-get update -qq && apt-get install -y -qq wrk; }
	@set -e; for b in bench/bench_*.py; do echo "== $$b"; $(PY) $$b; done

serve: $(STAMP)
	$(VENV)/bin/gbadz services up
	$(VENV)/bin/gbadz serve

services: $(STAMP)
	$(VENV)/bin/gbadz services up

services-down: $(STAMP)
	$(VENV)/bin/gbadz services down

# Regenerate the lock after changing dependencies in pyproject.toml.
lock: $(STAMP)
	$(VENV)/bin/uv pip compile pyproject.toml --group dev --python-version 3.11 --generate-hashes --no-header --quiet -o requirements.lock

clean:
	-$(VENV)/bin/gbadz services down 2>/dev/null
	rm -rf $(VENV) .gbadz .pytest_cache .mypy_cache .ruff_cache test-artifacts
