"""The internal transaction id that every Koywe document carries, and its generations.

Koywe has no idempotency key (API_NOTES "Duplicates and idempotency", Koywe's guide "Prevent duplicates
using reference field"): every ``POST /documents`` carries ``{"reference_code": 5, "reference_number":
<id>, "description": "Internal transaction ID"}`` in ``references[]``, and a retry looks the document
up with ``GET /documents?reference_code=5&reference_number=<id>`` before sending it again.

A ledger row whose Koywe document was refused (HTTP 400, ``result.status`` 1, or rejected by the tax
bureau) and whose payload was then fixed is issued again as a new *generation* under a new Koywe
reference: generation 1 is the ledger reference itself (``INV-1``), generation ``n > 1`` is
``INV-1~n``. The lookup of a row matches its current generation only, so the refused document is never
adopted back (``docs/DESIGN.md``, "Generations").

Pure functions: nothing here imports Airflow or another layer.
"""

from __future__ import annotations

import copy
import re
from collections.abc import Mapping
from typing import Any

#: ``reference_code`` of a non-tax reference: the internal transaction id (Koywe, seed ``000_…``).
INTERNAL_REFERENCE_CODE = 5
INTERNAL_REFERENCE_DESCRIPTION = "Internal transaction ID"
#: Separates the ledger reference from the generation number in a Koywe reference (``INV-1~2``).
GENERATION_SEPARATOR = "~"
_GENERATION_SUFFIX = re.compile(
    rf"^(?P<base>.+){re.escape(GENERATION_SEPARATOR)}(?P<generation>[2-9]|[1-9]\d+)$"
)


def koywe_reference(reference: str, generation: int = 1) -> str:
    """The ``reference_number`` sent to Koywe for ``generation`` of ledger row ``reference``.

    ``koywe_reference("INV-1", 1) == "INV-1"``; ``koywe_reference("INV-1", 2) == "INV-1~2"``.

    :raises ValueError: ``generation < 1``.
    """
    generation = int(generation)
    if generation < 1:
        raise ValueError(f"generation must be >= 1, got {generation}")
    return reference if generation == 1 else f"{reference}{GENERATION_SEPARATOR}{generation}"


def split_koywe_reference(value: str) -> tuple[str, int]:
    """``(ledger reference, generation)`` of a Koywe ``reference_number``: the inverse of
    :func:`koywe_reference` (``"INV-1~2"`` → ``("INV-1", 2)``; ``"INV-1"`` → ``("INV-1", 1)``)."""
    match = _GENERATION_SUFFIX.match(value)
    if match is None:
        return value, 1
    return match["base"], int(match["generation"])


def _get(obj: Any, name: str) -> Any:
    if isinstance(obj, Mapping):
        return obj.get(name)
    return getattr(obj, name, None)


def is_internal_reference(reference: Any) -> bool:
    """True when ``reference`` (a mapping or model) has ``reference_code`` 5 (``5``, ``"5"``, ``"05"``)."""
    code = _get(reference, "reference_code")
    try:
        return int(str(code).strip()) == INTERNAL_REFERENCE_CODE
    except (TypeError, ValueError):
        return False


def internal_reference(reference_number: str, description: str = INTERNAL_REFERENCE_DESCRIPTION) -> dict:
    """The ``references[]`` entry carrying the internal transaction id:
    ``{reference_code: 5, reference_number, description}``."""
    return {
        "reference_code": INTERNAL_REFERENCE_CODE,
        "reference_number": str(reference_number),
        "description": description,
    }


def internal_reference_numbers(document: Any) -> list[str]:
    """Every internal ``reference_number`` of a document or payload (mapping or model), in order."""
    references = _get(document, "references") or []
    numbers = []
    for reference in references if isinstance(references, list) else []:
        if is_internal_reference(reference):
            number = _get(reference, "reference_number")
            if number is not None:
                numbers.append(str(number))
    return numbers


def internal_reference_number(document: Any) -> str | None:
    """``reference_number`` of the first internal reference of a document or payload, or ``None``."""
    numbers = internal_reference_numbers(document)
    return numbers[0] if numbers else None


def merge_internal_reference(payload: Mapping[str, Any], reference_number: str) -> dict:
    """A copy of ``payload`` whose ``references[]`` carries exactly one internal reference:
    ``reference_number``.

    The document's own references (credit note → invoice, purchase orders) are kept in order; an
    internal reference with another number (an earlier generation's, or a stale one in the input) is
    dropped, so a generation never carries the number of the one it replaces.
    """
    merged = copy.deepcopy(dict(payload))
    kept = [
        ref
        for ref in list(merged.get("references") or [])
        if not (is_internal_reference(ref) and str(_get(ref, "reference_number")) != str(reference_number))
    ]
    if not any(is_internal_reference(ref) for ref in kept):
        kept.append(internal_reference(reference_number))
    merged["references"] = kept
    return merged


__all__ = [
    "GENERATION_SEPARATOR",
    "INTERNAL_REFERENCE_CODE",
    "INTERNAL_REFERENCE_DESCRIPTION",
    "internal_reference",
    "internal_reference_number",
    "internal_reference_numbers",
    "is_internal_reference",
    "koywe_reference",
    "merge_internal_reference",
    "split_koywe_reference",
]
