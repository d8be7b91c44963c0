"""Several hosts in one DSN: fault proxies in front of the one test server play the hosts.

Each proxy is a "host" to the provider; refusing, cutting or healing one is a node going
down or coming back. Backoffs are shortened (``fast_backoff``) so that a host's return is
seen within a test; every wait is bounded so that a hang fails instead of blocking the run.
"""

from __future__ import annotations

import asyncio
import logging
import socket
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any, TypeVar
from urllib.parse import urlsplit

import pytest
from conftest import MYSQL_URL, assert_no_connection_checked_out
from conftest import eventually as wait_until
from faultproxy import FaultProxy

from asgi_mysql_session import MySQLSessionProvider, SessionBackendError
from asgi_mysql_session import failover as failover_module
from asgi_mysql_session.metrics import SessionObserver

T = TypeVar("T")
BOUND = 15.0
_TARGET = urlsplit(MYSQL_URL)
TARGET_HOST = _TARGET.hostname or "127.0.0.1"
TARGET_PORT = _TARGET.port or 3306
DATABASE = _TARGET.path.lstrip("/") or "test"
LOGGER = "asgi_mysql_session"


def dsn_for(*ports: int, options: str = "") -> str:
    hosts = ",".join(f"127.0.0.1:{port}" for port in ports)
    return f"mysql://root@{hosts}/{DATABASE}?connect_timeout=1&timeout=2&pool_max=4{options}"


async def bounded(aw: Awaitable[T]) -> T:
    return await asyncio.wait_for(aw, BOUND)


async def eventually(condition: Callable[[], bool], what: str) -> None:
    await wait_until(condition, what, BOUND)


