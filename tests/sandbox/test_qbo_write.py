"""Intuit's write API and the reads that see changes, over real HTTP (issue #15): create, full and
sparse update with SyncToken, stale tokens, delete and void; CDC with updates and deletes; the query
refusals and orders a client can trip on (MAXRESULTS, ties, inactive payment methods)."""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

import httpx
import pytest
import pytest_asyncio

from qbo_operator.harness.sandbox.qbo import QboSandbox
from qbo_operator.harness.sandbox.qbo_books import check_books
from qbo_operator.harness.sandbox.qbo_values import parse_time
from tests.support.sandbox import FakeClock, SandboxFactory, bearer, record_changes


@dataclass
class Api:
    sb: QboSandbox
    realm: str
    http: httpx.AsyncClient
    base: str
    token: str

    async def post(self, segment: str, body: dict[str, Any], **params: str) -> httpx.Response:
        url = f"{self.base}/v3/company/{self.realm}/{segment}"
        return await self.http.post(url, json=body, params={"minorversion": "75", **params}, headers=bearer(self.token))

    async def get(self, path: str, **params: str) -> httpx.Response:
        url = f"{self.base}/v3/company/{self.realm}/{path}"
        return await self.http.get(url, params=params, headers=bearer(self.token))

    async def query(self, statement: str) -> httpx.Response:
        return await self.get("query", query=statement)


@pytest_asyncio.fixture(loop_scope="function")
async def api(make_sandbox: SandboxFactory, clock: FakeClock) -> AsyncIterator[Api]:
    sb = make_sandbox(tie_shuffle_seed=None)
    realm = sb.add_company("Acme Dispensary", seed=7, payments=40)
    token = sb.issue_tokens(realm)["access_token"]
    clock.advance(5)
    async with sb.serve() as base, httpx.AsyncClient() as http:
        yield Api(sb, realm, http, base, token)


def fault_code(resp: httpx.Response) -> str:
    assert resp.status_code == 400, resp.text
    return str(resp.json()["Fault"]["Error"][0]["code"])


async def test_payment_create_update_stale_void_delete(api: Api, clock: FakeClock) -> None:
    company = api.sb.companies[api.realm]
    customer = min(company.customers, key=int)
    inv = api.sb.create_invoice(api.realm, customer_id=customer, amount="120.00")
    events = record_changes(api.sb, api.realm)

    created = await api.post("payment", {"CustomerRef": {"value": customer}, "TotalAmt": 150.00,
                                         "PaymentMethodRef": {"value": "2"}, "PaymentRefNum": "1001"})  # fmt: skip
    assert created.status_code == 200, created.text
    body = created.json()
    assert set(body) == {"Payment", "time"}
    pay = body["Payment"]
    assert (pay["UnappliedAmt"], pay["SyncToken"], pay["PaymentMethodRef"]) == (150.0, "0", {"value": "2"})

    clock.advance(600)
    line = {"Amount": 120.00, "LinkedTxn": [{"TxnId": inv["Id"], "TxnType": "Invoice"}]}
    sparse = await api.post("payment", {"Id": pay["Id"], "SyncToken": "0", "sparse": True, "Line": [line]})
    assert sparse.status_code == 200, sparse.text
    applied = sparse.json()["Payment"]
    assert (applied["SyncToken"], applied["TotalAmt"], applied["UnappliedAmt"]) == ("1", 150.0, 30.0)
    assert applied["MetaData"]["CreateTime"] == pay["MetaData"]["CreateTime"] != applied["MetaData"]["LastUpdatedTime"]
    assert inv["Balance"] == 0

    stale = await api.post("payment", {"Id": pay["Id"], "SyncToken": "0", "sparse": True, "PaymentRefNum": "X"})
    assert fault_code(stale) == "5010" and stale.json()["Fault"]["Error"][0]["Message"] == "Stale Object Error"
    full = await api.post("payment", {"Id": pay["Id"], "SyncToken": "1", "CustomerRef": {"value": customer},
                                      "TotalAmt": 150.00})  # fmt: skip
    assert full.status_code == 200 and full.json()["Payment"]["Line"] == [], "a full update without Line unlinks"
    assert inv["Balance"] == 120

    voided = await api.post("payment", {"Id": pay["Id"], "SyncToken": "2"}, operation="update", include="void")
    assert voided.status_code == 200 and voided.json()["Payment"]["TotalAmt"] == 0
    deleted = await api.post("payment", {"Id": pay["Id"], "SyncToken": "3"}, operation="delete")
    assert deleted.json()["Payment"] == {"domain": "QBO", "status": "Deleted", "Id": pay["Id"]}
    assert fault_code(await api.get(f"payment/{pay['Id']}")) == "610"
    ops = [op for entity, row_id, op in events if entity == "Payment" and row_id == pay["Id"]]
    assert ops == ["Create", "Update", "Update", "Void", "Delete"]
    assert check_books(company) == []


