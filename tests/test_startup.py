"""Start-up fails closed: a provider that cannot open stops the server (real uvicorn).

With uvicorn's default ``--lifespan auto``, an exception during startup would make it
decide that lifespan is unsupported and serve anyway, skipping the app's own hooks and
answering 503 to every session request. The middleware reports the failure as Starlette
does its own (``lifespan.startup.failed``), so uvicorn logs it and exits.
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def run_uvicorn(target: str, mysql_url: str) -> subprocess.CompletedProcess[str]:
    """uvicorn with its defaults (lifespan auto), the way a user starts the example."""
    env = {**os.environ, "MYSQL_URL": mysql_url, "SESSION_TABLE": "startup_never_created"}
    return subprocess.run(
        [sys.executable, "-m", "uvicorn", target, "--host", "127.0.0.1", "--port", str(free_port())],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,  # a server that came up anyway would run until here: the test fails
    )


@pytest.mark.parametrize("target", ["examples.starlette_app:app", "examples.fastapi_app:app"])
def test_an_unreachable_database_makes_uvicorn_report_startup_failure_and_exit(target: str) -> None:
    dead = f"mysql://root:{'Hunter22'}@127.0.0.1:{free_port()}/test?connect_timeout=2"
    done = run_uvicorn(target, dead)
    assert done.returncode != 0
    assert "Application startup failed. Exiting." in done.stderr
    assert "cannot connect" in done.stderr  # the cause, as the provider words it
    assert "lifespan' protocol appears unsupported" not in done.stderr
    assert "Hunter22" not in done.stderr + done.stdout


def test_a_wrong_password_makes_uvicorn_exit_too() -> None:
    from conftest import MYSQL_URL

    from asgi_mysql_session.dsn import parse_dsn

    target = parse_dsn(MYSQL_URL)
    wrong = f"mysql://{target.user}:Wr0ngPass@{target.host}:{target.port}/{target.database}"
    done = run_uvicorn("examples.starlette_app:app", wrong)
    assert done.returncode != 0 and "Application startup failed. Exiting." in done.stderr
    assert "Access denied" in done.stderr and "Wr0ngPass" not in done.stderr
