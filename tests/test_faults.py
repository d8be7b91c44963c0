"""The provider against a broken network: a fault-injection proxy sits between it and MariaDB.

Every wait is bounded (``BOUND``) so that a hang fails the test instead of blocking the
run; no test asserts how fast anything is. The provider talks to the proxy with
``connect_timeout=1&timeout=1``; the table is made through the proxy while it is healthy.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import sys
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import TypeVar
from urllib.parse import urlsplit

import pytest
from conftest import MYSQL_URL, WatchdogTimers, assert_no_connection_checked_out
from conftest import eventually as wait_until
from faultproxy import FaultProxy, send

from asgi_mysql_session import MySQLSessionProvider, SessionBackendError

T = TypeVar("T")

#: Outer bound on any single wait: generous, only there to turn a hang into a failure.
BOUND = 10.0
_TARGET = urlsplit(MYSQL_URL)
TARGET_HOST = _TARGET.hostname or "127.0.0.1"
TARGET_PORT = _TARGET.port or 3306
LOGGER = "asgi_mysql_session"


def dsn_at(port: int, userinfo: str = "root") -> str:
    database = _TARGET.path.lstrip("/") or "test"
    return f"mysql://{userinfo}@127.0.0.1:{port}/{database}?connect_timeout=1&timeout=1&pool_max=4"


def proxied_dsn(proxy: FaultProxy, userinfo: str = "root") -> str:
    return dsn_at(proxy.port, userinfo)


async def bounded(aw: Awaitable[T]) -> T:
    """Await ``aw``, failing the test (rather than hanging) if it takes over ``BOUND``."""
    task = asyncio.ensure_future(aw)
    done, _ = await asyncio.wait([task], timeout=BOUND)
    if not done:
        task.cancel()
        await asyncio.wait([task], timeout=BOUND)
        pytest.fail(f"still waiting after {BOUND:g}s (a hang): {task!r}")
    return task.result()


async def eventually(condition: Callable[[], bool], what: str) -> None:
    await wait_until(condition, what, BOUND)


def backend_records(caplog: pytest.LogCaptureFixture) -> list[logging.LogRecord]:
    return [r for r in caplog.records if r.name == LOGGER and r.levelno >= logging.WARNING]


async def make_session(provider: MySQLSessionProvider, **values: object) -> str:
    sid = provider.new_session_id()
    store = await bounded(provider.read(sid))
    store.update(values)
    await bounded(store.release())
    return sid


async def works(provider: MySQLSessionProvider) -> None:
    """A full round of the provider's work: create, read back, update, destroy."""
    sid = await make_session(provider, n=1)
    store = await bounded(provider.read(sid))
    assert dict(store) == {"n": 1}
    store["n"] = 2
    await bounded(store.release())
    assert dict(await bounded(provider.read(sid))) == {"n": 2}
    assert await bounded(provider.destroy(sid))


async def fill_pool(provider: MySQLSessionProvider) -> None:
    """Leave pool_max (4) established connections in the pool: four statements in one turn
    find one idle connection, so three of them open one each."""
    sid = provider.new_session_id()
    assert await bounded(asyncio.gather(*(provider.exist(sid) for _ in range(4)))) == [False] * 4
    state = provider.pool_state()
    assert state.size == state.free == 4


@contextlib.asynccontextmanager
async def connection_held(provider: MySQLSessionProvider) -> AsyncIterator[None]:
    """One connection checked out meanwhile: a serialized request of another task holds it
    (the session lock of a live session is held on a pooled connection)."""
    sid = await make_session(provider, holder=True)
    holding, done = asyncio.Event(), asyncio.Event()

    async def hold() -> None:
        async with provider.session_lock(sid, BOUND) as held:
            assert held
            holding.set()
            await done.wait()

    task = asyncio.ensure_future(hold())
    try:
        await bounded(holding.wait())
        assert provider.pool_state().in_use == 1
        yield
    finally:
        done.set()
        await bounded(task)


class OpenChecks:
    """How often the provider ran what ``open()`` runs (cluster detection, the table check),
    counted as the statements pass through the proxy."""

    def __init__(self, proxy: FaultProxy) -> None:
        self.count = 0
        proxy.on_request(b"information_schema.COLUMNS", self._seen, once=False)
        proxy.on_request(b"@@wsrep_on", self._seen, once=False)

    def _seen(self) -> None:
        self.count += 1


@pytest.fixture
async def proxy() -> AsyncIterator[FaultProxy]:
    fault_proxy = FaultProxy(TARGET_HOST, TARGET_PORT)
    await bounded(fault_proxy.start())
    yield fault_proxy
    await bounded(fault_proxy.stop())


