# voicecache: `make run` serves on http://127.0.0.1:8080, `make test` runs every test.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
# One stamp per set of extras, named after pyproject.toml's checksum: `make run` installs what
# serving needs, `make test` adds the dev extras, `make bench` the bench extras; none reinstalls
# what an earlier one already installed.
DEPS_SUM := $(shell cat pyproject.toml | cksum | cut -d' ' -f1)
STAMP := $(VENV)/.installed-dev-$(DEPS_SUM)
RUN_STAMP := $(VENV)/.installed-run-$(DEPS_SUM)
BENCH_STAMP := $(VENV)/.installed-bench-$(DEPS_SUM)
DEBIAN_TEST_PACKAGES := redis-server redis-tools chromium strace
# Only `make bench` needs these (nginx as the static-file reference, wrk as load generator).
DEBIAN_BENCH_PACKAGES := nginx-light wrk

.PHONY: run test install install-run install-bench lint format bench bench-deps clean system-deps

# $(call pip-install,EXTRAS,STAMPS): install the project (editable) with EXTRAS, drop stamps of
# an older pyproject.toml, then touch STAMPS (every set of extras now satisfied).
define pip-install
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.$(1)'
	find $(VENV) -maxdepth 1 -name '.installed-*' ! -name '*-$(DEPS_SUM)' -delete
	touch $(2)
endef

$(RUN_STAMP): pyproject.toml
	$(call pip-install,,$(RUN_STAMP))

# dev includes bench (the benchmark smoke test) and everything serving needs.
$(STAMP): pyproject.toml
	$(call pip-install,[dev],$(STAMP) $(RUN_STAMP) $(BENCH_STAMP))

$(BENCH_STAMP): pyproject.toml
	$(call pip-install,[bench],$(BENCH_STAMP) $(RUN_STAMP))

install: $(STAMP)
install-run: $(RUN_STAMP)
install-bench: $(BENCH_STAMP)

run: install-run
	$(BIN)/voicecache serve

# Debian packages the tests need (real Redis); installed only when missing, as root.
system-deps:
	@missing=""; for p in $(DEBIAN_TEST_PACKAGES); do \
	  dpkg -s $$p >/dev/null 2>&1 || missing="$$missing $$p"; done; \
	if [ -n "$$missing" ]; then \
	  echo "installing Debian packages:$$missing"; \
	  SUDO=""; [ "$$(id -u)" = 0 ] || SUDO=sudo; \
	  $$SUDO apt-get update -qq && DEBIAN_FRONTEND=noninteractive $$SUDO apt-get install -y -qq $$missing >/dev/null; \
	fi

test: install system-deps
	$(BIN)/ruff check src tests benchmarks
	$(BIN)/lint-imports
	$(BIN)/mypy src
	$(BIN)/pytest

lint: install
	$(BIN)/ruff check src tests benchmarks
	$(BIN)/ruff format --check src tests benchmarks

format: install
	$(BIN)/ruff format src tests benchmarks
	$(BIN)/ruff check --fix src tests benchmarks

bench-deps:
	@$(MAKE) --no-print-directory system-deps DEBIAN_TEST_PACKAGES="$(DEBIAN_BENCH_PACKAGES)"

# All benchmark scenarios, side by side, in one run (~40 minutes on 2 cores: the 15-minute
# RSS plateau test and a million-entry disk tier are the long parts):
# writes benchmarks/REPORT.md, REPORT.json and plots/.
bench: install-bench system-deps bench-deps
	$(BIN)/python -m benchmarks.run

clean:
	rm -rf $(VENV) .pytest_cache .ruff_cache .mypy_cache test-artifacts
