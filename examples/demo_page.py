"""What the two example apps share: the demo page's HTML, the CSRF check, HTML-or-JSON answers.

``examples/starlette_app.py`` and ``examples/fastapi_app.py`` are the same app: the same routes,
methods and answers, one wired with Starlette routes, the other with FastAPI's session
dependency.

Routes (both apps):

======  ======================  ==========================================================
method  path                    what it does
======  ======================  ==========================================================
GET     ``/``                   the page: a login form when anonymous; when logged in the
                                user, a counter, preferences, "your sessions"
GET     ``/login``              the page too (the login form when anonymous)
POST    ``/login``              field ``user`` (form, or ``?user=``): log in; the id and
                                the CSRF token are renewed, the session gets an owner
POST    ``/counter``            add one to the session's counter
POST    ``/theme``              field ``value``: store it as the session's ``theme``
POST    ``/language``           field ``value``: store it as the session's ``language``
POST    ``/logout``             end this session (row deleted, cookie expired)
POST    ``/logout-everywhere``  end every session of this user (``destroy_owner``)
GET     ``/csrf``               this session's CSRF token as plain text (minted if needed)
GET     ``/whoami``             ``{"user": ...}``
GET     ``/health``             ``{"ok": true}``, never touches the session
GET     ``/metrics``            Prometheus metrics (with the ``[metrics]`` extra)
WS      ``/ws``                 echo, prefixed with the user name
======  ======================  ==========================================================

**HTML or JSON.** A request whose ``Accept`` header names ``text/html`` (what a browser sends
for navigations and form posts) gets HTML: the page, and a 303 redirect to ``/`` after a
POST. Any other request (curl, ``fetch()``, test clients, whose ``Accept`` is ``*/*`` or
``application/json``) gets JSON, with ``/`` answering the page's state as an object.

**CSRF.** The session holds a random token (``session["csrf"]``), minted when the page or
``GET /csrf`` is served and renewed at login. Every POST must send it back, as the form field
``csrf`` (the page's forms) or the ``X-CSRF-Token`` header (curl, ``fetch``); it is compared
with :func:`secrets.compare_digest`. When it is missing or wrong (including a request that
arrives without the session cookie, as a cross-site form post does under ``SameSite=Lax``)
the answer is 403 and nothing changes.

**Caching.** Every answer that depends on the session carries ``Cache-Control: no-store``,
so the back button after logout cannot show a private page from the browser's cache.

**Secure cookie.** ``SESSION_COOKIE_SECURE=1`` switches the apps to the cookie for https
deployments: ``__Host-session``, always ``Secure``. The default (``session``, ``Secure`` only
on https requests) also works on plain http://localhost.
"""

from __future__ import annotations

import os
import secrets
import time
from collections.abc import Iterable, Mapping, MutableMapping
from html import escape
from typing import Any
from urllib.parse import parse_qsl

from starlette.requests import HTTPConnection, Request
from starlette.responses import HTMLResponse, JSONResponse, PlainTextResponse, RedirectResponse, Response

from asgi_mysql_session import OwnedSession, SessionStore

CSRF_KEY = "csrf"  # where the session keeps its token
CSRF_FIELD = "csrf"  # the form field the page's forms send it in
CSRF_HEADER = "x-csrf-token"  # the header API clients send it in
NO_STORE = {"Cache-Control": "no-store"}
MAX_FIELD = 64  # longest user name or preference value accepted
Session = MutableMapping[str, Any]  # request.session (Starlette types it as a dict), a SessionStore


def key_hash(session: Session) -> str | None:
    """What the table stores for this session's id, to spot it in ``provider.sessions_of``."""
    return session.key_hash if isinstance(session, SessionStore) else None


def cookie_settings() -> dict[str, Any]:
    """Middleware options: the ``__Host-`` cookie when SESSION_COOKIE_SECURE=1, else the defaults."""
    if os.environ.get("SESSION_COOKIE_SECURE", "") == "1":
        return {"cookie_name": "__Host-session", "secure": True}
    return {}


# -- requests ----------------------------------------------------------------------------


def wants_html(request: HTTPConnection) -> bool:
    return "text/html" in request.headers.get("accept", "")


