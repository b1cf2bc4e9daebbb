# Everything a fresh machine needs is set up by these targets; see README.md.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed

.PHONY: install system-deps demo test lint format bench clean lock image

install: $(STAMP) system-deps

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e '.[test,lint,fast]'
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
	$(BIN)/hadolint Dockerfile

format: $(STAMP)
	$(BIN)/ruff format sidecar tests bench scripts
	$(BIN)/ruff check --fix sidecar tests bench scripts

test: install lint
	$(BIN)/pytest $(PYTEST_ARGS)

# The image installs exactly what requirements.lock pins, by hash (the package itself with --no-deps):
# the runtime dependencies, the otel extra (so tracing.enabled works in the image), the fast extra
# (uvloop, used by `sidecar serve` when installed), the build backend.
# Regenerate it after changing dependencies in pyproject.toml; tests/test_image.py checks they agree.
lock: $(STAMP)
	$(BIN)/pip-compile --quiet --generate-hashes --allow-unsafe --strip-extras \
		--extra otel --extra fast --build-deps-for wheel --no-emit-index-url --no-emit-find-links \
		--output-file requirements.lock pyproject.toml

# Builds with whichever of docker or buildah (daemonless) is installed.
IMAGE  ?= session-sidecar:$(shell sed -n 's/^__version__ = "\(.*\)"/\1/p' sidecar/__init__.py)
ENGINE ?= $(shell if docker info >/dev/null 2>&1; then echo docker; \
	elif command -v buildah >/dev/null 2>&1; then echo buildah; \
	elif command -v docker >/dev/null 2>&1; then echo docker; fi)
image:
	@test -n "$(ENGINE)" || { echo "make image: neither docker nor buildah is installed" >&2; exit 1; }
	$(if $(filter buildah,$(ENGINE)),buildah bud --layers,$(ENGINE) build) -t $(IMAGE) .

bench: install
	$(BIN)/python -m bench

clean:
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache *.egg-info
