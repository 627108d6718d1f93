"""Account test material generated on the fly: certificates, keys, PKCS#12, PDFs, PNGs, payloads.

Nothing here is copied from Koywe: every certificate is self-signed with ``cryptography`` at test time.
"""

from __future__ import annotations

import base64
import json
from datetime import UTC, datetime, timedelta
from functools import cache
from pathlib import Path
from typing import Any

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from cryptography.hazmat.primitives.serialization import pkcs12
from cryptography.x509.oid import NameOID

PFX_PASSWORD = "pfx-Pa55-word"
SAT_PASSWORD = "sat-Key-Pa55"
ADMIN_PASSWORD = "admin-Pa55-word-9"

TAX_IDS = {
    253: ("CL-RUT", "76.086.428-5", "76086428-5"),
    66: ("CO-NIT", "900123456-8", "900123456-8"),
    80: ("MX-RFC", "EKU9003199C1", "EKU9003199C1"),
    83: ("PE-RUC", "20100047218", "20100047218"),
    89: ("US-EIN", "12-3456789", "123456789"),
    88: ("AR-CUIT", "20-26756539-3", "20267565393"),
}
PHONES = {
    253: "+56984105522",
    66: "+573001234567",
    80: "+525512345678",
    83: "+51999888777",
    89: "+12025550123",
    88: "+5491123456789",
}
COUNTRY_CODES = {253: "cl", 66: "co", 80: "mx", 83: "pe", 89: "us", 88: "ar"}
#: Realistic legal names (models.accounts refuses placeholders such as "my company" or "Empresa Test").
LEGAL_NAMES = {
    253: "Comercializadora Los Andes SpA",
    66: "Distribuidora El Dorado S.A.S.",
    80: "Servicios Técnicos del Bajío S.A. de C.V.",
    83: "Inversiones Miraflores S.A.C.",
    89: "Harbor Analytics LLC",
    88: "Tecnología Rioplatense S.R.L.",
}


@cache
def rsa_key(n: int = 0) -> rsa.RSAPrivateKey:
    """An RSA key (cached per ``n``: key generation is the slow part)."""
    return rsa.generate_private_key(public_exponent=65537, key_size=2048)


def certificate(key=None, *, expired: bool = False, name: str = "Firma Electronica Test") -> x509.Certificate:
    """A self-signed certificate, valid for a year (or expired since 2024-01-31 when ``expired``)."""
    key = key or rsa_key()
    now = datetime.now(UTC)
    if expired:
        not_before, not_after = datetime(2023, 1, 31, tzinfo=UTC), datetime(2024, 1, 31, tzinfo=UTC)
    else:
        not_before, not_after = now - timedelta(days=1), now + timedelta(days=365)
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)])
    return (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(not_before)
        .not_valid_after(not_after)
        .sign(key, hashes.SHA256())
    )


def b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


def pfx(password: str = PFX_PASSWORD, *, expired: bool = False) -> bytes:
    """A PKCS#12 file with a key and its certificate, encrypted with ``password``."""
    key = rsa_key()
    return pkcs12.serialize_key_and_certificates(
        b"firma",
        key,
        certificate(key, expired=expired),
        None,
        serialization.BestAvailableEncryption(password.encode()),
    )


def cer_der(*, expired: bool = False, key_index: int = 0) -> bytes:
    return certificate(rsa_key(key_index), expired=expired).public_bytes(serialization.Encoding.DER)


def cer_pem(*, expired: bool = False) -> bytes:
    return certificate(rsa_key(), expired=expired).public_bytes(serialization.Encoding.PEM)


def key_der(password: str | None = SAT_PASSWORD, *, key_index: int = 0) -> bytes:
    """The SAT ``.key`` shape: PKCS#8 DER, encrypted with ``password`` (plain when ``None``)."""
    encryption = (
        serialization.BestAvailableEncryption(password.encode()) if password else serialization.NoEncryption()
    )
    return rsa_key(key_index).private_bytes(
        serialization.Encoding.DER, serialization.PrivateFormat.PKCS8, encryption
    )


def key_pem() -> bytes:
    """The ARCA ``.key`` shape: an unencrypted PEM key."""
    return rsa_key().private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.TraditionalOpenSSL,
        serialization.NoEncryption(),
    )


def pdf() -> bytes:
    """A minimal but well-formed one-page PDF."""
    objects = [
        b"<< /Type /Catalog /Pages 2 0 R >>",
        b"<< /Type /Pages /Kids [3 0 R] /Count 1 >>",
        b"<< /Type /Page /Parent 2 0 R /MediaBox [0 0 612 792] >>",
    ]
    out = bytearray(b"%PDF-1.4\n")
    offsets = []
    for i, obj in enumerate(objects, start=1):
        offsets.append(len(out))
        out += f"{i} 0 obj\n".encode() + obj + b"\nendobj\n"
    xref = len(out)
    out += f"xref\n0 {len(objects) + 1}\n0000000000 65535 f \n".encode()
    for off in offsets:
        out += f"{off:010d} 00000 n \n".encode()
    out += f"trailer\n<< /Size {len(objects) + 1} /Root 1 0 R >>\nstartxref\n{xref}\n%%EOF\n".encode()
    return bytes(out)


