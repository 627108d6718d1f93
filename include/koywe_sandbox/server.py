"""Run the sandbox with uvicorn, using an h11 protocol that lets the app drop a connection.

Uvicorn answers 500 when an ASGI app fails before starting a response, so an app cannot simply "not
answer". :class:`DroppableH11Protocol` gives every request of a connection access to that connection's
asyncio transport through ``scope["state"]`` (the per-connection copy of the lifespan state); the app's
:class:`koywe_sandbox.app.DropConnection` response closes the transport and waits for uvicorn's
``http.disconnect``, after which uvicorn sends nothing.
"""

from __future__ import annotations

import asyncio
import logging

import uvicorn
from uvicorn.protocols.http.h11_impl import H11Protocol

from .app import TRANSPORT_STATE_KEY, create_app
from .faults import FaultSettings
from .state import SandboxConfig

logger = logging.getLogger("koywe_sandbox")


class DroppableH11Protocol(H11Protocol):
    """h11 protocol that exposes the connection's transport as ``scope["state"][TRANSPORT_STATE_KEY]``."""

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        # scope["state"] is a shallow copy of self.app_state per request: give this connection its own dict.
        self.app_state = {**self.app_state, TRANSPORT_STATE_KEY: transport}


def build_server(config: SandboxConfig) -> uvicorn.Server:
    """A uvicorn server (h11, no access log) serving the sandbox app for ``config``."""
    uv_config = uvicorn.Config(
        create_app(config),
        host=config.host,
        port=config.port,
        http=DroppableH11Protocol,
        ws="none",
        lifespan="off",
        access_log=False,
        log_level="warning",
        timeout_graceful_shutdown=2,
    )
    return uvicorn.Server(uv_config)


def serve(config: SandboxConfig) -> None:
    """Log one start-up line (no secrets) and serve until interrupted."""
    defaults = FaultSettings().as_dict()
    faults = {k: v for k, v in config.faults.as_dict().items() if v != defaults[k] and k != "list_shape"}
    logger.warning(
        "Koywe sandbox on http://%s:%d/V1 (envelope=%s, clock=%s, token_ttl=%ss, rate_limit=%s/s, seed=%s, "
        "faults=%s)",
        config.host,
        config.port,
        config.list_envelope,
        "manual" if config.manual_clock else "monotonic",
        config.token_ttl,
        config.rate_limit,
        config.seed,
        faults or "none",
    )
    build_server(config).run()
