"""How the session id travels: read from a request's cookie (or header), written back, and
the caching rules of a response that carries one.

The cookie follows Starlette's text (``name=value; path=/; Max-Age=N; httponly;
samesite=lax; secure; domain=D; partitioned``), so swapping Starlette's SessionMiddleware
for ours changes nothing a browser sees but the value.
"""

from __future__ import annotations

import logging
import re
from collections.abc import MutableMapping
from operator import itemgetter
from typing import Any, Literal

from .errors import SessionConfigError
from .ids import is_well_formed

logger = logging.getLogger("asgi_mysql_session")

Scope = MutableMapping[str, Any]
Header = tuple[bytes, bytes]

#: Headers that tell caches what to store (NUL-framed for a substring search of the names).
_CACHE_HEADERS = (b"\0cache-control\0", b"\0cdn-cache-control\0", b"\0surrogate-control\0")
_TOKEN = re.compile(r"[!#$%&'*+\-.^_`|~0-9A-Za-z]+")
_EXPIRED = "Thu, 01 Jan 1970 00:00:00 GMT"


class IdTransport:
    """The cookie (or header) settings of a middleware, checked once, and what they produce."""

    def __init__(
        self,
        *,
        cookie_name: str,
        max_age: int | Literal["deadline"] | None,
        path: str,
        domain: str | None,
        secure: bool | None,
        httponly: bool,
        samesite: Literal["lax", "strict", "none"],
        header_name: str | None,
        partitioned: bool,
    ) -> None:
        if not _TOKEN.fullmatch(cookie_name):
            raise SessionConfigError(f"invalid cookie name {cookie_name!r}")
        if samesite not in ("lax", "strict", "none"):
            raise SessionConfigError("samesite must be 'lax', 'strict' or 'none'")
        if cookie_name.startswith("__Host-"):
            if domain is not None or path != "/" or secure is False:
                raise SessionConfigError("a __Host- cookie needs path='/', no domain, and Secure")
            secure = True
        if cookie_name.startswith("__Secure-"):
            if secure is False:
                raise SessionConfigError("a __Secure- cookie needs Secure")
            secure = True
        if partitioned:  # CHIPS: browsers take a Partitioned cookie only with Secure
            if secure is False:
                raise SessionConfigError("a partitioned cookie needs Secure")
            secure = True
        if samesite == "none" and secure is False:
            raise SessionConfigError("SameSite=None cookies must be Secure")
        if max_age != "deadline" and max_age is not None and (type(max_age) is not int):
            raise SessionConfigError("max_age must be 'deadline', None or an int")
        if header_name is not None and not _TOKEN.fullmatch(header_name):
            raise SessionConfigError(f"invalid header name {header_name!r}")
        self.cookie_name = cookie_name
        self._cookie_prefix = cookie_name + "="
        self.max_age = max_age
        self.secure = secure
        self.header_name = header_name.lower().encode("latin-1") if header_name else None
        # Starlette's order and spelling: name=value; path=/; Max-Age=N; httponly;
        # samesite=lax; secure; domain=D; partitioned (Secure is decided per request).
        self._path = f"; path={path}"
        self._flags = "; httponly; samesite=" + samesite if httponly else "; samesite=" + samesite
        self._scope_flags = f"; domain={domain}" if domain else ""
        if partitioned:
            self._scope_flags += "; partitioned"
        #: ``Vary`` of a response that used the session.
        self.vary = b"Cookie" if self.header_name is None else self.header_name
        self._warned_cache = False

    def presented(self, scope: Scope) -> str | None:
        """The first id in the configured transport; query strings and forms are never read."""
        wanted = self.header_name
        if wanted is not None:
            for name, value in scope["headers"]:
                if name == wanted:
                    return str(value.decode("latin-1").strip())
            return None
        prefix = self._cookie_prefix
        found: str | None = None
        for name, value in scope["headers"]:
            if name != b"cookie":
                continue
            header: str = value.decode("latin-1")
            if prefix not in header:
                continue
            for part in header.split(";"):
                part = part.strip()
                if part.startswith(prefix):
                    candidate = part[len(prefix) :]
                    if is_well_formed(candidate):
                        return candidate
                    found = found or candidate
        return found

    def uncacheable(self, headers: list[Header]) -> list[Header]:
        """A response that issues or clears an id is never stored by a shared cache.

        Whatever the app said: ``Vary: Cookie`` does not protect visitors who sent no
        cookie, and a shared cache could hand one id to all of them. An app policy that
        already keeps shared caches out (``private`` or ``no-store``) is kept.
        """
        names = b"\0" + b"\0".join(map(itemgetter(0), headers)).lower() + b"\0"  # C calls, no loop
        if b"control\0" not in names:  # none of _CACHE_HEADERS (all end so): one C call
            headers.append((b"cache-control", b"no-store"))
            return headers
        kept: list[Header] = []
        policy: list[bytes] = []
        others = 0  # CDN-specific headers, which override Cache-Control there
        for name, value in headers:
            lowered = name.lower()
            if lowered == b"cache-control":
                policy.append(value)
            elif b"\0" + lowered + b"\0" in _CACHE_HEADERS:
                others += 1
            else:
                kept.append((name, value))
        if not policy and not others:  # another "...-control" header: nothing to override
            kept.append((b"cache-control", b"no-store"))
            return kept
        directives = {d.strip().split(b"=")[0].lower() for v in policy for d in v.split(b",")}
        if others or not directives & {b"private", b"no-store"}:
            if not self._warned_cache:
                self._warned_cache = True
                logger.warning(
                    "the app's caching headers on a response that sets the session cookie were "
                    "replaced with Cache-Control: no-store (a shared cache must never store a "
                    "session id); logged once"
                )
            kept.append((b"cache-control", b"no-store"))
        else:
            kept.extend((b"cache-control", value) for value in policy)
        return kept

    def is_secure(self, scope: Scope) -> bool:
        if self.secure is not None:
            return self.secure
        return scope.get("scheme") in ("https", "wss")

    def id_header(self, session_id: str, remaining: int, scope: Scope) -> Header:
        if self.header_name is not None:
            return self.header_name, session_id.encode()
        cookie = f"{self.cookie_name}={session_id}{self._path}"
        if self.max_age == "deadline":
            cookie += f"; Max-Age={remaining}"
        elif self.max_age is not None:
            cookie += f"; Max-Age={min(remaining, self.max_age)}"
        cookie += self._flags
        if self.is_secure(scope):
            cookie += "; secure"
        return b"set-cookie", (cookie + self._scope_flags).encode("latin-1")

    def expire_header(self, scope: Scope) -> Header:
        if self.header_name is not None:
            return self.header_name, b""
        cookie = f"{self.cookie_name}={self._path}; Max-Age=0; expires={_EXPIRED}{self._flags}"
        if self.is_secure(scope):
            cookie += "; secure"
        return b"set-cookie", (cookie + self._scope_flags).encode("latin-1")
