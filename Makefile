# Mailwright: the two commands of the README, plus lint, bench (bench/all.sh) and fuzz.
SHELL := /bin/bash
PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV := .venv
STAMP := $(VENV)/.installed

.PHONY: run test lint bench fuzz fuzz-merge deps venv clean

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

## make fuzz: run each fuzz target (fuzz/*.py) for FUZZ_SECONDS (default 60); the inputs that
## reach new code are added to fuzz/corpus/<target>, crash reproducers go to fuzz/crashes
## (a crash stops that target only; make fuzz fails at the end)
FUZZ_SECONDS ?= 60
FUZZ_TARGETS ?= $(sort $(basename $(notdir $(wildcard fuzz/[a-z]*.py))))

fuzz: $(STAMP)
	mkdir -p fuzz/crashes
	failed=""; \
	for t in $(FUZZ_TARGETS); do \
	  echo "== fuzz/$$t.py for $(FUZZ_SECONDS) s"; \
	  $(VENV)/bin/python fuzz/$$t.py fuzz/corpus/$$t -max_total_time=$(FUZZ_SECONDS) \
	    -timeout=20 -print_final_stats=1 -artifact_prefix=fuzz/crashes/$$t- || failed="$$failed $$t"; \
	done; \
	test -z "$$failed" || { echo "fuzz: crashes in$$failed (see fuzz/crashes)"; exit 1; }

## make fuzz-merge: minimise each target's corpus (libFuzzer -merge=1, fuzz/merge.sh): the named
## seeds and crash reproducers stay, of the inputs the fuzzer added only those reaching new code
fuzz-merge: $(STAMP)
	fuzz/merge.sh $(VENV)/bin/python $(FUZZ_TARGETS)

clean:
	rm -rf $(VENV) var .pytest_cache .mypy_cache .ruff_cache
