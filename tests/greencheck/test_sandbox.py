"""The Green Check sandbox over real HTTP: the contract our client relies on (docs/greencheck.md §2, §3).

The replace semantics of payment sets are in tests/greencheck/test_replace.py."""

from __future__ import annotations

import hashlib
import json
import time

import httpx
import pytest

from qbo_operator.harness.sandbox.greencheck import GreenCheckSandbox
from qbo_operator.sync.records import PaymentSet, encode_body, encode_payment_set, idempotency_key
from tests.support.greencheck import CLIENT_ID, CLIENT_SECRET, CRB, REALM, SP_ID, make_record, make_set

INGEST = f"/service-providers/{SP_ID}/crbs/{CRB}/sales/invoice-payments"
SALES = f"/service-providers/{SP_ID}/crbs/{CRB}/sales"


async def token(http: httpx.AsyncClient, url: str) -> str:
    resp = await http.post(
        url + "/auth/token",
        json={"client_id": CLIENT_ID, "client_secret": CLIENT_SECRET, "grant_type": "client_credentials",
              "scope": []},
    )  # fmt: skip
    assert resp.status_code == 200, resp.text
    return str(resp.json()["access_token"])


def body(*sets: PaymentSet, realm: str = REALM) -> bytes:
    return encode_body(realm, [encode_payment_set(s) for s in sets])


def one(*ns: int) -> bytes:
    """A body of one single-invoice payment per n (payment n applied to invoice 1000 + n)."""
    return body(*(make_set(n, n) for n in ns))


async def post(http: httpx.AsyncClient, url: str, tok: str, content: bytes, key: str | None = None) -> httpx.Response:
    headers = {"Authorization": f"Bearer {tok}", "Content-Type": "application/json"}
    if key:
        headers["Idempotency-Key"] = key
    return await http.post(url + INGEST, content=content, headers=headers)


async def test_token_endpoint_checks_credentials_and_reports_expiry(sandbox: GreenCheckSandbox) -> None:
    async with sandbox.serve() as url, httpx.AsyncClient() as http:
        bad = await http.post(url + "/auth/token", json={"client_id": CLIENT_ID, "client_secret": "wrong",
                                                         "grant_type": "client_credentials"})  # fmt: skip
        assert bad.status_code == 401 and bad.json()["message"] == "Invalid client credentials"
        assert bad.headers["x-amzn-requestid"]
        not_json = await http.post(url + "/auth/token", content=b"{")
        assert not_json.status_code == 400
        before = time.time()
        good = await http.post(url + "/auth/token", json={"client_id": CLIENT_ID, "client_secret": CLIENT_SECRET,
                                                          "grant_type": "client_credentials", "scope": []})  # fmt: skip
        reply = good.json()
        assert reply["token_type"] == "Bearer" and reply["client_id"] == CLIENT_ID
        assert before + 3600 - 2 <= reply["expires_at"] <= time.time() + 3600 + 1  # a Unix time by default
    assert sandbox.requests["auth_token"] == 3


async def test_expires_at_can_be_served_as_seconds_from_now() -> None:
    sb = GreenCheckSandbox(CLIENT_ID, CLIENT_SECRET, SP_ID, token_lifetime=900, expires_at_style="seconds")
    async with sb.serve() as url, httpx.AsyncClient() as http:
        reply = (await http.post(url + "/auth/token", json={"client_id": CLIENT_ID, "client_secret": CLIENT_SECRET,
                                                            "grant_type": "client_credentials"})).json()  # fmt: skip
    assert reply["expires_at"] == 900


async def test_auth_failures(sandbox: GreenCheckSandbox) -> None:
    async with sandbox.serve() as url, httpx.AsyncClient() as http:
        assert (await post(http, url, "nope", one(1))).status_code == 401
        tok = await token(http, url)
        sandbox.expire_tokens()
        expired = await post(http, url, tok, one(1))
        assert expired.status_code == 403
        assert expired.json() == {"message": "The security token included in the request is expired",
                                  "details": "EXPIRED_TOKEN"}  # fmt: skip
        other_sp = await http.post(url + INGEST.replace(SP_ID, "other"), content=one(1),
                                   headers={"Authorization": f"Bearer {await token(http, url)}"})  # fmt: skip
        assert other_sp.status_code == 404
    assert sandbox.records == {}


