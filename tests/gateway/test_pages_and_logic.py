"""Pure parts of the gateway: pages, realm index state, de-duplication, reconnect rules."""

from __future__ import annotations

import base64
import hashlib
import re
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from kubernetes_asyncio import client

from qbo_operator.core import names
from qbo_operator.core.models import Integration
from qbo_operator.core.token_secret import owns, previous_connection
from qbo_operator.gateway import pages
from qbo_operator.gateway.connect import choose_connected_at
from qbo_operator.gateway.realm_index import IndexState
from qbo_operator.gateway.webhooks import SeenIds

NOW = datetime(2026, 11, 25, 9, 0, tzinfo=UTC)


# --- pages --------------------------------------------------------------------------------------------


def test_csp_hash_matches_the_inline_stylesheet() -> None:
    _, body = pages.failure_page("denied", "Acme", None)
    style = re.search(r"<style>(.*?)</style>", body, re.S)
    assert style is not None
    digest = base64.b64encode(hashlib.sha256(style.group(1).encode()).digest()).decode()
    csp = pages.content_security_policy(("https://appcenter.intuit.com",))
    assert f"style-src 'sha256-{digest}'" in csp
    assert "default-src 'none'" in csp and "frame-ancestors 'none'" in csp
    assert "form-action 'self' https://appcenter.intuit.com" in csp
    assert "<script" not in body


@pytest.mark.parametrize("result", sorted(pages.FAILURES))
def test_every_failure_page_says_what_happened_and_what_to_do(result: str) -> None:
    status, body = pages.failure_page(result, "Acme <Dispensary>", "https://gw.example/connect/a/b?exp=1&sig=x&y=1")
    failure = pages.FAILURES[result]
    assert status == failure.status
    assert "What to do now" in body
    assert pages._e(failure.heading) in body
    assert "<Dispensary>" not in body  # escaped
    assert 'href="https://gw.example/connect/a/b?exp=1&amp;sig=x&amp;y=1"' in body
    assert "{company}" not in body


def test_failure_pages_have_distinct_headings() -> None:
    headings = [f.heading for f in pages.FAILURES.values()]
    assert len(headings) == len(set(headings))


def test_no_retry_link_unless_given() -> None:
    _, body = pages.failure_page("bad_link", None, None)
    assert "Start again</a>" not in body


def test_connect_page_names_company_and_exactly_what_is_shared() -> None:
    body = pages.connect_page("Acme & Sons", "/connect/ns/n?exp=1&sig=s", NOW, already_connected=False)
    assert "Connect Acme &amp; Sons to Green Check" in body
    for item in ("invoice number, date and amount", "payment ID, date and amount", "products sold", "customer's name"):
        assert item in body
    assert 'method="post" action="/connect/ns/n?exp=1&amp;sig=s"' in body
    assert "connected before" not in body
    assert "connected before" in pages.connect_page("A", "/x", NOW, already_connected=True)


# --- realm index ---------------------------------------------------------------------------------------


def obj(ns: str, name: str, realm: str | None = None, uid: str = "u", rv: str = "1") -> dict[str, Any]:
    status = {"realmId": realm} if realm else {}
    return {
        "metadata": {"namespace": ns, "name": name, "uid": uid, "resourceVersion": rv},
        "spec": {"companyId": "5f0c3a2e-8d1b-4c7e-9a61-2b7f3c9d4e10"},
        "status": status,
    }


def keys(state: IndexState, realm: str) -> list[tuple[str, str]]:
    return [(i.namespace, i.name) for i in state.by_realm(realm)]


def test_index_follows_watch_events() -> None:
    state = IndexState()
    state.apply("ADDED", obj("a", "x"))
    assert keys(state, "1") == []
    state.apply("MODIFIED", obj("a", "x", "1"))
    assert keys(state, "1") == [("a", "x")]
    state.apply("ADDED", obj("b", "y", "1"))
    assert keys(state, "1") == [("a", "x"), ("b", "y")]
    state.apply("MODIFIED", obj("a", "x", "2"))  # realm changed
    assert keys(state, "1") == [("b", "y")] and keys(state, "2") == [("a", "x")]
    state.apply("BOOKMARK", {"metadata": {"resourceVersion": "9"}})
    state.apply("DELETED", obj("b", "y", "1"))
    assert keys(state, "1") == []
    state.apply("MODIFIED", {"metadata": {"namespace": "a", "name": "x"}, "spec": {}})  # unparseable: dropped
    assert keys(state, "2") == [] and state.get("a", "x") is None


