"""The driver versions the hand-written reference apps can run on.

They bind session data (bytes) through aiomysql's ``Cursor.execute``, as a user would, and
aiomysql 0.2-0.3.2 write bytes with ``pymysql.converters.escape_bytes_prefixed``, which
PyMySQL 1.2 replaced by a string ("'str' object is not callable"); a bytearray is sent as
its repr. A user of these aiomysql versions pins ``PyMySQL<1.2``, and so does ``make bench``.
(The package itself writes its own literals and runs on either.)
"""

from __future__ import annotations

from importlib.metadata import version


def require_pymysql_below_1_2() -> None:
    installed = version("PyMySQL")
    major, minor = (int(part) for part in installed.split(".")[:2])
    if (major, minor) >= (1, 2):
        raise SystemExit(
            f"the reference apps bind bytes through aiomysql, which PyMySQL {installed} breaks; "
            "install 'PyMySQL<1.2' for the bench (make bench does)"
        )
