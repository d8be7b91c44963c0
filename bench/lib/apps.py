"""The bench apps (bench/apps) under uvicorn: one process per app, the same flags for every app."""

from __future__ import annotations

from pathlib import Path

from lib import BENCH
from lib.procs import Process, children, uvicorn, wait_ready

APPS = BENCH / "apps"
APP_MODULES = {"project": "project_app", "lean": "lean_app", "raw": "raw_app", "cookie": "cookie_app"}
APP_TITLES = {
    "project": "asgi_mysql_session",
    "lean": "hand-written aiomysql (reference)",
    "raw": "raw aiomysql, the package's SQL",
    "cookie": "Starlette signed cookie",
}
#: Every app runs with these (and 1 worker unless ``--workers`` says otherwise), uvloop, httptools.
FLAGS = ("--loop", "uvloop", "--http", "httptools")


class Server:
    """One uvicorn process serving one of bench/apps; ``start()`` returns once /health answers."""

    def __init__(
        self, name: str, port: int, env: dict[str, str], log_dir: Path, tag: str = "", *, workers: int = 1
    ) -> None:
        self.name = name
        self.workers = workers
        self.port = port
        self.env = env
        self.log_path = log_dir / f"server-{name}{tag}.log.tmp"
        self.proc: Process | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def pid(self) -> int | None:
        return self.proc.pid if self.proc else None

    def pids(self) -> list[int]:
        """The server's processes: uvicorn, and its workers when there are several."""
        pid = self.pid
        if pid is None:
            return []
        return [pid, *children(pid)] if self.workers > 1 else [pid]

    def start(self) -> None:
        command = uvicorn(
            f"{APP_MODULES[self.name]}:app", APPS, self.port, workers=self.workers, options=FLAGS
        )
        self.proc = proc = Process(f"the {self.name} app", command, self.log_path, env=self.env)
        if not wait_ready(proc, self.port, "/health"):
            if not proc.running():
                raise SystemExit(f"bench: the {self.name} app exited:\n{proc.log_text()}")
            raise SystemExit(f"bench: the {self.name} app did not answer on {self.url}")

    def stop(self) -> None:
        proc, self.proc = self.proc, None
        if proc is not None:
            proc.stop(15)
