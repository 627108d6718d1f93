"""Receiver of Koywe's ``DOCUMENT.STATUSUPDATE`` callbacks (the approach Koywe recommends over polling).

A small FastAPI app mounted on the Airflow API server by the plugin ``plugins/koywe_callbacks.py`` at
``/koywe``: Koywe POSTs to ``<api-server>/koywe/document-status`` (register that URL with
:meth:`KoyweHook.create_webhook_subscription`). Each request:

1. must carry HTTP basic credentials equal to the login/password of the Airflow connection
   ``koywe_callbacks`` (401 otherwise; 503 while that connection does not exist);
2. must be a valid payload ``{document_id, account_id, document_status, taxbureau_send_status,
   taxbureau_send_id, taxbureau_send_date, taxbureau_validation_status, taxbureau_validation_comments}``
   (:class:`~koywe_provider.models.answers.StatusUpdateEvent`; a ``document_status`` 3 is the
   counterparty's acceptance): 422 otherwise;
3. updates the ledger forwards only (:func:`~koywe_provider.ledger.status_updates.apply_status_reports`): a
   repeated or out-of-order callback never moves a document backwards and changes nothing;
4. when the ledger changed, emits an event of the Asset ``koywe_document_status`` so DAGs scheduled on
   it run. Plugin apps have no task context, so the event is registered the way the REST endpoint
   ``POST /api/v2/assets/events`` does it: ``asset_manager.register_asset_change(source_is_api=True)`` in
   a metadata-database session of the API server. The Asset must be known to Airflow (a parsed DAG
   names it; ``koywe_taxbureau_followup`` does), else the event is skipped with a warning.

The answer is ``{"document_id", "matched", "changed", "asset_event"}`` (200 also for documents the ledger
does not know: Koywe need not retry them). Nothing secret is logged or echoed.
"""

from __future__ import annotations

import logging
import secrets
from collections.abc import Callable
from typing import Any

from fastapi import Depends, FastAPI, HTTPException, status
from fastapi.security import HTTPBasic, HTTPBasicCredentials

from koywe_provider.models.answers import StatusUpdateEvent

log = logging.getLogger(__name__)

CALLBACK_CONN_ID = "koywe_callbacks"
CALLBACK_PATH = "/document-status"


def _connection_credentials(conn_id: str = CALLBACK_CONN_ID) -> tuple[str, str] | None:
    """(login, password) of the Airflow connection ``conn_id``; ``None`` when it is missing or incomplete."""
    from airflow.sdk import BaseHook
    from airflow.sdk.exceptions import AirflowNotFoundException

    try:
        conn = BaseHook.get_connection(conn_id)
    except AirflowNotFoundException:
        return None
    if not conn.login or not conn.password:
        return None
    return conn.login, conn.password


def _default_ledger():
    from koywe_provider.hooks.ledger import KoyweLedgerHook

    return KoyweLedgerHook().get_ledger()


def emit_asset_event(extra: dict[str, Any]) -> bool:
    """Register an event of :data:`~koywe_provider.assets.KOYWE_DOCUMENT_STATUS` in Airflow's metadata
    database (API-server process). Returns False when Airflow does not know the Asset yet."""
    import sqlalchemy as sa
    from airflow.assets.manager import asset_manager
    from airflow.models.asset import AssetModel
    from airflow.utils.session import create_session

    from koywe_provider.assets import KOYWE_DOCUMENT_STATUS

    with create_session() as session:
        asset = session.scalar(
            sa.select(AssetModel).where(
                AssetModel.name == KOYWE_DOCUMENT_STATUS.name, AssetModel.uri == KOYWE_DOCUMENT_STATUS.uri
            )
        )
        if asset is None:
            log.warning(
                "Asset %s is unknown to Airflow (no parsed DAG names it); no event",
                KOYWE_DOCUMENT_STATUS.name,
            )
            return False
        return (
            asset_manager.register_asset_change(asset=asset, extra=extra, source_is_api=True, session=session)
            is not None
        )


def create_app(
    *,
    credentials: Callable[[], tuple[str, str] | None] = _connection_credentials,
    ledger: Callable[[], Any] = _default_ledger,
    emit: Callable[[dict[str, Any]], bool] = emit_asset_event,
) -> FastAPI:
    """Build the callback app. ``credentials``, ``ledger`` and ``emit`` are called per request (nothing is
    read at import or build time); tests inject their own."""
    app = FastAPI(title="Koywe callbacks", docs_url=None, redoc_url=None, openapi_url=None)
    basic = HTTPBasic(auto_error=False)

    # Default-value form: with postponed annotations FastAPI could not see the local ``basic``.
    def authenticated(given: HTTPBasicCredentials | None = Depends(basic)) -> None:  # noqa: B008
        expected = credentials()
        if expected is None:
            raise HTTPException(
                status.HTTP_503_SERVICE_UNAVAILABLE, f"connection {CALLBACK_CONN_ID} is not set up"
            )
        ok = given is not None and all(
            secrets.compare_digest(a.encode(), b.encode())
            for a, b in ((given.username, expected[0]), (given.password, expected[1]))
        )
        if not ok:
            raise HTTPException(
                status.HTTP_401_UNAUTHORIZED, "invalid credentials", headers={"WWW-Authenticate": "Basic"}
            )

    @app.post(CALLBACK_PATH, dependencies=[Depends(authenticated)])
    def document_status_update(update: StatusUpdateEvent) -> dict[str, Any]:
        # A sync endpoint: FastAPI runs it in a thread, so the database work never blocks the event loop.
        from koywe_provider.ledger import DocumentFacts
        from koywe_provider.ledger.status_updates import apply_status_reports

        counts = apply_status_reports(ledger(), [DocumentFacts.from_event(update)], source="callback")
        emitted = False
        if counts.changed:
            emitted = emit(
                {
                    "source": "callback",
                    "document_id": update.document_id,
                    "taxbureau_validation_status": None
                    if update.taxbureau_validation_status is None
                    else int(update.taxbureau_validation_status),
                    **{k: getattr(counts, k) for k in ("changed", "accepted", "rejected")},
                }
            )
        log.info(
            "Koywe DOCUMENT.STATUSUPDATE for document %s: validation %s, ledger %s",
            update.document_id,
            update.taxbureau_validation_status,
            "changed" if counts.changed else ("unchanged" if counts.matched else "does not know it"),
        )
        return {
            "document_id": update.document_id,
            "matched": bool(counts.matched),
            "changed": bool(counts.changed),
            "asset_event": emitted,
        }

    return app


#: The app the plugin mounts (``/koywe``); building it reads nothing.
app = create_app()
