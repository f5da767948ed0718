# Emergence: `make run` serves the app, `make test` runs the whole suite.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
HOST ?= 127.0.0.1
PORT ?= 8000
DAPHNE_FLAGS := --ping-interval 20 --ping-timeout 60 --application-close-timeout 10 \
	--websocket_connect_timeout 15
export TEST_DATABASE_URL ?= postgres://postgres@127.0.0.1:5432/emergence
export TEST_REDIS_URL ?= redis://127.0.0.1:6379/0

.PHONY: run test test-py test-js lint format migrate demo-user clean venv venv-dev bench \
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

migrate: venv
	DEBUG=$${DEBUG:-1} $(BIN)/python manage.py migrate --noinput

demo-user: migrate
	DEBUG=$${DEBUG:-1} $(BIN)/python manage.py demo_user --url http://$(HOST):$(PORT)/

run: demo-user
	DEBUG=$${DEBUG:-1} $(BIN)/python manage.py collectstatic --noinput -v0
	DEBUG=$${DEBUG:-1} exec $(BIN)/python -m emergence.server -b $(HOST) -p $(PORT) \
		$(DAPHNE_FLAGS) emergence.asgi:application

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

# Benchmarks (bench/): Emergence against its baselines, every figure, ~45 min;
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
