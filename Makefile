# Both entry points set themselves up on a bare machine (Python 3.11+ with venv).
# The venv holds exactly what requirements.lock pins (hash-checked), plus alprd itself (editable).
PY ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
LOCK := requirements.lock
PI_LOCK := requirements-pi.lock
# uv resolves for a platform other than its own, which the Pi lock needs (pip-compile cannot).
COMPILE := $(BIN)/uv pip compile pyproject.toml --quiet --generate-hashes --python-version 3.11

.PHONY: demo test lint setup lock clean schemas

# A changed lock rebuilds the venv from scratch, so a package dropped from the lock leaves it too.
$(STAMP): pyproject.toml $(LOCK)
	rm -rf $(VENV)
	$(PY) -m venv $(VENV)
	$(BIN)/pip install -q --require-hashes --no-deps -r $(LOCK)
	$(BIN)/pip install -q --no-deps --no-build-isolation -e .
	@# fails when pyproject.toml asks for something the lock lacks: run `make lock`
	$(BIN)/pip check
	touch $(STAMP)

setup: $(STAMP)

# Upgrading a dependency is a deliberate commit: `make lock`, then `make test` (the accuracy gate).
lock: $(STAMP)
	$(COMPILE) --extra dev --extra demo --python-platform x86_64-manylinux_2_28 -o $(LOCK)
	$(COMPILE) --python-platform aarch64-manylinux_2_36 -c tools/pi-constraints.txt \
	    --no-emit-package numpy -o $(PI_LOCK)

# docs/payloads/*.json from alprd/payloads.py (tests/test_payloads.py fails while they differ)
schemas: $(STAMP)
	$(BIN)/python tools/payload_schemas.py

demo: $(STAMP)
	$(BIN)/alprd demo

read: $(STAMP)
	$(BIN)/alprd read $(IMAGES)

test: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/mypy
	$(BIN)/pytest -q

clean:
	rm -rf $(VENV) .mypy_cache .ruff_cache .pytest_cache
