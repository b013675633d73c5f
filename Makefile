# Oversight: `make demo` runs the product with its demo, `make test` runs the tests.
# With no DATABASE_URL / REDIS_URL, embedded PostgreSQL and Redis start under var/; `make test`
# stops again the ones it started (tests/with_services.py), `make demo` on Ctrl-C.
PYTHON ?= python3.11
VENV   ?= .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.installed

.PHONY: demo test test-fast ensure-browser lint typecheck bench bench-safety bench-scoring bench-review services stop-services clean-var

$(STAMP): requirements.txt requirements-dev.txt
	@test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -r requirements-dev.txt
	@touch $(STAMP)

demo: $(STAMP)
	$(PY) manage.py run_demo

test: $(STAMP) ensure-browser
	OVERSIGHT_REDIS_PREFIX=oversight-test $(PY) -m tests.with_services pytest -q $(PYTEST_ARGS)

test-fast: $(STAMP)
	OVERSIGHT_REDIS_PREFIX=oversight-test $(PY) -m tests.with_services pytest -q -m "not browser and not worker" $(PYTEST_ARGS)

# Chromium for the browser tests: OVERSIGHT_CHROMIUM, `chromium` on PATH or /usr/bin/chromium;
# with none, apt-get installs it as root on Debian, otherwise one line says what to install.
ensure-browser: $(STAMP)
	$(PY) -m tests.ensure_browser

lint: $(STAMP)
	$(VENV)/bin/ruff check .

# mypy with django-stubs (config in pyproject.toml). The plugin loads the settings; placeholder
# URLs keep that from starting the embedded servers (nothing connects to them).
typecheck: $(STAMP)
	DATABASE_URL=$${DATABASE_URL:-postgresql://typecheck@127.0.0.1:1/typecheck} \
	REDIS_URL=$${REDIS_URL:-redis://127.0.0.1:1/0} $(VENV)/bin/mypy

bench: $(STAMP)
	$(PY) -m bench.run

# Kill-switch and breaker propagation under load (4 workers), breaker evaluation cost (issue 9).
bench-safety: $(STAMP)
	$(PY) -m bench.safety

# Hosted scoring through the API and two scoring workers, next to the same models in-process (issue 10).
bench-scoring: $(STAMP)
	$(PY) -m bench.scoring

# The review queue at 1,000,000 waiting items: claim-next (1 and 32 claimers), the list page with
# its filters before and after the trigram indexes, next to raw-SQL and bare-view baselines (issue 11).
bench-review: $(STAMP)
	$(PY) -m bench.review

services: $(STAMP)
	$(PY) -m oversight.embedded up

stop-services: $(STAMP)
	$(PY) -m oversight.embedded stop

clean-var: stop-services
	$(PY) -m oversight.embedded destroy
