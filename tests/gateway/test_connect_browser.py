"""The Connect flow in headless Chromium: link → Connect → Intuit (sandbox) → callback → token Secret."""

from __future__ import annotations

import json
import re

from playwright.sync_api import Browser, BrowserContext, Page, expect

from qbo_operator.core.models import TOKEN_KEYS, Tokens
from qbo_operator.harness.controlplane import ControlPlane
from tests.support.connect import STATE_COOKIE, new_company
from tests.support.kube import assert_not_readable, create_integration, events_text, qbi, secret_or_none, set_status
from tests.support.objects import decoded
from tests.support.paths import ARTIFACTS
from tests.support.processes import Stack, StackFactory

SHOTS = ARTIFACTS / "gateway"


def shot(page: Page, name: str) -> None:
    SHOTS.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=str(SHOTS / f"{name}.png"), full_page=True)


def showing_link(
    cluster: ControlPlane, namespace: str, stack_factory: StackFactory, status: dict[str, str], **stack: str
) -> tuple[Stack, str, str]:
    """A stack, a sandbox company, and the integration with its Connect link in status (plus `status`); the
    gateway starts afterwards (ready: its realm index holds the integration). Returns (stack, realm, link)."""
    s = stack_factory(start_gateway=False, **stack)
    realm = new_company(s.sb, "Acme Dispensary LLC")
    obj = create_integration(cluster, namespace, "acme", company_name="Acme Dispensary")
    link = s.gw.connect_link(namespace, "acme", obj["metadata"]["uid"])
    set_status(cluster, namespace, "acme", {**status, "authorizationURL": link})
    s.gw.start()
    return s, realm, link


def at_intuit(
    cluster: ControlPlane, namespace: str, stack_factory: StackFactory, browser: Browser
) -> tuple[Stack, str, str, BrowserContext, Page]:
    """`showing_link`, and a fresh browser that opened the link and pressed Connect: it is at Intuit's
    consent page. Returns (stack, realm, link, browser context, page)."""
    s, realm, link = showing_link(cluster, namespace, stack_factory, {})
    context = browser.new_context()
    page = context.new_page()
    page.goto(link)
    page.get_by_role("button", name="Connect to QuickBooks").click()
    return s, realm, link, context, page


def assert_security_headers(s: Stack, responses: list[tuple[str, int, dict[str, str]]]) -> None:
    """Every page the gateway served carried the security headers."""
    gateway_pages = [(u, st, h) for u, st, h in responses if u.startswith(s.gw.base)]
    assert len(gateway_pages) >= 3
    for url, _, headers in gateway_pages:
        assert headers["content-security-policy"].startswith("default-src 'none'"), url
        assert "frame-ancestors 'none'" in headers["content-security-policy"]
        assert headers["referrer-policy"] == "no-referrer"
        assert headers["x-content-type-options"] == "nosniff"
        assert headers["cache-control"] == "no-store"


def assert_token_secret(cluster: ControlPlane, namespace: str, realm: str) -> Tokens:
    """The token Secret the gateway filled: the operator's (labelled, owned by the integration, the gateway left
    its one reference alone), holding every token key for `realm`. Returns its tokens."""
    secret = secret_or_none(cluster, namespace, "acme-qbo-tokens")
    assert secret is not None
    assert secret["type"] == "Opaque"
    assert secret["metadata"]["labels"] == {
        "app.kubernetes.io/managed-by": "qbo-operator",
        "integrations.greencheckverified.com/integration": "acme",
    }
    uid = qbi(cluster, namespace, "acme")["metadata"]["uid"]
    (owner,) = secret["metadata"]["ownerReferences"]
    assert (owner["kind"], owner["name"], owner["uid"]) == ("QuickbooksIntegration", "acme", uid)
    assert owner.get("controller") is True
    data = decoded(secret)
    assert set(TOKEN_KEYS) <= set(data)
    assert "refresh_token_hard_expires_at" in data  # the sandbox sends it when asked, as Intuit does
    tokens = Tokens.from_secret_data(secret["data"])
    assert tokens.realm_id == realm and tokens.scope == "com.intuit.quickbooks.accounting"
    assert tokens.expires_at > tokens.connected_at
    return tokens


