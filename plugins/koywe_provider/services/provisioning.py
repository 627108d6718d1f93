"""Account provisioning: provisioning requests, secret references, validation, create and confirm.

A **provisioning request** (DAG run conf of the form, or one object of a ``*.json``/``*.jsonl`` inbox
file) carries the company's ``POST /accounts`` fields (seed ``003_…``) without any secret::

    {"request_id": "acme-cl",                       # optional; default "<file>#<n>" or "form"
     "account": {"country_id": 253, "contact_name": …, "registration_additional_data": {…}},
     "secrets_conn_id": "koywe_onboarding_acme",     # optional, see below
     "secrets": {"admin_password": "var:acme_admin_password",
                 "certificate_file": "file:acme/firma.pfx",
                 "certificate_password": "conn:koywe_onboarding_acme:certificate_password"}}

Secret references (resolved in the task, at run time, then masked with ``mask_secret``):

- ``conn:<conn_id>`` → the connection's password; ``conn:<conn_id>:<key>`` → ``password``, ``login``
  or the extra field ``<key>``;
- ``var:<key>`` → the Airflow Variable ``<key>``;
- ``file:<path>`` → a file under the operator's ``secrets_dir`` (``..`` and absolute paths refused);
  file fields (certificates, RUT PDF, logo) are sent as base64, text fields as the file's text.

``secrets_conn_id`` fills every secret that has no explicit reference: ``admin_password`` = the
connection's password; ``certificate_password`` and base64 ``certificate_file``/``certificate_key``/
``certificate_cer``/``registration_form_rut`` from extras of those names, or ``<name>_path`` extras
naming a file under ``secrets_dir``. A secret written in clear in the request is refused (it would be
stored in the DAG run conf and the ledger).
"""

from __future__ import annotations

import base64
import json
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from koywe_provider.exceptions import (
    KoyweError,
    KoyweNotFoundError,
    KoyweOutcomeUnknownError,
    KoyweRejectedError,
)
from koywe_provider.ledger.accounts import AccountLedger, AccountState
from koywe_provider.models.accounts import ACCOUNT_SECRET_FIELDS, COUNTRIES, account_errors
from koywe_provider.models.taxids import validate_tax_id

#: Fields of ``registration_additional_data`` that are files (base64 on the wire).
FILE_FIELDS = (
    "certificate_file",
    "certificate_key",
    "certificate_cer",
    "registration_form_rut",
    "company_logo",
)
#: Where each resolvable field lives in the ``POST /accounts`` body.
TOP_LEVEL_FIELDS = ("admin_password",)
RESOLVABLE_FIELDS = (*ACCOUNT_SECRET_FIELDS, "registration_form_rut", "company_logo")
INBOX_SUFFIXES = (".json", ".jsonl", ".ndjson")


class SecretReferenceError(ValueError):
    """A secret reference is malformed or points to nothing; the message names the reference, never a value."""


@dataclass
class ProvisioningRequest:
    """One company to onboard, as read from the form or an inbox file (no secret values)."""

    request_id: str
    source: str
    account: dict[str, Any]
    secrets: dict[str, str] = field(default_factory=dict)
    secrets_conn_id: str | None = None
    errors: list[tuple[str, str]] = field(default_factory=list)

    def public(self) -> dict[str, Any]:
        """What the ledger stores: the company fields and the secret references, nothing secret."""
        return {
            "request_id": self.request_id,
            "account": self.account,
            "secrets": self.secrets,
            "secrets_conn_id": self.secrets_conn_id,
        }


