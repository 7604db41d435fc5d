# Two commands on a fresh machine: `make demo` and `make test`. Each creates .venv when missing.
PYTHON ?= python3
VENV   := .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.installed
BINDING ?= http

.PHONY: venv demo test test-fast lint bench fuzz mutate clean

$(STAMP): pyproject.toml
	@test -x $(PY) || $(PYTHON) -m venv $(VENV)
	@$(PY) -m pip install -q --upgrade pip
	@$(PY) -m pip install -q -e '.[dev]'
	@PY=$(PY) sh deploy/install-dtls.sh
	@touch $(STAMP)

venv: $(STAMP)

demo: $(STAMP)
	$(PY) -m demo --binding $(BINDING)

test: $(STAMP)
	$(PY) -m pytest -q -p no:cacheprovider -n 2

test-fast: $(STAMP)
	$(PY) -m pytest -q -x -p no:cacheprovider -m "not slow"

lint: $(STAMP)
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .

bench: $(STAMP)
	$(PY) -m bench

# Long runs kept out of `make test` (docs/security.md): coverage-guided fuzzing of the decoders (atheris,
# FUZZ_SECONDS per target) and a mutation run over the security checks (mutmut).
fuzz: $(STAMP)
	@$(PY) -m pip install -q -e '.[fuzz]'
	$(PY) -m fuzz

mutate: $(STAMP)
	@$(PY) -m pip install -q -e '.[mutate]'
	$(PY) -m fuzz.mutate

clean:
	rm -rf $(VENV) build *.egg-info .pytest_cache .hypothesis mutants fuzz/corpus fuzz/findings
