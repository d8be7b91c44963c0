"""The package on a 3-node Galera cluster: detection, causal reads, leases, conflicts, upgrade.

Each test uses its own table (and lease table), dropped afterwards; providers are pinned to
different nodes, as apps behind a load balancer spreading connections over the nodes would be.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import time
from collections.abc import AsyncIterator, Iterator
from contextlib import AsyncExitStack, asynccontextmanager
from typing import Any

import httpx
import pytest
from conftest import URLS, query, wsrep
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, PlainTextResponse, Response
from starlette.routing import Route

from asgi_mysql_session import MySQLSessionProvider, SessionMiddleware, regenerate_session, sql
from asgi_mysql_session.cli import main
from asgi_mysql_session.coordination import Cluster
from asgi_mysql_session.dsn import parse_dsn
from asgi_mysql_session.pool import ConnectionPool


@pytest.fixture
def tables(table: str) -> Iterator[str]:
    """The test's table; its lease table and an upgrade's leftovers are dropped with it."""
    yield table
    backup = f"{table[:50]}_go_backup"
    scratch = f"{table[:50]}_upgrading"
    for name in (sql.lease_table_name(table), backup, scratch):
        query(URLS[0], f"DROP TABLE IF EXISTS `{name}`")


@asynccontextmanager
async def providers(
    table: str, pools: list[ConnectionPool] | None = None, **options: Any
) -> AsyncIterator[list[MySQLSessionProvider]]:
    """One provider per node, node 1's first (it creates the tables); on ``pools`` (one per
    node, see ``lent_pools``) if given, else on pools of their own."""
    options.setdefault("gc_interval", None)
    async with AsyncExitStack() as stack:
        opened = []
        for i, url in enumerate(URLS):
            where: dict[str, Any] = {"pool": pools[i]} if pools is not None else {"dsn": url}
            p = MySQLSessionProvider(**where, table=table, create_table=True, **options)
            opened.append(await stack.enter_async_context(p))
        yield opened


@asynccontextmanager
async def lent_pools(size: int = 10, settings: str = "") -> AsyncIterator[list[ConnectionPool]]:
    """One pool per node, of up to ``size`` connections, that the test lends to its providers:
    the test can then look at their connections, or set them up with session ``settings``
    of its own (``", SESSION name = value"``) on top of what the provider needs."""
    kwargs = MySQLSessionProvider.connect_kwargs()
    kwargs["init_command"] += ", SESSION innodb_lock_wait_timeout = 5" + settings  # as a DSN's pool
    pools = []
    for url in URLS:
        dsn = parse_dsn(url)
        pools.append(
            ConnectionPool(
                1,
                size,
                3600,
                host=dsn.host,
                port=dsn.port,
                user=dsn.user,
                password=dsn.password,
                db=dsn.database,
                connect_timeout=dsn.connect_timeout,
                **kwargs,
            )
        )
    try:
        yield pools
    finally:
        for pool in pools:
            pool.close()
            await asyncio.wait_for(pool.wait_closed(), 10)


async def variable(pool: ConnectionPool, name: str) -> int:
    """A session variable of a connection of ``pool`` (its only one, with ``size=1``)."""
    conn = await pool.acquire()
    try:
        cursor = await conn.cursor()
        await cursor.execute(f"SELECT @@{name}")
        [(value,)] = await cursor.fetchall()
    finally:
        pool.release(conn)
    return int(value)


# -- a small app --------------------------------------------------------------------------


async def read(request: Request) -> Response:
    return JSONResponse(dict(request.session))


async def set_values(request: Request) -> Response:
    for key, value in request.query_params.items():
        request.session[key] = value
    return JSONResponse(dict(request.session))


async def incr(request: Request) -> Response:
    n = request.session.get("n", 0)
    await asyncio.sleep(0.002)  # a read-modify-write that takes a little while
    request.session["n"] = n + 1
    return JSONResponse({"n": n + 1})


async def login(request: Request) -> Response:
    request.session["user"] = request.query_params["user"]
    await regenerate_session(request)
    return JSONResponse({"user": request.session["user"]})


async def logout(request: Request) -> Response:
    request.session.clear()
    return PlainTextResponse("bye")


def app(provider: MySQLSessionProvider, **options: Any) -> httpx.AsyncClient:
    routes = [
        Route("/read", read),
        Route("/set", set_values),
        Route("/incr", incr),
        Route("/login", login),
        Route("/logout", logout),
    ]
    starlette = Starlette(routes=routes)
    starlette.add_middleware(SessionMiddleware, provider=provider, **options)
    return httpx.AsyncClient(transport=httpx.ASGITransport(app=starlette), base_url="http://testserver")


def cookie_of(response: httpx.Response) -> dict[str, str]:
    return {"cookie": f"session={response.cookies['session']}"}


def conflicts() -> int:
    """Certification failures and brute-force aborts so far, summed over the three nodes."""
    total = 0
    for url in URLS:
        status = wsrep(url)
        total += int(status["wsrep_local_cert_failures"]) + int(status["wsrep_local_bf_aborts"])
    return total


def same_rows_everywhere(table: str) -> list[tuple[Any, ...]]:
    """The table's rows, which must be equal on every node (read causally); returns node 1's."""
    statement = f"SELECT session_key, session_data, session_expiry, session_version FROM `{table}` ORDER BY 1"
    rows = [query(url, statement, sync_wait=True) for url in URLS]
    assert rows[0] == rows[1] == rows[2]
    return rows[0]


# -- detection ------------------------------------------------------------------------------


async def test_each_node_is_detected_as_galera_with_causal_reads_and_a_lease_table(tables: str) -> None:
    async with lent_pools(size=1) as pools, providers(tables, pools) as ps:
        for p, pool in zip(ps, pools, strict=True):
            assert p.cluster is Cluster.GALERA
            assert not await p.exist(p.new_session_id())
            assert await variable(pool, "wsrep_sync_wait") == 1  # set on the provider's connection
    lease_table = sql.lease_table_name(tables)
    for url in URLS:
        assert query(url, "SHOW TABLES LIKE %s", (lease_table,), sync_wait=True) == [(lease_table,)]


# -- the contract, with providers on different nodes ---------------------------------------


async def test_the_middleware_contract_holds_with_each_request_on_another_node(tables: str) -> None:
    async with providers(tables) as ps:
        apps = [app(p) for p in ps]
        a1, a2, a3 = apps
        created = await a1.get("/set", params={"theme": "dark"})
        cookie = cookie_of(created)
        assert (await a2.get("/read", headers=cookie)).json() == {"theme": "dark"}
        assert (await a3.get("/set", params={"lang": "fr"}, headers=cookie)).json() == {
            "theme": "dark",
            "lang": "fr",
        }
        assert (await a1.get("/read", headers=cookie)).json() == {"theme": "dark", "lang": "fr"}
        # Login (rotation) on node 2: node 3 serves the new id at once and refuses the old one.
        logged_in = await a2.get("/login", params={"user": "ada"}, headers=cookie)
        new_cookie = cookie_of(logged_in)
        assert new_cookie != cookie
        assert (await a3.get("/read", headers=new_cookie)).json() == {
            "theme": "dark",
            "lang": "fr",
            "user": "ada",
        }
        stale = await a1.get("/set", params={"evil": "1"}, headers=cookie)  # the superseded id
        assert stale.status_code == 409 and "new id" in stale.text
        assert "evil" not in (await a3.get("/read", headers=new_cookie)).json()
        # Logout on node 3: the cookie is dead on node 1 at once.
        assert (await a3.get("/logout", headers=new_cookie)).status_code == 200
        assert (await a1.get("/read", headers=new_cookie)).json() == {}
        for client in apps:
            await client.aclose()
    assert [row for row in same_rows_everywhere(tables) if row[3] > 0] == []  # no live row left


@pytest.mark.parametrize("server_retries", [True, False], ids=["server-retries", "provider-retries"])
async def test_50_concurrent_writers_of_one_session_over_three_nodes_lose_nothing(
    tables: str, caplog: pytest.LogCaptureFixture, server_retries: bool
) -> None:
    caplog.set_level(logging.INFO, logger="asgi_mysql_session")
    before = conflicts()
    # Three providers, as three app servers: each queues its own writers, but across them
    # a write that lost merges and retries. Over three nodes a write takes longer (it is
    # certified cluster-wide), so more of them overlap: give them more retries than 10.
    # Galera re-runs an autocommit statement that lost certification once by itself
    # (wsrep_retry_autocommit=1); turned off on the connections the providers are lent, every
    # 1213 reaches the provider.
    async with AsyncExitStack() as stack:
        pools = None
        if not server_retries:
            pools = await stack.enter_async_context(
                lent_pools(settings=", SESSION wsrep_retry_autocommit = 0")
            )
        ps = await stack.enter_async_context(providers(tables, pools, write_retries=40))
        apps = [app(p) for p in ps]
        cookie = cookie_of(await apps[0].get("/set", params={"seed": "kept"}))
        statuses: list[int] = []

        async def writer(i: int) -> None:
            http = apps[i % 3]
            for round_ in range(8):
                response = await http.get("/set", params={f"k{i}": str(round_)}, headers=cookie)
                statuses.append(response.status_code)

        began = time.monotonic()
        await asyncio.gather(*(writer(i) for i in range(50)))
        elapsed = time.monotonic() - began
        final = (await apps[2].get("/read", headers=cookie)).json()
        for client in apps:
            await client.aclose()
    retried = sum("retrying statement" in r.getMessage() for r in caplog.records)
    print(
        f"\n400 writes over 3 nodes in {elapsed:.2f}s: {conflicts() - before} certification "
        f"conflicts on the nodes, {retried} statements retried after 1213 by the provider"
    )
    assert statuses == [200] * 400
    assert final == {"seed": "kept", **{f"k{i}": "7" for i in range(50)}}
    assert conflicts() > before  # the nodes did conflict, and no write was lost to it
    if not server_retries:
        assert retried > 0  # the provider got 1213 at commit, retried, and lost nothing


async def test_a_commit_that_loses_certification_is_retried_not_lost(tables: str) -> None:
    """Provoke 1213 on node 2 deterministically: node 2 holds a row lock in an open transaction
    while node 1 commits a write to the same row, which aborts node 2's transaction (a
    brute-force abort); the provider's conditional UPDATE through node 2 then still applies."""
    async with providers(tables) as (p1, p2, _):
        sid = p1.new_session_id()
        store = await p1.read(sid)
        store["n"] = 0
        await store.release()
        assert dict(await p2.read(sid)) == {"n": 0}  # node 2 has the row
        # A raw transaction on node 2 that will lose to node 1's commit:
        from conftest import connect

        loser = connect(URLS[1])
        try:
            with loser.cursor() as cur:
                cur.execute("BEGIN")
                cur.execute(
                    f"UPDATE `{tables}` SET session_expiry = session_expiry + 1 WHERE session_key = %s",
                    (store.key_hash,),
                )
            winner = await p1.read(sid)
            winner["n"] = 1
            await winner.release()  # commits on node 1; node 2's open transaction is aborted
            with pytest.raises(Exception) as lost, loser.cursor() as cur:
                cur.execute("COMMIT")
            assert lost.value.args[0] == 1213
        finally:
            loser.close()
        # Writers through node 2 and node 3 at once, many times: all land, none is lost.
        for round_ in range(20):
            a = await p2.read(sid)
            b = await p1.read(sid)
            a[f"a{round_}"] = round_
            b[f"b{round_}"] = round_
            await asyncio.gather(a.release(), b.release())
        final = await p2.read(sid)
        assert final["n"] == 1
        assert all(final[f"a{r}"] == r and final[f"b{r}"] == r for r in range(20))
    same_rows_everywhere(tables)


