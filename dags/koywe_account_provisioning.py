"""Onboard companies to Koywe (POST /accounts). Wiring only: the logic lives in koywe_provider."""

from __future__ import annotations

from datetime import datetime, timedelta
from pathlib import Path

from airflow.sdk import DAG, Param

from koywe_provider.notifications import KoyweAlertNotifier
from koywe_provider.operators.accounts import (
    KoyweAccountReportOperator,
    KoyweConfirmAccountOperator,
    KoyweCreateAccountOperator,
    KoyweValidateAccountsOperator,
)
from koywe_provider.retry_policies import koywe_default_args

PROJECT_DIR = Path(__file__).resolve().parent.parent

COUNTRY_DISPLAY = {
    "null": "Choose a country",
    "253": "Chile (CL-RUT)",
    "66": "Colombia (CO-NIT)",
    "80": "Mexico (MX-RFC)",
    "83": "Peru (PE-RUC)",
    "89": "United States (US-EIN / US-SSN)",
    "88": "Argentina (AR-CUIT)",
}


def _text(title: str, description: str, *, section: str = "Company", **schema) -> Param:
    return Param(
        None, type=["null", "string"], title=title, description=description, section=section, **schema
    )


def _secret_ref(title: str, description: str) -> Param:
    return _text(
        title,
        f"{description} A reference, never the value: conn:<conn_id>[:<extra key>], var:<variable key> "
        "or file:<path under the secrets folder>.",
        section="Secrets (references only)",
    )


