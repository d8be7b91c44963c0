"""asgi_mysql_session: server-side sessions in MySQL/MariaDB for asyncio and ASGI apps."""

from .errors import (
    SessionBackendError,
    SessionConfigError,
    SessionConflictError,
    SessionDecodeError,
    SessionError,
    SessionInterrupted,
    SessionLockTimeout,
    SessionNotLoaded,
    SessionSchemaError,
    SessionTooLargeError,
)
from .gc import ExpirySweeper
from .ids import new_session_id
from .provider import MySQLSessionProvider, OwnedSession
from .store import SaveResult, SessionStore

__all__ = [
    "ExpirySweeper",
    "MySQLSessionProvider",
    "OwnedSession",
    "SaveResult",
    "SessionBackendError",
    "SessionConfigError",
    "SessionConflictError",
    "SessionDecodeError",
    "SessionError",
    "SessionInterrupted",
    "SessionLockTimeout",
    "SessionNotLoaded",
    "SessionSchemaError",
    "SessionStore",
    "SessionTooLargeError",
    "new_session_id",
]
