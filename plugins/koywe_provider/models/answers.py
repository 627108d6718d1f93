"""What Koywe answers, typed: documents (full and flat), list envelopes, accounts, auth, errors, webhooks.

Every answer of the Koywe Billing API is read here and nowhere else (``docs/DESIGN.md``, "One Koywe
vocabulary"). Unknown fields are kept (``extra="allow"``), numbers that arrive as strings are read
(``"4355.40"`` → ``Decimal("4355.40")``, ``"1"`` → ``1``), and the status fields become the enums of
:mod:`koywe_provider.models.statuses`.

Sources: Koywe's OpenAPI (``Document``, ``SimplifiedDocument``, ``AuthResponse``, ``AccountsResponse``,
the ``GET /documents`` envelope), API_NOTES ("Errors", "Documents": the three list envelopes and the
``DOCUMENT.STATUSUPDATE`` webhook), seed ``004_…`` (the two ``document_status`` fields).

============================  ====================================================================
model                         Koywe answer
============================  ====================================================================
:class:`DocumentAnswer`       ``POST /documents``, ``GET /documents/{id}``, ``PUT /documents/{id}``;
                              also every list item, flat or full (:meth:`DocumentAnswer.from_any`)
:class:`DocumentListItem`     a flat ``GET /documents`` item (OpenAPI ``SimplifiedDocument``)
:class:`DocumentPage`         one ``GET /documents`` page in any of the three envelopes
:class:`AuthAnswer`           ``POST /auth``
:class:`AccountAnswer`        ``POST /accounts`` (``{"account_id": "638"}``) and ``GET /accounts/{id}``
:class:`ErrorBody`            the body of a 4xx/5xx (``error``/``message``/``error_message``/…)
:class:`StatusUpdateEvent`    the ``DOCUMENT.STATUSUPDATE`` webhook payload
============================  ====================================================================
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from datetime import date
from decimal import Decimal, InvalidOperation
from typing import Annotated, Any, ClassVar

from pydantic import BaseModel, BeforeValidator, ConfigDict, Field, SecretStr, field_validator

from koywe_provider.models.references import internal_reference_numbers
from koywe_provider.models.statuses import (
    CounterpartyStatus,
    DocumentStatus,
    ResultStatus,
    TaxBureauSendingStatus,
    TaxBureauValidationStatus,
    as_int,
    parse_status,
)

#: ``GET /documents`` page size used for every listing (Koywe's maximum; its default is 10).
LIST_PAGE_SIZE = 100


def _text(value: Any) -> Any:
    """Ids and codes as text (``638`` → ``"638"``); ``None`` and ``""`` → ``None``."""
    if value is None or isinstance(value, bool):
        return None
    if isinstance(value, float) and value.is_integer():
        value = int(value)
    text = str(value).strip() if isinstance(value, int | str | float) else value
    return None if text == "" else text


def _decimal(value: Any) -> Decimal | None:
    if value is None or isinstance(value, bool) or value == "":
        return None
    try:
        number = Decimal(str(value).strip())
    except (InvalidOperation, ValueError):
        return None
    return number if number.is_finite() else None


def _int(value: Any) -> int | None:
    return as_int(value)


def _date_text(value: Any) -> str | None:
    """``YYYY-MM-DD`` from a date, a datetime text or a date text; other text is kept as given."""
    if value is None or value == "":
        return None
    if isinstance(value, date):
        return value.isoformat()[:10]
    return str(value).strip()[:10]


def _status(enum: type) -> BeforeValidator:
    return BeforeValidator(lambda value: parse_status(enum, value))


Text = Annotated[str | None, BeforeValidator(_text)]
Amount = Annotated[Decimal | None, BeforeValidator(_decimal)]
Int = Annotated[int | None, BeforeValidator(_int)]
IssueDate = Annotated[str | None, BeforeValidator(_date_text)]
DocumentStatusField = Annotated[DocumentStatus | int | None, _status(DocumentStatus)]
CounterpartyStatusField = Annotated[CounterpartyStatus | int | None, _status(CounterpartyStatus)]
SendingStatusField = Annotated[TaxBureauSendingStatus | int | None, _status(TaxBureauSendingStatus)]
ValidationStatusField = Annotated[TaxBureauValidationStatus | int | None, _status(TaxBureauValidationStatus)]
ResultStatusField = Annotated[ResultStatus | int | None, _status(ResultStatus)]

_KEEP = ConfigDict(extra="allow", populate_by_name=True, arbitrary_types_allowed=True)


class AnswerModel(BaseModel):
    """Base of every Koywe answer: unknown fields are kept in ``model_extra``."""

    model_config = _KEEP


class DocumentHeaderAnswer(AnswerModel):
    """``Document.header`` as Koywe returns it. ``document_status`` here is the COUNTERPARTY's view
    (0 draft, 1 issued, 2 sent to the counterparty, 3 accepted by it), never the document's life."""

    account_id: Text = None
    document_type_id: Int = None
    document_type_taxbureau: Text = None
    document_number: Text = None
    received_issued_flag: Int = None
    issue_date: IssueDate = None
    currency_id: Int = None
    issuer_tax_id_code: Text = None
    issuer_tax_id_type: Text = None
    issuer_legal_name: Text = None
    receiver_tax_id_code: Text = None
    receiver_tax_id_type: Text = None
    receiver_legal_name: Text = None
    document_status: CounterpartyStatusField = None
    taxbureau_sending_status: SendingStatusField = None
    taxbureau_validation_status: ValidationStatusField = None
    taxbureau_validation_comments: Text = None


