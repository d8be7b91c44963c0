"""`make test-matrix`: the test suite on the oldest and newest drivers the package allows.

Each combination of aiomysql (0.2.x, 0.3.x) and PyMySQL (1.0.x, 1.1.x, 1.2.x) gets its own
virtual environment in .matrix/<combo>/ (git-ignored; reused while pyproject.toml is
unchanged, built anew otherwise; the pip cache is shared), where pip installs the package
with its dev extras and the combination's exact versions in one resolution, so a version the
declared ranges exclude fails the install instead of being forced in. Then the real suite
runs there, two combinations at a time (``--jobs``), each in a database of its own
(matrix_<n> on the MYSQL_URL server, dropped afterwards: tests make a table per test, and the
CLI's stats name the database), with its own Hypothesis folder and no pytest cache. The next
venv is built while the first combinations run.

Left out, and run by `make test` once: tests/test_packaging.py builds the sdist and wheel
from the checkout and installs the wheel with --no-deps. It never imports a driver, and two
builds from the same checkout at once would write the same egg-info folder.

Prints one line per combination as it ends and a table at the end; exits 1 if any failed.
"""

from __future__ import annotations

import argparse
import hashlib
import os
import re
import shutil
import subprocess
import sys
import threading
import time
import tomllib
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

import pymysql
from packaging.requirements import Requirement

from asgi_mysql_session.dsn import parse_dsn

ROOT = Path(__file__).resolve().parent.parent
MATRIX = ROOT / ".matrix"
MYSQL_URL = os.environ.get("MYSQL_URL", "mysql://root@127.0.0.1:3306/test")

#: Oldest and newest release of each series the dependency ranges allow.
AIOMYSQL = ("0.2.0", "0.3.2")
PYMYSQL = ("1.0.2", "1.1.3", "1.2.4")
#: Not run per combination (see the module's docstring).
IGNORED = ("tests/test_packaging.py",)

_COUNT = re.compile(r"(\d+) (passed|failed|errors?|skipped|xfailed|xpassed)")
_print_lock = threading.Lock()


def say(message: str) -> None:
    with _print_lock:
        print(f"test-matrix: {message}", flush=True)


@dataclass
class Combo:
    index: int
    aiomysql: str
    pymysql: str
    installed: str = ""  # "aiomysql X, PyMySQL Y" as imported in the venv
    counts: dict[str, int] = field(default_factory=dict)
    seconds: float = 0.0
    setup_seconds: float = 0.0
    returncode: int | None = None
    problem: str = ""

    @property
    def name(self) -> str:
        return f"aiomysql-{self.aiomysql}_pymysql-{self.pymysql}"

    @property
    def folder(self) -> Path:
        return MATRIX / self.name

    @property
    def python(self) -> Path:
        return self.folder / "venv" / "bin" / "python"

    @property
    def database(self) -> str:
        return f"matrix_{self.index}"

    @property
    def ok(self) -> bool:
        return self.returncode == 0 and not self.problem and self.counts.get("passed", 0) > 0


def check_ranges(combos: list[Combo]) -> None:
    """Every version of the matrix lies inside pyproject.toml's ranges (else the matrix is stale)."""
    project = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))["project"]
    ranges = {Requirement(r).name.lower(): Requirement(r).specifier for r in project["dependencies"]}
    for combo in combos:
        for name, version in (("aiomysql", combo.aiomysql), ("pymysql", combo.pymysql)):
            if version not in ranges[name]:
                sys.exit(f"test-matrix: {name} {version} is outside pyproject.toml's {name}{ranges[name]}")


def run(argv: list[str | Path], log: Path, cwd: Path | None = None) -> None:
    with log.open("a", encoding="utf-8") as out:
        out.write("$ " + " ".join(map(str, argv)) + "\n")
        out.flush()
        subprocess.run([str(a) for a in argv], check=True, stdout=out, stderr=subprocess.STDOUT, cwd=cwd)


def setup(combo: Combo, stamp: str) -> None:
    """The combination's venv: the package (editable) with dev extras and its exact drivers."""
    started = time.monotonic()
    venv = combo.folder / "venv"
    marker = combo.folder / "installed"
    log = combo.folder / "setup.log"
    if not (marker.exists() and marker.read_text() == stamp and combo.python.exists()):
        shutil.rmtree(combo.folder, ignore_errors=True)
        combo.folder.mkdir(parents=True)
        say(f"{combo.name}: creating {venv.relative_to(ROOT)}")
        run([sys.executable, "-m", "venv", venv], log)
        run([combo.python, "-m", "pip", "install", "-q", "--upgrade", "pip"], log)
        pins = [f"aiomysql=={combo.aiomysql}", f"PyMySQL=={combo.pymysql}"]
        run([combo.python, "-m", "pip", "install", "-q", "-e", ".[dev]", *pins], log, cwd=ROOT)
        marker.write_text(stamp)
    # Not pymysql.__version__: PyMySQL 1.1 gives mysqlclient's version there, for Django.
    probe = "from importlib.metadata import version; print(version('aiomysql'), version('PyMySQL'))"
    found = subprocess.run([combo.python, "-c", probe], check=True, capture_output=True, text=True)
    got = found.stdout.split()
    combo.installed = f"aiomysql {got[0]}, PyMySQL {got[1]}"
    if got != [combo.aiomysql, combo.pymysql]:
        raise RuntimeError(f"the venv has {combo.installed}")
    combo.setup_seconds = time.monotonic() - started