def parse_request(obj: Any, *, source: str, default_id: str) -> ProvisioningRequest:
    """A :class:`ProvisioningRequest` from a JSON object; structural problems go to ``errors`` (never raises)."""
    if not isinstance(obj, dict):
        return ProvisioningRequest(
            default_id, source, {}, errors=[("", "a provisioning request must be a JSON object")]
        )
    request_id = str(obj.get("request_id") or default_id)
    account = obj.get("account")
    errors: list[tuple[str, str]] = []
    if not isinstance(account, dict):
        errors.append(
            (
                "account",
                'is required: an object with the POST /accounts fields (Koywe\'s "Create a new account")',
            )
        )
        account = {}
    account = json.loads(json.dumps(account))  # a private copy
    secrets = obj.get("secrets") or {}
    if not isinstance(secrets, dict):
        errors.append(("secrets", "must be an object {field: reference}"))
        secrets = {}
    for name, ref in secrets.items():
        if name not in RESOLVABLE_FIELDS:
            errors.append(
                (
                    f"secrets.{name}",
                    f"is not a secret or file field; use one of {', '.join(RESOLVABLE_FIELDS)}",
                )
            )
        elif not isinstance(ref, str) or not ref.startswith(("conn:", "var:", "file:")):
            errors.append(
                (f"secrets.{name}", "must be a reference 'conn:<id>[:<key>]', 'var:<key>' or 'file:<path>'")
            )
    additional = account.get("registration_additional_data")
    for name in ACCOUNT_SECRET_FIELDS:
        where = additional if name not in TOP_LEVEL_FIELDS else account
        if isinstance(where, dict) and where.get(name) not in (None, ""):
            path = name if name in TOP_LEVEL_FIELDS else f"registration_additional_data.{name}"
            errors.append(
                (
                    path,
                    "must not be written in the request (it would be kept in the DAG run conf and the ledger): "
                    "remove it and give a reference in secrets (conn:, var: or file:) or secrets_conn_id",
                )
            )
            where.pop(name)  # never stored, never echoed
    conn_id = obj.get("secrets_conn_id") or None
    return ProvisioningRequest(
        request_id=request_id,
        source=source,
        account=account,
        secrets={k: v for k, v in secrets.items() if isinstance(v, str)},
        secrets_conn_id=str(conn_id) if conn_id else None,
        errors=errors,
    )


def read_requests(inbox) -> Iterator[ProvisioningRequest]:
    """Every provisioning request of an inbox (``ObjectStoragePath`` folder or file), files in name order.

    ``*.json`` holds one request or a list of them; ``*.jsonl``/``*.ndjson`` one request per line.
    An unreadable file or line yields one request whose ``errors`` name the file and line.
    """
    files = (
        [inbox]
        if inbox.is_file()
        else sorted((p for p in inbox.iterdir() if p.name.endswith(INBOX_SUFFIXES)), key=lambda p: p.name)
    )
    for path in files:
        source = str(path)
        try:
            text = path.read_text(encoding="utf-8")
        except (OSError, UnicodeDecodeError) as err:
            yield ProvisioningRequest(
                path.name, source, {}, errors=[("file", f"unreadable: {type(err).__name__}")]
            )
            continue
        if path.name.endswith(".json"):
            try:
                data = json.loads(text)
            except ValueError as err:
                yield ProvisioningRequest(path.name, source, {}, errors=[("file", f"not JSON: {err}")])
                continue
            items = data if isinstance(data, list) else [data]
            for n, obj in enumerate(items, start=1):
                default = path.name if len(items) == 1 else f"{path.name}#{n}"
                yield parse_request(obj, source=source, default_id=default)
            continue
        for line_no, line in enumerate(text.splitlines(), start=1):
            if not line.strip():
                continue
            try:
                obj = json.loads(line)
            except ValueError as err:
                yield ProvisioningRequest(
                    f"{path.name}#L{line_no}",
                    source,
                    {},
                    errors=[("line", f"line {line_no} is not JSON: {err}")],
                )
                continue
            yield parse_request(obj, source=source, default_id=f"{path.name}#L{line_no}")


