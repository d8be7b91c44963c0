"""The session object: a mapping that tracks its changes and knows how to save them.

Kept apart from the SQL (provider.py) as Django keeps ``SessionBase`` apart from its
backends. Saving follows one rule set, documented in the README:

* nothing is written unless the encoded data (or the owner) differs from what was read, so
  in-place mutation of nested values is caught without ``mark_modified()``;
* a new session is one INSERT; an emptied one is one DELETE (logout);
* an existing one is one UPDATE conditioned on the version it was read at. If another
  writer got there first, the row is read again and only this request's own key-level
  changes (sets and deletes) are applied on top, then the write is retried: two requests
  changing different keys both persist, and for the same key the later write wins;
* a row that vanished meanwhile (logout, rotation, expiry) is never recreated:
  ``SessionInterrupted`` is raised instead;
* ``clear()`` is a logout: the row is deleted, and anything set afterwards (a flash
  message) starts a new session under a new id, so the old cookie opens nothing.

The store is a ``dict`` subclass, as Starlette's ``Session`` is, so it serializes
(``json.dumps``, ``JSONResponse``), copies (``copy()`` gives a plain dict) and type-checks
like one. The data lives in the dict itself; every Python-level method is overridden to
refuse access before the data is loaded and to track reads and changes.
"""

from __future__ import annotations

import enum
from collections.abc import Iterator
from collections.abc import Set as AbstractSet
from typing import TYPE_CHECKING, Any

import msgpack

from .errors import SessionConflictError, SessionError, SessionInterrupted, SessionTooLargeError
from .ids import hash_id, log_id
from .serializer import check_value, decode, encode, holds_containers

if TYPE_CHECKING:
    from _collections_abc import dict_items, dict_keys, dict_values

    from .provider import MySQLSessionProvider, Row

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


