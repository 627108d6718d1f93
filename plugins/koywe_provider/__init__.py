"""Apache Airflow provider for the Koywe Billing API (https://api-billing.koywe.com/V1).

Registered through the ``apache_airflow_provider`` entry point; :func:`get_provider_info` is what
Airflow's providers manager reads (connection type ``koywe`` and its form, without importing the hook).
"""

from __future__ import annotations

__version__ = "0.1.0"

KOYWE_DEFAULT_BASE_URL = "https://api-billing.koywe.com/V1"


def get_provider_info() -> dict:
    """Return the provider metadata Airflow reads (the ``provider.yaml`` of an installed provider)."""
    return {
        "package-name": "airflow-provider-koywe",
        "name": "Koywe",
        "description": "Electronic invoicing through the `Koywe Billing API <https://docs.koywe.com/>`__.",
        "versions": [__version__],
        "integrations": [
            {
                "integration-name": "Koywe",
                "external-doc-url": "https://docs.koywe.com/",
                "tags": ["service"],
            }
        ],
        "notifications": ["koywe_provider.notifications.KoyweAlertNotifier"],
        "cli": ["koywe_provider.airflow_cli.get_cli_commands"],
        "connection-types": [
            {
                "hook-class-name": "koywe_provider.hooks.koywe.KoyweHook",
                "hook-name": "Koywe Billing API",
                "connection-type": "koywe",
                "ui-field-behaviour": {
                    "hidden-fields": ["schema", "port"],
                    "relabeling": {
                        "host": "Base URL",
                        "login": "API username",
                        "password": "API password",
                    },
                    "placeholders": {
                        "host": KOYWE_DEFAULT_BASE_URL,
                        "login": "API user (not the web login)",
                        "extra": '{"timeout": 30}',
                    },
                },
                "conn-fields": {
                    "client_id": {
                        "label": "Client ID",
                        "description": "OAuth client_id Koywe issued for the API user.",
                        "schema": {"type": ["string", "null"]},
                    },
                    "client_secret": {
                        "label": "Client secret",
                        "description": "OAuth client_secret Koywe issued for the API user.",
                        "schema": {"type": ["string", "null"], "format": "password"},
                    },
                    "requests_per_second": {
                        "label": "Requests per second",
                        "description": (
                            "Client-side pacing for all processes sharing this connection "
                            "(Koywe asks for IP whitelisting above 5 documents/s)."
                        ),
                        "schema": {"type": ["number", "null"], "default": 5, "minimum": 0.1},
                    },
                    "timeout": {
                        "label": "Request timeout (s)",
                        "description": "Read timeout of one API call, in seconds.",
                        "schema": {"type": ["number", "null"], "default": 30},
                    },
                },
            }
        ],
    }
