"""The query language: the parser table-driven, then queries over real HTTP, including paging (docs/qbo.md §2.3)."""

from __future__ import annotations

from decimal import Decimal
from typing import Any
from zoneinfo import ZoneInfo

import httpx
import pytest

from qbo_operator.harness.sandbox import qbo_query
from qbo_operator.harness.sandbox.qbo import QboSandbox
from qbo_operator.harness.sandbox.qbo_query import Condition, OrderKey, QueryError, parse
from qbo_operator.harness.sandbox.qbo_values import parse_time
from tests.support.sandbox import SandboxFactory, realm_of

PACIFIC = ZoneInfo("America/Los_Angeles")
CLIENT_PAYMENTS = (
    "SELECT * FROM Payment WHERE MetaData.CreateTime >= '{since}' ORDERBY MetaData.CreateTime "
    "STARTPOSITION {start} MAXRESULTS 1000"
)


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("SELECT * FROM Payment", {"entity": "Payment", "count": False, "start_position": 1, "max_results": 100}),
        ("select * from payment", {"entity": "payment"}),
        ("SELECT COUNT(*) FROM Invoice", {"count": True}),
        ("SELECT count( * ) FROM Invoice WHERE Balance > '0'", {"count": True}),
        (
            "SELECT * FROM Payment WHERE MetaData.CreateTime >= '2026-11-24T17:03:11Z' ORDERBY MetaData.CreateTime "
            "STARTPOSITION 1 MAXRESULTS 1000",
            {
                "where": (Condition("metadata.createtime", ">=", ("2026-11-24T17:03:11Z",)),),
                "order": (OrderKey("metadata.createtime"),),
                "max_results": 1000,
            },
        ),
        (
            "SELECT * FROM Invoice WHERE Id IN ('1','2', '3') STARTPOSITION 1 MAXRESULTS 1000",
            {"where": (Condition("id", "IN", ("1", "2", "3")),)},
        ),
        (
            "SELECT * FROM Customer WHERE DisplayName LIKE '%Leaf%' AND Active = true",
            {"where": (Condition("displayname", "LIKE", ("%Leaf%",)), Condition("active", "=", (True,)))},
        ),
        (
            "SELECT * FROM Payment ORDER BY Metadata.LastUpdatedTime DESC",
            {"order": (OrderKey("metadata.lastupdatedtime", True),)},
        ),
        ("SELECT * FROM Payment ORDERBY TotalAmt DESC, Id", {"order": (OrderKey("totalamt", True), OrderKey("id"))}),
        (
            "SELECT * FROM Payment WHERE TotalAmt >= 10.50",
            {"where": (Condition("totalamt", ">=", (Decimal("10.50"),)),)},
        ),
        (
            "SELECT * FROM Customer WHERE DisplayName = 'Bob\\'s Shop'",
            {"where": (Condition("displayname", "=", ("Bob's Shop",)),)},
        ),
        ("SELECT * FROM Payment STARTPOSITION 0 MAXRESULTS 1000", {"start_position": 1, "max_results": 1000}),
        ("  SELECT * FROM Payment MAXRESULTS 7  ", {"max_results": 7}),
    ],
)
def test_parse(text: str, expected: dict[str, Any]) -> None:
    query = parse(text)
    for key, value in expected.items():
        assert getattr(query, key) == value


@pytest.mark.parametrize(
    ("text", "code", "fragment"),
    [
        ("", "4000", "empty"),
        ("   ", "4000", "empty"),
        ("SELECT FROM Payment", "4000", "Encountered"),
        ("SELECT Id, TotalAmt FROM Payment", "4000", "Encountered"),
        ("SELECT * Payment", "4000", "Encountered"),
        ("SELECT * FROM", "4000", "<EOF>"),
        ("SELECT * FROM Payment WHERE", "4000", "<EOF>"),
        ("SELECT * FROM Payment WHERE TotalAmt", "4000", "<EOF>"),
        ("SELECT * FROM Payment WHERE TotalAmt > 1 OR TotalAmt < 0", "4000", "OR is not supported"),
        ("SELECT * FROM Payment WHERE TotalAmt != 1", "4000", "not supported"),
        ("SELECT * FROM Payment WHERE Id IN ()", "4000", "Encountered"),
        ("SELECT * FROM Payment WHERE Id IN ('1'", "4000", "<EOF>"),
        ("SELECT * FROM Payment WHERE PrivateNote = 'open", "4000", "unterminated"),
        ("SELECT * FROM Payment WHERE PrivateNote LIKE 5", "4000", "LIKE"),
        ("SELECT * FROM Payment ORDER Id", "4000", "Encountered"),
        ("SELECT * FROM Payment MAXRESULTS ten", "4000", "Encountered"),
        ("SELECT * FROM Payment MAXRESULTS 0", "4001", "MAXRESULTS"),
        ("SELECT * FROM Payment STARTPOSITION 1.5", "4000", "Encountered"),
        ("SELECT * FROM Payment MAXRESULTS 10 STARTPOSITION 1", "4000", "Encountered"),
        ("SELECT * FROM Payment; DROP TABLE x", "4000", "Lexical error"),
        ("DELETE FROM Payment", "4000", "Encountered"),
    ],
)
def test_parse_errors(text: str, code: str, fragment: str) -> None:
    with pytest.raises(QueryError) as err:
        parse(text)
    assert err.value.code == code
    assert fragment in err.value.detail


