"""Webhook bodies as Intuit sends them (CloudEvents and the legacy eventNotifications), Intuit's published
signature vector, and what the QBO sandbox says it delivered."""

from __future__ import annotations

import json
import uuid
from collections.abc import Iterable
from typing import Any

from qbo_operator.harness.sandbox.qbo_webhooks import WebhookDelivery

# Intuit's published test vector (dotnet-sdk WebhooksServiceTest): verifier token, body and signature.
VECTOR_TOKEN = "00faeec4-08d0-4996-bb37-698ae19f0149"
VECTOR_BODY = (
    b'{"eventNotifications":[{"realmId":"1269959970","dataChangeEvent":{"entities":[{"name":"Vendor","id":"40",'
    b'"operation":"Update","lastUpdated":"2016-10-05T03:09:04.000Z"},{"name":"Customer","id":"43",'
    b'"operation":"Create","lastUpdated":"2016-10-05T03:07:04.000Z"}]}}]}'
)
VECTOR_SIGNATURE = "6q+xGyMirJupwKTh2/WBl2NcdxzxqdIbk3sneKTxLWM="


def cloudevent(
    realm: str, entity_id: str, entity: str = "payment", verb: str = "created", **extra: Any
) -> dict[str, Any]:
    return {
        "specversion": "1.0",
        "id": extra.pop("id", str(uuid.uuid4())),
        "source": "intuit.test",
        "type": f"qbo.{entity}.{verb}.v1",
        "datacontenttype": "application/json",
        "time": "2026-11-24T17:03:11.179851517Z",
        "intuitentityid": entity_id,
        "intuitaccountid": realm,
        "data": {},
        **extra,
    }


def legacy(realm_entities: Iterable[tuple[str, list[dict[str, Any]]]]) -> dict[str, Any]:
    return {
        "eventNotifications": [
            {"realmId": realm, "dataChangeEvent": {"entities": entities}} for realm, entities in realm_entities
        ]
    }


def legacy_entity(
    entity_id: str, name: str = "Payment", operation: str = "Create", when: str | None = None
) -> dict[str, Any]:
    return {"name": name, "id": entity_id, "operation": operation, "lastUpdated": when or "2026-11-24T17:03:11.000Z"}


def dumps(doc: Any) -> bytes:
    """Compact JSON, as Intuit signs it."""
    return json.dumps(doc, separators=(",", ":")).encode()


def sync_events_sent(deliveries: Iterable[WebhookDelivery]) -> set[str]:
    """Ids of the Payment and Invoice events (what gates a night) in the sandbox's answered CloudEvents deliveries."""
    ids: set[str] = set()
    for d in deliveries:
        if d.ok:
            ids |= {e["id"] for e in json.loads(d.body) if e["type"].startswith(("qbo.payment.", "qbo.invoice."))}
    return ids


def payment_events_sent(deliveries: Iterable[WebhookDelivery]) -> set[str]:
    """Ids of the Payment events the sandbox delivered (read from the raw bodies it signed)."""
    ids: set[str] = set()
    for d in deliveries:
        doc = json.loads(d.body)
        if isinstance(doc, list):
            ids |= {e["id"] for e in doc if e["type"].startswith("qbo.payment.")}
        else:
            for note in doc["eventNotifications"]:
                for e in note["dataChangeEvent"]["entities"]:
                    if e["name"] == "Payment":
                        ids.add(f"{note['realmId']}/{e['id']}/{e['operation']}/{e['lastUpdated']}")
    return ids
