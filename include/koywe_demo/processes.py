"""Run long-lived commands so that every process they start is stopped with them.

Each service (``airflow scheduler``, ``airflow api-server`` …) starts in its own session, hence its own
process group, with its output echoed line by line as ``<name> | <line>``. :meth:`Services.stop`
stops *every* descendant, not only the services: the group of each service, the task runners that
Airflow puts in process groups of their own, and processes whose parent died. For the last two this
process becomes a *child subreaper* on Linux (``prctl(PR_SET_CHILD_SUBREAPER)``): orphaned descendants
are re-parented to it instead of to PID 1, so a walk of its process tree still finds them.

Stopping is bounded: SIGTERM once to each service's process group and to the orphans (a task runner
under a live supervisor gets it forwarded by that supervisor, as Airflow does), then to the services
named ``last`` (the API server, which running tasks report to) when the others are gone; up to
``grace`` seconds for a clean exit in all (Airflow's LocalExecutor workers ignore SIGINT, and some
processes SIGTERM too), then SIGKILL to every descendant left.
"""

from __future__ import annotations

import contextlib
import ctypes
import os
import signal
import subprocess
import sys
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from typing import IO

import psutil

PR_SET_CHILD_SUBREAPER = 36
#: Seconds the processes get for a clean exit after SIGTERM before SIGKILL.
DEFAULT_GRACE_S = 15.0
#: Seconds the ``last`` services get at least after their SIGTERM, even at the end of the grace period.
LATE_MIN_S = 5.0
#: Seconds to wait for SIGKILLed processes to disappear (they cannot refuse; this only bounds a wedge).
KILL_WAIT_S = 10.0


def become_subreaper() -> bool:
    """Make orphaned descendants of this process its children (Linux); False where unsupported."""
    if not sys.platform.startswith("linux"):
        return False
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        return libc.prctl(PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0) == 0
    except (OSError, AttributeError):
        return False


def descendants(exclude: Iterable[int] = ()) -> list[psutil.Process]:
    """Every live descendant of this process, less the trees rooted at the pids of ``exclude``."""
    skipped = set(exclude)
    found: list[psutil.Process] = []
    stack = [psutil.Process()]
    while stack:
        try:
            children = stack.pop().children()
        except psutil.Error:
            continue
        for child in children:
            if child.pid in skipped:
                continue
            with contextlib.suppress(psutil.Error):
                if child.status() == psutil.STATUS_ZOMBIE:
                    continue
                found.append(child)
                stack.append(child)
    return found


def _trees(roots: Iterable[int]) -> set[int]:
    """The pids of the process trees rooted at ``roots`` (roots included)."""
    found: set[int] = set()
    for root in roots:
        with contextlib.suppress(psutil.Error):
            proc = psutil.Process(root)
            found |= {root, *(c.pid for c in proc.children(recursive=True))}
    return found


@dataclass
class Service:
    """One started command: its own session and process group (pgid == pid)."""

    name: str
    process: subprocess.Popen[bytes]
    pump: threading.Thread

    @property
    def pid(self) -> int:
        return self.process.pid


