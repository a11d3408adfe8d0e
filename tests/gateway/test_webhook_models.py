"""Both Intuit payload formats → one event model; table-driven, no I/O (docs/qbo.md §5)."""

from __future__ import annotations

import json

import pytest

from qbo_operator.core import signing
from qbo_operator.gateway.webhook_models import Operation, PayloadError, canonical_entity, parse_delivery
from tests.support.webhooks import VECTOR_BODY, VECTOR_SIGNATURE, VECTOR_TOKEN

# docs/qbo.md §5.1 and §5.4: the documented samples.
LEGACY_SAMPLE = {
    "eventNotifications": [
        {
            "realmId": "1185883450",
            "dataChangeEvent": {
                "entities": [
                    {"name": "Payment", "id": "163", "operation": "Create", "lastUpdated": "2026-09-02T16:42:19.000Z"},
                    {
                        "name": "Customer",
                        "id": "7",
                        "operation": "Merge",
                        "lastUpdated": "2026-09-02T16:42:19.000Z",
                        "deletedId": "5",
                    },
                ]
            },
        }
    ]
}
CLOUDEVENTS_SAMPLE = [
    {
        "specversion": "1.0",
        "id": "88cd52aa-33b6-4351-9aa4-47572edbd068",
        "source": "intuit.dsnBgbseACLLRZNxo2dfc4evmEJdxde58xeeYcZliOU=",
        "type": "qbo.account.created.v1",
        "datacontenttype": "application/json",
        "time": "2025-09-10T21:31:25.179851517Z",
        "intuitentityid": "1234",
        "intuitaccountid": "310687",
        "data": {},
    }
]


def ce(type_: str, **kw: object) -> dict[str, object]:
    return {**CLOUDEVENTS_SAMPLE[0], "type": type_, **kw}


def test_intuit_test_vector_verifies_and_parses() -> None:
    assert signing.verify_webhook(VECTOR_TOKEN, VECTOR_BODY, VECTOR_SIGNATURE)
    delivery = parse_delivery(VECTOR_BODY)
    assert delivery.source_format == "legacy"
    assert [(e.realm_id, e.entity, e.entity_id, e.operation) for e in delivery.events] == [
        ("1269959970", "Vendor", "40", Operation.UPDATE),
        ("1269959970", "Customer", "43", Operation.CREATE),
    ]
    assert delivery.problems == []


@pytest.mark.parametrize(
    ("doc", "expected"),
    [
        (
            LEGACY_SAMPLE,
            [("1185883450", "Payment", "163", Operation.CREATE), ("1185883450", "Customer", "7", Operation.MERGE)],
        ),
        (CLOUDEVENTS_SAMPLE, [("310687", "Account", "1234", Operation.CREATE)]),
        ([ce("qbo.payment.created.v1")], [("310687", "Payment", "1234", Operation.CREATE)]),
        ([ce("qbo.payment.void.v1")], [("310687", "Payment", "1234", Operation.VOID)]),
        ([ce("qbo.payment.voided.v1")], [("310687", "Payment", "1234", Operation.VOID)]),
        ([ce("qbo.invoice.updated.v1")], [("310687", "Invoice", "1234", Operation.UPDATE)]),
        ([ce("qbo.invoice.emailed.v1")], [("310687", "Invoice", "1234", Operation.EMAILED)]),
        ([ce("qbo.salesreceipt.deleted.v1")], [("310687", "SalesReceipt", "1234", Operation.DELETE)]),
        ([ce("qbo.customer.merged.v1")], [("310687", "Customer", "1234", Operation.MERGE)]),
        ([ce("qbo.payment.frobbed.v1")], [("310687", "Payment", "1234", Operation.OTHER)]),
        ([ce("qbo.spaceship.created.v2")], [("310687", "Other", "1234", Operation.CREATE)]),
        # numbers where Intuit sends strings are accepted
        (
            [ce("qbo.payment.created.v1", intuitaccountid=42, intuitentityid=7)],
            [("42", "Payment", "7", Operation.CREATE)],
        ),
        # one structured-mode CloudEvent (an object, not an array)
        (ce("qbo.payment.created.v1"), [("310687", "Payment", "1234", Operation.CREATE)]),
        # one delivery naming several realms
        (
            [
                ce("qbo.payment.created.v1", id="a", intuitaccountid="1"),
                ce("qbo.payment.created.v1", id="b", intuitaccountid="2"),
            ],
            [("1", "Payment", "1234", Operation.CREATE), ("2", "Payment", "1234", Operation.CREATE)],
        ),
        ([], []),
        ({"eventNotifications": []}, []),
    ],
)
def test_formats_normalise_to_one_model(doc: object, expected: list[tuple[str, str, str, Operation]]) -> None:
    delivery = parse_delivery(json.dumps(doc).encode())
    assert [(e.realm_id, e.entity, e.entity_id, e.operation) for e in delivery.events] == expected
    assert delivery.problems == []


