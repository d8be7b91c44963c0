"""Many tasks on one provider: pool use, writers racing on one session, destroy and rotation races."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import pytest
from conftest import MYSQL_URL, Database, FakeClock, assert_no_connection_checked_out, make_session, row_count

from asgi_mysql_session import (
    MySQLSessionProvider,
    SaveResult,
    SessionInterrupted,
    SessionStore,
)

POOL_MAX = 10


@pytest.fixture
async def pooled(table: str, clock: FakeClock) -> AsyncIterator[MySQLSessionProvider]:
    """A provider on a pool of at most 10 connections."""
    dsn = MYSQL_URL + ("&" if "?" in MYSQL_URL else "?") + f"pool_max={POOL_MAX}"
    provider = MySQLSessionProvider(dsn, table=table, create_table=True, clock=clock, gc_interval=None)
    await provider.open()
    yield provider
    assert_no_connection_checked_out(provider)
    await provider.close()


async def test_200_tasks_on_distinct_sessions_share_a_pool_of_10(
    pooled: MySQLSessionProvider, db: Database, table: str
) -> None:
    tasks = 200

    async def one_client(i: int) -> str:
        sid = pooled.new_session_id()
        store = await pooled.read(sid)
        store["owner"] = i
        store["items"] = [i]
        assert await store.release() is SaveResult.CREATED
        for round_ in range(3):
            store = await pooled.read(sid)
            assert store["owner"] == i, "a task saw another task's session"
            store["items"].append(round_)
            assert await store.release() is SaveResult.UPDATED
        return sid

    sizes: list[int] = []
    sampling = asyncio.Event()

    async def sample() -> None:  # the pool's size throughout the run, every turn or so
        while not sampling.is_set():
            sizes.append(pooled.pool_state().size)
            await asyncio.sleep(0)

    sampler = asyncio.create_task(sample())
    sids = await asyncio.gather(*(one_client(i) for i in range(tasks)))
    sampling.set()
    await sampler

    assert len(set(sids)) == tasks
    for i, sid in enumerate(sids):
        assert dict(await pooled.read(sid)) == {"owner": i, "items": [i, 0, 1, 2]}
    assert await pooled.all() == tasks
    assert row_count(db, table) == tasks
    state = pooled.pool_state()
    assert state.maxsize == POOL_MAX
    assert state.size <= POOL_MAX and max(sizes) <= POOL_MAX
    assert_no_connection_checked_out(pooled)


async def test_50_tasks_each_setting_its_own_key_on_one_session_all_persist(
    pooled: MySQLSessionProvider, db: Database, table: str
) -> None:
    tasks, rounds = 50, 20
    sid = await make_session(pooled, seed="kept")

    async def one_writer(i: int) -> None:
        for round_ in range(rounds):
            store = await pooled.read(sid)
            assert not store.is_new
            store[f"key_{i}"] = round_
            assert await store.release() in (SaveResult.UPDATED, SaveResult.NOTHING)

    await asyncio.gather(*(one_writer(i) for i in range(tasks)))

    final = dict(await pooled.read(sid))
    assert final == {"seed": "kept", **{f"key_{i}": rounds - 1 for i in range(tasks)}}
    assert row_count(db, table) == 1
    assert_no_connection_checked_out(pooled)


async def test_a_slow_writer_finishing_after_a_concurrent_destroy_does_not_bring_the_session_back(
    provider: MySQLSessionProvider, db: Database, table: str
) -> None:
    sid = await make_session(provider, user="ada")
    has_read = asyncio.Event()
    may_finish = asyncio.Event()

    async def slow_writer() -> SaveResult:
        store = await provider.read(sid)
        store["cart"] = [1, 2, 3]
        has_read.set()
        await may_finish.wait()  # the slow part of the request
        return await store.release()

    writer = asyncio.create_task(slow_writer())
    await has_read.wait()
    assert await provider.destroy(sid)
    may_finish.set()
    with pytest.raises(SessionInterrupted):
        await writer
    assert row_count(db, table) == 0
    assert not await provider.exist(sid)


async def test_a_slow_reader_due_for_a_touch_after_a_concurrent_destroy_does_not_bring_it_back(
    provider: MySQLSessionProvider, clock: FakeClock, db: Database, table: str
) -> None:
    sid = await make_session(provider, user="ada")
    clock.advance(provider.touch_after)
    has_read = asyncio.Event()
    may_finish = asyncio.Event()

    async def slow_reader() -> SaveResult:
        store = await provider.read(sid)
        assert store["user"] == "ada"
        has_read.set()
        await may_finish.wait()
        return await store.release()

    reader = asyncio.create_task(slow_reader())
    await has_read.wait()
    assert await provider.destroy(sid)
    may_finish.set()
    assert await reader is SaveResult.NOTHING
    assert row_count(db, table) == 0


async def test_slow_writers_released_together_with_a_destroy_never_bring_the_session_back(
    provider: MySQLSessionProvider, db: Database, table: str
) -> None:
    sid = await make_session(provider, user="ada")
    stores = [await provider.read(sid) for _ in range(10)]
    for i, store in enumerate(stores):
        store[f"w{i}"] = i

    async def release(store: SessionStore) -> SaveResult | None:
        try:
            return await store.release()
        except SessionInterrupted:
            return None

    results = await asyncio.gather(provider.destroy(sid), *(release(s) for s in stores))
    assert results[0] is True
    assert SaveResult.CREATED not in results
    assert row_count(db, table) == 0
    assert not await provider.exist(sid)


async def test_a_slow_writer_finishing_after_a_rotation_is_dropped_and_the_old_id_stays_dead(
    provider: MySQLSessionProvider, db: Database, table: str
) -> None:
    old = await make_session(provider, user="ada")
    has_read = asyncio.Event()
    may_finish = asyncio.Event()

    async def slow_writer() -> SaveResult:
        store = await provider.read(old)
        store["late"] = True
        has_read.set()
        await may_finish.wait()
        return await store.release()

    writer = asyncio.create_task(slow_writer())
    await has_read.wait()
    rotating = await provider.read(old)
    await rotating.regenerate()
    assert await rotating.release() is SaveResult.NOTHING
    may_finish.set()
    with pytest.raises(SessionInterrupted):
        await writer
    assert not await provider.exist(old)
    assert (await provider.read(old)).is_new
    assert dict(await provider.read(rotating.session_id)) == {"user": "ada"}
    assert row_count(db, table) == 1


async def test_a_write_of_the_old_id_landing_before_the_rotation_saves_ends_under_the_new_id(
    provider: MySQLSessionProvider, db: Database, table: str
) -> None:
    old = await make_session(provider, user="anon")
    rotating = await provider.read(old)
    writer = await provider.read(old)
    writer["cart"] = [1]
    assert await writer.release() is SaveResult.UPDATED
    rotating["user"] = "ada"  # login: change, then rotate
    await rotating.regenerate()
    assert await rotating.release() is SaveResult.UPDATED
    assert dict(await provider.read(rotating.session_id)) == {"user": "ada", "cart": [1]}
    assert not await provider.exist(old)
    assert row_count(db, table) == 1


async def test_regenerate_racing_with_writes_of_the_old_id_keeps_exactly_the_writes_that_landed(
    provider: MySQLSessionProvider, db: Database, table: str
) -> None:
    old = await make_session(provider, user="anon")
    writers = [await provider.read(old) for _ in range(20)]
    for i, store in enumerate(writers):
        store[f"w{i}"] = i
    rotating = await provider.read(old)
    rotating["user"] = "ada"

    async def write(store: SessionStore) -> bool:
        try:
            await store.release()
        except SessionInterrupted:
            return False
        return True

    async def rotate() -> SaveResult:
        await rotating.regenerate()
        return await rotating.release()

    half = len(writers) // 2
    outcome = await asyncio.gather(
        *(write(s) for s in writers[:half]), rotate(), *(write(s) for s in writers[half:])
    )
    landed = outcome[:half] + outcome[half + 1 :]
    assert outcome[half] is SaveResult.UPDATED
    new = rotating.session_id
    expected = {"user": "ada", **{f"w{i}": i for i, ok in enumerate(landed) if ok}}
    assert dict(await provider.read(new)) == expected
    assert not await provider.exist(old)
    assert (await provider.read(old)).is_new
    assert row_count(db, table) == 1
