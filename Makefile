# StudioX developer commands. `make run` to start it, `make test` to test it.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: install run test lint format bench soak clean

$(STAMP): pyproject.toml
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	@$(BIN)/python -m pip install --quiet --upgrade pip
	@$(BIN)/python -m pip install --quiet -e '.[dev]'
	@touch $(STAMP)

install: $(STAMP)

run: $(STAMP)
	@$(BIN)/python -m shared.devserver

test: $(STAMP)
	@$(BIN)/python -m pytest $(PYTEST_ARGS)

lint: $(STAMP)
	@$(BIN)/ruff check api workers shared tests bench
	@$(BIN)/ruff format --check api workers shared tests bench

format: $(STAMP)
	@$(BIN)/ruff format api workers shared tests bench
	@$(BIN)/ruff check --fix api workers shared tests bench

bench: $(STAMP)
	@$(BIN)/python -m bench

clean:
	rm -rf var .pytest_cache
