# The two commands README promises: `make demo` and `make test`. Both do every set-up step on a
# fresh machine and skip what is already done (stamp files and cache markers).
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed

.PHONY: demo test check lint setup clean-broker

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

test: setup lint
	$(BIN)/python -m pytest -q

check: test
	$(BIN)/mypy streamrec/ stream/ models/ index/