class SessionStore(dict[str, Any]):
    """One session's data, Go-style (``get/set/delete/flush/release``) and dict-style.

    It becomes ``request.session`` under the middleware: a ``dict`` subclass, as Starlette's
    own ``Session`` is. Values must be msgpack types; a value that is not is refused with
    ``TypeError`` when set, naming the key.

    ``accessed`` becomes True when the app reads or changes the data through any method
    (``json.dumps`` and ``JSONResponse`` call ``items()``), or takes ``request.session``
    (Starlette calls ``mark_accessed()``); the middleware then sends ``Vary: Cookie``.
    C-level reads of the dict storage that call no method (``dict.__getitem__(store, k)``,
    some C extensions) are not seen: call ``mark_accessed()`` after those.
    """

    __slots__ = (
        "__weakref__",
        "_blocked",
        "_cleared",
        "_created",
        "_destroyed",
        "_expiry",
        "_key",
        "_modified",
        "_new",
        "_owner",
        "_provider",
        "_raw",
        "_sid",
        "_stored_owner",
        "_superseded",
        "_version",
        "_written_at",
        "accessed",
    )

    def __init__(self, provider: MySQLSessionProvider, session_id: str | None = None) -> None:
        self._provider = provider
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
        #: True once the app looked at the data (the middleware then sends ``Vary: Cookie``).
        self.accessed = False
        # Set while the data is unavailable (lazy mode before loading, or the load failed):
        # any access raises it, so a route that never touches the session is unaffected.
        # An exception class is instantiated only when raised (most stores never are).
        self._blocked: SessionError | type[SessionError] | None = None

    @classmethod
    def from_row(cls, provider: MySQLSessionProvider, session_id: str, row: Row) -> SessionStore:
        store = cls(provider, session_id)
        store._fill(row)
        return store

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
        if row is not None:
            self._fill(row)
        elif _len(self):
            _clear(self)
        self._superseded = superseded
        self._blocked = None

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
            self._sid = self._provider.new_session_id()
        return self._sid

    @property
    def key_hash(self) -> str:
        """What the database stores for this id."""
        if self._key is None:
            self._key = hash_id(self.session_id)
        return self._key

    @property
    def is_new(self) -> bool:
        """True while no row exists for this session."""
        return self._new

    @property
    def superseded(self) -> bool:
        """True when the id presented was replaced by a rotation (a login elsewhere).

        The client holds, or is about to get, the newer cookie: nothing is saved for this
        store and its cookie is left alone.
        """
        return self._superseded

    @property
    def modified(self) -> bool:
        """True once the data or the owner was changed through the store's methods.

        Settable as in Starlette: ``True`` forces the save rules to compare what is stored,
        ``False`` forgets the flag (changes to nested values are still found and saved).
        """
        return self._modified

    @modified.setter
    def modified(self, value: bool) -> None:
        self._modified = bool(value)
        if value:
            self.accessed = True

    @property
    def expiry(self) -> int:
        """The stored deadline in unix seconds (0 for a session never saved)."""
        return self._expiry

    @property
    def created(self) -> int:
        return self._created

    @property
    def version(self) -> int:
        return self._version

    @property
    def owner(self) -> str | None:
        """Who the session belongs to (e.g. a user id), for ``provider.destroy_owner``."""
        return self._owner

    @owner.setter
    def owner(self, owner: str | None) -> None:
        if owner is not None and (not isinstance(owner, str) or not 0 < len(owner) <= 191):
            raise ValueError("owner must be a non-empty str of at most 191 characters, or None")
        self._owner = owner
        self._modified = True

    def mark_modified(self) -> None:
        self._modified = True
        self.accessed = True

    def mark_accessed(self) -> None:
        """Record that the app read the session (Starlette's ``request.session`` calls it)."""
        self.accessed = True

    def __repr__(self) -> str:  # never the id itself
        tag = log_id(self._sid) if self._sid else "(no id yet)"
        return f"<SessionStore {tag} keys={_len(self)} new={self._new}>"

    # -- mapping (every dict method that reads or writes the data) -------------------

    def __getitem__(self, key: str) -> Any:
        if self._blocked is not None:
            raise self._blocked
        self.accessed = True
        return dict.__getitem__(self, key)

    def __setitem__(self, key: str, value: Any) -> None:
        if self._blocked is not None:
            raise self._blocked
        check_value(key, value)
        self.accessed = True
        self._modified = True
        _set(self, key, value)

    def __delitem__(self, key: str) -> None:
        if self._blocked is not None:
            raise self._blocked
        self.accessed = True
        _del(self, key)
        self._modified = True

    def __iter__(self) -> Iterator[str]:
        if self._blocked is not None:
            raise self._blocked
        self.accessed = True
        return dict.__iter__(self)

    def __reversed__(self) -> Iterator[str]:
        self._check()
        self.accessed = True
        return dict.__reversed__(self)

    def __len__(self) -> int:
        if self._blocked is not None:
            raise self._blocked
        self.accessed = True
        return _len(self)

    def __contains__(self, key: object) -> bool:
        if self._blocked is not None:
            raise self._blocked
        self.accessed = True
        return _contains(self, key)

    def get(self, key: str, default: Any = None) -> Any:
        if self._blocked is not None:
            raise self._blocked
        self.accessed = True
        return _get(self, key, default)

    def keys(self) -> dict_keys[str, Any]:
        self._check()
        self.accessed = True
        return dict.keys(self)

    def values(self) -> dict_values[str, Any]:
        self._check()
        self.accessed = True
        return _values(self)

    def items(self) -> dict_items[str, Any]:
        self._check()
        self.accessed = True
        return _items(self)

    def copy(self) -> dict[str, Any]:
        """A plain ``dict`` of the data (a snapshot: changing it changes nothing stored)."""
        self._check()
        self.accessed = True
        return _copy(self)

    def __or__(self, other: Any) -> dict[str, Any]:  # type: ignore[override]
        if not isinstance(other, dict):
            return NotImplemented
        merged = self.copy()
        merged.update(other)
        return merged

    def __ror__(self, other: Any) -> dict[str, Any]:  # type: ignore[override]
        if not isinstance(other, dict):
            return NotImplemented
        merged = dict(other)
        merged.update(self.copy())
        return merged

    def update(self, *args: Any, **kwargs: Any) -> None:
        self._check()
        incoming = dict(*args, **kwargs)
        for key, value in incoming.items():
            check_value(key, value)  # all checked before anything changes
        self.accessed = True
        self._modified = True
        _update(self, incoming)

    def __ior__(self, other: Any) -> SessionStore:  # type: ignore[override]
        self.update(other)
        return self

    def pop(self, key: str, *default: Any) -> Any:
        """As ``dict.pop``; a missing key with a default neither reads nor changes anything."""
        self._check()
        if len(default) > 1:
            raise TypeError(f"pop expected at most 2 arguments, got {1 + len(default)}")
        if _contains(self, key):
            self.accessed = True
            self._modified = True
            return dict.pop(self, key)
        if default:
            return default[0]
        self.accessed = True
        raise KeyError(key)

    def popitem(self) -> tuple[str, Any]:
        """Remove and return the most recently set item, as ``dict.popitem`` does."""
        self._check()
        self.accessed = True
        item = dict.popitem(self)
        self._modified = True
        return item

    def setdefault(self, key: str, default: Any = None) -> Any:
        self._check()
        self.accessed = True
        if _contains(self, key):
            return dict.__getitem__(self, key)
        self[key] = default
        return default

    @classmethod
    def fromkeys(cls, *args: Any, **kwargs: Any) -> Any:
        raise TypeError("SessionStore.fromkeys is not supported: build a dict, then update() the store")

    def __reduce__(self) -> Any:
        raise TypeError("a SessionStore cannot be pickled or deep-copied: use .copy() for a plain dict")

    def clear(self) -> None:
        """Empty the session; on release its row is deleted (logout).

        Whatever is set afterwards is saved as a new session under a new id.
        """
        self._check()
        self.accessed = True
        if _len(self):
            self._modified = True
            _clear(self)
        if not self._new:
            self._cleared = True

    # -- the Go store's names --------------------------------------------------------

    def set(self, key: str, value: Any) -> None:
        self[key] = value

    def delete(self, key: str) -> None:
        """Remove ``key`` if present (no error when it is not)."""
        if key in self:
            del self[key]

    def flush(self) -> None:
        self.clear()

    # -- persistence -----------------------------------------------------------------

    def _encode(self) -> bytes:
        raw = encode(self, checked=True)
        if len(raw) > self._provider.max_size:
            raise SessionTooLargeError(
                f"session is {len(raw)} bytes encoded, over max_size={self._provider.max_size}; "
                "nothing was written"
            )
        return raw

    async def release(self) -> SaveResult:
        """Write what changed, in one statement when nobody else wrote meanwhile."""
        result = await self._release()
        if result is not SaveResult.NOTHING:
            self._provider.observer.session_saved(result._value_)  # not .value: a slow property
        return result

    async def _release(self) -> SaveResult:
        provider = self._provider
        if self._blocked is not None:
            return SaveResult.NOTHING  # never loaded, so nothing can have changed
        if self._cleared and not self._new:  # logout: the old id dies whatever comes next
            data, owner = _copy(self), self._owner
            self._encode()  # refuse unencodable data before the row is gone
            await provider.delete(self.key_hash)
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
            now = self._written_at = provider.now()
            expiry = provider.deadline(now, now)
            await provider.insert(self.key_hash, raw, expiry, now, self._owner)
            provider.observer.session_created(anonymous=self._owner is None)
            self._new = False
            self._raw, self._version, self._created, self._expiry = raw, 1, now, expiry
            self._stored_owner = self._owner
            self._modified = False
            return SaveResult.CREATED
        # Unmodified data can only have changed in place, inside a list or dict.
        if self._modified or (self.accessed and holds_containers(self)):
            if not _len(self):
                await provider.delete(self.key_hash)
                return self._forget()
            raw = self._encode()
            if raw != self._raw or self._owner != self._stored_owner:
                return await self._write(raw)
        now = self._written_at = provider.now()
        target = provider.deadline(self._created, now)
        if self._expiry > target + provider.touch_after:
            # Stored under a longer lifetime than today's: bring it down to the policy.
            if await provider.clamp(self.key_hash, target):
                self._expiry = target
                return SaveResult.TOUCHED
            return SaveResult.NOTHING
        # Touch once touch_after has passed, or when the move reaches the absolute cap
        # (otherwise an active session would die up to touch_after early).
        due = target > self._expiry and (
            target - self._expiry >= provider.touch_after or target == provider.cap(self._created)
        )
        if due and await provider.touch(self.key_hash, target):
            self._expiry = target
            return SaveResult.TOUCHED
        return SaveResult.NOTHING

    async def _write(self, raw: bytes) -> SaveResult:
        provider = self._provider
        key = self.key_hash
        # Queue behind this process's other writers of the session (even for the first
        # try: newcomers would otherwise keep beating a merging writer), so heavy
        # contention cannot starve anyone; each turn merges onto the latest row.
        locks = provider.save_locks
        if not locks.try_acquire(key):
            await locks.acquire(key)
        try:
            if await self._update(raw):  # the common case: nobody wrote meanwhile
                return SaveResult.UPDATED
            owner_changed = self._owner != self._stored_owner
            sets, deletes = self._changes()
            for _ in range(provider.write_retries):
                # Someone else wrote (or the row is gone): merge our own changes onto theirs.
                provider.observer.write_conflict()
                row = await provider.lookup(key)
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
                self._raw, self._version = row.data, row.version
                self._created, self._expiry = row.created, row.expiry
                self._stored_owner = row.owner
                if not owner_changed:
                    self._owner = row.owner
                if not merged:
                    await provider.delete(key)
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
            f"gave up after {provider.write_retries + 1} conflicting writes to one session"
        )

    async def _update(self, raw: bytes) -> bool:
        """One UPDATE conditioned on the version this store holds."""
        provider = self._provider
        now = self._written_at = provider.now()
        expiry = provider.deadline(self._created, now)
        if not await provider.update(self.key_hash, raw, expiry, self._owner, self._version):
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
            if key not in before or _packed(before[key]) != _packed(value)
        }
        return sets, before.keys() - dict.keys(self)

    def _forget(self) -> SaveResult:
        """The row is gone: the store is empty and new, and its old id is never reused."""
        self._destroyed, self._new, self._cleared = True, True, False
        _clear(self)
        self._raw, self._version = b"", 0
        self._modified = False
        return SaveResult.DESTROYED

    @property
    def destroyed(self) -> bool:
        """True after the row was deleted by this store (the cookie must be expired)."""
        return self._destroyed

    async def destroy(self) -> None:
        """Delete the session now; a later ``release()`` writes nothing."""
        if not self._new:
            await self._provider.delete(self.key_hash)
        self._forget()

    async def regenerate(self) -> None:
        """Give the session a new id, keeping its data; the old id stops working at once.

        Call it at login and on any privilege change. Pending changes are saved by the next
        ``release()`` under the new id.
        """
        self._check()
        if self._new:  # nothing stored yet: the next save mints a fresh id
            self._sid, self._key = None, None
            return
        provider = self._provider
        new_sid = provider.new_session_id()
        new_key = hash_id(new_sid)
        if not await provider.rename(self.key_hash, new_key):
            # The row ended meanwhile (logout, "log out everywhere"): never bring it back.
            self._forget()
            raise SessionInterrupted("the session ended before it could be given a new id")
        self._sid, self._key = new_sid, new_key


def _packed(value: Any) -> bytes:
    return msgpack.packb(value, use_bin_type=True, strict_types=True)  # type: ignore[no-any-return]
