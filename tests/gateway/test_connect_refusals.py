"""Every way a Connect can fail gets its own page and metric result, and writes nothing (docs/design.md §4).

Driven over real HTTP (httpx plays the browser, the sandbox plays Intuit) against the real API server."""

from __future__ import annotations

import base64
import json
import time
import uuid
from typing import Any

import httpx
import pytest
from intuitlib.client import AuthClient
from intuitlib.exceptions import AuthClientError

from qbo_operator.core import names, signing
from qbo_operator.core.models import Tokens
from qbo_operator.harness.controlplane import ControlPlane, free_port
from tests.support.connect import callback, connect_via_http, consent, heading, new_company, press_connect, retry_link
from tests.support.kube import create_integration, events_text, qbi, secret_or_none, set_status
from tests.support.objects import decoded
from tests.support.processes import Stack, StackFactory
from tests.support.wait import wait_for

SECRET = "acme-qbo-tokens"


def integration_with_link(cluster: ControlPlane, s: Stack, namespace: str, name: str = "acme") -> tuple[str, str]:
    """A CR whose status carries its Connect link, as the operator sets it. Returns (uid, link).

    The gateway starts afterwards if it has not yet: ready means its index holds the CR."""
    obj = create_integration(cluster, namespace, name)
    uid = obj["metadata"]["uid"]
    link = s.gw.connect_link(namespace, name, uid)
    set_status(cluster, namespace, name, {"phase": "Pending", "authorizationURL": link})
    if s.gw.proc is None:
        s.gw.start()
    return uid, link


def connecting(
    cluster: ControlPlane, namespace: str, stack_factory: StackFactory, **stack: Any
) -> tuple[Stack, str, str]:
    """A stack, a sandbox company and an integration showing its Connect link. Returns (stack, realm, link)."""
    s = stack_factory(start_gateway=False, **stack)
    realm = new_company(s.sb, "Acme Dispensary LLC")
    _, link = integration_with_link(cluster, s, namespace)
    return s, realm, link


def holds_no_tokens(cluster: ControlPlane, namespace: str, name: str = "acme") -> bool:
    """The integration's token Secret is still as the operator created it: empty (or gone with the CR)."""
    return not (secret_or_none(cluster, namespace, f"{name}-qbo-tokens") or {}).get("data")


def assert_nothing_written(cluster: ControlPlane, namespace: str, before: dict[str, Any], name: str = "acme") -> None:
    assert holds_no_tokens(cluster, namespace, name)
    assert qbi(cluster, namespace, name)["metadata"]["resourceVersion"] == before["metadata"]["resourceVersion"]


def assert_refused(resp: httpx.Response, s: Stack, status: int, title: str, result: str, link: str | None) -> None:
    """The callback's refusal page (status, title, the link to start again if any) and its one metric count."""
    assert (resp.status_code, heading(resp.text)) == (status, title)
    assert retry_link(resp.text) == link
    assert s.gw.metric("qbo_oauth_callbacks_total", result=result) == 1


# --- the Connect link ---------------------------------------------------------------------------------


