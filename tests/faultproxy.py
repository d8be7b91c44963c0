"""A small asyncio TCP proxy that injects network faults between a client and a server.

In tests, run it in the test's own event loop::

    async with FaultProxy("127.0.0.1", 3306) as proxy:
        dsn = f"mysql://root@127.0.0.1:{proxy.port}/test"
        proxy.stall_reads(True)   # server -> client data stops flowing
        proxy.heal()              # every fault off again

It listens on 127.0.0.1 only, on an ephemeral port unless told otherwise. Faults:

``drop_all()``
    Abort every open client connection and its upstream connection now (one shot).
``refuse(on)``
    New connections are accepted and closed at once, before anything is forwarded.
``blackhole(on)``
    New connections are accepted but never forwarded nor answered: the "server accepts
    the TCP connection but never sends its handshake" case. Such a connection stays
    silent until the client closes it, ``drop_all()`` or the proxy stops; healing does
    not revive it (it never reached the server).
``latency(seconds)``
    Every chunk forwarded in either direction, on every connection, waits ``seconds``
    first (0 turns it off).
``stall_reads(on)``
    Server -> client data is held back on every connection (sockets stay open, the
    data is kept and delivered once the stall ends); client -> server still flows.
``rewrite(old, new)``
    Client -> server data has ``old`` replaced by ``new`` (of the same length, so the
    protocol's packet lengths still hold): the server runs another statement than the one
    sent, e.g. one that answers what another kind of server would.
``heal()``
    All of the above off, and every trigger and rewrite removed (``drop_all`` has nothing
    to undo).

To hit one exact moment, ``on_request(pattern, action)`` runs ``action()`` (say
``lambda: proxy.stall_reads(True)``) as soon as a client -> server chunk containing
``pattern`` (e.g. ``b"DELETE FROM"``) reaches the proxy, before it is forwarded: the fault
is in place before the server even sees the statement. The pattern must lie within one
chunk, which holds for a short statement sent in one write.

``open_connections`` counts client connections the proxy still holds open, so a test
can tell whether the client closed a socket it gave up on; ``accepted``, ``bytes_up``
and ``bytes_down`` are running totals.

As a separate process (for a soak script)::

    python tests/faultproxy.py --listen 127.0.0.1:0 --target 127.0.0.1:3306 --control 127.0.0.1:0

prints one line ``listening 127.0.0.1:PORT control 127.0.0.1:CPORT`` on stdout once both
ports are bound, then serves until SIGINT/SIGTERM. The control port takes one command per
line and answers one line (``ok ...`` or ``error ...``)::

    drop | refuse on|off | blackhole on|off | latency SECONDS | stall on|off | heal | status | quit

e.g. ``python tests/faultproxy.py --send 127.0.0.1:CPORT "stall on"`` (or any line-based
client such as ``nc``). ``status`` answers ``ok`` followed by ``name=value`` pairs.
Both ports are bound to 127.0.0.1 only.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import signal
import sys
from collections.abc import Callable
from types import TracebackType

LOOPBACK = "127.0.0.1"
_CHUNK = 65536


class _Pair:
    """One client connection and (unless refused or blackholed) its upstream connection."""

    def __init__(self, client: asyncio.StreamWriter) -> None:
        self.client = client
        self.upstream: asyncio.StreamWriter | None = None

    def abort(self) -> None:
        for writer in (self.client, self.upstream):
            if writer is not None:
                writer.transport.abort()


class FaultProxy:
    """A TCP proxy to ``target_host:target_port`` whose faults a test switches on and off."""

    def __init__(
        self,
        target_host: str,
        target_port: int,
        *,
        listen_port: int = 0,
        connect_timeout: float = 5.0,
    ) -> None:
        self.target_host = target_host
        self.target_port = target_port
        self.listen_port = listen_port
        self.connect_timeout = connect_timeout
        self._server: asyncio.Server | None = None
        self._links: set[_Pair] = set()
        self._tasks: set[asyncio.Task[None]] = set()
        self._refuse = False
        self._blackhole = False
        self._latency = 0.0
        self._flowing: asyncio.Event | None = None  # set = server -> client data flows
        self._triggers: list[tuple[bytes, Callable[[], object], bool]] = []
        self._rewrites: list[tuple[bytes, bytes]] = []
        #: Client connections accepted since start.
        self.accepted = 0
        #: Bytes forwarded client -> server and server -> client since start.
        self.bytes_up = 0
        self.bytes_down = 0

    # -- lifecycle -------------------------------------------------------------------

    async def start(self) -> None:
        if self._server is not None:
            raise RuntimeError("the proxy is already running")
        self._flowing = asyncio.Event()
        self._flowing.set()
        self._server = await asyncio.start_server(self._accept, LOOPBACK, self.listen_port)

    async def stop(self) -> None:
        """Stop listening, abort every connection and wait for every task of the proxy."""
        server, self._server = self._server, None
        if server is not None:
            server.close()
        while self._tasks:  # again if a connection accepted just before close() got a task
            self.drop_all()
            tasks = list(self._tasks)
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
        if server is not None:
            await server.wait_closed()

    async def __aenter__(self) -> FaultProxy:
        await self.start()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.stop()

    @property
    def port(self) -> int:
        """The port the proxy listens on (on 127.0.0.1)."""
        if self._server is None:
            raise RuntimeError("the proxy is not running")
        port: int = self._server.sockets[0].getsockname()[1]
        return port

    @property
    def open_connections(self) -> int:
        """Client connections currently held open by the proxy."""
        return len(self._links)

    # -- faults ------------------------------------------------------------------------

    def drop_all(self) -> None:
        """Abort every open client and upstream connection now."""
        for link in list(self._links):
            link.abort()

    def refuse(self, on: bool = True) -> None:
        self._refuse = on

    def blackhole(self, on: bool = True) -> None:
        self._blackhole = on

    def latency(self, seconds: float) -> None:
        if seconds < 0:
            raise ValueError("latency must be >= 0")
        self._latency = seconds

    def stall_reads(self, on: bool = True) -> None:
        assert self._flowing is not None, "the proxy is not running"
        if on:
            self._flowing.clear()
        else:
            self._flowing.set()

    def on_request(self, pattern: bytes, action: Callable[[], object], *, once: bool = True) -> None:
        """Run ``action()`` when a client -> server chunk containing ``pattern`` arrives.

        It runs before the chunk is forwarded (and before any latency). With ``once`` the
        trigger is removed when it fires; otherwise it fires for every matching chunk.
        """
        if not pattern:
            raise ValueError("the pattern must not be empty")
        self._triggers.append((pattern, action, once))

    def _fire(self, data: bytes) -> None:
        for trigger in list(self._triggers):
            pattern, action, once = trigger
            if pattern in data:
                if once:
                    self._triggers.remove(trigger)
                action()

    def rewrite(self, old: bytes, new: bytes) -> None:
        """Replace ``old`` by ``new`` in every client -> server chunk from now on (within one
        chunk, as for ``on_request``); the two must have the same length."""
        if not old or len(old) != len(new):
            raise ValueError("a rewrite replaces a non-empty pattern by one of the same length")
        self._rewrites.append((old, new))

    def heal(self) -> None:
        """Every fault, trigger and rewrite off; connections that are still open carry on."""
        self._triggers.clear()
        self._rewrites.clear()
        self._refuse = False
        self._blackhole = False
        self._latency = 0.0
        if self._flowing is not None:
            self._flowing.set()

    def status(self) -> dict[str, object]:
        return {
            "port": self.port,
            "refuse": self._refuse,
            "blackhole": self._blackhole,
            "latency": self._latency,
            "stall": self._flowing is not None and not self._flowing.is_set(),
            "open": self.open_connections,
            "accepted": self.accepted,
            "bytes_up": self.bytes_up,
            "bytes_down": self.bytes_down,
        }

    # -- forwarding --------------------------------------------------------------------

    def _accept(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        # Each connection is served by a task the proxy owns (and may cancel on stop).
        task = asyncio.get_running_loop().create_task(self._serve(reader, writer))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        link = _Pair(writer)
        self._links.add(link)
        self.accepted += 1
        try:
            if self._refuse or self._server is None:  # refusing, or stopping
                return
            if self._blackhole:
                while await reader.read(_CHUNK):  # swallow whatever comes, answer nothing
                    pass
                return
            try:
                up_reader, up_writer = await asyncio.wait_for(
                    asyncio.open_connection(self.target_host, self.target_port), self.connect_timeout
                )
            except (TimeoutError, OSError):
                return
            link.upstream = up_writer
            pumps = [
                asyncio.ensure_future(self._pump(reader, up_writer, upstream=True)),
                asyncio.ensure_future(self._pump(up_reader, writer, upstream=False)),
            ]
            try:
                await asyncio.wait(pumps, return_when=asyncio.FIRST_COMPLETED)
            finally:
                for pump in pumps:
                    pump.cancel()
                await asyncio.gather(*pumps, return_exceptions=True)
        except (OSError, asyncio.IncompleteReadError):
            pass
        finally:
            self._links.discard(link)
            link.abort()

    async def _pump(self, src: asyncio.StreamReader, dst: asyncio.StreamWriter, *, upstream: bool) -> None:
        assert self._flowing is not None
        with contextlib.suppress(OSError):
            while True:
                data = await src.read(_CHUNK)
                if not data:
                    return
                if upstream and self._triggers:
                    self._fire(data)
                if upstream and self._rewrites:
                    for old, new in self._rewrites:
                        data = data.replace(old, new)
                if self._latency:
                    await asyncio.sleep(self._latency)
                if not upstream:
                    await self._flowing.wait()
                if dst.is_closing():
                    return
                dst.write(data)
                await dst.drain()
                if upstream:
                    self.bytes_up += len(data)
                else:
                    self.bytes_down += len(data)


# -- the separate-process interface ------------------------------------------------------


def _address(text: str) -> tuple[str, int]:
    host, sep, port = text.rpartition(":")
    if not sep or not port.isdigit():
        raise argparse.ArgumentTypeError(f"expected HOST:PORT, got {text!r}")
    return host or LOOPBACK, int(port)


def _loopback(text: str) -> tuple[str, int]:
    host, port = _address(text)
    if host != LOOPBACK:
        raise argparse.ArgumentTypeError("the proxy binds to 127.0.0.1 only")
    return host, port


def _switch(word: str) -> bool:
    if word not in ("on", "off"):
        raise ValueError("expected on or off")
    return word == "on"


def run_command(proxy: FaultProxy, line: str) -> str:
    """Apply one control command to ``proxy``; returns the one-line answer."""
    words = line.split()
    if not words:
        return "error empty command"
    name, args = words[0].lower(), words[1:]
    try:
        if name == "drop" and not args:
            proxy.drop_all()
        elif name == "refuse" and len(args) == 1:
            proxy.refuse(_switch(args[0]))
        elif name == "blackhole" and len(args) == 1:
            proxy.blackhole(_switch(args[0]))
        elif name == "stall" and len(args) == 1:
            proxy.stall_reads(_switch(args[0]))
        elif name == "latency" and len(args) == 1:
            proxy.latency(float(args[0]))
        elif name == "heal" and not args:
            proxy.heal()
        elif name == "status" and not args:
            return "ok " + " ".join(f"{k}={v}" for k, v in proxy.status().items())
        else:
            return f"error unknown command {line.strip()!r}"
    except ValueError as exc:
        return f"error {exc}"
    return "ok"


async def _control(proxy: FaultProxy, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    try:
        while line := (await reader.readline()).decode(errors="replace").strip():
            if line.lower() == "quit":
                break
            writer.write(run_command(proxy, line).encode() + b"\n")
            await writer.drain()
    except (OSError, asyncio.IncompleteReadError):
        pass
    finally:
        writer.close()


async def serve(listen: tuple[str, int], target: tuple[str, int], control: tuple[str, int]) -> None:
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    async with FaultProxy(target[0], target[1], listen_port=listen[1]) as proxy:
        clients: set[asyncio.Task[None]] = set()

        def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            task = loop.create_task(_control(proxy, reader, writer))
            clients.add(task)
            task.add_done_callback(clients.discard)

        server = await asyncio.start_server(handle, LOOPBACK, control[1])
        try:
            control_port = server.sockets[0].getsockname()[1]
            print(f"listening {LOOPBACK}:{proxy.port} control {LOOPBACK}:{control_port}", flush=True)
            await stop.wait()
        finally:
            server.close()
            for task in list(clients):
                task.cancel()
            await asyncio.gather(*clients, return_exceptions=True)
            await server.wait_closed()


def send(control: tuple[str, int], command: str, timeout: float = 5.0) -> str:
    """Send one command to a running proxy's control port; returns its answer."""
    import socket

    with socket.create_connection(control, timeout=timeout) as sock:
        sock.sendall(command.encode() + b"\nquit\n")
        answer = sock.makefile("rb").readline().decode().strip()
    return answer


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="TCP fault-injection proxy (see the module docstring)")
    parser.add_argument("--listen", type=_loopback, default=(LOOPBACK, 0), help="127.0.0.1:PORT (0: any)")
    parser.add_argument("--target", type=_address, help="HOST:PORT to forward to")
    parser.add_argument("--control", type=_loopback, default=(LOOPBACK, 0), help="127.0.0.1:PORT (0: any)")
    parser.add_argument("--send", nargs=2, metavar=("CONTROL", "COMMAND"), help="send one command and exit")
    args = parser.parse_args(argv)
    if args.send:
        answer = send(_address(args.send[0]), args.send[1])
        print(answer)
        return 0 if answer.startswith("ok") else 1
    if args.target is None:
        parser.error("--target is required")
    asyncio.run(serve(args.listen, args.target, args.control))
    return 0


if __name__ == "__main__":
    sys.exit(main())