def closed_port() -> int:
    """A loopback port nothing listens on: connecting to it is refused at once."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class Failovers(SessionObserver):
    def __init__(self) -> None:
        self.hosts: list[str] = []

    def failover(self, host: str) -> None:
        self.hosts.append(host)


def down_records(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [r.getMessage() for r in caplog.records if r.name == LOGGER and "is down" in r.getMessage()]


def up_records(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [r.getMessage() for r in caplog.records if r.name == LOGGER and "is up again" in r.getMessage()]


def label(proxy: FaultProxy) -> str:
    return f"127.0.0.1:{proxy.port}"


def pooled_on(provider: MySQLSessionProvider, proxy: FaultProxy, count: int | None = None) -> bool:
    """Every connection of the provider's pool (``count`` of them, if given) goes through
    ``proxy``: the proxy holds as many open connections as the pool has (the provider is the
    proxy's only client)."""
    size = provider.pool_state().size
    return size > 0 and proxy.open_connections == size and (count is None or size == count)


async def all_pooled_on(provider: MySQLSessionProvider, proxy: FaultProxy, count: int | None = None) -> None:
    """``pooled_on``, once the proxy saw the connections the pool closed (a moment later)."""
    await eventually(lambda: pooled_on(provider, proxy, count), f"every pooled connection on {label(proxy)}")


@pytest.fixture
def fast_backoff(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(failover_module, "BACKOFF_FIRST", 0.3)
    monkeypatch.setattr(failover_module, "BACKOFF_MAX", 0.6)


@pytest.fixture
async def proxies() -> AsyncIterator[list[FaultProxy]]:
    started = [FaultProxy(TARGET_HOST, TARGET_PORT) for _ in range(3)]
    for proxy in started:
        await bounded(proxy.start())
    yield started
    for proxy in started:
        await bounded(proxy.stop())


@pytest.fixture
async def opened() -> AsyncIterator[list[MySQLSessionProvider]]:
    """Providers a test opened; closed (and checked for leaks) afterwards."""
    providers: list[MySQLSessionProvider] = []
    yield providers
    for provider in providers:
        assert_no_connection_checked_out(provider)
        await bounded(provider.close())


async def open_provider(
    opened: list[MySQLSessionProvider], dsn: str, table: str, **kwargs: Any
) -> MySQLSessionProvider:
    provider = MySQLSessionProvider(dsn, table=table, create_table=True, gc_interval=None, **kwargs)
    await bounded(provider.open())
    opened.append(provider)
    return provider


async def round_trip(provider: MySQLSessionProvider) -> None:
    """Create, read back, update: what a few requests do."""
    sid = provider.new_session_id()
    store = await provider.read(sid)
    store["n"] = 1
    await store.release()
    store = await provider.read(sid)
    assert dict(store) == {"n": 1}
    store["n"] = 2
    await store.release()


# -- a single host is what it was ------------------------------------------------------------


async def test_a_single_host_dsn_does_not_fail_over(
    proxies: list[FaultProxy], table: str, opened: list[MySQLSessionProvider]
) -> None:
    provider = await open_provider(opened, dsn_for(proxies[0].port), table)
    assert provider.pool_state().hosts == {}  # no host list, nothing to fail over between
    await bounded(round_trip(provider))
    await all_pooled_on(provider, proxies[0])


# -- the first host is down from the start -----------------------------------------------------


@pytest.mark.parametrize("how", ["refused (nothing listens)", "closed at once (proxy refuses)"])
async def test_a_first_host_that_refuses_is_skipped_and_logged_once(
    how: str,
    proxies: list[FaultProxy],
    table: str,
    opened: list[MySQLSessionProvider],
    caplog: pytest.LogCaptureFixture,
) -> None:
    second = proxies[1]
    if how.startswith("refused"):
        first_port = closed_port()
    else:
        proxies[0].refuse(True)
        first_port = proxies[0].port
    observer = Failovers()
    caplog.set_level(logging.INFO, logger=LOGGER)
    provider = await open_provider(
        opened, dsn_for(first_port, second.port, options="&pool_min=2"), table, observer=observer
    )
    for _ in range(20):
        await bounded(round_trip(provider))
    await all_pooled_on(provider, second)
    assert provider.pool_state().hosts == {
        f"127.0.0.1:{first_port}": False,
        f"127.0.0.1:{second.port}": True,
    }
    # Once per change of state, not per connection or request.
    assert len(down_records(caplog)) == 1 and f"127.0.0.1:{first_port}" in down_records(caplog)[0]
    assert observer.hosts == [f"127.0.0.1:{first_port}"]


async def test_a_first_host_that_never_answers_is_skipped_after_connect_timeout(
    proxies: list[FaultProxy], table: str, opened: list[MySQLSessionProvider]
) -> None:
    first, second = proxies[0], proxies[1]
    first.blackhole(True)
    loop = asyncio.get_running_loop()
    began = loop.time()
    provider = await open_provider(opened, dsn_for(first.port, second.port), table)
    took = loop.time() - began
    assert took < 1.0 + 1.0  # connect_timeout=1 for the first host, then the second answers
    await bounded(round_trip(provider))
    await all_pooled_on(provider, second)
    first.drop_all()  # frees the silent connections the proxy holds


async def test_when_every_host_is_down_the_error_names_each_and_never_the_password(
    table: str,
) -> None:
    ports = closed_port(), closed_port()
    provider = MySQLSessionProvider(
        f"mysql://root:Sec%2Cret-99@127.0.0.1:{ports[0]},127.0.0.1:{ports[1]}/{DATABASE}?connect_timeout=1",
        table=table,
        gc_interval=None,
    )
    with pytest.raises(SessionBackendError) as refused:
        await bounded(provider.open())
    message = str(refused.value)
    assert f"127.0.0.1:{ports[0]}" in message and f"127.0.0.1:{ports[1]}" in message
    assert "Sec" not in message and "ret-99" not in message


async def test_a_galera_node_that_is_not_ready_is_skipped(
    proxies: list[FaultProxy],
    table: str,
    opened: list[MySQLSessionProvider],
    caplog: pytest.LogCaptureFixture,
) -> None:
    """The first host says it is a Galera node (its proxy answers the question for it); the
    test server has no wsrep, so its wsrep_ready status does not read ON: a node that is not
    ready."""
    first, second = proxies[0], proxies[1]
    asked = b"SHOW VARIABLES LIKE 'wsrep_on'"
    first.rewrite(asked, b"SELECT 'wsrep_on', 'ON'".ljust(len(asked)))
    caplog.set_level(logging.INFO, logger=LOGGER)
    provider = await open_provider(opened, dsn_for(first.port, second.port), table)
    await bounded(round_trip(provider))
    await all_pooled_on(provider, second)
    assert "not ready" in down_records(caplog)[0]


async def test_a_server_without_wsrep_is_asked_once_per_host_and_statement_counts_do_not_change(
    proxies: list[FaultProxy], table: str, opened: list[MySQLSessionProvider]
) -> None:
    asked = [0, 0]  # how often each host was asked whether it is a Galera node

    def counter(i: int) -> Callable[[], None]:
        def count() -> None:
            asked[i] += 1

        return count

    for i, proxy in enumerate(proxies[:2]):
        proxy.on_request(b"SHOW VARIABLES LIKE 'wsrep_on'", counter(i), once=False)
    provider = await open_provider(opened, dsn_for(proxies[0].port, proxies[1].port), table)
    sid = provider.new_session_id()
    await bounded(asyncio.gather(*(provider.exist(sid) for _ in range(4))))  # 4 connections
    assert provider.pool_state().size == 4
    assert asked == [1, 0]  # once for the first host, not per connection; the second never needed
    before = dict(provider.statements)
    sid = provider.new_session_id()
    store = await bounded(provider.read(sid))
    store["a"] = 1
    await bounded(store.release())
    store = await bounded(provider.read(sid))
    store["a"] = 2
    await bounded(store.release())
    await bounded(provider.destroy(sid))
    delta = {k: v - before.get(k, 0) for k, v in provider.statements.items() if v - before.get(k, 0)}
    assert delta == {"select": 2, "insert": 1, "update": 1, "delete": 1}


# -- a host cut mid-run, and its return -----------------------------------------------------------


async def test_a_host_cut_mid_run_is_left_and_used_again_in_listed_order_after_its_backoff(
    proxies: list[FaultProxy],
    table: str,
    opened: list[MySQLSessionProvider],
    fast_backoff: None,
    caplog: pytest.LogCaptureFixture,
) -> None:
    first, second = proxies[0], proxies[1]
    observer = Failovers()
    caplog.set_level(logging.INFO, logger=LOGGER)
    provider = await open_provider(opened, dsn_for(first.port, second.port), table, observer=observer)
    sids = [provider.new_session_id() for _ in range(8)]
    for sid in sids:
        store = await bounded(provider.read(sid))
        store["n"] = 0
        await bounded(store.release())
    await bounded(asyncio.gather(*(provider.exist(sid) for sid in sids)))  # 4 connections pooled
    await all_pooled_on(provider, first, 4)

    failures: list[str] = []
    stop = asyncio.Event()

    async def client(sid: str) -> None:
        while not stop.is_set():
            try:
                store = await provider.read(sid)
                store["n"] = store.get("n", 0) + 1
                await store.release()
            except SessionBackendError as exc:
                failures.append(f"{type(exc).__name__}: {exc}")
            await asyncio.sleep(0.005)

    clients = [asyncio.create_task(client(sid)) for sid in sids]
    await asyncio.sleep(0.3)
    first.refuse(True)
    first.drop_all()  # every connection through it dies, as when its node is killed
    cut = len(failures)
    await asyncio.sleep(0.3)
    # Only requests in flight at the cut can fail (writes; reads are retried once).
    assert len(failures) - cut <= len(sids), failures
    settled = len(failures)
    await asyncio.sleep(0.5)
    assert len(failures) == settled, failures[settled:]
    assert first.open_connections == 0
    await all_pooled_on(provider, second)
    assert len(down_records(caplog)) == 1 and observer.hosts == [f"127.0.0.1:{first.port}"]

    accepted = first.accepted
    first.heal()
    # After its backoff it is tried again, and in listed order the pool moves back to it.
    await all_pooled_on(provider, first)
    assert first.accepted > accepted
    await eventually(lambda: second.open_connections == 0, "the second host's connections closed")
    stop.set()
    await bounded(asyncio.gather(*clients))
    assert len(failures) == settled, failures[settled:]
    assert len(up_records(caplog)) == 1 and len(down_records(caplog)) == 1
    for sid in sids:  # no write lost: each counter is what its client last saw acknowledged
        assert (await bounded(provider.read(sid)))["n"] >= 1


class DownAt(SessionObserver):
    """When a host was marked down, and how many connections its proxy had accepted then."""

    def __init__(self, proxy: FaultProxy) -> None:
        self.proxy = proxy
        self.down: list[tuple[float, int]] = []

    def failover(self, host: str) -> None:
        self.down.append((asyncio.get_running_loop().time(), self.proxy.accepted))


async def test_a_host_that_stays_down_is_retried_with_a_growing_backoff(
    proxies: list[FaultProxy], table: str, opened: list[MySQLSessionProvider], fast_backoff: None
) -> None:
    first, second = proxies[0], proxies[1]
    observer = DownAt(first)
    provider = await open_provider(opened, dsn_for(first.port, second.port), table, observer=observer)
    first.refuse(True)
    first.drop_all()
    # Each connection the first host's proxy accepts (and refuses) from here on is a retry.
    retries: list[float] = []
    failed = 0
    loop = asyncio.get_running_loop()
    deadline = loop.time() + BOUND
    while len(retries) < 3 and loop.time() < deadline:
        try:
            await bounded(round_trip(provider))
        except SessionBackendError:
            failed += 1
        if observer.down:
            retries += [loop.time()] * (first.accepted - observer.down[0][1] - len(retries))
        await asyncio.sleep(0.01)
    assert len(observer.down) == 1 and len(retries) >= 3, (observer.down, retries)
    assert provider.pool_state().hosts[label(first)] is False  # still down
    assert failed <= 1  # at most the request that met the cut
    # Retried after the first backoff, then after longer ones up to the longest (a round
    # trip of slack: a retry is the next connection opened once its backoff has passed).
    down_at = observer.down[0][0]
    waits = [b - a for a, b in zip([down_at, *retries[:-1]], retries, strict=True)]
    first_backoff, longest = failover_module.BACKOFF_FIRST, failover_module.BACKOFF_MAX
    assert first_backoff * 0.9 <= waits[0] < longest * 0.9, waits
    assert all(longest * 0.9 <= wait <= longest + 0.4 for wait in waits[1:]), waits
    await all_pooled_on(provider, second)


# -- random order -----------------------------------------------------------------------------


async def test_listed_order_puts_every_connection_on_the_first_host(
    proxies: list[FaultProxy], table: str, opened: list[MySQLSessionProvider]
) -> None:
    dsn = dsn_for(*(p.port for p in proxies), options="&pool_min=12&pool_max=12")
    provider = await open_provider(opened, dsn, table)
    assert [p.accepted for p in proxies] == [12, 0, 0]
    await bounded(round_trip(provider))


async def test_random_order_spreads_connections_over_the_hosts(
    proxies: list[FaultProxy], table: str, opened: list[MySQLSessionProvider]
) -> None:
    dsn = dsn_for(*(p.port for p in proxies), options="&pool_min=30&pool_max=30&host_order=random")
    provider = await open_provider(opened, dsn, table)
    counts = [p.accepted for p in proxies]
    assert sum(counts) == 30 and all(count >= 3 for count in counts), counts  # odds of failing: ~1e-4
    await bounded(round_trip(provider))


async def test_random_order_skips_a_host_that_is_down(
    proxies: list[FaultProxy], table: str, opened: list[MySQLSessionProvider]
) -> None:
    proxies[1].refuse(True)
    dsn = dsn_for(*(p.port for p in proxies), options="&pool_min=20&pool_max=20&host_order=random")
    provider = await open_provider(opened, dsn, table)
    assert proxies[1].accepted <= 1  # tried once at most, then skipped for its backoff
    assert provider.pool_state().size == 20
    await eventually(
        lambda: (
            proxies[1].open_connections == 0
            and proxies[0].open_connections + proxies[2].open_connections == 20
        ),
        "every pooled connection on the first or the third host",
    )
    assert proxies[0].accepted + proxies[2].accepted == 20


# -- what a request meets when its connection dies ------------------------------------------------


async def test_a_read_whose_connection_dies_runs_once_more_on_the_next_host_a_write_does_not(
    proxies: list[FaultProxy], table: str, opened: list[MySQLSessionProvider]
) -> None:
    first, second = proxies[0], proxies[1]
    provider = await open_provider(opened, dsn_for(first.port, second.port), table)
    sid = provider.new_session_id()
    store = await bounded(provider.read(sid))
    store["n"] = 1
    await bounded(store.release())

    def die() -> None:  # the node dies as the statement reaches it
        first.refuse(True)
        first.drop_all()

    first.on_request(b"SELECT", die)
    before = dict(provider.statements)
    assert dict(await bounded(provider.read(sid))) == {"n": 1}  # served by the second host
    assert provider.statements["select"] - before.get("select", 0) == 1  # counted once: it ran once
    await all_pooled_on(provider, second)

    third = proxies[2]
    provider = await open_provider(opened, dsn_for(third.port, second.port), table)
    store = await bounded(provider.read(sid))
    store["n"] = 2
    third.on_request(b"UPDATE", lambda: (third.refuse(True), third.drop_all()))
    with pytest.raises(SessionBackendError):  # it may have committed: never sent twice
        await bounded(store.release())
    assert dict(await bounded(provider.read(sid))) in ({"n": 1}, {"n": 2})