def test_tampered_expired_recreated_and_unknown_links_are_refused(
    cluster: ControlPlane, namespace: str, stack_factory: StackFactory
) -> None:
    s = stack_factory(start_gateway=False)
    uid, link = integration_with_link(cluster, s, namespace)
    before = qbi(cluster, namespace, "acme")
    key = s.keys.signing_key

    tampered = link[:-3] + ("AAA" if not link.endswith("AAA") else "BBB")
    other_exp = link.replace("exp=", "exp=1")  # a longer validity is a different signature
    expired = signing.connect_link(s.gw.base, key, namespace, "acme", uid, int(time.time()) - 60)
    wrong_key = signing.connect_link(s.gw.base, "k" * 64, namespace, "acme", uid, int(time.time()) + 600)
    old_uid = signing.connect_link(s.gw.base, key, namespace, "acme", "uid-of-a-deleted-cr", int(time.time()) + 600)
    other_name = signing.connect_link(s.gw.base, key, namespace, "nobody", uid, int(time.time()) + 600)
    no_sig = link.split("&sig=")[0]
    huge_exp = link.replace("exp=", "exp=" + "9" * 5000)
    superscript_exp = link.split("?")[0] + "?exp=%C2%B2&sig=" + link.split("sig=")[1]  # "²".isdigit() is True
    surrogate_sig = link.split("sig=")[0] + "sig=%ED%B3%BF"
    junk_name = f"{s.gw.base}/connect/{namespace}/ACME%2F..%2Fx?" + link.split("?")[1]

    cases = [
        (tampered, 403, "This Connect link is not valid", "bad_link"),
        (other_exp, 403, "This Connect link is not valid", "bad_link"),
        (wrong_key, 403, "This Connect link is not valid", "bad_link"),
        (old_uid, 403, "This Connect link is not valid", "bad_link"),
        (no_sig, 403, "This Connect link is not valid", "bad_link"),
        (expired, 410, "This Connect link has expired", "expired_link"),
        (huge_exp, 403, "This Connect link is not valid", "bad_link"),
        (superscript_exp, 403, "This Connect link is not valid", "bad_link"),
        (surrogate_sig, 403, "This Connect link is not valid", "bad_link"),
        (other_name, 403, "This Connect link is not valid", "not_found"),  # same page: no existence oracle
        (junk_name, 403, "This Connect link is not valid", "not_found"),
    ]
    for url, status, title, result in cases:
        before_count = s.gw.metric("qbo_connect_requests_total", result=result)
        for method in ("GET", "POST"):  # the page and the Connect button are both refused
            resp = httpx.request(method, url)
            assert (resp.status_code, heading(resp.text)) == (status, title), (method, url)
            assert "set-cookie" not in resp.headers and "location" not in resp.headers
            assert retry_link(resp.text) is None  # a bad link never yields a good one
            assert link.split("sig=")[1] not in resp.text
        assert s.gw.metric("qbo_connect_requests_total", result=result) == before_count + 2, result
    assert_nothing_written(cluster, namespace, before)
    assert s.gw.metric("qbo_connect_requests_total", result="shown") == 0

    ok = httpx.get(link)
    assert (ok.status_code, heading(ok.text)) == (200, "Connect Acme Dispensary to Green Check")


def test_a_recreated_integration_invalidates_old_links(
    cluster: ControlPlane, namespace: str, stack_factory: StackFactory
) -> None:
    s = stack_factory(start_gateway=False)
    _, link = integration_with_link(cluster, s, namespace)
    assert httpx.get(link).status_code == 200
    cluster.kubectl("delete", "quickbooksintegration", "acme", "-n", namespace, "--wait=true")
    create_integration(cluster, namespace, "acme")
    resp = wait_for("the old link refused", lambda: (r := httpx.get(link)).status_code != 200 and r)
    assert (resp.status_code, heading(resp.text)) == (403, "This Connect link is not valid")


# --- the callback ---------------------------------------------------------------------------------------


def test_a_callback_in_another_browser_is_refused_without_burning_the_sign_in(
    cluster: ControlPlane, namespace: str, stack_factory: StackFactory
) -> None:
    s, realm, link = connecting(cluster, namespace, stack_factory)
    before = qbi(cluster, namespace, "acme")
    auth_url, cookie = press_connect(link)
    back = consent(auth_url, "approve", realm)

    for other_cookie in (None, signing.new_nonce()):
        resp = callback(back, other_cookie)
        assert (resp.status_code, heading(resp.text)) == (400, "Please finish in the same browser")
        assert retry_link(resp.text) is None
    assert s.gw.metric("qbo_oauth_callbacks_total", result="cookie_mismatch") == 2
    assert_nothing_written(cluster, namespace, before)

    resp = callback(back, cookie)  # the browser that pressed Connect still finishes
    assert heading(resp.text) == "QuickBooks is connected"


