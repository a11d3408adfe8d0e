"""The Connect flow without a browser: press the button, answer the sandbox's consent form, follow the
callback with the state cookie, as a person's browser would."""

from __future__ import annotations

import html
import re
import secrets
from http.cookies import SimpleCookie
from urllib.parse import parse_qsl, urlsplit

import httpx

from qbo_operator.harness.sandbox.qbo import QboSandbox

STATE_COOKIE = "__Host-qbo_state"


def heading(html_text: str) -> str:
    match = re.search(r"<h1>(.*?)</h1>", html_text, re.S)
    return html.unescape(match.group(1)) if match else ""


def retry_link(html_text: str) -> str | None:
    match = re.search(r'<a class="button" href="([^"]+)">Start again</a>', html_text)
    return html.unescape(match.group(1)) if match else None


def press_connect(link: str) -> tuple[str, str]:
    """POST the Connect button: returns (Intuit authorization URL, state cookie value)."""
    resp = httpx.post(link, timeout=30)
    assert resp.status_code == 303, (resp.status_code, heading(resp.text))
    cookie: SimpleCookie = SimpleCookie()
    cookie.load(resp.headers["set-cookie"])
    morsel = cookie[STATE_COOKIE]
    assert morsel["secure"] and morsel["httponly"] and morsel["samesite"] == "Lax" and morsel["path"] == "/"
    return resp.headers["location"], morsel.value


def consent(auth_url: str, decision: str, realm: str | None = None) -> str:
    """Answer the sandbox's consent form as a person would; returns the redirect back to the gateway."""
    page = httpx.get(auth_url, timeout=30)
    assert page.status_code == 200 and 'name="decision"' in page.text, page.text[:500]
    query = dict(parse_qsl(urlsplit(auth_url).query))
    form = {k: query[k] for k in ("client_id", "redirect_uri", "response_type", "scope", "state")}
    form["decision"] = decision
    if realm is not None:
        form["realmId"] = realm
    resp = httpx.post(auth_url.split("?")[0], data=form, timeout=30)
    assert resp.status_code == 302, resp.text[:500]
    return resp.headers["location"]


def callback(url: str, cookie: str | None) -> httpx.Response:
    headers = {"Cookie": f"{STATE_COOKIE}={cookie}"} if cookie else {}
    return httpx.get(url, headers=headers, timeout=60)


def connect_via_http(link: str, realm: str, decision: str = "approve") -> httpx.Response:
    auth_url, cookie = press_connect(link)
    return callback(consent(auth_url, decision, realm), cookie)


def new_company(sb: QboSandbox, name: str = "Acme Dispensary LLC", payments: int = 0) -> str:
    """A sandbox company with a realm id no other test uses (the gateway watches every namespace)."""
    return sb.add_company(name, seed=secrets.randbelow(10**9), payments=payments)
