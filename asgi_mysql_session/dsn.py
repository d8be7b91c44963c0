"""Parsing of ``mysql://user:pass@host:port[,host:port...]/db?option=value`` DSNs."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any
from urllib.parse import parse_qsl, unquote, urlsplit

from .errors import SessionConfigError


@dataclass(frozen=True)
class DSN:
    host: str = "127.0.0.1"
    port: int = 3306
    user: str = "root"
    password: str = ""
    database: str = ""
    unix_socket: str | None = None
    pool_min: int = 1
    pool_max: int = 10
    connect_timeout: float = 5.0
    timeout: float | None = None
    pool_recycle: int = 3600
    #: Every host as (host, port), in the order listed; the first is ``host``/``port``.
    hosts: tuple[tuple[str, int], ...] = ()
    #: ``first``: new connections go to the first healthy host listed; ``random``: spread.
    host_order: str = "first"

    def __post_init__(self) -> None:
        if not self.hosts:
            object.__setattr__(self, "hosts", ((self.host, self.port),))

    def pymysql_args(self) -> dict[str, Any]:
        """Where to connect and as whom, as ``pymysql.connect`` takes it.

        For the synchronous side doors beside the provider (scripts, the bench, tests), so
        that every one of them reads a DSN the way the provider does.
        """
        args: dict[str, Any] = {
            "host": self.host,
            "port": self.port,
            "user": self.user,
            "password": self.password,
            "database": self.database,
        }
        if self.unix_socket:
            args["unix_socket"] = self.unix_socket
        return args

    def redacted(self) -> str:
        """For messages and logs: never the password."""
        where = self.unix_socket or ",".join(host_label(host, port) for host, port in self.hosts)
        return f"mysql://{self.user}@{where}/{self.database}"


def host_label(host: str, port: int) -> str:
    """``host:port`` for messages, an IPv6 address in brackets."""
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


_INT_OPTIONS = {"pool_min", "pool_max", "pool_recycle"}
_FLOAT_OPTIONS = {"connect_timeout", "timeout"}
_HOST_ORDERS = ("first", "random")


_ENCODE_HINT = (
    "if the password holds any of @ : / ? # % or a space, percent-encode it, e.g. "
    "urllib.parse.quote(password, safe='') turns 'pa#ss' into 'pa%23ss'"
)


def _split_hosts(netloc: str) -> tuple[str | None, str | None, tuple[tuple[str, int], ...]]:
    """``user:pass@h1:p1,h2,[::1]:p3`` into (user, password, hosts), each port defaulting to 3306.

    Messages never quote the text: with an unescaped ``#``, ``/`` or ``?`` in the password,
    pieces of it land here as a host or a port.
    """
    userinfo, at, hostlist = netloc.rpartition("@")
    user = password = None
    if at:
        user, colon, secret = userinfo.partition(":")
        password = secret if colon else None
    hosts: list[tuple[str, int]] = []
    for item in hostlist.split(",") if hostlist else []:
        if item.startswith("["):
            host, bracket, rest = item[1:].partition("]")
            if not bracket or not host or (rest and not rest.startswith(":")):
                raise SessionConfigError(f"invalid MySQL DSN: a host in brackets is wrong; {_ENCODE_HINT}")
            port_text = rest[1:] if rest else ""
        else:
            host, _, port_text = item.partition(":")
            if ":" in port_text or "[" in item or "]" in item:
                raise SessionConfigError(
                    f"invalid MySQL DSN: write an IPv6 host in brackets, as [::1]:3306; {_ENCODE_HINT}"
                )
        if not host:
            raise SessionConfigError(f"invalid MySQL DSN: a host in the list is empty; {_ENCODE_HINT}")
        if port_text and not (port_text.isascii() and port_text.isdigit() and 0 < int(port_text) < 65536):
            raise SessionConfigError(f"invalid MySQL DSN: the port is not a number; {_ENCODE_HINT}")
        hosts.append((unquote(host).lower(), int(port_text) if port_text else 3306))
    return user, password, tuple(hosts)


def parse_dsn(dsn: str) -> DSN:
    """Parse a DSN; query options: pool_min, pool_max, pool_recycle, connect_timeout, timeout,
    unix_socket, host_order (``first`` or ``random``).

    Several hosts are listed with commas: ``mysql://user:pw@db1:3306,db2,db3:3307/sessions``.
    No message quotes the DSN's text: a password with an unescaped ``#``, ``/`` or ``?`` ends
    up in the host list, port, path, query or fragment, and would be echoed from there.
    """
    try:
        parts = urlsplit(dsn)
    except ValueError:
        raise SessionConfigError(f"invalid MySQL DSN: the host or port is wrong; {_ENCODE_HINT}") from None
    if parts.fragment or "#" in dsn:
        raise SessionConfigError(f"invalid MySQL DSN: it contains '#'; {_ENCODE_HINT}")
    if "@" in parts.path or "@" in parts.query:
        raise SessionConfigError(f"invalid MySQL DSN: '@' after the host; {_ENCODE_HINT}")
    if parts.scheme not in ("mysql", "mariadb", "mysql+aiomysql"):
        shown = parts.scheme if parts.scheme.isalpha() and len(parts.scheme) <= 16 else "something else"
        raise SessionConfigError(f"invalid MySQL DSN: the scheme must be mysql://, not {shown}")
    user, password, hosts = _split_hosts(parts.netloc)
    database = unquote(parts.path.lstrip("/"))
    if not database or "/" in database:
        raise SessionConfigError("invalid MySQL DSN: it must name a database, as mysql://host/db")
    options: dict[str, object] = {}
    for name, value in parse_qsl(parts.query, keep_blank_values=True):
        if name == "unix_socket":
            options[name] = value
            continue
        if name == "host_order":
            if value not in _HOST_ORDERS:
                raise SessionConfigError("invalid MySQL DSN: host_order must be first or random")
            options[name] = value
            continue
        if name not in _INT_OPTIONS and name not in _FLOAT_OPTIONS:
            # Safe to name: with no '@' after the host, no part of a password reached the query.
            shown = repr(name) if name.isidentifier() and len(name) <= 32 else "an option"
            known = ", ".join(sorted(_INT_OPTIONS | _FLOAT_OPTIONS | {"unix_socket", "host_order"}))
            raise SessionConfigError(f"invalid MySQL DSN: unknown option {shown} (known: {known})")
        try:
            options[name] = int(value) if name in _INT_OPTIONS else float(value)
        except ValueError:
            raise SessionConfigError(f"invalid MySQL DSN: option {name} is not a number") from None
    if not hosts:
        hosts = (("127.0.0.1", 3306),)
    if options.get("unix_socket") and len(hosts) > 1:
        raise SessionConfigError("invalid MySQL DSN: unix_socket takes one host, not a list")
    result = DSN(
        host=hosts[0][0],
        port=hosts[0][1],
        user=unquote(user) if user else "root",
        password=unquote(password) if password else "",
        database=database,
        hosts=hosts,
        **options,  # type: ignore[arg-type]
    )
    if not 0 <= result.pool_min <= result.pool_max or result.pool_max < 1:
        raise SessionConfigError("invalid MySQL DSN: need 0 <= pool_min <= pool_max and pool_max >= 1")
    if result.connect_timeout <= 0:
        raise SessionConfigError("invalid MySQL DSN: connect_timeout must be positive")
    return result
