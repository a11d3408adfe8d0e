"""A payment set replaces the payment's records as a unit (docs/greencheck.md §2): the sandbox over real HTTP."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import httpx
import pytest

from qbo_operator.harness.sandbox.greencheck import GreenCheckSandbox
from qbo_operator.sync.records import PaymentSet, encode_body, encode_payment_set
from tests.support.greencheck import CLIENT_ID, CLIENT_SECRET, CRB, REALM, SP_ID, make_record, make_set

INGEST = f"/service-providers/{SP_ID}/crbs/{CRB}/sales/invoice-payments"


def eid(payment: int, invoice: int) -> str:
    """The external id of payment `payment` applied to invoice `1000 + invoice` (as make_set builds it)."""
    return f"qbo:{REALM}:payment:{payment}:invoice:{1000 + invoice}"


class Session:
    """One sandbox served over HTTP with a token: `send` posts payment sets and returns the results."""

    def __init__(self, http: httpx.AsyncClient, url: str, token: str) -> None:
        self.http, self.url, self.token = http, url, token

    async def send(self, *sets: PaymentSet) -> list[dict[str, Any]]:
        content = encode_body(REALM, [encode_payment_set(s) for s in sets])
        resp = await self.http.post(self.url + INGEST, content=content, headers=self._auth())
        assert resp.status_code == 200, resp.text
        results: list[dict[str, Any]] = resp.json()["results"]
        return results

    async def get(self, path: str) -> httpx.Response:
        return await self.http.get(self.url + path, headers=self._auth())

    def _auth(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.token}", "Content-Type": "application/json"}


async def session(http: httpx.AsyncClient, url: str) -> Session:
    body = {"client_id": CLIENT_ID, "client_secret": CLIENT_SECRET, "grant_type": "client_credentials"}
    return Session(http, url, str((await http.post(url + "/auth/token", json=body)).json()["access_token"]))


# (case, sets sent before, the set sent, its record results as (payment, invoice, status), current afterwards)
REPLACE = [
    ("create", [], make_set(7, 1, 2), [(7, 1, "created"), (7, 2, "created")], {(7, 1), (7, 2)}),
    ("update", [make_set(7, 1, 2)], make_set(7, 1, 2, open_balance=5),
     [(7, 1, "updated"), (7, 2, "updated")], {(7, 1), (7, 2)}),
    ("unchanged", [make_set(7, 1, 2)], make_set(7, 1, 2), [(7, 1, "unchanged"), (7, 2, "unchanged")],
     {(7, 1), (7, 2)}),
    ("partial-retract", [make_set(7, 1, 2)], make_set(7, 1), [(7, 1, "updated"), (7, 2, "retracted")], {(7, 1)}),
    ("moved", [make_set(7, 1)], make_set(7, 3), [(7, 3, "created"), (7, 1, "retracted")], {(7, 3)}),
    ("full-retract", [make_set(7, 1, 2)], make_set(7), [(7, 1, "retracted"), (7, 2, "retracted")], set()),
    ("retract-unknown", [], make_set(7), [], set()),
    ("retract-twice", [make_set(7, 1), make_set(7)], make_set(7), [], set()),
    ("other-payment-untouched", [make_set(7, 1), make_set(8, 2)], make_set(7), [(7, 1, "retracted")], {(8, 2)}),
    ("recreated", [make_set(7, 1), make_set(7)], make_set(7, 1), [(7, 1, "created")], {(7, 1)}),
]  # fmt: skip


@pytest.mark.parametrize(
    ("before", "sent", "expected", "current"), [c[1:] for c in REPLACE], ids=[c[0] for c in REPLACE]
)
async def test_a_payment_set_replaces_the_payments_records(
    sandbox: GreenCheckSandbox,
    before: list[PaymentSet],
    sent: PaymentSet,
    expected: list[tuple[int, int, str]],
    current: set[tuple[int, int]],
) -> None:
    async with sandbox.serve() as url, httpx.AsyncClient() as http:
        s = await session(http, url)
        for earlier in before:
            await s.send(earlier)
        [result] = await s.send(sent)
        sales = (await s.get(f"/service-providers/{SP_ID}/crbs/{CRB}/sales")).json()
    assert result["payment_id"] == sent.payment_id and result["status"] == "applied"
    assert result["records"] == [{"external_id": eid(p, n), "status": st} for p, n, st in expected]
    held = sandbox.current_records(CRB)
    assert set(held) == {eid(p, n) for p, n in current}
    assert {r.external_id: r.model_dump(mode="json") for r in sent.records}.items() <= held.items()
    assert {sale["pos_sale_id"] for sale in sales["data"]} == set(held)


def _copy(s: PaymentSet, i: int, record: dict[str, object] | None = None, **payment: object) -> PaymentSet:
    """`s` with record `i`'s fields (`record`) and payment fields (`payment`) changed."""
    rec = s.records[i]
    changed = rec.model_copy(update={**(record or {}), "payment": rec.payment.model_copy(update=payment)})
    return s.model_copy(update={"records": [changed if j == i else r for j, r in enumerate(s.records)]})


