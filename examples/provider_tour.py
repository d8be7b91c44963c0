"""The provider on its own, as an async service would use it: every call, printed step by step.

``make tour`` (or ``python examples/provider_tour.py``) against MYSQL_URL; it uses its own
table ``session_tour`` and drops nothing but the rows it made.
"""

from __future__ import annotations

import asyncio
import os

from asgi_mysql_session import MySQLSessionProvider


async def main() -> None:
    dsn = os.environ.get("MYSQL_URL", "mysql://root@127.0.0.1:3306/test")
    async with MySQLSessionProvider(
        dsn, table="session_tour", create_table=True, gc_interval=None
    ) as provider:
        sid = provider.new_session_id()
        print(f"new id (shown here once; the table only ever holds its SHA-256): {sid[:8]}…")

        store = await provider.read(sid)
        print(f"read unknown id   -> new={store.is_new} data={dict(store)}")
        store.set("user", "ada")
        store["cart"] = ["apple"]
        print(f"release           -> {(await store.release()).value}")

        store = await provider.read(sid)
        print(f"read              -> data={dict(store)} version={store.version}")
        store["cart"].append("pear")  # in-place change of a nested value is detected too
        print(f"update + release  -> {(await store.release()).value}")

        new_sid = provider.new_session_id()
        store = await provider.regenerate(sid, new_sid)
        print(f"regenerate        -> data={dict(store)}; old id exists: {await provider.exist(sid)}")

        print(f"live sessions     -> {await provider.all()}")
        print(f"destroy           -> {await provider.destroy(new_sid)}")
        print(f"live sessions     -> {await provider.all()}")
        print(f"gc (expired rows) -> {await provider.gc()} deleted")


if __name__ == "__main__":
    asyncio.run(main())