# ------------------------------------------------------------------------------------- secrets
class SecretResolver:
    """Resolves secret references at run time and masks every value it returns.

    :param secrets_dir: the folder ``file:`` references are relative to (``None``: ``file:`` refused).
    :param mask: called with each secret value (``airflow.sdk.log.mask_secret`` in a task).
    """

    def __init__(self, secrets_dir: str | Path | None, *, mask=None) -> None:
        self.secrets_dir = Path(secrets_dir).resolve() if secrets_dir else None
        self.mask = mask or _mask_secret

    def _file(self, relative: str) -> bytes:
        if self.secrets_dir is None:
            raise SecretReferenceError(f"file:{relative}: no secrets folder is configured (secrets_dir)")
        candidate = (self.secrets_dir / relative).resolve()
        if Path(relative).is_absolute() or not candidate.is_relative_to(self.secrets_dir):
            raise SecretReferenceError(f"file:{relative}: must be a path inside the secrets folder")
        try:
            return candidate.read_bytes()
        except OSError as err:
            raise SecretReferenceError(f"file:{relative}: cannot be read ({type(err).__name__})") from None

    @staticmethod
    def _connection(conn_id: str):
        from airflow.sdk import BaseHook

        try:
            return BaseHook.get_connection(conn_id)
        except Exception as err:  # AirflowNotFoundException and backend errors alike
            raise SecretReferenceError(f"connection {conn_id!r} not found ({type(err).__name__})") from None

    def resolve(self, name: str, ref: str) -> str:
        """The value of field ``name`` (base64 for file fields) from reference ``ref``."""
        kind, _, rest = ref.partition(":")
        binary = name in FILE_FIELDS
        if kind == "file":
            raw = self._file(rest)
            value = base64.b64encode(raw).decode() if binary else raw.decode("utf-8").strip()
        elif kind == "var":
            from airflow.sdk import Variable

            try:
                value = Variable.get(rest)
            except Exception as err:
                raise SecretReferenceError(f"variable {rest!r} not found ({type(err).__name__})") from None
        elif kind == "conn":
            conn_id, _, key = rest.partition(":")
            conn = self._connection(conn_id)
            if key in ("", "password"):
                value = conn.password
            elif key == "login":
                value = conn.login
            else:
                value = (conn.extra_dejson or {}).get(key)
            if value in (None, ""):
                raise SecretReferenceError(f"{ref}: the connection has no {key or 'password'}")
        else:
            raise SecretReferenceError(f"{ref!r}: use 'conn:<id>[:<key>]', 'var:<key>' or 'file:<path>'")
        value = str(value)
        if name in ACCOUNT_SECRET_FIELDS:
            self.mask(value)
        return value

    def from_connection(self, conn_id: str, name: str) -> str | None:
        """Field ``name`` from the ``secrets_conn_id`` connection (``None`` when it has none)."""
        conn = self._connection(conn_id)
        extra = conn.extra_dejson or {}
        if name == "admin_password":
            value = conn.password or extra.get("admin_password")
        elif extra.get(name) not in (None, ""):
            value = extra[name]
        elif extra.get(f"{name}_path") not in (None, ""):
            raw = self._file(str(extra[f"{name}_path"]))
            value = base64.b64encode(raw).decode() if name in FILE_FIELDS else raw.decode("utf-8").strip()
        else:
            return None
        value = str(value)
        if name in ACCOUNT_SECRET_FIELDS:
            self.mask(value)
        return value


def _mask_secret(value: str) -> None:
    from airflow.sdk.log import mask_secret

    mask_secret(value)


def full_payload(
    request: ProvisioningRequest, resolver: SecretResolver
) -> tuple[dict[str, Any], list[tuple[str, str]]]:
    """The ``POST /accounts`` body with every secret resolved, and the resolution errors."""
    payload = json.loads(json.dumps(request.account))
    additional = payload.get("registration_additional_data")
    if not isinstance(additional, dict):
        additional = {} if additional is None else additional
    errors: list[tuple[str, str]] = []
    for name in RESOLVABLE_FIELDS:
        value = None
        try:
            if name in request.secrets:
                value = resolver.resolve(name, request.secrets[name])
            elif request.secrets_conn_id:
                value = resolver.from_connection(request.secrets_conn_id, name)
        except SecretReferenceError as err:
            errors.append((f"secrets.{name}", f"{err}; fix the reference or create it"))
            continue
        if value is None:
            continue
        if name in TOP_LEVEL_FIELDS:
            payload[name] = value
        elif isinstance(additional, dict):
            additional[name] = value
    if isinstance(additional, dict) and (
        additional or "registration_additional_data" in payload or request.account
    ):
        payload["registration_additional_data"] = additional
    return payload, errors


