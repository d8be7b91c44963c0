"""asgi_mysql_session: server-side sessions in MySQL/MariaDB for asyncio and ASGI apps."""

#: The one place the version is written: pyproject.toml reads it (``tool.setuptools.dynamic``).
__version__ = "0.1.0"

from .dependencies import session_dependency
from .errors import (
    InvalidSessionId,
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
from .ids import is_valid_session_id, new_session_id
from .metrics import PrometheusObserver, SessionObserver
from .middleware import SessionMiddleware
from .pool import PoolState
from .provider import MySQLSessionProvider, OwnedSession
from .requests import load_session, regenerate_session, save_session
from .schema import (
    RowsConverted,
    SchemaReport,
    SessionSchema,
    SessionStats,
    UpgradeReport,
    UpgradeStep,
)
from .store import SaveResult, SessionStore

__all__ = [
    "ExpirySweeper",
    "InvalidSessionId",
    "MySQLSessionProvider",
    "OwnedSession",
    "PoolState",
    "PrometheusObserver",
    "RowsConverted",
    "SaveResult",
    "SchemaReport",
    "SessionBackendError",
    "SessionConfigError",
    "SessionConflictError",
    "SessionDecodeError",
    "SessionError",
    "SessionInterrupted",
    "SessionLockTimeout",
    "SessionMiddleware",
    "SessionNotLoaded",
    "SessionObserver",
    "SessionSchema",
    "SessionSchemaError",
    "SessionStats",
    "SessionStore",
    "SessionTooLargeError",
    "UpgradeReport",
    "UpgradeStep",
    "__version__",
    "is_valid_session_id",
    "load_session",
    "new_session_id",
    "regenerate_session",
    "save_session",
    "session_dependency",
]
