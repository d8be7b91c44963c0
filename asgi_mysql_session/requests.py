"""One request's session: the id the client presented, its store, loading and saving it,
and the cookie the outcome needs; and the helpers apps call (``load_session``...)."""

from __future__ import annotations

from collections.abc import MutableMapping
from typing import Any

from .cookies import Header, IdTransport, Scope
from .errors import (
    SessionBackendError,
    SessionConfigError,
    SessionConflictError,
    SessionError,
    SessionInterrupted,
    SessionNotLoaded,
    SessionTooLargeError,
)
from .provider import MySQLSessionProvider
from .store import SaveResult, SessionStore

#: Where the middleware keeps the RequestSession in the ASGI scope.
SCOPE_KEY = "asgi_mysql_session"

#: Failures that become a clean response (503/409/413) instead of an exception.
OPERATIONAL = (SessionBackendError, SessionInterrupted, SessionConflictError, SessionTooLargeError)


class _NotLoaded(SessionNotLoaded):
    def __init__(self) -> None:
        super().__init__("call `await load_session(request)` first (lazy mode)")


#: Failures that become a clean response (503/409/413) instead of an exception.
_OPERATIONAL = (SessionBackendError, SessionInterrupted, SessionConflictError, SessionTooLargeError)


class RequestSession:
    """Per-connection state: the id the client sent, the store, and how to save it."""

    __slots__ = ("failure", "presented", "provider", "store", "transport")

    def __init__(self, provider: MySQLSessionProvider, transport: IdTransport, presented: str | None) -> None:
        self.provider = provider
        self.transport = transport
        self.presented = presented
        self.failure: SessionError | None = None
        self.store = provider.new_session()  # its id is minted only if it is saved...
        if presented is not None:  # ...or known once the row is read
            self.store._block(_NotLoaded)

    async def load(self) -> SessionStore:
        """Read the presented id's row (one SELECT); unknown ids are never adopted."""
        store = self.store
        if store.loaded:
            return store
        assert self.presented is not None
        provider = self.provider
        try:
            if not provider.is_open:
                await provider.open()
            # The path provider.load() takes: unknown ids are never adopted.
            await store.load(self.presented)
        except SessionError as exc:
            self.failure = exc
            store._block(exc)
            raise
        return store

    async def save(self) -> SaveResult:
        store = self.store
        if not store.loaded:
            return SaveResult.NOTHING  # never read, so nothing can have changed
        provider = self.provider
        if not provider.is_open and store.modified:  # lifespan did not run: open on demand
            await provider.open()
        return await store.release()

    def cookie_headers(self, result: SaveResult, scope: Scope) -> list[Header]:
        """The headers this outcome needs: the id (new, rotated or refreshed) or its removal."""
        store = self.store
        transport = self.transport
        if not store.loaded:
            return []
        if store.is_new:  # no row: a cookie the client still holds is dead...
            if self.presented is None or store.superseded:  # ...unless a login replaced it
                return []
            if not (store.accessed or store.destroyed):
                return []  # a route that never used the session: cleared when one does
            return [transport.expire_header(scope)]
        if store.session_id == self.presented and (
            result is SaveResult.NOTHING or transport.max_age is None  # nothing for the cookie to follow
        ):
            return []
        # Counted from this request's write when there was one: the Max-Age is then exactly
        # the lifetime it set, even if the clock turned to the next second meanwhile.
        now = store._written_at if result is not SaveResult.NOTHING else self.provider.now()
        remaining = max(store.expiry - now, 0)
        return [transport.id_header(store.session_id, remaining, scope)]


# -- helpers for apps ----------------------------------------------------------------------


def _session_of(conn: Any) -> RequestSession:
    scope = conn if isinstance(conn, MutableMapping) else conn.scope
    session = scope.get(SCOPE_KEY)
    if not isinstance(session, RequestSession):
        raise SessionConfigError("no session here: is SessionMiddleware installed for this path?")
    return session


async def load_session(conn: Any) -> SessionStore:
    """Read the session now (lazy mode), or return it if already loaded.

    ``conn`` is a Starlette Request/WebSocket or an ASGI scope. Raises
    ``SessionBackendError`` if the database cannot be reached.
    """
    session = _session_of(conn)
    if session.failure is not None:
        raise session.failure
    return await session.load()


async def regenerate_session(conn: Any) -> SessionStore:
    """Rotate the session id, keeping the data: call it at login and privilege changes."""
    store = await load_session(conn)
    await store.regenerate()
    return store


async def save_session(conn: Any) -> SaveResult:
    """Save now: for WebSockets mid-connection, or to make a write durable early."""
    await load_session(conn)
    return await _session_of(conn).save()
