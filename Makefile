# Every target sets itself up: a .venv with the locked dependencies (requirements.lock) and this
# project installed in editable mode. Airflow runs from ./airflow_home (SQLite, local sandbox).
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
UV_VERSION := 0.13.8
STAMP := $(VENV)/.installed

.PHONY: demo test up setup lint bench lock clean browser-deps

$(STAMP): requirements.lock pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --disable-pip-version-check "uv==$(UV_VERSION)"
	$(VENV)/bin/uv pip sync --quiet --python $(PY) requirements.lock
	$(VENV)/bin/uv pip install --quiet --python $(PY) --no-deps -e .
	touch $(STAMP)

demo: $(STAMP)  ## issue the sample inbox through real Airflow against the local sandbox (ledger: airflow_home/koywe_ledger.db)
	$(PY) -m koywe_demo demo $(DEMO_ARGS)

test: $(STAMP)  ## the whole test suite (PostgreSQL tests skip unless CI=true or a server answers)
	$(VENV)/bin/ruff check .
	$(VENV)/bin/lint-imports
	$(PY) -m pytest $(PYTEST_ARGS)

up: $(STAMP)  ## Airflow's UI on http://127.0.0.1:8080 and the sandbox on 127.0.0.1:8099 until Ctrl+C (UP_ARGS="--api-port 8081 --schedules")
	$(PY) -m koywe_demo up $(UP_ARGS)

# The browser test (tests/ui/test_browser.py) drives Debian's chromium with playwright-core from npm;
# nothing downloads a browser. Without them the test skips and says why (CI=true makes it fail).
browser-deps:  ## the browser test's tools: Debian's chromium (installed when missing, as root) and `npm ci` in tests/browser
	@if [ ! -x /usr/bin/chromium ] || ! command -v npm >/dev/null 2>&1; then \
	  if [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then \
	    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends \
	      $$([ -x /usr/bin/chromium ] || echo chromium) $$(command -v npm >/dev/null 2>&1 || echo nodejs npm) >/dev/null; \
	  else \
	    echo "browser-deps: /usr/bin/chromium or npm is missing and this is not root: install Debian's chromium and npm, or the browser test skips"; \
	  fi; \
	fi
	@if command -v npm >/dev/null 2>&1; then \
	  cd tests/browser && npm ci --no-audit --no-fund --loglevel=error; \
	fi

setup: $(STAMP)
	$(PY) -m koywe_demo setup

bench: $(STAMP)  ## one JSON line per scenario: throughput vs the rate limit, ingestion memory, DAG parse (BENCH_ARGS="--scenario r20_l200 --documents 200")
	$(PY) benchmarks/run_bench.py $(BENCH_ARGS)

lint: $(STAMP)
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .

lock:  ## regenerate requirements.lock from requirements.txt
	$(VENV)/bin/uv pip compile --python 3.11 --no-header requirements.txt -o requirements.lock

clean:
	rm -rf $(VENV) airflow_home .pytest_cache