async def form_fields(request: Request) -> dict[str, str]:
    """The fields of an urlencoded form body (no python-multipart needed); {} for other bodies."""
    if not request.headers.get("content-type", "").startswith("application/x-www-form-urlencoded"):
        return {}
    body = (await request.body()).decode("utf-8", "replace")
    return dict(parse_qsl(body, keep_blank_values=True))


def clean(value: str | None) -> str | None:
    """A user name or preference value: stripped, 1 to MAX_FIELD characters, else None."""
    value = (value or "").strip()
    return value if 0 < len(value) <= MAX_FIELD else None


# -- CSRF --------------------------------------------------------------------------------


def csrf_token(session: Session) -> str:
    """The session's token, minted (which saves the session) when it has none."""
    token = session.get(CSRF_KEY)
    if not isinstance(token, str):
        token = renew_csrf_token(session)
    return token


def renew_csrf_token(session: Session) -> str:
    token = secrets.token_urlsafe(32)
    session[CSRF_KEY] = token
    return token


def csrf_ok(request: Request, session: Session, fields: Mapping[str, str]) -> bool:
    """True when the request carries the session's token (form field or header)."""
    expected = session.get(CSRF_KEY)
    sent = fields.get(CSRF_FIELD) or request.headers.get(CSRF_HEADER)
    if not isinstance(expected, str) or not sent:
        return False
    return secrets.compare_digest(expected.encode(), sent.encode())


async def checked_fields(request: Request, session: Session) -> dict[str, str] | None:
    """The form fields of a POST whose CSRF token is right; None when it is missing or wrong."""
    fields = await form_fields(request)
    return fields if csrf_ok(request, session, fields) else None


# -- answers -----------------------------------------------------------------------------


def refused(request: Request) -> Response:
    """403 for a POST without the right CSRF token (or without a session at all)."""
    message = "CSRF token missing or wrong (or no session): nothing was changed."
    if wants_html(request):
        body = f'<p id="error">{escape(message)}</p><p><a href="/">Back to the page</a></p>'
        return HTMLResponse(layout("Refused", body), status_code=403, headers=NO_STORE)
    return JSONResponse({"error": message}, status_code=403, headers=NO_STORE)


def invalid(request: Request, field: str) -> Response:
    message = f"{field} must be 1 to {MAX_FIELD} characters."
    if wants_html(request):
        body = f'<p id="error">{escape(message)}</p><p><a href="/">Back to the page</a></p>'
        return HTMLResponse(layout("Invalid", body), status_code=400, headers=NO_STORE)
    return JSONResponse({"error": message}, status_code=400, headers=NO_STORE)


def done(request: Request, payload: dict[str, Any]) -> Response:
    """After a POST: browsers go back to the page (303), API clients get ``payload``."""
    if wants_html(request):
        return RedirectResponse("/", status_code=303, headers=NO_STORE)
    return JSONResponse(payload, headers=NO_STORE)


def token_text(session: Session) -> Response:
    return PlainTextResponse(csrf_token(session), headers=NO_STORE)


def page(request: Request, session: Session, sessions: Iterable[OwnedSession]) -> Response:
    """``/``: the HTML page for browsers, the same state as JSON for everyone else."""
    user = session.get("user")
    if not wants_html(request):
        state = {
            "user": user,
            "n": session.get("n", 0),
            "theme": session.get("theme"),
            "language": session.get("language"),
            "sessions": [
                {"created": s.created, "expiry": s.expiry, "current": s.key_hash == key_hash(session)}
                for s in sessions
            ],
        }
        return JSONResponse(state, headers=NO_STORE)
    token = csrf_token(session)
    if user is None:
        return HTMLResponse(anonymous_html(token), headers=NO_STORE)
    return HTMLResponse(user_html(session, token, sessions), headers=NO_STORE)


# -- HTML --------------------------------------------------------------------------------

