"""The statements the provider runs on the session table (and on Galera its lease table).

Statements are plain single-row primary-key operations plus batched deletes on the expiry
index, so they behave the same on MariaDB >= 10.5, MySQL 8 and MySQL-compatible clusters.
Times are unix seconds from the provider's clock, always passed as parameters. The DDL, the
table check and the maintenance statements (upgrade, stats, lifetime policy) are in
:mod:`asgi_mysql_session.schema` and :mod:`asgi_mysql_session.upgrade`.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from .errors import SessionConfigError

_TABLE_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]{0,63}")

#: Largest value a MEDIUMBLOB holds; ``max_size`` may not exceed it.
DATA_COLUMN_BYTES = 2**24 - 1


def check_table_name(table: str) -> str:
    """Table names are interpolated into SQL, so only plain identifiers are allowed."""
    if not isinstance(table, str) or not _TABLE_NAME.fullmatch(table):
        raise SessionConfigError(
            f"invalid table name {table!r}: use letters, digits and underscores (max 64)"
        )
    return table


@dataclass(frozen=True)
class Statements:
    """The statements for one table, formatted once."""

    table: str
    select: str
    #: ``select`` for many keys at once: ``{keys}`` is replaced by one ``%s`` per key, and
    #: every value starts with its key (see ``unpack_keyed``).
    select_many: str
    #: The columns ``select`` packs, one by one: only for a row too big to pack.
    select_columns: str
    exist: str
    insert: str
    update: str
    touch: str
    clamp: str
    rename: str
    tombstone: str
    delete: str
    count: str
    gc_batch: str
    of_owner: str
    delete_owner: str
    get_lock: str
    lock_if_live: str
    release_lock: str


#: Rows within the current lifetime policy: before their deadline (``now``), and created
#: after ``now - absolute_lifetime`` (0: unknown creation time, bound by the deadline alone).
#: Parameters: (now, born_after). Lowering ``absolute_lifetime`` thus takes effect at once.
_IN_POLICY = "session_expiry > %s AND (session_created = 0 OR session_created > %s)"
#: A live session: in policy and not a tombstone. A tombstone (``session_version = 0``,
#: empty data) marks an id that a rotation superseded, for ``rotation_grace`` seconds, so a
#: late response about it can leave the client's newer cookie alone.
LIVE = f"{_IN_POLICY} AND session_version > 0"
TOMBSTONE_VERSION = 0

#: What a read needs, packed by the server into one value: every column of a result set
#: costs PyMySQL a column-definition packet parsed in Python on every statement (about as
#: much as the rest of the statement), so a read returns one column, not five. The value is
#: ``expiry,version,created,owner_bytes,`` + owner + data, where owner_bytes is -1 for a
#: NULL owner: the owner may hold any character (commas, NUL) as its length is given, and
#: the result is a binary string (session_data is a BLOB), so nothing is transcoded.
_PACKED = (
    "CONCAT(session_expiry, ',', session_version, ',', session_created, ',', "
    "IFNULL(LENGTH(session_owner), -1), ',', IFNULL(session_owner, ''), session_data)"
)
#: Length of ``session_key`` (the SHA-256 hex of an id), as select_many's values begin.
KEY_LENGTH = 64
#: A row as ``lookup`` gets it: (data, expiry, version, created, owner).
Unpacked = tuple[bytes, int, int, int, "str | None"]


def unpack(value: bytes) -> Unpacked:
    """The fields of a value of ``Statements.select`` (see ``_PACKED``)."""
    expiry, version, created, size, rest = value.split(b",", 4)
    n = int(size)
    if n < 0:
        return rest, int(expiry), int(version), int(created), None
    return rest[n:], int(expiry), int(version), int(created), rest[:n].decode()


def unpack_keyed(value: bytes) -> tuple[str, Unpacked]:
    """(key, fields) of a value of ``Statements.select_many``: the key comes first."""
    key, expiry, version, created, size, rest = value.split(b",", 5)
    n = int(size)
    owner = rest[:n].decode() if n >= 0 else None
    data = rest[n:] if n > 0 else rest
    return key.decode(), (data, int(expiry), int(version), int(created), owner)


def statements(table: str) -> Statements:
    t = f"`{check_table_name(table)}`"
    return Statements(
        table=table,
        # Tombstones are returned too (version 0): the caller tells "superseded" from "unknown".
        # One packed column (see _PACKED); NULL only if the row is too big to pack (larger
        # than the server's max_allowed_packet), then select_columns reads it.
        select=f"SELECT {_PACKED} FROM {t} WHERE session_key = %s AND {_IN_POLICY}",
        # "key," alone (IFNULL) marks a row too big to pack, as NULL does for select.
        select_many=(
            f"SELECT CONCAT(session_key, ',', IFNULL({_PACKED}, '')) FROM {t} "
            f"WHERE session_key IN ({{keys}}) AND {_IN_POLICY}"
        ),
        select_columns=(
            "SELECT session_data, session_expiry, session_version, session_created, session_owner "
            f"FROM {t} WHERE session_key = %s AND {_IN_POLICY}"
        ),
        exist=f"SELECT 1 FROM {t} WHERE session_key = %s AND {LIVE}",
        insert=(
            f"INSERT INTO {t} (session_key, session_data, session_expiry, session_version, "
            "session_created, session_owner) VALUES (%s, %s, %s, 1, %s, %s)"
        ),
        # Conditioned on the version read and on the row being alive: a write never
        # recreates a row that was deleted, renamed or expired in the meantime.
        update=(
            f"UPDATE {t} SET session_data = %s, session_expiry = %s, session_owner = %s, "
            "session_version = session_version + 1 "
            f"WHERE session_key = %s AND session_version = %s AND {_IN_POLICY}"
        ),
        # Moves only the deadline, never backwards, and leaves the version alone so it
        # cannot make a concurrent data write conflict.
        touch=(
            f"UPDATE {t} SET session_expiry = GREATEST(session_expiry, %s) WHERE session_key = %s AND {LIVE}"
        ),
        # Moves the deadline down to what a lowered max_lifetime allows (never up).
        clamp=f"UPDATE {t} SET session_expiry = LEAST(session_expiry, %s) WHERE session_key = %s AND {LIVE}",
        rename=f"UPDATE {t} SET session_key = %s WHERE session_key = %s AND {LIVE}",
        # Left under the old key by a rotation, in the same transaction as the rename.
        tombstone=(
            f"INSERT INTO {t} (session_key, session_data, session_expiry, session_version, "
            f"session_created, session_owner) VALUES (%s, '', %s, {TOMBSTONE_VERSION}, 0, NULL)"
        ),
        delete=f"DELETE FROM {t} WHERE session_key = %s",
        count=f"SELECT COUNT(*) FROM {t} WHERE {LIVE}",
        gc_batch=f"DELETE FROM {t} WHERE session_expiry <= %s ORDER BY session_expiry LIMIT %s",
        of_owner=(
            f"SELECT session_key, session_created, session_expiry FROM {t} "
            f"WHERE session_owner = %s AND {LIVE} ORDER BY session_created, session_key"
        ),
        delete_owner=f"DELETE FROM {t} WHERE session_owner = %s",
        get_lock="SELECT GET_LOCK(%s, 0)",
        # Takes the session's named lock only if the session is live: the select list is
        # evaluated for matching rows alone, so an unknown id costs one quick statement and
        # never waits for (or holds) a lock. Parameters: (name, wait, key, now, born_after).
        lock_if_live=f"SELECT GET_LOCK(%s, %s) FROM {t} WHERE session_key = %s AND {LIVE}",
        release_lock="SELECT RELEASE_LOCK(%s)",
    )


# -- leases (Galera) --
#
# On a Galera cluster GET_LOCK is local to one node, so the sweep and serialized requests
# coordinate through rows of a small InnoDB table instead: a row per held lease, claimed by
# conditional writes that Galera certifies cluster-wide (the loser of a race gets error 1213
# and, on retry, sees the winner's row). Times are unix milliseconds from the host clocks.

#: Longest table name whose lease table name is ``{table}_lease``; longer names are cut.
_LEASE_SUFFIX = "_lease"


def lease_table_name(table: str) -> str:
    """The lease table that goes with session table ``table`` (at most 64 characters)."""
    return f"{check_table_name(table)[: 64 - len(_LEASE_SUFFIX)]}{_LEASE_SUFFIX}"


@dataclass(frozen=True)
class LeaseStatements:
    """The statements on the lease table of one session table."""

    table: str
    #: Claims a free lease: 1 row if it was free (no row), 0 if a row exists.
    claim_free: str
    #: Takes over a lapsed lease: 1 matched row if it had lapsed. (holder, expires, name, now)
    claim_lapsed: str
    #: Extends a lease its holder still has: 1 matched row if so. (expires, name, holder)
    renew: str
    #: Gives a lease back, only if this holder still has it. (name, holder)
    release: str


def lease_statements(table: str) -> LeaseStatements:
    name = lease_table_name(table)
    t = f"`{name}`"
    return LeaseStatements(
        table=name,
        claim_free=f"INSERT IGNORE INTO {t} (lease_name, lease_holder, lease_expires) VALUES (%s, %s, %s)",
        claim_lapsed=(
            f"UPDATE {t} SET lease_holder = %s, lease_expires = %s "
            "WHERE lease_name = %s AND lease_expires < %s"
        ),
        renew=f"UPDATE {t} SET lease_expires = %s WHERE lease_name = %s AND lease_holder = %s",
        release=f"DELETE FROM {t} WHERE lease_name = %s AND lease_holder = %s",
    )
