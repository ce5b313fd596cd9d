# Mailwright: the two commands of the README, plus lint and bench (bench/all.sh).
SHELL := /bin/bash
PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV := .venv
STAMP := $(VENV)/.installed

.PHONY: run test lint bench deps venv clean

$(STAMP): pyproject.toml
	test -x $(VENV)/bin/python || $(PYTHON) -m venv $(VENV)
	$(VENV)/bin/pip install --quiet --disable-pip-version-check -e '.[dev]'
	touch $(STAMP)

venv: $(STAMP)

## make run: start the daemon in the foreground on 127.0.0.1:2525, queue under ./var (no root)
run: $(STAMP)
	mkdir -p var
	$(VENV)/bin/mailwright --config etc/mailwright.toml serve

## make test: install what the tests need, then run the whole suite
test: deps $(STAMP)
	$(VENV)/bin/python -m pytest -q

deps:
	scripts/install-test-deps.sh

lint: $(STAMP)
	$(VENV)/bin/ruff check .
	$(VENV)/bin/mypy
	PYTHONPATH=src $(VENV)/bin/lint-imports  # the layers contract in pyproject.toml

bench: deps $(STAMP)
	bench/all.sh

clean:
	rm -rf $(VENV) var .pytest_cache .mypy_cache .ruff_cache