def png() -> bytes:
    import struct
    import zlib

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    raw = b"\x00\xff\x00\x00"
    return (
        b"\x89PNG\r\n\x1a\n"
        + chunk(b"IHDR", struct.pack(">IIBBBBB", 1, 1, 8, 2, 0, 0, 0))
        + chunk(b"IDAT", zlib.compress(raw))
        + chunk(b"IEND", b"")
    )


def registration_data(country: int) -> dict[str, Any]:
    """Valid ``registration_additional_data`` of ``country`` (secrets inline, for model tests)."""
    if country == 253:
        return {"certificate_file": b64(pfx()), "certificate_password": PFX_PASSWORD}
    if country == 66:
        return {
            "registration_test_set_id": "b3e1c0de-1234-4cde-9abc-0123456789ab",
            "registration_form_rut": b64(pdf()),
        }
    if country == 80:
        return {
            "certificate_cer": b64(cer_der()),
            "certificate_key": b64(key_der()),
            "certificate_password": SAT_PASSWORD,
        }
    if country == 88:
        return {"certificate_cer": b64(cer_pem()), "certificate_key": b64(key_pem())}
    return {}


def account_payload(country: int, **changes: Any) -> dict[str, Any]:
    """A complete valid ``POST /accounts`` body of ``country`` (tax id as a person types it)."""
    kind, typed, _ = TAX_IDS[country]
    body = {
        "country_id": country,
        "contact_name": "Ana Rojas",
        "contact_phone": PHONES[country],
        "admin_email": "ana@empresa.example.com",
        "admin_password": ADMIN_PASSWORD,
        "registration_legal_name_company": LEGAL_NAMES[country],
        "registration_tax_id_code": typed,
        "registration_tax_id_type": kind,
        "registration_company_size": "2",
        "registration_terms_of_use": 1,
        "registration_type_use": 1,
        "registration_additional_data": registration_data(country),
        "account_config": {"rounding_format": 0, "time_zone": "UTC-3"},
    }
    body.update(changes)
    return body


def write_secrets(secrets_dir: Path, country: int, *, expired: bool = False) -> dict[str, str]:
    """Write ``country``'s secret files under ``secrets_dir`` and return the ``secrets`` references."""
    code = COUNTRY_CODES[country]
    folder = secrets_dir / code
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "admin_password.txt").write_text(ADMIN_PASSWORD + "\n")
    refs = {"admin_password": f"file:{code}/admin_password.txt"}
    if country == 253:
        (folder / "firma.pfx").write_bytes(pfx(expired=expired))
        (folder / "pfx_password.txt").write_text(PFX_PASSWORD)
        refs |= {
            "certificate_file": f"file:{code}/firma.pfx",
            "certificate_password": f"file:{code}/pfx_password.txt",
        }
    elif country == 66:
        (folder / "rut.pdf").write_bytes(pdf())
        refs |= {"registration_form_rut": f"file:{code}/rut.pdf"}
    elif country == 80:
        (folder / "csd.cer").write_bytes(cer_der(expired=expired))
        (folder / "csd.key").write_bytes(key_der())
        (folder / "key_password.txt").write_text(SAT_PASSWORD)
        refs |= {
            "certificate_cer": f"file:{code}/csd.cer",
            "certificate_key": f"file:{code}/csd.key",
            "certificate_password": f"file:{code}/key_password.txt",
        }
    elif country == 88:
        (folder / "arca.crt").write_bytes(cer_pem(expired=expired))
        (folder / "arca.key").write_bytes(key_pem())
        refs |= {"certificate_cer": f"file:{code}/arca.crt", "certificate_key": f"file:{code}/arca.key"}
    return refs


def provisioning_request(
    country: int, secrets_dir: Path, *, request_id: str | None = None, **changes
) -> dict:
    """A provisioning request (no secret values) whose references point to files in ``secrets_dir``."""
    account = account_payload(country, **changes)
    account.pop("admin_password")
    data = account["registration_additional_data"]
    for name in (
        "certificate_file",
        "certificate_password",
        "certificate_key",
        "certificate_cer",
        "registration_form_rut",
    ):
        data.pop(name, None)
    return {
        "request_id": request_id or f"onboard-{COUNTRY_CODES[country]}",
        "account": account,
        "secrets": write_secrets(secrets_dir, country),
    }


def secret_values() -> list[str]:
    """Every secret string the tests hand to the provisioning code (what must never leak)."""
    return [
        ADMIN_PASSWORD,
        PFX_PASSWORD,
        SAT_PASSWORD,
        b64(pfx())[:40],
        b64(key_der())[:40],
        b64(key_pem())[:40],
    ]


def dumps(obj: Any) -> str:
    return json.dumps(obj, sort_keys=True)