# -- causal reads ---------------------------------------------------------------------------


async def test_login_on_node_1_then_read_on_node_2_at_once_1000_times_never_misses(tables: str) -> None:
    async with providers(tables) as (p1, p2, _):
        misses = 0
        began = time.monotonic()
        for _ in range(1000):
            sid = p1.new_session_id()
            store = await p1.read(sid)
            store["user"] = "ada"
            await store.release()  # the login's INSERT, through node 1
            seen = await p2.load(sid)  # at once, through node 2
            misses += seen.get("user") != "ada"
        elapsed = time.monotonic() - began
    print(f"\n1000 write-on-1 / read-on-2 pairs with causal reads: {misses} misses, {elapsed:.2f}s")
    assert misses == 0


# -- the sweep: one sweeper per table across the cluster ----------------------------------------


async def test_a_sweeper_on_each_node_deletes_each_expired_row_once(
    tables: str, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="asgi_mysql_session")
    async with providers(tables) as ps:
        gone = int(time.time()) - 100
        rows = ", ".join(f"(SHA2('{i}', 256), '', {gone}, 1, {gone - 100}, NULL)" for i in range(600))
        query(URLS[0], f"INSERT INTO `{tables}` VALUES {rows}")
        for p in ps:
            p.gc_batch_size = 25  # 24 batches with a 50 ms pause: a sweep takes over a second
        from asgi_mysql_session.gc import ExpirySweeper

        sweepers = [ExpirySweeper(p, interval=0.1) for p in ps]
        for sweeper in sweepers:
            sweeper.start()
        for _ in range(200):
            if sum(s.rows for s in sweepers) >= 600:
                break
            await asyncio.sleep(0.1)
        await asyncio.sleep(0.5)  # more rounds: nothing left to sweep, nothing deleted twice
        for sweeper in sweepers:
            await sweeper.stop()
        assert all(p.leases_lost == 0 for p in ps)
    assert sum(s.rows for s in sweepers) == 600
    assert sum(s.failures for s in sweepers) == 0
    assert [r.getMessage() for r in caplog.records if r.levelno >= logging.WARNING] == []
    assert same_rows_everywhere(tables) == []
    assert query(URLS[2], f"SELECT COUNT(*) FROM `{sql.lease_table_name(tables)}`", sync_wait=True) == [(0,)]


