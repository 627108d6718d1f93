"""Typed Koywe document payloads (``POST /documents``), their validation and tax id checks.

Pure models: no Airflow import except :class:`koywe_provider.exceptions.DocumentValidationError`,
imported lazily by :func:`validate_document`. See ``documents`` and ``taxids`` for the rules.
"""

from koywe_provider.models.documents import (
    INTERNAL_REFERENCE_CODE,
    WHOLE_UNIT_CURRENCIES,
    DocumentDetail,
    DocumentHeader,
    DocumentOptions,
    DocumentReference,
    DocumentTax,
    DocumentTotals,
    HeaderAdditional,
    KoyweDocument,
    MxHeader,
    PeHeader,
    arithmetic_errors,
    currency_places,
    internal_reference,
    internal_reference_number,
    is_internal_reference,
    payload_hash,
    validate_document,
)
from koywe_provider.models.taxids import (
    GENERIC_MX_RFCS,
    KNOWN_TAX_ID_TYPES,
    is_known_tax_id_type,
    validate_tax_id,
)

__all__ = [
    "GENERIC_MX_RFCS",
    "INTERNAL_REFERENCE_CODE",
    "KNOWN_TAX_ID_TYPES",
    "WHOLE_UNIT_CURRENCIES",
    "DocumentDetail",
    "DocumentHeader",
    "DocumentOptions",
    "DocumentReference",
    "DocumentTax",
    "DocumentTotals",
    "HeaderAdditional",
    "KoyweDocument",
    "MxHeader",
    "PeHeader",
    "arithmetic_errors",
    "currency_places",
    "internal_reference",
    "internal_reference_number",
    "is_internal_reference",
    "is_known_tax_id_type",
    "payload_hash",
    "validate_document",
    "validate_tax_id",
]