def account_key(account: dict[str, Any]) -> tuple[int, str] | None:
    """``(country_id, registration_tax_id_code in Koywe's format)``, or ``None`` when not usable."""
    try:
        country = int(str(account.get("country_id")).strip())
    except (TypeError, ValueError):
        return None
    code = account.get("registration_tax_id_code")
    kind = str(account.get("registration_tax_id_type") or "").strip().upper()
    if country not in COUNTRIES or code in (None, "") or not kind:
        return None
    try:
        return country, validate_tax_id(kind, str(code))
    except ValueError:
        return country, str(code).strip()[:64]


# ---------------------------------------------------------------------------------- the steps
def validate_requests(
    requests: list[ProvisioningRequest],
    accounts: AccountLedger,
    resolver: SecretResolver,
    *,
    run_id: str | None,
    log=None,
) -> dict[str, Any]:
    """Validate every request, record it in ``koywe_accounts`` and say which ones to create.

    :returns: ``{"requests": n, "to_create": [pk…], "invalid": [{"request", "source", "errors"}],
        "existing": [{"request", "state", "koywe_account_id"}]}`` — request ids, states and error texts
        only. A company already ``creating``/``created``/``confirmed``/``unknown`` is never sent again.
    """
    summary: dict[str, Any] = {"requests": len(requests), "to_create": [], "invalid": [], "existing": []}
    seen: dict[tuple[int, str], str] = {}
    for request in requests:
        errors = list(request.errors)
        payload, secret_errors = full_payload(request, resolver)
        errors.extend(secret_errors)
        found, _normalised = account_errors(payload)
        errors.extend(found)
        errors = list(dict.fromkeys(errors))
        key = account_key(request.account)
        if key is not None and key in seen:
            errors.append(
                (
                    "registration_tax_id_code",
                    f"the same company is also requested by {seen[key]!r} in this run; keep one",
                )
            )
        if key is None:
            summary["invalid"].append(
                {"request": request.request_id, "source": request.source, "errors": errors}
            )
            continue
        seen[key] = request.request_id
        pk, state, row = accounts.record_request(
            country_id=key[0],
            registration_tax_id_code=key[1],
            registration_tax_id_type=str(request.account.get("registration_tax_id_type") or "") or None,
            legal_name=request.account.get("registration_legal_name_company"),
            request_id=request.request_id,
            source=request.source,
            request=request.public(),
            errors=errors,
            run_id=run_id,
        )
        if state == AccountState.VALIDATED:
            summary["to_create"].append(pk)
        elif state == AccountState.INVALID:
            summary["invalid"].append(
                {"request": request.request_id, "source": request.source, "errors": errors}
            )
        else:
            summary["existing"].append(
                {"request": request.request_id, "state": state, "koywe_account_id": row["koywe_account_id"]}
            )
            if log:
                log.warning(
                    "Request %s: company %s/%s is already %s at Koywe (account %s); not sent again",
                    request.request_id,
                    key[0],
                    key[1],
                    state,
                    row["koywe_account_id"],
                )
    summary["invalid"] = [{**i, "errors": [list(e) for e in i["errors"]]} for i in summary["invalid"]]
    return summary


@dataclass
class CreateResult:
    """Outcome of one create: small enough for an XCom."""

    id: int
    state: str
    koywe_account_id: str | None = None
    sent: bool = False
    error: str | None = None

    def as_dict(self) -> dict[str, Any]:
        return {k: v for k, v in self.__dict__.items()}


