# statsd-gateway: `make run` starts the gateway, `make test` runs every test.
# Both create .venv with the project installed when it is missing or out of date.

PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
ARGS ?=

.PHONY: run test lint demo clean

$(STAMP): pyproject.toml
	@$(PYTHON) -c 'import sys; sys.exit(0 if sys.version_info >= (3, 11) else "statsd-gateway needs Python 3.11 or newer")'
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[test]'
	@touch $(STAMP)

run: $(STAMP)
	@if [ -z "$$JDCLOUD_ACCESS_KEY" ] && [ ! -f "$$HOME/.jdc/config" ]; then \
	  echo "make run: no JD Cloud credentials found, so request bodies are printed to stdout (--endpoint stdout)"; \
	  exec $(BIN)/statsd-gateway --endpoint stdout $(ARGS); \
	else \
	  exec $(BIN)/statsd-gateway $(ARGS); \
	fi

test: $(STAMP)
	$(BIN)/ruff check gateway tests bench scripts
	$(BIN)/mypy
	$(BIN)/python -m pytest

demo: $(STAMP)
	$(BIN)/python scripts/demo.py

lint: $(STAMP)
	$(BIN)/ruff check gateway tests bench scripts
	$(BIN)/ruff format --check gateway tests bench scripts
	$(BIN)/mypy

clean:
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache .hypothesis
