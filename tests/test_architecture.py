"""The package's shape, as the architecture promises it (read from the source, no database).

One module talks to the drivers; modules import each other without a cycle and at the top
of the file; each module is small and says its one job in its first line; the public
surface is exactly what ``__all__`` and the README's API section list.
"""

from __future__ import annotations

import ast
import dataclasses
import inspect
import re
from pathlib import Path

import asgi_mysql_session

PACKAGE = Path(asgi_mysql_session.__file__).parent
README = PACKAGE.parent / "README.md"
MODULES = {path.stem: path for path in sorted(PACKAGE.glob("*.py"))}
#: Names of aiomysql/PyMySQL/asyncio internals the package relies on (see driver.py).
DRIVER_INTERNALS = {
    "_connect",
    "_result",
    "_last_usage",
    "_reader",
    "_writer",
    "_cond",
    "_free",
    "_used",
    "_sock",
    "_closing",
    "_eof",
    "_exception",
    "_loop",
    "_log_destroy_pending",
}


def _tree(name: str) -> ast.Module:
    return ast.parse(MODULES[name].read_text(), filename=str(MODULES[name]))


def _package_imports(name: str) -> set[str]:
    """The package modules ``name`` imports (relative imports), wherever they appear."""
    found = set()
    for node in ast.walk(_tree(name)):
        if isinstance(node, ast.ImportFrom) and node.level == 1:
            if node.module:
                found.add(node.module.split(".")[0])
            else:
                found.update(alias.name for alias in node.names if alias.name in MODULES)
    return found & MODULES.keys()


def test_the_import_graph_of_the_package_has_no_cycle() -> None:
    graph = {name: _package_imports(name) for name in MODULES}
    done: set[str] = set()

    def visit(name: str, path: list[str]) -> None:
        if name in path:
            cycle = [*path[path.index(name) :], name]
            raise AssertionError("import cycle: " + " -> ".join(cycle))
        if name in done:
            return
        for imported in sorted(graph[name]):
            visit(imported, [*path, name])
        done.add(name)

    for name in graph:
        visit(name, [])


def test_no_import_hides_inside_a_function_or_a_type_checking_block() -> None:
    hidden = []
    for name in MODULES:
        for node in ast.walk(_tree(name)):
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.If)):
                for inner in ast.walk(node):
                    if isinstance(inner, ast.ImportFrom) and inner.level == 1:
                        hidden.append(f"{name}.py:{inner.lineno}")
    assert not hidden, f"package imports inside functions or `if` blocks: {hidden}"


def test_only_the_driver_module_imports_aiomysql_or_pymysql() -> None:
    importers = set()
    for name in MODULES:
        for node in ast.walk(_tree(name)):
            if isinstance(node, ast.Import):
                roots = {alias.name.split(".")[0] for alias in node.names}
            elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                roots = {node.module.split(".")[0]}
            else:
                continue
            if roots & {"aiomysql", "pymysql"}:
                importers.add(name)
    assert importers == {"driver"}


def test_driver_internals_are_touched_only_in_the_driver_module() -> None:
    """Outside driver.py, no attribute access of a driver internal, except on ``self``."""
    found = []
    for name in MODULES:
        if name == "driver":
            continue
        for node in ast.walk(_tree(name)):
            if isinstance(node, ast.Attribute) and node.attr in DRIVER_INTERNALS:
                owner = node.value
                if isinstance(owner, ast.Name) and owner.id == "self":
                    continue  # the package's own fields of the same name (pool._free)
                found.append(f"{name}.py:{node.lineno} .{node.attr}")
            call = isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute)
            if call and node.func.attr == "query":  # type: ignore[attr-defined]
                found.append(f"{name}.py:{node.lineno} .query() (aiomysql's internal Connection.query)")
    assert not found, found


def test_no_module_of_the_package_is_over_400_lines() -> None:
    sizes = {name: len(path.read_text().splitlines()) for name, path in MODULES.items()}
    assert {name: n for name, n in sizes.items() if n > 400} == {}


def test_each_module_says_its_one_job_in_its_first_line() -> None:
    for name in MODULES:
        doc = ast.get_docstring(_tree(name))
        assert doc, f"{name}.py has no module docstring"
        first = doc.splitlines()[0]
        assert first.strip() and len(first) <= 110, f"{name}.py: {first!r}"


def _samples() -> dict[str, object]:
    """One instance of each public class that has instance attributes, built offline."""
    provider = asgi_mysql_session.MySQLSessionProvider("mysql://u@127.0.0.1:1/db", gc_interval=None)

    async def app(scope: object, receive: object, send: object) -> None:
        """An ASGI app that is never called."""

    return {
        "MySQLSessionProvider": provider,
        "SessionMiddleware": asgi_mysql_session.SessionMiddleware(app, provider),
        "ExpirySweeper": asgi_mysql_session.ExpirySweeper(provider, interval=60),
        "SessionStore": provider.new_session(),
        "OwnedSession": asgi_mysql_session.OwnedSession("k", 1, 2),
        "SessionInterrupted": asgi_mysql_session.SessionInterrupted("x"),
        "SessionSchema": provider.schema(),
    }


def public_surface() -> dict[str, set[str]]:
    """Each public name and, for a class, its public members (class and instance level)."""
    samples = _samples()
    surface: dict[str, set[str]] = {}
    for name in asgi_mysql_session.__all__:
        obj = getattr(asgi_mysql_session, name)
        members: set[str] = set()
        if inspect.isclass(obj):
            for cls in obj.__mro__:
                if cls.__module__.startswith("asgi_mysql_session"):
                    members |= {m for m in vars(cls) if not m.startswith("_")}
            if dataclasses.is_dataclass(obj):
                members |= {field.name for field in dataclasses.fields(obj)}
            if name in samples:
                members |= {m for m in getattr(samples[name], "__dict__", {}) if not m.startswith("_")}
        surface[name] = members
    return surface


def test_the_readme_api_section_lists_exactly_the_public_surface() -> None:
    """``- `Name`: `member`, `member`... — what it is`` per public name, members in any order."""
    section = README.read_text().split("\n## API\n", 1)[1].split("\n## ", 1)[0]
    listed: dict[str, set[str]] = {}
    for line in section.splitlines():
        match = re.match(r"- `([A-Za-z_][A-Za-z0-9_]*)`", line)
        if match:
            head = line.split(" — ", 1)[0]  # what follows the dash is a description
            members = head.split(":", 1)[1] if ":" in head else ""
            listed[match.group(1)] = set(re.findall(r"`([a-z_][A-Za-z0-9_]*|[A-Z][A-Z_]+)`", members))
    assert listed == public_surface()
