"""Per-session locks: first come first served, and nothing left behind (asyncio only)."""

from __future__ import annotations

import asyncio

import pytest

from asgi_mysql_session.locks import KeyedLocks

BOUND = 10.0


async def test_a_free_key_is_taken_without_waiting_and_forgotten_on_release() -> None:
    locks = KeyedLocks()
    await locks.acquire("a")
    assert len(locks) == 1
    locks.release("a")
    assert len(locks) == 0


async def test_try_acquire_takes_a_free_key_and_refuses_a_held_one_without_queueing() -> None:
    locks = KeyedLocks()
    assert locks.try_acquire("a")
    assert not locks.try_acquire("a")
    waiter = asyncio.ensure_future(locks.acquire("a"))
    await asyncio.sleep(0)
    assert not waiter.done()
    locks.release("a")  # handed to the waiter, not freed
    await asyncio.wait_for(waiter, BOUND)
    assert not locks.try_acquire("a")
    locks.release("a")
    assert len(locks) == 0


async def test_different_keys_do_not_wait_for_each_other() -> None:
    locks = KeyedLocks()
    await locks.acquire("a")
    await asyncio.wait_for(locks.acquire("b"), BOUND)
    locks.release("a")
    locks.release("b")
    assert len(locks) == 0


async def test_waiters_of_one_key_are_served_in_arrival_order() -> None:
    locks = KeyedLocks()
    order: list[int] = []

    async def writer(n: int) -> None:
        await locks.acquire("k")
        try:
            order.append(n)
            await asyncio.sleep(0)
        finally:
            locks.release("k")

    await locks.acquire("k")
    tasks = [asyncio.ensure_future(writer(n)) for n in range(5)]
    await asyncio.sleep(0.01)
    assert order == []  # all of them wait for the holder
    locks.release("k")
    await asyncio.wait_for(asyncio.gather(*tasks), BOUND)
    assert order == [0, 1, 2, 3, 4]
    assert len(locks) == 0


async def test_a_waiter_cancelled_while_waiting_leaves_no_trace() -> None:
    locks = KeyedLocks()
    await locks.acquire("k")
    waiter = asyncio.ensure_future(locks.acquire("k"))
    await asyncio.sleep(0.01)
    waiter.cancel()
    with pytest.raises(asyncio.CancelledError):
        await waiter
    locks.release("k")
    assert len(locks) == 0


async def test_a_waiter_cancelled_as_the_lock_is_handed_to_it_passes_it_on() -> None:
    locks = KeyedLocks()
    await locks.acquire("k")
    first = asyncio.ensure_future(locks.acquire("k"))
    second = asyncio.ensure_future(locks.acquire("k"))
    await asyncio.sleep(0.01)
    locks.release("k")  # handed to ``first``, which is cancelled before it runs
    first.cancel()
    with pytest.raises(asyncio.CancelledError):
        await first
    await asyncio.wait_for(second, BOUND)  # the lock went on to the next waiter
    locks.release("k")
    assert len(locks) == 0


async def test_a_timed_out_waiter_leaves_the_lock_to_the_others() -> None:
    locks = KeyedLocks()
    await locks.acquire("k")
    with pytest.raises(asyncio.TimeoutError):
        await asyncio.wait_for(locks.acquire("k"), 0.01)
    locks.release("k")
    assert len(locks) == 0
    await asyncio.wait_for(locks.acquire("k"), BOUND)
    locks.release("k")
