# Emergence: `make run` serves the embedded demo, `make test` runs the whole suite.
# Production: `make migrate` once per deploy, then `make serve` for every instance.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
HOST ?= 127.0.0.1
PORT ?= 8000
DAPHNE_FLAGS := --ping-interval 20 --ping-timeout 60 --application-close-timeout 15 \
	--websocket_connect_timeout 15
# More Daphne options for `make serve`, e.g. SERVE_ARGS=--proxy-headers behind a proxy.
SERVE_ARGS ?=
STATIC_MANIFEST := $(or $(STATIC_ROOT),staticfiles)/staticfiles.json
export TEST_DATABASE_URL ?= postgres://postgres@127.0.0.1:5432/emergence
export TEST_REDIS_URL ?= redis://127.0.0.1:6379/0

.PHONY: run serve migrate static test test-py test-js lint format clean venv venv-dev bench \
	bench-quick faults faults-quick

# Two stamps: `make run` needs the runtime only (requirements.txt, as in the image);
# tests, bench and lint add requirements-dev.txt on top of it.
$(BIN)/.runtime: requirements.txt
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q -r requirements.txt
	touch $@

$(BIN)/.dev: $(BIN)/.runtime requirements-dev.txt
	$(BIN)/pip install -q -r requirements-dev.txt
	touch $@

venv: $(BIN)/.runtime

venv-dev: $(BIN)/.dev

# The embedded demo: SQLite, the in-memory layer, one process, the local settings
# (DEBUG on, a development key) and a demo login. It never touches a configured
# database: with DATABASE_URL or REDIS_URL set it stops and points at `make serve`.
# DEBUG serves the static files from static/ directly: no collectstatic.
run: export DJANGO_SETTINGS_MODULE = emergence.settings_local
run: venv
	@if [ -n "$$DATABASE_URL$$REDIS_URL" ]; then \
		echo "make run is the embedded demo (SQLite, DEBUG on, a demo superuser) and"; \
		echo "will not run against DATABASE_URL/REDIS_URL. For them: make migrate, then"; \
		echo "make serve (docs/OPERATIONS.md); or unset both to try the demo."; \
		exit 2; \
	fi
	$(BIN)/python manage.py migrate --noinput -v0
	$(BIN)/python manage.py demo_user --url http://$(HOST):$(PORT)/
	exec $(BIN)/python -m emergence.server -b $(HOST) -p $(PORT) $(DAPHNE_FLAGS) \
		emergence.asgi:application

# Production settings (emergence.settings: DEBUG off; SECRET_KEY required, a
# development one refused). One instance: no migrate, no demo user. Run
# `make migrate` first (once per deploy, from one place).
serve: export DJANGO_SETTINGS_MODULE = emergence.settings
serve: venv $(STATIC_MANIFEST)
	exec $(BIN)/python -m emergence.server -b $(HOST) -p $(PORT) $(DAPHNE_FLAGS) \
		$(SERVE_ARGS) emergence.asgi:application

# The deploy step: migrations under a PostgreSQL advisory lock, so that two
# deploys starting at once do not both create tables (the second waits, then has
# nothing to do); and the static files, before instances on this host start.
migrate: export DJANGO_SETTINGS_MODULE = emergence.settings
migrate: venv $(STATIC_MANIFEST)
	$(BIN)/python manage.py migrate_locked --noinput

# Hashed, compressed static files for the production settings (whitenoise),
# collected again when a source file is newer than the manifest.
static: $(STATIC_MANIFEST)
$(STATIC_MANIFEST): export DJANGO_SETTINGS_MODULE = emergence.settings
$(STATIC_MANIFEST): $(shell find static -type f) | venv
	$(BIN)/python manage.py collectstatic --noinput -v0

# Both suites always run; the target fails when either of them failed.
test: venv-dev
	@js=0; py=0; \
	node --test tests/js/ || js=$$?; \
	$(BIN)/pytest || py=$$?; \
	if [ $$js -ne 0 ] || [ $$py -ne 0 ]; then \
		echo "make test: FAILED (node --test exit $$js, pytest exit $$py)"; exit 1; \
	fi

test-py: venv-dev
	$(BIN)/pytest

# The web client's pure logic (static/chat/app.js) under node's own test runner.
test-js:
	node --test tests/js/

# Benchmarks (bench/): Emergence against its baselines, every figure, ~50 min;
# writes bench/RESULTS.md and bench/results/latest.json. The quick form is CI's.
bench: venv-dev
	$(BIN)/python -m bench.run

bench-quick: venv-dev
	$(BIN)/python -m bench.run --quick --out test-artifacts/bench

# Fault injection (bench/faults.py): real PostgreSQL, Redis and process faults.
faults: venv-dev
	$(BIN)/python -m bench.faults --json bench/results/faults.json

faults-quick: venv-dev
	$(BIN)/python -m bench.faults --quick --json test-artifacts/bench/faults-quick.json

lint: venv-dev
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

format: venv-dev
	$(BIN)/ruff format .
	$(BIN)/ruff check --fix .

clean:
	rm -rf $(VENV) staticfiles .pytest_cache .ruff_cache
