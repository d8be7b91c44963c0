"""Several database hosts: where new connections go, and which hosts are down for how long.

New connections go to the first healthy host in the listed order (or one at random with
``host_order="random"``). A host that refuses, does not answer within ``connect_timeout``,
or is a Galera node that is not ready is marked down for a backoff (1 s, growing to 5 s)
and skipped meanwhile; connections to it coming back are closed rather than kept. When the
backoff has passed one new connection tries it again (a probe); in listed order, once an
earlier host is usable again the connections to later hosts are closed as they come back,
so the pool moves back to it. Hosts in their backoff are still tried, last, when every
other host failed.
"""

from __future__ import annotations

import asyncio
import logging
import random
from collections.abc import Callable, Sequence
from typing import Any

from . import driver
from .driver import Connection
from .dsn import host_label

logger = logging.getLogger("asgi_mysql_session")

#: A host that failed is skipped for this long, doubled on every failed retry up to the cap.
BACKOFF_FIRST = 1.0
BACKOFF_MAX = 5.0
#: Our own attribute on a pooled connection: the host it was opened to.
_HOST = "_asgi_mysql_session_host"


class NoHostAvailable(OSError):
    """Every host of the list refused, timed out or was not ready (the reasons, per host)."""


class NodeNotReady(OSError):
    """A Galera node that accepted the connection but is not ready (wsrep_ready OFF)."""


class Host:
    """One host of the list and what the pool knows about it."""

    __slots__ = ("down", "failures", "host", "index", "label", "port", "probing", "retry_at", "wsrep")

    def __init__(self, index: int, host: str, port: int) -> None:
        self.index = index
        self.host = host
        self.port = port
        self.label = host_label(host, port)
        self.down = False
        self.failures = 0
        self.retry_at = 0.0
        self.probing = False  # a new connection is trying it again after its backoff
        self.wsrep: bool | None = None  # a Galera node? learnt on the first connection

    def eligible(self, now: float) -> bool:
        return not self.down or (self.retry_at <= now and not self.probing)


def _text(value: Any) -> str:
    return value.decode() if isinstance(value, (bytes, bytearray)) else str(value)


async def check_ready(conn: Connection, host: Host) -> None:
    """On a Galera node (learnt once per host), check that it is ready.

    A server without wsrep costs one ``SHOW VARIABLES`` on the first connection to it
    (and again after it was down), never anything per request.
    """
    if host.wsrep is None:
        await driver.send(conn, "SHOW VARIABLES LIKE 'wsrep_on'")
        rows = driver.rows(conn)
        host.wsrep = bool(rows) and _text(rows[0][1]).upper() == "ON"
    if host.wsrep:
        await driver.send(conn, "SHOW STATUS LIKE 'wsrep_ready'")
        rows = driver.rows(conn)
        if not rows or _text(rows[0][1]).upper() != "ON":
            raise NodeNotReady("the Galera node is not ready (wsrep_ready OFF)")


class Hosts:
    """The hosts of one pool, in the listed order."""

    def __init__(
        self, hosts: Sequence[tuple[str, int]], *, in_order: bool, on_down: Callable[[str], None] | None
    ) -> None:
        self.hosts = [Host(i, host, port) for i, (host, port) in enumerate(hosts)]
        self.in_order = in_order
        self._on_down = on_down

    def candidates(self, now: float) -> list[Host]:
        """Usable hosts first (listed order, or shuffled), then those in backoff, soonest first."""
        usable = [h for h in self.hosts if h.eligible(now)]
        if not self.in_order:
            random.shuffle(usable)
        resting = sorted((h for h in self.hosts if not h.eligible(now)), key=lambda h: h.retry_at)
        return usable + resting

    @staticmethod
    def bind(conn: Connection, host: Host) -> None:
        setattr(conn, _HOST, host)

    @staticmethod
    def of(conn: Connection) -> Host | None:
        host: Host | None = getattr(conn, _HOST, None)
        return host

    def failed(self, host: Host, reason: str) -> bool:
        """Mark a host down (logged once per change) or, if its retry failed, lengthen its
        backoff. True when it just went down (its idle connections should be closed)."""
        now = asyncio.get_running_loop().time()
        host.probing = False
        if host.down:
            if host.retry_at <= now:  # it was tried again after its backoff and failed again
                host.failures += 1
                host.retry_at = now + min(BACKOFF_MAX, BACKOFF_FIRST * 2 ** (host.failures - 1))
            return False
        host.down = True
        host.failures = 1
        host.retry_at = now + BACKOFF_FIRST
        host.wsrep = None  # it may come back as something else
        logger.warning(
            "database host %s is down (%s); new connections go to the other hosts, it is retried "
            "after a backoff of %g-%gs",
            host.label,
            reason,
            BACKOFF_FIRST,
            BACKOFF_MAX,
        )
        if self._on_down is not None:
            self._on_down(host.label)
        return True

    @staticmethod
    def up(host: Host) -> None:
        host.probing = False
        if host.down:
            host.down = False
            host.failures = 0
            logger.warning("database host %s is up again; new connections may use it", host.label)

    def keep(self, conn: Connection) -> bool:
        """Whether a connection coming back stays pooled.

        Not if its host is down; in listed order, not if an earlier host is usable again.
        """
        host = self.of(conn)
        if host is None:
            return True
        if host.down:
            return False
        if self.in_order and host.index:
            now = asyncio.get_running_loop().time()
            return not any(h.eligible(now) for h in self.hosts[: host.index])
        return True

    def states(self) -> dict[str, bool]:
        """Each host's label and whether it is considered up."""
        return {h.label: not h.down for h in self.hosts}
