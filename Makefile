# One Makefile for people and CI. `make demo` and `make test` set everything up on a fresh machine
# (Python 3.11+, make, a C compiler): a virtualenv in .venv with every dependency installed from the hashed lock
# requirements/dev.lock, then the project itself from pyproject.toml (requirements/README.md).
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed-stamp
LOCKS := requirements/dev.lock requirements/runtime.lock requirements/image.lock
# pip-compile's own version is pinned so that `make lock` writes the same file on every machine.
LOCK_TOOLS := $(VENV)/lock-tools
PIP_TOOLS := pip-tools==7.6.2

.PHONY: install demo test unit lint typecheck pytest bench soak lock lock-check refresh-wave-schema clean

# The build backend (setuptools) is in the lock too, so the project is built without build isolation: nothing is
# installed that the lock does not name and hash.
$(STAMP): pyproject.toml $(LOCKS)
	@$(PYTHON) -c 'import sys; sys.exit(0 if sys.version_info >= (3, 11) else "Python 3.11+ is required")'
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --require-hashes -r requirements/dev.lock
	$(BIN)/python -m pip install --quiet --no-deps --no-build-isolation -e .
	@touch $(STAMP)

install: $(STAMP)

demo: $(STAMP)
	$(BIN)/wavesync demo

test: lint typecheck lock-check pytest

lint: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

typecheck: $(STAMP)
	$(BIN)/mypy

# Most integration tests wait on real processes and sockets, not the CPU: four pytest workers on two cores, each with
# its own Redis, sandboxes and PostgreSQL, finish the suite in 5.6 minutes against 8.2 with three. Work stealing keeps
# the long tests (the bench smoke run, the compose stack, the crashes) from all landing at the end of one worker.
TEST_WORKERS ?= 4

pytest: $(STAMP)
	$(BIN)/pytest -n $(TEST_WORKERS) --dist worksteal

# The pure tier: the sync decision's properties and the merge, mapping and layout rules; no service, seconds.
# Part of `make test` too.
UNIT_TESTS := tests/workers/test_plan.py tests/shared/test_merge.py tests/shared/test_versions.py \
	tests/shared/mapping/test_fields.py tests/test_layout.py
unit: $(STAMP)
	$(BIN)/pytest -p no:cacheprovider $(UNIT_TESTS)

bench: $(STAMP)
	$(BIN)/python -m bench

soak: $(STAMP)
	$(BIN)/pytest tests/soak -m soak -s -p no:cacheprovider

# Rewrite the locks from pyproject.toml with pip-compile (needs the package index); pins that still fit are kept.
# `make lock UPGRADE=1` moves every pin to the newest version pyproject allows.
lock:
	$(PYTHON) -m venv $(LOCK_TOOLS)
	$(LOCK_TOOLS)/bin/python -m pip install --quiet "$(PIP_TOOLS)"
	$(LOCK_TOOLS)/bin/python scripts/lock.py lock --pip-compile $(LOCK_TOOLS)/bin/pip-compile $(if $(UPGRADE),--upgrade)

# Offline: every pyproject requirement is pinned and hashed in its lock, and the locks were written for this
# pyproject's dependency lists (tests/test_lock.py checks the same).
lock-check: $(STAMP)
	$(BIN)/python scripts/lock.py check

# Fetch the vendored Wave reference dumps (sandboxes/wave/reference/) again from their public sources and rewrite
# SOURCE.md there; FROM=<dir> reads the two files from a folder instead of the network.
refresh-wave-schema: $(STAMP)
	$(BIN)/python scripts/refresh_wave_schema.py $(if $(FROM),--from $(FROM))

clean:
	rm -rf $(VENV) .wavesync .mypy_cache .ruff_cache .pytest_cache