STYLE = """
body { font: 16px/1.45 system-ui, sans-serif; max-width: 40rem; margin: 2rem auto; padding: 0 1rem;
       color: #1d2330; background: #f6f7f9; }
h1 { font-size: 1.5rem; margin: 0 0 1rem; }
section { background: #fff; border: 1px solid #dde1e7; border-radius: 8px; padding: .8rem 1rem;
          margin: 0 0 1rem; }
h2 { font-size: 1rem; margin: 0 0 .5rem; color: #475063; }
form { display: inline; margin: 0; }
button { font: inherit; padding: .25rem .8rem; border-radius: 6px; border: 1px solid #8893a5;
         background: #eef1f5; cursor: pointer; }
button.danger { border-color: #b33; color: #b33; }
input[type=text] { font: inherit; padding: .2rem .4rem; width: 10rem; }
table { border-collapse: collapse; width: 100%; font-size: .9rem; }
td, th { text-align: left; padding: .2rem .4rem; border-bottom: 1px solid #eee; }
tr.current td { font-weight: 600; }
.count { font-size: 1.4rem; font-weight: 700; margin-right: .8rem; }
.muted { color: #6b7385; font-size: .85rem; }
"""


def layout(title: str, body: str) -> str:
    return (
        '<!doctype html>\n<html lang="en"><head><meta charset="utf-8">'
        '<meta name="viewport" content="width=device-width, initial-scale=1">'
        f"<title>{escape(title)}</title><style>{STYLE}</style></head>"
        f"<body>{body}</body></html>\n"
    )


def hidden_token(token: str) -> str:
    return f'<input type="hidden" name="{CSRF_FIELD}" value="{escape(token)}">'


def post_button(action: str, label: str, token: str, *, button_id: str, css: str = "") -> str:
    klass = f' class="{css}"' if css else ""
    return (
        f'<form method="post" action="{escape(action)}">{hidden_token(token)}'
        f'<button id="{button_id}"{klass}>{escape(label)}</button></form>'
    )


def when(timestamp: int) -> str:
    return time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime(timestamp))


def anonymous_html(token: str) -> str:
    body = (
        "<h1>asgi_mysql_session demo</h1>"
        '<section><h2>Log in</h2><form method="post" action="/login" id="login">'
        f'{hidden_token(token)}<label>User name <input type="text" name="user" id="user-input" '
        f'required maxlength="{MAX_FIELD}" autocomplete="username"></label> '
        '<button id="login-button">Log in</button></form>'
        '<p class="muted">No password: this page shows how the session behaves, not how to '
        "check one.</p></section>"
    )
    return layout("Log in - asgi_mysql_session demo", body)


def user_html(session: Session, token: str, sessions: Iterable[OwnedSession]) -> str:
    user = str(session.get("user"))
    n = int(session.get("n", 0))
    rows = []
    for owned in sessions:
        current = owned.key_hash == key_hash(session)
        rows.append(
            f"<tr{' class=current' if current else ''}><td>{when(owned.created)}</td>"
            f"<td>{when(owned.expiry)}</td><td>{'this browser' if current else ''}</td></tr>"
        )
    prefs = []
    for key in ("theme", "language"):
        value = session.get(key)
        prefs.append(
            f'<form method="post" action="/{key}">{hidden_token(token)}'
            f'{key}: <span id="{key}">{escape(str(value)) if value is not None else "-"}</span> '
            f'<input type="text" name="value" maxlength="{MAX_FIELD}" aria-label="{key}"> '
            f"<button>Set</button></form><br>"
        )
    everywhere, red = "logout-everywhere", "danger"
    body = (
        f'<h1>Hello, <span id="user">{escape(user)}</span></h1>'
        '<section><h2>Counter</h2><span class="count" id="counter">'
        f"{n}</span>{post_button('/counter', 'Increment', token, button_id='increment')}</section>"
        f"<section><h2>Preferences</h2>{''.join(prefs)}</section>"
        '<section><h2>Your sessions</h2><table id="sessions"><tr><th>created</th><th>expires</th>'
        f"<th></th></tr>{''.join(rows)}</table><p>"
        f"{post_button('/logout', 'Log out', token, button_id='logout')} "
        f"{post_button('/logout-everywhere', 'Log out everywhere', token, button_id=everywhere, css=red)}"
        "</p></section>"
    )
    return layout(f"{user} - asgi_mysql_session demo", body)
