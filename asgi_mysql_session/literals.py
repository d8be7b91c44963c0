"""SQL literals for the values the package binds, written without the driver.

Every statement's arguments are rendered here instead of by aiomysql's ``Connection.escape``.
aiomysql 0.2-0.3.2 write bytes with ``pymysql.converters.escape_bytes_prefixed``, which PyMySQL
1.2 replaced by a string placeholder (calling it fails with "'str' object is not callable"),
and which escapes with backslashes even when the server's ``NO_BACKSLASH_ESCAPES`` makes them
plain characters (bytes holding a quote or a backslash then break the statement). Here one set
of rules holds for every aiomysql and PyMySQL the package allows.

The literals mean the same under either setting of ``NO_BACKSLASH_ESCAPES``, so no rule
depends on the connection's ``sql_mode`` (the provider's own pool sets one without it, but a
pool passed in with ``pool=`` runs whatever the server's default is):

- ``str``: single-quoted, a quote doubled (``''`` is a quote in both modes). No other
  character is special inside a quoted literal in either mode (a raw NUL, newline or ``\\x1a``
  is taken as it is) except the backslash, an escape in one mode and itself in the other: a
  string holding one is sent as its UTF-8 bytes in hex with the ``_utf8mb4`` introducer,
  a string of that character set like a quoted one (both are coercible literals, so a
  comparison with a column takes the column's collation).
- ``bytes``, ``bytearray``, ``memoryview``: hexadecimal, ``X'00ff'``, a binary string (what
  PyMySQL 1.2 itself sends).
- ``int``: its digits; ``bool``: ``1`` or ``0``; ``float``: ``repr`` with an exponent, so
  the server reads a DOUBLE (not a DECIMAL), as PyMySQL does; infinities and NaN are refused
  (ValueError).
- ``None``: ``NULL``.

Anything else is refused with ``TypeError``: the package binds none, and a silent ``str()``
could send a different value than the caller meant. The text is for a connection whose
character set is utf8mb4 (``MySQLSessionProvider.connect_kwargs``) or utf8mb3.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

__all__ = ["literal", "render"]


def _str(value: str) -> str:
    if "\\" in value:
        return "_utf8mb4 X'" + value.encode("utf-8", "surrogateescape").hex() + "'"
    return "'" + value.replace("'", "''") + "'"


def _bytes(value: bytes | bytearray | memoryview) -> str:
    return "X'" + value.hex() + "'"


def _float(value: float) -> str:
    text = float.__repr__(value)
    if text in ("inf", "-inf", "nan"):
        raise ValueError(f"{text} has no SQL literal")
    return text if "e" in text else text + "e0"


def _null(value: None) -> str:
    return "NULL"


def _bool(value: bool) -> str:
    return "1" if value else "0"


#: Exact type -> its literal; a subclass finds its nearest listed base (see ``literal``).
_LITERALS: dict[type, Callable[[Any], str]] = {
    str: _str,
    int: int.__repr__,
    bytes: _bytes,
    type(None): _null,
    float: _float,
    bool: _bool,
    bytearray: _bytes,
    memoryview: _bytes,
}


def literal(value: object) -> str:
    """The SQL literal for one value; TypeError for a type the package does not bind."""
    kind = type(value)
    write = _LITERALS.get(kind)
    if write is None:
        # A subclass (an IntEnum, a str subclass) is written as its base type.
        write = next((_LITERALS[base] for base in kind.__mro__ if base in _LITERALS), None)
        if write is None:
            raise TypeError(f"cannot bind a {kind.__qualname__} in SQL (str, bytes, int, float, bool, None)")
    return write(value)


def render(statement: str, args: Sequence[object]) -> str:
    """``statement`` with each ``%s`` replaced by the literal of the next argument.

    Without arguments the statement is returned as it is (a ``%`` in it stays); with some,
    ``%%`` stands for a ``%``, as in the drivers' ``Cursor.execute``.
    """
    if not args:
        return statement
    try:
        literals = tuple([_LITERALS[type(value)](value) for value in args])
    except KeyError:
        literals = tuple([literal(value) for value in args])
    return statement % literals
