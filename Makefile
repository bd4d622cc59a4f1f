# The two set-up commands: `make demo` and `make test`. Both create or update .venv first.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed-stamp
DEMO_DIR := runs/demo

.PHONY: demo test bench clean

$(PY):
	$(PYTHON) -m venv $(VENV)

# torch==2.13.0 first: its CPU build lies on this kind of machine; an unpinned torch would
# pull a multi-GB CUDA build.
$(STAMP): pyproject.toml | $(PY)
	$(PY) -m pip install --quiet torch==2.13.0
	$(PY) -m pip install --quiet -e ".[test]"
	touch $(STAMP)

demo: $(STAMP)
	mkdir -p $(DEMO_DIR)
	$(VENV)/bin/prunetune compress --model resnet --dataset fashion_mnist_demo --scorer l1 \
		--pruner channel --ratio 0.5 --distiller hinton --epochs 3 --out $(DEMO_DIR)/student.pt
	$(VENV)/bin/prunetune evaluate $(DEMO_DIR)/student.pt

test: $(STAMP)
	$(VENV)/bin/python -m pytest -q

clean:
	rm -rf $(VENV) build *.egg-info runs
