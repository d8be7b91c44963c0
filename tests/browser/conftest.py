"""The demo page in a real browser: Debian's Chromium driven by Playwright, the example app
under real uvicorn in a subprocess, on its own table.

Run by ``make test-browser`` (which installs the ``chromium`` package when it is missing), not
by ``make test``. No browser is ever downloaded: Playwright launches ``/usr/bin/chromium``
(``CHROMIUM`` overrides the path); ``playwright install`` is never run.

Playwright rather than Selenium: its Python wheel carries its own driver, so nothing has to
match the browser's version (Selenium needs ``chromium-driver``), and it shows what the tests
are about: the real cookie jar including HttpOnly cookies (``context.cookies()``), the
``Cookie`` header each request actually carried (``request.all_headers()``), several tabs of
one context, history navigation and https with a self-signed certificate.
"""

from __future__ import annotations

import os
import shutil
import socket
import ssl
import subprocess
import sys
import threading
import time
import urllib.request
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from html import escape
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import parse_qs, urlsplit

import pymysql
import pytest
from playwright.sync_api import Browser, BrowserContext, Playwright, sync_playwright

from asgi_mysql_session.dsn import parse_dsn

ROOT = Path(__file__).resolve().parents[2]
MYSQL_URL = os.environ.get("MYSQL_URL", "mysql://root@127.0.0.1:3306/test")
CHROMIUM = os.environ.get("CHROMIUM", "/usr/bin/chromium")
APPS = ["starlette_app", "fastapi_app"]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def drop_table(table: str) -> None:
    conn = pymysql.connect(**parse_dsn(MYSQL_URL).pymysql_args(), autocommit=True)
    try:
        with conn.cursor() as cur:
            cur.execute(f"DROP TABLE IF EXISTS `{table}`")
    finally:
        conn.close()


@dataclass
class AppServer:
    """One example app under uvicorn, reached at ``url`` (``localhost``, not ``127.0.0.1``)."""

    app: str
    url: str
    table: str
    process: subprocess.Popen[bytes]
    log: Path

    def metric(self, name: str) -> float:
        """A Prometheus sample from the app's /metrics."""
        context = ssl._create_unverified_context()
        with urllib.request.urlopen(f"{self.url}/metrics", context=context, timeout=10) as answer:
            text = answer.read().decode()
        for line in text.splitlines():
            if line.startswith(name + " "):
                return float(line.split()[1])
        raise KeyError(name)


def start_app(
    app: str, log_dir: Path, *, secure_cookie: bool = False, cert: tuple[Path, Path] | None = None
) -> Iterator[AppServer]:
    """Start ``examples/<app>.py`` under uvicorn on a free port; yields the AppServer, then stops it."""
    port = free_port()
    table = f"t_browser_{uuid.uuid4().hex[:12]}"
    env = dict(
        os.environ,
        MYSQL_URL=MYSQL_URL,
        SESSION_TABLE=table,
        SESSION_COOKIE_SECURE="1" if secure_cookie else "0",
    )
    command = [sys.executable, "-m", "uvicorn", f"examples.{app}:app", "--host", "127.0.0.1"]
    command += ["--port", str(port), "--log-level", "warning"]
    scheme = "http"
    if cert is not None:
        command += ["--ssl-certfile", str(cert[0]), "--ssl-keyfile", str(cert[1])]
        scheme = "https"
    log = log_dir / f"uvicorn-{app}-{port}.log"
    with log.open("wb") as out:
        process = subprocess.Popen(command, cwd=ROOT, env=env, stdout=out, stderr=subprocess.STDOUT)
    server = AppServer(app, f"{scheme}://localhost:{port}", table, process, log)
    try:
        wait_until_up(server, f"{scheme}://127.0.0.1:{port}/health")
        yield server
    finally:
        process.terminate()  # only the process this fixture started, by its own handle
        try:
            process.wait(timeout=15)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
        drop_table(table)


def wait_until_up(server: AppServer, health: str) -> None:
    context = ssl._create_unverified_context()
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        if server.process.poll() is not None:
            raise RuntimeError(f"uvicorn exited with {server.process.returncode}:\n{server.log.read_text()}")
        try:
            with urllib.request.urlopen(health, context=context, timeout=2) as answer:
                if answer.status == 200:
                    return
        except OSError:
            time.sleep(0.1)
    raise RuntimeError(f"uvicorn did not answer {health} within 30 s:\n{server.log.read_text()}")


