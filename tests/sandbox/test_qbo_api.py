"""The Accounting API over real HTTP: auth faults, realms, throttling, reads, CDC (docs/qbo.md §2, §4)."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import pytest

from qbo_operator.harness.sandbox.qbo import QboSandbox
from qbo_operator.harness.sandbox.qbo_api import ThrottleLimits, cdc_refusal
from qbo_operator.harness.sandbox.qbo_values import intuit_time, parse_time
from tests.support.sandbox import FakeClock, FakeMonotonic, SandboxFactory, connect, realm_of


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}", "Accept": "application/json"}


async def test_read_envelope_and_object_not_found(sandbox: QboSandbox) -> None:
    realm = realm_of(sandbox)
    company = sandbox.companies[realm]
    payment = next(iter(company.payments.values()))
    token = sandbox.issue_tokens(realm)["access_token"]
    async with sandbox.serve() as base, httpx.AsyncClient() as http:
        for minor in ("75", "4", "not-a-number"):
            resp = await http.get(
                f"{base}/v3/company/{realm}/payment/{payment['Id']}",
                params={"minorversion": minor},
                headers=bearer(token),
            )
            assert resp.status_code == 200
            body = resp.json()
            assert set(body) == {"Payment", "time"}
            assert body["Payment"]["Id"] == payment["Id"]
            assert resp.headers["intuit_tid"].startswith("1-")
        invoice_id = next(iter(company.invoices))
        assert (await http.get(f"{base}/v3/company/{realm}/invoice/{invoice_id}", headers=bearer(token))).json()[
            "Invoice"
        ]["Id"] == invoice_id
        for path in ("payment/99999999", f"invoice/{payment['Id']}"):
            missing = await http.get(f"{base}/v3/company/{realm}/{path}", headers=bearer(token))
            assert missing.status_code == 400
            assert missing.json()["Fault"]["Error"][0]["code"] == "610"
            assert missing.json()["Fault"]["type"] == "ValidationFault"
        sandbox.delete_payment(realm, payment["Id"])
        gone = await http.get(f"{base}/v3/company/{realm}/payment/{payment['Id']}", headers=bearer(token))
        assert gone.status_code == 400 and gone.json()["Fault"]["Error"][0]["code"] == "610"
        odd = await http.get(f"{base}/v3/company/{realm}/widget/1", headers=bearer(token))
        assert odd.status_code == 400 and odd.json()["Fault"]["Error"][0]["Message"] == "Unsupported Operation"
    assert sandbox.requests["read"] == 8


@pytest.mark.parametrize(
    ("header", "detail"),
    [
        (None, "Malformed bearer token"),
        ("Basic abc", "Malformed bearer token"),
        ("Bearer short", "Malformed bearer token"),
        ("Bearer " + "x" * 60, "Token revoked or invalid"),
    ],
)
async def test_bad_access_tokens_get_lowercase_401(sandbox: QboSandbox, header: str | None, detail: str) -> None:
    realm = realm_of(sandbox)
    async with sandbox.serve() as base, httpx.AsyncClient() as http:
        resp = await http.get(
            f"{base}/v3/company/{realm}/query",
            params={"query": "SELECT * FROM Payment"},
            headers={"Authorization": header} if header else {},
        )
    assert resp.status_code == 401
    body = resp.json()
    assert "Fault" not in body
    error = body["fault"]["error"][0]
    assert error["code"] == "3200" and body["fault"]["type"] == "AUTHENTICATION"
    assert error["message"] == "message=AuthenticationFailed; errorCode=003200; statusCode=401"
    assert detail in error["detail"]
    assert isinstance(body["time"], int)
    assert resp.headers["intuit_tid"]


async def test_expired_access_token(sandbox: QboSandbox, clock: FakeClock) -> None:
    realm = realm_of(sandbox)
    token = sandbox.issue_tokens(realm)["access_token"]
    async with sandbox.serve() as base, httpx.AsyncClient() as http:
        url = f"{base}/v3/company/{realm}/companyinfo/1"
        clock.advance(3599)
        assert (await http.get(url, headers=bearer(token))).status_code == 200
        clock.advance(1)
        resp = await http.get(url, headers=bearer(token))
    assert resp.status_code == 401 and resp.json()["fault"]["error"][0]["detail"] == "Token expired"
    assert sandbox.requests["unauthorized"] == 1


async def test_token_of_another_realm_is_403(make_sandbox: SandboxFactory) -> None:
    sb = make_sandbox()
    acme = sb.add_company("Acme Dispensary", payments=5)
    other = sb.add_company("Bridgetown Wholesale", payments=5)
    token = sb.issue_tokens(acme)["access_token"]
    async with sb.serve() as base, httpx.AsyncClient() as http:
        for realm in (other, "1234567890"):
            resp = await http.get(f"{base}/v3/company/{realm}/companyinfo/1", headers=bearer(token))
            assert resp.status_code == 403
            error = resp.json()["Fault"]["Error"][0]
            assert error["code"] == "3100"
            assert error["Message"] == "message=AuthorizationFailed; errorCode=003100; statusCode=403"
            assert resp.json()["Fault"]["type"] == "SERVICE"
        ok = await http.get(f"{base}/v3/company/{acme}/companyinfo/1", headers=bearer(token))
    assert ok.status_code == 200


async def test_throttle_per_second_and_per_minute(make_sandbox: SandboxFactory) -> None:
    mono = FakeMonotonic()
    sb = make_sandbox(throttle=ThrottleLimits(per_minute=25, per_second=10, concurrent=10), throttle_clock=mono)
    acme = sb.add_company("Acme Dispensary", payments=5)
    other = sb.add_company("Bridgetown Wholesale", payments=5)
    tokens = {realm: sb.issue_tokens(realm)["access_token"] for realm in (acme, other)}
    async with sb.serve() as base, httpx.AsyncClient() as http:

        async def hit(realm: str) -> httpx.Response:
            return await http.get(f"{base}/v3/company/{realm}/companyinfo/1", headers=bearer(tokens[realm]))

        statuses = [(await hit(acme)).status_code for _ in range(11)]
        assert statuses == [200] * 10 + [429]
        throttled = await hit(acme)
        body = throttled.json()
        assert body["Fault"]["Error"][0]["code"] == "3001"
        assert body["Fault"]["Error"][0]["Message"] == "message=ThrottleExceeded; errorCode=003001; statusCode=429"
        assert body["Fault"]["type"] == "SERVICE"
        assert "Retry-After" not in throttled.headers
        assert (await hit(other)).status_code == 200, "limits are per realm"

        mono.t += 1.0  # a second later: 10 more fit, then the minute's budget (25) runs out
        assert [(await hit(acme)).status_code for _ in range(10)] == [200] * 10
        mono.t += 1.0
        statuses = [(await hit(acme)).status_code for _ in range(6)]
        assert statuses == [200] * 5 + [429]
        mono.t += 57.5  # t = 59.5 s after the first ten: all 25 still count
        assert (await hit(acme)).status_code == 429, "still inside the minute of the first requests"
        mono.t += 0.5  # t = 60 s: the first ten drop out of the window
        assert (await hit(acme)).status_code == 200
    assert sb.requests["throttled"] == 4
    assert sb.realm_requests[acme]["throttled"] == 4


async def test_throttle_concurrency_and_xml_format(make_sandbox: SandboxFactory) -> None:
    sb = make_sandbox(throttle=ThrottleLimits(per_minute=None, per_second=None, concurrent=3, format="xml",
                                              retry_after=60))  # fmt: skip
    realm = sb.add_company("Acme Dispensary", payments=5)
    token = sb.issue_tokens(realm)["access_token"]
    sb.faults.add(kind="latency", path="/companyinfo/", seconds=2.0, count=3)
    async with sb.serve() as base, httpx.AsyncClient() as http:
        url = f"{base}/v3/company/{realm}/companyinfo/1"
        slow = [asyncio.create_task(http.get(url, headers=bearer(token))) for _ in range(3)]
        while sb.throttle.in_flight(realm) < 3:
            await asyncio.sleep(0.01)
        extra = await http.get(f"{base}/v3/company/{realm}/payment/1", headers=bearer(token))
        assert [r.status_code for r in await asyncio.gather(*slow)] == [200, 200, 200]
        after = await http.get(f"{base}/v3/company/{realm}/companyinfo/1", headers=bearer(token))
    assert extra.status_code == 429
    assert extra.headers["Content-Type"].startswith("application/xml")
    assert "errorCode=003001" in extra.text and '<Error code="3001">' in extra.text
    assert extra.headers["Retry-After"] == "60"
    assert after.status_code == 200
    assert sb.throttle.in_flight(realm) == 0


async def _cdc_refusals(cdc: Any, since: datetime, now: datetime) -> None:
    """What Intuit refuses: no entities, no or a garbled changedSince, an unknown entity, beyond 30 days."""
    for entities, changed_since, code in (
        ("", since.isoformat(), "4000"),
        ("Payment", "", "4000"),
        ("Payment", "yesterday", "4000"),
        ("Widget", since.isoformat(), "4001"),
        ("Payment", (now - timedelta(days=31)).isoformat(), "4001"),
    ):
        bad = await cdc(entities, changed_since)
        assert bad.status_code == 400 and bad.json()["Fault"]["Error"][0]["code"] == code


async def test_cdc_returns_changes_stubs_and_caps_at_1000_across_entities(
    make_sandbox: SandboxFactory, clock: FakeClock
) -> None:
    sb = make_sandbox()
    realm = sb.add_company("Acme Dispensary", seed=5, payments=40)
    token = sb.issue_tokens(realm)["access_token"]
    clock.advance(5)  # new payments come after the consent
    company = sb.companies[realm]
    since = clock.now - timedelta(minutes=1)
    sb.generate_payments(realm, n=700, seed=6)
    deleted_id = company.tables["Payment"].ordered()[-1]["Id"]
    sb.delete_payment(realm, deleted_id)
    async with sb.serve() as base, httpx.AsyncClient() as http:

        async def cdc(entities: str, changed_since: str) -> httpx.Response:
            return await http.get(
                f"{base}/v3/company/{realm}/cdc",
                params={"entities": entities, "changedSince": changed_since, "minorversion": "75"},
                headers=bearer(token),
            )

        resp = await cdc("Payment", since.isoformat())
        assert resp.status_code == 200
        (entry,) = resp.json()["CDCResponse"]
        (payments,) = entry["QueryResponse"]
        rows = payments["Payment"]
        assert len(rows) == 700 and payments["maxResults"] == 700
        stub = rows[-1]
        assert stub == {"domain": "QBO", "status": "Deleted", "Id": deleted_id,
                        "MetaData": {"LastUpdatedTime": intuit_time(clock.now)}}  # fmt: skip
        stamps = [parse_time(r["MetaData"]["LastUpdatedTime"]) for r in rows]
        assert stamps == sorted(stamps) and min(stamps) >= since

        both = (await cdc("Payment,Invoice", since.isoformat())).json()["CDCResponse"][0]["QueryResponse"]
        changed_invoices = [i for i in company.invoices.values()
                            if parse_time(i["MetaData"]["LastUpdatedTime"]) >= since]  # fmt: skip
        assert len(changed_invoices) > 300
        kept = both[0]["Payment"] + both[1]["Invoice"]
        assert len(kept) == 1000, "1000 objects per response, shared across the entities"
        newest_kept, kept_ids = max(parse_time(r["MetaData"]["LastUpdatedTime"]) for r in kept), {r["Id"] for r in kept}
        left_out = [parse_time(r["MetaData"]["LastUpdatedTime"])
                    for r in [*company.payments.values(), *changed_invoices] if r["Id"] not in kept_ids]  # fmt: skip
        assert [t for t in left_out if t >= since] and all(t < since or t >= newest_kept for t in left_out), "oldest"

        invoices_first = (await cdc("invoice,payment", since.isoformat())).json()["CDCResponse"][0]["QueryResponse"]
        assert sum(len(next(iter(q.values()))) for q in invoices_first if q) == 1000

        quiet = (await cdc("SalesReceipt", (clock.now + timedelta(seconds=5)).isoformat())).json()
        assert quiet["CDCResponse"][0]["QueryResponse"] == [{}]

        await _cdc_refusals(cdc, since, clock.now)
        no_offset = await cdc("Payment", since.astimezone(company.tz).replace(tzinfo=None).isoformat())
        assert len(no_offset.json()["CDCResponse"][0]["QueryResponse"][0]["Payment"]) == 700
    assert sb.requests["cdc"] == 10


async def test_every_response_carries_intuit_tid(sandbox: QboSandbox) -> None:
    realm = realm_of(sandbox)
    async with sandbox.serve() as base, httpx.AsyncClient() as http:
        tokens = await connect(http, base, realm)
        responses = [
            await http.get(f"{base}/.well-known/openid_configuration"),
            await http.get(f"{base}/connect/oauth2"),
            await http.get(f"{base}/v3/company/{realm}/companyinfo/1", headers=bearer(tokens["access_token"])),
            await http.get(f"{base}/v3/company/{realm}/query", headers=bearer(tokens["access_token"])),
            await http.get(f"{base}/nothing-here"),
        ]
    tids = [r.headers.get("intuit_tid") for r in responses]
    assert all(tids) and len(set(tids)) == len(tids)


async def test_webhook_free_sandbox_counts_requests_per_kind(sandbox: QboSandbox) -> None:
    realm = realm_of(sandbox)
    async with sandbox.serve() as base, httpx.AsyncClient() as http:
        tokens = await connect(http, base, realm)
        await http.get(f"{base}/v3/company/{realm}/query", params={"query": "SELECT * FROM Item"},
                       headers=bearer(tokens["access_token"]))  # fmt: skip
        await http.get(f"{base}/_sandbox/state")
    counts: dict[str, Any] = dict(sandbox.requests)
    assert counts == {"authorize": 2, "token": 1, "query": 1}
    assert dict(sandbox.realm_requests[realm]) == {"query": 1}


NOW = datetime(2026, 11, 24, 17, 3, 11, tzinfo=UTC)
PARSE, INVALID = ("4000", "Error parsing query"), ("4001", "Invalid query")


@pytest.mark.parametrize(
    ("names", "since_text", "since", "refusal"),
    [
        (["Payment"], "2026-11-24T09:00:00-08:00", NOW - timedelta(days=1), None),
        (["Payment", "Invoice"], "x", NOW - timedelta(days=30), None),  # exactly 30 days back is still answered
        ([], "2026-11-24", NOW, (*PARSE, "QueryParserError: entities is required")),
        (["Payment", "Bill"], "", None, (*INVALID, "QueryValidationError: Invalid entity name: Bill")),
        (["CompanyInfo"], "", None, (*INVALID, "QueryValidationError: Invalid entity name: CompanyInfo")),
        (["payment"], "", None, (*PARSE, "QueryParserError: changedSince '' is not a date-time")),
        (
            ["Payment"],
            "then",
            NOW - timedelta(days=30, seconds=1),
            (*INVALID, "QueryValidationError: changedSince must be within the last 30 days"),
        ),
    ],
)
def test_cdc_refusal(
    names: list[str], since_text: str, since: datetime | None, refusal: tuple[str, str, str] | None
) -> None:
    assert cdc_refusal(names, since_text, since, NOW) == refusal
