"""The Connect flow as an attacker drives it (issue 17, findings 1 and 6; docs/security.md).

A rewritten `realmId` is refused once Intuit does not confirm it, with nothing written and the new grant
revoked at the sandbox's OAuth authority; a Connect button pressed from another site gets 403 and no
cookie; a link stops working once its integration is connected. Over real HTTP against the real API server."""

from __future__ import annotations

import json
from typing import Any

import httpx
import pytest

from qbo_operator.gateway.connect import cross_site
from qbo_operator.harness.controlplane import ControlPlane
from tests.support.connect import callback, connect_via_http, consent, heading, new_company, press_connect, retry_link
from tests.support.kube import create_integration, qbi, secret_or_none, set_status
from tests.support.ledger import Report
from tests.support.processes import Stack, StackFactory
from tests.support.wait import wait_for

SECRET = "acme-qbo-tokens"
UNVERIFIED = "QuickBooks did not confirm that company"


def pending(cluster: ControlPlane, s: Stack, namespace: str) -> str:
    """An integration showing its Connect link (as the operator sets it); the gateway started. Returns the link."""
    obj = create_integration(cluster, namespace, "acme")
    link = s.gw.connect_link(namespace, "acme", obj["metadata"]["uid"])
    set_status(cluster, namespace, "acme", {"phase": "Pending", "authorizationURL": link})
    if s.gw.proc is None:
        s.gw.start()
    return link


def rewritten(back: str, realm: str) -> str:
    """Intuit's redirect with its realmId replaced, as the attacker edits it before loading it."""
    url = httpx.URL(back)
    return str(url.copy_set_param("realmId", realm))


def grants(s: Stack, realm: str) -> int:
    """Live grants the sandbox's OAuth authority holds for `realm`."""
    return int(next(r["grants"] for r in s.sb.state()["realms"] if r["realmId"] == realm))


def test_a_rewritten_realm_is_refused_for_a_pending_integration(
    cluster: ControlPlane, namespace: str, stack_factory: StackFactory, report: Report
) -> None:
    s = stack_factory(start_gateway=False)
    own = new_company(s.sb, "Attacker Holdings")
    target = new_company(s.sb, "Target Dispensary")
    link = pending(cluster, s, namespace)
    before = qbi(cluster, namespace, "acme")

    auth_url, cookie = press_connect(link)
    resp = callback(rewritten(consent(auth_url, "approve", own), target), cookie)

    assert (resp.status_code, heading(resp.text)) == (403, UNVERIFIED)
    assert retry_link(resp.text) == link
    assert s.gw.metric("qbo_oauth_callbacks_total", result="realm_unverified") == 1
    assert not (secret_or_none(cluster, namespace, SECRET) or {}).get("data")  # the operator's, still empty
    assert qbi(cluster, namespace, "acme")["metadata"]["resourceVersion"] == before["metadata"]["resourceVersion"]
    assert (grants(s, own), grants(s, target)) == (0, 0)
    assert s.sb.state()["grants"]["revoked"] == 1  # the grant the exchange obtained, revoked at Intuit

    # The target company connects later through its own integration: no squat stands in its way.
    assert heading(connect_via_http(link, target).text) == "QuickBooks is connected"
    report.row("attacks", "rewritten realmId, pending integration", tried=1, held="refused, revoked", kind="attack")


def test_a_rewritten_realm_is_refused_for_a_connected_integration(
    cluster: ControlPlane, namespace: str, stack_factory: StackFactory, report: Report
) -> None:
    """The attacker pressed Connect while the integration was pending (the state lives 10 minutes), the
    company connected, and then the attacker comes back with their own company's code and the victim's realm."""
    s = stack_factory(start_gateway=False)
    own = new_company(s.sb, "Attacker Holdings")
    victim = new_company(s.sb, "Victim Dispensary")
    link = pending(cluster, s, namespace)
    attacker_auth_url, attacker_cookie = press_connect(link)

    assert heading(connect_via_http(link, victim).text) == "QuickBooks is connected"
    set_status(cluster, namespace, "acme", {"phase": "Connected", "realmId": victim, "authorizationURL": None})
    stored = secret_or_none(cluster, namespace, SECRET)
    assert stored is not None and grants(s, victim) == 1

    back = consent(attacker_auth_url, "approve", own)
    resp = callback(rewritten(back, victim), attacker_cookie)

    assert (resp.status_code, heading(resp.text)) == (403, UNVERIFIED)
    after = secret_or_none(cluster, namespace, SECRET)
    assert after is not None and after["metadata"]["resourceVersion"] == stored["metadata"]["resourceVersion"]
    assert (grants(s, own), grants(s, victim)) == (0, 1)  # the attacker's grant revoked, the victim's kept
    assert s.gw.metric("qbo_oauth_callbacks_total", result="realm_unverified") == 1
    report.row("attacks", "rewritten realmId, connected integration", tried=1, held="refused, revoked", kind="attack")