# -- fixtures ----------------------------------------------------------------------------


@pytest.fixture(scope="session")
def playwright() -> Iterator[Playwright]:
    with sync_playwright() as p:
        yield p


@pytest.fixture(scope="session")
def browser(playwright: Playwright) -> Iterator[Browser]:
    if not os.path.exists(CHROMIUM):
        pytest.fail(f"{CHROMIUM} is missing: `make test-browser` installs Debian's chromium package")
    # Playwright adds --no-sandbox (it runs as root here) and --headless; the certificate of
    # the https tests is self-signed, made for this run.
    browser = playwright.chromium.launch(
        executable_path=CHROMIUM,
        args=["--ignore-certificate-errors", "--host-resolver-rules=MAP demo.test 127.0.0.1"],
    )
    yield browser
    browser.close()


@pytest.fixture
def context(browser: Browser) -> Iterator[BrowserContext]:
    context = browser.new_context(viewport={"width": 760, "height": 720})
    context.set_default_timeout(15_000)
    yield context
    context.close()


@pytest.fixture(scope="module", params=APPS, ids=["starlette", "fastapi"])
def app_name(request: pytest.FixtureRequest) -> str:
    return str(request.param)


@pytest.fixture(scope="module")
def server(app_name: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[AppServer]:
    """The app over plain http with the default cookie (``session``, Secure only on https)."""
    yield from start_app(app_name, tmp_path_factory.mktemp("logs"))


@pytest.fixture(scope="module")
def certificate(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """A throwaway self-signed certificate for localhost, made with the openssl command."""
    openssl = shutil.which("openssl")
    if openssl is None:
        pytest.fail("the openssl command is missing: apt-get install openssl")
    folder = tmp_path_factory.mktemp("tls")
    cert, key = folder / "cert.pem", folder / "key.pem"
    subprocess.run(
        [openssl, "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1", "-subj", "/CN=localhost",
         "-addext", "subjectAltName=DNS:localhost,IP:127.0.0.1", "-keyout", str(key), "-out", str(cert)],
        check=True,
        capture_output=True,
    )  # fmt: skip
    return cert, key


@pytest.fixture(scope="module")
def secure_server(
    app_name: str, certificate: tuple[Path, Path], tmp_path_factory: pytest.TempPathFactory
) -> Iterator[AppServer]:
    """The app over https with the secure configuration (``__Host-session``, ``secure=True``)."""
    yield from start_app(app_name, tmp_path_factory.mktemp("logs"), secure_cookie=True, cert=certificate)


@pytest.fixture(scope="module")
def secure_cookie_on_http(app_name: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[AppServer]:
    """The secure configuration served over plain http (what works on http://localhost?)."""
    yield from start_app(app_name, tmp_path_factory.mktemp("logs"), secure_cookie=True)


class _Attacker(BaseHTTPRequestHandler):
    """``GET /attack?target=URL&csrf=TOKEN``: a page on another site with a form that POSTs there."""

    def do_GET(self) -> None:
        query = parse_qs(urlsplit(self.path).query)
        target = query.get("target", [""])[0]
        token = query.get("csrf", ["forged"])[0]
        body = (
            "<!doctype html><title>Win a prize</title>"
            f'<form method="post" action="{escape(target)}">'
            f'<input type="hidden" name="csrf" value="{escape(token)}">'
            '<input type="hidden" name="value" value="pwned">'
            '<button id="prize">Claim your prize</button></form>'
        ).encode()
        self.send_response(200)
        self.send_header("Content-Type", "text/html; charset=utf-8")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format: str, *args: object) -> None:  # quiet
        pass


@pytest.fixture(scope="session")
def attacker() -> Iterator[str]:
    """Base URL of another site: ``http://127.0.0.1:PORT`` (the app is reached at ``localhost``)."""
    httpd = ThreadingHTTPServer(("127.0.0.1", 0), _Attacker)
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{httpd.server_address[1]}"
    httpd.shutdown()
    httpd.server_close()