async def test_invoice_and_credit_memo_writes(api: Api) -> None:
    company = api.sb.companies[api.realm]
    customer = min(company.customers, key=int)
    item = next(i for i in company.items.values() if i["Type"] == "Inventory")
    line = {"Amount": 60.0, "DetailType": "SalesItemLineDetail",
            "SalesItemLineDetail": {"ItemRef": {"value": item["Id"]}, "Qty": 4, "UnitPrice": 15.0}}  # fmt: skip
    created = await api.post("invoice", {"CustomerRef": {"value": customer}, "Line": [line], "DocNumber": "W-1"})
    inv = created.json()["Invoice"]
    assert (inv["TotalAmt"], inv["DocNumber"]) == (60.0, "W-1")
    memo = (await api.post("invoice", {"Id": inv["Id"], "SyncToken": "0", "sparse": True,
                                       "CustomerMemo": {"value": "Thanks"}})).json()["Invoice"]  # fmt: skip
    assert (memo["CustomerMemo"], memo["SyncToken"], memo["TotalAmt"]) == ({"value": "Thanks"}, "1", 60.0)
    assert fault_code(await api.post("invoice", {"Id": inv["Id"], "SyncToken": "1"})) == "6000", "full needs lines"
    voided = await api.post("invoice", {"Id": inv["Id"], "SyncToken": "1"}, operation="void")
    assert voided.json()["Invoice"]["PrivateNote"] == "Voided"
    assert (await api.get(f"invoice/{inv['Id']}")).json()["Invoice"]["TotalAmt"] == 0

    credit = (await api.post("creditmemo", {"CustomerRef": {"value": customer}, "Line": [line]})).json()["CreditMemo"]
    assert credit["RemainingCredit"] == 60.0
    renamed = await api.post("creditmemo", {"Id": credit["Id"], "SyncToken": "0", "sparse": True, "DocNumber": "CM"})
    assert renamed.json()["CreditMemo"]["DocNumber"] == "CM"
    assert fault_code(await api.post("creditmemo", {"Id": credit["Id"], "SyncToken": "1"}, operation="void")) == "2010"
    assert check_books(company) == []


@pytest.mark.parametrize(
    ("segment", "body", "params", "code"),
    [
        ("payment", {"TotalAmt": 5}, {}, "6000"),  # no CustomerRef
        ("payment", {"Id": "999999", "SyncToken": "0"}, {}, "610"),
        ("payment", {"Id": "@pay"}, {}, "2020"),  # no SyncToken
        ("payment", {"Id": "@pay", "SyncToken": "0", "sparse": True, "Line": [{"Amount": "x"}]}, {}, "2010"),
        ("payment", {"CustomerRef": {"value": "@cust"}, "TotalAmt": 5, "PaymentMethodRef": {"value": "77"}}, {},
         "6000"),
        ("invoice", {"Id": "@pay", "SyncToken": "0"}, {"operation": "delete"}, "610"),
        ("payment", {"Id": "@pay", "SyncToken": "0"}, {"operation": "merge"}, "2010"),
    ],
)  # fmt: skip
async def test_write_refusals(api: Api, segment: str, body: dict[str, Any], params: dict[str, str], code: str) -> None:
    company = api.sb.companies[api.realm]
    names = {"@pay": next(iter(company.payments)), "@cust": min(company.customers, key=int)}
    body = {k: names.get(v, v) if isinstance(v, str) else v for k, v in body.items()}
    if "CustomerRef" in body:
        body["CustomerRef"] = {"value": names["@cust"]}
    assert fault_code(await api.post(segment, body, **params)) == code


async def test_write_needs_a_token(api: Api) -> None:
    resp = await api.http.post(f"{api.base}/v3/company/{api.realm}/payment", json={})
    assert resp.status_code == 401
    assert api.sb.requests["write"] == api.sb.requests["unauthorized"] == 1


async def test_cdc_shows_updates_voids_and_deletes(api: Api, clock: FakeClock) -> None:
    sb, realm = api.sb, api.realm
    company = sb.companies[realm]
    since = clock.now
    clock.advance(10)
    old = next(p for p in company.payments.values() if p["Line"] and p["Id"] not in company.voided)
    inv = company.invoices[old["Line"][0]["LinkedTxn"][0]["TxnId"]]
    sb.update_payment(realm, old["Id"], ref_num="EDITED")
    sb.delete_invoice(realm, inv["Id"])
    voided = sb.void_payment(realm, next(p for p in company.payments.values() if p["Id"] != old["Id"])["Id"])
    resp = await api.get("cdc", entities="Payment,Invoice", changedSince=since.isoformat())
    payments, invoices = resp.json()["CDCResponse"][0]["QueryResponse"]
    by_id = {p["Id"]: p for p in payments["Payment"]}
    assert by_id[old["Id"]]["PaymentRefNum"] == "EDITED" and by_id[voided["Id"]]["PrivateNote"].startswith("Voided")
    stubs = [i for i in invoices["Invoice"] if i.get("status") == "Deleted"]
    assert [s["Id"] for s in stubs] == [inv["Id"]] and set(stubs[0]) == {"domain", "status", "Id", "MetaData"}
    assert all(parse_time(r["MetaData"]["LastUpdatedTime"]) >= since for r in payments["Payment"])


