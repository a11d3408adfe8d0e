"""POST /webhooks/quickbooks over real HTTP against the real control plane (docs/design.md §4, docs/qbo.md §5)."""

from __future__ import annotations

import json
import socket
import time
from collections.abc import Iterator

import httpx
import pytest

from qbo_operator.core import signing
from qbo_operator.harness.controlplane import ControlPlane
from tests.support.kube import create_integration, qbi, set_status, webhook_count
from tests.support.processes import GatewayFactory, Keys
from tests.support.wait import wait_for
from tests.support.webhooks import VECTOR_BODY, VECTOR_SIGNATURE, VECTOR_TOKEN, cloudevent, dumps, legacy, legacy_entity

FLUSH = ["--webhook-flush-seconds", "0.3"]


def unique_realm() -> str:
    return str(time.time_ns())[-15:]


def connected(cluster: ControlPlane, namespace: str, name: str, realm: str) -> None:
    create_integration(cluster, namespace, name)
    set_status(cluster, namespace, name, {"realmId": realm})


def connected_at_rest(cluster: ControlPlane, namespace: str) -> tuple[str, str]:
    """ "acme" connected to a realm of its own; returns (realm, the CR's resourceVersion now)."""
    realm = unique_realm()
    connected(cluster, namespace, "acme", realm)
    return realm, qbi(cluster, namespace, "acme")["metadata"]["resourceVersion"]