class TotalsAnswer(AnswerModel):
    """``Document.totals``: amounts as ``Decimal`` in the document's currency."""

    net_amount: Amount = None
    taxes_amount: Amount = None
    total_amount: Amount = None


class ElectronicDocument(AnswerModel):
    """``Document.electronic_document``: base64 XML, PDF and stamp image (large: kept out of reprs)."""

    document_xml: str | None = Field(default=None, repr=False)
    document_pdf: str | None = Field(default=None, repr=False)
    stamp_img: str | None = Field(default=None, repr=False)


class ResultAnswer(AnswerModel):
    """``Document.result``: ``status`` (:class:`ResultStatus`) and Koywe's ``error_message``."""

    status: ResultStatusField = None
    error_message: Text = None


class DocumentAnswer(AnswerModel):
    """A Koywe ``Document`` (OpenAPI ``Document``), whatever endpoint or list shape it came from.

    ``document_status`` is the TOP-LEVEL field (0 draft, 1 issued, 2 cancelled), what ``PUT`` changes;
    the counterparty's ``header.document_status`` is :attr:`counterparty_status`. Read a list item or a
    raw body with :meth:`from_any`.
    """

    document_id: Text = None
    account_id: Text = None
    document_status: DocumentStatusField = None
    header: DocumentHeaderAnswer = Field(default_factory=DocumentHeaderAnswer)
    details: list[dict[str, Any]] = Field(default_factory=list)
    references: list[dict[str, Any]] = Field(default_factory=list)
    totals: TotalsAnswer = Field(default_factory=TotalsAnswer)
    electronic_document: ElectronicDocument | None = Field(default=None, repr=False)
    result: ResultAnswer = Field(default_factory=ResultAnswer)
    #: ``"full"`` (a Document with ``header``) or ``"flat"`` (a list item read into this shape).
    shape: str = Field(default="full", exclude=True)

    @field_validator("details", "references", mode="before")
    @classmethod
    def _list_of_dicts(cls, value: Any) -> Any:
        if value is None:
            return []
        return [v for v in value if isinstance(v, dict)] if isinstance(value, list) else value

    @field_validator("header", "totals", "result", mode="before")
    @classmethod
    def _object(cls, value: Any) -> Any:
        return {} if value is None or not isinstance(value, Mapping | BaseModel) else value

    @classmethod
    def from_any(cls, body: Any) -> DocumentAnswer:
        """A full ``Document`` or a flat list item (OpenAPI ``SimplifiedDocument``) as a ``DocumentAnswer``.

        A flat item's header fields go to :attr:`header` and its amounts to :attr:`totals`; its
        ``document_status`` is read as the top-level one (the flat item has no header to hold the
        counterparty's). Every field of the item is kept (``model_extra``).

        :raises TypeError: ``body`` is not a JSON object.
        """
        if isinstance(body, DocumentAnswer):
            return body
        if isinstance(body, DocumentListItem):
            return body.as_document()
        if not isinstance(body, Mapping):
            raise TypeError(f"a Koywe document is a JSON object, got {type(body).__name__}")
        if any(isinstance(body.get(key), Mapping) for key in _FULL_ONLY):
            return cls.model_validate(dict(body))
        return DocumentListItem.model_validate(dict(body)).as_document()

    # --- reading -------------------------------------------------------------------------------
    @property
    def document_number(self) -> str | None:
        """The folio (``header.document_number``)."""
        return self.header.document_number

    @property
    def counterparty_status(self) -> CounterpartyStatus | int | None:
        return self.header.document_status

    @property
    def taxbureau_sending_status(self) -> TaxBureauSendingStatus | int | None:
        status = self.header.taxbureau_sending_status
        if status is None:
            status = _extra_status(self, "taxbureau_sending_status", TaxBureauSendingStatus)
        return status

    @property
    def taxbureau_validation_status(self) -> TaxBureauValidationStatus | int | None:
        status = self.header.taxbureau_validation_status
        if status is None:
            status = _extra_status(self, "taxbureau_validation_status", TaxBureauValidationStatus)
        return status

    @property
    def taxbureau_validation_comments(self) -> str | None:
        comments = self.header.taxbureau_validation_comments
        return (
            comments
            if comments is not None
            else _text((self.model_extra or {}).get("taxbureau_validation_comments"))
        )

    @property
    def result_status(self) -> ResultStatus | int | None:
        return self.result.status

    @property
    def cancellation_status(self) -> str | None:
        """A Mexico cancellation's progress when the answer states it (``cancellation_status``:
        ``pending_acceptance``, ``cancelled`` or ``refused``; not in Koywe's published schema, read when
        present, as the project's sandbox sends it): the receiver may have to accept a cancellation before
        ``document_status`` becomes 2. ``None`` when absent or not one of those values."""
        value = (self.model_extra or {}).get("cancellation_status")
        text = str(value).strip().lower() if value is not None else ""
        text = {"canceled": "cancelled", "pending": "pending_acceptance"}.get(text, text)
        return text if text in _CANCELLATION_STATUSES else None

    @property
    def owner_account_id(self) -> str | None:
        """The account the document belongs to (``header.account_id``, else the top-level one)."""
        return self.header.account_id or self.account_id

    @property
    def internal_references(self) -> list[str]:
        """Every internal transaction id (``references[]`` entries with ``reference_code`` 5)."""
        return internal_reference_numbers({"references": self.references})

    def status_summary(self) -> dict[str, Any]:
        """The statuses as a small JSON-safe dict (trigger events, XCom): ``document_id``,
        ``document_number``, ``document_status``, ``counterparty_status``, ``taxbureau_sending_status``,
        ``taxbureau_validation_status`` (ints or ``None``), ``taxbureau_validation_comments``,
        ``result_status``."""

        def number(value: Any) -> int | None:
            return None if value is None else int(value)

        return {
            "document_id": self.document_id,
            "document_number": self.document_number,
            "document_status": number(self.document_status),
            "counterparty_status": number(self.counterparty_status),
            "taxbureau_sending_status": number(self.taxbureau_sending_status),
            "taxbureau_validation_status": number(self.taxbureau_validation_status),
            "taxbureau_validation_comments": self.taxbureau_validation_comments,
            "result_status": number(self.result_status),
        }

    @property
    def bureau_final(self) -> bool:
        """Whether the tax bureau's validation is final (accepted or rejected)."""
        status = self.taxbureau_validation_status
        return isinstance(status, TaxBureauValidationStatus) and status.is_terminal()

    def content(self) -> DocumentContent:
        """What identifies the document's content (the fields adoption must match)."""
        return DocumentContent(
            issuer_tax_id=_compact_tax_id(self.header.issuer_tax_id_code),
            document_type_id=self.header.document_type_id,
            receiver_tax_id=_compact_tax_id(self.header.receiver_tax_id_code),
            total_amount=self.totals.total_amount,
            issue_date=self.header.issue_date,
        )


