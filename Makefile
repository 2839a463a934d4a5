# Two commands do all the set-up on a fresh machine (Python 3.10+ with venv):
#   make demo   – the main job end to end on the bundled examples (incl. the Llama Guard 2 training walkthrough)
#   make test   – the whole test suite
PYTHON ?= python3
VENV   ?= .venv
BIN     = $(VENV)/bin
STAMP   = $(VENV)/.installed

.PHONY: demo test venv clean

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e '.[test]'
	touch $(STAMP)

venv: $(STAMP)

demo: $(STAMP)
	bash examples/demo.sh
	BIN=$(abspath $(BIN)) bash examples/llama-guard-2/run.sh

test: $(STAMP)
	$(BIN)/python -m pytest -q

clean:
	rm -rf $(VENV) demo-out examples/llama-guard-2/work .pytest_cache .hypothesis
