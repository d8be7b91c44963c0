"""What a Starlette SessionMiddleware user relies on: cookie text, Vary, max_age, partitioned."""

from __future__ import annotations

import pytest
from conftest import StatementCounter, make_session
from sessionapp import client, make_app

from asgi_mysql_session import MySQLSessionProvider, SessionConfigError, SessionMiddleware

UNKNOWN = "x" * 43  # well formed, never issued


async def test_partitioned_cookies_carry_the_attribute_and_secure(provider: MySQLSessionProvider) -> None:
    async with client(make_app(provider, partitioned=True, samesite="none"), "https://testserver") as http:
        header = (await http.get("/set", params={"a": "1"})).headers["set-cookie"]
        assert header.endswith("; httponly; samesite=none; secure; partitioned")
        expired = (await http.get("/logout")).headers["set-cookie"]
        assert expired.startswith("session=; path=/; Max-Age=0; expires=Thu, 01 Jan 1970 00:00:00 GMT;")
        assert expired.endswith("; secure; partitioned")


def test_partitioned_without_secure_is_refused(provider: MySQLSessionProvider) -> None:
    with pytest.raises(SessionConfigError, match="partitioned"):
        SessionMiddleware(make_app(provider), provider, partitioned=True, secure=False)


async def test_domain_is_spelled_as_starlette_does(provider: MySQLSessionProvider) -> None:
    async with client(make_app(provider, domain="example.com", path="/app")) as http:
        header = (await http.get("/set", params={"a": "1"})).headers["set-cookie"]
    assert "; path=/app; Max-Age=" in header and header.endswith("; samesite=lax; domain=example.com")


@pytest.mark.parametrize("max_age", [0, -1])
async def test_zero_and_negative_max_age_are_sent_as_is(provider: MySQLSessionProvider, max_age: int) -> None:
    async with client(make_app(provider, max_age=max_age)) as http:
        response = await http.get("/set", params={"a": "1"})
    assert f"; Max-Age={max_age}; " in response.headers["set-cookie"]


async def test_taking_request_session_adds_vary_as_starlette_does(provider: MySQLSessionProvider) -> None:
    sid = await make_session(provider, user="ada")
    async with client(make_app(provider)) as http:
        http.cookies.set("session", sid)
        touched = await http.get("/touch")
        untouched = await http.get("/noop")
    assert touched.headers["vary"] == "Cookie" and "set-cookie" not in touched.headers
    assert "vary" not in untouched.headers and "set-cookie" not in untouched.headers


async def test_an_unknown_cookie_is_left_alone_by_routes_that_never_use_the_session(
    provider: MySQLSessionProvider, statements: StatementCounter
) -> None:
    async with client(make_app(provider)) as http:
        http.cookies.set("session", UNKNOWN)
        statements.start()
        untouched = await http.get("/noop")
        assert statements.delta() == {"select": 1}  # eager mode reads it, as before
        assert "set-cookie" not in untouched.headers and "vary" not in untouched.headers
        used = await http.get("/read")  # the next route that uses the session clears it
    assert used.headers["set-cookie"].startswith("session=; path=/; Max-Age=0; ")
    assert used.headers["vary"] == "Cookie"
