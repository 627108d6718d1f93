"""``airflow koywe …``: the ledger's command line (:mod:`koywe_provider.cli`) as an Airflow CLI command.

Airflow 3.3 loads CLI commands from a provider's ``get_provider_info()["cli"]`` (functions returning
``CLICommand`` objects; ``airflow/providers_manager.py``, ``_discover_cli_command``) on every ``airflow``
invocation, so this module stays tiny: it imports nothing of the ledger until the command runs. Every
argument after ``airflow koywe`` goes to :func:`koywe_provider.cli.main` unchanged, so a sub-command added
there is at once an ``airflow koywe`` sub-command too.
"""

from __future__ import annotations

import argparse
import sys
from typing import Any

HELP = "Koywe issuance ledger: show, list, export and re-queue documents"
DESCRIPTION = (
    "The ledger of this AIRFLOW_HOME's koywe_ledger connection, as the DAGs read it. Sub-commands: "
    "show --reference R | list [--state S] [--json] | export --csv FILE|- [--state S] | "
    "requeue --reference R. `airflow koywe <sub-command> --help` explains each."
)


def get_cli_commands() -> list[Any]:
    """The ``koywe`` command for Airflow's CLI parser."""
    from airflow.cli.cli_config import ActionCommand, Arg, lazy_load_command

    return [
        ActionCommand(
            name="koywe",
            help=HELP,
            description=DESCRIPTION,
            func=lazy_load_command("koywe_provider.airflow_cli.run"),
            args=(
                Arg(
                    ("arguments",),
                    nargs=argparse.REMAINDER,
                    metavar="SUB-COMMAND ...",
                    help="show, list, export or requeue, then its options",
                ),
            ),
        )
    ]


def run(args: argparse.Namespace) -> None:
    """Run ``koywe_provider.cli`` with the arguments after ``airflow koywe``; exits with its code."""
    from koywe_provider.cli import main

    code = main(list(args.arguments or []), prog="airflow koywe")
    if code:
        sys.exit(code)