def test_tampered_and_expired_state(cluster: ControlPlane, namespace: str, stack_factory: StackFactory) -> None:
    s = stack_factory(start_gateway=False)
    uid, link = integration_with_link(cluster, s, namespace)
    before = qbi(cluster, namespace, "acme")
    key, nonce = s.keys.signing_key, signing.new_nonce()
    base = f"{s.gw.base}/oauth/callback?code=abc&realmId=1"

    fresh = signing.make_state(key, namespace, "acme", uid, nonce, time.time())
    body, sig = fresh.split(".")
    forged_body = (
        base64.urlsafe_b64encode(
            json.dumps({"ns": namespace, "n": "acme", "u": uid, "nc": nonce, "exp": 9999999999}).encode()
        )
        .decode()
        .rstrip("=")
    )
    for state in (f"{body}.{sig[:-2]}xx", f"{forged_body}.{sig}", "garbage", "", "%ED%B3%BF.%C2%B2"):
        resp = callback(f"{base}&state={state}", nonce)
        assert (resp.status_code, heading(resp.text)) == (400, "This sign-in cannot be finished")
        assert retry_link(resp.text) is None
    resp = callback(base, nonce)  # no state at all
    assert heading(resp.text) == "This sign-in cannot be finished"
    assert s.gw.metric("qbo_oauth_callbacks_total", result="bad_state") == 6

    old = signing.make_state(key, namespace, "acme", uid, nonce, time.time() - signing.STATE_TTL_SECONDS - 5)
    resp = callback(f"{base}&state={old}", nonce)
    assert (resp.status_code, heading(resp.text)) == (400, "The sign-in took too long")
    assert retry_link(resp.text) == link  # same browser (cookie matches): the link may be offered
    resp = callback(f"{base}&state={old}", "another-browser")
    assert heading(resp.text) == "The sign-in took too long"
    assert retry_link(resp.text) is None
    assert s.gw.metric("qbo_oauth_callbacks_total", result="expired_state") == 2
    assert_nothing_written(cluster, namespace, before)


@pytest.mark.parametrize(
    ("query", "title", "result"),
    [
        ("error=access_denied", "QuickBooks was not connected", "denied"),
        ("error=server_error&error_description=%3Cscript%3E", "Intuit could not finish the sign-in", "intuit_error"),
        ("error=%3Cb%3Ebad%3C%2Fb%3E", "Intuit could not finish the sign-in", "intuit_error"),
        ("realmId=123", "Intuit could not finish the sign-in", "intuit_error"),  # no code
        ("code=abc", "Intuit could not finish the sign-in", "intuit_error"),  # no realm
        ("code=abc&realmId=12%3B34", "Intuit could not finish the sign-in", "intuit_error"),
    ],
)
def test_intuit_errors_and_incomplete_answers(
    cluster: ControlPlane, namespace: str, stack_factory: StackFactory, query: str, title: str, result: str
) -> None:
    s = stack_factory(start_gateway=False)
    uid, link = integration_with_link(cluster, s, namespace)
    before = qbi(cluster, namespace, "acme")
    nonce = signing.new_nonce()
    state = signing.make_state(s.keys.signing_key, namespace, "acme", uid, nonce, time.time())
    resp = callback(f"{s.gw.base}/oauth/callback?{query}&state={state}", nonce)
    assert_refused(resp, s, resp.status_code, title, result, link)
    assert "<script>" not in resp.text and "<b>bad" not in resp.text
    assert_nothing_written(cluster, namespace, before)


def test_a_code_already_used_at_intuit_is_a_replay(
    cluster: ControlPlane, namespace: str, stack_factory: StackFactory
) -> None:
    """Someone exchanged the code first (here Intuit's own client, `intuit-oauth`, which also proves the
    sandbox speaks Intuit's protocol): Intuit answers invalid_grant and the gateway writes nothing."""
    s, realm, link = connecting(cluster, namespace, stack_factory)
    before = qbi(cluster, namespace, "acme")
    auth_url, cookie = press_connect(link)
    back = consent(auth_url, "approve", realm)
    code = httpx.URL(back).params["code"]

    intuit = AuthClient(s.keys.client_id, s.keys.client_secret, f"{s.gw.base}/oauth/callback", s.sb.discovery_url)
    intuit.get_bearer_token(code, realm_id=realm)
    assert intuit.access_token and intuit.refresh_token
    with pytest.raises(AuthClientError):
        intuit.get_bearer_token(code, realm_id=realm)  # codes are single-use at Intuit

    assert_refused(callback(back, cookie), s, 409, "This sign-in was already used", "replayed", link)
    assert_nothing_written(cluster, namespace, before)


