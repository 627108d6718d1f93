# Every target sets itself up: a .venv with the locked dependencies (requirements.lock) and this
# project installed in editable mode. Airflow runs from ./airflow_home (SQLite, local sandbox).
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
UV_VERSION := 0.13.8
STAMP := $(VENV)/.installed

.PHONY: demo test up setup lint bench lock clean

$(STAMP): requirements.lock pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --disable-pip-version-check "uv==$(UV_VERSION)"
	$(VENV)/bin/uv pip sync --quiet --python $(PY) requirements.lock
	$(VENV)/bin/uv pip install --quiet --python $(PY) --no-deps -e .
	touch $(STAMP)

demo: $(STAMP)  ## issue the sample inbox through real Airflow against the local sandbox
	$(PY) -m koywe_demo demo

test: $(STAMP)  ## the whole test suite (PostgreSQL tests skip unless CI=true or a server answers)
	$(VENV)/bin/ruff check .
	$(PY) -m pytest $(PYTEST_ARGS)

up: $(STAMP)  ## airflow standalone (http://localhost:8080) with the sandbox on :8099
	$(PY) -m koywe_demo up

setup: $(STAMP)
	$(PY) -m koywe_demo setup

bench: $(STAMP)  ## throughput vs the rate limit, ingestion memory, DAG parse cost (BENCH_ARGS="--documents 500")
	$(PY) benchmarks/run_bench.py $(BENCH_ARGS)

lint: $(STAMP)
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .

lock:  ## regenerate requirements.lock from requirements.txt
	$(VENV)/bin/uv pip compile --python 3.11 --no-header requirements.txt -o requirements.lock

clean:
	rm -rf $(VENV) airflow_home .pytest_cache
