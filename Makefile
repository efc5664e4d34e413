PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
# Every dependency is pinned here; `make lock` refreshes it from a fresh resolve.
CONSTRAINTS := constraints.txt

.PHONY: install test test-unit lint demo clean bench lock

install: $(STAMP)

# pip's own output (and setuptools' build notices) goes to a log; it is shown only when the install fails.
$(STAMP): pyproject.toml $(CONSTRAINTS)
	@test -d $(VENV) || $(PYTHON) -m venv $(VENV)
	@echo "installing adkd and its pinned dependencies into $(VENV) (log: $(VENV)/install.log) ..."
	@$(BIN)/pip install --disable-pip-version-check -c $(CONSTRAINTS) --upgrade pip > $(VENV)/install.log 2>&1 \
		&& $(BIN)/pip install --disable-pip-version-check -c $(CONSTRAINTS) -e '.[dev]' >> $(VENV)/install.log 2>&1 \
		|| { tail -n 40 $(VENV)/install.log; echo "install failed: see $(VENV)/install.log"; exit 1; }
	@touch $(STAMP)

# Re-resolve every dependency in a scratch venv and write the pins (commit the result).
lock:
	rm -rf .lock-venv
	$(PYTHON) -m venv .lock-venv
	.lock-venv/bin/pip install -q --disable-pip-version-check --upgrade pip
	.lock-venv/bin/pip install -q --disable-pip-version-check -e '.[dev]'
	{ echo "# Pinned versions of every dependency (make lock rewrites this file). Used by make install and CI:"; \
	  echo "#   pip install -c constraints.txt -e '.[dev]'"; \
	  .lock-venv/bin/pip freeze --all --exclude-editable; } > $(CONSTRAINTS)
	rm -rf .lock-venv

# --dist loadgroup with one group per module (tests/conftest.py): a module's expensive fixtures (servers,
# trainings) run once, not once per worker; tests/conftest.py hands the costliest groups out first.
# Three workers on two cores: the suite waits on servers, Ray and subprocesses, and a third worker fills those
# waits (measured: both cores busy 92 % of the run with two workers, 98 % with three).
test: install
	$(BIN)/python -m pytest -q -n 3 --dist loadgroup --no-loadscope-reorder --timeout 1500 --durations 40 tests

# The fast tier, to run after each edit: no training beyond a single step, no services (those are in
# tests/integration); two workers, one per core; a worker that runs dry takes tests the other has not started.
test-unit: install
	$(BIN)/python -m pytest -q -n 2 --dist worksteal tests/unit

lint: install
	$(BIN)/ruff check adkd tests benchmarks
	$(BIN)/ruff format --check adkd tests benchmarks

demo: install
	@$(BIN)/adkd demo

clean:
	rm -rf $(VENV) adkd-runs demo-data
