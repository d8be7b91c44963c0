"""How a session is loaded and saved: the rules of ``SessionStore``'s persistence.

Written against ``rows.SessionRows`` (rows in, rows out, and the lifetime rules), not the
provider, as Django keeps ``SessionBase`` apart from its backends. Saving follows one rule
set, documented in the README:

* nothing is written unless the encoded data (or the owner) differs from what was read, so
  in-place mutation of nested values is caught without ``mark_modified()``; lists and dicts
  count only once the app got hold of them (``store.py``), others go back as read;
* a new session is one INSERT; an emptied one is one DELETE (logout);
* an existing one is one UPDATE conditioned on the version it was read at. If another
  writer got there first, the row is read again and only this request's own key-level
  changes (sets and deletes) are applied on top, then the write is retried: two requests
  changing different keys both persist, and for the same key the later write wins;
* a row that vanished meanwhile (logout, rotation, expiry) is never recreated:
  ``SessionInterrupted`` is raised instead;
* ``clear()`` is a logout: the row is deleted, and anything set afterwards (a flash
  message) starts a new session under a new id, so the old cookie opens nothing.
"""

from __future__ import annotations

import enum
import logging
from collections.abc import Set as AbstractSet
from typing import Any

from .errors import SessionConflictError, SessionError, SessionInterrupted, SessionTooLargeError
from .ids import hash_id, is_well_formed, log_id, new_session_id
from .rows import Row, SessionRows
from .serializer import (
    NESTED,
    check_value,
    decode,
    encode,
    holds_containers,
    nested_keys,
    pack_checked,
    packed,
    packs_to,
    plain,
)

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


class SaveResult(enum.Enum):
    """What ``release()`` did, so the middleware knows which cookie to send."""

    NOTHING = "nothing"
    CREATED = "created"
    UPDATED = "updated"
    TOUCHED = "touched"
    DESTROYED = "destroyed"