ROWS: list[dict[str, Any]] = [
    {"Id": "1", "TotalAmt": Decimal("10.00"), "PrivateNote": "Paid at delivery", "Active": True,
     "CustomerRef": {"value": "7", "name": "Green Leaf"}, "MetaData": {"CreateTime": "2026-11-24T09:00:00-08:00"}},
    {"Id": "2", "TotalAmt": Decimal("250.50"), "Active": False,
     "CustomerRef": {"value": "8", "name": "Mile High"}, "MetaData": {"CreateTime": "2026-11-24T17:00:01Z"}},
]  # fmt: skip


@pytest.mark.parametrize(
    ("condition", "matching"),
    [
        (Condition("totalamt", ">", (Decimal(100),)), ["2"]),
        (Condition("totalamt", "<=", ("10.00",)), ["1"]),
        (Condition("privatenote", "LIKE", ("%DELIVERY",)), ["1"]),
        (Condition("privatenote", "LIKE", ("Paid_at%",)), ["1"]),
        (Condition("privatenote", "=", ("paid at delivery",)), ["1"]),
        (Condition("customerref", "=", ("8",)), ["2"]),
        (Condition("customerref", "IN", ("7", "9")), ["1"]),
        (Condition("active", "=", (False,)), ["2"]),
        # 09:00-08:00 is 17:00Z: offsets are compared as instants.
        (Condition("metadata.createtime", ">=", ("2026-11-24T17:00:00Z",)), ["1", "2"]),
        (Condition("metadata.createtime", ">", ("2026-11-24T17:00:00+00:00",)), ["2"]),
        (Condition("metadata.createtime", "<", ("2026-11-24T09:00:01",)), ["1"]),  # no offset: company time
        (Condition("id", ">", ("1",)), ["2"]),
        (Condition("nosuchfield", "=", ("x",)), []),
        (Condition("totalamt", "=", ("not a number",)), []),
    ],
)
def test_matches(condition: Condition, matching: list[str]) -> None:
    assert [r["Id"] for r in ROWS if qbo_query.matches(r, condition, PACIFIC)] == matching


def statement(realm: str, text: str) -> tuple[str, dict[str, str]]:
    return f"/v3/company/{realm}/query", {"query": text, "minorversion": "75"}


async def query(
    http: httpx.AsyncClient, base: str, realm: str, token: str, text: str, post: bool = False
) -> httpx.Response:
    headers = {"Authorization": f"Bearer {token}", "Accept": "application/json"}
    url = f"{base}/v3/company/{realm}/query"
    if post:
        return await http.post(url, params={"minorversion": "75"}, content=text.encode(),
                               headers={**headers, "Content-Type": "application/text"})  # fmt: skip
    return await http.get(url, params={"query": text, "minorversion": "75"}, headers=headers)


def created(row: dict[str, Any]) -> Any:
    return parse_time(row["MetaData"]["CreateTime"])