async def test_zero_lifetime_token_is_expired_at_once() -> None:
    sb = GreenCheckSandbox(CLIENT_ID, CLIENT_SECRET, SP_ID, token_lifetime=0)
    async with sb.serve() as url, httpx.AsyncClient() as http:
        resp = await post(http, url, await token(http, url), one(1))
    assert resp.status_code == 403 and resp.json()["details"] == "EXPIRED_TOKEN"


@pytest.mark.parametrize(
    ("content", "detail_key"),
    [
        (b"{not json", "body"),
        (b'{"source": "quickbooks", "realm_id": "1", "payments": "x"}', "body.payments"),
        (b'{"source": "xero", "realm_id": "1", "payments": []}', "body.source"),
        (b'{"source": "quickbooks", "realm_id": "1", "records": []}', "body.payments"),
        (b'{"source": "quickbooks", "realm_id": "1", "payments": [{"payment_id": "1"}]}', "body.payments[0].records"),
    ],
)
async def test_malformed_body_is_422_with_the_failing_path(
    sandbox: GreenCheckSandbox, content: bytes, detail_key: str
) -> None:
    async with sandbox.serve() as url, httpx.AsyncClient() as http:
        resp = await post(http, url, await token(http, url), content)
    assert resp.status_code == 422
    assert resp.json()["message"] == "Validation Failed"
    assert detail_key in resp.json()["details"]


async def test_schema_error_names_the_set_record_and_field(sandbox: GreenCheckSandbox) -> None:
    raw = json.loads(body(make_set(1, 1), make_set(2, 2, 3)))
    raw["payments"][1]["records"][1]["invoice"]["total"] = "12.50"  # money as a string
    async with sandbox.serve() as url, httpx.AsyncClient() as http:
        resp = await post(http, url, await token(http, url), json.dumps(raw).encode())
    assert resp.status_code == 422
    assert "body.payments[1].records[1].invoice.total" in resp.json()["details"]
    assert sandbox.records == {}  # nothing from a refused request is stored


@pytest.mark.parametrize(
    ("sets", "message"),
    [
        ([make_set(i, i) for i in range(501)], "at most 500 items"),  # 501 payment sets
        ([make_set(1, *range(1, 252)), make_set(2, *range(300, 550))], "at most 500 records"),  # 501 records
        ([make_set(1, 1), make_set(1, 2)], "more than one payment set"),
    ],
    ids=["501-sets", "501-records", "payment-twice"],
)
async def test_request_limits_are_422(sandbox: GreenCheckSandbox, sets: list[PaymentSet], message: str) -> None:
    async with sandbox.serve() as url, httpx.AsyncClient() as http:
        resp = await post(http, url, await token(http, url), body(*sets))
    assert resp.status_code == 422 and message in json.dumps(resp.json()["details"])
    assert sandbox.records == {}


async def test_500_sets_and_500_records_are_accepted(sandbox: GreenCheckSandbox) -> None:
    sets = [make_set(1, *range(1, 251)), make_set(2, *range(300, 550))]
    async with sandbox.serve() as url, httpx.AsyncClient() as http:
        tok = await token(http, url)
        records = await post(http, url, tok, body(*sets))
        many = await post(http, url, tok, body(*(make_set(i) for i in range(1000, 1500))))
    assert records.status_code == 200 and len(sandbox.records[CRB]) == 500
    assert many.status_code == 200 and len(many.json()["results"]) == 500


