"""Airflow plugin: the "Koywe" page — the issuance ledger inside Airflow's UI.

Mounts the page's app on the API server at ``/koywe-ledger`` and adds "Koywe" to Airflow's navigation
(an external view at ``/plugin/koywe``). Every page requires an Airflow login and read access to the
runs of ``koywe_daily_issuance``; see :mod:`koywe_provider.ui`. This file lives in the plugins folder
root because ``plugins/.airflowignore`` hides ``koywe_provider/``; it imports nothing heavy (the app is
built on its first request).
"""

from __future__ import annotations

from airflow.plugins_manager import AirflowPlugin

from koywe_provider.ui.asgi import EXTERNAL_VIEW, URL_PREFIX, app


class KoyweLedgerUiPlugin(AirflowPlugin):
    name = "koywe_ledger_ui"
    fastapi_apps = [{"app": app, "url_prefix": URL_PREFIX, "name": "Koywe ledger page"}]
    external_views = [EXTERNAL_VIEW]
