"""Which event loop runs us: aiomysql needs asyncio's, so anything else is refused clearly."""

from __future__ import annotations

import asyncio
import sys

from .errors import SessionConfigError


def async_library() -> str | None:
    """ "asyncio", "trio" (or another library's name) for the running code; None outside any."""
    try:
        asyncio.get_running_loop()
    except RuntimeError:
        pass
    else:
        return "asyncio"
    trio = sys.modules.get("trio")
    if trio is not None:
        try:
            trio.lowlevel.current_task()
        except RuntimeError:
            pass
        else:
            return "trio"
    sniffio = sys.modules.get("sniffio")
    if sniffio is not None:
        try:
            return str(sniffio.current_async_library())
        except Exception:  # sniffio.AsyncLibraryNotFoundError, or whatever a version raises
            pass
    return None


def require_asyncio() -> asyncio.AbstractEventLoop:
    """The running asyncio loop, or a ``SessionConfigError`` that says why there is none."""
    try:
        return asyncio.get_running_loop()
    except RuntimeError:
        pass
    library = async_library()
    where = f"this code runs under {library}" if library else "no asyncio event loop is running here"
    raise SessionConfigError(
        f"asgi_mysql_session needs asyncio: its MySQL driver, aiomysql, runs only on asyncio's "
        f"event loop, and {where}. Serve the app on asyncio (uvicorn; hypercorn without "
        "`--worker-class trio`; anyio and Starlette's TestClient with backend='asyncio')."
    )
