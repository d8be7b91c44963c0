"""Starlette's SessionMiddleware signature, backed by asgi_mysql_session (for the compat run).

``make test-starlette-compat`` runs Starlette's own ``tests/middleware/test_session.py``
with its import of ``starlette.middleware.sessions`` pointed here. Every middleware gets its
own provider on the shared server, all in one table (``STARLETTE_COMPAT_TABLE``) that the
run creates and drops. It is not collected by ``make test`` (no ``test_`` prefix).
"""

from __future__ import annotations

import os
from typing import Any, Literal

from asgi_mysql_session import MySQLSessionProvider, SessionStore
from asgi_mysql_session import SessionMiddleware as _MySQLSessionMiddleware

MYSQL_URL = os.environ.get("MYSQL_URL", "mysql://root@127.0.0.1:3306/test")
TABLE = os.environ.get("STARLETTE_COMPAT_TABLE", "starlette_compat")
FOURTEEN_DAYS = 14 * 24 * 60 * 60


class SessionMiddleware(_MySQLSessionMiddleware):
    """``starlette.middleware.sessions.SessionMiddleware(app, secret_key, ...)``, server-side.

    ``secret_key`` is not needed (the cookie holds a random id, not signed data). ``max_age``
    is both the server-side idle lifetime (when positive) and the cookie's Max-Age, which
    0 or a negative value sends as is; ``https_only=True`` forces ``secure``.
    """

    def __init__(
        self,
        app: Any,
        secret_key: Any,
        session_cookie: str = "session",
        max_age: int | None = FOURTEEN_DAYS,
        path: str = "/",
        same_site: Literal["lax", "strict", "none"] = "lax",
        https_only: bool = False,
        domain: str | None = None,
        partitioned: bool = False,
    ) -> None:
        lifetime = max_age if max_age is not None and max_age > 0 else FOURTEEN_DAYS
        provider = MySQLSessionProvider(
            MYSQL_URL,
            table=TABLE,
            create_table=True,
            max_lifetime=lifetime,
            absolute_lifetime=None,  # Starlette's cookie has no absolute bound
            gc_interval=None,
        )
        super().__init__(
            app,
            provider,
            cookie_name=session_cookie,
            max_age=max_age,
            path=path,
            domain=domain,
            secure=True if https_only else None,
            samesite=same_site,
            partitioned=partitioned,
        )


def Session(data: dict[str, Any] | None = None) -> SessionStore:  # Starlette's class name
    """A store holding ``data`` as if read from the database (not accessed, not modified)."""
    store = MySQLSessionProvider(MYSQL_URL, table=TABLE).new_session()
    dict.update(store, data or {})
    return store
