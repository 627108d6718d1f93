"""The accounts ledger: one row per company onboarded to Koywe (``POST /accounts``, seed ``003_…``).

Table ``koywe_accounts``, unique on ``(country_id, registration_tax_id_code)``: a company is never
created twice. Koywe has no account search, so an ambiguous create (timeout after sending) becomes
``unknown`` and waits for a person; nothing retries it automatically.

State machine (``koywe_accounts.state``)::

    invalid    <- validation failed (``errors`` lists every (field, message)); may be re-submitted
    validated  <- valid request recorded, never sent (or a transient failure before Koywe acted)
    validated --claim--> creating (committed BEFORE the POST)
    creating --201 account_id--> created --GET /accounts/{id} matches--> confirmed
    creating --400--> failed (Koywe's message in last_error; may be re-submitted)
    creating --timeout / dropped after send, or found ``creating`` by a later try--> unknown
    unknown --person: resolve(account_id) or resolve(None)--> created | validated

Rows store the non-secret request only (company fields and secret *references*), never a password
or a certificate. Pure SQLAlchemy: no Airflow import.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime
from enum import StrEnum
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Engine
from sqlalchemy.orm import Mapped, Session, mapped_column, sessionmaker

from koywe_provider.ledger.errors import AccountNotFoundError
from koywe_provider.ledger.models import Base, JSONType, UTCDateTime, as_utc, utcnow


class AccountState(StrEnum):
    """``koywe_accounts.state``."""

    INVALID = "invalid"
    VALIDATED = "validated"
    CREATING = "creating"
    CREATED = "created"
    CONFIRMED = "confirmed"
    UNKNOWN = "unknown"
    FAILED = "failed"


#: States in which a company exists (or may exist) at Koywe: never sent again.
EXISTING_STATES = frozenset(
    {AccountState.CREATING, AccountState.CREATED, AccountState.CONFIRMED, AccountState.UNKNOWN}
)


class Account(Base):
    """One company to onboard, keyed by ``(country_id, registration_tax_id_code)``."""

    __tablename__ = "koywe_accounts"
    __table_args__ = (
        sa.UniqueConstraint(
            "country_id",
            "registration_tax_id_code",
            name="uq_koywe_accounts_country_id_registration_tax_id_code",
        ),
    )

    id: Mapped[int] = mapped_column(sa.Integer, primary_key=True, autoincrement=True)
    country_id: Mapped[int] = mapped_column(sa.Integer, nullable=False)
    registration_tax_id_code: Mapped[str] = mapped_column(sa.String(64), nullable=False)
    registration_tax_id_type: Mapped[str | None] = mapped_column(sa.String(16), nullable=True)
    registration_legal_name_company: Mapped[str | None] = mapped_column(sa.String(300), nullable=True)
    request_id: Mapped[str] = mapped_column(sa.String(256), nullable=False)
    source: Mapped[str] = mapped_column(sa.String(512), nullable=False)
    state: Mapped[str] = mapped_column(sa.String(16), nullable=False, index=True)
    #: The provisioning request without secrets: ``{"account": {...}, "secrets": {field: reference}}``.
    request: Mapped[dict[str, Any] | None] = mapped_column(JSONType, nullable=True)
    errors: Mapped[list[Any] | None] = mapped_column(JSONType, nullable=True)
    koywe_account_id: Mapped[str | None] = mapped_column(sa.String(64), nullable=True)
    certification_status: Mapped[str | None] = mapped_column(sa.String(64), nullable=True)
    last_error: Mapped[str | None] = mapped_column(sa.Text, nullable=True)
    attempts: Mapped[int] = mapped_column(sa.Integer, nullable=False, default=0)
    run_id: Mapped[str | None] = mapped_column(sa.String(250), nullable=True, index=True)
    claimed_by: Mapped[str | None] = mapped_column(sa.String(250), nullable=True)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, nullable=False, default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime, nullable=False, default=utcnow)
    sent_at: Mapped[datetime | None] = mapped_column(UTCDateTime, nullable=True)
    confirmed_at: Mapped[datetime | None] = mapped_column(UTCDateTime, nullable=True)


_T = Account.__table__
_COLUMNS = [c.name for c in _T.columns]


class AccountLedger:
    """Reads and writes ``koywe_accounts`` on a :class:`~koywe_provider.ledger.Ledger`'s engine.

    Every method runs one short transaction (never held across an HTTP call) and returns plain dicts.
    ``clock`` returns the current time for every timestamp written (default: the system clock).
    Raises :class:`~koywe_provider.ledger.errors.AccountNotFoundError` (a ``LookupError``) for an
    unknown primary key.
    """

    def __init__(self, engine: Engine, *, clock: Callable[[], datetime] | None = None) -> None:
        self.engine = engine
        self._clock = clock or utcnow
        self._session: sessionmaker[Session] = sessionmaker(engine, expire_on_commit=False)
        self._read: sessionmaker[Session] = sessionmaker(
            engine.execution_options(koywe_sqlite_begin="DEFERRED"), expire_on_commit=False
        )

    @classmethod
    def of(cls, ledger: Any) -> AccountLedger:
        """The accounts ledger of a :class:`~koywe_provider.ledger.Ledger` (same database and clock)."""
        return cls(ledger.engine, clock=getattr(ledger, "clock", None))

    def _now(self) -> datetime:
        return as_utc(self._clock())  # type: ignore[return-value]

    @staticmethod
    def _row(row: Any) -> dict[str, Any]:
        return {name: getattr(row, name) for name in _COLUMNS}

    def get(self, pk: int) -> dict[str, Any] | None:
        with self._read() as session:
            row = session.execute(sa.select(_T).where(_T.c.id == pk)).first()
            return self._row(row) if row else None

    def get_by_tax_id(self, country_id: int, registration_tax_id_code: str) -> dict[str, Any] | None:
        with self._read() as session:
            row = session.execute(
                sa.select(_T).where(
                    _T.c.country_id == country_id, _T.c.registration_tax_id_code == registration_tax_id_code
                )
            ).first()
            return self._row(row) if row else None

    def record_request(
        self,
        *,
        country_id: int,
        registration_tax_id_code: str,
        registration_tax_id_type: str | None,
        legal_name: str | None,
        request_id: str,
        source: str,
        request: dict[str, Any],
        errors: list[tuple[str, str]] | None,
        run_id: str | None,
    ) -> tuple[int, str, dict[str, Any]]:
        """Record a validated (``errors`` empty) or invalid request for a company.

        :returns: ``(pk, state, row)``. A company that exists or may exist at Koywe (``creating``,
            ``created``, ``confirmed``, ``unknown``) is left untouched and its row is returned as is; an
            ``invalid``/``failed``/``validated`` row is replaced by this request.
        """
        now = self._now()
        state = AccountState.INVALID if errors else AccountState.VALIDATED
        values = {
            "registration_tax_id_type": registration_tax_id_type,
            "registration_legal_name_company": (legal_name or "")[:300] or None,
            "request_id": request_id[:256],
            "source": source[:512],
            "state": state.value,
            "request": request,
            "errors": [list(e) for e in errors] if errors else None,
            "last_error": None,
            "run_id": run_id,
            "claimed_by": None,
            "updated_at": now,
        }
        key = (_T.c.country_id == country_id) & (_T.c.registration_tax_id_code == registration_tax_id_code)
        for _ in range(2):  # a concurrent insert of the same company: read it back and decide again
            with self._session.begin() as session:
                existing = session.execute(sa.select(_T).where(key).with_for_update()).first()
                if existing is not None:
                    if existing.state in EXISTING_STATES:
                        return existing.id, existing.state, self._row(existing)
                    session.execute(sa.update(_T).where(_T.c.id == existing.id).values(**values))
                    pk = existing.id
                else:
                    try:
                        with session.begin_nested():
                            pk = session.execute(
                                sa.insert(_T).values(
                                    country_id=country_id,
                                    registration_tax_id_code=registration_tax_id_code,
                                    attempts=0,
                                    created_at=now,
                                    **values,
                                )
                            ).inserted_primary_key[0]
                    except sa.exc.IntegrityError:
                        continue
                row = session.execute(sa.select(_T).where(_T.c.id == pk)).first()
                return pk, state.value, self._row(row)
        raise RuntimeError(f"could not record the account request {request_id!r}")

    def claim(self, pk: int, *, owner: str) -> dict[str, Any]:
        """Move a ``validated`` row to ``creating`` before its POST (committed first).

        A row found ``creating`` under the same ``owner`` prefix (an earlier try of the same task, which
        may have sent its POST) becomes ``unknown``. :returns: the row after the call; the caller POSTs
        only when ``row["state"] == "creating"`` and ``row["claimed_by"] == owner``.
        """
        with self._session.begin() as session:
            row = session.execute(sa.select(_T).where(_T.c.id == pk).with_for_update()).first()
            if row is None:
                raise AccountNotFoundError(pk)
            now = self._now()
            if row.state == AccountState.VALIDATED:
                session.execute(
                    sa.update(_T)
                    .where(_T.c.id == pk)
                    .values(
                        state=AccountState.CREATING.value,
                        claimed_by=owner,
                        attempts=row.attempts + 1,
                        sent_at=now,
                        updated_at=now,
                    )
                )
            elif row.state == AccountState.CREATING and _same_task(row.claimed_by, owner):
                session.execute(
                    sa.update(_T)
                    .where(_T.c.id == pk)
                    .values(
                        state=AccountState.UNKNOWN.value,
                        last_error="an earlier try stopped after claiming the row; the POST may have reached "
                        "Koywe: check in Koywe's web app and resolve by hand",
                        updated_at=now,
                    )
                )
            row = session.execute(sa.select(_T).where(_T.c.id == pk)).first()
            return self._row(row)

    def _set(self, pk: int, expected: set[str], **values: Any) -> dict[str, Any]:
        values["updated_at"] = self._now()
        with self._session.begin() as session:
            result = session.execute(
                sa.update(_T).where(_T.c.id == pk, _T.c.state.in_(expected)).values(**values)
            )
            row = session.execute(sa.select(_T).where(_T.c.id == pk)).first()
            if row is None:
                raise AccountNotFoundError(pk)
            if result.rowcount != 1:
                raise ValueError(f"account row {pk} is {row.state!r}, expected one of {sorted(expected)}")
            return self._row(row)

    def mark_created(self, pk: int, koywe_account_id: str) -> dict[str, Any]:
        """``creating`` (or ``unknown``, resolved) → ``created`` with Koywe's ``account_id``."""
        return self._set(
            pk,
            {AccountState.CREATING, AccountState.UNKNOWN},
            state=AccountState.CREATED.value,
            koywe_account_id=str(koywe_account_id),
            last_error=None,
        )

    def mark_confirmed(self, pk: int, certification_status: str | None = None) -> dict[str, Any]:
        """``created`` → ``confirmed`` after ``GET /accounts/{id}`` agreed with the request."""
        return self._set(
            pk,
            {AccountState.CREATED, AccountState.CONFIRMED},
            state=AccountState.CONFIRMED.value,
            certification_status=certification_status,
            confirmed_at=self._now(),
        )

    def mark_failed(self, pk: int, error: str) -> dict[str, Any]:
        """``creating`` → ``failed`` (Koywe refused the request; fix it and submit again)."""
        return self._set(
            pk, {AccountState.CREATING}, state=AccountState.FAILED.value, last_error=error[:4000]
        )

    def mark_unknown(self, pk: int, error: str) -> dict[str, Any]:
        """``creating`` → ``unknown``: sent, no answer; a person must check Koywe before anything else."""
        return self._set(
            pk, {AccountState.CREATING}, state=AccountState.UNKNOWN.value, last_error=error[:4000]
        )

    def release(self, pk: int, error: str) -> dict[str, Any]:
        """``creating`` → ``validated``: the POST certainly did not take effect (5xx, refused, 429)."""
        return self._set(
            pk,
            {AccountState.CREATING},
            state=AccountState.VALIDATED.value,
            last_error=error[:4000],
            claimed_by=None,
        )

    def note(self, pk: int, error: str) -> None:
        """Record a problem (e.g. a confirmation mismatch) without changing the state."""
        with self._session.begin() as session:
            session.execute(
                sa.update(_T).where(_T.c.id == pk).values(last_error=error[:4000], updated_at=self._now())
            )

    def resolve_unknown(self, pk: int, koywe_account_id: str | None) -> dict[str, Any]:
        """A person checked Koywe: ``account_id`` found → ``created``; ``None`` (not created) → ``validated``."""
        if koywe_account_id:
            return self.mark_created(pk, koywe_account_id)
        return self._set(pk, {AccountState.UNKNOWN}, state=AccountState.VALIDATED.value, claimed_by=None)

    def for_run(self, run_id: str) -> list[dict[str, Any]]:
        """Rows last touched by ``run_id``, in id order."""
        with self._read() as session:
            return [
                self._row(r)
                for r in session.execute(sa.select(_T).where(_T.c.run_id == run_id).order_by(_T.c.id))
            ]

    def by_state(self, *states: str) -> list[dict[str, Any]]:
        with self._read() as session:
            query = sa.select(_T).order_by(_T.c.id)
            if states:
                query = query.where(_T.c.state.in_(states))
            return [self._row(r) for r in session.execute(query)]


def _same_task(claimed_by: str | None, owner: str) -> bool:
    """Owners are ``dag/run/task/map_index/tryN``: same task instance, another try."""
    if not claimed_by:
        return False
    return claimed_by.rsplit("/", 1)[0] == owner.rsplit("/", 1)[0]


__all__ = ["EXISTING_STATES", "Account", "AccountLedger", "AccountNotFoundError", "AccountState"]