def database_url(name: str) -> str:
    parts = urlsplit(MYSQL_URL)
    return urlunsplit(parts._replace(path="/" + name))


def admin(statement: str) -> None:
    args = parse_dsn(MYSQL_URL).pymysql_args()
    conn = pymysql.connect(**args, autocommit=True)
    try:
        with conn.cursor() as cur:
            cur.execute(statement)
    finally:
        conn.close()


def test(combo: Combo, pytest_args: list[str]) -> None:
    say(f"{combo.name}: pytest started")
    log = combo.folder / "pytest.log"
    admin(f"DROP DATABASE IF EXISTS `{combo.database}`")
    admin(f"CREATE DATABASE `{combo.database}`")
    env = dict(
        os.environ,
        MYSQL_URL=database_url(combo.database),
        HYPOTHESIS_STORAGE_DIRECTORY=str(combo.folder / "hypothesis"),
    )
    ignores = [f"--ignore={path}" for path in IGNORED]
    argv = [combo.python, "-m", "pytest", "-q", "-p", "no:cacheprovider", *ignores, *pytest_args]
    started = time.monotonic()
    try:
        with log.open("w", encoding="utf-8") as out:
            done = subprocess.run(
                [str(a) for a in argv], cwd=ROOT, env=env, stdout=out, stderr=subprocess.STDOUT
            )
    finally:
        combo.seconds = time.monotonic() - started
        admin(f"DROP DATABASE IF EXISTS `{combo.database}`")
    combo.returncode = done.returncode
    lines = log.read_text(encoding="utf-8", errors="replace").splitlines()
    closing = next((line for line in reversed(lines) if " in " in line and _COUNT.search(line)), "")
    for number, word in _COUNT.findall(closing):
        combo.counts[word.rstrip("s") if word.startswith("error") else word] = int(number)
    if not closing:
        combo.problem = "no pytest closing line"
    verdict = "ok" if combo.ok else "FAILED"
    say(f"{combo.name}: {verdict} {closing.strip('= ')} (log: {log.relative_to(ROOT)})")


def table(combos: list[Combo], wall: float) -> str:
    header = ("aiomysql", "PyMySQL", "passed", "failed", "errors", "skipped", "setup s", "pytest s", "result")
    rows = [header]
    for c in combos:
        rows.append(
            (
                c.aiomysql,
                c.pymysql,
                str(c.counts.get("passed", 0)),
                str(c.counts.get("failed", 0)),
                str(c.counts.get("error", 0)),
                str(c.counts.get("skipped", 0)),
                f"{c.setup_seconds:.0f}",
                f"{c.seconds:.0f}",
                "ok" if c.ok else "FAILED" + (f" ({c.problem})" if c.problem else ""),
            )
        )
    widths = [max(len(row[i]) for row in rows) for i in range(len(header))]
    lines = ["  ".join(cell.ljust(w) for cell, w in zip(row, widths, strict=True)).rstrip() for row in rows]
    lines.insert(1, "  ".join("-" * w for w in widths))
    lines.append(f"{len(combos)} combinations in {wall:.0f} s")
    return "\n".join(lines)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    parser.add_argument("--jobs", type=int, default=2, help="combinations tested at once (default 2)")
    parser.add_argument("pytest_args", nargs="*", help="passed to pytest (after --)")
    options = parser.parse_args()
    started = time.monotonic()
    combos = [Combo(i, a, p) for i, (a, p) in enumerate((a, p) for a in AIOMYSQL for p in PYMYSQL)]
    check_ranges(combos)
    stamp = hashlib.sha256((ROOT / "pyproject.toml").read_bytes()).hexdigest()
    MATRIX.mkdir(exist_ok=True)
    with ThreadPoolExecutor(max_workers=max(1, options.jobs)) as pool:
        running = []
        # Venvs one after another (editable installs of one checkout write the same egg-info
        # folder), each combination's tests starting as soon as its venv is ready.
        for combo in combos:
            try:
                setup(combo, stamp)
            except (subprocess.CalledProcessError, RuntimeError) as exc:
                combo.problem = f"setup failed: {exc}"
                say(f"{combo.name}: {combo.problem} (log: {(combo.folder / 'setup.log').relative_to(ROOT)})")
                continue
            running.append(pool.submit(test, combo, options.pytest_args))
        for future in running:
            future.result()
    for combo in combos:
        if not combo.ok and (combo.folder / "pytest.log").exists():
            tail = (combo.folder / "pytest.log").read_text(encoding="utf-8", errors="replace").splitlines()
            print(f"\n--- {combo.name}: last lines of pytest.log ---", *tail[-40:], sep="\n")
    print()
    print(table(combos, time.monotonic() - started))
    bad = [c.name for c in combos if not c.ok]
    if bad:
        print(f"test-matrix: {len(bad)} of {len(combos)} combinations failed: {', '.join(bad)}")
    passed = sum(c.counts.get("passed", 0) for c in combos)
    failed = sum(c.counts.get("failed", 0) + c.counts.get("error", 0) for c in combos)
    print(f"test-matrix: {passed} passed, {failed} failed", flush=True)
    return 0 if all(c.ok for c in combos) else 1


if __name__ == "__main__":
    sys.exit(main())
