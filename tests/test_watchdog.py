"""The provider's deadline timer: one timer bounds every in-flight statement.

Its mechanics are asyncio-only, so they are specified here without a database; what a
timed-out statement does to the pool is in test_faults.py, through the fault proxy.
"""

from __future__ import annotations

import asyncio

import pytest
from conftest import WatchdogTimers

from asgi_mysql_session.watchdog import Watchdog

BOUND = 10.0


async def bounded_statement(watchdog: Watchdog, seconds: float, work: float) -> str:
    """What the provider does around a statement: 'done', 'timeout', or the cancel goes on."""
    loop = asyncio.get_running_loop()
    token = watchdog.arm(loop, seconds)
    try:
        await asyncio.sleep(work)
        return "done"
    except asyncio.CancelledError:
        if watchdog.expired(token):
            return "timeout"
        raise
    finally:
        watchdog.disarm(token)


async def test_work_within_its_deadline_is_not_disturbed() -> None:
    assert await bounded_statement(Watchdog(), 1.0, 0.01) == "done"


async def test_work_past_its_deadline_is_cancelled_and_reported_as_a_timeout() -> None:
    watchdog = Watchdog()
    result = await asyncio.wait_for(bounded_statement(watchdog, 0.05, BOUND), BOUND)
    assert result == "timeout"


async def test_only_the_late_task_is_cancelled() -> None:
    watchdog = Watchdog()
    late = asyncio.ensure_future(bounded_statement(watchdog, 0.05, BOUND))
    on_time = asyncio.ensure_future(bounded_statement(watchdog, 5.0, 0.2))
    assert await asyncio.wait_for(asyncio.gather(late, on_time), BOUND) == ["timeout", "done"]


async def test_a_cancellation_from_outside_stays_a_cancellation() -> None:
    task = asyncio.ensure_future(bounded_statement(Watchdog(), 5.0, BOUND))
    await asyncio.sleep(0.01)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await asyncio.wait_for(task, BOUND)


async def test_a_cancellation_arriving_with_the_deadline_is_not_swallowed(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    timers = WatchdogTimers(asyncio.get_running_loop(), monkeypatch)
    task = asyncio.ensure_future(bounded_statement(Watchdog(), 0.05, BOUND))
    cancelled_too = False

    def cancel_from_outside() -> None:
        nonlocal cancelled_too
        if task.cancelling() and not cancelled_too:  # the deadline fired in this very callback
            cancelled_too = True
            task.cancel()

    # The deadline fires and a cancellation comes from outside, in the same loop turn.
    timers.after = cancel_from_outside
    with pytest.raises(asyncio.CancelledError):
        await asyncio.wait_for(task, BOUND)
    assert cancelled_too


async def test_a_timeout_leaves_the_task_with_no_pending_cancellation() -> None:
    async def run() -> int:
        assert await bounded_statement(Watchdog(), 0.05, BOUND) == "timeout"
        task = asyncio.current_task()
        assert task is not None
        return task.cancelling()

    assert await asyncio.wait_for(run(), BOUND) == 0


async def test_a_task_already_bounded_keeps_its_outer_deadline() -> None:
    watchdog = Watchdog()
    loop = asyncio.get_running_loop()
    outer = watchdog.arm(loop, 5.0)
    assert outer is not None
    assert watchdog.arm(loop, 0.01) is None  # nested: no second deadline, nothing to undo
    watchdog.disarm(None)
    watchdog.disarm(outer)
    assert not watchdog.expired(outer)


async def test_the_timer_runs_only_while_something_is_in_flight(monkeypatch: pytest.MonkeyPatch) -> None:
    timers = WatchdogTimers(asyncio.get_running_loop(), monkeypatch)
    watchdog = Watchdog()
    assert not timers.running
    assert await bounded_statement(watchdog, 0.05, 0.01) == "done"
    assert timers.running  # armed by the statement; it stops at its next tick
    await asyncio.sleep(0.02)
    assert not timers.running
