"""What the Airflow plugin registers for the Koywe page: a lazily built ASGI app and the external view.

Airflow loads plugins in every process (scheduler, DAG processor, triggerer, each task runner), and the
FastAPI app of the page needs Airflow's API-server security module, whose import alone takes seconds.
:class:`LazyApp` defers building the app (and those imports) to the first request the API server
routes to it; importing this module costs nothing beyond the standard library. Nothing is read at
import time.
"""

from __future__ import annotations

import importlib
import threading
from typing import Any

#: Where the API server mounts the page's app (``<base_url>/koywe-ledger/``).
URL_PREFIX = "/koywe-ledger"
#: Airflow's UI shows the external view at ``<base_url>/plugin/<URL_ROUTE>``.
URL_ROUTE = "koywe"

#: The "Koywe" entry of Airflow's navigation: an iframe on the page's app. ``href`` is relative to
#: Airflow's base URL (the UI's ``<base href>``), so a deployment under a path prefix works too.
EXTERNAL_VIEW: dict[str, Any] = {
    "name": "Koywe",
    "href": URL_PREFIX.lstrip("/") + "/",
    "url_route": URL_ROUTE,
    "destination": "nav",
    "nav_top_level": True,
    "icon": URL_PREFIX.lstrip("/") + "/static/koywe.svg",
}


class LazyApp:
    """An ASGI app that imports ``factory`` (``"module:function"``) and builds the real app on the first
    call (HTTP or lifespan), once, under a lock; every call then goes to that app."""

    def __init__(self, factory: str) -> None:
        self.factory = factory
        self._app: Any = None
        self._lock = threading.Lock()

    def build(self) -> Any:
        """The real app (built now if it was not yet)."""
        if self._app is None:
            with self._lock:
                if self._app is None:
                    module, _, name = self.factory.partition(":")
                    self._app = getattr(importlib.import_module(module), name)()
        return self._app

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        await self.build()(scope, receive, send)

    def __repr__(self) -> str:  # shown by Airflow's plugin listing
        return f"LazyApp({self.factory!r})"


#: The app the plugin mounts at :data:`URL_PREFIX`.
app = LazyApp("koywe_provider.ui.app:create_app")
