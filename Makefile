# The two commands of the README: `make demo` and `make test`. Both set themselves up.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
LUIGID_PORT ?= 8082

.PHONY: demo test lint format scheduler bench clean help

help:
	@echo "make demo       two weeks of generated data through the whole pipeline into SQLite (var/)"
	@echo "make test       the whole test suite (SQLite and the local PostgreSQL)"
	@echo "make scheduler  luigid on 127.0.0.1:$(LUIGID_PORT): central scheduler and visualiser"
	@echo "make lint       ruff check and format check"
	@echo "make bench      the benchmarks of bench/ (figures in docs/benchmarks.md)"

$(STAMP): setup.cfg pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e '.[dev,cloud]'
	touch $(STAMP)

demo: $(STAMP)
	$(BIN)/python -m pipeline.demo

test: $(STAMP)
	$(BIN)/pytest

lint: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

format: $(STAMP)
	$(BIN)/ruff check --fix .
	$(BIN)/ruff format .

scheduler: $(STAMP)
	mkdir -p var/luigid/log
	$(BIN)/luigid --address 127.0.0.1 --port $(LUIGID_PORT) \
		--state-path var/luigid/state.pickle --logdir var/luigid/log

bench: $(STAMP)
	$(BIN)/python bench/bench_load.py
	$(BIN)/python bench/bench_api_fetch.py
	$(BIN)/python bench/bench_validation.py
	$(BIN)/python bench/bench_report.py

clean:
	rm -rf var/data var/warehouse*.db var/sample