def test_a_second_integration_cannot_take_a_connected_realm(
    cluster: ControlPlane, namespace: str, stack_factory: StackFactory
) -> None:
    s = stack_factory(start_gateway=False)
    realm = new_company(s.sb, "Acme Dispensary LLC")
    _, first_link = integration_with_link(cluster, s, namespace, "first")
    assert heading(connect_via_http(first_link, realm).text) == "QuickBooks is connected"  # claims the realm
    other_ns = f"other-tenant-{uuid.uuid4().hex[:8]}"
    cluster.kubectl("create", "namespace", other_ns)
    try:
        _, second_link = integration_with_link(cluster, s, other_ns, "second")
        before = qbi(cluster, other_ns, "second")
        resp = connect_via_http(second_link, realm)
        title = "That QuickBooks company is already connected elsewhere"
        assert_refused(resp, s, 409, title, "duplicate_realm", second_link)
        assert namespace not in resp.text and "first" not in resp.text  # the other tenant is never named
        assert_nothing_written(cluster, other_ns, before, "second")
        assert '"reason": "DuplicateRealm"' in events_text(cluster, other_ns)
        # the first integration's grant only: the second was refused before any tokens were obtained
        assert next(r["grants"] for r in s.sb.state()["realms"] if r["realmId"] == realm) == 1
        assert not holds_no_tokens(cluster, namespace, "first")
    finally:
        cluster.kubectl("delete", "namespace", other_ns, "--wait=false", check=False)


def test_reconnecting_to_another_realm_is_refused(
    cluster: ControlPlane, namespace: str, stack_factory: StackFactory
) -> None:
    s = stack_factory(start_gateway=False)
    first = new_company(s.sb, "Acme Dispensary LLC")
    second = new_company(s.sb, "Someone Else Inc")
    _, link = integration_with_link(cluster, s, namespace)
    assert heading(connect_via_http(link, first).text) == "QuickBooks is connected"
    secret = secret_or_none(cluster, namespace, SECRET)
    assert secret is not None
    before = qbi(cluster, namespace, "acme")

    # status.realmId not yet set by the operator: the Secret's realm_id is enough to refuse
    resp = connect_via_http(link, second)
    assert (resp.status_code, heading(resp.text)) == (409, "That is not the QuickBooks company connected before")
    set_status(cluster, namespace, "acme", {"realmId": first})
    resp = connect_via_http(link, second)
    assert heading(resp.text) == "That is not the QuickBooks company connected before"
    after = secret_or_none(cluster, namespace, SECRET)
    assert after is not None and after["metadata"]["resourceVersion"] == secret["metadata"]["resourceVersion"]
    assert qbi(cluster, namespace, "acme")["status"]["realmId"] == first
    assert before["metadata"]["uid"] == qbi(cluster, namespace, "acme")["metadata"]["uid"]
    assert '"reason": "RealmMismatch"' in events_text(cluster, namespace)
    assert s.gw.metric("qbo_oauth_callbacks_total", result="realm_mismatch") == 2


def test_reconnecting_the_same_realm_keeps_connected_at_and_replaces_tokens(
    cluster: ControlPlane, namespace: str, stack_factory: StackFactory
) -> None:
    _, realm, link = connecting(cluster, namespace, stack_factory)
    assert heading(connect_via_http(link, realm).text) == "QuickBooks is connected"
    first = secret_or_none(cluster, namespace, SECRET)
    assert first is not None
    time.sleep(1.1)  # connected_at has second precision

    resp = connect_via_http(link, realm)
    assert heading(resp.text) == "QuickBooks is connected"
    assert "caught up as well" in resp.text
    second = secret_or_none(cluster, namespace, SECRET)
    assert second is not None
    a, b = decoded(first), decoded(second)
    assert b["connected_at"] == a["connected_at"]
    assert b["refresh_token"] != a["refresh_token"] and b["access_token"] != a["access_token"]
    assert second["metadata"]["uid"] == first["metadata"]["uid"]  # updated in place, not recreated
    Tokens.from_secret_data(second["data"])


