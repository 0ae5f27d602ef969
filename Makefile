# Set-up and entry points. Every target creates/updates .venv (Python 3.10) first; all idempotent.
SHELL := /bin/bash
VENV  := .venv
PY    := $(VENV)/bin/python
STAMP := $(VENV)/.paddleqa-installed
# Paddle Lite publishes wheels only up to Python 3.10, so the venv must be 3.10.
PYTHON310 ?= $(shell for p in python3.10 $$HOME/.pyenv/versions/3.10*/bin/python /root/.pyenv/versions/3.10*/bin/python /usr/bin/python3.10 /usr/local/bin/python3.10; do \
	  if command -v $$p >/dev/null 2>&1 && $$p -c 'import sys; sys.exit(sys.version_info[:2] != (3, 10))' 2>/dev/null; then command -v $$p; break; fi; done)

.PHONY: install test quickstart bench clean-venv

$(PY):
	@if [ -z "$(PYTHON310)" ]; then echo "error: Python 3.10 not found (Paddle Lite has no wheels for newer Pythons). Install it (e.g. 'pyenv install 3.10' or 'apt-get install python3.10-venv') or run: make PYTHON310=/path/to/python3.10" >&2; exit 1; fi
	$(PYTHON310) -m venv $(VENV)

$(STAMP): $(PY) setup.py requirements.txt constraints.txt
	$(PY) -m pip install --quiet -c constraints.txt -e ".[test]"
	@touch $(STAMP)

install:
	@if [ -x "$(PY)" ] && ! $(PY) -c 'import sys; sys.exit(sys.version_info[:2] != (3, 10))'; then echo "recreating $(VENV): it is not Python 3.10"; rm -rf $(VENV); fi
	@$(MAKE) --no-print-directory $(STAMP)

test: install
	$(PY) -m pytest -q tests

quickstart: install
	$(VENV)/bin/paddleqa run configs/quickstart.yaml

# The headline benchmark: configs/cmrc2018.yaml end to end (teacher, autocompress's chosen
# student, int8, Lite export, latency, report; resumable); writes BENCHMARKS.md and
# benchmarks/results.json. On 2 cores: teacher 50 min, then search + chain 63 min with a warm
# teacher cache (about 2 hours from an empty run folder and cache, not measured in one go).
bench: install
	$(PY) benchmarks/pipeline.py

clean-venv:
	rm -rf $(VENV)