# -- serialized mode across nodes ----------------------------------------------------------------


async def test_serialized_increments_through_two_nodes_are_never_lost(tables: str) -> None:
    async with providers(tables) as (p1, p2, _):
        a1 = app(p1, serialize=["/incr"], lock_timeout=20)
        a2 = app(p2, serialize=["/incr"], lock_timeout=20)
        cookie = cookie_of(await a1.get("/set", params={"user": "ada"}))
        responses = await asyncio.gather(
            *((a1 if i % 2 else a2).get("/incr", headers=cookie) for i in range(30))
        )
        assert [r.status_code for r in responses] == [200] * 30
        assert sorted(r.json()["n"] for r in responses) == list(range(1, 31))
        assert (await a2.get("/read", headers=cookie)).json() == {"user": "ada", "n": 30}
        await a1.aclose()
        await a2.aclose()
        assert p1.leases_lost == p2.leases_lost == 0
    assert query(URLS[0], f"SELECT COUNT(*) FROM `{sql.lease_table_name(tables)}`", sync_wait=True) == [(0,)]


async def test_without_serialization_the_same_increments_do_get_lost(tables: str) -> None:
    """The control experiment: the leases above are what keeps those increments."""
    async with providers(tables) as (p1, p2, _):
        a1, a2 = app(p1), app(p2)
        cookie = cookie_of(await a1.get("/set", params={"user": "ada"}))
        await asyncio.gather(*((a1 if i % 2 else a2).get("/incr", headers=cookie) for i in range(30)))
        n = (await a2.get("/read", headers=cookie)).json()["n"]
        await a1.aclose()
        await a2.aclose()
    assert n < 30


