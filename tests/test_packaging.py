"""What the wheel ships: built from an sdist, installed into a fresh venv, its CLI run.

The slow test builds like ``make dist`` (``python -m build``: an sdist, then the wheel from
the unpacked sdist, in an isolated build environment), installs the wheel with ``--no-deps``
into a new venv that sees this environment's site-packages only for the dependencies, and
runs the installed ``asgi-mysql-session`` from outside the checkout.
"""

from __future__ import annotations

import importlib.metadata
import subprocess
import sys
import sysconfig
import tarfile
import tomllib
import zipfile
from pathlib import Path

import pytest
from trove_classifiers import classifiers as known_classifiers

import asgi_mysql_session
from asgi_mysql_session.ddl import SCHEMA, schema_sql

ROOT = Path(__file__).resolve().parent.parent
PYPROJECT = tomllib.loads((ROOT / "pyproject.toml").read_text())


def test_the_version_has_one_source() -> None:
    assert PYPROJECT["project"]["dynamic"] == ["version"]
    assert "version" not in PYPROJECT["project"]
    assert PYPROJECT["tool"]["setuptools"]["dynamic"]["version"] == {"attr": "asgi_mysql_session.__version__"}
    assert importlib.metadata.version("asgi_mysql_session") == asgi_mysql_session.__version__


def test_every_classifier_exists() -> None:
    classifiers = PYPROJECT["project"]["classifiers"]
    assert [c for c in classifiers if c not in known_classifiers] == []
    assert {"Typing :: Typed", "Framework :: AsyncIO", "Framework :: FastAPI"} <= set(classifiers)
    assert not [c for c in classifiers if c.startswith("License ::")]  # `license` is an SPDX expression


def test_the_license_file_is_the_declared_license() -> None:
    assert PYPROJECT["project"]["license"] == "MIT"
    text = (ROOT / "LICENSE").read_text()
    assert text.startswith("MIT License\n") and "Copyright (c) the asgi_mysql_session authors" in text


def run(*argv: str | Path, cwd: Path) -> str:
    done = subprocess.run([str(a) for a in argv], cwd=cwd, capture_output=True, text=True, timeout=180)
    assert done.returncode == 0, f"{argv}: {done.stdout}\n{done.stderr}"
    return done.stdout


@pytest.mark.slow
def test_the_built_wheel_installs_and_its_cli_prints_the_packaged_schema(tmp_path: Path) -> None:
    dist = tmp_path / "dist"
    run(sys.executable, "-m", "build", "--outdir", dist, ROOT, cwd=tmp_path)
    [wheel] = dist.glob("*.whl")
    [sdist] = dist.glob("*.tar.gz")
    version = asgi_mysql_session.__version__
    assert wheel.name == f"asgi_mysql_session-{version}-py3-none-any.whl"

    names = set(zipfile.ZipFile(wheel).namelist())
    for name in ("py.typed", "schema.sql", "__init__.py", "cli.py"):
        assert f"asgi_mysql_session/{name}" in names
    assert f"asgi_mysql_session-{version}.dist-info/licenses/LICENSE" in names
    assert not [n for n in names if n.startswith(("tests/", "bench/", "examples/"))]
    with tarfile.open(sdist) as tar:
        members = {m.split("/", 1)[1] for m in tar.getnames() if "/" in m}
    assert {"LICENSE", "schema.sql", "asgi_mysql_session/schema.sql", "tests/conftest.py"} <= members

    venv = tmp_path / "venv"
    run(sys.executable, "-m", "venv", venv, cwd=tmp_path)
    python, cli = venv / "bin" / "python", venv / "bin" / "asgi-mysql-session"
    run(python, "-m", "pip", "install", "-q", "--no-deps", "--no-index", wheel, cwd=tmp_path)
    # The dependencies (not this package: its editable hook is a .pth that a path entry skips).
    site = Path(
        run(python, "-c", "import sysconfig; print(sysconfig.get_path('purelib'))", cwd=tmp_path).strip()
    )
    (site / "deps_of_the_test_env.pth").write_text(sysconfig.get_path("purelib") + "\n")

    where = run(python, "-c", "import asgi_mysql_session; print(asgi_mysql_session.__file__)", cwd=tmp_path)
    assert Path(where.strip()).is_relative_to(site)
    assert "init" in run(cli, "--help", cwd=tmp_path)
    assert "--print-sql" in run(cli, "init", "--help", cwd=tmp_path)
    printed = run(cli, "init", "--print-sql", cwd=tmp_path)
    packaged = (site / "asgi_mysql_session" / "schema.sql").read_text()
    assert printed == packaged == SCHEMA
    assert run(cli, "init", "--print-sql", "--table", "t2", cwd=tmp_path) == schema_sql("t2")
    meta = run(
        python, "-c", "import importlib.metadata as m; print(m.version('asgi_mysql_session'))", cwd=tmp_path
    )
    assert meta.strip() == version
