PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: install test test-unit lint demo clean bench

install: $(STAMP)

$(STAMP): pyproject.toml
	test -d $(VENV) || $(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q -e '.[dev]'
	touch $(STAMP)

# --dist loadgroup with one group per module (tests/conftest.py): a module's expensive fixtures (servers,
# trainings) run once, not once per worker; the Ray modules share one group and run one after another.
test: install
	$(BIN)/python -m pytest -q -n 3 --dist loadgroup --timeout 1500 --durations 40 tests

test-unit: install
	$(BIN)/python -m pytest -q tests/unit

lint: install
	$(BIN)/ruff check adkd tests benchmarks
	$(BIN)/ruff format --check adkd tests benchmarks

demo: install
	$(BIN)/adkd demo

clean:
	rm -rf $(VENV) adkd-runs demo-data
