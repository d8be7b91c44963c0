"""Parsing of ``mysql://user:pass@host:port/db?option=value`` DSNs."""

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
        where = self.unix_socket or f"{self.host}:{self.port}"
        return f"mysql://{self.user}@{where}/{self.database}"


_INT_OPTIONS = {"pool_min", "pool_max", "pool_recycle"}
_FLOAT_OPTIONS = {"connect_timeout", "timeout"}


_ENCODE_HINT = (
    "if the password holds any of @ : / ? # % or a space, percent-encode it, e.g. "
    "urllib.parse.quote(password, safe='') turns 'pa#ss' into 'pa%23ss'"
)


def parse_dsn(dsn: str) -> DSN:
    """Parse a DSN; query options: pool_min, pool_max, pool_recycle, connect_timeout, timeout, unix_socket.

    No message quotes the DSN's text: a password with an unescaped ``#``, ``/`` or ``?`` ends
    up in the port, path, query or fragment, and would be echoed from there.
    """
    try:
        parts = urlsplit(dsn)
        port = parts.port
    except ValueError:
        raise SessionConfigError(f"invalid MySQL DSN: the port is not a number; {_ENCODE_HINT}") from None
    if parts.fragment or "#" in dsn:
        raise SessionConfigError(f"invalid MySQL DSN: it contains '#'; {_ENCODE_HINT}")
    if "@" in parts.path or "@" in parts.query:
        raise SessionConfigError(f"invalid MySQL DSN: '@' after the host; {_ENCODE_HINT}")
    if parts.scheme not in ("mysql", "mariadb", "mysql+aiomysql"):
        shown = parts.scheme if parts.scheme.isalpha() and len(parts.scheme) <= 16 else "something else"
        raise SessionConfigError(f"invalid MySQL DSN: the scheme must be mysql://, not {shown}")
    database = unquote(parts.path.lstrip("/"))
    if not database or "/" in database:
        raise SessionConfigError("invalid MySQL DSN: it must name a database, as mysql://host/db")
    options: dict[str, object] = {}
    for name, value in parse_qsl(parts.query, keep_blank_values=True):
        if name == "unix_socket":
            options[name] = value
            continue
        if name not in _INT_OPTIONS and name not in _FLOAT_OPTIONS:
            # Safe to name: with no '@' after the host, no part of a password reached the query.
            shown = repr(name) if name.isidentifier() and len(name) <= 32 else "an option"
            known = ", ".join(sorted(_INT_OPTIONS | _FLOAT_OPTIONS | {"unix_socket"}))
            raise SessionConfigError(f"invalid MySQL DSN: unknown option {shown} (known: {known})")
        try:
            options[name] = int(value) if name in _INT_OPTIONS else float(value)
        except ValueError:
            raise SessionConfigError(f"invalid MySQL DSN: option {name} is not a number") from None
    result = DSN(
        host=parts.hostname or "127.0.0.1",
        port=port or 3306,
        user=unquote(parts.username) if parts.username else "root",
        password=unquote(parts.password) if parts.password else "",
        database=database,
        **options,  # type: ignore[arg-type]
    )
    if not 0 <= result.pool_min <= result.pool_max or result.pool_max < 1:
        raise SessionConfigError("invalid MySQL DSN: need 0 <= pool_min <= pool_max and pool_max >= 1")
    return result
