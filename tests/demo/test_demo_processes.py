"""``koywe_demo.processes.Services.stop`` stops what its services started, stubborn or escaped.

The service here is a stand-in for Airflow's scheduler: it ignores SIGTERM, has a child in its process
group that ignores SIGTERM too (a LocalExecutor worker), and a grandchild in a session of its own whose
parent has exited (a task runner whose worker died). The supervising code runs in a subprocess: it
makes itself a child subreaper, which pytest's own process must not become.
"""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
import time

import psutil
import pytest

pytestmark = pytest.mark.skipif(not sys.platform.startswith("linux"), reason="child subreaper is Linux-only")

IGNORE_TERM_AND_SLEEP = "import signal, time; signal.signal(signal.SIGTERM, signal.SIG_IGN); time.sleep(900)"

SERVICE = textwrap.dedent(
    f"""
    import json, os, signal, subprocess, sys, time
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    worker = subprocess.Popen([sys.executable, "-c", {IGNORE_TERM_AND_SLEEP!r}])
    spawner = subprocess.Popen(
        [sys.executable, "-c",
         "import subprocess, sys; "
         "p = subprocess.Popen([sys.executable, '-c', {IGNORE_TERM_AND_SLEEP!r}], start_new_session=True); "
         "print(p.pid, flush=True)"],
        stdout=subprocess.PIPE, text=True,
    )
    escaped = int(spawner.stdout.readline())
    spawner.wait()
    print("PIDS " + json.dumps({{"service": os.getpid(), "worker": worker.pid, "escaped": escaped}}), flush=True)
    time.sleep(900)
    """
)

SUPERVISOR = textwrap.dedent(
    """
    import io, json, os, sys, time
    import psutil
    from koywe_demo.processes import Services

    out = io.StringIO()
    services = Services(env=dict(os.environ), out=out)
    services.start("stubborn", [sys.executable, "-c", sys.argv[1]])
    deadline = time.monotonic() + 120
    while "PIDS " not in out.getvalue():
        if time.monotonic() > deadline:
            sys.exit("the service did not report its processes: " + out.getvalue())
        time.sleep(0.05)
    pids = json.loads(out.getvalue().split("PIDS ", 1)[1].splitlines()[0])
    print(json.dumps({"pids": pids, "subreaper": services.subreaper,
                      "escaped_parent": psutil.Process(pids["escaped"]).ppid(), "me": os.getpid()}), flush=True)
    running, killed = services.stop(grace=1.0)
    print(json.dumps({"running": running, "killed": killed}), flush=True)
    """
)


def test_stop_kills_processes_that_ignore_sigterm_or_left_the_process_group():
    run = subprocess.Popen(
        [sys.executable, "-c", SUPERVISOR, SERVICE], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    )
    recorded: list[psutil.Process] = []
    try:
        first = json.loads(run.stdout.readline() or "null")
        assert first, run.stderr.read()
        for pid in first["pids"].values():
            with_time = psutil.Process(pid)
            recorded.append(with_time)
        assert first["subreaper"] is True
        assert first["escaped_parent"] == first["me"]  # re-parented to the supervisor, not to PID 1

        stdout, stderr = run.communicate(timeout=120)
        result = json.loads(stdout.strip().splitlines()[-1])
        assert run.returncode == 0, stderr
        assert result["running"] >= 3
        assert result["killed"] >= 3  # all three ignore SIGTERM: the grace period ends, SIGKILL follows

        deadline = time.monotonic() + 60
        while (alive := [p for p in recorded if _alive(p)]) and time.monotonic() < deadline:
            time.sleep(0.1)
        assert not alive, f"still running: {alive}"
    finally:
        run.kill()
        for proc in recorded:
            if _alive(proc):
                proc.kill()


def _alive(proc: psutil.Process) -> bool:
    """Running and not a zombie (``is_running`` also checks the creation time: no PID reuse)."""
    try:
        return proc.is_running() and proc.status() != psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return False
