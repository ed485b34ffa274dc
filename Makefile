# Both entry points set themselves up on a bare machine (Python 3.11+ with venv).
PY ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: demo test lint setup clean

$(STAMP): pyproject.toml
	$(PY) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q -e '.[dev,demo]'
	touch $(STAMP)

setup: $(STAMP)

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