async def test_maxresults_above_1000_is_refused(api: Api) -> None:
    resp = await api.query("SELECT * FROM Payment MAXRESULTS 1001")
    assert fault_code(resp) == "4001"
    assert "value 1001 is too large. Max allowed value is 1000" in resp.json()["Fault"]["Error"][0]["Detail"]
    assert (await api.query("SELECT * FROM Payment MAXRESULTS 1000")).status_code == 200


async def test_orderby_id_is_numeric_both_ways(api: Api) -> None:
    for direction, reverse in (("", False), (" DESC", True)):
        resp = await api.query(f"SELECT * FROM Invoice ORDERBY Id{direction} MAXRESULTS 1000")  # noqa: S608 - QBO, not SQL
        ids = [int(r["Id"]) for r in resp.json()["QueryResponse"]["Invoice"]]
        assert len(ids) > 10 and ids == sorted(ids, reverse=reverse)


@pytest.mark.parametrize(
    ("where", "names"),
    [
        ("", {"Cash", "Check", "Visa", "MasterCard", "ACH/EFT", "Debit", "Wire Transfer"}),
        (" WHERE Active IN (true, false)", {"Cash", "Check", "Visa", "MasterCard", "ACH/EFT", "Debit",
                                            "Wire Transfer", "Old Card"}),
        (" WHERE Active = false", {"Old Card"}),
        (" WHERE Id IN ('2', '8')", {"Check"}),
    ],
)  # fmt: skip
async def test_inactive_payment_methods_hidden_unless_asked(api: Api, where: str, names: set[str]) -> None:
    resp = await api.query(f"SELECT * FROM PaymentMethod{where}")  # noqa: S608 - QBO statements, not SQL
    assert {m["Name"] for m in resp.json()["QueryResponse"]["PaymentMethod"]} == names


@pytest.mark.parametrize("field", ["MetaData.CreateTime", "Metadata.LastUpdatedTime"])
async def test_ties_shuffle_between_queries_but_never_the_set(api: Api, clock: FakeClock, field: str) -> None:
    sb, realm = api.sb, api.realm
    clock.advance(120)
    since = clock.now - timedelta(seconds=61)
    sb.generate_payments(realm, n=600, seed=1)  # ten a second over the last minute
    key = field.split(".")[1]
    where = f"WHERE {field} >= '{since.isoformat()}'"
    statement = f"SELECT * FROM Payment {where} ORDERBY {field} MAXRESULTS 1000"  # noqa: S608 - QBO, not SQL

    async def ids() -> list[str]:
        rows = (await api.query(statement)).json()["QueryResponse"]["Payment"]
        stamps = [parse_time(r["MetaData"][key]) for r in rows]
        assert stamps == sorted(stamps)
        return [r["Id"] for r in rows]

    plain = [await ids(), await ids()]
    assert plain[0] == plain[1] and len(set(plain[0])) == len(plain[0]) > 500
    by_second: dict[str, list[int]] = {}
    for row_id in plain[0]:
        stamp = sb.companies[realm].payments[row_id]["MetaData"][key]
        by_second.setdefault(stamp, []).append(int(row_id))
    assert max(len(v) for v in by_second.values()) > 1 and all(v == sorted(v) for v in by_second.values())
    sb.tie_shuffle_seed = 42
    shuffled = [await ids(), await ids()]
    assert shuffled[0] != shuffled[1] != plain[0]
    assert set(shuffled[0]) == set(shuffled[1]) == set(plain[0])
    assert (await api.query(statement.replace(f"ORDERBY {field}", "ORDERBY Id"))).status_code == 200


async def test_tie_shuffle_is_seeded(make_sandbox: SandboxFactory, clock: FakeClock) -> None:
    orders = []
    for _ in range(2):
        sb = make_sandbox(tie_shuffle_seed=5)
        realm = sb.add_company("Acme Dispensary", seed=7, payments=40)
        token = sb.issue_tokens(realm)["access_token"]
        sb.generate_payments(realm, n=200, seed=1)
        async with sb.serve() as base, httpx.AsyncClient() as http:
            statement = "SELECT * FROM Payment ORDERBY MetaData.CreateTime DESC"
            resp = await http.get(
                f"{base}/v3/company/{realm}/query", headers=bearer(token), params={"query": statement}
            )
            orders.append([r["Id"] for r in resp.json()["QueryResponse"]["Payment"]])
    assert orders[0] == orders[1]
