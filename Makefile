# wal2http developer tasks. `make test` and `make demo` work on a fresh Debian 12 machine:
# they create .venv, install the package, and install PostgreSQL 15 with apt when it is missing.

PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
PG_BINDIR ?= /usr/lib/postgresql/15/bin
# ruff reads no setup.cfg; its settings live here, beside the other developer commands.
RUFF_ARGS := --line-length 120 --target-version py311 --select E,F,W,I,B,UP,SIM,RUF --ignore RUF012
export PG_BINDIR

.PHONY: help venv postgres nginx promtool docs-tools deploy-tools test unit integration demo bench lint man clean

help:
	@echo "make demo    stream real changes from a throwaway PostgreSQL to a local receiver"
	@echo "make test    run the whole test suite (unit and integration)"
	@echo "make bench   measure throughput, latency and memory against pg_recvlogical"
	@echo "make lint    ruff and mypy --strict"
	@echo "make promtool  unpack promtool into .venv so the alert rule tests run it"
	@echo "make man     show the manual page as it renders at 80 columns"

$(BIN)/wal2http: setup.cfg setup.py
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e '.[test,lint]'
	@touch $@

venv: $(BIN)/wal2http

# PostgreSQL 15 server binaries (initdb, pg_ctl, postgres) and pg_recvlogical for the benchmark.
postgres:
	@if [ ! -x $(PG_BINDIR)/initdb ] || ! command -v pg_recvlogical >/dev/null; then \
		echo "installing PostgreSQL 15 with apt"; \
		apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq \
			postgresql-15 postgresql-client-15 >/dev/null; \
	fi
	@test -x $(PG_BINDIR)/initdb || { echo "PostgreSQL 15 not found in $(PG_BINDIR)"; exit 1; }

# nginx, run by tests/integration/test_receivers.py as a child process with its own configuration (a
# proxy with a body limit in front of the test receiver). No service is started or configured.
nginx:
	@if ! command -v nginx >/dev/null && [ ! -x /usr/sbin/nginx ]; then \
		echo "installing nginx with apt"; \
		apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq nginx >/dev/null; \
	fi

# promtool alone, for the alert rule tests (tests/unit/test_observability.py): unpacked from Debian's
# prometheus package into the venv, so no Prometheus server is installed or started. `make test` asks
# for it; if the download fails the run goes on and those tests check only structure and metric names.
promtool: venv
	@if [ ! -x $(BIN)/promtool ]; then \
		tmp=$$(mktemp -d) && cd $$tmp && \
		{ apt-get download prometheus >/dev/null 2>&1 || { apt-get update -qq && apt-get download prometheus >/dev/null; }; } && \
		dpkg -x prometheus_*.deb root && cp root/usr/bin/promtool $(CURDIR)/$(BIN)/promtool; \
		rm -rf $$tmp; \
		test -x $(CURDIR)/$(BIN)/promtool || echo "warning: promtool unavailable; alert rules get structural checks only"; \
	fi
	@test ! -x $(BIN)/promtool || $(BIN)/promtool --version 2>&1 | head -1

# mandoc and man-db, so the manual page tests (tests/unit/test_docs.py) lint and render it.
docs-tools:
	@if ! command -v mandoc >/dev/null || ! command -v man >/dev/null; then \
		echo "installing mandoc and man-db with apt"; \
		apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq \
			mandoc man-db >/dev/null; \
	fi

# systemd-analyze, so tests/unit/test_deploy.py verifies the unit file. Debian ships it only in the systemd
# package; installing it in a container starts nothing (systemd is not PID 1 there), and without
# recommends it brings no daemons.
deploy-tools:
	@if ! command -v systemd-analyze >/dev/null; then \
		echo "installing systemd (for systemd-analyze) with apt"; \
		apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends \
			systemd >/dev/null; \
	fi

test: venv postgres nginx promtool docs-tools deploy-tools
	$(BIN)/python -m pytest -q tests

unit: venv docs-tools deploy-tools
	$(BIN)/python -m pytest -q tests/unit

integration: venv postgres nginx
	$(BIN)/python -m pytest -q tests/integration

demo: venv postgres
	$(BIN)/python -m tests.support.demo

bench: venv postgres
	$(BIN)/python -m tests.bench $(BENCH_ARGS)

man: docs-tools
	MANWIDTH=80 MANPAGER=cat man -l man/wal2http.1

lint: venv
	$(BIN)/ruff check $(RUFF_ARGS) wal2http tests
	$(BIN)/mypy --strict wal2http

clean:
	rm -rf $(VENV) build *.egg-info .pytest_cache .mypy_cache .ruff_cache .hypothesis
