"""FastAPI (and Starlette) dependency that hands a route its loaded session."""

from __future__ import annotations

from collections.abc import AsyncIterator

from starlette.requests import HTTPConnection

from .requests import load_session
from .store import SessionStore


async def session_dependency(conn: HTTPConnection) -> AsyncIterator[SessionStore]:
    """``session: SessionStore = Depends(session_dependency)``; loads it in lazy mode.

    The middleware saves it when the response starts, so nothing happens after ``yield``.
    """
    yield await load_session(conn)
