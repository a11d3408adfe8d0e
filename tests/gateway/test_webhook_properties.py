"""Property-based: whatever arrives at /webhooks/quickbooks — both formats, mangled, random bytes —
the gateway never answers 5xx, never crashes, and never writes status for an unverified body."""

from __future__ import annotations

import json
from typing import Any

import httpx
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from qbo_operator.core import signing
from qbo_operator.gateway.webhook_models import PayloadError, parse_delivery
from qbo_operator.harness.controlplane import ControlPlane
from tests.support.kube import create_integration, qbi, set_status, webhook_count
from tests.support.processes import GatewayFactory, Keys
from tests.support.wait import wait_for

SIGNED_REALM = "4620816365271234001"  # signed bodies name this realm...
UNSIGNED_REALM = "4620816365271234002"  # ...unverified ones this: its status must never change
REALM = "@@realm@@"

text = st.text(max_size=40)
json_scalar = st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | text
json_value = st.recursive(
    json_scalar,
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(text, inner, max_size=4),
    max_leaves=12,
)
verbs = st.sampled_from(["created", "updated", "deleted", "void", "voided", "merged", "emailed", "exploded", ""])
entities = st.sampled_from(["payment", "invoice", "salesreceipt", "customer", "Payment", "x" * 70, ""])


@st.composite
def cloudevent(draw: st.DrawFn) -> Any:
    event: dict[str, Any] = {
        "specversion": draw(st.sampled_from(["1.0", "0.3", ""])),
        "id": draw(st.uuids().map(str) | text),
        "source": "intuit.test",
        "type": f"qbo.{draw(entities)}.{draw(verbs)}.v{draw(st.integers(0, 99999))}",
        "time": draw(st.sampled_from(["2026-11-24T17:03:11.1798Z", "9999-12-31T23:59:59-05:00", "", "soon"])),
        "intuitentityid": draw(st.integers(0, 10**30).map(str) | text),
        "intuitaccountid": draw(st.sampled_from([REALM, REALM, "", "1"])),
        "data": draw(json_value),
    }
    drop = draw(st.sets(st.sampled_from(sorted(event)), max_size=2))
    return {k: v for k, v in event.items() if k not in drop}


@st.composite
def legacy(draw: st.DrawFn) -> Any:
    entity = st.fixed_dictionaries(
        {
            "name": st.sampled_from(["Payment", "Invoice", "Customer", ""]) | text,
            "id": st.integers(0, 10**6).map(str) | json_value,
            "operation": st.sampled_from(["Create", "Update", "Void", "Delete", "Merge", "Emailed", "?"]),
            "lastUpdated": st.sampled_from(["2026-09-02T16:42:19.000Z", "", "not a time"]) | json_value,
        }
    )
    notes = st.lists(
        st.fixed_dictionaries(
            {
                "realmId": st.sampled_from([REALM, REALM, "7"]) | json_value,
                "dataChangeEvent": st.fixed_dictionaries({"entities": st.lists(entity, max_size=4)}) | json_value,
            }
        ),
        max_size=3,
    )
    return {"eventNotifications": draw(notes | json_value)}


@st.composite
def well_formed(draw: st.DrawFn) -> Any:
    """Deliveries Intuit could really send (so the counting path is exercised, not only refusals)."""
    ids = draw(st.lists(st.integers(1, 10**9).map(str), min_size=1, max_size=5, unique=True))
    if draw(st.booleans()):
        verb = draw(st.sampled_from(["created", "updated", "void", "voided", "deleted"]))
        return [
            {
                "specversion": "1.0",
                "id": f"{i}-{verb}",
                "source": "intuit.test",
                "type": f"qbo.payment.{verb}.v1",
                "time": "2026-11-24T17:03:11Z",
                "intuitentityid": i,
                "intuitaccountid": REALM,
                "data": {},
            }
            for i in ids
        ]
    entities = [{"name": "Payment", "id": i, "operation": "Create", "lastUpdated": "2026-11-24T17:03:11Z"} for i in ids]
    return {"eventNotifications": [{"realmId": REALM, "dataChangeEvent": {"entities": entities}}]}


