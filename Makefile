# The two commands of the README:
#   make quickstart   set up, then train a small agent on this machine and show the result
#   make test         set up, then lint and run the test suite (what CI runs)
SHELL := /bin/bash
PY := .venv/bin/python

.PHONY: setup test lint quickstart

setup:
	@bash scripts/setup.sh

lint: setup
	.venv/bin/ruff check .

test: lint
	$(PY) -m pytest -q

quickstart: setup
	bash scripts/quickstart.sh
