# Two commands: `make demo` and `make test`. Both create the environment first.
PYTHON ?= python3
VENV   := .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.installed

.PHONY: demo test env lint bench clean

$(STAMP): pyproject.toml constraints.txt
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -c constraints.txt -e ".[test,bench,ingest]"
	touch $(STAMP)

env: $(STAMP)

demo: $(STAMP)
	$(VENV)/bin/snr-moe run configs/demo.yaml --out demo-output --overwrite

test: $(STAMP)
	$(PY) -m pytest -q -p no:cacheprovider tests

lint: $(STAMP)
	$(VENV)/bin/ruff check snr_moe_dask tests benchmarks
	$(VENV)/bin/ruff format --check snr_moe_dask tests benchmarks

bench: $(STAMP)
	$(PY) -m benchmarks --n 100000 --out benchmarks/results/bench-100k.json

clean:
	rm -rf $(VENV) demo-output