@pytest.fixture
async def provider(proxy: FaultProxy, table: str) -> AsyncIterator[MySQLSessionProvider]:
    """An open provider reaching MariaDB through the (healthy, for now) proxy."""
    p = MySQLSessionProvider(proxied_dsn(proxy), table=table, create_table=True, gc_interval=None)
    await bounded(p.open())
    assert p.timeout == 1
    yield p
    proxy.heal()
    assert_no_connection_checked_out(p)
    await bounded(p.close())


# -- a server that accepts but never answers -------------------------------------------


async def test_open_raises_backend_error_when_the_server_never_answers(proxy: FaultProxy, table: str) -> None:
    proxy.blackhole(True)
    provider = MySQLSessionProvider(proxied_dsn(proxy), table=table, create_table=True, gc_interval=None)
    with pytest.raises(SessionBackendError):
        await bounded(provider.open())
    assert not provider.is_open
    assert provider.pool_state().size == 0  # no pool kept, and no connection


async def test_read_raises_backend_error_when_new_connections_are_never_answered(
    provider: MySQLSessionProvider, proxy: FaultProxy
) -> None:
    async with connection_held(provider):  # the pooled connection is busy: the read needs a new one
        proxy.blackhole(True)
        with pytest.raises(SessionBackendError):
            await bounded(provider.read(provider.new_session_id()))
    assert_no_connection_checked_out(provider)


async def test_a_connection_attempt_given_up_in_the_handshake_is_closed(
    proxy: FaultProxy, table: str
) -> None:
    # The provider bounds the handshake itself (aiomysql's connect_timeout does not);
    # the socket it gives up on must be closed, not left to the garbage collector.
    proxy.blackhole(True)
    provider = MySQLSessionProvider(proxied_dsn(proxy), table=table, create_table=True, gc_interval=None)
    with pytest.raises(SessionBackendError) as excinfo:
        await bounded(provider.open())
    assert proxy.accepted >= 1
    # The error (and everything its traceback references) is still alive here.
    await eventually(lambda: proxy.open_connections == 0, "the abandoned handshake socket is closed")
    assert excinfo.value is not None


async def test_provider_recovers_by_itself_once_the_server_answers_again(
    provider: MySQLSessionProvider, proxy: FaultProxy
) -> None:
    before = OpenChecks(proxy)
    proxy.blackhole(True)
    proxy.drop_all()
    with pytest.raises(SessionBackendError):
        await bounded(provider.read(provider.new_session_id()))
    proxy.heal()
    after = OpenChecks(proxy)  # heal() removed the first one's triggers
    await works(provider)
    assert provider.is_open and before.count == after.count == 0  # it was never opened again
    assert_no_connection_checked_out(provider)


# -- connections dropped ---------------------------------------------------------------


async def test_after_idle_connections_are_dropped_the_next_operation_fails_cleanly_or_reconnects(
    provider: MySQLSessionProvider, proxy: FaultProxy
) -> None:
    sid = await make_session(provider, a=1)
    proxy.drop_all()
    try:
        store = await bounded(provider.read(sid))
    except SessionBackendError:
        pass
    else:
        assert dict(store) == {"a": 1}
    assert_no_connection_checked_out(provider)


async def test_dead_pooled_connections_are_discarded_and_the_provider_recovers_without_reopening(
    provider: MySQLSessionProvider, proxy: FaultProxy
) -> None:
    await fill_pool(provider)
    before = OpenChecks(proxy)
    proxy.drop_all()
    # This one may fail (a dead connection taken before its EOF was seen) or reconnect.
    with contextlib.suppress(SessionBackendError):
        await bounded(provider.read(provider.new_session_id()))
    proxy.heal()
    after = OpenChecks(proxy)  # heal() removed the first one's triggers
    # From here on every operation succeeds: no dead connection is handed out again.
    for _ in range(6):
        await works(provider)
    await bounded(asyncio.gather(*(works(provider) for _ in range(4))))
    assert provider.is_open and before.count == after.count == 0  # it was never opened again
    assert_no_connection_checked_out(provider)


async def test_statements_in_flight_when_connections_drop_raise_backend_error_and_free_the_pool(
    provider: MySQLSessionProvider, proxy: FaultProxy
) -> None:
    await fill_pool(provider)
    sent: list[int] = []
    proxy.on_request(b"SELECT", lambda: sent.append(1), once=False)
    proxy.stall_reads(True)  # no answer gets through: every read stays in flight
    reads = []
    for n in range(1, 5):  # in turns of their own: reads of one turn would share one SELECT
        reads.append(asyncio.ensure_future(provider.read(provider.new_session_id())))
        await eventually(lambda n=n: len(sent) == n, f"SELECT {n} reached the proxy")  # type: ignore[misc]
    proxy.drop_all()
    results = await bounded(asyncio.gather(*reads, return_exceptions=True))
    assert all(isinstance(r, SessionBackendError) for r in results), results
    assert_no_connection_checked_out(provider)
    proxy.heal()
    await works(provider)