@dataclass
class Services:
    """Services started by :meth:`start` and stopped, with all they started, by :meth:`stop`.

    :param env: environment of every service.
    :param out: where the services' lines are echoed (default ``sys.stdout``).
    :param keep: pids whose process trees :meth:`stop` leaves alone (e.g. a sandbox stopped by its own
        context manager after the services are gone).
    """

    env: dict[str, str]
    out: IO[str] | None = None
    keep: set[int] = field(default_factory=set)
    services: list[Service] = field(default_factory=list)
    subreaper: bool = False
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def __post_init__(self) -> None:
        self.subreaper = become_subreaper()

    def echo(self, name: str, line: str) -> None:
        stream = self.out or sys.stdout
        with self._lock:
            stream.write(f"{name:<13} | {line}\n")
            stream.flush()

    def start(self, name: str, command: Sequence[str]) -> Service:
        process = subprocess.Popen(
            list(command),
            env=self.env,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            start_new_session=True,  # its own group: Ctrl+C in the terminal reaches this process only
        )
        pump = threading.Thread(target=self._pump, args=(name, process.stdout), daemon=True)
        pump.start()
        service = Service(name, process, pump)
        self.services.append(service)
        return service

    def _pump(self, name: str, stream: IO[bytes] | None) -> None:
        if stream is None:
            return
        with contextlib.suppress(ValueError, OSError):
            for raw in stream:
                self.echo(name, raw.decode(errors="replace").rstrip())

    def exited(self) -> Service | None:
        """The first service that has exited, if any."""
        return next((s for s in self.services if s.process.poll() is not None), None)

    def reap_orphans(self) -> None:
        """Collect exited orphans re-parented to this (subreaper) process, so no zombie piles up."""
        mine = {s.pid for s in self.services} | self.keep
        with contextlib.suppress(psutil.Error):
            for child in psutil.Process().children():
                if child.pid in mine:
                    continue
                with contextlib.suppress(psutil.Error, ChildProcessError, OSError):
                    if child.status() == psutil.STATUS_ZOMBIE:
                        os.waitpid(child.pid, os.WNOHANG)

    def _orphan_trees(self) -> list[psutil.Process]:
        """Descendants under children of this process that are neither services nor kept."""
        roots = {s.pid for s in self.services} | self.keep
        try:
            orphans = [c for c in psutil.Process().children() if c.pid not in roots]
        except psutil.Error:
            return []
        trees = _trees(o.pid for o in orphans)
        return [p for p in descendants(exclude=roots) if p.pid in trees]

    def _signal(self, sig: int, services: Sequence[Service], targets: Sequence[psutil.Process]) -> int:
        """Send ``sig`` once to every process of ``services``' groups and of ``targets``; len(targets)."""
        groups = {s.pid for s in services}
        for pgid in groups:
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(pgid, sig)
        for proc in targets:
            with contextlib.suppress(psutil.Error, ProcessLookupError):
                if os.getpgid(proc.pid) in groups:
                    continue  # reached through its group already: a second SIGTERM means "exit now"
                proc.send_signal(sig)
        return len(targets)

    def _wait_gone(
        self, deadline: float, exclude: set[int], abort: Callable[[], bool] = lambda: False
    ) -> list[psutil.Process]:
        while True:
            for service in self.services:
                service.process.poll()
            self.reap_orphans()
            left = descendants(exclude=exclude)
            if not left or time.monotonic() >= deadline or abort():
                return left
            time.sleep(0.1)

    def stop(
        self,
        grace: float = DEFAULT_GRACE_S,
        *,
        last: Sequence[str] = (),
        abort: Callable[[], bool] = lambda: False,
        say: Callable[[str], None] | None = None,
    ) -> tuple[int, int]:
        """Stop every service and every descendant: SIGTERM, up to ``grace`` s, then SIGKILL.

        :param last: names of services stopped only once the others are gone (or at the end of the
            grace period): the API server, so that tasks finishing during the grace period can still
            report to the Execution API.
        :param abort: polled while waiting; True skips the rest of the grace period (a second Ctrl+C).
        :param say: receives a line for each step (default: nothing).
        :return: (processes that were running, processes that had to be killed).
        """
        say = say or (lambda _line: None)
        deadline = time.monotonic() + grace
        late = [s for s in self.services if s.name in last]
        early = [s for s in self.services if s.name not in last]
        late_trees = self.keep | {s.pid for s in late}
        running = len(descendants(exclude=self.keep))
        # The groups of the services, and the trees of orphans re-parented here. A task runner (a group of
        # its own) under a live supervisor is left to the supervisor, which forwards the signal.
        self._signal(signal.SIGTERM, early, self._orphan_trees())
        left = self._wait_gone(deadline, late_trees, abort)
        if late:
            trees = _trees(s.pid for s in late)
            late_procs = [p for p in descendants(exclude=self.keep) if p.pid in trees]
            self._signal(signal.SIGTERM, late, late_procs)
            left = self._wait_gone(max(deadline, time.monotonic() + LATE_MIN_S), self.keep, abort)
        killed = 0
        for _ in range(20):  # whatever a dying parent forked at the last moment is killed in a later round
            if not left:
                break
            if not killed:
                kinds = Counter(_name(p) for p in left)
                names = ", ".join(f"{n} {kind}" if n > 1 else kind for kind, n in sorted(kinds.items()))
                say(f"{len(left)} process(es) still running after {grace:.0f} s; killing: {names}")
            killed += self._signal(signal.SIGKILL, self.services, descendants(exclude=self.keep))
            left = self._wait_gone(time.monotonic() + KILL_WAIT_S / 20, self.keep)
        for service in self.services:
            with contextlib.suppress(subprocess.TimeoutExpired):
                service.process.wait(timeout=KILL_WAIT_S)
            service.pump.join(timeout=2)
        self.reap_orphans()
        return running, killed


def _name(proc: psutil.Process) -> str:
    """A short kind of process for messages: ``scheduler``, ``LocalExecutor worker``, ``task runner`` …"""
    try:
        words = " ".join(proc.cmdline()).split()
    except psutil.Error:
        return f"pid {proc.pid}"
    text = " ".join(words)
    if "LocalExecutor" in text:
        return "LocalExecutor worker"
    if text.startswith("airflow worker --") or "task supervisor" in text:
        return "task runner"
    if text.startswith("airflow api_server"):
        return "api-server"
    if "airflow" in words[:2] and len(words) > 1:
        return next((w for w in words[words.index("airflow") + 1 :] if not w.startswith("-")), "airflow")
    for word in words[:3]:
        if word.endswith("/airflow"):
            return next((w for w in words[words.index(word) + 1 :] if not w.startswith("-")), "airflow")
    return os.path.basename(words[0]) if words else proc.name()
