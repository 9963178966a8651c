# The two commands of the README: `make demo` and `make test`. Both set themselves up.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
DEV_STAMP := $(VENV)/.installed-dev
PROD_STAMP := $(VENV)/.installed
LUIGID_PORT ?= 8082
# `make demo DATABASE_URL=postgresql://...` runs the demo against another warehouse.
DATABASE_URL ?=

.PHONY: install demo test lint format scheduler bench bench-issue11 clean help

help:
	@echo "make install    the virtual environment with the pipeline only: what a deployment needs"
	@echo "make demo       two weeks of generated data through the whole pipeline, all under var/demo/"
	@echo "make test       the whole test suite (SQLite, the local PostgreSQL and MariaDB), 2 workers"
	@echo "make scheduler  luigid on 127.0.0.1:$(LUIGID_PORT): central scheduler and visualiser"
	@echo "make lint       ruff check, ruff format check and the import-layer contract"
	@echo "make bench      the benchmarks of bench/ (figures in docs/benchmarks.md)"
	@echo "make bench-issue11  issue 11's goals 1-8 in one run, each figure beside its baseline (PEER_DIR=...)"

$(VENV)/bin/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip

# Production: the package and its runtime dependencies, no test tools, no demo data.
$(PROD_STAMP): $(VENV)/bin/python setup.cfg pyproject.toml
	$(BIN)/pip install --quiet -e .
	touch $(PROD_STAMP)

# Development: the package with the test, lint, demo and object-store extras.
$(DEV_STAMP): $(VENV)/bin/python setup.cfg pyproject.toml
	$(BIN)/pip install --quiet -e '.[dev,cloud]'
	touch $(DEV_STAMP) $(PROD_STAMP)

install: $(PROD_STAMP)

demo: $(DEV_STAMP)
	$(BIN)/python -m devtools.demo $(if $(DATABASE_URL),--database-url '$(DATABASE_URL)')

# Two workers (xdist): the three backends take ~9 min this way on 2 cores, twice that in one process. Each
# test's warehouse has schema names of its own, so workers never share tables. `make test PYTEST_ARGS=-n0`
# runs in one process.
PYTEST_ARGS ?= -n 2
test: $(DEV_STAMP)
	$(BIN)/pytest $(PYTEST_ARGS)

lint: $(DEV_STAMP)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/lint-imports

format: $(DEV_STAMP)
	$(BIN)/ruff check --fix .
	$(BIN)/ruff format .

# luigid with its task history (luigid.cfg): `python -m pipeline luigid` is luigid, its history working on
# SQLAlchemy 2 (pipeline/orchestration/luigid.py).
scheduler: $(PROD_STAMP)
	mkdir -p var/luigid/log
	env LUIGI_CONFIG_PATH=$(CURDIR)/luigid.cfg $(BIN)/python -m pipeline luigid --address 127.0.0.1 \
		--port $(LUIGID_PORT) --state-path var/luigid/state.pickle --logdir var/luigid/log

# PYTHONPATH=.: the benchmarks use devtools/ (sample data, the simulator), which is not installed.
bench: $(DEV_STAMP)
	PYTHONPATH=. $(BIN)/python bench/bench_load.py
	PYTHONPATH=. $(BIN)/python bench/bench_api_fetch.py
	PYTHONPATH=. $(BIN)/python bench/bench_validation.py
	PYTHONPATH=. $(BIN)/python bench/bench_report.py

# Issue 11's goals in one run (bench/issue11.py): `make bench-issue11 BENCH_ARGS="--quick --goals 3,4,5"`;
# PEER_DIR=<the dlt + dbt peer's folder> adds the peer to goal 1 (without it, goal 1 says it was skipped).
BENCH_ARGS ?=
bench-issue11: $(DEV_STAMP)
	PYTHONPATH=. $(BIN)/python bench/issue11.py $(BENCH_ARGS)

clean:
	rm -rf var/demo var/data var/warehouse*.db var/sample
