# The two commands README promises: `make demo` and `make test`. Both do every set-up step on a
# fresh machine and skip what is already done (stamp files and cache markers).
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed

.PHONY: demo test lint typecheck duplicates setup clean-broker

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	$(BIN)/python -m pip install -q -e '.[dev]'
	touch $(STAMP)

setup: $(STAMP)
	$(BIN)/streamrec kafka fetch
	$(BIN)/streamrec data fetch
	@scripts/ensure-compose || true
	@scripts/ensure-promtool $(BIN)

demo: setup
	$(BIN)/streamrec demo

lint: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

# mypy strict over the installed package layout (scripts/typecheck says why it needs its own tree).
typecheck: $(STAMP)
	scripts/typecheck

# Code written twice, listed for a reader (the workplace's `duplicates` tool; never fails the run).
duplicates:
	@if command -v duplicates >/dev/null 2>&1; then duplicates --most 12 --seconds 30; \
	else echo "duplicates: tool not installed here, skipped"; fi

test: setup lint typecheck duplicates
	$(BIN)/python -m pytest -q

