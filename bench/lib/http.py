"""HTTP clients: a keep-alive HTTP/1.1 client on asyncio streams (the soaks' users), one blocking request."""

from __future__ import annotations

import asyncio
import http.client
import time
from collections import defaultdict
from collections.abc import Mapping


def fetch(
    port: int,
    path: str,
    *,
    method: str = "GET",
    headers: Mapping[str, str] | None = None,
    timeout: float = 5.0,
) -> tuple[int, dict[str, str], bytes]:
    """One request to 127.0.0.1:``port`` on a new connection: status, headers (lower-case names), body.

    Raises OSError or http.client.HTTPException when no valid answer came.
    """
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=timeout)
    try:
        conn.request(method, path, headers=dict(headers or {}))
        response = conn.getresponse()
        return response.status, {k.lower(): v for k, v in response.getheaders()}, response.read()
    finally:
        conn.close()


class HTTPError(Exception):
    """The answer was not valid HTTP/1.1 (counted as a connection error)."""


class Browser:
    """One keep-alive HTTP/1.1 connection, used one request at a time, like a browser tab.

    A minimal client on asyncio streams: httpx costs 0.7 ms of CPU per request on this
    2-core machine, and 4 ms with 50 requests in flight on its pool, which would make the
    load generator the bottleneck; this costs about 0.02 ms. Cookies are whatever the
    caller sends. An idle connection is reopened before the server's keep-alive timeout
    could close it, so a connection error is always a real one (and never retried: the
    outcome of a request that got no answer stays unknown).
    """

    def __init__(self, host: str, port: int, idle: float) -> None:
        self.host, self.port, self.idle = host, port, idle
        self.reader: asyncio.StreamReader | None = None
        self.writer: asyncio.StreamWriter | None = None
        self.last_used = 0.0

    def close(self) -> None:
        if self.writer is not None:
            self.writer.transport.abort()
        self.reader = self.writer = None

    async def request(
        self, method: str, path: str, cookie: str | None
    ) -> tuple[int, dict[str, list[str]], bytes]:
        if self.writer is not None and time.monotonic() - self.last_used > self.idle:
            self.close()
        if self.writer is None:
            self.reader, self.writer = await asyncio.open_connection(self.host, self.port)
        reader, writer = self.reader, self.writer
        assert reader is not None
        try:
            head = f"{method} {path} HTTP/1.1\r\nhost: {self.host}:{self.port}\r\n"
            if cookie:
                head += f"cookie: {cookie}\r\n"
            if method == "POST":
                head += "content-length: 0\r\n"
            writer.write(head.encode("latin-1") + b"\r\n")
            raw = await reader.readuntil(b"\r\n\r\n")
            status_line, *header_lines = raw.decode("latin-1").split("\r\n")
            version, _, rest = status_line.partition(" ")
            if not version.startswith("HTTP/1.") or not rest[:3].isdigit():
                raise HTTPError(f"bad status line {status_line[:40]!r}")
            headers: dict[str, list[str]] = defaultdict(list)
            for line in header_lines:
                if line:
                    name, _, value = line.partition(":")
                    headers[name.strip().lower()].append(value.strip())
            if "chunked" in ",".join(headers.get("transfer-encoding", [])).lower():
                body = b""
                while size := int((await reader.readuntil(b"\r\n")).split(b";")[0], 16):
                    body += (await reader.readexactly(size + 2))[:-2]
                await reader.readuntil(b"\r\n")
            else:
                body = await reader.readexactly(int(headers.get("content-length", ["0"])[0]))
        except BaseException:
            self.close()  # never reuse a connection whose state is unknown
            raise
        if "close" in ",".join(headers.get("connection", [])).lower():
            self.close()
        self.last_used = time.monotonic()
        return int(rest[:3]), headers, body
