"""Drive an ASGI app in the test's own event loop: lifespan, HTTP (httpx) and WebSocket.

What ``with starlette.testclient.TestClient(app)`` did, without it: Starlette >= 1.10
deprecates its TestClient on ``httpx`` (it wants ``httpx2``), and httpx's ``ASGITransport``
runs neither the lifespan nor WebSockets. So :func:`serve` runs the lifespan around an
``httpx.AsyncClient`` on ``ASGITransport``, and :func:`websocket_connect` speaks the ASGI
WebSocket protocol to the app directly. Everything runs in the test's loop (no portal
thread), so providers opened by fixtures and by the app's lifespan share one loop.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import httpx
from starlette.types import ASGIApp, Message

BASE_URL = "http://testserver"
#: Bound on every wait for the app, so a hung app fails its test instead of the run.
TIMEOUT = 30.0


class _Channel:
    """The app running as a task, with a queue each way."""

    def __init__(self, app: ASGIApp, scope: dict[str, Any]) -> None:
        self.to_app: asyncio.Queue[Message] = asyncio.Queue()
        self.from_app: asyncio.Queue[Message] = asyncio.Queue()
        self.task = asyncio.create_task(app(scope, self.to_app.get, self.from_app.put))

    async def send(self, message: Message) -> None:
        await self.to_app.put(message)

    async def receive(self) -> Message:
        """The app's next message; the app's exception if it ends (or fails) first."""
        if self.from_app.empty() and not self.task.done():
            getter = asyncio.ensure_future(self.from_app.get())
            done, _ = await asyncio.wait(
                {getter, self.task}, timeout=TIMEOUT, return_when=asyncio.FIRST_COMPLETED
            )
            if getter in done:
                return getter.result()
            getter.cancel()
            if not done:
                raise TimeoutError(f"the app sent nothing in {TIMEOUT:g}s")
        if not self.from_app.empty():
            return self.from_app.get_nowait()
        self.task.result()  # raises what the app raised
        raise AssertionError("the app returned without sending the expected message")

    async def finish(self) -> None:
        await asyncio.wait_for(self.task, TIMEOUT)


@asynccontextmanager
async def lifespan(app: ASGIApp) -> AsyncIterator[None]:
    """Startup before the block, shutdown after it; a failed startup or shutdown raises."""
    scope = {"type": "lifespan", "asgi": {"version": "3.0", "spec_version": "2.0"}, "state": {}}
    channel = _Channel(app, scope)
    await channel.send({"type": "lifespan.startup"})
    started = await channel.receive()
    if started["type"] != "lifespan.startup.complete":
        # The app then raises its error, as Starlette's router does: collect it.
        await asyncio.wait([channel.task], timeout=TIMEOUT)
        if channel.task.done() and not channel.task.cancelled():
            channel.task.exception()
        raise RuntimeError(f"lifespan startup failed: {started.get('message', started)}")
    try:
        yield
    finally:
        await channel.send({"type": "lifespan.shutdown"})
        stopped = await channel.receive()
        await channel.finish()
        if stopped["type"] != "lifespan.shutdown.complete":
            raise RuntimeError(f"lifespan shutdown failed: {stopped.get('message', stopped)}")


@asynccontextmanager
async def serve(app: ASGIApp, base_url: str = BASE_URL) -> AsyncIterator[httpx.AsyncClient]:
    """An HTTP client of ``app`` with the app's lifespan running, like ``with TestClient(app)``."""
    async with (
        lifespan(app),
        httpx.AsyncClient(  # follows redirects, as TestClient did
            transport=httpx.ASGITransport(app=app), base_url=base_url, follow_redirects=True
        ) as http,
    ):
        yield http


class WebSocketSession:
    """One WebSocket connection to the app (text frames only, what the tests use)."""

    def __init__(self, app: ASGIApp, path: str, headers: list[tuple[bytes, bytes]]) -> None:
        self.app = app
        self.scope: dict[str, Any] = {
            "type": "websocket",
            "asgi": {"version": "3.0"},
            "http_version": "1.1",
            "scheme": "ws",
            "server": ("testserver", 80),
            "client": ("testclient", 50000),
            "root_path": "",
            "path": path,
            "raw_path": path.encode(),
            "query_string": b"",
            "headers": [(b"host", b"testserver"), *headers],
            "subprotocols": [],
            "state": {},
        }
        self.channel: _Channel | None = None

    async def __aenter__(self) -> WebSocketSession:
        self.channel = _Channel(self.app, self.scope)
        await self.channel.send({"type": "websocket.connect"})
        accepted = await self.channel.receive()
        if accepted["type"] != "websocket.accept":
            raise AssertionError(f"websocket not accepted: {accepted}")
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        assert self.channel is not None
        await self.channel.send({"type": "websocket.disconnect", "code": 1000})
        await self.channel.finish()  # the app's close handling (e.g. saving the session) is done

    async def send_text(self, text: str) -> None:
        assert self.channel is not None
        await self.channel.send({"type": "websocket.receive", "text": text})

    async def receive_text(self) -> str:
        assert self.channel is not None
        message = await self.channel.receive()
        if message["type"] != "websocket.send" or message.get("text") is None:
            raise AssertionError(f"expected a text frame, got {message}")
        return str(message["text"])


def websocket_connect(http: httpx.AsyncClient, path: str) -> WebSocketSession:
    """A WebSocket to the app behind ``http`` (from :func:`serve`), sending its cookies."""
    transport = http._transport
    assert isinstance(transport, httpx.ASGITransport)
    cookie = "; ".join(f"{name}={value}" for name, value in http.cookies.items())
    headers = [(b"cookie", cookie.encode())] if cookie else []
    return WebSocketSession(transport.app, path, headers)