def test_intuit_test_vector_verifies_and_any_changed_byte_is_refused(
    cluster: ControlPlane, namespace: str, gateway_factory: GatewayFactory
) -> None:
    connected(cluster, namespace, "vector", "1269959970")
    gw = gateway_factory(Keys(verifier_token=VECTOR_TOKEN), args=FLUSH)  # ready = the realm index is synced
    before = gw.metrics()

    assert gw.post_webhook(VECTOR_BODY, VECTOR_SIGNATURE).status_code == 200
    for i in (0, len(VECTOR_BODY) // 2, len(VECTOR_BODY) - 1):
        tampered = VECTOR_BODY[:i] + bytes([VECTOR_BODY[i] ^ 0x01]) + VECTOR_BODY[i + 1 :]
        assert gw.post_webhook(tampered, VECTOR_SIGNATURE).status_code == 403
    sig = VECTOR_SIGNATURE
    for i in (0, 10, len(sig) - 2):
        changed = sig[:i] + ("A" if sig[i] != "A" else "B") + sig[i + 1 :]
        assert gw.post_webhook(VECTOR_BODY, changed).status_code == 403
    assert gw.post_webhook(VECTOR_BODY, "").status_code == 403
    resp = httpx.post(f"{gw.local}/webhooks/quickbooks", content=VECTOR_BODY)  # no header at all
    assert resp.status_code == 403

    after = gw.metrics()

    def delta(name: str, **labels: str) -> float:
        key = (name, tuple(sorted(labels.items())))
        return after.get(key, 0.0) - before.get(key, 0.0)

    assert delta("qbo_webhook_requests_total", result="accepted") == 1
    assert delta("qbo_webhook_requests_total", result="bad_signature") == 8
    assert delta("qbo_webhook_events_total", entity="Vendor", operation="Update") == 1
    assert delta("qbo_webhook_events_total", entity="Customer", operation="Create") == 1
    assert "6q+xGyMirJupwKTh2" not in gw.log() and VECTOR_TOKEN not in gw.log()


def test_both_formats_count_payment_and_invoice_events_once_each(
    cluster: ControlPlane, namespace: str, gateway_factory: GatewayFactory, keys: Keys
) -> None:
    realm, other = unique_realm(), unique_realm() + "7"
    connected(cluster, namespace, "acme", realm)
    connected(cluster, namespace, "other", other)
    gw = gateway_factory(keys, args=FLUSH)

    legacy_body = dumps(
        legacy(
            [
                (
                    realm,
                    [legacy_entity("1"), legacy_entity("2"), legacy_entity("9", name="Invoice", operation="Update")],
                ),
                (other, [legacy_entity("5")]),
            ]
        )
    )
    ce_body = dumps(
        [
            cloudevent(realm, "3"),
            cloudevent(realm, "4", verb="voided"),
            cloudevent(realm, "1", verb="void"),
            cloudevent(realm, "10", entity="invoice", verb="updated"),
        ]
    )
    assert gw.post_webhook(legacy_body).status_code == 200
    assert gw.post_webhook(ce_body, content_type="application/cloudevents+json").status_code == 200
    # Intuit retries the same deliveries: nothing is counted twice.
    assert gw.post_webhook(legacy_body).status_code == 200
    assert gw.post_webhook(ce_body, content_type="application/cloudevents+json").status_code == 200

    # 5 payment and 2 invoice events (the entities the sync reads; sync/gate.py)
    wait_for("7 events for acme", lambda: webhook_count(cluster, namespace, "acme") == 7)
    wait_for("1 payment event for other", lambda: webhook_count(cluster, namespace, "other") == 1)
    webhook = qbi(cluster, namespace, "acme")["status"]["webhook"]
    assert webhook["lastEventTime"].endswith("Z")
    assert gw.metric("qbo_webhook_duplicate_events_total") == 8  # both bodies again: 4 + 4 events

    # The sync resets the count; later events count from zero.
    set_status(cluster, namespace, "acme", {"webhook": {"eventsSinceLastSync": 0}})
    assert gw.post_webhook(dumps([cloudevent(realm, "11")])).status_code == 200
    wait_for("count after reset", lambda: webhook_count(cluster, namespace, "acme") == 1)
    time.sleep(1)  # several flush intervals: the count must not drift
    assert webhook_count(cluster, namespace, "acme") == 1
    assert webhook_count(cluster, namespace, "other") == 1


def test_verified_but_unusable_deliveries_are_acknowledged(
    cluster: ControlPlane, namespace: str, gateway_factory: GatewayFactory, keys: Keys
) -> None:
    realm = unique_realm()
    connected(cluster, namespace, "acme", realm)
    gw = gateway_factory(keys, args=FLUSH)

    def result_after(body: bytes) -> str:
        before = gw.metrics()
        resp = gw.post_webhook(body)
        assert resp.status_code == 200, resp.text
        after = gw.metrics()
        changed = [
            dict(labels)["result"]
            for (name, labels), value in after.items()
            if name == "qbo_webhook_requests_total" and value != before.get((name, labels), 0.0)
        ]
        assert len(changed) == 1, changed
        return changed[0]

    assert result_after(dumps([cloudevent("999000111", "1")])) == "unknown_realm"
    assert result_after(b"this is not json") == "bad_payload"
    assert result_after(b'{"surprise": true}') == "bad_payload"
    assert result_after(dumps([{"specversion": "1.0"}, 7])) == "bad_payload"
    # partly readable: the good event counts, the bad one is logged
    assert result_after(dumps([{"id": "broken"}, cloudevent(realm, "1")])) == "accepted"
    wait_for("the one good event", lambda: webhook_count(cluster, namespace, "acme") == 1)
    assert "unparseable event" in gw.log()


def test_bodies_over_one_mebibyte_get_413(
    cluster: ControlPlane, namespace: str, gateway_factory: GatewayFactory, keys: Keys
) -> None:
    gw = gateway_factory(keys, args=FLUSH)
    limit = 1024 * 1024
    exact = b"[" + b" " * (limit - 2) + b"]"
    assert gw.post_webhook(exact).status_code == 200  # exactly 1 MiB is allowed

    big = b"[" + b" " * limit + b"]"
    assert gw.post_webhook(big).status_code == 413  # refused on Content-Length

    def chunks() -> Iterator[bytes]:  # no Content-Length: refused while reading
        yield b"["
        for _ in range(20):
            yield b" " * 65536
        yield b"]"

    sig_ok = keys.verifier_token  # irrelevant: size is checked first
    resp = httpx.post(
        f"{gw.local}/webhooks/quickbooks", content=chunks(), headers={"intuit-signature": sig_ok}, timeout=30
    )
    assert resp.status_code == 413
    assert gw.metric("qbo_webhook_requests_total", result="too_large") == 2

    # A client that announces a huge body and sends nothing gets its 413 at once.
    with socket.create_connection(("127.0.0.1", gw.port), timeout=10) as sock:
        sock.sendall(
            b"POST /webhooks/quickbooks HTTP/1.1\r\nHost: x\r\nContent-Length: 50000000\r\nintuit-signature: x\r\n\r\n"
        )
        assert sock.recv(100).startswith(b"HTTP/1.1 413")
    assert gw.metric("qbo_webhook_requests_total", result="too_large") == 3


def test_status_is_written_after_the_answer_and_flushed_on_shutdown(
    cluster: ControlPlane, namespace: str, gateway_factory: GatewayFactory, keys: Keys
) -> None:
    """With a flush interval of an hour, the 200 comes back with nothing written; SIGTERM flushes."""
    realm, rv = connected_at_rest(cluster, namespace)
    gw = gateway_factory(keys, args=["--webhook-flush-seconds", "3600"])
    for i in range(3):
        assert gw.post_webhook(dumps([cloudevent(realm, str(i))])).status_code == 200
    time.sleep(1)
    assert qbi(cluster, namespace, "acme")["metadata"]["resourceVersion"] == rv
    assert gw.stop() == 0
    assert webhook_count(cluster, namespace, "acme") == 3
    assert "flushing webhook counts" in gw.log()


def test_unverified_bodies_never_write_status(
    cluster: ControlPlane, namespace: str, gateway_factory: GatewayFactory, keys: Keys
) -> None:
    realm, rv = connected_at_rest(cluster, namespace)
    gw = gateway_factory(keys, args=FLUSH)
    body = dumps([cloudevent(realm, str(i)) for i in range(5)])
    other_keys = Keys()
    for sig in (signing.webhook_signature(other_keys.verifier_token, body), "", "garbage", json.dumps({"a": 1})):
        assert gw.post_webhook(body, sig).status_code == 403
    time.sleep(1.5)
    assert qbi(cluster, namespace, "acme")["metadata"]["resourceVersion"] == rv
    assert gw.metric("qbo_webhook_status_patches_total", result="ok") == 0


@pytest.mark.parametrize("path", ["/webhooks/quickbooks"])
def test_wrong_method_is_405_with_security_headers(
    cluster: ControlPlane, gateway_factory: GatewayFactory, keys: Keys, path: str
) -> None:
    gw = gateway_factory(keys, args=FLUSH)
    resp = httpx.get(f"{gw.local}{path}")
    assert resp.status_code == 405
    assert resp.headers["Content-Security-Policy"].startswith("default-src 'none'")
    assert resp.headers["X-Content-Type-Options"] == "nosniff"
