"""The demo page in headless Chromium, on the browser's real cookie jar (see conftest.py)."""

from __future__ import annotations

import dataclasses
import os
from pathlib import Path
from urllib.parse import urlencode

from conftest import AppServer
from playwright.sync_api import Browser, BrowserContext, Page, Request, expect

USER = "ada"


def session_cookie(
    context: BrowserContext, name: str = "session", domain: str | None = None
) -> dict[str, object]:
    cookies = [c for c in context.cookies() if c["name"] == name and domain in (None, c["domain"])]
    assert len(cookies) == 1, context.cookies()
    return dict(cookies[0])


def log_in(page: Page, server: AppServer, user: str = USER) -> None:
    page.goto(f"{server.url}/")
    page.fill("#user-input", user)
    page.click("#login-button")
    expect(page.locator("#user")).to_have_text(user)


def at(server: AppServer, url: str) -> AppServer:
    """The same server reached at another base URL (another host name for 127.0.0.1)."""
    return dataclasses.replace(server, url=url)


def sent_cookie(request: Request) -> str:
    """The Cookie header this request really carried ('' for none)."""
    return request.all_headers().get("cookie", "")


def test_cookie_is_httponly_and_the_id_changes_at_login(
    context: BrowserContext, server: AppServer, tmp_path: Path
) -> None:
    page = context.new_page()
    page.goto(f"{server.url}/")
    expect(page.locator("#login")).to_be_visible()
    anonymous = session_cookie(context)  # the login form's CSRF token lives in the session
    assert anonymous["httpOnly"] is True
    assert anonymous["sameSite"] == "Lax"
    assert anonymous["secure"] is False  # plain http, secure=None: no Secure attribute
    assert page.evaluate("document.cookie") == ""  # invisible to scripts

    log_in(page, server)
    logged_in = session_cookie(context)
    assert logged_in["value"] != anonymous["value"]  # regenerate_session at login
    assert logged_in["httpOnly"] is True
    assert page.evaluate("document.cookie") == ""
    expect(page.locator("#sessions tr.current")).to_contain_text("this browser")

    page.click("#increment")
    expect(page.locator("#counter")).to_have_text("1")
    page.click("#increment")
    expect(page.locator("#counter")).to_have_text("2")
    shot = Path(os.environ.get("DEMO_SCREENSHOT", tmp_path / "demo-page.png"))
    page.screenshot(path=str(shot), full_page=True)
    assert shot.stat().st_size > 0


def test_a_form_from_another_site_is_refused(
    context: BrowserContext, server: AppServer, attacker: str
) -> None:
    page = context.new_page()
    log_in(page, server)

    # The app's own form: the cookie goes along, the token matches, the counter moves.
    with page.expect_request(f"{server.url}/counter") as own:
        page.click("#increment")
    expect(page.locator("#counter")).to_have_text("1")
    assert "session=" in sent_cookie(own.value)

    # The same POST from another site (127.0.0.1 is not the same site as localhost), even
    # carrying the right token (as if it had leaked): SameSite=Lax keeps the cookie home, so
    # the request arrives without a session and the CSRF check refuses it.
    token = page.locator("input[name=csrf]").first.input_value()
    for csrf in ("forged", token):
        query = urlencode({"target": f"{server.url}/counter", "csrf": csrf})
        page.goto(f"{attacker}/attack?{query}")
        with page.expect_response(f"{server.url}/counter") as answer:
            page.click("#prize")
        assert answer.value.status == 403
        assert "session=" not in sent_cookie(answer.value.request)
        expect(page.locator("#error")).to_be_visible()

    # A same-site request with the cookie but without the token is refused as well.
    page.goto(f"{server.url}/")
    status = page.evaluate("fetch('/counter', {method: 'POST'}).then(r => r.status)")
    assert status == 403
    wrong = page.evaluate(
        "fetch('/counter', {method: 'POST', headers: {'X-CSRF-Token': 'wrong'}}).then(r => r.status)"
    )
    assert wrong == 403
    page.reload()
    expect(page.locator("#counter")).to_have_text("1")  # none of the refused posts counted


def test_host_cookie_over_https(context: BrowserContext, secure_server: AppServer) -> None:
    assert secure_server.url.startswith("https://localhost:")
    page = context.new_page()
    page.goto(f"{secure_server.url}/")
    anonymous = session_cookie(context, "__Host-session")
    assert anonymous["secure"] is True and anonymous["httpOnly"] is True and anonymous["path"] == "/"
    with page.expect_request(f"{secure_server.url}/login") as login:
        log_in(page, secure_server)  # needs the cookie back: the CSRF token is in the session
    assert "__Host-session=" in sent_cookie(login.value)
    assert session_cookie(context, "__Host-session")["value"] != anonymous["value"]
    page.click("#increment")
    expect(page.locator("#counter")).to_have_text("1")
    assert page.evaluate("document.cookie") == ""