@pytest.mark.parametrize("realm", ["0009130355357483456", "0"])
def test_a_realm_id_with_leading_zeros_is_refused_before_any_exchange(
    cluster: ControlPlane, namespace: str, stack_factory: StackFactory, realm: str
) -> None:
    s = stack_factory(start_gateway=False)
    own = new_company(s.sb, "Acme Dispensary LLC")
    link = pending(cluster, s, namespace)
    auth_url, cookie = press_connect(link)
    resp = callback(rewritten(consent(auth_url, "approve", own), realm), cookie)
    assert heading(resp.text) == "Intuit could not finish the sign-in"
    assert not (secret_or_none(cluster, namespace, SECRET) or {}).get("data")  # the operator's, still empty
    assert s.sb.state()["grants"] == {"live": 0, "revoked": 0, "refreshes": 0, "rotations": 0}


# --- the Connect button from another site ---------------------------------------------------------------


def cookies_set(resp: httpx.Response) -> list[str]:
    return resp.headers.get_list("set-cookie")


@pytest.mark.parametrize(
    "headers",
    [
        {"Sec-Fetch-Site": "cross-site"},
        {"Sec-Fetch-Site": "same-site"},
        {"Origin": "https://evil.example"},
        {"Sec-Fetch-Site": "cross-site", "Origin": "null"},
    ],
)
def test_a_cross_site_press_of_the_connect_button_gets_403_and_no_cookie(
    cluster: ControlPlane, namespace: str, stack_factory: StackFactory, headers: dict[str, str], report: Report
) -> None:
    s = stack_factory(start_gateway=False)
    link = pending(cluster, s, namespace)
    resp = httpx.post(link, headers=headers, timeout=30)
    assert (resp.status_code, heading(resp.text)) == (403, "Please use the Connect page itself")
    assert cookies_set(resp) == [] and "location" not in resp.headers
    assert s.gw.metric("qbo_connect_requests_total", result="cross_site") == 1
    assert s.gw.metric("qbo_connect_requests_total", result="started") == 0
    report.row("attacks", "cross-site Connect press", tried=json.dumps(headers), held="403, no cookie", kind="attack")


def test_the_connect_page_itself_may_press_the_button(
    cluster: ControlPlane, namespace: str, stack_factory: StackFactory
) -> None:
    s = stack_factory(start_gateway=False)
    link = pending(cluster, s, namespace)
    for headers in ({"Sec-Fetch-Site": "same-origin", "Origin": "null"}, {"Origin": s.gw.base}, {}):
        resp = httpx.post(link, headers=headers, timeout=30)
        assert resp.status_code == 303 and cookies_set(resp), headers
    assert s.gw.metric("qbo_connect_requests_total", result="started") == 3


CROSS_SITE_TABLE: list[tuple[str | None, str | None, bool]] = [
    (None, None, False),  # no browser, or one too old to say: the link signature still holds
    ("same-origin", None, False),
    ("none", None, False),  # typed or bookmarked
    ("same-origin", "null", False),  # our page under Referrer-Policy: no-referrer
    ("SAME-ORIGIN", "https://gw.example", False),
    (None, "https://gw.example/", False),
    ("cross-site", None, True),
    ("same-site", None, True),
    (None, "https://evil.example", True),
    (None, "https://gw.example.evil.example", True),
    (None, "http://gw.example", True),  # another scheme is another origin
    ("same-origin", "https://evil.example", True),
    ("cross-site", "https://gw.example", True),
]


@pytest.mark.parametrize(("fetch_site", "origin", "refused"), CROSS_SITE_TABLE)
def test_cross_site_table(fetch_site: str | None, origin: str | None, refused: bool) -> None:
    assert cross_site(fetch_site, origin, "https://gw.example") is refused


# --- a link once its integration is connected --------------------------------------------------------------


def test_a_link_stops_working_once_its_integration_is_connected_and_a_new_one_works_after_a_disconnect(
    cluster: ControlPlane, namespace: str, stack_factory: StackFactory
) -> None:
    s = stack_factory(start_gateway=False)
    realm = new_company(s.sb, "Acme Dispensary LLC")
    link = pending(cluster, s, namespace)
    assert heading(connect_via_http(link, realm).text) == "QuickBooks is connected"
    set_status(cluster, namespace, "acme", {"phase": "Connected", "realmId": realm, "authorizationURL": None})

    def refused(resp: httpx.Response) -> Any:
        return (resp.status_code, heading(resp.text))

    already = (409, "This integration is already connected")
    assert _eventually(lambda: refused(httpx.get(link, timeout=30)) == already)
    resp = httpx.post(link, timeout=30)
    assert refused(resp) == already and cookies_set(resp) == []
    assert s.gw.metric("qbo_connect_requests_total", result="already_connected") == 2

    # Disconnected (the tokens were revoked at Intuit): the operator publishes a link again, and it works.
    set_status(cluster, namespace, "acme", {"phase": "Disconnected", "authorizationURL": link})
    assert _eventually(lambda: httpx.get(link, timeout=30).status_code == 200)
    assert heading(connect_via_http(link, realm).text) == "QuickBooks is connected"


def _eventually(check: Any, timeout: float = 10) -> bool:
    """The gateway's index follows the status over its watch: give it a moment."""
    wait_for("the gateway's index to follow the status", check, timeout=timeout, interval=0.1)
    return True
