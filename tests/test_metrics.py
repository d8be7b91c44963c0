"""Observer hooks and the Prometheus metrics they feed."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest
from conftest import FakeClock, provider_on
from prometheus_client import CollectorRegistry
from sessionapp import client, make_app

from asgi_mysql_session import MySQLSessionProvider, PrometheusObserver


@pytest.fixture
def registry() -> CollectorRegistry:
    return CollectorRegistry()


@pytest.fixture
async def observed(
    table: str, clock: FakeClock, registry: CollectorRegistry
) -> AsyncIterator[MySQLSessionProvider]:
    provider = provider_on(table, clock, observer=PrometheusObserver(registry))
    async with provider:
        yield provider


def value(registry: CollectorRegistry, name: str, **labels: str) -> float:
    sample = registry.get_sample_value(f"asgi_mysql_session_{name}", labels)
    return 0.0 if sample is None else sample


async def test_request_flow_is_counted(
    observed: MySQLSessionProvider, registry: CollectorRegistry, clock: FakeClock
) -> None:
    selects_at_open = value(registry, "statement_seconds_count", kind="select")
    async with client(make_app(observed)) as http:
        await http.get("/set", params={"user": "ada"})
        await http.get("/incr")
        await http.get("/read")
        await http.get("/logout")
        for _ in range(3):
            await http.get("/read", headers={"cookie": f"session={observed.new_session_id()}"})
    assert value(registry, "session_writes_total", result="created") == 1
    assert value(registry, "session_writes_total", result="updated") == 1
    assert value(registry, "session_writes_total", result="destroyed") == 1
    assert value(registry, "sessions_loaded_total") == 3
    assert value(registry, "unknown_ids_total") == 3
    assert value(registry, "statement_seconds_count", kind="select") - selects_at_open == 6
    assert value(registry, "statement_seconds_count", kind="insert") == 1


async def test_sweeps_and_destroys_are_counted(
    observed: MySQLSessionProvider, registry: CollectorRegistry, clock: FakeClock
) -> None:
    for _ in range(4):
        store = await observed.read(observed.new_session_id())
        store["a"] = 1
        store.owner = "ada"
        await store.release()
    assert await observed.destroy_owner("ada") == 4
    assert value(registry, "sessions_destroyed_total") == 4
    store = await observed.read(observed.new_session_id())
    store["a"] = 1
    await store.release()
    clock.advance(observed.max_lifetime)
    await observed.gc()
    assert value(registry, "swept_rows_total") == 1
    assert value(registry, "sweep_seconds_count") == 1


async def test_write_conflicts_are_counted(
    observed: MySQLSessionProvider, registry: CollectorRegistry
) -> None:
    store = await observed.read(observed.new_session_id())
    store["a"] = 1
    await store.release()
    first, second = await observed.read(store.session_id), await observed.read(store.session_id)
    first["b"] = 2
    second["c"] = 3
    await first.release()
    await second.release()
    assert value(registry, "write_conflicts_total") == 1


async def test_database_errors_are_counted_by_kind(table: str, registry: CollectorRegistry) -> None:
    provider = MySQLSessionProvider(
        "mysql://root@127.0.0.1:1/test?connect_timeout=1",
        table=table,
        gc_interval=None,
        observer=PrometheusObserver(registry),
    )
    with pytest.raises(Exception, match="cannot connect"):
        await provider.open()
    assert value(registry, "database_errors_total", kind="connection") == 1


async def test_a_statement_hook_set_on_the_observer_instance_gets_timings(
    provider: MySQLSessionProvider,
) -> None:
    seen: list[tuple[str, float]] = []
    provider.observer.statement = lambda kind, seconds: seen.append((kind, seconds))  # type: ignore[method-assign]
    assert await provider.all() == 0
    assert [kind for kind, _ in seen] == ["select"] and seen[0][1] >= 0