def test_default_cookie_logs_in_over_plain_http(context: BrowserContext, server: AppServer) -> None:
    """secure=None: no Secure attribute on http, so any http host works (not only loopback)."""
    port = server.url.rsplit(":", 1)[1]
    for url in (server.url, f"http://demo.test:{port}"):
        page = context.new_page()
        log_in(page, at(server, url))
        assert session_cookie(context, domain=url.split("//")[1].split(":")[0])["secure"] is False
        page.reload()
        expect(page.locator("#user")).to_have_text(USER)
        page.close()


def test_back_after_logout_does_not_show_the_private_page(context: BrowserContext, server: AppServer) -> None:
    """Passes even without ``no-store``: the page varies on Cookie and logout expired the cookie.
    The next test is the one that needs ``no-store``. (Playwright turns the back/forward cache
    off, so these are about the HTTP cache.)"""
    page = context.new_page()
    log_in(page, server)
    page.click("#increment")
    expect(page.locator("#counter")).to_have_text("1")
    page.click("#logout")
    expect(page.locator("#login")).to_be_visible()
    page.go_back()
    page.wait_for_load_state()
    assert USER not in page.content()
    expect(page.locator("#user")).to_have_count(0)
    expect(page.locator("#login")).to_be_visible()  # fetched again: the anonymous page


SET_ON_SIGNAL = """
key => {
  const channel = new BroadcastChannel('go');
  window.done = new Promise(resolve => {
    channel.onmessage = async event => {
      const token = document.querySelector('input[name=csrf]').value;
      const answer = await fetch('/' + key, {
        method: 'POST',
        headers: {'X-CSRF-Token': token, 'Content-Type': 'application/x-www-form-urlencoded'},
        body: 'value=' + encodeURIComponent(event.data[key]),
      });
      channel.close();
      resolve(answer.status);
    };
  });
}
"""


def test_two_tabs_change_different_keys_at_once(context: BrowserContext, server: AppServer) -> None:
    first, second = context.new_page(), context.new_page()
    log_in(first, server)
    second.goto(f"{server.url}/")
    expect(second.locator("#user")).to_have_text(USER)  # one context: one cookie jar, one session
    conflicts_before = server.metric("asgi_mysql_session_write_conflicts_total")
    for round in range(8):
        values = {"theme": f"dark-{round}", "language": f"fr-{round}"}
        first.evaluate(SET_ON_SIGNAL, "theme")
        second.evaluate(SET_ON_SIGNAL, "language")
        # One message reaches both tabs' listeners at once: two POSTs of one session in flight.
        first.evaluate("values => new BroadcastChannel('go').postMessage(values)", values)
        assert first.evaluate("window.done") == 200
        assert second.evaluate("window.done") == 200
        state = first.evaluate("fetch('/').then(r => r.json())")
        assert (state["theme"], state["language"]) == (values["theme"], values["language"])
    first.reload()
    expect(first.locator("#theme")).to_have_text("dark-7")
    expect(first.locator("#language")).to_have_text("fr-7")
    conflicts = server.metric("asgi_mysql_session_write_conflicts_total") - conflicts_before
    print(f"{server.app}: {conflicts:g} write conflicts merged in 8 rounds of two concurrent writes")


def test_secure_cookie_needs_https_except_on_loopback(
    context: BrowserContext, secure_cookie_on_http: AppServer
) -> None:
    """The secure configuration over plain http: Chromium keeps a Secure cookie from http only
    when the host is loopback (localhost, 127.0.0.1 count as secure contexts); any other name
    (demo.test, mapped to 127.0.0.1 by --host-resolver-rules) drops it, so login is refused."""
    port = secure_cookie_on_http.url.rsplit(":", 1)[1]
    for host in ("localhost", "127.0.0.1"):
        context.clear_cookies()
        page = context.new_page()
        log_in(page, at(secure_cookie_on_http, f"http://{host}:{port}"))
        assert session_cookie(context, "__Host-session")["secure"] is True
        page.close()
    context.clear_cookies()
    page = context.new_page()
    page.goto(f"http://demo.test:{port}/")
    assert context.cookies() == []  # Set-Cookie: __Host-session=...; Secure, from http: dropped
    page.fill("#user-input", USER)
    with page.expect_response(f"http://demo.test:{port}/login") as answer:
        page.click("#login-button")
    assert answer.value.status == 403  # no cookie came back: no session, no CSRF token


def test_back_after_logout_elsewhere_does_not_show_the_private_page(
    browser: Browser, context: BrowserContext, server: AppServer
) -> None:
    """The cookie of this browser does not change when another device logs out everywhere, so
    only ``no-store`` keeps the HTTP cache's copy of the private page from being shown (checked:
    this test fails when demo_page.NO_STORE is emptied)."""
    page = context.new_page()
    log_in(page, server)
    page.goto(f"{server.url}/whoami")
    other = browser.new_context()
    try:
        log_in(other.new_page(), server)
        other.pages[0].click("#logout-everywhere")
        expect(other.pages[0].locator("#login")).to_be_visible()
    finally:
        other.close()
    page.go_back()
    page.wait_for_load_state()
    assert USER not in page.content()
    expect(page.locator("#login")).to_be_visible()