def test_the_index_keeps_only_what_the_gateway_reads() -> None:
    state = IndexState()
    full = obj("a", "x", "913")
    full["metadata"]["annotations"] = {"kubectl.kubernetes.io/last-applied-configuration": "{...}" * 500}
    full["status"].update(
        phase="Pending",
        authorizationURL="https://gw/connect/a/x?sig=s",
        webhook={"eventsSinceLastSync": 4, "lastEventTime": "2026-12-01T02:03:04Z"},
        lastReadTime="2026-12-02T02:00:00Z",  # whether a webhook count is urgent (webhooks.urgent)
        conditions=[{"type": "Ready", "status": "False", "reason": "NotConnected"}],
        lastSync={"result": "Succeeded", "paymentsSynced": 3},
        rejected={"count": 1, "payments": [{"paymentId": "7"}]},
    )
    state.apply(None, full)
    kept = state.get("a", "x")
    assert kept is not None and kept.status.realm_id == "913" and kept.resource_version == "1"
    assert kept.status.phase == "Pending" and kept.status.authorization_url and kept.status.webhook is not None
    assert kept.status.webhook.events_since_last_sync == 4 and kept.status.last_read_time is not None
    assert kept.annotations == {} and kept.status.conditions == [] and kept.status.last_sync is None
    assert kept.status.rejected is None and full["status"]["conditions"]  # the listed object itself is untouched


def test_listed_objects_are_put_and_a_relisted_one_replaces_its_old_realm() -> None:
    state = IndexState()
    state.apply(None, obj("a", "x", "1"))
    state.apply(None, obj("b", "y", "3"))
    state.apply(None, obj("a", "x", "2"))  # listed again after a 410, with another realm
    assert keys(state, "1") == [] and keys(state, "2") == [("a", "x")] and keys(state, "3") == [("b", "y")]
    state.apply("DELETED", {"metadata": {"namespace": "a", "name": "x"}})  # gone from a relisting: name only
    assert keys(state, "2") == [] and len(state) == 1


# --- de-duplication ------------------------------------------------------------------------------------


def test_seen_ids_are_bounded_in_count_and_time() -> None:
    now = [0.0]
    seen = SeenIds(capacity=3, ttl=10, clock=lambda: now[0])
    assert [seen.add(k) for k in "abca"] == [True, True, True, False]
    assert seen.add("d") and len(seen) == 3  # "a" (oldest) was evicted
    assert seen.add("a")
    now[0] = 11
    assert seen.add("d") and len(seen) == 1  # everything older than the TTL is forgotten


# --- reconnect rules -----------------------------------------------------------------------------------


def b64(text: str) -> str:
    return base64.b64encode(text.encode()).decode()


EARLIER = NOW - timedelta(days=30)
EARLIEST = NOW - timedelta(days=60)


@pytest.mark.parametrize(
    ("secret", "status_realm", "status_connected", "expected"),
    [
        (None, None, None, NOW),  # first connect
        ({"realm_id": b64("1"), "connected_at": b64("2026-10-26T09:00:00Z")}, None, None, EARLIER),
        ({"realm_id": b64("2"), "connected_at": b64("2026-10-26T09:00:00Z")}, None, None, NOW),  # other realm
        (None, "1", EARLIER, EARLIER),  # Secret deleted, status remembers
        (None, "2", EARLIER, NOW),
        ({"realm_id": b64("1"), "connected_at": b64("2026-10-26T09:00:00Z")}, "1", EARLIEST, EARLIEST),
        ({"realm_id": b64("1"), "connected_at": b64("garbage")}, None, None, NOW),
        ({"realm_id": "!!!", "connected_at": b64("2026-10-26T09:00:00Z")}, None, None, NOW),
        ({"realm_id": b64("1"), "connected_at": b64("2026-10-26T09:00:00")}, None, None, NOW),  # no zone
    ],
)
def test_reconnecting_the_same_realm_keeps_connected_at(
    secret: dict[str, str] | None, status_realm: str | None, status_connected: datetime | None, expected: datetime
) -> None:
    previous = previous_connection(secret) if secret is not None else None
    assert choose_connected_at("1", previous, status_realm, status_connected, NOW) == expected


def integration(name: str = "acme", uid: str = "uid-1") -> Integration:
    return Integration.from_object(obj("ns", name, uid=uid))


@pytest.mark.parametrize(
    ("labels", "owners", "type_", "mine"),
    [
        ({names.INTEGRATION_LABEL: "acme"}, [], "Opaque", False),  # a label is not ownership: anyone can write it
        ({}, ["uid-1"], "Opaque", True),
        ({}, [], "Opaque", False),  # someone else's Secret with that name
        ({names.INTEGRATION_LABEL: "other"}, [], "Opaque", False),
        ({}, ["uid-2"], "Opaque", False),
        ({names.INTEGRATION_LABEL: "acme"}, [], "kubernetes.io/tls", False),
    ],
)
def test_only_this_integrations_secret_is_overwritten(
    labels: dict[str, str], owners: list[str], type_: str, mine: bool
) -> None:
    secret = client.V1Secret(
        metadata=client.V1ObjectMeta(
            name="acme-qbo-tokens",
            labels=labels,
            owner_references=[
                client.V1OwnerReference(api_version="v", kind=names.KIND, name="acme", uid=u) for u in owners
            ],
        ),
        type=type_,
    )
    assert owns(secret, integration()) is mine