# -- stalled reads ---------------------------------------------------------------------


async def test_a_stalled_read_times_out_with_backend_error_and_its_connection_is_not_reused(
    provider: MySQLSessionProvider, proxy: FaultProxy
) -> None:
    sid = await make_session(provider, a=1)
    # One connection, pooled and idle: the one the read takes.
    assert provider.pool_state().size == provider.pool_state().free == 1 == proxy.open_connections
    accepted = proxy.accepted
    proxy.stall_reads(True)
    with pytest.raises(SessionBackendError):
        await bounded(provider.read(sid))
    assert_no_connection_checked_out(provider)
    assert provider.pool_state().size == 0  # not put back
    await eventually(lambda: proxy.open_connections == 0, "the stalled connection was closed")
    proxy.heal()
    assert dict(await bounded(provider.read(sid))) == {"a": 1}
    assert proxy.accepted == accepted + 1  # read on a new connection, not the stalled one
    assert provider.pool_state().size == proxy.open_connections == 1


async def test_a_timed_out_statement_takes_back_its_own_cancellation(
    provider: MySQLSessionProvider, proxy: FaultProxy
) -> None:
    sid = await make_session(provider, a=1)
    task = asyncio.current_task()
    assert task is not None
    async with asyncio.timeout(BOUND):  # an enclosing deadline of the caller's, far away
        proxy.stall_reads(True)
        with pytest.raises(SessionBackendError, match="did not answer within 1s"):
            await provider.read(sid)
        assert task.cancelling() == 0  # nothing left to cancel the caller's next await
        proxy.heal()
        assert dict(await provider.read(sid)) == {"a": 1}
    assert_no_connection_checked_out(provider)


async def test_the_deadline_timer_stops_once_nothing_is_in_flight(
    provider: MySQLSessionProvider, monkeypatch: pytest.MonkeyPatch
) -> None:
    timers = WatchdogTimers(asyncio.get_running_loop(), monkeypatch)
    await works(provider)
    assert timers.scheduled  # the statements were bounded by it
    # One timer serves every statement while any is in flight; an idle provider has none.
    await eventually(lambda: not timers.running, "the deadline timer stopped")


async def test_cancelling_a_read_mid_statement_leaves_nothing_checked_out(
    provider: MySQLSessionProvider, proxy: FaultProxy
) -> None:
    sid = await make_session(provider, a=1)
    assert provider.pool_state().size == proxy.open_connections == 1
    proxy.stall_reads(True)
    before, accepted = proxy.bytes_up, proxy.accepted
    task = asyncio.ensure_future(provider.read(sid))
    await eventually(lambda: proxy.bytes_up > before, "the SELECT reached the server")
    assert provider.pool_state().in_use == 1
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await bounded(task)
    assert_no_connection_checked_out(provider)
    # Its answer is still on the way: it must never be reused, so it was closed.
    assert provider.pool_state().size == 0
    await eventually(lambda: proxy.open_connections == 0, "the cancelled read's connection was closed")
    proxy.heal()
    assert dict(await bounded(provider.read(sid))) == {"a": 1}
    assert proxy.accepted == accepted + 1  # read on a new connection
    await works(provider)
    assert_no_connection_checked_out(provider)


# -- cancellation of the sweep ----------------------------------------------------------


def stall_on(proxy: FaultProxy, pattern: bytes) -> asyncio.Event:
    """Stall all answers the moment a statement containing ``pattern`` reaches the proxy."""
    sent = asyncio.Event()

    def stall() -> None:
        proxy.stall_reads(True)
        sent.set()

    proxy.on_request(pattern, stall)
    return sent


async def test_cancelling_an_exclusive_sweep_mid_delete_propagates_the_cancellation(
    provider: MySQLSessionProvider, proxy: FaultProxy
) -> None:
    deleting = stall_on(proxy, b"DELETE FROM")
    task = asyncio.ensure_future(provider.sweep(exclusive=True))
    await bounded(deleting.wait())  # GET_LOCK answered, the batch DELETE awaits its answer
    task.cancel()
    done, _ = await asyncio.wait([task], timeout=BOUND)
    assert done, f"the cancelled sweep did not end within {BOUND:g}s"
    assert task.cancelled(), f"the cancelled sweep ended with {task.exception()!r} instead"
    assert_no_connection_checked_out(provider)