async def test_client_statements_page_through_payments_and_read_invoices(make_sandbox: SandboxFactory) -> None:
    sb = make_sandbox()
    realm = sb.add_company("Acme Dispensary", seed=3, payments=150)
    token = sb.issue_tokens(realm)["access_token"]
    sb.generate_payments(realm, n=2345, seed=4)
    company = sb.companies[realm]
    since = "2026-11-24T17:02:11Z"  # the last minute: exactly the new payments
    expected = sorted(
        (p for p in company.payments.values() if created(p) >= parse_time(since)),
        key=lambda p: (created(p), int(p["Id"])),
    )
    assert len(expected) == 2345
    async with sb.serve() as base, httpx.AsyncClient(timeout=30) as http:
        seen: list[dict[str, Any]] = []
        start = 1
        while True:
            resp = await query(http, base, realm, token, CLIENT_PAYMENTS.format(since=since, start=start), post=True)
            assert resp.status_code == 200, resp.text
            assert resp.headers["Content-Type"].startswith("application/json")
            body = resp.json(parse_float=Decimal)
            page = body["QueryResponse"].get("Payment", [])
            if page:
                assert body["QueryResponse"]["startPosition"] == start
                assert body["QueryResponse"]["maxResults"] == len(page)
                assert "totalCount" not in body["QueryResponse"]
            assert body["time"].endswith("-08:00")
            seen.extend(page)
            if len(page) < 1000:
                break
            start += 1000
        assert [p["Id"] for p in seen] == [p["Id"] for p in expected]
        assert seen[0]["TotalAmt"] == company.payments[seen[0]["Id"]]["TotalAmt"]

        linked = sorted({t["TxnId"] for p in seen[:1000] for ln in p["Line"] for t in ln["LinkedTxn"]
                         if t["TxnType"] == "Invoice"}, key=int)  # fmt: skip
        ids = ",".join(f"'{i}'" for i in linked)
        text = f"SELECT * FROM Invoice WHERE Id IN ({ids}) STARTPOSITION 1 MAXRESULTS 1000"  # noqa: S608 - QBO statements, not SQL
        resp = await query(http, base, realm, token, text, post=True)  # too long for a GET URL
        invoices = resp.json()["QueryResponse"]["Invoice"]
        assert sorted((i["Id"] for i in invoices), key=int) == linked
        assert all(i["Balance"] == float(company.invoices[i["Id"]]["Balance"]) for i in invoices)
        assert sb.requests["query"] == 4
        assert sb.realm_requests[realm]["query"] == 4


