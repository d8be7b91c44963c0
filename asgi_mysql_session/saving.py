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

from .errors import SessionConflictError, SessionInterrupted, SessionTooLargeError
from .loading import SessionLoading, _clear, _copy, _items, _len, _update
from .serializer import (
    NESTED,
    Packed,
    check_value,
    decode,
    encode,
    holds_containers,
    nested_keys,
    pack_values,
    packed,
    plain,
    try_pack,
)

logger = logging.getLogger("asgi_mysql_session")


class SaveResult(enum.Enum):
    """What ``release()`` did, so the middleware knows which cookie to send."""

    NOTHING = "nothing"
    CREATED = "created"
    UPDATED = "updated"
    TOUCHED = "touched"
    DESTROYED = "destroyed"


class SessionSaving(SessionLoading):
    """The persistence half of :class:`~asgi_mysql_session.store.SessionStore`."""

    __slots__ = ()

    # -- persistence -----------------------------------------------------------------

    def _encode(self, raw: bytes | None = None) -> bytes:
        """The bytes to store (``raw``: the data as just packed, unchecked). Scalars were
        checked when set or read; lists and dicts the app got hold of may have changed in
        place since, so those are checked again; ones from the row never handed out go back
        as they were read."""
        if self._lent:
            unchecked = self._unchecked or ()
            for key, value in _items(self):
                if type(value) in NESTED and key not in unchecked:
                    check_value(key, value)
        try:
            if raw is None:
                raw = pack_values(plain(self))
        except Exception as exc:  # a row's value msgpack could read but not write (too deep)
            encode({k: v for k, v in _items(self) if type(v) is not Packed})  # names it
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
            packed_now = None if self._modified else try_pack(plain(self))
            if packed_now != self._raw:
                raw = self._encode(packed_now)
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
                self._unchecked = None if unchecked is None else unchecked - sets.keys() - deletes
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
        before = decode(self._raw, lazy=True)
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
