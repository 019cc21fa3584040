# The two entry points: `make demo` and `make test`. Both create or reuse .venv/.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.fitcast-installed

.PHONY: demo test lint install clean

$(STAMP): pyproject.toml Makefile package-lock.json
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	# torch first and pinned: the CPU wheel on disk (a looser pin pulls a multi-GB CUDA build)
	$(BIN)/python -m pip install -q torch==2.13.0 uv
	# the rest through uv (parallel downloads: seconds instead of minutes; the torch above already
	# satisfies the pin, so uv keeps it); pip if uv cannot reach the index
	$(BIN)/uv pip install -q --python $(BIN)/python -e ".[server,openvino,ray,mobile,test]" \
		|| $(BIN)/python -m pip install -q -e ".[server,openvino,ray,mobile,test]"
	# the strict HLS parser the tests check every playlist with (npm, package-lock.json)
	if command -v npm >/dev/null 2>&1; then npm ci --ignore-scripts --no-audit --no-fund --loglevel=error; fi
	touch $(STAMP)

install: $(STAMP)

demo: $(STAMP)
	$(BIN)/python scripts/demo.py

test: $(STAMP)
	$(BIN)/python -m pytest -q

# ruff (pyproject's rules) on everything, mypy on the core and the player
lint: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/mypy

clean:
	rm -rf $(VENV) demo-out .pytest_cache
