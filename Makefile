# Oversight: `make demo` runs the product with its demo, `make test` runs the tests.
# With no DATABASE_URL / REDIS_URL, embedded PostgreSQL and Redis start under var/.
PYTHON ?= python3.11
VENV   ?= .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.installed

.PHONY: demo test test-fast lint bench services stop-services clean-var

$(STAMP): requirements.txt requirements-dev.txt
	@test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -r requirements-dev.txt
	@touch $(STAMP)

demo: $(STAMP)
	$(PY) manage.py run_demo

test: $(STAMP)
	OVERSIGHT_REDIS_PREFIX=oversight-test $(PY) -m pytest -q $(PYTEST_ARGS)

test-fast: $(STAMP)
	OVERSIGHT_REDIS_PREFIX=oversight-test $(PY) -m pytest -q -m "not browser and not worker" $(PYTEST_ARGS)

lint: $(STAMP)
	$(VENV)/bin/ruff check .

bench: $(STAMP)
	$(PY) -m bench.run

services: $(STAMP)
	$(PY) -m oversight.embedded up

stop-services: $(STAMP)
	$(PY) -m oversight.embedded stop

clean-var: stop-services
	$(PY) -m oversight.embedded destroy
