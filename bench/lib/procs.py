"""Child processes: start one with its output in a log file, wait until it answers, stop it by PID.

Every process a script starts is a ``Process``: in a session of its own (a Ctrl-C at the
terminal reaches the script, which stops its children itself), stopped with SIGTERM, then
SIGKILL for it and the children it still has, always by PID, never by name.
"""

from __future__ import annotations

import contextlib
import http.client
import os
import selectors
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from lib import ROOT
from lib.console import say
from lib.http import fetch


def free_port() -> int:
    """A TCP port of 127.0.0.1 that nothing listens on now (the kernel's choice)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def children(pid: int) -> list[int]:
    """The PIDs of the children of ``pid`` (none once it is gone)."""
    found: list[int] = []
    with contextlib.suppress(OSError):
        for task in Path(f"/proc/{pid}/task").iterdir():
            with contextlib.suppress(OSError):
                found += [int(c) for c in (task / "children").read_text().split()]
    return found


class Process:
    """One child process, started at once; stderr (and stdout, unless ``pipe``) go to ``log``.

    With ``pipe=True`` stdout stays readable with ``read_line`` (the fault proxy prints its
    ports there).
    """

    def __init__(
        self,
        name: str,
        command: Sequence[str],
        log: Path,
        *,
        env: Mapping[str, str] | None = None,
        cwd: Path = ROOT,
        pipe: bool = False,
    ) -> None:
        self.name = name
        self.log = log
        with log.open("wb") as out:
            self.popen = subprocess.Popen(
                list(command),
                env=env,
                cwd=cwd,
                stdout=subprocess.PIPE if pipe else out,
                stderr=out,
                start_new_session=True,
            )

    @property
    def pid(self) -> int:
        return self.popen.pid

    def running(self) -> bool:
        return self.popen.poll() is None

    def read_line(self, timeout: float) -> str:
        """The next stdout line within ``timeout`` seconds (empty if none)."""
        assert self.popen.stdout is not None
        with selectors.DefaultSelector() as sel:
            sel.register(self.popen.stdout, selectors.EVENT_READ)
            if not sel.select(timeout):
                return ""
        return self.popen.stdout.readline().decode(errors="replace").strip()

    def log_text(self) -> str:
        with contextlib.suppress(OSError):
            return self.log.read_text(errors="replace")
        return ""

    def stop(self, grace: float) -> None:
        """SIGTERM, wait ``grace`` s, then SIGKILL it and the children it still has (by PID)."""
        proc = self.popen
        if proc.poll() is not None:
            return
        kids = children(proc.pid)
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(grace)
            return
        except subprocess.TimeoutExpired:
            pass
        say(f"  {self.name} (pid {proc.pid}) did not stop within {grace:g}s: killing it and its children")
        for pid in [*children(proc.pid), *kids]:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
        proc.kill()
        proc.wait(5)


def wait_ready(proc: Process, port: int, path: str, *, workers: int = 1, timeout: float = 30) -> set[str]:
    """Poll GET ``path`` on new connections until ``workers`` processes answered 200, or ``timeout`` s.

    The workers are told apart by their ``x-worker`` header (an app that sends none is one).
    Returns the x-worker values seen: empty when the process exited or nothing answered.
    """
    seen: set[str] = set()
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline and proc.running():
        with contextlib.suppress(OSError, http.client.HTTPException):
            status, headers, _ = fetch(port, path, timeout=2)
            if status == 200:
                seen.add(headers.get("x-worker", ""))
                if len(seen) >= workers:
                    return seen
        time.sleep(0.05 if seen else 0.2)
    return seen if proc.running() else set()


def uvicorn(
    app: str, app_dir: Path, port: int, *, workers: int = 1, options: Sequence[str] = ()
) -> list[str]:
    """The command line of uvicorn serving ``app`` on 127.0.0.1:``port``, quiet, lifespan on."""
    return [
        sys.executable, "-m", "uvicorn", app, "--app-dir", str(app_dir),
        "--host", "127.0.0.1", "--port", str(port), "--workers", str(workers), *options,
        "--no-access-log", "--log-level", "warning", "--lifespan", "on",
    ]  # fmt: skip


def bound_run(seconds: int, what: str) -> None:
    """From now on, end this run with an exception, so that its ``finally`` still cleans up.

    TimeoutError after ``seconds`` (SIGALRM; ``signal.alarm(0)`` disarms it),
    KeyboardInterrupt on SIGTERM, and on SIGINT even when the run was started with SIGINT
    ignored (a background job).
    """

    def on_alarm(signum: int, frame: Any) -> None:
        raise TimeoutError(f"{what} exceeded its {seconds}s bound")

    def on_term(signum: int, frame: Any) -> None:
        raise KeyboardInterrupt

    signal.signal(signal.SIGALRM, on_alarm)
    signal.signal(signal.SIGTERM, on_term)
    signal.signal(signal.SIGINT, on_term)
    signal.alarm(seconds)


def keep_logs(logdir: Path, keep: bool, who: str) -> None:
    """Say where the logs are if ``keep``, else delete ``logdir`` and the files in it."""
    if keep:
        say(f"{who}: logs kept in {logdir}")
        return
    for path in logdir.iterdir():
        path.unlink()
    logdir.rmdir()
