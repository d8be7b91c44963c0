"""The 3-node Galera cluster of scripts/cluster.py, as the package will meet it (tests/cluster/README.md).

Not part of the default `pytest` run (pyproject's addopts ignore tests/cluster); `make test-cluster`
starts the cluster and runs these. CLUSTER_URLS (three comma-separated mysql:// URLs) points them
at another cluster; the tests that kill and restart a node need the local one.
"""

from __future__ import annotations

import importlib.util
import os
import sys
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from types import ModuleType
from typing import Any

import pymysql
import pytest

from asgi_mysql_session.dsn import parse_dsn

ROOT = Path(__file__).resolve().parents[2]


def _load_manager() -> ModuleType:
    """scripts/cluster.py, imported under a name of its own (scripts/ is not a package)."""
    spec = importlib.util.spec_from_file_location("cluster_manager", ROOT / "scripts" / "cluster.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up here
    spec.loader.exec_module(module)
    return module


manager = _load_manager()
DEFAULT_URLS = [manager.url(n) for n in manager.NODES]
URLS = [u.strip() for u in os.environ.get("CLUSTER_URLS", ",".join(DEFAULT_URLS)).split(",") if u.strip()]
LOCAL = URLS == DEFAULT_URLS


def connect(url: str, **kwargs: Any) -> pymysql.Connection:
    return pymysql.connect(**parse_dsn(url).pymysql_args(), autocommit=True, connect_timeout=5, **kwargs)


def query(
    url: str, sql: str, args: tuple[object, ...] | None = None, sync_wait: bool = False
) -> list[tuple[Any, ...]]:
    """One statement on one node; with ``sync_wait`` the node first catches up with the cluster."""
    conn = connect(url)
    try:
        with conn.cursor() as cur:
            if sync_wait:
                cur.execute("SET SESSION wsrep_sync_wait=1")
            cur.execute(sql, args)
            return list(cur.fetchall())
    finally:
        conn.close()


def wsrep(url: str) -> dict[str, str]:
    return {str(k): str(v) for k, v in query(url, "SHOW GLOBAL STATUS LIKE 'wsrep_%'")}


def wait_for(what: str, check: Callable[[], bool], timeout: float = 60) -> float:
    """Poll ``check`` until it holds; returns the seconds it took."""
    began = time.monotonic()
    while not check():
        if time.monotonic() - began > timeout:
            pytest.fail(f"{what}: not after {timeout} s")
        time.sleep(0.2)
    return time.monotonic() - began


def cluster_whole() -> bool:
    try:
        statuses = [wsrep(u) for u in URLS]
    except pymysql.err.MySQLError:
        return False
    return all(
        s["wsrep_ready"] == "ON"
        and s["wsrep_local_state_comment"] == "Synced"
        and s["wsrep_cluster_size"] == "3"
        for s in statuses
    )


@pytest.fixture(scope="session", autouse=True)
def cluster_up() -> None:
    """Every test starts from a whole cluster: three nodes, Synced, size 3."""
    if not cluster_whole():
        if not LOCAL:
            pytest.fail(f"the cluster at {URLS} is not whole (three Synced nodes)")
        manager.start()  # idempotent: starts only the nodes that are down
    wait_for("three Synced nodes of cluster size 3", cluster_whole)


@pytest.fixture
def urls() -> list[str]:
    return URLS


@pytest.fixture
def table(request: pytest.FixtureRequest) -> Iterator[str]:
    """A table name no other test (or developer) uses; dropped, cluster-wide, afterwards."""
    name = f"cl_{request.node.name[:30]}_{uuid.uuid4().hex[:8]}".replace("[", "_").replace("]", "_")
    yield name
    query(URLS[0], f"DROP TABLE IF EXISTS `{name}`")


@pytest.fixture
def local_cluster() -> Iterator[ModuleType]:
    """scripts/cluster.py, for tests that kill and restart nodes; the cluster is made whole after."""
    if not LOCAL:
        pytest.skip("kills and restarts nodes of the local cluster only (CLUSTER_URLS is set)")
    yield manager
    manager.start()
    wait_for("the cluster whole again", cluster_whole)