def test_connect_end_to_end_in_chromium(
    cluster: ControlPlane, namespace: str, stack_factory: StackFactory, browser: Browser
) -> None:
    # The gateway on http://localhost and Intuit on http://127.0.0.1: different sites, as in production,
    # so the SameSite=Lax state cookie must survive a cross-site redirect back.
    s, realm, link = showing_link(cluster, namespace, stack_factory, {"phase": "Pending"}, host_name="localhost")

    context = browser.new_context()
    page = context.new_page()
    responses: list[tuple[str, int, dict[str, str]]] = []
    page.on("response", lambda r: responses.append((r.url, r.status, r.headers)))
    console: list[str] = []
    page.on("console", lambda m: console.append(f"{m.type}: {m.text} at {m.location.get('url')}"))

    page.goto(link)
    expect(page.get_by_role("heading", level=1)).to_have_text("Connect Acme Dispensary to Green Check")
    for shared in (
        "invoice number, date and amount",
        "payment ID, date and amount",
        "products sold",
        "customer's name",
    ):
        expect(page.get_by_text(shared)).to_be_visible()
    shot(page, "1-connect-page")

    page.get_by_role("button", name="Connect to QuickBooks").click()
    page.wait_for_url(re.compile(r"^http://127\.0\.0\.1:\d+/connect/oauth2\?"))
    cookies = {c["name"]: c for c in context.cookies()}
    state_cookie = cookies[STATE_COOKIE]
    assert state_cookie["secure"] and state_cookie["httpOnly"] and state_cookie["sameSite"] == "Lax"
    assert state_cookie["path"] == "/" and state_cookie["domain"] == "localhost"
    assert "scope=com.intuit.quickbooks.accounting" in page.url
    page.select_option("#realmId", realm)
    shot(page, "2-intuit-consent")

    page.get_by_role("button", name="Approve").click()
    page.wait_for_url(re.compile(r"^http://localhost:\d+/oauth/callback\?"))
    expect(page.get_by_role("heading", level=1)).to_have_text("QuickBooks is connected")
    expect(page.get_by_text("start loading into Green Check the next day")).to_be_visible()
    shot(page, "3-connected")
    # No CSP violations or other errors on the gateway's pages (the sandbox's favicon 404 is not ours).
    assert not [m for m in console if s.gw.base in m or "Content Security Policy" in m], console

    assert_security_headers(s, responses)
    tokens = assert_token_secret(cluster, namespace, realm)

    # No token, code or key anywhere a person or a scraper can read it.
    code = dict(re.findall(r"[?&](code|state)=([^&]+)", page.url))["code"]
    sensitive = [tokens.access_token, tokens.refresh_token, code, *s.keys.secret_values()]
    after = qbi(cluster, namespace, "acme")
    readable = {
        "gateway log": s.gw.log(),
        "events": events_text(cluster, namespace),
        "status": json.dumps(after.get("status")),
        "metrics": s.gw.metrics().__repr__(),
    }
    assert_not_readable(sensitive, readable)
    assert s.gw.metric("qbo_oauth_callbacks_total", result="connected") == 1
    assert '"reason": "Authorized"' in readable["events"]
    context.close()


def test_deny_at_intuit_shows_a_clear_page_and_writes_nothing(
    cluster: ControlPlane, namespace: str, stack_factory: StackFactory, browser: Browser
) -> None:
    s, _, link, context, page = at_intuit(cluster, namespace, stack_factory, browser)
    page.get_by_role("button", name="Deny").click()
    page.wait_for_url(re.compile(r"/oauth/callback\?"))
    expect(page.get_by_role("heading", level=1)).to_have_text("QuickBooks was not connected")
    expect(page.get_by_text("Access was declined at Intuit")).to_be_visible()
    start_again = page.get_by_role("link", name="Start again")
    expect(start_again).to_have_attribute("href", link)
    shot(page, "denied")

    start_again.click()  # the offered link works
    expect(page.get_by_role("heading", level=1)).to_have_text("Connect Acme Dispensary to Green Check")
    assert not (secret_or_none(cluster, namespace, "acme-qbo-tokens") or {}).get("data")  # still empty
    assert s.gw.metric("qbo_oauth_callbacks_total", result="denied") == 1
    context.close()


def test_reloading_the_success_page_is_a_replay_and_changes_nothing(
    cluster: ControlPlane, namespace: str, stack_factory: StackFactory, browser: Browser
) -> None:
    s, realm, _, context, page = at_intuit(cluster, namespace, stack_factory, browser)
    page.select_option("#realmId", realm)
    page.get_by_role("button", name="Approve").click()
    expect(page.get_by_role("heading", level=1)).to_have_text("QuickBooks is connected")
    secret = secret_or_none(cluster, namespace, "acme-qbo-tokens")
    assert secret is not None

    page.reload()
    expect(page.get_by_role("heading", level=1)).to_have_text("This sign-in was already used")
    shot(page, "replayed")
    again = secret_or_none(cluster, namespace, "acme-qbo-tokens")
    assert again is not None
    assert again["metadata"]["resourceVersion"] == secret["metadata"]["resourceVersion"]
    assert s.gw.metric("qbo_oauth_callbacks_total", result="replayed") == 1
    context.close()
