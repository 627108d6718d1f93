"""Sample onboarding: test certificates and passwords for the sample companies, generated at set-up.

``koywe_account_provisioning`` needs a company's secrets: Chile's electronic-signature certificate (a
PKCS#12 ``.pfx`` and its password), Mexico's SAT CSD (a DER ``.cer``, its PKCS#8 DER ``.key`` encrypted
with a password) and an admin password. The samples in ``include/samples/onboarding/`` reference them as
``file:samples/…`` under the secrets folder (``$KOYWE_SECRETS_DIR``, else ``$AIRFLOW_HOME/secrets/koywe``);
:func:`write_sample_secrets` creates them there with ``cryptography``: self-signed, valid for a year,
passwords from :mod:`secrets`. Nothing of it is committed and nothing is printed; the files are mode
0600 in a 0700 folder. They are for the local sandbox only: Koywe would refuse a self-signed certificate.
"""

from __future__ import annotations

import os
import secrets
from datetime import UTC, datetime, timedelta
from pathlib import Path

#: Folder of the sample secrets, relative to the secrets folder (what ``file:`` references start with).
SAMPLES = "samples"
#: A certificate closer than this to its end is generated again.
RENEW_BEFORE = timedelta(days=30)


def secrets_dir(airflow_home: Path) -> Path:
    """``$KOYWE_SECRETS_DIR``, else ``<airflow_home>/secrets/koywe`` (as the provisioning operators)."""
    return Path(os.environ.get("KOYWE_SECRETS_DIR") or Path(airflow_home) / "secrets" / "koywe")


def _write(path: Path, data: bytes) -> None:
    path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "wb") as handle:
        handle.write(data)


def _password() -> str:
    # letters, digits and symbols of every class, long: any strength rule (and zxcvbn) accepts it
    return "Kw-" + secrets.token_urlsafe(18) + "-9z"


def _certificate(key, common_name: str):
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes
    from cryptography.x509.oid import NameOID

    now = datetime.now(UTC)
    name = x509.Name(
        [
            x509.NameAttribute(NameOID.COMMON_NAME, common_name),
            x509.NameAttribute(NameOID.ORGANIZATION_NAME, "Koywe-on-Airflow sample (sandbox only)"),
        ]
    )
    return (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - timedelta(days=1))
        .not_valid_after(now + timedelta(days=365))
        .sign(key, hashes.SHA256())
    )


def _still_valid(cer_der: Path) -> bool:
    from cryptography import x509

    try:
        cert = x509.load_der_x509_certificate(cer_der.read_bytes())
    except (OSError, ValueError):
        return False
    return cert.not_valid_after_utc - datetime.now(UTC) > RENEW_BEFORE


def write_sample_secrets(directory: Path) -> list[str]:
    """Create the sample secrets under ``directory/samples`` when missing or about to expire; returns
    the ``file:`` references created this time (names only, never a value).

    - ``samples/admin_password.txt`` — the admin password of the sample companies;
    - ``samples/cl/firma.pfx`` and ``samples/cl/certificate_password.txt`` — Chile;
    - ``samples/mx/csd.cer``, ``samples/mx/csd.key`` (PKCS#8 DER, encrypted) and
      ``samples/mx/certificate_password.txt`` — Mexico.
    """
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import rsa
    from cryptography.hazmat.primitives.serialization import pkcs12

    root = Path(directory) / SAMPLES
    root.mkdir(parents=True, exist_ok=True, mode=0o700)
    os.chmod(root, 0o700)
    created: list[str] = []
    admin = root / "admin_password.txt"
    if not admin.exists():
        _write(admin, (_password() + "\n").encode())
        created.append(f"file:{SAMPLES}/admin_password.txt")

    cl_marker = root / "cl" / "certificate.cer"  # the PFX's certificate, to check its validity
    if not (root / "cl" / "firma.pfx").exists() or not _still_valid(cl_marker):
        password = _password()
        key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
        cert = _certificate(key, "Firma Electronica de prueba (Chile)")
        pfx = pkcs12.serialize_key_and_certificates(
            b"firma", key, cert, None, serialization.BestAvailableEncryption(password.encode())
        )
        _write(root / "cl" / "firma.pfx", pfx)
        _write(root / "cl" / "certificate_password.txt", password.encode())
        _write(cl_marker, cert.public_bytes(serialization.Encoding.DER))
        created += [f"file:{SAMPLES}/cl/firma.pfx", f"file:{SAMPLES}/cl/certificate_password.txt"]

    if not (root / "mx" / "csd.key").exists() or not _still_valid(root / "mx" / "csd.cer"):
        password = _password()
        key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
        cert = _certificate(key, "CSD de prueba (SAT, México)")
        _write(root / "mx" / "csd.cer", cert.public_bytes(serialization.Encoding.DER))
        _write(
            root / "mx" / "csd.key",
            key.private_bytes(
                serialization.Encoding.DER,
                serialization.PrivateFormat.PKCS8,
                serialization.BestAvailableEncryption(password.encode()),
            ),
        )
        _write(root / "mx" / "certificate_password.txt", password.encode())
        created += [
            f"file:{SAMPLES}/mx/csd.cer",
            f"file:{SAMPLES}/mx/csd.key",
            f"file:{SAMPLES}/mx/certificate_password.txt",
        ]
    return created
