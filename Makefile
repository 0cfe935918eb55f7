# Two commands do everything on a fresh machine: `make demo` and `make test`.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed-stamp

.PHONY: venv demo simulate test lint format clean

# The C extension is built by the install: a change to its source installs again.
$(STAMP): pyproject.toml bridge/sink/_avro_native.c bridge/mlink/_framing_native.c
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[dev]'
	touch $@

venv: $(STAMP)

demo: $(STAMP)
	$(BIN)/mlink-bridge demo

simulate: $(STAMP)
	$(BIN)/mlink-bridge simulate

lint: $(STAMP)
	$(BIN)/ruff check bridge transforms tests tools benchmarks
	$(BIN)/ruff format --check bridge transforms tests tools benchmarks
	$(BIN)/mypy

# pytest exits 5 when it collected nothing: that must fail, and say so.
test: lint
	@$(BIN)/python -m pytest -W error; rc=$$?; \
	if [ $$rc -eq 5 ]; then echo "make test: no tests were collected" >&2; exit 1; fi; \
	exit $$rc

format: $(STAMP)
	$(BIN)/ruff format bridge transforms tests tools benchmarks
	$(BIN)/ruff check --fix bridge transforms tests tools benchmarks

clean:
	rm -rf $(VENV) .mypy_cache .ruff_cache .pytest_cache .hypothesis