with DAG(
    dag_id="koywe_account_provisioning",
    description="Validate, create and confirm Koywe accounts for new companies (form or inbox batch)",
    doc_md="""
### Koywe account provisioning
Onboards companies to Koywe (`POST /accounts`, Koywe's "Create a new account"), never twice:

1. **validate** every request before any API call (tax id with python-stdnum, E.164 phone of the
   country, certificates / RUT PDF of the country, enums) and record it in the ledger table
   `koywe_accounts` (unique on country + tax id). Invalid requests stop here, with every error;
2. **create** each valid company (pool `koywe_api`): the row is claimed before the POST; a timeout after
   sending becomes `unknown` and waits for a person (Koywe has no account search);
3. **confirm** with `GET /accounts/{id}`;
4. **report** every request with its state, Koywe account id and errors.

**One company**: *Trigger DAG w/ config*, mode `form`, fill in the company and the secret
*references* (`conn:…`, `var:…`, `file:…` under `$KOYWE_SECRETS_DIR`) or a `secrets_conn_id`.
Passwords and certificates never go in the form, the run conf, XComs or logs.
**Batch**: mode `batch`, `inbox` = a folder (local path or URL) of `*.json`/`*.jsonl` provisioning
requests (format in `koywe_provider.services.provisioning`).

**Try it against the sandbox** (`make up`): paste `include/samples/onboarding/form-chile.json` (or
`form-mexico.json`) into the form's JSON view. Its secret references name the test certificates and
passwords that the set-up generated under the secrets folder (`samples/…`).
""",
    schedule=None,
    start_date=datetime(2026, 1, 1),
    catchup=False,
    max_active_runs=1,
    tags=["koywe", "accounts", "onboarding"],
    default_args=koywe_default_args(retry_delay=timedelta(minutes=1)),
    on_failure_callback=KoyweAlertNotifier(),
    params={
        "mode": Param(
            "form",
            type="string",
            enum=["form", "batch"],
            values_display={"form": "One company (this form)", "batch": "Batch (inbox folder)"},
            title="Mode",
        ),
        "inbox": Param(
            None,
            type=["null", "string"],
            title="Inbox (batch mode)",
            description="Folder or file of provisioning requests: a local path (relative to the project) or a URL.",
            section="Batch",
        ),
        "request_id": _text("Request id", "Your name for this onboarding (shown in the report)."),
        "country_id": Param(
            None,
            type=["null", "integer"],
            enum=[None, 253, 66, 80, 83, 89, 88],
            values_display=COUNTRY_DISPLAY,
            title="Country",
            description="Where the company issues its documents.",
            section="Company",
        ),
        "registration_legal_name_company": _text("Legal name", "Legal name of the company."),
        "registration_tax_id_type": Param(
            None,
            type=["null", "string"],
            enum=[None, "CL-RUT", "CO-NIT", "MX-RFC", "PE-RUC", "US-EIN", "US-SSN", "AR-CUIT"],
            values_display={
                "null": "Choose a tax id type",
                "CL-RUT": "CL-RUT (Chile)",
                "CO-NIT": "CO-NIT (Colombia)",
                "MX-RFC": "MX-RFC (Mexico)",
                "PE-RUC": "PE-RUC (Peru)",
                "US-EIN": "US-EIN (United States, company)",
                "US-SSN": "US-SSN (United States, person)",
                "AR-CUIT": "AR-CUIT (Argentina)",
            },
            title="Tax id type",
            description="The company's tax id type; it must be one of its country's.",
            section="Company",
        ),
        "registration_tax_id_code": _text("Tax id", "e.g. 76086428-5 (Chile), 900123456-8 (Colombia)."),
        "registration_company_size": Param(
            "1",
            type="string",
            enum=["1", "2", "3", "4"],
            values_display={"1": "Micro", "2": "Small", "3": "Medium", "4": "Large"},
            title="Company size",
            section="Company",
        ),
        "registration_company_industry_sector": _text("Industry sector", "Optional."),
        "contact_name": _text("Contact name", "Person Koywe contacts."),
        "contact_phone": _text("Contact phone", "E.164 with the country code, e.g. +56912345678."),
        "admin_email": _text("Admin e-mail", "Login of the account's administrator."),
        "registration_test_set_id": _text("DIAN test set id", "Colombia only.", section="Country data"),
        "terms_of_use_accepted": Param(
            False,
            type="boolean",
            title="Terms of use accepted",
            description="Tick it once the company has accepted Koywe's terms of use: Koywe creates no "
            "account without it.",
            section="Company",
        ),
        "secrets_conn_id": _text(
            "Secrets connection",
            "Airflow connection holding admin_password (password) and certificate_password / "
            "certificate_file / certificate_key / certificate_cer / registration_form_rut (extras, base64, "
            "or <name>_path under the secrets folder).",
            section="Secrets (references only)",
        ),
        "admin_password_ref": _secret_ref("Admin password", "Password of the admin user."),
        "certificate_file_ref": _secret_ref("Certificate file (Chile)", "PKCS#12 .pfx file."),
        "certificate_password_ref": _secret_ref("Certificate password", "Chile and Mexico."),
        "certificate_key_ref": _secret_ref("Certificate key (Mexico, Argentina)", "SAT/ARCA .key file."),
        "certificate_cer_ref": _secret_ref("Certificate (Mexico, Argentina)", "SAT/ARCA .cer file."),
        "registration_form_rut_ref": _secret_ref("RUT form PDF (Colombia)", "DIAN RUT PDF file."),
        "company_logo_ref": _secret_ref("Company logo", "PNG file (optional)."),
        "account_config": Param(
            None,
            type=["null", "object"],
            title="Account settings",
            description='Optional, e.g. {"rounding_format": 0, "time_zone": "UTC-3"}: rounding_format 0 '
            "rounds net amounts, 1 gross amounts; time_zone is the company's UTC offset. Empty: Koywe's "
            "defaults (0, UTC+0).",
            section="Account settings",
        ),
    },
) as dag:
    validate = KoyweValidateAccountsOperator(
        task_id="validate",
        mode="{{ params.mode }}",
        inbox="{{ params.inbox or '' }}",
        base_dir=str(PROJECT_DIR),
    )
    create = KoyweCreateAccountOperator.partial(task_id="create", pool="koywe_api", confirm=False).expand(
        account_pk=validate.output
    )
    confirm = KoyweConfirmAccountOperator.partial(
        task_id="confirm", pool="koywe_api", trigger_rule="all_done"
    ).expand(account_pk=validate.output)
    report = KoyweAccountReportOperator(
        task_id="report", validation=validate.output["summary"], trigger_rule="all_done"
    )
    validate >> create >> confirm >> report
