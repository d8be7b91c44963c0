"""Every code block in README.md runs: Python blocks for real, shell lines against real targets."""

from __future__ import annotations

import re
import shlex
import subprocess
from pathlib import Path
from typing import Any

import pytest
from asgitools import serve
from conftest import MYSQL_URL

from asgi_mysql_session import cli

README = Path(__file__).resolve().parent.parent / "README.md"
BLOCK = re.compile(r"```(\w+)\n(.*?)```", re.DOTALL)
DOC_DSN = '"mysql://root@127.0.0.1:3306/test"'


def blocks(language: str) -> list[str]:
    return [code for lang, code in BLOCK.findall(README.read_text()) if lang == language]


def run_python(code: str, table: str) -> dict[str, Any]:
    """Run a README block against the test database, in a table of its own."""
    assert DOC_DSN in code or "asyncio.run" not in code
    namespace: dict[str, Any] = {"__name__": "readme_block"}
    exec(compile(code.replace(DOC_DSN, f'"{MYSQL_URL}", table="{table}"'), "README.md", "exec"), namespace)
    return namespace


def block(marker: str) -> str:
    """The one Python block of the README that holds ``marker``."""
    [found] = [code for code in blocks("python") if marker in code]
    return found


def test_readme_has_the_expected_blocks() -> None:
    assert len(blocks("python")) == 6
    assert any(code.startswith("make test\n") or code.startswith("make test ") for code in blocks("sh"))


async def test_first_screen_three_lines(table: str) -> None:
    ns = run_python(block("request.session now lives in MySQL"), table)
    async with serve(ns["app"]) as http:
        assert (await http.get("/nothing-here")).status_code == 404
    assert any(m.cls.__name__ == "SessionMiddleware" for m in ns["app"].user_middleware)


async def test_starlette_quick_start(table: str) -> None:
    ns = run_python(block("async def counter(request: Request)"), table)
    async with serve(ns["app"]) as http:
        assert (await http.get("/login", params={"user": "ada"})).json() == {"user": "ada"}
        assert (await http.get("/counter")).json() == {"n": 1}
        assert (await http.get("/counter")).json() == {"n": 2}
        assert (await http.get("/logout")).json() == {"ok": True}
        assert (await http.get("/counter")).json() == {"n": 1}  # a fresh session after logout


async def test_fastapi_quick_start(table: str) -> None:
    ns = run_python(block("session_dependency"), table)
    async with serve(ns["app"]) as http:
        assert (await http.post("/counter")).json() == {"n": 1}
        assert (await http.post("/counter")).json() == {"n": 2}


def test_provider_walkthrough(table: str, capsys: pytest.CaptureFixture[str]) -> None:
    run_python(block("asyncio.run(main())"), table)
    assert capsys.readouterr().out == "live sessions: 1\nexpired rows swept: 0\n"


async def test_serialized_mode_snippet(table: str) -> None:
    ns = run_python(block("serialize=["), table)
    async with serve(ns["app"]) as http:
        assert (await http.get("/cart")).status_code == 404  # no routes; the middleware is configured
    middleware = ns["app"].user_middleware[0]
    assert middleware.kwargs["serialize"] == ["/cart", "/checkout"]


async def test_migration_snippet(table: str) -> None:
    ns = run_python(block("# before: Middleware("), table)
    assert ns["provider"].max_lifetime == 14 * 24 * 3600
    async with serve(ns["app"]) as http:
        assert (await http.get("/")).status_code == 404


def test_make_targets_in_the_readme_exist() -> None:
    targets = {
        line.split()[1] for block in blocks("sh") for line in block.splitlines() if line.startswith("make ")
    }
    targets |= set(re.findall(r"`make (\w+)`", README.read_text()))
    assert {"test", "demo"} <= targets
    makefile = (README.parent / "Makefile").read_text()
    for target in sorted(targets):
        assert re.search(rf"^{target}:", makefile, re.MULTILINE), f"no rule for make {target}"
        dry = subprocess.run(["make", "-n", target], cwd=README.parent, capture_output=True, text=True)
        assert dry.returncode == 0, f"make {target}: {dry.stderr}"


def test_cli_lines_in_the_readme_run(table: str, capsys: pytest.CaptureFixture[str]) -> None:
    lines = [
        line for block in blocks("sh") for line in block.splitlines() if line.startswith("asgi-mysql-session")
    ]
    assert lines
    for line in lines:
        args = shlex.split(line.split("#", 1)[0])[1:]
        if "--dsn" in args:  # init --print-sql connects to nothing
            args[args.index("--dsn") + 1] = MYSQL_URL
        assert cli.main(["--table", table, *args]) == 0, line
    assert "live" in capsys.readouterr().out
