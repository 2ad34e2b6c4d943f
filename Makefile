# Two commands do all the set-up on a fresh machine:  `make demo`  and  `make test`.
PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin
# Where the shared sample data lives (videos, DAVIS, human responses...). Tests that need it skip without it.
export VITO_DATA ?= $(abspath ../shared/data)

.PHONY: demo test bench install clean

$(BIN)/vito: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e ".[dev]"
	touch $@

install: $(BIN)/vito

demo: $(BIN)/vito
	$(BIN)/vito demo

test: $(BIN)/vito
	$(BIN)/python -m pytest -q

bench: $(BIN)/vito
	$(BIN)/python -m benchmarks.run_all

clean:
	rm -rf $(VENV) runs