@pytest.mark.parametrize(
    "body",
    [
        b"",
        b"not json",
        b"\xff\xfe\x00garbage",
        b"null",
        b"42",
        b'"a string"',
        b'{"something": "else"}',
        b'{"eventNotifications": {"not": "a list"}}',
        b"[" * 100_000 + b"]" * 100_000,
    ],
)
def test_unknown_shapes_raise_payload_error(body: bytes) -> None:
    with pytest.raises(PayloadError):
        parse_delivery(body)


@pytest.mark.parametrize(
    ("doc", "good", "problem"),
    [
        ([ce("qbo.payment.created.v1"), {"specversion": "1.0"}], 1, "event[1]"),
        ([ce("payment-created")], 0, "event[0]: type"),
        ([ce("qbo.payment.created.v1", intuitaccountid="")], 0, "intuitaccountid"),
        ([ce("qbo.payment.created.v1", id="x" * 500)], 0, "event[0]: id"),
        ([42, "x", None, ce("qbo.payment.created.v1")], 1, "event[0]"),
        (
            {"eventNotifications": [{"realmId": "1"}, LEGACY_SAMPLE["eventNotifications"][0]]},
            2,
            "eventNotifications[0]",
        ),
        (
            {"eventNotifications": [{"realmId": "1", "dataChangeEvent": {"entities": "nope"}}]},
            0,
            "entities is not a list",
        ),
        (
            {"eventNotifications": [{"realmId": "1", "dataChangeEvent": {"entities": [{"name": "Payment"}]}}]},
            0,
            "entities[0]",
        ),
        ([ce("qbo.payment.created.v1", time="not a time")], 0, "time"),
    ],
)
def test_bad_elements_are_reported_and_the_rest_kept(doc: object, good: int, problem: str) -> None:
    delivery = parse_delivery(json.dumps(doc).encode())
    assert len(delivery.events) == good
    assert any(problem in p for p in delivery.problems), delivery.problems


def test_dedup_keys_are_stable_per_event_and_distinct_between_events() -> None:
    body = json.dumps([ce("qbo.payment.created.v1", id="one"), ce("qbo.payment.created.v1", id="two")]).encode()
    first, second = parse_delivery(body).events, parse_delivery(body).events
    assert [e.key for e in first] == [e.key for e in second]
    assert first[0].key != first[1].key
    legacy_a = parse_delivery(json.dumps(LEGACY_SAMPLE).encode()).events
    legacy_b = parse_delivery(json.dumps(LEGACY_SAMPLE).encode()).events
    assert [e.key for e in legacy_a] == [e.key for e in legacy_b]
    assert len({e.key for e in legacy_a}) == 2


def test_times_are_utc_and_extreme_times_do_not_crash() -> None:
    events = parse_delivery(
        json.dumps(
            [
                ce("qbo.payment.created.v1", id="1", time="2026-11-24T09:00:00-08:00"),
                ce("qbo.payment.created.v1", id="2", time="9999-12-31T23:59:59-05:00"),
                ce("qbo.payment.created.v1", id="3", time="2026-11-24T17:00:00"),
            ]
        ).encode()
    ).events
    assert events[0].time is not None and events[0].time.isoformat() == "2026-11-24T17:00:00+00:00"
    assert events[1].time is None
    assert events[2].time is not None and events[2].time.utcoffset() is not None


@pytest.mark.parametrize(
    ("raw", "canonical"),
    [("payment", "Payment"), ("PAYMENT", "Payment"), ("salesreceipt", "SalesReceipt"), ("x", "Other")],
)
def test_entity_names_are_bounded(raw: str, canonical: str) -> None:
    assert canonical_entity(raw) == canonical
