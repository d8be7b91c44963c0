# `make test` and `make demo` take a fresh Debian machine with Python 3.11 from clone to green.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
MYSQL_URL ?= mysql://root@127.0.0.1:3306/test
export MYSQL_URL

.PHONY: test lint typecheck pytest demo tour db bench soak clean cluster cluster-stop cluster-status test-cluster

$(BIN)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q -e '.[dev]'
	touch $@

db: $(BIN)/.installed
	$(BIN)/python scripts/ensure_db.py

lint: $(BIN)/.installed
	$(BIN)/ruff check asgi_mysql_session tests examples bench scripts
	$(BIN)/ruff format --check asgi_mysql_session tests examples bench scripts

typecheck: $(BIN)/.installed
	$(BIN)/mypy --strict asgi_mysql_session

pytest: db
	$(BIN)/pytest

test: lint typecheck pytest

# The Starlette example under uvicorn; the lifespan creates the table.
demo: db
	@echo "Starlette example on http://127.0.0.1:8000 (Ctrl-C stops it). Try:"
	@echo "  curl -c /tmp/jar -b /tmp/jar 'http://127.0.0.1:8000/login?user=ada'"
	@echo "  curl -c /tmp/jar -b /tmp/jar -X POST http://127.0.0.1:8000/counter"
	@echo "  curl -c /tmp/jar -b /tmp/jar http://127.0.0.1:8000/"
	@echo "  curl -c /tmp/jar -b /tmp/jar -X POST http://127.0.0.1:8000/logout"
	$(BIN)/uvicorn examples.starlette_app:app --host 127.0.0.1 --port 8000

# The provider API step by step, without a web server.
tour: db
	$(BIN)/python examples/provider_tour.py

# Throughput and latency under uvicorn against the raw aiomysql limit (bench/README.md).
# `make bench BENCH_ARGS=--quick` for a one-minute smoke run.
bench: db
	$(BIN)/python bench/run.py $(BENCH_ARGS)

# Reliability soak, not part of `make test` (bench/soak/README.md): uvicorn --workers 2 behind
# the fault proxy, 2000 users, the database cut once. `make soak SOAK_ARGS=--quick` for ~30 s.
soak: db
	$(BIN)/python bench/soak/soak.py $(SOAK_ARGS)

# A 3-node MariaDB Galera cluster on loopback (SQL ports 3311-3313, data and logs in .cluster/),
# not part of `make test` (tests/cluster/README.md). `make cluster` is idempotent: it starts
# only the nodes that are down. `scripts/cluster.py kill N` / `start N` crash and restart one.
cluster: $(BIN)/.installed
	$(BIN)/python scripts/cluster.py start

cluster-stop: $(BIN)/.installed
	$(BIN)/python scripts/cluster.py stop

cluster-status: $(BIN)/.installed
	$(BIN)/python scripts/cluster.py status

test-cluster: cluster
	$(BIN)/pytest tests/cluster -p no:cacheprovider

clean:
	rm -rf $(VENV) .mypy_cache .pytest_cache .ruff_cache
