# Two commands on a fresh machine: `make demo` and `make test`. Each creates .venv when missing.
PYTHON ?= python3
VENV   := .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.installed
BINDING ?= http

.PHONY: venv demo test test-fast lint bench fuzz mutate clean fresh-check install-check

$(STAMP): pyproject.toml
	@sh deploy/install-system-deps.sh
	@test -x $(PY) || $(PYTHON) -m venv $(VENV)
	@$(PY) -m pip install -q --upgrade pip
	@$(PY) -m pip install -q -e '.[dev]'
	@PY=$(PY) sh deploy/install-dtls.sh
	@# an editable install compiles nothing: without this, where PYTHONDONTWRITEBYTECODE is set every command
	@# compiles the project's modules at each start (`ipa chip info` 1.6x slower; docs/performance.md 5b)
	@$(PY) -m compileall -q rsp ipa euicc firmware_bridge eim smdpp demo >/dev/null
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

# The wheel with each install set ([ipa], [server]) in a fresh venv from the package index (~1 min; docs/install.md).
install-check: $(STAMP)
	$(PY) -m pytest -q -s -p no:cacheprovider tests/deploy/install_check.py

# `make demo`, a test subset and install-check in a clean Debian chroot (root, debootstrap; 10-20 min; docs/install.md).
fresh-check:
	sh deploy/fresh-check.sh

clean:
	rm -rf $(VENV) build *.egg-info .pytest_cache .hypothesis mutants fuzz/corpus fuzz/findings