# -- upgrading a Go table on Galera ------------------------------------------------------------


GO_ID = "go-session-id-number-{}"


def go_table(table: str, engine: str) -> int:
    query(
        URLS[0],
        f"CREATE TABLE `{table}` (session_key CHAR(64) NOT NULL PRIMARY KEY, session_data BLOB, "
        f"session_expiry INT UNSIGNED NOT NULL) ENGINE={engine}",
    )
    now = int(time.time())
    rows = [(GO_ID.format(i), b"gob", now - i) for i in range(4)]
    conn_url = URLS[0]
    for row in rows:
        query(conn_url, f"INSERT INTO `{table}` VALUES (%s, %s, %s)", row)
    return now


def assert_cluster_whole() -> None:
    for url in URLS:
        status = wsrep(url)
        assert status["wsrep_cluster_size"] == "3"
        assert status["wsrep_local_state_comment"] == "Synced"
        assert status["wsrep_ready"] == "ON"


@pytest.mark.parametrize("engine", ["MyISAM", "InnoDB"])
def test_upgrade_of_a_go_table_keeps_every_node_in_the_cluster_with_the_same_rows(
    tables: str, engine: str, capsys: pytest.CaptureFixture[str]
) -> None:
    now = go_table(tables, engine)
    assert main(["--dsn", URLS[0], "--table", tables, "upgrade"]) == 0
    out = capsys.readouterr().out
    if engine == "MyISAM":
        assert "Galera cluster: copying it into a new InnoDB table" in out
        assert f"kept as `{tables[:50]}_go_backup`" in out
    else:
        assert "upgrading it in place" in out
    time.sleep(1)  # give a node that failed to apply a write set the time to leave
    assert_cluster_whole()
    rows = same_rows_everywhere(tables)

    assert rows == sorted(
        (hashlib.sha256(GO_ID.format(i).encode()).hexdigest(), b"", now - i + 3600, 1) for i in range(4)
    )
    for url in URLS:
        assert query(
            url,
            "SELECT ENGINE FROM information_schema.TABLES WHERE TABLE_SCHEMA = DATABASE() "
            "AND TABLE_NAME = %s",
            (tables,),
            sync_wait=True,
        ) == [("InnoDB",)]
    # The upgraded table serves sessions through every node.
    assert main(["--dsn", URLS[2], "--table", tables, "check"]) == 0

    async def serve() -> None:
        async with providers(tables) as ps:
            for p in ps:
                assert await p.exist(GO_ID.format(1)) and await p.all() == 4

    asyncio.run(serve())
    assert_cluster_whole()