documents = well_formed() | st.lists(cloudevent(), max_size=5) | cloudevent() | legacy() | json_value


@st.composite
def bodies(draw: st.DrawFn) -> tuple[bytes, bool]:
    """(body, signed). Unsigned bodies name UNSIGNED_REALM, signed ones SIGNED_REALM."""
    signed = draw(st.booleans())
    realm = SIGNED_REALM if signed else UNSIGNED_REALM
    kind = draw(st.sampled_from(["document", "document", "bytes", "truncated"]))
    if kind == "bytes":
        return draw(st.binary(max_size=3000)), signed
    raw = json.dumps(draw(documents)).replace(REALM, realm).encode()
    if kind == "truncated":
        raw = raw[: draw(st.integers(0, len(raw)))]
    return raw, signed


def payment_events(signed_bodies: list[bytes]) -> set[str]:
    """The distinct Payment events for the signed realm in the bodies the gateway accepted."""
    expected: set[str] = set()
    for body in signed_bodies:
        try:
            events = parse_delivery(body).events
        except PayloadError:
            continue
        expected |= {e.key for e in events if e.realm_id == SIGNED_REALM and e.entity == "Payment"}
    return expected


def test_random_deliveries_never_fail_the_gateway(
    cluster: ControlPlane, namespace: str, gateway_factory: GatewayFactory, keys: Keys
) -> None:
    create_integration(cluster, namespace, "signed")
    set_status(cluster, namespace, "signed", {"realmId": SIGNED_REALM})
    create_integration(cluster, namespace, "unsigned")
    set_status(cluster, namespace, "unsigned", {"realmId": UNSIGNED_REALM})
    untouched = qbi(cluster, namespace, "unsigned")["metadata"]["resourceVersion"]
    gw = gateway_factory(keys, args=["--webhook-flush-seconds", "0.2"])
    client = httpx.Client(base_url=gw.local, timeout=30)
    seen = {"unsigned": 0}
    signed_bodies: list[bytes] = []

    @settings(
        max_examples=300,
        deadline=None,
        derandomize=True,  # the same examples on every run: a CI failure reproduces
        suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow, HealthCheck.data_too_large],
    )
    @given(
        delivery=bodies(),
        bad_signature=st.sampled_from(["other-key", "missing", "empty", "random", "flipped"]),
        content_type=st.sampled_from(["application/json", "application/cloudevents+json", "text/plain", ""]),
    )
    def deliver(delivery: tuple[bytes, bool], bad_signature: str, content_type: str) -> None:
        body, signed = delivery
        headers = {"content-type": content_type} if content_type else {}
        if signed:
            headers["intuit-signature"] = signing.webhook_signature(keys.verifier_token, body)
        elif bad_signature != "missing":
            good = signing.webhook_signature(keys.verifier_token, body)
            headers["intuit-signature"] = {
                "other-key": signing.webhook_signature("not-the-verifier-token", body),
                "empty": "",
                "random": "Zm9vYmFy" * 5,
                "flipped": good[:-2] + ("A" if good[-2] != "A" else "B") + good[-1],
            }[bad_signature]
        resp = client.post("/webhooks/quickbooks", content=body, headers=headers)
        assert resp.status_code == (200 if signed else 403), (resp.status_code, body[:200])
        if signed:
            signed_bodies.append(body)
        else:
            seen["unsigned"] += 1

    deliver()
    assert len(signed_bodies) > 50 and seen["unsigned"] > 50
    assert client.get("/healthz").status_code == 200  # the process and its background tasks live on
    log = gw.log()
    assert "Traceback" not in log and "unexpected error" not in log

    # Each distinct Payment event for the signed realm is counted exactly once; nothing for the other.
    expected = payment_events(signed_bodies)
    assert len(expected) > 10  # the strategies do reach the counting path
    wait_for(f"{len(expected)} events", lambda: webhook_count(cluster, namespace, "signed") == len(expected))
    assert qbi(cluster, namespace, "unsigned")["metadata"]["resourceVersion"] == untouched
    assert "webhook" not in (qbi(cluster, namespace, "unsigned").get("status") or {})
    client.close()
