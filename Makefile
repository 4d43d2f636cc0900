# The two commands of the README: `make demo` and `make test`. Each builds the
# environment from nothing (venv, CPU torch first, then the package) and runs.
PYTHON ?= python3.11
VENV   ?= .venv
BIN    := $(VENV)/bin

.PHONY: demo test env lint

$(BIN)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	# CPU torch first: a bare `torch` requirement would resolve to a multi-GB CUDA build.
	$(BIN)/pip install --quiet --disable-pip-version-check torch==2.13.0
	$(BIN)/pip install --quiet --disable-pip-version-check -e '.[test,onnx,mcp,langgraph,openai-agents]'
	touch $@

env: $(BIN)/.installed

demo: env
	HF_HUB_OFFLINE=1 $(BIN)/memory demo

test: env
	$(BIN)/ruff check .
	$(BIN)/lint-imports
	HF_HUB_OFFLINE=1 $(BIN)/pytest -q

lint: env
	$(BIN)/ruff check .
