"""The background sweep: runs with the provider, one process at a time, never fatal."""

from __future__ import annotations

import asyncio
import logging

import pytest
from conftest import Database, FakeClock, new_gateway, provider_on, table_on

from asgi_mysql_session import ExpirySweeper, MySQLSessionProvider


async def expired_sessions(provider: MySQLSessionProvider, clock: FakeClock, count: int) -> None:
    for _ in range(count):
        store = await provider.read(provider.new_session_id())
        store["a"] = 1
        await store.release()
    clock.advance(provider.max_lifetime)


def sweep_lock(table: str) -> str:
    """The named lock every process sweeping ``table`` takes (another worker's, here): the
    one a ``SessionTable`` of that table on the same database names."""
    return table_on(new_gateway(), table).lock_name()


async def wait_until(condition, seconds: float = 10.0) -> None:  # type: ignore[no-untyped-def]
    """Poll a condition with a bound, so a broken sweeper fails instead of hanging."""
    async with asyncio.timeout(seconds):
        while not condition():  # noqa: ASYNC110 - polls plain counters, bounded above
            await asyncio.sleep(0.01)


async def test_open_starts_the_sweeper_and_close_stops_it(table: str, clock: FakeClock) -> None:
    provider = provider_on(table, clock, gc_interval=0.02)
    async with provider:
        sweeper = provider.sweeper
        assert sweeper is not None and sweeper.running
        await expired_sessions(provider, clock, 3)
        await wait_until(lambda: sweeper.rows == 3)
    assert not sweeper.running and provider.sweeper is None


async def test_no_sweeper_when_the_interval_is_none(provider: MySQLSessionProvider) -> None:
    assert provider.sweeper is None


async def test_only_one_process_sweeps_at_a_time(
    provider: MySQLSessionProvider, clock: FakeClock, db: Database, table: str
) -> None:
    await expired_sessions(provider, clock, 4)
    lock = sweep_lock(table)
    db.query("SELECT GET_LOCK(%s, 0)", (lock,))  # another worker is sweeping
    sweeper = ExpirySweeper(provider, interval=3600)
    assert await sweeper.sweep_once() is None
    assert db.query(f"SELECT COUNT(*) FROM `{table}`") == [(4,)]
    db.query("SELECT RELEASE_LOCK(%s)", (lock,))
    assert await sweeper.sweep_once() == 4
    assert db.query(f"SELECT COUNT(*) FROM `{table}`") == [(0,)]


async def test_the_lock_is_released_after_a_sweep(
    provider: MySQLSessionProvider, db: Database, table: str
) -> None:
    await ExpirySweeper(provider, interval=3600).sweep_once()
    assert db.query("SELECT IS_FREE_LOCK(%s)", (sweep_lock(table),)) == [(1,)]


async def test_a_failed_sweep_is_logged_and_retried_next_interval(
    table: str, clock: FakeClock, caplog: pytest.LogCaptureFixture, db: Database
) -> None:
    provider = provider_on(table, clock, gc_interval=0.02)
    async with provider:
        sweeper = provider.sweeper
        assert sweeper is not None
        await expired_sessions(provider, clock, 2)
        db.query(f"RENAME TABLE `{table}` TO `{table}_away`")  # every sweep now fails
        try:
            await wait_until(lambda: sweeper.failures >= 2)
            assert sweeper.running
        finally:
            db.query(f"RENAME TABLE `{table}_away` TO `{table}`")
        await wait_until(lambda: sweeper.rows == 2)
    failures = [r for r in caplog.records if r.getMessage().startswith("session sweep failed")]
    assert failures and all(r.levelno == logging.WARNING for r in failures)


async def test_sweeps_delete_in_bounded_batches(table: str, clock: FakeClock) -> None:
    provider = provider_on(table, clock, gc_batch_size=2)
    async with provider:
        await expired_sessions(provider, clock, 5)
        batches: list[int] = []
        assert await provider.sweep(on_batch=batches.append) == 5
    assert batches == [2, 2, 1]


async def test_stop_lets_a_sweep_under_way_finish_and_give_its_lock_back(
    table: str, clock: FakeClock, db: Database
) -> None:
    provider = provider_on(table, clock, gc_batch_size=5, gc_pause=0.05)
    async with provider:
        await expired_sessions(provider, clock, 40)  # 8 batches, 0.05 s apart: a sweep of ~0.4 s
        sweeper = ExpirySweeper(provider, interval=0.01, jitter=0)
        sweeper.start()
        await wait_until(lambda: db.query(f"SELECT COUNT(*) FROM `{table}`") < [(40,)])
        await sweeper.stop()  # mid-sweep
        assert not sweeper.running
        assert (sweeper.rows, sweeper.failures) == (40, 0)
        assert db.query(f"SELECT COUNT(*) FROM `{table}`") == [(0,)]
        assert db.query("SELECT IS_FREE_LOCK(%s)", (sweep_lock(table),)) == [(1,)]


async def test_stop_cancels_a_sweeper_waiting_for_its_next_sweep_at_once(
    provider: MySQLSessionProvider,
) -> None:
    sweeper = ExpirySweeper(provider, interval=3600)
    sweeper.start()
    await asyncio.sleep(0.01)
    async with asyncio.timeout(0.5):
        await sweeper.stop()
    assert not sweeper.running
