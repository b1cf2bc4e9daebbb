# Everything a fresh machine needs is set up by these targets; see README.md.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed

.PHONY: install system-deps demo test lint format bench clean

install: $(STAMP) system-deps

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e '.[test,lint]'
	touch $(STAMP)

# redis-server comes from Debian's packages; PostgreSQL's server binaries are expected
# (pg_config --bindir tells where). Nothing is installed when already present.
system-deps:
	@scripts/ensure-system-deps.sh

demo: install
	$(BIN)/sidecar demo

lint: $(STAMP)
	$(BIN)/ruff check sidecar tests bench scripts
	$(BIN)/ruff format --check sidecar tests bench scripts
	$(BIN)/mypy

format: $(STAMP)
	$(BIN)/ruff format sidecar tests bench scripts
	$(BIN)/ruff check --fix sidecar tests bench scripts

test: install lint
	$(BIN)/pytest $(PYTEST_ARGS)

bench: install
	$(BIN)/python -m bench

clean:
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache *.egg-info
