# influx-magic: `make run` starts the local system, `make test` runs every test.
# Both create/refresh .venv first (uv when available: ~10 s cold, instant when nothing changed).
SHELL := /bin/bash
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
# moto's S3 server for the object-store state tests, in its own env (its Flask and mage-ai's
# itsdangerous pin cannot share one).
MOTO_VENV := .venv-moto
MOTO_STAMP := $(MOTO_VENV)/.installed
PYTEST_ARGS ?=

.PHONY: setup run test test-fast bench eval eval-loco lint format lock image-wheels up down clean

setup: $(STAMP) $(MOTO_STAMP)

# Reinstall only when a pin or the package metadata changed.
$(STAMP): requirements.txt requirements-dev.txt pyproject.toml
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	@if command -v uv >/dev/null 2>&1; then UV=uv; \
	elif $(BIN)/python -m pip install -q uv >/dev/null 2>&1; then UV=$(BIN)/uv; \
	else UV=; fi; \
	if [ -n "$$UV" ]; then \
		$$UV pip install -q --python $(BIN)/python -r requirements-dev.txt && \
		$$UV pip install -q --python $(BIN)/python --no-deps -e .; \
	else \
		$(BIN)/python -m pip install -q -r requirements-dev.txt && \
		$(BIN)/python -m pip install -q --no-deps -e .; \
	fi
	@touch $(STAMP)

$(MOTO_STAMP): requirements-moto.txt $(STAMP)
	@test -x $(MOTO_VENV)/bin/python || $(BIN)/python -m venv $(MOTO_VENV)
	@UV=$$(command -v uv || ls $(BIN)/uv 2>/dev/null); \
	if [ -n "$$UV" ]; then $$UV pip install -q --python $(MOTO_VENV)/bin/python -r requirements-moto.txt; \
	else $(MOTO_VENV)/bin/python -m pip install -q -r requirements-moto.txt; fi
	@touch $(MOTO_STAMP)

run: setup
	@exec $(BIN)/python -m localsystem

test: setup
	$(BIN)/python -m pytest $(PYTEST_ARGS)

test-fast: setup
	$(BIN)/python -m pytest -m "not slow and not browser" $(PYTEST_ARGS)

bench: setup
	$(BIN)/python -m benchmarks $(BENCH)

# NAB ($$NAB_DIR), SKAB ($$SKAB_DIR), simulator and scenarios; CPU heavy (~10 min on 2 cores).
eval: setup
	$(BIN)/python -m detection_eval all

# Leave-one-category-out on NAB and the default's ablations on every corpus.
eval-loco: setup
	$(BIN)/python -m detection_eval loco --json .local/evaluate/loco.json

lint: setup
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

format: setup
	$(BIN)/ruff check --fix .
	$(BIN)/ruff format .

# Re-resolve the pins after editing pyproject.toml's dependencies.
lock: setup
	$(BIN)/uv pip compile pyproject.toml --extra pipeline --extra local --extra eval --python-version 3.11 --prerelease=allow \
		--custom-compile-command "make lock" -o requirements.txt
	$(BIN)/uv pip compile pyproject.toml --extra pipeline --extra local --extra eval --extra dev --python-version 3.11 --prerelease=allow \
		--custom-compile-command "make lock" --no-annotate -c requirements.txt -o requirements-dev.txt
	$(BIN)/uv pip compile pyproject.toml --extra moto-server --python-version 3.11 \
		--custom-compile-command "make lock" --no-annotate -o requirements-moto.txt

# After `make lock`: which pins have wheels for linux/amd64 and linux/arm64 (needs PyPI; the
# tests check the Dockerfile against image_build/wheels.json offline).
image-wheels: setup
	$(BIN)/python -m image_build.wheels refresh

up:
	docker compose up -d --build

down:
	docker compose down

clean:
	rm -rf $(VENV) $(MOTO_VENV) .local .pytest_cache .ruff_cache
