"""The suite's root: tests never touch the user's ~/airflow, and every shared fixture comes from one
plugin, ``koywe_fixtures``."""

from __future__ import annotations

import os
import tempfile

# Airflow and the ledger's default file live under AIRFLOW_HOME: never the user's ~/airflow in tests.
os.environ.setdefault("AIRFLOW_HOME", tempfile.mkdtemp(prefix="koywe-tests-airflow-home-"))

pytest_plugins = ["koywe_fixtures"]
