# `make test` and `make demo` take a fresh Debian machine with Python 3.11 from clone to green.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
MYSQL_URL ?= mysql://root@127.0.0.1:3306/test
export MYSQL_URL

.PHONY: bench-drivers test test-matrix lint typecheck pytest demo demo-fastapi test-browser test-starlette-compat tour db bench soak dist clean cluster cluster-stop cluster-clean cluster-status test-cluster cluster-soak cluster-cost

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

# The suite on the oldest and newest aiomysql (0.2, 0.3) x PyMySQL (1.0, 1.1, 1.2) the
# dependency ranges allow, one venv each in .matrix/ (reused while pyproject.toml is the same),
# two at a time; a table of versions, counts and seconds at the end (scripts/test_matrix.py).
# MATRIX_ARGS go to the script, e.g. MATRIX_ARGS="--jobs 1" or MATRIX_ARGS="-- -x".
test-matrix: db
	$(BIN)/python scripts/test_matrix.py $(MATRIX_ARGS)

# The example app under uvicorn (the Starlette one, or the same app in FastAPI); the lifespan
# creates the table. The page is at / in a browser; the steps below drive its JSON API with curl
# (every POST carries the session's CSRF token, fetched from /csrf; login renews it).
define DEMO_STEPS
	@echo "Try, in a browser: http://127.0.0.1:8000/  or with curl:"
	@echo '  T=$$(curl -s -c /tmp/jar -b /tmp/jar http://127.0.0.1:8000/csrf)'
	@echo '  curl -c /tmp/jar -b /tmp/jar -H "X-CSRF-Token: $$T" -d user=ada http://127.0.0.1:8000/login'
	@echo '  T=$$(curl -s -c /tmp/jar -b /tmp/jar http://127.0.0.1:8000/csrf)   # a new token after login'
	@echo '  curl -c /tmp/jar -b /tmp/jar -H "X-CSRF-Token: $$T" -X POST http://127.0.0.1:8000/counter'
	@echo '  curl -c /tmp/jar -b /tmp/jar -H "X-CSRF-Token: $$T" -d value=dark http://127.0.0.1:8000/theme'
	@echo '  curl -c /tmp/jar -b /tmp/jar http://127.0.0.1:8000/'
	@echo '  curl -c /tmp/jar -b /tmp/jar -H "X-CSRF-Token: $$T" -X POST http://127.0.0.1:8000/logout'
	@echo '  curl http://127.0.0.1:8000/metrics'
	@echo "(Ctrl-C stops it)"
endef

demo: db
	@echo "Starlette example on http://127.0.0.1:8000"
	$(DEMO_STEPS)
	$(BIN)/uvicorn examples.starlette_app:app --host 127.0.0.1 --port 8000

demo-fastapi: db
	@echo "FastAPI example (the same app) on http://127.0.0.1:8000"
	$(DEMO_STEPS)
	$(BIN)/uvicorn examples.fastapi_app:app --host 127.0.0.1 --port 8000

# The demo page in headless Chromium (tests/browser), not part of `make test`. Uses Debian's
# chromium (installed with apt-get when missing and we are root); never downloads a browser.
test-browser: db
	@if [ ! -x /usr/bin/chromium ] || ! command -v openssl >/dev/null; then \
		if [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null; then \
			apt-get update -q && DEBIAN_FRONTEND=noninteractive apt-get install -y -q chromium openssl; \
		else \
			echo "test-browser: install Debian's chromium and openssl packages (as root)"; exit 1; \
		fi; \
	fi
	$(BIN)/pytest tests/browser -p no:cacheprovider

# The provider API step by step, without a web server.
tour: db
	$(BIN)/python examples/provider_tour.py

# Throughput and latency under uvicorn against the raw aiomysql limit (bench/README.md).
# `make bench BENCH_ARGS=--quick` for a one-minute smoke run.
# The hand-written reference apps bind bytes through aiomysql, which PyMySQL 1.2 breaks: their
# users pin PyMySQL<1.2, and so does the bench (bench/apps/drivers.py). The package runs on both.
bench-drivers: $(BIN)/.installed
	@$(BIN)/python -c "import sys; sys.path.insert(0, 'bench/apps'); import drivers; drivers.require_pymysql_below_1_2()" 2>/dev/null \
		|| $(BIN)/pip install -q 'PyMySQL>=1.1,<1.2'

bench: db bench-drivers
	$(BIN)/python bench/run.py $(BENCH_ARGS)

# Reliability soak, not part of `make test` (bench/soak/README.md): uvicorn --workers 2 behind
# the fault proxy, 2000 users, the database cut once. `make soak SOAK_ARGS=--quick` for ~30 s.
soak: db
	$(BIN)/python bench/soak/soak.py $(SOAK_ARGS)

# Wheel and sdist in dist/ (built in an isolated environment from pyproject.toml), then
# `twine check` of both: the long description renders and the metadata is complete.
dist: $(BIN)/.installed
	rm -rf dist build
	$(BIN)/python -m build --outdir dist .
	$(BIN)/twine check --strict dist/*

# A 3-node MariaDB Galera cluster on loopback (SQL ports 3311-3313, data and logs in .cluster/),
# not part of `make test` (tests/cluster/README.md). `make cluster` is idempotent: it starts
# only the nodes that are down. `scripts/cluster.py kill N` / `start N` crash and restart one.
cluster: $(BIN)/.installed
	$(BIN)/python scripts/cluster.py start

cluster-stop: $(BIN)/.installed
	$(BIN)/python scripts/cluster.py stop

# Stop the cluster and delete its folder (data, logs), e.g. at the end of a CI run.
cluster-clean: $(BIN)/.installed
	$(BIN)/python scripts/cluster.py clean

cluster-status: $(BIN)/.installed
	$(BIN)/python scripts/cluster.py status

test-cluster: cluster
	$(BIN)/pytest tests/cluster -p no:cacheprovider

# The cluster under load, not part of `make test` (bench/soak/CLUSTER.md): two uvicorn apps
# with the 3-host DSN in different orders, the busiest node SIGKILLed, restarted, then another;
# every acknowledged increment checked on every node. ~2 minutes; CLUSTER_SOAK_ARGS=--quick ~40 s.
# Ports and folder follow CLUSTER_PORT_OFFSET and CLUSTER_DIR, like `make cluster`.
cluster-soak: cluster
	$(BIN)/python bench/soak/cluster_soak.py $(CLUSTER_SOAK_ARGS)

# Read and write req/s of one uvicorn process on the cluster (node 1 alone, the 3-host DSN)
# against the single server, interleaved rounds with wrk (bench/README.md, "The cluster").
cluster-cost: cluster bench-drivers
	$(BIN)/python bench/cluster_cost.py $(CLUSTER_COST_ARGS)

clean:
	rm -rf $(VENV) .matrix .mypy_cache .pytest_cache .ruff_cache build dist

# Starlette's own SessionMiddleware tests (from the sdist of the installed Starlette, in a
# temporary directory) through tests/compat/adapter.py; prints passed/failed counts and why
# each expected failure cannot pass with a server-side store. Not part of `make test`.
test-starlette-compat: db
	$(BIN)/python scripts/starlette_compat.py
