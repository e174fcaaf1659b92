# StudioX developer commands. `make run` to start it, `make test` to test it.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: install run test lint format bench soak clean

$(STAMP): pyproject.toml
	@test -x $(BIN)/python || $(PYTHON) -c 'import sys; sys.exit(sys.version_info < (3, 11))' \
		|| { echo "StudioX needs Python 3.11+; try: make run PYTHON=python3.12"; exit 1; }
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	@$(BIN)/python -m pip install --quiet --upgrade pip
	@$(BIN)/python -m pip install --quiet -e '.[dev]'
	@touch $(STAMP)

install: $(STAMP)

# API + worker + beat (Procfile.dev) on SQLite and a filesystem broker under var/, or on
# DATABASE_URL / CELERY_BROKER_URL when set. PORT (3000) picks the port; Ctrl-C stops all.
run: $(STAMP)
	@$(BIN)/python -m api.devserver

test: $(STAMP)
	@$(BIN)/python -m pytest $(PYTEST_ARGS)

lint: $(STAMP)
	@$(BIN)/ruff check api workers shared tests bench studiox_client
	@$(BIN)/ruff format --check api workers shared tests bench studiox_client

format: $(STAMP)
	@$(BIN)/ruff format api workers shared tests bench studiox_client
	@$(BIN)/ruff check --fix api workers shared tests bench studiox_client

bench: $(STAMP)
	@$(BIN)/python -m bench

# Minutes of mixed traffic under chaos (not in CI): SOAK_SECONDS=300 by default.
soak: $(STAMP)
	@$(BIN)/python -m bench.soak

clean:
	rm -rf var .pytest_cache