class SessionSaving(dict[str, Any]):
    """The persistence half of :class:`~asgi_mysql_session.store.SessionStore`."""

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
        # does not walk them): checked when first handed out, written back as read if never.
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

    # -- persistence -----------------------------------------------------------------

    def _encode(self) -> bytes:
        """The bytes to store. Scalars were checked when set or read; lists and dicts the
        app got hold of may have changed in place since, so those are checked again; ones
        from the row never handed out go back as they were read."""
        if self._lent:
            unchecked = self._unchecked or ()
            for key, value in _items(self):
                if type(value) in NESTED and key not in unchecked:
                    check_value(key, value)
        try:
            raw: bytes = pack_checked(plain(self))
        except Exception as exc:  # a row's value msgpack could read but not write (too deep)
            encode(plain(self))  # names it
            raise TypeError(f"session data cannot be packed: {exc}") from None
        if len(raw) > self._rows.rules.max_size:
            raise SessionTooLargeError(
                f"session is {len(raw)} bytes encoded, over max_size={self._rows.rules.max_size}; "
                "nothing was written"
            )
        return raw

    async def release(self) -> SaveResult:
        """Write what changed, in one statement when nobody else wrote meanwhile."""
        result = await self._release()
        if result is not SaveResult.NOTHING:
            self._rows.observer.session_saved(result._value_)  # not .value: a slow property
        return result

    async def _release(self) -> SaveResult:
        rows = self._rows
        rules = rows.rules
        if self._blocked is not None:
            return SaveResult.NOTHING  # never loaded, so nothing can have changed
        if self._cleared and not self._new:  # logout: the old id dies whatever comes next
            data, owner = _copy(self), self._owner
            self._encode()  # refuse unencodable data before the row is gone
            await rows.delete(self.key_hash)
            self._forget()
            _update(self, data)
            self._owner = owner
            if not data:
                return SaveResult.DESTROYED
        if self._new:
            if not _len(self):
                return SaveResult.NOTHING  # empty sessions are never stored
            if self._superseded:
                raise SessionInterrupted(
                    "this request's session id was replaced by a newer one (a login) meanwhile; "
                    "nothing was saved",
                    superseded=True,
                )
            if self._destroyed:  # data set after a logout starts a session under a new id
                self._sid, self._key, self._destroyed = None, None, False
            raw = self._encode()
            now = self._written_at = rules.now()
            expiry = rules.deadline(now, now)
            await rows.insert(self.key_hash, raw, expiry, now, self._owner)
            rows.observer.session_created(anonymous=self._owner is None)
            self._new = False
            self._raw, self._version, self._created, self._expiry = raw, 1, now, expiry
            self._stored_owner = self._owner
            self._modified = False
            return SaveResult.CREATED
        # Unmodified data can only have changed in place, inside a list or dict the app holds.
        owner_changed = self._owner != self._stored_owner  # saved even if `modified` was reset
        if self._modified or owner_changed or (self._lent and holds_containers(self)):
            if not _len(self):
                await rows.delete(self.key_hash)
                return self._forget()
            # Read but not set: what packs to the stored bytes is unchanged, so needs no check.
            if self._modified or not packs_to(plain(self), self._raw):
                raw = self._encode()
                if raw != self._raw or owner_changed:
                    return await self._write(raw)
            elif owner_changed:
                return await self._write(self._raw)
        now = self._written_at = rules.now()
        target = rules.deadline(self._created, now)
        if self._expiry > target + rules.touch_step:
            # Stored under a longer lifetime than today's: bring it down to the policy.
            if await rows.clamp(self.key_hash, target):
                self._expiry = target
                return SaveResult.TOUCHED
            return SaveResult.NOTHING
        # Touch once touch_after has passed, or when the move reaches the absolute cap
        # (otherwise an active session would die up to touch_after early).
        due = target > self._expiry and (
            target - self._expiry >= rules.touch_step or target == rules.cap(self._created)
        )
        if due and await rows.touch(self.key_hash, target):
            self._expiry = target
            return SaveResult.TOUCHED
        return SaveResult.NOTHING

    async def _write(self, raw: bytes) -> SaveResult:
        rows = self._rows
        key = self.key_hash
        # Queue behind this process's other writers of the session (even for the first
        # try: newcomers would otherwise keep beating a merging writer), so heavy
        # contention cannot starve anyone; each turn merges onto the latest row.
        locks = rows.save_locks
        if not locks.try_acquire(key):
            await locks.acquire(key)
        try:
            if await self._update(raw):  # the common case: nobody wrote meanwhile
                return SaveResult.UPDATED
            owner_changed = self._owner != self._stored_owner
            sets, deletes = self._changes()
            for _ in range(rows.rules.write_retries):
                # Someone else wrote (or the row is gone): merge our own changes onto theirs.
                rows.observer.write_conflict()
                row = await rows.lookup(key)
                if row is None or row.superseded:
                    self._forget()
                    raise SessionInterrupted(
                        "the session ended (logout, rotation or expiry) before this write; "
                        "it was not recreated",
                        superseded=row is not None,
                    )
                merged = {k: v for k, v in row.values.items() if k not in deletes}
                merged.update(sets)
                _clear(self)
                _update(self, merged)
                unchecked = nested_keys(row.values)
                self._unchecked = None if unchecked is None else unchecked - sets.keys()
                self._raw, self._version = row.data, row.version
                self._created, self._expiry = row.created, row.expiry
                self._stored_owner = row.owner
                if not owner_changed:
                    self._owner = row.owner
                if not merged:
                    await rows.delete(key)
                    return self._forget()
                raw = self._encode()
                if raw == row.data and self._owner == row.owner:
                    self._modified = False
                    return SaveResult.NOTHING  # our changes are already there
                if await self._update(raw):
                    return SaveResult.UPDATED
        finally:
            locks.release(key)
        raise SessionConflictError(
            f"gave up after {rows.rules.write_retries + 1} conflicting writes to one session"
        )

    async def _update(self, raw: bytes) -> bool:
        """One UPDATE conditioned on the version this store holds."""
        rows = self._rows
        now = self._written_at = rows.rules.now()
        expiry = rows.rules.deadline(self._created, now)
        if not await rows.update(self.key_hash, raw, expiry, self._owner, self._version):
            return False
        self._version += 1
        self._raw, self._expiry, self._stored_owner = raw, expiry, self._owner
        self._modified = False
        return True

    def _changes(self) -> tuple[dict[str, Any], AbstractSet[str]]:
        """This request's key-level changes against what it read (types compared exactly)."""
        before = decode(self._raw)
        sets = {
            key: value
            for key, value in _items(self)
            if key not in before or packed(before[key]) != packed(value)
        }
        return sets, before.keys() - dict.keys(self)

    def _forget(self) -> SaveResult:
        """The row is gone: the store is empty and new, and its old id is never reused."""
        self._destroyed, self._new, self._cleared = True, True, False
        self._unchecked = None
        _clear(self)
        self._raw, self._version = b"", 0
        self._modified = False
        return SaveResult.DESTROYED
