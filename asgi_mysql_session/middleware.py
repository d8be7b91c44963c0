"""Pure ASGI middleware: ``scope["session"]`` backed by MySQL, cookies done right.

Like Starlette's own SessionMiddleware it only wraps ``send`` and touches headers on
``http.response.start``; unlike it, the data lives in the database and the cookie holds a
random id. The session is saved *before* the response headers leave, so a client that got
a response can rely on its write, and a failed write becomes a clean error response.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Awaitable, Callable, MutableMapping, Sequence
from operator import itemgetter
from typing import Any, Literal

from .errors import (
    SessionBackendError,
    SessionConfigError,
    SessionConflictError,
    SessionError,
    SessionInterrupted,
    SessionLockTimeout,
    SessionNotLoaded,
    SessionTooLargeError,
)
from .ids import is_well_formed, log_id
from .provider import MySQLSessionProvider
from .store import SaveResult, SessionStore

logger = logging.getLogger("asgi_mysql_session")

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]

SCOPE_KEY = "asgi_mysql_session"
#: Headers that tell caches what to store (NUL-framed for a substring search of the names).
_CACHE_HEADERS = (b"\0cache-control\0", b"\0cdn-cache-control\0", b"\0surrogate-control\0")
_TOKEN = re.compile(r"[!#$%&'*+\-.^_`|~0-9A-Za-z]+")
_EXPIRED = "Thu, 01 Jan 1970 00:00:00 GMT"
_BUSY = b"The session is busy with another request, please retry."


class _NotLoaded(SessionNotLoaded):
    def __init__(self) -> None:
        super().__init__("call `await load_session(request)` first (lazy mode)")


#: Failures that become a clean response (503/409/413) instead of an exception.
_OPERATIONAL = (SessionBackendError, SessionInterrupted, SessionConflictError, SessionTooLargeError)


class _RequestSession:
    """Per-connection state: the id the client sent, the store, and how to save it."""

    __slots__ = ("failure", "middleware", "presented", "store")

    def __init__(self, middleware: SessionMiddleware, presented: str | None) -> None:
        self.middleware = middleware
        self.presented = presented
        provider = middleware.provider
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
        provider = self.middleware.provider
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
        provider = self.middleware.provider
        if not provider.is_open and store.modified:  # lifespan did not run: open on demand
            await provider.open()
        return await store.release()

    def cookie_headers(self, result: SaveResult, scope: Scope) -> list[tuple[bytes, bytes]]:
        """The headers this outcome needs: the id (new, rotated or refreshed) or its removal."""
        store = self.store
        mw = self.middleware
        if not store.loaded:
            return []
        if store.is_new:  # no row: a cookie the client still holds is dead...
            if self.presented is None or store.superseded:  # ...unless a login replaced it
                return []
            if not (store.accessed or store.destroyed):
                return []  # a route that never used the session: cleared when one does
            return [mw.expire_header(scope)]
        if store.session_id == self.presented and (
            result is SaveResult.NOTHING or mw.max_age is None  # nothing for the cookie to follow
        ):
            return []
        # Counted from this request's write when there was one: the Max-Age is then exactly
        # the lifetime it set, even if the clock turned to the next second meanwhile.
        now = store._written_at if result is not SaveResult.NOTHING else mw.provider.now()
        remaining = max(store.expiry - now, 0)
        return [mw.id_header(store.session_id, remaining, scope)]


class SessionMiddleware:
    """Put a MySQL-backed :class:`SessionStore` into ``scope["session"]``.

    ``max_age="deadline"`` (default) makes the cookie's Max-Age follow the server-side
    deadline; an int caps it; ``None`` gives a browser-session cookie. As in Starlette,
    0 or a negative int is sent as the cookie's Max-Age, so browsers drop the cookie at
    once (the row is still written, and ends at its server-side deadline).
    ``partitioned=True`` adds the CHIPS ``partitioned`` attribute (and so ``secure``). ``secure=None``
    sets ``Secure`` on https/wss requests. With ``header_name`` the id travels in that
    request/response header instead of a cookie. ``exclude_paths`` are prefixes that never
    get a session (health checks, static files). With ``lazy=True`` the row is read only by
    ``await load_session(request)``.
    """

    def __init__(
        self,
        app: ASGIApp,
        provider: MySQLSessionProvider,
        *,
        cookie_name: str = "session",
        max_age: int | Literal["deadline"] | None = "deadline",
        path: str = "/",
        domain: str | None = None,
        secure: bool | None = None,
        httponly: bool = True,
        samesite: Literal["lax", "strict", "none"] = "lax",
        header_name: str | None = None,
        partitioned: bool = False,
        exclude_paths: Sequence[str] = (),
        lazy: bool = False,
        error_status: int = 503,
        error_body: bytes = b"Session storage is unavailable, please retry.",
        serialize: bool | Sequence[str] = False,
        lock_timeout: float = 10.0,
        busy_status: int = 409,
    ) -> None:
        self.app = app
        self.provider = provider
        if not _TOKEN.fullmatch(cookie_name):
            raise SessionConfigError(f"invalid cookie name {cookie_name!r}")
        if samesite not in ("lax", "strict", "none"):
            raise SessionConfigError("samesite must be 'lax', 'strict' or 'none'")
        if cookie_name.startswith("__Host-"):
            if domain is not None or path != "/" or secure is False:
                raise SessionConfigError("a __Host- cookie needs path='/', no domain, and Secure")
            secure = True
        if cookie_name.startswith("__Secure-"):
            if secure is False:
                raise SessionConfigError("a __Secure- cookie needs Secure")
            secure = True
        if partitioned:  # CHIPS: browsers take a Partitioned cookie only with Secure
            if secure is False:
                raise SessionConfigError("a partitioned cookie needs Secure")
            secure = True
        if samesite == "none" and secure is False:
            raise SessionConfigError("SameSite=None cookies must be Secure")
        if max_age != "deadline" and max_age is not None and (type(max_age) is not int):
            raise SessionConfigError("max_age must be 'deadline', None or an int")
        if header_name is not None and not _TOKEN.fullmatch(header_name):
            raise SessionConfigError(f"invalid header name {header_name!r}")
        self.cookie_name = cookie_name
        self._cookie_prefix = cookie_name + "="
        self.max_age = max_age
        self.secure = secure
        self.header_name = header_name.lower().encode("latin-1") if header_name else None
        self.exclude_paths = tuple(p.rstrip("/") for p in exclude_paths)
        self._excluded = _prefix_rule(self.exclude_paths) if self.exclude_paths else None
        self.lazy = lazy
        self.error_status = error_status
        self.error_body = error_body
        if isinstance(serialize, bool):
            self.serialize_paths: tuple[str, ...] | None = ("",) if serialize else None
        else:
            self.serialize_paths = tuple(p.rstrip("/") for p in serialize)
        self._serialized_rule = (
            _prefix_rule(self.serialize_paths) if self.serialize_paths is not None else None
        )
        self.lock_timeout = lock_timeout
        self.busy_status = busy_status
        # Starlette's order and spelling: name=value; path=/; Max-Age=N; httponly;
        # samesite=lax; secure; domain=D; partitioned (Secure is decided per request).
        self._path = f"; path={path}"
        self._flags = "; httponly; samesite=" + samesite if httponly else "; samesite=" + samesite
        self._scope_flags = f"; domain={domain}" if domain else ""
        if partitioned:
            self._scope_flags += "; partitioned"
        self._opened_provider = False
        self._warned_cache = False

    # -- ASGI entry point ------------------------------------------------------------

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        kind = scope["type"]
        if kind == "lifespan":
            await self._lifespan(scope, receive, send)
            return
        excluded = self._excluded
        if kind not in ("http", "websocket") or (excluded is not None and _matches(scope["path"], excluded)):
            await self.app(scope, receive, send)
            return
        session = _RequestSession(self, self._presented_id(scope))
        scope["session"] = session.store
        scope[SCOPE_KEY] = session
        presented = session.presented
        if (
            self._serialized_rule is not None
            and presented is not None
            and is_well_formed(presented)
            and _matches(scope["path"], self._serialized_rule)
        ):
            await self._serialized(scope, receive, send, session, presented)
        else:
            await self._handle(scope, receive, send, session)

    async def _serialized(
        self, scope: Scope, receive: Receive, send: Send, session: _RequestSession, presented: str
    ) -> None:
        """Run this request alone among its session's serialized requests (opt-in)."""
        entered = False
        try:
            if not self.provider.is_open:
                await self.provider.open()
            async with self.provider.session_lock(presented, self.lock_timeout):
                entered = True  # locked, or no live session (then nothing is held)
                await self._handle(scope, receive, send, session)
        except (SessionLockTimeout, SessionBackendError) as exc:
            if entered:
                raise
            if scope["type"] != "http":
                await send({"type": "websocket.close", "code": 1013})  # try again later
            elif isinstance(exc, SessionLockTimeout):
                await self._send_error(send, self.busy_status, _BUSY, [])
            else:
                await self._send_error(send, self.error_status, self.error_body, [])

    async def _handle(self, scope: Scope, receive: Receive, send: Send, session: _RequestSession) -> None:
        if session.presented is not None and not self.lazy:
            try:  # noqa: SIM105 - cheaper than contextlib.suppress, and it runs on every request
                await session.load()
            except SessionError:
                pass  # the store raises it on access: routes that don't touch it still work
        if scope["type"] == "http":
            await self._http(scope, receive, send, session)
        else:
            await self._websocket(scope, receive, send, session)

    def _presented_id(self, scope: Scope) -> str | None:
        """The first id in the configured transport; query strings and forms are never read."""
        wanted = self.header_name
        if wanted is not None:
            for name, value in scope["headers"]:
                if name == wanted:
                    return str(value.decode("latin-1").strip())
            return None
        prefix = self._cookie_prefix
        found: str | None = None
        for name, value in scope["headers"]:
            if name != b"cookie":
                continue
            header: str = value.decode("latin-1")
            if prefix not in header:
                continue
            for part in header.split(";"):
                part = part.strip()
                if part.startswith(prefix):
                    candidate = part[len(prefix) :]
                    if is_well_formed(candidate):
                        return candidate
                    found = found or candidate
        return found

    # -- http --------------------------------------------------------------------------

    async def _http(self, scope: Scope, receive: Receive, send: Send, session: _RequestSession) -> None:
        replaced = False
        started = False

        async def send_wrapper(message: Message) -> None:
            nonlocal replaced, started
            if replaced:
                return  # our error response went out instead of the app's
            if message["type"] == "http.response.start":
                started = True
                error = await self._before_headers(scope, message, session)
                if error is not None:
                    replaced = True
                    await self._send_error(send, *error)
                    return
            await send(message)

        try:
            await self.app(scope, receive, send_wrapper)
        except _OPERATIONAL as exc:  # misuse (e.g. SessionNotLoaded) propagates as a bug
            if started:
                raise
            status, body, headers = self._error_for(exc, session, scope)
            await self._send_error(send, status, body, headers)

    async def _before_headers(
        self, scope: Scope, message: Message, session: _RequestSession
    ) -> tuple[int, bytes, list[tuple[bytes, bytes]]] | None:
        """Save, then add the id and caching headers; or say which error to send instead."""
        store = session.store
        headers = list(message.get("headers", ()))
        if message["status"] >= 500:
            result = SaveResult.NOTHING  # a failed request's partial changes are not kept
        else:
            try:
                result = await session.save()
            except (*_OPERATIONAL, TypeError) as exc:
                return self._error_for(exc, session, scope)
        added = session.cookie_headers(result, scope)
        if store.accessed or added:
            headers.append((b"vary", b"Cookie" if self.header_name is None else self.header_name))
        if added:
            headers = self._uncacheable(headers)
            headers.extend(added)
        message["headers"] = headers
        return None

    def _uncacheable(self, headers: list[tuple[bytes, bytes]]) -> list[tuple[bytes, bytes]]:
        """A response that issues or clears an id is never stored by a shared cache.

        Whatever the app said: ``Vary: Cookie`` does not protect visitors who sent no
        cookie, and a shared cache could hand one id to all of them. An app policy that
        already keeps shared caches out (``private`` or ``no-store``) is kept.
        """
        names = b"\0" + b"\0".join(map(itemgetter(0), headers)).lower() + b"\0"  # C calls, no loop
        if b"control\0" not in names:  # none of _CACHE_HEADERS (all end so): one C call
            headers.append((b"cache-control", b"no-store"))
            return headers
        kept: list[tuple[bytes, bytes]] = []
        policy: list[bytes] = []
        others = 0  # CDN-specific headers, which override Cache-Control there
        for name, value in headers:
            lowered = name.lower()
            if lowered == b"cache-control":
                policy.append(value)
            elif b"\0" + lowered + b"\0" in _CACHE_HEADERS:
                others += 1
            else:
                kept.append((name, value))
        if not policy and not others:  # another "...-control" header: nothing to override
            kept.append((b"cache-control", b"no-store"))
            return kept
        directives = {d.strip().split(b"=")[0].lower() for v in policy for d in v.split(b",")}
        if others or not directives & {b"private", b"no-store"}:
            if not self._warned_cache:
                self._warned_cache = True
                logger.warning(
                    "the app's caching headers on a response that sets the session cookie were "
                    "replaced with Cache-Control: no-store (a shared cache must never store a "
                    "session id); logged once"
                )
            kept.append((b"cache-control", b"no-store"))
        else:
            kept.extend((b"cache-control", value) for value in policy)
        return kept

    def _error_for(
        self, exc: BaseException, session: _RequestSession, scope: Scope
    ) -> tuple[int, bytes, list[tuple[bytes, bytes]]]:
        if isinstance(exc, SessionBackendError):
            return self.error_status, self.error_body, []
        if isinstance(exc, SessionInterrupted):
            logger.info("write to ended session %s dropped: %s", log_id(session.store.session_id), exc)
            if exc.superseded:  # a login gave the client a newer cookie: leave it alone
                return 409, b"The session was given a new id meanwhile, please retry.", []
            return 409, b"The session ended before this request finished.", [self.expire_header(scope)]
        if isinstance(exc, SessionConflictError):
            logger.warning("session write gave up: %s", exc)
            return 409, b"The session was changed concurrently, please retry.", []
        if isinstance(exc, SessionTooLargeError):
            logger.warning("session not saved: %s", exc)
            return 413, b"The session is too large.", []
        logger.error("session not saved: %s", exc, exc_info=exc)
        return 500, b"The session could not be saved.", []

    @staticmethod
    async def _send_error(send: Send, status: int, body: bytes, extra: list[tuple[bytes, bytes]]) -> None:
        headers = [
            (b"content-type", b"text/plain; charset=utf-8"),
            (b"content-length", str(len(body)).encode()),
            (b"cache-control", b"no-store"),
            *extra,
        ]
        await send({"type": "http.response.start", "status": status, "headers": headers})
        await send({"type": "http.response.body", "body": body})

    # -- cookies -------------------------------------------------------------------------

    def _is_secure(self, scope: Scope) -> bool:
        if self.secure is not None:
            return self.secure
        return scope.get("scheme") in ("https", "wss")

    def id_header(self, session_id: str, remaining: int, scope: Scope) -> tuple[bytes, bytes]:
        if self.header_name is not None:
            return self.header_name, session_id.encode()
        cookie = f"{self.cookie_name}={session_id}{self._path}"
        if self.max_age == "deadline":
            cookie += f"; Max-Age={remaining}"
        elif self.max_age is not None:
            cookie += f"; Max-Age={min(remaining, self.max_age)}"
        cookie += self._flags
        if self._is_secure(scope):
            cookie += "; secure"
        return b"set-cookie", (cookie + self._scope_flags).encode("latin-1")

    def expire_header(self, scope: Scope) -> tuple[bytes, bytes]:
        if self.header_name is not None:
            return self.header_name, b""
        cookie = f"{self.cookie_name}={self._path}; Max-Age=0; expires={_EXPIRED}{self._flags}"
        if self._is_secure(scope):
            cookie += "; secure"
        return b"set-cookie", (cookie + self._scope_flags).encode("latin-1")

    # -- websocket -----------------------------------------------------------------------

    async def _websocket(self, scope: Scope, receive: Receive, send: Send, session: _RequestSession) -> None:
        """Changes are saved when the socket closes (and by ``save_session`` at any time)."""

        async def send_wrapper(message: Message) -> None:
            if message["type"] == "websocket.close":
                await self._save_quietly(session)
            await send(message)

        try:
            await self.app(scope, receive, send_wrapper)
        finally:
            await self._save_quietly(session)

    @staticmethod
    async def _save_quietly(session: _RequestSession) -> None:
        try:
            await session.save()
        except (SessionError, TypeError) as exc:
            logger.warning("websocket session not saved: %s", exc)

    # -- lifespan --------------------------------------------------------------------------

    async def _lifespan(self, scope: Scope, receive: Receive, send: Send) -> None:
        """Open the provider before the app's own startup; a failure fails the startup.

        It is reported as ``lifespan.startup.failed`` and then raised, as Starlette's router
        does with its own startup errors: the server exits instead of serving 503s, and
        Starlette's ``TestClient`` raises it. (Raising *without* the message first would
        make uvicorn's default ``--lifespan auto`` decide that lifespan is unsupported and
        serve anyway, skipping the app's own startup and shutdown.) Under trio the error
        says that aiomysql needs asyncio.
        """
        startup = await receive()
        first: Message | None = startup
        if startup["type"] == "lifespan.startup" and not self.provider.is_open:
            try:
                await self.provider.open()
            except Exception as exc:
                logger.error("session provider could not open, startup fails: %s", exc)
                await send(
                    {
                        "type": "lifespan.startup.failed",
                        "message": f"asgi_mysql_session: {type(exc).__name__}: {exc}",
                    }
                )
                raise
            self._opened_provider = True

        async def replay_receive() -> Message:
            nonlocal first
            if first is not None:
                message, first = first, None
                return message
            return await receive()

        async def close_send(message: Message) -> None:
            if message["type"] in _LIFESPAN_ENDS and self._opened_provider:
                self._opened_provider = False
                await self.provider.close()
            await send(message)

        await self.app(scope, replay_receive, close_send)


_LIFESPAN_ENDS = ("lifespan.shutdown.complete", "lifespan.shutdown.failed", "lifespan.startup.failed")


def _prefix_rule(prefixes: tuple[str, ...]) -> tuple[frozenset[str], tuple[str, ...]]:
    """Path prefixes on whole segments, as (the paths themselves, what lies below them).

    "" matches everything: every request path starts with "/".
    """
    return frozenset(prefixes), tuple(p + "/" for p in prefixes)


def _matches(path: str, rule: tuple[frozenset[str], tuple[str, ...]]) -> bool:
    """Whether ``path`` is one of the prefixes or below one: two C calls, no Python loop."""
    exact, below = rule
    return path in exact or path.startswith(below)


# -- helpers for apps ----------------------------------------------------------------------


def _session_of(conn: Any) -> _RequestSession:
    scope = conn if isinstance(conn, MutableMapping) else conn.scope
    session = scope.get(SCOPE_KEY)
    if not isinstance(session, _RequestSession):
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
