"""How a session's data gets into the store: from a row, and then to the app.

A row's scalars are ready when it is read; its lists and dicts are not walked (and big ones
not even decoded, ``serializer.Packed``) until the app first gets hold of one, so a request
pays only for what it uses. ``saving.py`` writes the data back, ``store.py`` is the dict.
"""

from __future__ import annotations

import logging
from typing import Any

from .errors import SessionDecodeError, SessionError
from .ids import hash_id, is_well_formed, log_id, new_session_id
from .rows import Row, SessionRows
from .serializer import Packed, check_value, nested_keys, unpack_value

logger = logging.getLogger("asgi_mysql_session")

# dict's own (C) methods, for the store's internal use: they neither check that the data is
# loaded nor count as the app reading it.
_get = dict.get
_set = dict.__setitem__
_del = dict.__delitem__
_len = dict.__len__
_contains = dict.__contains__
_copy = dict.copy
_update = dict.update
_clear = dict.clear
_values = dict.values
_items = dict.items
#: The one entry of a store whose data is not loaded: C code that skips the methods (e.g.
#: ``json.dumps``, which answers "{}" for an empty dict without calling ``items()``) then
#: still reaches a method that raises, instead of reading an empty session.
_UNLOADED = "\0asgi_mysql_session: not loaded"
_DROPPED = object()  # what ``_verified`` answers for a value it dropped


class SessionLoading(dict[str, Any]):
    """The state of :class:`~asgi_mysql_session.store.SessionStore`, and its loading."""

    __slots__ = (
        "__weakref__",
        "_blocked",
        "_cleared",
        "_created",
        "_destroyed",
        "_expiry",
        "_key",
        "_lent",
        "_modified",
        "_new",
        "_owner",
        "_raw",
        "_rows",
        "_sid",
        "_stored_owner",
        "_superseded",
        "_unchecked",
        "_version",
        "_written_at",
        "accessed",
    )

    def __init__(self, rows: SessionRows, session_id: str | None = None) -> None:
        self._rows = rows
        self._sid = session_id  # None: minted when first needed (most new stores never are)
        self._key: str | None = None
        self._raw = b""  # the bytes as read; b"" for a session not in the database
        self._version = 0
        self._created = 0
        self._expiry = 0
        self._written_at = 0  # the clock's second when this store last set the deadline
        self._owner: str | None = None
        self._stored_owner: str | None = None
        self._new = True
        self._destroyed = False
        self._cleared = False  # cleared after it was stored: the old row must go
        self._superseded = False  # loaded for an id a rotation replaced: never saved
        self._modified = False
        # True once the app may hold a list or dict that is also in the store (it took one
        # out, or set one it still holds): only then can a nested value change in place, so
        # only then is the data packed again to find out.
        self._lent = False
        # Keys of the lists and dicts read from the row and not yet looked into (decode()
        # does not walk them, and leaves big ones Packed): checked (and decoded) when first
        # handed out, written back as read if never.
        self._unchecked: set[str] | None = None
        #: True once the app looked at the data (the middleware then sends ``Vary: Cookie``).
        self.accessed = False
        # Set while the data is unavailable (lazy mode before loading, or the load failed):
        # any access raises it, so a route that never touches the session is unaffected.
        # An exception class is instantiated only when raised (most stores never are).
        self._blocked: SessionError | type[SessionError] | None = None

    def _fill(self, row: Row) -> None:
        if _len(self):
            _clear(self)
        _update(self, row.values)
        self._raw = row.data
        self._version = row.version
        self._created = row.created
        self._expiry = row.expiry
        self._owner = self._stored_owner = row.owner
        self._new = False
        self._cleared = False
        self._lent = False  # the data is fresh from the row: nothing of it was handed out
        self._unchecked = nested_keys(row.values)

    def _block(self, error: SessionError | type[SessionError]) -> None:
        self._blocked = error
        if _len(self):
            _clear(self)
        _set(self, _UNLOADED, None)

    def _load(
        self,
        session_id: str | None,
        row: Row | None,
        key_hash: str | None = None,
        *,
        superseded: bool = False,
    ) -> None:
        """Fill a store created before its row was read (the middleware's lazy path)."""
        self._sid, self._key = session_id, key_hash
        self._unchecked = None
        if row is not None:
            self._fill(row)
        elif _len(self):
            _clear(self)
        self._superseded = superseded
        self._blocked = None

    async def load(self, sid: str | None) -> None:
        """Fill the store from the session a client's id names (one SELECT at most).

        The one path every client id takes (``provider.load`` and the middleware): a
        malformed, unknown, expired or logged-out id leaves it empty with an id minted only
        if it is saved (never adopted); a superseded one leaves it empty and unsaveable.
        """
        key = hash_id(sid) if sid is not None and is_well_formed(sid) else None
        row = await self._rows.lookup(key) if key is not None else None
        if row is None or row.superseded:
            if sid is not None:
                logger.info(
                    "%s session id %s presented", "superseded" if row else "unknown or expired", log_id(sid)
                )
                self._rows.observer.unknown_id()
            self._load(None, None, superseded=row is not None)
        else:
            assert sid is not None
            self._rows.observer.session_loaded()
            self._load(sid, row, key)

    async def read(self) -> None:
        """Fill the store from its own id's live row, if there is one (one SELECT).

        The Go provider's Read: an id with no live row is kept, and a save stores under it.
        """
        row = await self._rows.lookup(self.key_hash)
        if row is not None and not row.superseded:
            self._rows.observer.session_loaded()
            self._fill(row)

    def _check(self) -> None:
        if self._blocked is not None:
            raise self._blocked

    @property
    def loaded(self) -> bool:
        return self._blocked is None

    # -- identity and state ----------------------------------------------------------

    @property
    def session_id(self) -> str:
        if self._sid is None:
            self._sid = new_session_id()
        return self._sid

    @property
    def key_hash(self) -> str:
        """What the database stores for this id."""
        if self._key is None:
            self._key = hash_id(self.session_id)
        return self._key

    # -- what the app gets hold of -------------------------------------------------------

    def _verified(self, key: str) -> Any:
        """The value under ``key``; a list or dict that came from the row unchecked is
        decoded if still ``Packed``, and checked. One that cannot be stored (a row written
        by something else: bytes keys, a timestamp, absurd nesting) is logged and dropped,
        and the row is written again without it: ``_DROPPED``."""
        value = dict.__getitem__(self, key)
        unchecked = self._unchecked
        if unchecked is None or key not in unchecked:
            return value
        unchecked.discard(key)
        try:
            if type(value) is Packed:
                value = unpack_value(value)
                _set(self, key, value)
            check_value(key, value)
        except (TypeError, SessionDecodeError) as exc:
            logger.warning(
                "dropping a stored value of session %s that cannot be stored: %s",
                log_id(self._sid or ""),
                exc,
            )
            _del(self, key)
            self._modified = True
            return _DROPPED
        return value

    def _verify_all(self) -> None:
        if self._unchecked:
            for key in list(self._unchecked):
                self._verified(key)

    def _lend(self, key: str) -> Any:
        """The list or dict under ``key``, noted as the app's (verified first)."""
        value = self._verified(key)
        if value is not _DROPPED:
            self._lent = True
        return value

    def _lend_all(self) -> None:
        self._verify_all()
        self._lent = True
