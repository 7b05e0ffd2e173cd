# The two commands of the README: `make dev` and `make test`. Each sets up .venv itself.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

LOCK := requirements/dev.txt
PIP := $(BIN)/python -m pip --disable-pip-version-check

.PHONY: dev docs test test-slow lint typecheck histories patch-coverage bench bench-scaling bench-pause bench-render-fairness soak clean lock audit

# Exactly the locked set (uv.lock, exported with hashes to requirements/*.txt by `make lock`), with
# nothing but python3 and pip: every package pinned and hash-checked, none resolved here. The project
# itself goes in editable, without dependencies.
$(STAMP): pyproject.toml $(LOCK)
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(PIP) install --quiet --require-hashes -r $(LOCK)
	$(PIP) install --quiet --no-deps -e .
	touch $(STAMP)

# After editing the dependencies in pyproject.toml: resolve uv.lock again (uv, from the dev set) and
# export what pip installs: requirements/app.txt (the image) and requirements/dev.txt (everything
# else). `make lock ARGS=--upgrade` moves every pin to the newest allowed version.
lock: $(STAMP)
	$(BIN)/uv lock $(ARGS)
	$(BIN)/uv export --frozen --quiet --format requirements-txt --no-emit-project -o requirements/app.txt
	$(BIN)/uv export --frozen --quiet --format requirements-txt --no-emit-project --extra dev -o $(LOCK)

# Known vulnerabilities in every locked package (pip-audit); fails on one, and on any package it could
# not audit. Needs a package index with advisory data (pypi.org); not part of `make test`.
audit: $(STAMP)
	$(BIN)/python -m devsupport.audit --lock uv.lock

dev: $(STAMP)
	$(BIN)/campaign-engine dev

# The documentation site (mkdocs.yml, docs/) with live reload, beside the API's port 8000. `make
# test` builds it with --strict (tests/test_docs_site.py). More: make docs ARGS="--dirty".
docs: $(STAMP)
	NO_MKDOCS_2_WARNING=1 $(BIN)/mkdocs serve -a 127.0.0.1:8001 $(ARGS)

# Lint and types first: they take seconds and CI must keep them clean.
test: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy
	$(BIN)/mypy docs/hooks/generate.py
	$(BIN)/python -m pytest -q

# The long tests `make test` leaves out (pytest's `slow` marker), one after the other with their
# figures printed: the 1,500- and 10,000-row CSV imports through `campaign-engine leads import`
# against the real API and dev server, and the 60 s soak. About 3.5 min on a quiet 2-core machine.
test-slow: $(STAMP)
	$(BIN)/python -m pytest -m slow -n 0 -s -q $(ARGS)

lint: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

typecheck: $(STAMP)
	$(BIN)/mypy
	$(BIN)/mypy docs/hooks/generate.py


# Record the replay suite's histories with today's code into tests/histories/<today>/ (older
# release folders are frozen). Some shapes: make histories ARGS="draft_failed gate_expired";
# again, in a release not yet shipped: ARGS="--replace draft_failed". Coverage of each patch's
# branches: make patch-coverage.
histories: $(STAMP)
	$(BIN)/python -m tests.histories.record $(ARGS)

patch-coverage: $(STAMP)
	$(BIN)/python -m tests.histories.replays

# Approve latency against the bare-SDK floor on a private stack (docs/performance.md).
# More: make bench ARGS="--n 2000 --concurrency 1,16,64 --waiting 10000"
bench: $(STAMP)
	$(BIN)/python -m bench $(ARGS)

# How cost grows: approve latency with 1,000 and 10,000 waiting, enrolment with 1, 2, 4 workers.
# Shorter: make bench-scaling ARGS="--waiting 1000,5000 --workers 1,2"
bench-scaling: $(STAMP)
	$(BIN)/python -m bench.scaling $(ARGS)

# A campaign pause and resume reaching N waiting instances (docs/performance.md).
bench-pause: $(STAMP)
	$(BIN)/python -m bench.pause $(ARGS)

# A one-step PUT while two other account groups' 25-step PUTs render (docs/performance.md).
# More rounds: make bench-render-fairness ARGS="--rounds 5"; budget: ARGS="--render-budget-seconds 1"
bench-render-fairness: $(STAMP)
	$(BIN)/python -m bench.render_fairness $(ARGS)

# Enrolments and approvals (duplicates and stale ones too) against one API and two workers.
# Longer: make soak ARGS="--duration 600"
soak: $(STAMP)
	$(BIN)/python -m bench.soak $(ARGS)

clean:
	rm -rf $(VENV) var .pytest_cache .mypy_cache .ruff_cache