async def test_idempotency_key_replays_the_first_response_and_refuses_a_different_body(
    sandbox: GreenCheckSandbox,
) -> None:
    content = body(make_set(1, 1), make_set(2, 2))
    key = idempotency_key(content)
    assert key == hashlib.sha256(content).hexdigest()
    async with sandbox.serve() as url, httpx.AsyncClient() as http:
        tok = await token(http, url)
        first = await post(http, url, tok, content, key)
        replay = await post(http, url, tok, content, key)
        assert replay.json() == first.json()  # "created" again: the first answer, not "unchanged"
        assert replay.headers["Idempotent-Replayed"] == "true"
        assert "Idempotent-Replayed" not in first.headers
        changed = await post(http, url, tok, body(make_set(1, 1, memo="changed"), make_set(2, 2)), key)
        assert changed.status_code == 422
        assert "header.Idempotency-Key" in changed.json()["details"]
        again = await post(http, url, tok, content, idempotency_key(content + b" "))  # same sets, new key
        assert [r["status"] for p in again.json()["results"] for r in p["records"]] == ["unchanged", "unchanged"]
    assert sandbox.replays == 1
    assert (CRB, key) in sandbox.idempotency_keys
    assert sandbox.received[make_record(1).external_id] == 2  # the replay is not processed again


async def test_body_over_the_limit_is_413() -> None:
    sb = GreenCheckSandbox(CLIENT_ID, CLIENT_SECRET, SP_ID, max_body_bytes=4000)
    small, large = one(1), one(*range(10))
    assert len(small) < 4000 < len(large)
    async with sb.serve() as url, httpx.AsyncClient() as http:
        tok = await token(http, url)
        too_large = await post(http, url, tok, large)
        assert too_large.status_code == 413
        assert too_large.json() == {"message": "Request Too Large", "details": "REQUEST_TOO_LARGE"}
        assert (await post(http, url, tok, small)).status_code == 200
    assert list(sb.records[CRB]) == [make_record(1).external_id]


async def test_default_limit_is_5_mb() -> None:
    sb = GreenCheckSandbox(CLIENT_ID, CLIENT_SECRET, SP_ID)
    filler = "x" * 20_000
    content = body(*(make_set(i, i, memo=filler) for i in range(265)))
    assert len(content) > 5 * 1024 * 1024
    async with sb.serve() as url, httpx.AsyncClient() as http:
        assert (await post(http, url, await token(http, url), content)).status_code == 413


async def test_rate_limit_answers_429_with_ratelimit_headers() -> None:
    sb = GreenCheckSandbox(CLIENT_ID, CLIENT_SECRET, SP_ID, rate_limit=2, rate_window=30)
    async with sb.serve() as url, httpx.AsyncClient() as http:
        tok = await token(http, url)
        answers = [await post(http, url, tok, one(i)) for i in range(4)]
    assert [a.status_code for a in answers] == [200, 200, 429, 429]
    assert answers[0].headers["X-RateLimit-Limit"] == "2"
    assert answers[0].headers["X-RateLimit-Remaining"] == "1"
    throttled = answers[2]
    assert throttled.json() == {"message": "Too Many Requests", "details": "THROTTLED"}
    assert throttled.headers["X-RateLimit-Remaining"] == "0"
    assert float(throttled.headers["X-RateLimit-Reset"]) > time.time()
    assert len(sb.records[CRB]) == 2
    assert sb.responses[429] == 2


async def test_injected_faults_and_latency(sandbox: GreenCheckSandbox) -> None:
    sandbox.faults.add(kind="status", status=503, path="invoice-payments", count=1)
    sandbox.faults.add(kind="html_502", path="invoice-payments", count=1)
    sandbox.faults.add(kind="latency", seconds=0.05, path="invoice-payments", count=1)
    async with sandbox.serve() as url, httpx.AsyncClient() as http:
        tok = await token(http, url)
        first = await post(http, url, tok, one(1))
        second = await post(http, url, tok, one(1))
        third = await post(http, url, tok, one(1))
    assert (first.status_code, first.json()["message"]) == (503, "Internal server error")
    assert first.headers["x-amzn-requestid"]
    assert second.status_code == 502 and "Bad Gateway" in second.text
    assert third.status_code == 200
    assert sandbox.requests["invoice_payments"] == 3


