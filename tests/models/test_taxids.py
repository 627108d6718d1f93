"""Tax id validation and Koywe formatting (python-stdnum)."""

from __future__ import annotations

import pytest

from koywe_provider.models import is_known_tax_id_type, validate_tax_id


@pytest.mark.parametrize(
    ("kind", "code", "expected"),
    [
        ("CL-RUT", "76399932-7", "76399932-7"),
        ("CL-RUT", "76.399.932-7", "76399932-7"),
        ("CL-RUT", " 763999327 ", "76399932-7"),
        ("CL-RUT", "10.000.013-k", "10000013-K"),
        ("cl-rut", "66666666-6", "66666666-6"),
        ("PE-RUC", "20610383727", "20610383727"),
        ("PE-RUC", "20473731828", "20473731828"),
        ("PE-DNI", "72257341", "72257341"),
        ("CO-NIT", "860517022-2", "860517022-2"),
        ("CO-NIT", "860.517.022-2", "860517022-2"),
        ("CO-NIT", "1707975798-8", "1707975798-8"),
        ("MX-RFC", "EKU9003173C9", "EKU9003173C9"),
        ("MX-RFC", "eku9003173c9", "EKU9003173C9"),
        ("MX-RFC", "XAXX010101000", "XAXX010101000"),
        ("MX-RFC", "XEXX010101000", "XEXX010101000"),
        ("AR-CUIT", "20-26756539-3", "20267565393"),
        ("US-EIN", "85-1855616", "851855616"),
        ("US-SSN", "536-90-4399", "536904399"),
        ("CO-NOP", " 872055616 ", "872055616"),
        ("EXT", "P-1234567", "P-1234567"),
    ],
)
def test_valid(kind: str, code: str, expected: str) -> None:
    assert validate_tax_id(kind, code) == expected


@pytest.mark.parametrize(
    ("kind", "code", "fragment"),
    [
        ("CL-RUT", "76399932-8", "check digit"),
        ("CL-RUT", "76399932", "CL-RUT"),
        ("PE-RUC", "12345678901", "PE-RUC"),
        ("PE-RUC", "20610383728", "check digit"),
        ("PE-DNI", "1234567", "PE-DNI"),
        ("CO-NIT", "1707975798-1", "check digit"),
        ("MX-RFC", "222333444", "MX-RFC"),
        ("MX-RFC", "EKU900317", "MX-RFC"),  # 10-char RFC without homoclave: Koywe wants 12/13
        ("AR-CUIT", "20267565394", "check digit"),
        ("US-EIN", "10752012", "US-EIN"),
        ("US-SSN", "000-12-3456", "US-SSN"),
        ("EXT", "   ", "empty"),
    ],
)
def test_invalid(kind: str, code: str, fragment: str) -> None:
    with pytest.raises(ValueError, match=fragment) as info:
        validate_tax_id(kind, code)
    assert kind.upper() in str(info.value) or fragment == "empty"


def test_generic_rfc_under_another_type_only_when_allowed() -> None:
    with pytest.raises(ValueError):
        validate_tax_id("US-EIN", "XEXX010101000")
    assert validate_tax_id("US-EIN", "XEXX010101000", allow_generic_rfc=True) == "XEXX010101000"


def test_known_types() -> None:
    assert is_known_tax_id_type("cl-rut")
    assert not is_known_tax_id_type("CO-NOP")
    assert not is_known_tax_id_type(None)
