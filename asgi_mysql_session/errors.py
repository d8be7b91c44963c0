"""The package's exceptions: one base class so callers can catch everything we raise."""

from __future__ import annotations


class SessionError(Exception):
    """Base class of every error this package raises on purpose."""


class SessionBackendError(SessionError):
    """The database could not be reached or refused a statement; the cause is chained."""


class SessionSchemaError(SessionError):
    """The session table is missing or does not have the expected columns."""


class SessionConfigError(SessionError, ValueError):
    """An option or DSN is invalid."""


class SessionTooLargeError(SessionError, ValueError):
    """The encoded session exceeds ``max_size``; nothing was written."""


class SessionDecodeError(SessionError, ValueError):
    """A stored row could not be decoded (corrupted or written by something else)."""


class SessionInterrupted(SessionError):
    """The session's row vanished (logout, regeneration, expiry) before this write.

    The write is dropped rather than recreating the row: a slow request must never
    bring back a session that was ended meanwhile.
    """


class SessionConflictError(SessionError):
    """A conditional write kept losing to concurrent writers and gave up after its retries."""


class SessionNotLoaded(SessionError, RuntimeError):
    """The session was used before ``await load_session(...)`` in lazy mode."""


class SessionLockTimeout(SessionError):
    """Serialized mode could not take the session's lock in time."""
