# Two commands do everything on a fresh machine:
#   make train          create/update .venv, train the seed CNN (quick smoke run) and evaluate it
#   make train FULL=1   the seed CNN's full recipe (experiments/configs/seed_cnn_onecycle.py);
#                       writes results/seed_cnn_onecycle.json
#   make test           create/update .venv, lint (ruff check, ruff format --check) and run the test suite
#   make test-fast      the same lint, then the unit tests only (not marked slow or real_data): the inner loop
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
# The dataset: $FER2013_ZIP if set, else data/fer2013.zip, else the shared copy beside the checkout.
FER2013_ZIP ?= $(firstword $(wildcard data/fer2013.zip ../shared/datasets/fer2013.zip) data/fer2013.zip)
export FER2013_ZIP
# glibc's malloc backs large buffers with transparent huge pages: a JAX train step on the CPU
# otherwise faults its temporaries in 4 KB at a time (about 15% of the step). Older glibcs ignore it.
GLIBC_TUNABLES ?= glibc.malloc.hugetlb=1
export GLIBC_TUNABLES

.PHONY: env train test test-fast lint download clean

env: $(STAMP)

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[dev,tfds]'
	touch $(STAMP)

$(FER2013_ZIP): | $(STAMP)
	$(BIN)/fer-jax download --dest $(dir $(FER2013_ZIP))

download: $(FER2013_ZIP)

train: $(STAMP) $(FER2013_ZIP)
	$(if $(FULL),$(BIN)/python -m experiments.run seed_cnn_onecycle --data $(FER2013_ZIP) \
		--results results/seed_cnn_onecycle.json $(ARGS),$(BIN)/fer-jax train --data $(FER2013_ZIP) --quick $(ARGS))

lint: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

# Test processes (pytest-xdist): most of a test's time is single-threaded (compiling, starting processes),
# so two workers keep a 2-core machine busy. PYTEST_WORKERS=0 runs in this process.
PYTEST_WORKERS ?= 2

test: lint
	$(BIN)/python -m pytest -n $(PYTEST_WORKERS) --dist worksteal $(PYTEST_ARGS)

test-fast: lint
	$(BIN)/python -m pytest -n $(PYTEST_WORKERS) --dist worksteal -m "not slow and not real_data" $(PYTEST_ARGS)

clean:
	rm -rf $(VENV) runs .pytest_cache
