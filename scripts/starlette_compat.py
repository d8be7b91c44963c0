"""Run Starlette's own SessionMiddleware tests against asgi_mysql_session.

    make test-starlette-compat        # or: .venv/bin/python scripts/starlette_compat.py

Downloads the sdist of the installed Starlette (``pip download --no-binary :all: --no-deps``)
into a temporary directory, extracts ``tests/middleware/test_session.py``, points its import
of ``starlette.middleware.sessions`` at ``tests/compat/adapter.py`` (Starlette's constructor
signature over our middleware and a provider on ``MYSQL_URL``, in a table of its own that is
dropped afterwards), runs it with pytest and prints the passed and failed counts, with the
reason for each test that cannot pass with a server-side store. Nothing is written to the
repository. Exit status: 0 when every failure is an expected one.
"""

from __future__ import annotations

import importlib.metadata
import os
import re
import subprocess
import sys
import tarfile
import tempfile
import uuid
import xml.etree.ElementTree as ET
from pathlib import Path

import pymysql

ROOT = Path(__file__).resolve().parent.parent
MYSQL_URL = os.environ.get("MYSQL_URL", "mysql://root@127.0.0.1:3306/test")

#: Tests that cannot pass for a server-side store on aiomysql, and why.
EXPECTED = {
    r"\[trio[-\]]": "aiomysql runs only on asyncio: under trio the middleware fails with a "
    "SessionConfigError that says so",
    r"^test_session_expires\[asyncio\]$": "max_age=-1: Starlette refuses the cookie the test "
    "replays by the timestamp signed into it; here the cookie holds only an id, Max-Age=-1 "
    "tells the browser to drop it, and the row lives for max_lifetime (at least 1 s)",
}

CONFTEST = """
import functools

import pytest
from starlette.testclient import TestClient


@pytest.fixture
def test_client_factory(anyio_backend_name, anyio_backend_options):
    return functools.partial(TestClient, backend=anyio_backend_name, backend_options=anyio_backend_options)
"""

TYPES = """
class TestClientFactory:  # only an annotation in the tests
    __test__ = False
"""

PYTEST_INI = """
[pytest]
addopts = -p no:cacheprovider -p no:asyncio
filterwarnings =
    error
    ignore:Using `httpx` with `starlette.testclient` is deprecated
"""


def fetch_tests(version: str, into: Path) -> Path:
    subprocess.run(
        [sys.executable, "-m", "pip", "download", "-q", "--no-binary", ":all:", "--no-deps",
         f"starlette=={version}", "-d", str(into)],
        check=True,
    )  # fmt: skip
    [sdist] = into.glob("starlette-*.tar.gz")
    member = f"starlette-{version}/tests/middleware/test_session.py"
    with tarfile.open(sdist) as archive:
        source = archive.extractfile(member)
        assert source is not None, f"{member} is not in {sdist.name}"
        text = source.read().decode()
    text, count = re.subn(
        r"from starlette\.middleware\.sessions import", "from adapter import", text
    )  # fmt: skip
    assert count == 1, "the test file no longer imports starlette.middleware.sessions as expected"
    tests = into / "run" / "tests"
    (tests / "middleware").mkdir(parents=True)
    (tests / "__init__.py").write_text("")
    (tests / "middleware" / "__init__.py").write_text("")
    (tests / "conftest.py").write_text(CONFTEST)
    (tests / "types.py").write_text(TYPES)
    (tests / "middleware" / "test_session.py").write_text(text)
    (into / "run" / "pytest.ini").write_text(PYTEST_INI)
    return into / "run"


def run(workdir: Path, table: str) -> list[tuple[str, str | None]]:
    report = workdir / "report.xml"
    env = dict(os.environ, STARLETTE_COMPAT_TABLE=table, MYSQL_URL=MYSQL_URL)
    env["PYTHONPATH"] = os.pathsep.join([str(ROOT / "tests" / "compat"), str(workdir)])
    # pytest's own output stays in a file: its closing line ("15 failed, 14 passed") counts
    # the failures that cannot pass here, and would read as this run's verdict in a CI log.
    with (workdir / "pytest.log").open("w") as log:
        command = [sys.executable, "-m", "pytest", "-q", f"--junitxml={report}"]
        subprocess.run(
            [*command, "tests/middleware/test_session.py"],
            cwd=workdir, env=env, check=False, stdout=log, stderr=subprocess.STDOUT,
        )  # fmt: skip
    results: list[tuple[str, str | None]] = []
    for case in ET.parse(report).getroot().iter("testcase"):
        problem = case.find("failure")
        if problem is None:
            problem = case.find("error")
        message = None if problem is None else (problem.get("message") or "failed").splitlines()[0]
        results.append((case.get("name", "?"), message))
    return results


def main() -> int:
    version = importlib.metadata.version("starlette")
    table = f"starlette_compat_{uuid.uuid4().hex[:12]}"
    from asgi_mysql_session.dsn import parse_dsn

    admin = pymysql.connect(**parse_dsn(MYSQL_URL).pymysql_args(), autocommit=True)
    try:
        with tempfile.TemporaryDirectory(prefix="starlette-compat-") as tmp:
            results = run(fetch_tests(version, Path(tmp)), table)
    finally:
        with admin.cursor() as cursor:
            cursor.execute(f"DROP TABLE IF EXISTS `{table}`")
        admin.close()
    passed = [name for name, message in results if message is None]
    failed = [(name, message) for name, message in results if message is not None]
    print(f"\nStarlette {version} tests/middleware/test_session.py through asgi_mysql_session:")
    print(f"{len(passed)} of {len(results)} pass; the other {len(failed)} are listed with why")
    unexpected = 0
    for name, message in failed:
        reason = next((why for pattern, why in EXPECTED.items() if re.search(pattern, name)), None)
        if reason is None:
            unexpected += 1
            print(f"  UNEXPECTED  {name}: {message}")
        else:
            print(f"  expected    {name}: {reason}")
    print(f"{unexpected} unexpected failure(s)")
    return 1 if unexpected or not results else 0


if __name__ == "__main__":
    sys.exit(main())
