"""Who may see the Koywe page and who may trigger the DAGs it offers, asked of Airflow's auth manager.

Airflow does not authenticate a plugin's FastAPI app (a mounted app inherits none of the core API's
dependencies), so every route of the page depends on :func:`reader`:

1. **Login.** The user comes from Airflow's own dependency
   :func:`airflow.api_fastapi.core_api.security.get_user`: the ``Authorization: Bearer`` token, else the
   ``_token`` session cookie the UI's login sets (the page is an iframe of the same origin, so the
   browser sends it). No credential → 401; an invalid, forged or revoked token → 403 (Airflow's own
   answers).
2. **Permission.** The ledger holds what the runs of the Koywe DAGs report (references, states, Koywe's
   errors), so reading it takes what reading those runs takes: ``is_authorized_dag(method="GET",
   access_entity=RUN)`` on :data:`LEDGER_DAG_ID` (``koywe_daily_issuance``, the DAG that fills the
   ledger) → 403 otherwise. With the simple auth manager that is any role (viewer and up); a user
   without a role is refused. With FAB or another auth manager, per-DAG grants apply as they do in the
   rest of the UI; no permission of our own has to be created.
3. **Triggering** is never done by the page's server: its buttons open a form whose submit calls
   Airflow's public REST API (``POST /api/v2/dags/{dag_id}/dagRuns``) from the browser with the user's
   own session, so Airflow checks the permission again. :meth:`AirflowPermissions.may_trigger`
   (``is_authorized_dag(method="POST", access_entity=RUN)``) only decides whether a button is offered.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Annotated, Protocol

from airflow.api_fastapi.auth.managers.models.base_user import BaseUser
from airflow.api_fastapi.core_api.security import GetUserDep
from fastapi import Depends, HTTPException, Request, status

#: Reading the ledger takes read access to this DAG's runs.
LEDGER_DAG_ID = "koywe_daily_issuance"


class Permissions(Protocol):
    def may_read(self, user: BaseUser) -> bool: ...

    def may_trigger(self, user: BaseUser, dag_id: str) -> bool: ...


class AirflowPermissions:
    """:class:`Permissions` answered by Airflow's configured auth manager."""

    def _dag(self, user: BaseUser, method: str, dag_id: str) -> bool:
        from airflow.api_fastapi.app import get_auth_manager
        from airflow.api_fastapi.auth.managers.models.resource_details import DagAccessEntity, DagDetails
        from airflow.configuration import conf

        team_name = None
        if conf.getboolean("core", "multi_team", fallback=False):
            from airflow.models.dag import DagModel

            team_name = DagModel.get_team_name(dag_id)
        return bool(
            get_auth_manager().is_authorized_dag(
                method=method,  # type: ignore[arg-type]
                access_entity=DagAccessEntity.RUN,
                details=DagDetails(id=dag_id, team_name=team_name),
                user=user,
            )
        )

    def may_read(self, user: BaseUser) -> bool:
        return self._dag(user, "GET", LEDGER_DAG_ID)

    def may_trigger(self, user: BaseUser, dag_id: str) -> bool:
        return self._dag(user, "POST", dag_id)


@dataclass
class Reader:
    """The signed-in user the page serves, with what they may trigger (asked once per DAG, on demand)."""

    user: BaseUser
    permissions: Permissions
    _triggers: dict[str, bool] = field(default_factory=dict)

    @property
    def name(self) -> str:
        return self.user.get_name()

    def may_trigger(self, dag_id: str) -> bool:
        if dag_id not in self._triggers:
            self._triggers[dag_id] = self.permissions.may_trigger(self.user, dag_id)
        return self._triggers[dag_id]


def reader(request: Request, user: GetUserDep) -> Reader:
    """FastAPI dependency of every route: the signed-in user (401/403 from Airflow's ``get_user``) with
    read access to the ledger (403 otherwise)."""
    permissions: Permissions = request.app.state.permissions
    if not permissions.may_read(user):
        raise HTTPException(
            status.HTTP_403_FORBIDDEN,
            f"Forbidden: reading the Koywe ledger takes read access to the runs of {LEDGER_DAG_ID}",
        )
    return Reader(user=user, permissions=permissions)


ReaderDep = Annotated[Reader, Depends(reader)]

__all__ = ["LEDGER_DAG_ID", "AirflowPermissions", "Permissions", "Reader", "ReaderDep", "reader"]
