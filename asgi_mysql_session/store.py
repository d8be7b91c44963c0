"""The session object: a ``dict`` that tracks reads and changes (saving is ``saving.py``).

The store is a ``dict`` subclass, as Starlette's ``Session`` is, so it serializes
(``json.dumps``, ``JSONResponse``), copies (``copy()`` gives a plain dict) and type-checks
like one. The data lives in the dict itself; every Python-level method is overridden to
refuse access before the data is loaded and to track reads and changes.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from typing import TYPE_CHECKING, Any

from .errors import SessionInterrupted
from .ids import hash_id, log_id, new_session_id
from .loading import (
    _DROPPED,
    _clear,
    _contains,
    _copy,
    _del,
    _get,
    _items,
    _len,
    _set,
    _update,
    _values,
)
from .saving import SaveResult, SessionSaving
from .serializer import LENDABLE, NESTED, check_value, holds_containers

if TYPE_CHECKING:
    from _collections_abc import dict_items, dict_keys, dict_values

__all__ = ["SaveResult", "SessionStore"]

logger = logging.getLogger("asgi_mysql_session")


class SessionStore(SessionSaving):
    """One session's data, Go-style (``get/set/delete/flush/release``) and dict-style.

    It becomes ``request.session`` under the middleware: a ``dict`` subclass, as Starlette's
    own ``Session`` is. Values must be msgpack types; a value that is not is refused with
    ``TypeError`` when set, naming the key.

    ``accessed`` becomes True when the app reads or changes the data through any method
    (``json.dumps`` and ``JSONResponse`` call ``items()``), or takes ``request.session``
    (Starlette calls ``mark_accessed()``); the middleware then sends ``Vary: Cookie``.
    C-level reads of the dict storage that call no method (``dict.__getitem__(store, k)``,
    some C extensions) are not seen: call ``mark_accessed()`` after those, and
    ``mark_modified()`` after changing a list or dict reached that way (changes to the ones
    the methods hand out are found on their own). They may also find a big list or dict not
    decoded yet (``serializer.Packed``): give such code ``copy()``, a plain dict.
    """

    __slots__ = ()

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
            self.mark_modified()

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
        """Have the save compare everything, nested values included, with what is stored.

        Needed only after changing a nested value reached without the store's methods
        (``dict.__getitem__(store, k)``, some C extensions): the methods themselves note
        every list or dict they hand out, and the save looks inside those.
        """
        self._modified = True
        self._lent = True
        self._verify_all()  # (decodes what is still Packed: the app may have set it by then)
        self._unchecked = None  # check everything at the save: it may have been changed
        self.accessed = True

    def mark_accessed(self) -> None:
        """Record that the app read the session (Starlette's ``request.session`` calls it)."""
        self.accessed = True

    def __repr__(self) -> str:  # never the id itself
        tag = log_id(self._sid) if self._sid else "(no id yet)"
        return f"<SessionStore {tag} keys={_len(self)} new={self._new}>"

    # -- what the app gets hold of ------------------------------------------------------

    # -- mapping (every dict method that reads or writes the data) -------------------

    def __getitem__(self, key: str) -> Any:
        if self._blocked is not None:
            raise self._blocked
        self.accessed = True
        value = dict.__getitem__(self, key)
        if type(value) in LENDABLE:
            value = self._lend(key)
            if value is _DROPPED:  # an unstorable value from the row
                raise KeyError(key)
        return value

    def __setitem__(self, key: str, value: Any) -> None:
        if self._blocked is not None:
            raise self._blocked
        check_value(key, value)
        self.accessed = True
        self._modified = True
        if type(value) in NESTED:  # the app still holds it, and may change it later
            self._lent = True
        if self._unchecked is not None:
            self._unchecked.discard(key)
        _set(self, key, value)

    def __delitem__(self, key: str) -> None:
        if self._blocked is not None:
            raise self._blocked
        self.accessed = True
        _del(self, key)
        self._modified = True
        if self._unchecked is not None:
            self._unchecked.discard(key)

    def __iter__(self) -> Iterator[str]:
        if self._blocked is not None:
            raise self._blocked
        self.accessed = True
        self._verify_all()  # the keys of values dropped when read must not be listed
        return dict.__iter__(self)

    def __reversed__(self) -> Iterator[str]:
        self._check()
        self.accessed = True
        self._verify_all()
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
        unchecked = self._unchecked
        if unchecked is not None and key in unchecked:
            self._verified(key)  # (so `k in session` and then `session[k]` agree)
        return _contains(self, key)

    def get(self, key: str, default: Any = None) -> Any:
        if self._blocked is not None:
            raise self._blocked
        self.accessed = True
        value = _get(self, key, default)
        if type(value) in LENDABLE:
            value = self._lend(key)
            if value is _DROPPED:
                return default
        return value

    def keys(self) -> dict_keys[str, Any]:
        self._check()
        self.accessed = True
        self._verify_all()
        return dict.keys(self)

    def values(self) -> dict_values[str, Any]:
        self._check()
        self.accessed = True
        self._lend_all()
        return _values(self)

    def items(self) -> dict_items[str, Any]:
        self._check()
        self.accessed = True
        self._lend_all()
        return _items(self)

    def copy(self) -> dict[str, Any]:
        """A plain ``dict`` of the data (a snapshot: changing it changes nothing stored)."""
        self._check()
        self.accessed = True
        self._lend_all()  # a shallow copy: its lists and dicts are the store's own
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

    def __eq__(self, other: object) -> bool:
        self._check()
        self.accessed = True
        self._verify_all()  # values still Packed are compared decoded
        if isinstance(other, SessionStore) and other is not self:
            other._check()
            other._verify_all()
        return dict.__eq__(self, other)

    def __ne__(self, other: object) -> bool:
        equal = self.__eq__(other)
        return equal if equal is NotImplemented else not equal

    def update(self, *args: Any, **kwargs: Any) -> None:
        self._check()
        incoming = dict(*args, **kwargs)
        for key, value in incoming.items():
            check_value(key, value)  # all checked before anything changes
        self.accessed = True
        self._modified = True
        if holds_containers(incoming):
            self._lent = True
        if self._unchecked is not None:
            self._unchecked.difference_update(incoming)
        _update(self, incoming)

    def __ior__(self, other: Any) -> SessionStore:  # type: ignore[override]
        self.update(other)
        return self

    def pop(self, key: str, *default: Any) -> Any:
        """As ``dict.pop``; a missing key with a default neither reads nor changes anything."""
        self._check()
        if len(default) > 1:
            raise TypeError(f"pop expected at most 2 arguments, got {1 + len(default)}")
        if _contains(self, key) and (
            type(dict.__getitem__(self, key)) not in LENDABLE or self._lend(key) is not _DROPPED
        ):
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
        self._lend_all()
        item = dict.popitem(self)
        self._modified = True
        return item

    def setdefault(self, key: str, default: Any = None) -> Any:
        self._check()
        self.accessed = True
        if _contains(self, key):
            value = dict.__getitem__(self, key)
            if type(value) in LENDABLE:
                value = self._lend(key)
            if value is not _DROPPED:
                return value
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
        self._unchecked = None
        if _len(self):
            self._modified = True
            _clear(self)
        if not self._new:
            self._cleared = True

    # -- the session's life ------------------------------------------------------------

    @property
    def destroyed(self) -> bool:
        """True after the row was deleted by this store (the cookie must be expired)."""
        return self._destroyed

    async def destroy(self) -> None:
        """Delete the session now; a later ``release()`` writes nothing."""
        if not self._new:
            await self._rows.delete(self.key_hash)
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
        new_sid = new_session_id()
        new_key = hash_id(new_sid)
        if not await self._rows.rename(self.key_hash, new_key):
            # The row ended meanwhile (logout, "log out everywhere"): never bring it back.
            self._forget()
            raise SessionInterrupted("the session ended before it could be given a new id")
        self._sid, self._key = new_sid, new_key

    # -- the Go store's names --------------------------------------------------------

    def set(self, key: str, value: Any) -> None:
        self[key] = value

    def delete(self, key: str) -> None:
        """Remove ``key`` if present (no error when it is not)."""
        if key in self:
            del self[key]

    def flush(self) -> None:
        self.clear()
