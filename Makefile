# The two set-up commands: `make demo` and `make test`. Both create or update .venv first.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed-stamp
DEMO_RUN := demo-$(shell date +%Y%m%d-%H%M%S)

.PHONY: demo test bench clean

$(PY):
	$(PYTHON) -m venv $(VENV)

# torch==2.13.0 first: its CPU build lies on this kind of machine; an unpinned torch would
# pull a multi-GB CUDA build.
$(STAMP): pyproject.toml | $(PY)
	$(PY) -m pip install --quiet torch==2.13.0
	$(PY) -m pip install --quiet -e ".[test]"
	touch $(STAMP)

# A small search on the bundled data: 12 per-layer plans within 25% of the teacher's MACs.
demo: $(STAMP)
	$(VENV)/bin/prunetune search --model resnet --dataset fashion_mnist_demo --space per_layer \
		--max-macs 0.25 --num-samples 12 --epochs 2 --name $(DEMO_RUN)
	$(VENV)/bin/prunetune evaluate runs/$(DEMO_RUN)/best_student.pt
	$(VENV)/bin/prunetune leaderboard show $(DEMO_RUN)

test: $(STAMP)
	$(VENV)/bin/python -m pytest -q

clean:
	rm -rf $(VENV) build *.egg-info runs

# The README's benchmark tables (about 1.5 hours on 2 cores). quality.py reads full
# Fashion-MNIST from FASHION_MNIST (IDX files; Debian's dataset-fashion-mnist by default).
FASHION_MNIST ?= $(firstword $(wildcard ../shared/data/fashion-mnist) /usr/share/datasets/fashion-mnist)

bench: $(STAMP)
	$(PY) benchmarks/compress_resnet.py
	$(PY) benchmarks/speed.py
	$(PY) benchmarks/quality.py --data $(FASHION_MNIST)