#: Values of :attr:`DocumentAnswer.cancellation_status`.
_CANCELLATION_STATUSES = frozenset({"pending_acceptance", "cancelled", "refused"})

#: Objects only a full ``Document`` has; a body with none of them is a flat list item.
_FULL_ONLY = ("header", "totals", "result", "electronic_document")


def _extra_status(answer: DocumentAnswer, name: str, enum: type) -> Any:
    return parse_status(enum, (answer.model_extra or {}).get(name))


class DocumentListItem(AnswerModel):
    """A flat ``GET /documents`` item (OpenAPI ``SimplifiedDocument``); :meth:`as_document` reads it as
    a :class:`DocumentAnswer`."""

    document_id: Text = None
    account_id: Text = None
    document_number: Text = None
    document_type_id: Int = None
    document_type_taxbureau: Text = None
    issue_date: IssueDate = None
    currency_id: Int = None
    issuer_tax_id_code: Text = None
    issuer_tax_id_type: Text = None
    receiver_tax_id_code: Text = None
    receiver_tax_id_type: Text = None
    receiver_legal_name: Text = None
    received_issued_flag: Int = None
    document_status: DocumentStatusField = None
    taxbureau_sending_status: SendingStatusField = None
    taxbureau_validation_status: ValidationStatusField = None
    taxbureau_validation_comments: Text = None
    net_amount: Amount = None
    taxes_amount: Amount = None
    total_amount: Amount = None
    references: list[dict[str, Any]] = Field(default_factory=list)

    _HEADER: ClassVar[tuple[str, ...]] = (
        "account_id",
        "document_number",
        "document_type_id",
        "document_type_taxbureau",
        "issue_date",
        "currency_id",
        "issuer_tax_id_code",
        "issuer_tax_id_type",
        "receiver_tax_id_code",
        "receiver_tax_id_type",
        "receiver_legal_name",
        "received_issued_flag",
        "taxbureau_sending_status",
        "taxbureau_validation_status",
        "taxbureau_validation_comments",
    )

    def as_document(self) -> DocumentAnswer:
        header = {name: getattr(self, name) for name in self._HEADER}
        totals = {name: getattr(self, name) for name in ("net_amount", "taxes_amount", "total_amount")}
        extra = dict(self.model_extra or {})
        for key in ("header", "totals", "result", "details", "electronic_document", "shape"):
            extra.pop(key, None)
        return DocumentAnswer.model_validate(
            {
                **extra,
                "document_id": self.document_id,
                "account_id": self.account_id,
                "document_status": self.document_status,
                "header": header,
                "totals": totals,
                "references": self.references,
                "shape": "flat",
            }
        )


