# Set-up and everyday commands. `make demo` and `make test` each create the
# virtual environment in .venv on first use, so a fresh clone needs only
# Python 3.11+ and make.

PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: demo test services bench lint clean

$(STAMP): pyproject.toml
	$(PYTHON) -c 'import sys; sys.exit(sys.version_info < (3, 11) and "Python 3.11 or newer is needed; set PYTHON=python3.11")'
	$(PYTHON) -m venv $(VENV)
	@echo "Installing diva-connector into $(VENV) (log: $(VENV)/install.log)"
	@$(BIN)/python -m pip install --upgrade pip > $(VENV)/install.log 2>&1 \
		&& $(BIN)/python -m pip install -e '.[test]' >> $(VENV)/install.log 2>&1 \
		|| (cat $(VENV)/install.log; exit 1)
	touch $(STAMP)

## Load a month of sandbox authorizations into ./diva-demo (Parquet + SQLite).
demo: $(STAMP)
	$(BIN)/diva-connector demo --dir diva-demo

## Run the whole test suite; PostgreSQL and MariaDB tests run when reachable
## (with CI=true they must run).
test: $(STAMP) services
	$(BIN)/python -m pytest -n 2 -q

## Start the local PostgreSQL and MariaDB when they are not answering.
services: $(STAMP)
	$(BIN)/python .ci/services.py

bench: $(STAMP)
	$(BIN)/python -m benchmarks.run

lint: $(STAMP)
	$(BIN)/ruff check connector tests

clean:
	rm -rf $(VENV) diva-demo .diva-connector .pytest_cache