async def test_read_back_in_wholesale_sale_shape_with_paging_and_dates(sandbox: GreenCheckSandbox) -> None:
    records = [make_record(i) for i in range(1, 8)]  # payment dates 2026-11-02 .. 2026-11-08
    retracted = make_record(8)
    async with sandbox.serve() as url, httpx.AsyncClient() as http:
        tok = await token(http, url)
        await post(http, url, tok, one(*range(1, 9)))
        await post(http, url, tok, body(make_set(8)))  # retracted: no longer shown
        auth = {"Authorization": f"Bearer {tok}"}
        page = (await http.get(url + SALES, params={"limit": 3, "offset": 0}, headers=auth)).json()
        rest = (await http.get(url + SALES, params={"limit": 3, "offset": 3}, headers=auth)).json()
        dated = (await http.get(url + SALES, params={"start_date": "2026-11-03", "end_date": "2026-11-04"},
                                headers=auth)).json()  # fmt: skip
        bad = await http.get(url + SALES, params={"limit": "many"}, headers=auth)
        unauth = await http.get(url + SALES)
    assert page["metadata"]["total"] == 7 and len(page["data"]) == 3 and len(rest["data"]) == 3
    assert {s["pos_sale_id"] for s in page["data"] + rest["data"]} < {r.external_id for r in records}
    assert retracted.external_id not in sandbox.current_records(CRB)
    sale = page["data"][0]
    assert sale == {
        "pos_sale_id": records[0].external_id,
        "pos_name": "Quickbooks",
        "date": "2026-11-02",
        "total_paid": 10_001,
        "payments": [{"type": "check", "amount_paid": 10_001}],
        "line_items": [{"product_name": "Rock Fountain", "pos_product_id": "5", "num_units": 2.5,
                        "price_per_unit": 4000}],
        "invoice": {"id": "1001", "number": "5001", "total": 10_001, "open_balance": 0, "memo": None},
        "customer": {"id": "24", "name": "Sonnenschein Family Store"},
        "currency": "USD",
    }  # fmt: skip
    assert [s["date"] for s in dated["data"]] == ["2026-11-03", "2026-11-04"]
    assert bad.status_code == 422
    assert unauth.status_code == 401


async def test_control_api(sandbox: GreenCheckSandbox) -> None:
    async with sandbox.serve() as url, httpx.AsyncClient() as http:
        tok = await token(http, url)
        await post(http, url, tok, one(1))
        reject = await http.post(url + "/_sandbox/reject", json={"external_ids": [make_record(2).external_id]})
        assert reject.status_code == 200
        assert (await http.post(url + "/_sandbox/reject", json={"external_ids": "x"})).status_code == 400
        fault = await http.post(url + "/_sandbox/faults", json={"kind": "status", "status": 500, "count": 1,
                                                                "path": "invoice-payments"})  # fmt: skip
        assert fault.status_code == 200
        assert (await http.post(url + "/_sandbox/faults", json={"kind": "nonsense"})).status_code == 400
        assert (await post(http, url, tok, one(2))).status_code == 500
        second = (await post(http, url, tok, one(2))).json()
        assert second["results"][0]["status"] == "rejected"
        state = (await http.get(url + "/_sandbox/state")).json()
        records = (await http.get(url + f"/_sandbox/records/{CRB}")).json()
        cleared = await http.delete(url + "/_sandbox/reject")
        assert cleared.json() == {"reject_external_ids": []} and sandbox.reject_external_ids == set()
        third = (await post(http, url, tok, one(2))).json()
        assert third["results"][0]["records"] == [{"external_id": make_record(2).external_id, "status": "created"}]
        versions = (await http.get(url + f"/_sandbox/versions/{CRB}/{make_record(2).external_id}")).json()
        assert [v["status"] for v in versions["versions"]] == ["created"]
        assert (await http.get(url + f"/_sandbox/versions/{CRB}/nope")).status_code == 404
        await http.post(url + "/_sandbox/expire-tokens")
        assert (await post(http, url, tok, one(3))).status_code == 403
        await http.delete(url + "/_sandbox/faults")
    assert state["records"] == {CRB: 1}
    assert state["requests"]["invoice_payments"] == 3 and state["requests"]["auth_token"] == 1
    assert sandbox.requests["invoice_payments"] == 5
    assert state["results"] == {"created": 1, "rejected": 1}
    assert state["reject_external_ids"] == [make_record(2).external_id]
    assert records["records"] == [make_record(1).model_dump(mode="json")]
    assert sandbox.faults.rules == []
