"""``python -m koywe_demo {demo,up,setup,env}``: the project's main job on the embedded default.

``demo``  starts the local sandbox, sets up Airflow (SQLite) and runs ``airflow dags test
          koywe_daily_issuance`` on the sample inbox; its last output line is one JSON object with the
          ledger's counts and the sandbox's. It starts from an empty ledger, like its fresh sandbox.
          See :mod:`koywe_demo.demo`.
``up``    the sandbox (127.0.0.1:8099) and Airflow's services (UI on http://127.0.0.1:8080) until Ctrl+C;
          see :mod:`koywe_demo.up`.
``setup`` the idempotent set-up alone (metadata database, pools, ledger migrations).
``env``   ``export`` lines for a shell whose ``airflow …`` and ``airflow koywe …`` should
          see the Airflow home and the ledger of ``demo`` and ``up``: ``eval "$(python -m koywe_demo env)"``.

``demo`` and ``up`` share one Airflow home (``--airflow-home``, default ``./airflow_home``) and one ledger,
``<airflow home>/koywe_ledger.db``; both keep the ``AIRFLOW__*`` settings exported in the shell.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from koywe_demo.env import DEFAULT_AIRFLOW_HOME, PROJECT_DIR, airflow_env, setup, shell_exports
from koywe_demo.processes import DEFAULT_GRACE_S


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m koywe_demo", description=__doc__.splitlines()[0])
    parser.add_argument("command", choices=("demo", "up", "setup", "env"))
    parser.add_argument("--airflow-home", default=str(DEFAULT_AIRFLOW_HOME))
    parser.add_argument("--inbox", default=str(PROJECT_DIR / "include" / "samples" / "inbox"))
    parser.add_argument("--port", type=int, default=None, help="sandbox port (default: a free one; up: 8099)")
    parser.add_argument("--rate-limit", type=float, default=20, help="sandbox and connection requests/s")
    parser.add_argument(
        "--api-port",
        type=int,
        default=None,
        help="up: API server port (default $AIRFLOW__API__PORT, else 8080)",
    )
    parser.add_argument(
        "--schedules", action="store_true", help="up: let the scheduler start the DAGs' cron schedules"
    )
    parser.add_argument(
        "--stop-timeout",
        type=float,
        default=DEFAULT_GRACE_S,
        help="up: seconds for a clean exit on Ctrl+C before the processes left are killed",
    )
    args = parser.parse_args(argv)
    if args.command == "setup":
        setup(
            airflow_env(airflow_home=Path(args.airflow_home).resolve(), keep_user_settings=True), quiet=False
        )
        return 0
    if args.command == "env":
        print(shell_exports(Path(args.airflow_home).resolve()))
        return 0
    if args.command == "up":
        from koywe_demo.up import run_up

        return run_up(args)
    from koywe_demo.demo import run_demo

    return run_demo(args)


if __name__ == "__main__":
    sys.exit(main())
