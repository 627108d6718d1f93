"""Airflow plugin: mounts the Koywe callback receiver on the API server at ``/koywe``.

``POST <api-server>/koywe/document-status`` receives Koywe's ``DOCUMENT.STATUSUPDATE`` callbacks (HTTP
basic auth against the ``koywe_callbacks`` connection); see :mod:`koywe_provider.callbacks`. This file
lives in the plugins folder root because ``plugins/.airflowignore`` hides ``koywe_provider/``.
"""

from __future__ import annotations

from airflow.plugins_manager import AirflowPlugin

from koywe_provider.callbacks import app


class KoyweCallbacksPlugin(AirflowPlugin):
    name = "koywe_callbacks"
    fastapi_apps = [{"app": app, "url_prefix": "/koywe", "name": "Koywe callbacks"}]