async def test_close_returns_while_the_background_sweep_is_stuck_mid_delete(
    proxy: FaultProxy, table: str
) -> None:
    deleting = stall_on(proxy, b"DELETE FROM")
    provider = MySQLSessionProvider(proxied_dsn(proxy), table=table, create_table=True, gc_interval=0.05)
    await bounded(provider.open())
    assert provider.sweeper is not None and provider.sweeper.task is not None
    sweeper = provider.sweeper.task
    try:
        await bounded(deleting.wait())
        await bounded(provider.close())
        assert sweeper.done() and not provider.is_open
    finally:  # a failed run must not leave the sweeper looping into the next test
        proxy.heal()
        for _ in range(100):
            if sweeper.done():
                break
            sweeper.cancel()
            await asyncio.wait([sweeper], timeout=0.1)
        await bounded(provider.close())


# -- latency ---------------------------------------------------------------------------


async def test_latency_below_the_timeout_still_works(
    provider: MySQLSessionProvider, proxy: FaultProxy
) -> None:
    await works(provider)  # warm: the pooled connection is already established
    proxy.latency(0.2)  # a round trip of about 0.4 s against timeout=1
    await works(provider)
    assert_no_connection_checked_out(provider)


# -- what a failure says ---------------------------------------------------------------


async def test_a_failure_is_logged_once_with_its_cause(
    provider: MySQLSessionProvider, proxy: FaultProxy, caplog: pytest.LogCaptureFixture
) -> None:
    proxy.refuse(True)
    proxy.drop_all()  # whether the pool notices or not, this read cannot get an answer
    caplog.clear()
    with caplog.at_level(logging.WARNING, logger=LOGGER), pytest.raises(SessionBackendError) as excinfo:
        await bounded(provider.read(provider.new_session_id()))
    cause = excinfo.value.__cause__
    assert cause is not None
    records = backend_records(caplog)
    assert len(records) == 1, [r.getMessage() for r in records]
    [record] = records
    logged_cause = record.exc_info[1] if record.exc_info else None
    assert logged_cause is cause or str(cause) in record.getMessage(), (record.getMessage(), repr(cause))
    assert_no_connection_checked_out(provider)


@pytest.mark.parametrize("fault", ["none", "refuse", "blackhole"])
async def test_the_password_never_appears_in_the_error_or_the_log(
    proxy: FaultProxy, table: str, caplog: pytest.LogCaptureFixture, fault: str
) -> None:
    proxy.refuse(fault == "refuse")
    proxy.blackhole(fault == "blackhole")
    provider = MySQLSessionProvider(proxied_dsn(proxy, "nobody:secret"), table=table, gc_interval=None)
    with caplog.at_level(logging.DEBUG, logger=LOGGER), pytest.raises(SessionBackendError) as excinfo:
        await bounded(provider.open())
    assert "secret" not in str(excinfo.value)
    assert "secret" not in repr(excinfo.value)
    assert "secret" not in caplog.text
    assert backend_records(caplog)


# -- the proxy as a separate process (as a soak script runs it) ------------------------


async def test_the_provider_through_the_proxy_run_as_a_process_and_driven_by_its_control_port(
    table: str,
) -> None:
    script = Path(__file__).with_name("faultproxy.py")
    target = f"{TARGET_HOST}:{TARGET_PORT}"
    process = await asyncio.create_subprocess_exec(
        sys.executable, str(script), "--listen", "127.0.0.1:0", "--target", target,
        stdout=asyncio.subprocess.PIPE,
    )  # fmt: skip
    try:
        assert process.stdout is not None
        banner = (await bounded(process.stdout.readline())).decode().split()
        assert banner[0] == "listening" and banner[2] == "control", banner
        port, control = int(banner[1].rpartition(":")[2]), ("127.0.0.1", int(banner[3].rpartition(":")[2]))

        async def command(line: str) -> str:
            return await bounded(asyncio.to_thread(send, control, line))

        provider = MySQLSessionProvider(dsn_at(port), table=table, create_table=True, gc_interval=None)
        await bounded(provider.open())
        try:
            await works(provider)
            assert await command("stall on") == "ok"
            with pytest.raises(SessionBackendError):
                await bounded(provider.read(provider.new_session_id()))
            assert (await command("status")).startswith("ok ")
            assert await command("heal") == "ok"
            assert (await command("bogus")).startswith("error ")
            await works(provider)
            assert_no_connection_checked_out(provider)
        finally:
            await bounded(provider.close())
        process.terminate()
        assert await bounded(process.wait()) == 0
    finally:
        if process.returncode is None:
            process.kill()
            await bounded(process.wait())