def create_account(
    pk: int, accounts: AccountLedger, hook, resolver: SecretResolver, *, owner: str, log=None
) -> CreateResult:
    """``POST /accounts`` for ledger row ``pk``, exactly once.

    The row is claimed (``creating``, committed) before the POST. 201 → ``created``; 400 → ``failed``;
    timeout/dropped after sending (:class:`KoyweOutcomeUnknownError`) → ``unknown`` (a person checks
    Koywe; never retried automatically); 5xx/429/refused/auth → back to ``validated`` and the exception
    is re-raised so Airflow retries. A row in any other state is not sent.
    """
    from koywe_provider.models.accounts import AccountValidationError, validate_account

    row = accounts.claim(pk, owner=owner)
    if row["state"] != AccountState.CREATING or row["claimed_by"] != owner:
        return CreateResult(pk, row["state"], row["koywe_account_id"], error=row["last_error"])
    stored = row["request"] or {}
    request = parse_request(stored, source=row["source"], default_id=row["request_id"])
    payload, errors = full_payload(request, resolver)
    try:
        if errors:
            raise AccountValidationError(errors, request=request.request_id)
        body = validate_account(payload, request=request.request_id)
    except AccountValidationError as err:
        accounts.mark_failed(pk, str(err))
        return CreateResult(pk, AccountState.FAILED, error=str(err))
    try:
        account_id = hook.create_account(body)
    except KoyweRejectedError as err:
        accounts.mark_failed(pk, f"Koywe refused the account: {err.error_message or err}")
        return CreateResult(pk, AccountState.FAILED, sent=True, error=err.error_message or str(err))
    except KoyweOutcomeUnknownError as err:
        accounts.mark_unknown(
            pk, f"{err}; check Koywe's web app for {row['registration_tax_id_code']} and resolve by hand"
        )
        return CreateResult(pk, AccountState.UNKNOWN, sent=True, error=str(err))
    except KoyweError as err:
        accounts.release(pk, f"{type(err).__name__}: {err}")
        raise
    except Exception as err:
        accounts.mark_unknown(pk, f"unexpected {type(err).__name__} while sending; check Koywe by hand")
        raise
    accounts.mark_created(pk, account_id)
    if log:
        log.info("Request %s: Koywe created account %s", request.request_id, account_id)
    return CreateResult(pk, AccountState.CREATED, account_id, sent=True)


def confirm_account(pk: int, accounts: AccountLedger, hook, *, log=None) -> CreateResult:
    """``GET /accounts/{account_id}`` for a ``created`` row; ``confirmed`` when country and tax id agree.

    Accepts Koywe's ``{account_id, account_created: {…}}`` (OpenAPI) and a flat account object. A
    disagreement is noted in ``last_error`` and the row stays ``created``; any other state is left alone.
    """
    row = accounts.get(pk)
    if row is None or row["state"] not in (AccountState.CREATED, AccountState.CONFIRMED):
        return CreateResult(pk, row["state"] if row else "missing", row and row["koywe_account_id"])
    try:
        answer = hook.get_account(row["koywe_account_id"])
    except KoyweNotFoundError:
        accounts.note(pk, f"GET /accounts/{row['koywe_account_id']} answered 404 right after the create")
        return CreateResult(pk, row["state"], row["koywe_account_id"], error="not found at Koywe")
    country = answer.country_id
    code = answer.registration_tax_id_code
    mismatch = []
    if country is not None and str(country) != str(row["country_id"]):
        mismatch.append(f"country_id {country} != {row['country_id']}")
    if code is not None and row["registration_tax_id_type"]:
        try:
            same = (
                validate_tax_id(row["registration_tax_id_type"], str(code)) == row["registration_tax_id_code"]
            )
        except ValueError:
            same = False
        if not same:
            mismatch.append(f"registration_tax_id_code {code} != {row['registration_tax_id_code']}")
    if mismatch:
        accounts.note(pk, "Koywe's account differs from the request: " + "; ".join(mismatch))
        return CreateResult(pk, row["state"], row["koywe_account_id"], error="; ".join(mismatch))
    accounts.mark_confirmed(pk, answer.certification_status)
    if log:
        log.info("Account %s confirmed by GET /accounts", row["koywe_account_id"])
    return CreateResult(pk, AccountState.CONFIRMED, row["koywe_account_id"])