@dataclass(frozen=True, slots=True)
class DocumentContent:
    """The fields that say whether a document found by reference is the one we sent (API_NOTES
    "Decisions": issuer and receiver tax ids, document type, total, issue date). Tax ids are compared
    without dots, dashes or spaces and upper-cased; totals as numbers."""

    issuer_tax_id: str | None
    document_type_id: int | None
    receiver_tax_id: str | None
    total_amount: Decimal | None
    issue_date: str | None

    @classmethod
    def of_payload(cls, payload: Mapping[str, Any]) -> DocumentContent:
        """The content of a ``POST /documents`` body (the ledger's payload)."""
        header = payload.get("header") if isinstance(payload.get("header"), Mapping) else {}
        totals = payload.get("totals") if isinstance(payload.get("totals"), Mapping) else {}
        return cls(
            issuer_tax_id=_compact_tax_id(_text(header.get("issuer_tax_id_code"))),
            document_type_id=as_int(header.get("document_type_id")),
            receiver_tax_id=_compact_tax_id(_text(header.get("receiver_tax_id_code"))),
            total_amount=_decimal(totals.get("total_amount")),
            issue_date=_date_text(header.get("issue_date")),
        )

    def differences(self, found: DocumentContent) -> list[str]:
        """``["field: ours X, Koywe's Y", …]`` for every field both sides state and that differs.

        A field Koywe does not report (``None``) cannot be compared and is not a difference; a field
        we did not send but Koywe reports is one (another taxpayer under our reference).
        """
        out = []
        for name in ("issuer_tax_id", "document_type_id", "receiver_tax_id", "total_amount", "issue_date"):
            ours, theirs = getattr(self, name), getattr(found, name)
            if theirs is None:
                continue
            same = ours is not None and (
                ours == theirs if not isinstance(ours, Decimal) else ours.compare(theirs) == 0
            )
            if not same:
                out.append(f"{name}: ours {ours if ours is not None else '(none)'}, Koywe's {theirs}")
        return out


