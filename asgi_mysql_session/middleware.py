"""Pure ASGI middleware: ``scope["session"]`` backed by MySQL, cookies done right.

Like Starlette's own SessionMiddleware it only wraps ``send`` and touches headers on
``http.response.start``; unlike it, the data lives in the database and the cookie holds a
random id. The session is saved *before* the response headers leave, so a client that got
a response can rely on its write, and a failed write becomes a clean error response.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable, MutableMapping, Sequence
from typing import Any, Literal

from .cookies import IdTransport
from .errors import (
    SessionBackendError,
    SessionConflictError,
    SessionError,
    SessionInterrupted,
    SessionLockTimeout,
    SessionTooLargeError,
)
from .ids import is_well_formed, log_id
from .provider import MySQLSessionProvider
from .requests import OPERATIONAL, SCOPE_KEY, RequestSession
from .store import SaveResult

logger = logging.getLogger("asgi_mysql_session")

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]

_BUSY = b"The session is busy with another request, please retry."


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
        # How the id travels (cookie or header) and the caching rules of responses carrying it.
        self._transport = IdTransport(
            cookie_name=cookie_name,
            max_age=max_age,
            path=path,
            domain=domain,
            secure=secure,
            httponly=httponly,
            samesite=samesite,
            header_name=header_name,
            partitioned=partitioned,
        )
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
        self._opened_provider = False

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
        session = RequestSession(self.provider, self._transport, self._transport.presented(scope))
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
        self, scope: Scope, receive: Receive, send: Send, session: RequestSession, presented: str
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

    async def _handle(self, scope: Scope, receive: Receive, send: Send, session: RequestSession) -> None:
        if session.presented is not None and not self.lazy:
            try:  # noqa: SIM105 - cheaper than contextlib.suppress, and it runs on every request
                await session.load()
            except SessionError:
                pass  # the store raises it on access: routes that don't touch it still work
        if scope["type"] == "http":
            await self._http(scope, receive, send, session)
        else:
            await self._websocket(scope, receive, send, session)

    # -- http --------------------------------------------------------------------------

    async def _http(self, scope: Scope, receive: Receive, send: Send, session: RequestSession) -> None:
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
        except OPERATIONAL as exc:  # misuse (e.g. SessionNotLoaded) propagates as a bug
            if started:
                raise
            status, body, headers = self._error_for(exc, session, scope)
            await self._send_error(send, status, body, headers)

    async def _before_headers(
        self, scope: Scope, message: Message, session: RequestSession
    ) -> tuple[int, bytes, list[tuple[bytes, bytes]]] | None:
        """Save, then add the id and caching headers; or say which error to send instead."""
        store = session.store
        headers = list(message.get("headers", ()))
        if message["status"] >= 500:
            result = SaveResult.NOTHING  # a failed request's partial changes are not kept
        else:
            try:
                result = await session.save()
            except (*OPERATIONAL, TypeError) as exc:
                return self._error_for(exc, session, scope)
        added = session.cookie_headers(result, scope)
        if store.accessed or added:
            headers.append((b"vary", self._transport.vary))
        if added:
            headers = self._transport.uncacheable(headers)
            headers.extend(added)
        message["headers"] = headers
        return None

    def _error_for(
        self, exc: BaseException, session: RequestSession, scope: Scope
    ) -> tuple[int, bytes, list[tuple[bytes, bytes]]]:
        if isinstance(exc, SessionBackendError):
            return self.error_status, self.error_body, []
        if isinstance(exc, SessionInterrupted):
            logger.info("write to ended session %s dropped: %s", log_id(session.store.session_id), exc)
            if exc.superseded:  # a login gave the client a newer cookie: leave it alone
                return 409, b"The session was given a new id meanwhile, please retry.", []
            return (
                409,
                b"The session ended before this request finished.",
                [self._transport.expire_header(scope)],
            )
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

    # -- websocket -----------------------------------------------------------------------

    async def _websocket(self, scope: Scope, receive: Receive, send: Send, session: RequestSession) -> None:
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
    async def _save_quietly(session: RequestSession) -> None:
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