async def test_client_statement_uses_the_index_not_a_scan(
    make_sandbox: SandboxFactory, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The payments query is answered by bisect: no row is evaluated or sorted, whatever the table size."""
    sb = make_sandbox()
    realm = sb.add_company("Acme Dispensary", seed=3, payments=300)
    sb.generate_payments(realm, n=3000, seed=9)
    calls = {"matches": 0, "sort": 0}
    real_matches, real_sort = qbo_query.matches, qbo_query._sort_value

    def counting_matches(*a: Any) -> bool:
        calls["matches"] += 1
        return real_matches(*a)

    def counting_sort(*a: Any) -> Any:
        calls["sort"] += 1
        return real_sort(*a)

    monkeypatch.setattr(qbo_query, "matches", counting_matches)
    monkeypatch.setattr(qbo_query, "_sort_value", counting_sort)
    company = sb.companies[realm]
    since = "2026-11-24T17:02:11Z"
    for start in (1, 1001, 2001, 3001):
        body = qbo_api_run(company, CLIENT_PAYMENTS.format(since=since, start=start))
        assert len(body.get("Payment", [])) == (1000 if start < 3001 else 0)
    ids = ",".join(f"'{i}'" for i in list(company.invoices)[:500])
    assert len(qbo_api_run(company, f"SELECT * FROM Invoice WHERE Id IN ({ids}) MAXRESULTS 1000")["Invoice"]) == 500  # noqa: S608 - QBO statements, not SQL
    assert calls == {"matches": 0, "sort": 0}
    # A filter the index cannot answer does evaluate rows: the counters are live.
    qbo_api_run(company, "SELECT * FROM Payment WHERE TotalAmt > '100' ORDERBY TotalAmt")
    assert calls["matches"] > 0 and calls["sort"] > 0


def qbo_api_run(company: Any, text: str) -> dict[str, Any]:
    from qbo_operator.harness.sandbox.qbo_api import run_query

    return run_query(company, text)


async def test_query_features_over_http(sandbox: QboSandbox) -> None:
    realm = realm_of(sandbox)
    company = sandbox.companies[realm]
    token = sandbox.issue_tokens(realm)["access_token"]
    async with sandbox.serve() as base, httpx.AsyncClient() as http:

        async def rows(text: str, entity: str = "Payment") -> list[dict[str, Any]]:
            resp = await query(http, base, realm, token, text)
            assert resp.status_code == 200, resp.text
            result: list[dict[str, Any]] = resp.json()["QueryResponse"].get(entity, [])
            return result

        every = await rows("SELECT * FROM Payment MAXRESULTS 1000")
        assert len(every) == len(company.payments)
        default_page = await rows("SELECT * FROM Payment")
        assert [p["Id"] for p in default_page] == [p["Id"] for p in every[:100]]
        assert len(await rows("SELECT * FROM Payment STARTPOSITION 0 MAXRESULTS 5")) == 5

        count = await query(http, base, realm, token, "SELECT COUNT(*) FROM Payment WHERE TotalAmt > '0'")
        assert count.json()["QueryResponse"] == {
            "totalCount": sum(1 for p in company.payments.values() if p["TotalAmt"] > 0)
        }

        none = await query(http, base, realm, token, "SELECT * FROM Payment WHERE TotalAmt > '99999999'")
        assert none.json()["QueryResponse"] == {}

        by_amount = await rows("SELECT * FROM Payment ORDER BY TotalAmt DESC, Id MAXRESULTS 1000")
        amounts = [Decimal(str(p["TotalAmt"])) for p in by_amount]
        assert amounts == sorted(amounts, reverse=True)

        newest_first = await rows("select * from payment orderby metadata.createtime desc maxresults 3")
        assert [p["Id"] for p in newest_first] == [p["Id"] for p in every[::-1][:3]]

        updated = await rows("SELECT * FROM Payment ORDER BY Metadata.LastUpdatedTime ASC MAXRESULTS 1000")
        stamps = [parse_time(p["MetaData"]["LastUpdatedTime"]) for p in updated]
        assert stamps == sorted(stamps)

        voided = await rows("SELECT * FROM Payment WHERE PrivateNote LIKE 'Voided%' MAXRESULTS 1000")
        assert voided and all(p["TotalAmt"] == 0 and p["Line"] == [] for p in voided)

        name = next(iter(company.customers.values()))["DisplayName"]
        fragment = name.split()[0].lower()
        customers = await rows(f"SELECT * FROM Customer WHERE DisplayName LIKE '%{fragment}%'", "Customer")  # noqa: S608 - QBO statements, not SQL
        assert customers and all(fragment in c["DisplayName"].lower() for c in customers)

        first_ids = [p["Id"] for p in every[:3]]
        chosen = await rows(f"SELECT * FROM Payment WHERE Id IN ('{first_ids[2]}', '{first_ids[0]}', '999999')")  # noqa: S608 - QBO statements, not SQL
        assert [p["Id"] for p in chosen] == [first_ids[0], first_ids[2]]
        one = await rows(f"SELECT * FROM Payment WHERE Id = '{first_ids[1]}'")  # noqa: S608 - QBO statements, not SQL
        assert [p["Id"] for p in one] == [first_ids[1]]

        window = await rows(
            f"SELECT * FROM Payment WHERE MetaData.CreateTime > '{every[0]['MetaData']['CreateTime']}' "  # noqa: S608 - QBO statements, not SQL
            f"AND MetaData.CreateTime <= '{every[4]['MetaData']['CreateTime']}'"
        )
        assert [p["Id"] for p in window] == [p["Id"] for p in every[1:5]]

        receipts = await rows("SELECT * FROM SalesReceipt MAXRESULTS 1000", "SalesReceipt")
        assert len(receipts) == len(company.sales_receipts) > 0


@pytest.mark.parametrize(
    ("text", "code"),
    [
        ("", "4000"),
        ("SELECT * FROM", "4000"),
        ("SELECT * FROM Payment WHERE TotalAmt > 1 OR TotalAmt < 0", "4000"),
        ("SELECT * FROM Payments", "4001"),
        ("SELECT * FROM Payment MAXRESULTS 0", "4001"),
    ],
)
async def test_bad_statements_are_validation_faults(sandbox: QboSandbox, text: str, code: str) -> None:
    realm = realm_of(sandbox)
    token = sandbox.issue_tokens(realm)["access_token"]
    async with sandbox.serve() as base, httpx.AsyncClient() as http:
        for post in (False, True):
            resp = await query(http, base, realm, token, text, post=post)
            assert resp.status_code == 400
            body = resp.json()
            error = body["Fault"]["Error"][0]
            assert body["Fault"]["type"] == "ValidationFault"
            assert error["code"] == code
            assert error["Detail"].startswith("QueryParserError" if code == "4000" else "QueryValidationError")
            assert "time" in body


@pytest.mark.slow
async def test_hundred_thousand_payments_page_completely(make_sandbox: SandboxFactory, clock: Any) -> None:
    """The benchmark's scale: 100,000 new payments, paged 1000 at a time, each exactly once and in order."""
    sb = make_sandbox()
    realm = sb.add_company("Acme Dispensary", seed=1, payments=200)
    token = sb.issue_tokens(realm)["access_token"]
    clock.advance(5)
    created = sb.generate_payments(realm, n=100_000, seed=2)
    since = created[0]["MetaData"]["CreateTime"]
    async with sb.serve() as base, httpx.AsyncClient(timeout=120) as http:
        ids: list[str] = []
        start = 1
        while True:
            resp = await query(http, base, realm, token, CLIENT_PAYMENTS.format(since=since, start=start), post=True)
            page = resp.json()["QueryResponse"].get("Payment", [])
            ids.extend(p["Id"] for p in page)
            if len(page) < 1000:
                break
            start += 1000
    assert ids == [p["Id"] for p in created]
    assert sb.requests["query"] == 101
