"""``AirflowApiHook``: Airflow's own public REST API (``/api/v2``), for what a task cannot do through the
Task SDK — setting its DAG run's note.

Why the REST API (Airflow 3.3.2, see ``docs/DESIGN.md``, "Run notes"): the Task SDK's messages to its
supervisor (``airflow.sdk.execution_time.comms``) and the Execution API they call have no write of a DAG
run's note (only ``POST /execution/dag-runs/{dag_id}/{run_id}`` sets a note, on a *new* run); DAG-level
callbacks run in the DAG processor with the same read-mostly messages; the task's own JWT is for the
Execution API's audience, not the public API's. The public API's ``PATCH
/api/v2/dags/{dag_id}/dagRuns/{dag_run_id}`` with ``{"note": …}`` is what the UI's "Add note" calls.

The connection ``koywe_airflow_api`` (type ``http``): ``host`` = the API server's base URL (e.g.
``http://127.0.0.1:8080``), ``login``/``password`` = an Airflow user allowed to edit DAG runs (simple
auth manager role ``user``; FAB: "can edit on DAG Runs"), exchanged for a JWT at ``POST /auth/token``.
Without ``login``, ``password`` is used as a ready bearer token (e.g. a deployment API token).
"""

from __future__ import annotations

from typing import Any
from urllib.parse import quote

import requests
from airflow.providers.http.hooks.http import HttpHook

#: Longest note the public API accepts (``DAGRunPatchBody.note``, ``max_length=1000``).
MAX_NOTE_LENGTH = 1000


class AirflowApiError(RuntimeError):
    """The API server refused or failed a call; the message has the status and the endpoint, never a
    token or a password."""


class AirflowApiHook(HttpHook):
    """Calls Airflow's public REST API as the connection's user.

    :param airflow_api_conn_id: an ``http`` connection (see the module docstring).
    :param timeout: seconds per request (connect and read).
    """

    conn_name_attr = "airflow_api_conn_id"
    default_conn_name = "koywe_airflow_api"
    conn_type = "http"
    hook_name = "Airflow REST API (Koywe run notes)"

    def __init__(
        self, airflow_api_conn_id: str = default_conn_name, *, timeout: float = 10, **kwargs: Any
    ) -> None:
        super().__init__(method="PATCH", http_conn_id=airflow_api_conn_id, **kwargs)
        self.airflow_api_conn_id = airflow_api_conn_id
        self.timeout = timeout
        self._session: requests.Session | None = None

    def _authorised_session(self) -> requests.Session:
        if self._session is not None:
            return self._session
        conn = self.get_connection(self.airflow_api_conn_id)
        session = self.get_conn()
        session.auth = None  # HttpHook's basic auth would replace the bearer header
        if conn.login:
            response = session.post(
                self.url_from_endpoint("auth/token"),
                json={"username": conn.login, "password": conn.password or ""},
                timeout=self.timeout,
            )
            if response.status_code not in (200, 201):
                raise AirflowApiError(
                    f"POST /auth/token as {conn.login!r} answered {response.status_code}: check the "
                    f"connection {self.airflow_api_conn_id!r}'s login and password"
                )
            token = response.json().get("access_token")
            if not token:
                raise AirflowApiError("POST /auth/token answered without access_token")
        elif conn.password:
            token = conn.password
        else:
            raise AirflowApiError(
                f"connection {self.airflow_api_conn_id!r} has neither login/password nor a token (password)"
            )
        _mask(token)
        session.headers["Authorization"] = f"Bearer {token}"
        self._session = session
        return session

    def set_dag_run_note(self, dag_id: str, run_id: str, note: str) -> None:
        """Replace the note of DAG run ``run_id`` of ``dag_id`` (Markdown, cut to 1000 characters).

        ``PATCH /api/v2/dags/{dag_id}/dagRuns/{dag_run_id}?update_mask=note``.
        :raises AirflowApiError: the server refused (401/403: the user may not edit runs; 404: no such
            run on this API server) or failed.
        :raises AirflowNotFoundException: the connection does not exist.
        """
        session = self._authorised_session()
        endpoint = f"api/v2/dags/{quote(dag_id, safe='')}/dagRuns/{quote(run_id, safe='')}"
        response = session.patch(
            self.url_from_endpoint(endpoint),
            params={"update_mask": "note"},
            json={"note": truncate_note(note)},
            timeout=self.timeout,
        )
        if response.status_code != 200:
            raise AirflowApiError(
                f"PATCH /api/v2/dags/{dag_id}/dagRuns/{run_id} answered {response.status_code}"
                + (f": {_detail(response)}" if response.status_code < 500 else "")
            )

    def get_dag_run(self, dag_id: str, run_id: str) -> dict[str, Any]:
        """``GET /api/v2/dags/{dag_id}/dagRuns/{dag_run_id}`` (``state``, ``note`` …)."""
        session = self._authorised_session()
        endpoint = f"api/v2/dags/{quote(dag_id, safe='')}/dagRuns/{quote(run_id, safe='')}"
        response = session.get(self.url_from_endpoint(endpoint), timeout=self.timeout)
        if response.status_code != 200:
            raise AirflowApiError(f"GET {endpoint} answered {response.status_code}")
        return response.json()


def truncate_note(note: str) -> str:
    """``note`` cut to :data:`MAX_NOTE_LENGTH` characters (an ellipsis marks the cut)."""
    return note if len(note) <= MAX_NOTE_LENGTH else note[: MAX_NOTE_LENGTH - 1] + "…"


def _detail(response: requests.Response) -> str:
    try:
        detail = response.json().get("detail")
    except ValueError:
        detail = None
    return str(detail or response.reason or "")[:300]


def _mask(value: str) -> None:
    try:
        from airflow.sdk.log import mask_secret
    except ImportError:  # pragma: no cover - the Task SDK is part of Airflow 3
        return
    mask_secret(value)


__all__ = ["MAX_NOTE_LENGTH", "AirflowApiError", "AirflowApiHook", "truncate_note"]
