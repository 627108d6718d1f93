"""Sample Koywe document lines: :func:`generate_lines`, :func:`generate_invalid_lines`, and a CLI
(``python -m koywe_samples``). Pure Python: no Airflow import."""

from koywe_samples.generate import (
    COUNTRIES,
    DEFAULT_ACCOUNT_IDS,
    INVALID_KINDS,
    generate_invalid_lines,
    generate_lines,
    generate_varied_lines,
)

__all__ = [
    "COUNTRIES",
    "DEFAULT_ACCOUNT_IDS",
    "INVALID_KINDS",
    "generate_invalid_lines",
    "generate_lines",
    "generate_varied_lines",
]
