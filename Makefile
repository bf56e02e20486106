# One-command entry points for a fresh machine with only python3.
#   make train   - create .venv, install, train the default recipe
#   make test    - create .venv, install, run the test suite
# Pass Hydra overrides to train with ARGS, e.g. make train ARGS="model=unet_small aug=heavy".

PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed
ARGS   ?=

.PHONY: install train smoke test bench ui clean

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e ".[dev,sweep,export,bioimageio]"
	touch $(STAMP)

install: $(STAMP)

train: $(STAMP)
	$(BIN)/python -m segexp train $(ARGS)

smoke: $(STAMP)
	$(BIN)/python -m segexp train debug=smoke $(ARGS)

test: $(STAMP)
	$(BIN)/python -m pytest -q

bench: $(STAMP)
	$(BIN)/python -m bench.run_all

ui: $(STAMP)
	$(BIN)/mlflow ui --backend-store-uri sqlite:///$(CURDIR)/outputs/mlflow.db

clean:
	rm -rf $(VENV) .pytest_cache
