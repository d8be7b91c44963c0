"""The provider's own statement counter agrees with the server's Com_* status counters."""

from __future__ import annotations

from conftest import Database

from asgi_mysql_session import MySQLSessionProvider


async def test_provider_counts_match_the_server_counters(
    provider: MySQLSessionProvider, db: Database
) -> None:
    server_before = db.counters()
    ours_before = dict(provider.statements)
    sid = provider.new_session_id()
    store = await provider.read(sid)
    store["a"] = 1
    await store.release()
    store = await provider.read(sid)
    store["a"] = 2
    await store.release()
    await provider.destroy(sid)
    server = {k: v - server_before[k] for k, v in db.counters().items()}
    ours = {k: provider.statements[k] - ours_before.get(k, 0) for k in server}
    assert ours == {"select": 2, "insert": 1, "update": 1, "delete": 1}
    # Other clients may run statements meanwhile; the server never saw fewer than we sent.
    assert all(server[k] >= ours[k] for k in ours)