def build_account_report(
    accounts: AccountLedger, *, run_id: str, validation: dict[str, Any] | None
) -> dict[str, Any]:
    """The provisioning report of a run: every request with its state, Koywe id and every error.

    Carries request ids, company names, tax ids, states and messages — never a secret.
    """
    validation = validation or {}
    rows = accounts.for_run(run_id)
    entries = []
    for row in rows:
        entries.append(
            {
                "request": row["request_id"],
                "country_id": row["country_id"],
                "registration_tax_id_code": row["registration_tax_id_code"],
                "registration_legal_name_company": row["registration_legal_name_company"],
                "state": row["state"],
                "koywe_account_id": row["koywe_account_id"],
                "errors": row["errors"] or [],
                "last_error": row["last_error"],
            }
        )
    recorded = {e["request"] for e in entries}
    for item in validation.get("invalid", []):
        if item["request"] not in recorded:
            entries.append(
                {"request": item["request"], "state": AccountState.INVALID.value, "errors": item["errors"]}
            )
    for item in validation.get("existing", []):
        entries.append({**item, "errors": [], "note": "already known: not sent again"})
    counts: dict[str, int] = {}
    for entry in entries:
        counts[entry["state"]] = counts.get(entry["state"], 0) + 1
    return {
        "run_id": run_id,
        "requests": validation.get("requests", len(entries)),
        "states": counts,
        "needs_a_person": [e["request"] for e in entries if e["state"] == AccountState.UNKNOWN],
        "accounts": entries,
    }


def render_account_report(report: dict[str, Any]) -> str:
    """Markdown table of :func:`build_account_report`'s result."""
    lines = [
        f"## Koywe account provisioning — run {report['run_id']}",
        "",
        f"Requests: {report['requests']} · states: {json.dumps(report['states'], sort_keys=True)}",
        "",
        "| request | state | Koywe account | errors |",
        "|---|---|---|---|",
    ]
    for e in report["accounts"]:
        errors = "; ".join(f"{f}: {m}" for f, m in e.get("errors") or []) or (e.get("last_error") or "")
        lines.append(
            f"| {e['request']} | {e['state']} | {e.get('koywe_account_id') or ''} | {errors.replace('|', '/')} |"
        )
    if report["needs_a_person"]:
        lines += ["", "**Unknown outcome, check Koywe by hand:** " + ", ".join(report["needs_a_person"])]
    return "\n".join(lines)


# ------------------------------------------------------------------------------------- the form
#: Form field (DAG Param) → secret field it references.
FORM_SECRET_PARAMS = {f"{name}_ref": name for name in RESOLVABLE_FIELDS}
_FORM_ACCOUNT_FIELDS = (
    "country_id",
    "contact_name",
    "contact_phone",
    "admin_email",
    "registration_legal_name_company",
    "registration_tax_id_code",
    "registration_tax_id_type",
    "registration_company_size",
    "registration_company_industry_sector",
)


def request_from_form(params: dict[str, Any]) -> dict[str, Any]:
    """A provisioning request object from the flat Params form of ``koywe_account_provisioning``.

    Form fields: the ``POST /accounts`` fields of :data:`_FORM_ACCOUNT_FIELDS`, ``terms_of_use_accepted``
    (bool → ``registration_terms_of_use`` 1/0), ``registration_test_set_id`` (Colombia),
    ``account_config`` (object), ``request_id``, ``secrets_conn_id`` and ``<field>_ref`` secret
    references (``admin_password_ref``, ``certificate_file_ref`` …). Empty fields are left out.
    """
    account: dict[str, Any] = {
        name: params[name] for name in _FORM_ACCOUNT_FIELDS if params.get(name) not in (None, "")
    }
    account["registration_terms_of_use"] = 1 if params.get("terms_of_use_accepted") else 0
    account["registration_type_use"] = 1
    additional: dict[str, Any] = {}
    if params.get("registration_test_set_id"):
        additional["registration_test_set_id"] = params["registration_test_set_id"]
    account["registration_additional_data"] = additional
    config = params.get("account_config")
    if isinstance(config, dict):
        config = {k: v for k, v in config.items() if v not in (None, "")}
        if config:
            account["account_config"] = config
    secrets = {name: params[p] for p, name in FORM_SECRET_PARAMS.items() if params.get(p)}
    return {
        "request_id": params.get("request_id") or None,
        "account": account,
        "secrets": secrets,
        "secrets_conn_id": params.get("secrets_conn_id") or None,
    }
