# earthcrafter: two commands.
#   make run   - set up .venv if needed, then run every implemented stage on conf/base
#   make test  - set up .venv if needed, then the test suite
#   make dry-run ENV=paper ARGS="--batch 2"  - does every model of a configuration train and fit here
VENV := .venv
BIN := $(VENV)/bin
export KEDRO_DISABLE_TELEMETRY := 1
export DO_NOT_TRACK := 1
export MPLBACKEND := Agg
export PYTHONUNBUFFERED := 1

.PHONY: setup run test test-gpu dry-run bench ui clean-data

$(VENV)/.installed: pyproject.toml scripts/setup.sh
	bash scripts/setup.sh

setup: $(VENV)/.installed

run: setup
	$(BIN)/kedro run
	$(BIN)/earthcrafter info

test: setup
	$(BIN)/pytest

test-gpu: setup
	$(BIN)/pytest -m gpu

# a few training steps of every model of conf/$(ENV) on synthetic tiles, e.g.
#   make dry-run ENV=paper ARGS="--batch 2 --device cuda"
dry-run: setup
	$(BIN)/earthcrafter dry-run --env $(or $(ENV),local) $(ARGS)

ui: setup
	$(BIN)/mlflow ui --backend-store-uri sqlite:///mlflow.db

clean-data:
	find data -mindepth 2 -not -path 'data/00_external*' -not -name .gitkeep -delete