def _compact_tax_id(value: str | None) -> str | None:
    if value is None:
        return None
    compact = "".join(ch for ch in value if ch not in ".- ").upper()
    return compact or None


@dataclass(frozen=True, slots=True)
class DocumentPage:
    """One ``GET /documents`` page: its documents and the number of the next page (``None`` = last).

    Reads the three envelopes (API_NOTES "Documents"): HAL ``{_embedded: {documents}, _links,
    page_count, page}``, flat ``{documents, page_count, …}`` (OpenAPI) and ``{data, pagination: {total,
    per_page, current_page}}``; a bare list is one last page. Paging stops on an empty page, when
    ``page >= page_count``, when HAL ``_links`` has no ``next``, or when ``data`` is exhausted.
    """

    documents: tuple[DocumentAnswer, ...]
    next_page: int | None
    total_items: int | None = None

    @classmethod
    def parse(cls, body: Any, page: int) -> DocumentPage:
        """:raises TypeError: ``body`` is neither a JSON object nor a list."""
        if isinstance(body, list):
            return cls(tuple(DocumentAnswer.from_any(d) for d in body if isinstance(d, Mapping)), None)
        if not isinstance(body, Mapping):
            raise TypeError(f"GET /documents answered {type(body).__name__}, not a page of documents")
        items: list[Any] = []
        embedded = body.get("_embedded")
        if isinstance(embedded, Mapping):
            items = list(embedded.get("documents") or [])
        else:
            for key in ("documents", "data"):
                if isinstance(body.get(key), list):
                    items = list(body[key])
                    break
        documents = tuple(DocumentAnswer.from_any(d) for d in items if isinstance(d, Mapping))
        total = as_int(body.get("total_items"))
        pagination = body.get("pagination") if isinstance(body.get("pagination"), Mapping) else None
        if pagination is not None and total is None:
            total = as_int(pagination.get("total"))
        return cls(documents, cls._next(body, page, bool(items), pagination), total)

    @staticmethod
    def _next(body: Mapping, page: int, had_items: bool, pagination: Mapping | None) -> int | None:
        if not had_items:
            return None
        page_count = as_int(body.get("page_count"))
        if page_count is not None and page >= page_count:
            return None
        links = body.get("_links")
        if isinstance(links, Mapping) and "_embedded" in body and not links.get("next"):
            return None
        if pagination is not None and pagination.get("total") is not None:
            per_page = as_int(pagination.get("per_page")) or LIST_PAGE_SIZE
            current = as_int(pagination.get("current_page")) or page
            if current * per_page >= (as_int(pagination.get("total")) or 0):
                return None
        return page + 1


class AuthAnswer(AnswerModel):
    """``POST /auth`` (OpenAPI ``AuthResponse``): the bearer token, secret in every repr and dump."""

    access_token: SecretStr
    token_type: str = "Bearer"  # noqa: S105 - the scheme name, not a secret
    expires_in: Annotated[int, BeforeValidator(lambda v: as_int(v) if as_int(v) is not None else v)] = 3600
    scope: Text = None
    refresh_token: SecretStr | None = None

    @field_validator("access_token")
    @classmethod
    def _not_empty(cls, value: SecretStr) -> SecretStr:
        if not value.get_secret_value().strip():
            raise ValueError("access_token is empty")
        return value


