"""Session ids: how they are made, how they are recognised, and how they are stored."""

from __future__ import annotations

import hashlib
import re
import secrets

#: Random bytes in a new id: 256 bits, far above OWASP's 64-bit floor.
ID_BYTES = 32

# Anything we accept from a client must look like an id we (or the Go provider's hex ids)
# could have minted: URL-safe alphabet, 16..128 characters. Everything else is "not found"
# without a database round trip.
_ID_SHAPE = re.compile(r"[A-Za-z0-9_-]{16,128}")


def new_session_id() -> str:
    """A fresh URL-safe id from the OS CSPRNG (43 characters, 256 bits)."""
    return secrets.token_urlsafe(ID_BYTES)


def is_well_formed(sid: object) -> bool:
    """Cheap shape check done before any query, so junk never reaches the database."""
    return isinstance(sid, str) and _ID_SHAPE.fullmatch(sid) is not None


def is_valid_session_id(sid: object) -> bool:
    """Whether ``sid`` could be an id this package minted: check ids from your own clients
    with it before ``provider.read``/``exist``/``destroy``, which refuse malformed ids
    (``provider.load`` applies it for you)."""
    return is_well_formed(sid)


def hash_id(sid: str) -> str:
    """SHA-256 hex of the id: what ``session_key`` holds, so a leaked table cannot be replayed."""
    return hashlib.sha256(sid.encode("utf-8", "surrogatepass")).hexdigest()


def log_id(sid: str) -> str:
    """A short, non-reversible tag for log lines; raw ids never appear in logs."""
    return hash_id(sid)[:12]
