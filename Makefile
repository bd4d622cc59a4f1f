# The two set-up commands: `make demo` and `make test`. Both create or update .venv first.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed-stamp
DEMO_RUN := demo-$(shell date +%Y%m%d-%H%M%S)
# The exact versions the suite passed with; `make test-latest` tries the newest allowed ones.
LOCK := requirements/lock.txt
LATEST := .venv-latest
TORCH := torch==2.13.0

.PHONY: demo test test-latest lock bench clean

$(PY):
	$(PYTHON) -m venv $(VENV)

# torch==2.13.0 first: its CPU build lies on this kind of machine; an unpinned torch would
# pull a multi-GB CUDA build.
$(STAMP): pyproject.toml $(LOCK) | $(PY)
	$(PY) -m pip install --quiet -c $(LOCK) $(TORCH)
	$(PY) -m pip install --quiet -c $(LOCK) -e ".[test]"
	touch $(STAMP)

# A small search on the bundled data: 12 per-layer plans within 25% of the teacher's MACs.
demo: $(STAMP)
	$(VENV)/bin/prunetune search --model resnet --dataset fashion_mnist_demo --space per_layer \
		--max-macs 0.25 --num-samples 12 --epochs 2 --name $(DEMO_RUN)
	$(VENV)/bin/prunetune evaluate runs/$(DEMO_RUN)/best_student.pt
	$(VENV)/bin/prunetune leaderboard show $(DEMO_RUN)

test: $(STAMP)
	$(VENV)/bin/python -m pytest -q

# The newest versions pyproject.toml allows, in a venv of their own: a new optuna or ray
# release shows up here as a failing command, not as a broken user. torch stays $(TORCH), the
# machine's CPU build (a newer one is a multi-GB CUDA download). Run it on a schedule; when it
# passes, `make lock` takes its versions.
test-latest:
	rm -rf $(LATEST)
	$(PYTHON) -m venv $(LATEST)
	$(LATEST)/bin/python -m pip install --quiet $(TORCH)
	$(LATEST)/bin/python -m pip install --quiet --upgrade --upgrade-strategy eager -e ".[test]" $(TORCH)
	$(LATEST)/bin/python -m pip list --format=freeze | grep -iE '^(optuna|ray|torch|torch-pruning|pyarrow|pluggy|numpy)=='
	PRUNETUNE_UNLOCKED=1 $(LATEST)/bin/python -m pytest -q

# Writes the lock from the versions in .venv-latest (after a green `make test-latest`).
lock:
	{ sed -n '1,2p' $(LOCK); $(LATEST)/bin/python -m pip freeze --exclude-editable | grep -v '^prunetune' \
		| sed 's/^torch==\([0-9.]*\)+cpu$$/torch==\1/'; } > $(LOCK).new
	mv $(LOCK).new $(LOCK)

clean:
	rm -rf $(VENV) $(LATEST) build *.egg-info runs

# The README's benchmark tables (about 1.5 hours on 2 cores). quality.py reads full
# Fashion-MNIST from FASHION_MNIST (IDX files; Debian's dataset-fashion-mnist by default).
FASHION_MNIST ?= $(firstword $(wildcard ../shared/data/fashion-mnist) /usr/share/datasets/fashion-mnist)

bench: $(STAMP)
	$(PY) benchmarks/compress_resnet.py
	$(PY) benchmarks/speed.py
	$(PY) benchmarks/quality.py --data $(FASHION_MNIST)