class AccountAnswer(AnswerModel):
    """``POST /accounts`` → ``{"account_id": "638"}`` (string or integer); ``GET /accounts/{id}`` → the
    account (OpenAPI ``AccountsResponseGet``; every field kept)."""

    account_id: Text = None

    @property
    def company(self) -> dict[str, Any]:
        """The account's company fields: Koywe's ``account_created`` object (OpenAPI
        ``AccountsResponseGet``) when present, else the flat answer itself."""
        extra = dict(self.model_extra or {})
        created = extra.get("account_created")
        return dict(created) if isinstance(created, Mapping) else {"account_id": self.account_id, **extra}

    @property
    def country_id(self) -> int | None:
        return as_int(self.company.get("country_id"))

    @property
    def registration_tax_id_code(self) -> str | None:
        return _text(self.company.get("registration_tax_id_code"))

    @property
    def certification_status(self) -> str | None:
        return _text(self.company.get("certification_status"))


class ErrorBody(AnswerModel):
    """A Koywe error body: ``{"error": "…"}`` (clients also see ``message``, ``error_message``,
    ``error_description``, or a document whose ``result.error_message`` says why)."""

    error: Any = None
    message: Any = None
    error_message: Any = None
    error_description: Any = None
    result: Any = None

    @classmethod
    def of(cls, body: Any) -> ErrorBody:
        return cls.model_validate(dict(body)) if isinstance(body, Mapping) else cls()

    @property
    def text(self) -> str:
        """Koywe's message, ``""`` when the body has none."""
        for value in (self.error, self.message, self.error_message, self.error_description):
            if value not in (None, "", {}, []):
                return value if isinstance(value, str) else str(value)
        if isinstance(self.result, Mapping) and self.result.get("error_message"):
            return str(self.result["error_message"])
        return ""


class StatusUpdateEvent(AnswerModel):
    """The ``DOCUMENT.STATUSUPDATE`` webhook body (API_NOTES "Documents").

    ``document_status`` is the document's top-level status (0 draft, 1 issued, 2 cancelled); the
    webhook has no header, so a value 3 — which only the counterparty field knows — is read as the
    counterparty's "accepted" (:attr:`counterparty_status`), never refused (``docs/DESIGN.md``).
    """

    document_id: Annotated[str, BeforeValidator(_text), Field(min_length=1, max_length=64)]
    account_id: Text = None
    document_status: Int = None
    taxbureau_send_status: SendingStatusField = None
    taxbureau_send_id: Text = None
    taxbureau_send_date: Text = None
    taxbureau_validation_status: ValidationStatusField = None
    taxbureau_validation_comments: Annotated[str | None, Field(max_length=10_000)] = None

    @field_validator("document_id", mode="before")
    @classmethod
    def _no_boolean(cls, value: Any) -> Any:
        if isinstance(value, bool):
            raise ValueError("must be an id, not a boolean")
        return value

    @field_validator("document_status", "taxbureau_send_status", "taxbureau_validation_status", mode="before")
    @classmethod
    def _numeric(cls, value: Any) -> Any:
        # A webhook is input from outside: a status that is not a number is refused, never read as "none".
        if value is not None and value != "" and as_int(value) is None:
            raise ValueError("must be a whole number")
        return value

    @field_validator("document_status", mode="after")
    @classmethod
    def _known_status(cls, value: int | None) -> int | None:
        if value is not None and not 0 <= value <= 3:
            raise ValueError("document_status must be 0 (draft), 1 (issued), 2 (cancelled) or 3 (accepted)")
        return value

    @field_validator("taxbureau_validation_status", mode="after")
    @classmethod
    def _known_validation(cls, value: Any) -> Any:
        if value is not None and not isinstance(value, TaxBureauValidationStatus):
            raise ValueError("taxbureau_validation_status must be 0 to 5")
        return value

    @property
    def lifecycle_status(self) -> DocumentStatus | None:
        if self.document_status is None or self.document_status > 2:
            return None
        return DocumentStatus(self.document_status)

    @property
    def counterparty_status(self) -> CounterpartyStatus | None:
        return CounterpartyStatus.ACCEPTED if self.document_status == 3 else None


__all__ = [
    "LIST_PAGE_SIZE",
    "AccountAnswer",
    "AuthAnswer",
    "DocumentAnswer",
    "DocumentContent",
    "DocumentHeaderAnswer",
    "DocumentListItem",
    "DocumentPage",
    "ElectronicDocument",
    "ErrorBody",
    "ResultAnswer",
    "StatusUpdateEvent",
    "TotalsAnswer",
]
