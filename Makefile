# Every gate is a target; `make ci` runs them all, the way .ci/run does.
VENV ?= .venv
PYTHON ?= python3
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed-dev

.PHONY: install lock run serve test test-cluster test-newest lint format typecheck ci bench profile soak stress clean

$(STAMP): pyproject.toml requirements.lock
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	# The locked runtime versions first (what the image installs), then the package and dev tools.
	$(BIN)/pip install --quiet --require-hashes --no-deps -r requirements.lock
	$(BIN)/pip install --quiet -e '.[dev]'
	touch $(STAMP)

install: $(STAMP)

lock: install  ## requirements.lock: every runtime dependency pinned with hashes (the image installs it)
	$(BIN)/uv pip compile pyproject.toml --universal --python-version 3.11 --generate-hashes \
		--no-header --quiet --upgrade -o requirements.lock

run: install  ## ingress + built-in workers against the local RabbitMQ, development config
	@$(BIN)/python scripts/check_services.py rabbitmq
	@echo "development tokens (config/dev.toml):"
	@echo "  POST http://127.0.0.1:8080/callbacks/camara          Authorization: Bearer dev-camara-token"
	@echo "  POST http://127.0.0.1:8080/callbacks/notify-status   Authorization: Bearer dev-notify-status-token"
	@echo "  POST http://127.0.0.1:8080/callbacks/notify-inbound  Authorization: Bearer dev-notify-inbound-token"
	$(BIN)/event-gateway run --config config/dev.toml

serve: install  ## the ingress alone
	@$(BIN)/python scripts/check_services.py rabbitmq
	$(BIN)/event-gateway serve --config config/dev.toml

test: install  ## the whole suite, against the local RabbitMQ and PostgreSQL
	@$(BIN)/python scripts/check_services.py rabbitmq postgresql
	$(BIN)/pytest

test-cluster: install  ## broker faults on private RabbitMQ nodes (scripts/rabbitmq-cluster): node loss, alarms
	@$(BIN)/python scripts/check_services.py rabbitmq
	$(BIN)/pytest -m cluster --timeout 300

test-newest: install  ## publisher tests against the newest aiormq/aio-pika inside pyproject's ranges
	@$(BIN)/python scripts/check_services.py rabbitmq
	UV=$(BIN)/uv PYTHON=$(PYTHON) scripts/test-newest-deps

lint: install
	$(BIN)/ruff check gateway consumers tests scripts examples
	$(BIN)/ruff format --check gateway consumers tests scripts examples

format: install
	$(BIN)/ruff format gateway consumers tests scripts examples
	$(BIN)/ruff check --fix gateway consumers tests scripts examples

typecheck: install
	$(BIN)/mypy --strict gateway consumers examples

ci: lint typecheck test

bench: install  ## wrk against the gateway and three baselines; prints the table
	$(BIN)/pip install --quiet -e '.[dev,bench]'
	$(BIN)/python tests/benchmarks/run.py

profile: install  ## the gateway alone under load, sampled by py-spy (bench-results/gateway.svg)
	$(BIN)/pip install --quiet -e '.[dev,bench]'
	bash tests/benchmarks/profile.sh

soak: install  ## steady load through ingress + 3 workers on PostgreSQL; SOAK_MINUTES (default 10)
	@$(BIN)/python scripts/check_services.py rabbitmq postgresql
	$(BIN)/python tests/benchmarks/soak.py

stress: install  ## the hostile mixes of issue 8 against a real ingress; prints the table (a benchmark)
	@$(BIN)/python scripts/check_services.py rabbitmq
	$(BIN)/python tests/benchmarks/stress.py

clean:
	rm -rf $(VENV) .mypy_cache .ruff_cache .pytest_cache bench-results