# (case, the bad set for payment 7, the fields its errors name)
INVALID = [
    ("negative-total", make_set(7, 1, 2, total=-1), {"records[0].invoice.total", "records[1].invoice.total"}),
    ("no-invoice-number", make_set(7, 1, 3, number=" "), {"records[0].invoice.number", "records[1].invoice.number"}),
    ("negative-credit", _copy(make_set(7, 1, 3), 1, credit_applied=-1), {"records[1].payment.credit_applied"}),
    ("negative-unapplied", _copy(make_set(7, 3), 0, unapplied_amount=-5), {"records[0].payment.unapplied_amount"}),
    ("bad-currency", _copy(make_set(7, 3), 0, {"currency": "usd"}), {"records[0].currency"}),
    ("other-realm", make_set(7, 1, realm="111"), {"records[0].external_id"}),
    ("other-payment", PaymentSet(payment_id="7", records=[make_record(1)]),
     {"records[0].external_id", "records[0].payment.id"}),
    ("repeated-record", PaymentSet(payment_id="7", records=[make_set(7, 1).records[0]] * 2),
     {"records[1].external_id"}),
    ("reject-list", make_set(7, 1, 4), {"records[1].external_id"}),
]  # fmt: skip


@pytest.mark.parametrize(("bad", "fields"), [c[1:] for c in INVALID], ids=[c[0] for c in INVALID])
async def test_a_set_with_any_invalid_record_is_rejected_whole_and_changes_nothing(
    sandbox: GreenCheckSandbox, bad: PaymentSet, fields: set[str]
) -> None:
    sandbox.reject_external_ids.add(eid(7, 4))
    async with sandbox.serve() as url, httpx.AsyncClient() as http:
        s = await session(http, url)
        await s.send(make_set(7, 1, 2))
        held = sandbox.current_records(CRB)
        rejected, other = await s.send(bad, make_set(8, 5))
    assert rejected["payment_id"] == "7" and rejected["status"] == "rejected" and rejected["records"] == []
    assert {e["field"] for e in rejected["errors"]} == fields
    assert other == {
        "payment_id": "8",
        "status": "applied",
        "records": [{"external_id": eid(8, 5), "status": "created"}],
    }
    assert sandbox.current_records(CRB) == {**held, eid(8, 5): make_set(8, 5).records[0].model_dump(mode="json")}
    assert [len(sandbox.versions(CRB, eid(7, n))) for n in (1, 2)] == [1, 1]
    assert sandbox.results == {"created": 3, "rejected": 1}


async def test_a_rejection_is_lifted_by_clear_rejections(sandbox: GreenCheckSandbox) -> None:
    sandbox.reject_external_ids.add(eid(7, 1))
    async with sandbox.serve() as url, httpx.AsyncClient() as http:
        s = await session(http, url)
        [first] = await s.send(make_set(7, 1))
        sandbox.clear_rejections()
        [second] = await s.send(make_set(7, 1))
    assert (first["status"], second["status"]) == ("rejected", "applied")
    assert set(sandbox.current_records(CRB)) == {eid(7, 1)}


async def test_every_change_is_a_version_for_audit(sandbox: GreenCheckSandbox) -> None:
    steps: Sequence[PaymentSet] = [
        make_set(7, 1),
        make_set(7, 1),  # unchanged: no version
        make_set(7, 1, open_balance=40),
        make_set(7),
        make_set(7, 1),
    ]
    async with sandbox.serve() as url, httpx.AsyncClient() as http:
        s = await session(http, url)
        for step in steps:
            await s.send(step)
        path = f"{INGEST}/{eid(7, 1)}/versions"
        served = await s.get(path)
        unknown = await s.get(f"{INGEST}/{eid(7, 9)}/versions")
        unauth = await http.get(url + path)
    history = sandbox.versions(CRB, eid(7, 1))
    assert [(v["version"], v["status"]) for v in history] == [
        (1, "created"), (2, "updated"), (3, "retracted"), (4, "created")
    ]  # fmt: skip
    assert [v["record"] and v["record"]["invoice"]["open_balance"] for v in history] == [0, 40, None, 0]
    assert [v["at"] for v in history] == sorted(v["at"] for v in history)
    assert served.json() == {"external_id": eid(7, 1), "versions": history}
    assert unknown.status_code == 404 and unauth.status_code == 401
    assert sandbox.results == {"created": 2, "unchanged": 1, "updated": 1, "retracted": 1}
    assert sandbox.state()["records"] == {CRB: 1}