@pytest.mark.parametrize("labelled", [False, True])
def test_a_foreign_secret_is_never_overwritten(
    cluster: ControlPlane, namespace: str, stack_factory: StackFactory, labelled: bool
) -> None:
    """A Secret of the token Secret's name without an ownerReference to the integration's uid is not ours,
    even with our labels (anyone who may create Secrets can write those)."""
    s, realm, link = connecting(cluster, namespace, stack_factory)
    cluster.kubectl("delete", "secret", SECRET, "-n", namespace)
    cluster.kubectl("create", "secret", "generic", SECRET, "-n", namespace, "--from-literal=password=hunter2")
    if labelled:
        labels = [f"{names.MANAGED_BY_LABEL}={names.MANAGED_BY}", f"{names.INTEGRATION_LABEL}=acme"]
        cluster.kubectl("label", "secret", SECRET, "-n", namespace, *labels)
    resp = connect_via_http(link, realm)
    assert (resp.status_code, heading(resp.text)) == (409, "The connection cannot be stored")
    secret = secret_or_none(cluster, namespace, SECRET)
    assert secret is not None and decoded(secret) == {"password": "hunter2"}
    assert not secret["metadata"].get("ownerReferences")
    assert s.gw.metric("qbo_oauth_callbacks_total", result="secret_conflict") == 1
    assert s.sb.state()["realms"][0]["grants"] == 0  # refused before the code was exchanged


def test_no_token_secret_yet_is_refused_and_none_is_created(
    cluster: ControlPlane, namespace: str, stack_factory: StackFactory
) -> None:
    """The operator creates the token Secret; the gateway never does (it holds no `create` on Secrets)."""
    s, realm, link = connecting(cluster, namespace, stack_factory)
    cluster.kubectl("delete", "secret", SECRET, "-n", namespace)
    before = qbi(cluster, namespace, "acme")
    resp = connect_via_http(link, realm)
    assert (resp.status_code, heading(resp.text)) == (503, "This integration is not ready yet")
    assert s.gw.metric("qbo_oauth_callbacks_total", result="not_ready") == 1
    assert secret_or_none(cluster, namespace, SECRET) is None
    assert qbi(cluster, namespace, "acme")["metadata"]["resourceVersion"] == before["metadata"]["resourceVersion"]
    assert s.sb.state()["realms"][0]["grants"] == 0  # refused before the code was exchanged


def test_intuit_down_at_the_code_exchange(cluster: ControlPlane, namespace: str, stack_factory: StackFactory) -> None:
    nobody = f"http://127.0.0.1:{free_port()}/oauth2/v1/tokens/bearer"
    s, realm, link = connecting(cluster, namespace, stack_factory, token_url=nobody)
    before = qbi(cluster, namespace, "acme")
    resp = connect_via_http(link, realm)
    assert_refused(resp, s, 502, "QuickBooks did not answer", "exchange_failed", link)
    assert_nothing_written(cluster, namespace, before)


def test_an_integration_deleted_during_the_sign_in(
    cluster: ControlPlane, namespace: str, stack_factory: StackFactory
) -> None:
    s, realm, link = connecting(cluster, namespace, stack_factory)
    auth_url, cookie = press_connect(link)
    back = consent(auth_url, "approve", realm)
    cluster.kubectl("delete", "quickbooksintegration", "acme", "-n", namespace, "--wait=true")
    resp = callback(back, cookie)
    assert (resp.status_code, heading(resp.text)) == (404, "There is nothing to connect here")
    assert holds_no_tokens(cluster, namespace)
    assert s.gw.metric("qbo_oauth_callbacks_total", result="not_found") == 1
    assert s.sb.state()["realms"][0]["grants"] == 0
