"""The package's exceptions: one base class so callers can catch everything we raise."""

from __future__ import annotations


class SessionError(Exception):
    """Base class of every error this package raises on purpose."""


class SessionBackendError(SessionError):
    """The database could not be reached or refused a statement; the cause is chained."""


class SessionSchemaError(SessionBackendError):
    """The session table is missing or does not have the expected columns.

    A backend error, so a request that meets it (a dropped table, a wrong ``table=``) gets
    the middleware's clean 503 like any other database failure.
    """


class SessionConfigError(SessionError, ValueError):
    """An option or DSN is invalid."""


class InvalidSessionId(SessionError, ValueError):
    """A session id that no id this package mints could look like (see ``is_valid_session_id``)."""


class SessionTooLargeError(SessionError, ValueError):
    """The encoded session exceeds ``max_size``; nothing was written."""


class SessionDecodeError(SessionError, ValueError):
    """A stored row could not be decoded (corrupted or written by something else)."""


class SessionInterrupted(SessionError):
    """The session's row vanished (logout, regeneration, expiry) before this write.

    The write is dropped rather than recreating the row: a slow request must never
    bring back a session that was ended meanwhile. ``superseded`` is True when the id was
    given a new one by a rotation (login) rather than ended: the client then already holds,
    or is about to receive, the newer cookie, which must be left alone.
    """

    def __init__(self, message: str, *, superseded: bool = False) -> None:
        super().__init__(message)
        self.superseded = superseded


class SessionConflictError(SessionError):
    """A conditional write kept losing to concurrent writers and gave up after its retries."""


class SessionNotLoaded(SessionError, RuntimeError):
    """The session was used before ``await load_session(...)`` in lazy mode."""


class SessionLockTimeout(SessionError):
    """Serialized mode could not take the session's lock in time."""
