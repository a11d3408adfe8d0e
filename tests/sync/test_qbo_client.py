"""QboClient against the QBO sandbox over real HTTP: paging, bulk reads, throttling, faults, 401s."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta

import pytest

from qbo_operator.core.oauth import OAuthError
from qbo_operator.harness.sandbox.qbo import QboSandbox
from qbo_operator.harness.sandbox.qbo_api import ThrottleLimits
from qbo_operator.harness.sandbox.qbo_store import parse_time
from qbo_operator.sync.qbo import (
    QboAuthError,
    QboClient,
    QboDataError,
    QboPolicy,
    QboRequestError,
    QboUnavailable,
    RateLimiter,
    qbo_time,
)
from qbo_operator.sync.qbo_models import Fault, Payment
from tests.support.sync import SandboxTokens, make_qbo

# Tests lift the client-side pacing (tested on its own below) so they finish quickly.
FAST = QboPolicy(throttle_wait=0.05, backoff_initial=0.01, backoff_max=0.05, transient_retries=3, timeout=5,
                 max_per_second=1000)  # fmt: skip


def client(url: str, realm: str, tokens: SandboxTokens, policy: QboPolicy = FAST) -> QboClient:
    return QboClient(url, realm, tokens, policy)


async def collect(qbo: QboClient, since_days: float = 3650, page_size: int = 1000) -> list[Payment]:
    since = qbo_now() - timedelta(days=since_days)
    return [p async for page in qbo.payment_pages(since, page_size) for p in page]


async def collect_fails(sb: QboSandbox, realm: str, error: type[Exception], match: str, tokens_for: str = "") -> None:
    """Reading `realm`'s payments fails with `error` matching `match` (tokens issued for `tokens_for`, else realm)."""
    async with sb.serve(), client(sb.api_url, realm, SandboxTokens.issue(sb, tokens_for or realm)) as qbo:
        with pytest.raises(error, match=match):
            await collect(qbo)


def qbo_now() -> datetime:
    return datetime.now(UTC)


def queries(sb: object) -> int:
    return int(sb.requests["query"])  # type: ignore[attr-defined]


# --- paging -----------------------------------------------------------------------------------


@pytest.mark.parametrize("page_size", [1000, 97, 10])
async def test_pages_return_every_payment_once_in_create_time_order(page_size: int) -> None:
    sb = make_qbo(throttle=None)
    realm = sb.add_company("Paging", seed=3, payments=400)
    async with sb.serve():
        tokens = SandboxTokens.issue(sb, realm)
        sb.generate_payments(realm, 300, seed=4)  # ~5 a second: many share a second
        async with client(sb.api_url, realm, tokens) as qbo:
            got = await collect(qbo, page_size=page_size)
    company = sb.companies[realm]
    assert sorted(p.id for p in got) == sorted(company.payments)
    assert len(got) == len({p.id for p in got})
    times = [p.create_time for p in got]
    assert times == sorted(times)
    # one request per page, plus the re-read of a boundary second now and then
    pages = -(-len(company.payments) // page_size)
    assert pages <= queries(sb) <= pages + 1 + pages // 5


async def test_paging_when_many_payments_share_one_second() -> None:
    sb = make_qbo(throttle=None)
    realm = sb.add_company("Burst", seed=5, payments=20)
    async with sb.serve():
        tokens = SandboxTokens.issue(sb, realm)
        sb.generate_payments(realm, 1500, seed=6)  # 25 a second
        async with client(sb.api_url, realm, tokens) as qbo:
            got = await collect(qbo, page_size=20)
    assert sorted(p.id for p in got) == sorted(sb.companies[realm].payments)
    assert len(got) == len({p.id for p in got})


async def test_window_starts_at_since_inclusive() -> None:
    sb = make_qbo(throttle=None)
    realm = sb.add_company("Window", seed=7, payments=200)
    company = sb.companies[realm]
    ordered = sorted(company.payments.values(), key=lambda p: parse_time(p["MetaData"]["CreateTime"]))
    pivot = parse_time(ordered[120]["MetaData"]["CreateTime"])
    async with sb.serve(), client(sb.api_url, realm, SandboxTokens.issue(sb, realm)) as qbo:
        got = [p async for page in qbo.payment_pages(pivot) for p in page]
    want = {p["Id"] for p in ordered if parse_time(p["MetaData"]["CreateTime"]) >= pivot.replace(microsecond=0)}
    assert {p.id for p in got} == want and ordered[120]["Id"] in want


async def test_a_payment_deleted_mid_run_does_not_hide_an_unseen_one() -> None:
    """Offset paging would skip the row that slides into the deleted row's place; keyset paging does not."""
    sb = make_qbo(throttle=None)
    realm = sb.add_company("Deletes", seed=8, payments=300)
    async with sb.serve(), client(sb.api_url, realm, SandboxTokens.issue(sb, realm)) as qbo:
        seen: list[Payment] = []
        async for page in qbo.payment_pages(qbo_now() - timedelta(days=3650), 50):
            if not seen:
                for p in page[:5]:
                    sb.delete_payment(realm, p.id)
            seen.extend(page)
    remaining = set(sb.companies[realm].payments)
    assert remaining <= {p.id for p in seen}
    assert len(seen) == len({p.id for p in seen})


async def test_statement_and_transport_follow_the_contract() -> None:
    sb = make_qbo(throttle=None)
    realm = sb.add_company("Contract", seed=9, payments=5)
    statements: list[tuple[str, str, str | None]] = []

    from aiohttp import web

    @web.middleware
    async def spy(request: web.Request, handler):  # type: ignore[no-untyped-def]
        if request.path.endswith("/query"):
            body = (await request.read()).decode()
            statements.append((body, request.headers.get("Content-Type", ""), request.query.get("minorversion")))
        return await handler(request)

    original = sb.make_app

    def app_with_spy() -> web.Application:
        app = original()
        app.middlewares.insert(0, spy)
        return app

    sb.make_app = app_with_spy  # type: ignore[method-assign]
    since = parse_time("2026-01-02T03:04:05.678-08:00")
    async with sb.serve(), client(sb.api_url, realm, SandboxTokens.issue(sb, realm)) as qbo:
        [p async for page in qbo.payment_pages(since) for p in page]
        await qbo.read_invoices(["1", "2"])
    assert statements[0] == (
        "SELECT * FROM Payment WHERE MetaData.CreateTime >= '2026-01-02T11:04:05+00:00' "
        "ORDERBY MetaData.CreateTime STARTPOSITION 1 MAXRESULTS 1000",
        "application/text",
        "75",
    )
    assert statements[1][0] == "SELECT * FROM Invoice WHERE Id IN ('1','2') STARTPOSITION 1 MAXRESULTS 1000"
    assert qbo_time(since) == "2026-01-02T11:04:05+00:00"


# --- bulk invoice reads -----------------------------------------------------------------------


async def test_invoices_are_read_in_bulk_never_one_by_one() -> None:
    sb = make_qbo(throttle=None)
    realm = sb.add_company("Invoices", seed=10, payments=1200)
    ids = sorted(sb.companies[realm].invoices, key=int)
    assert len(ids) > 1000
    async with sb.serve(), client(sb.api_url, realm, SandboxTokens.issue(sb, realm)) as qbo:
        found = await qbo.read_invoices([*ids, "999999999", "x'); DROP", ids[0]])
    assert set(found) == set(ids)
    assert found[ids[0]].doc_number == sb.companies[realm].invoices[ids[0]]["DocNumber"]
    assert queries(sb) == -(-(len(ids) + 1) // 1000)
    assert sb.requests["read"] == 0


# --- throttling and faults --------------------------------------------------------------------


async def test_429_storm_waits_and_retries_until_done() -> None:
    sb = make_qbo(throttle=ThrottleLimits(per_minute=None, per_second=2, concurrent=None))
    realm = sb.add_company("Storm", seed=11, payments=300)
    async with sb.serve():
        policy = QboPolicy(throttle_wait=0.3, throttle_retries=50, backoff_initial=0.01, max_per_second=1000)
        async with client(sb.api_url, realm, SandboxTokens.issue(sb, realm), policy) as qbo:
            got = await collect(qbo, page_size=25)
    assert sorted(p.id for p in got) == sorted(sb.companies[realm].payments)
    assert sb.requests["throttled"] > 0
    assert qbo.requests == queries(sb)


async def test_429_honours_retry_after() -> None:
    sb = make_qbo(throttle=None)
    realm = sb.add_company("Retry-After", seed=12, payments=30)
    sb.faults.add(kind="throttle", path="/query", count=3, retry_after=0)
    policy = QboPolicy(throttle_wait=3600, max_throttle_wait=3600, max_per_second=1000)  # would hang if ignored
    async with sb.serve(), client(sb.api_url, realm, SandboxTokens.issue(sb, realm), policy) as qbo:
        try:
            got = await asyncio.wait_for(collect(qbo), timeout=60)
        except TimeoutError:
            pytest.fail("the client ignored Retry-After")
    assert len(got) == len(sb.companies[realm].payments)
    assert queries(sb) == 4


async def test_429_in_xml_is_recognised_as_throttling() -> None:
    sb = make_qbo(throttle=ThrottleLimits(per_minute=None, per_second=1, concurrent=None, format="xml"))
    realm = sb.add_company("XML 429", seed=12, payments=60)
    policy = QboPolicy(throttle_wait=0.3, throttle_retries=50, max_per_second=1000)
    async with sb.serve(), client(sb.api_url, realm, SandboxTokens.issue(sb, realm), policy) as qbo:
        got = await collect(qbo, page_size=10)
    assert len(got) == 60
    assert sb.requests["throttled"] > 0


async def test_endless_throttling_fails_with_the_reason() -> None:
    sb = make_qbo(throttle=None)
    realm = sb.add_company("Always 429", seed=13, payments=3)
    sb.faults.add(kind="throttle", path="/query", retry_after=0)
    policy = QboPolicy(throttle_retries=2, backoff_initial=0.01, max_per_second=1000)
    async with sb.serve(), client(sb.api_url, realm, SandboxTokens.issue(sb, realm), policy) as qbo:
        with pytest.raises(QboUnavailable, match=r"kept throttling \(429\) after 2 waits.*intuit_tid 1-"):
            await collect(qbo)
    assert queries(sb) == 3


async def test_5xx_html_502_xml_and_malformed_answers_are_retried() -> None:
    sb = make_qbo(throttle=None)
    realm = sb.add_company("Flaky", seed=14, payments=50)
    sb.faults.add(kind="status", status=503, path="/query", count=1)
    sb.faults.add(kind="html_502", path="/query", count=1)
    sb.faults.add(kind="xml_fault", status=500, path="/query", count=1)
    sb.faults.add(kind="malformed", path="/query", count=1)
    sb.faults.add(kind="truncated", path="/query", count=1)
    async with sb.serve(), client(sb.api_url, realm, SandboxTokens.issue(sb, realm),
                      QboPolicy(transient_retries=6, backoff_initial=0.01, backoff_max=0.02,
                                max_per_second=1000)) as qbo:  # fmt: skip
        got = await collect(qbo)
    assert len(got) == len(sb.companies[realm].payments)
    assert queries(sb) == 6


@pytest.mark.parametrize(
    ("rule", "message"),
    [
        ({"kind": "status", "status": 500}, r"HTTP 500: An application error has occurred.*code 10000"),
        ({"kind": "html_502"}, r"HTTP 502: an HTML page \(502 Bad Gateway\)"),
        ({"kind": "malformed"}, r"answered 200 with malformed JSON \(truncated\?\)"),
        ({"kind": "xml_fault", "status": 503}, r"HTTP 503: .*\(code \d+\)"),
    ],
)
async def test_persistent_faults_fail_with_a_clear_reason_after_bounded_retries(
    rule: dict[str, object], message: str
) -> None:
    sb = make_qbo(throttle=None)
    realm = sb.add_company("Down", seed=15, payments=3)
    sb.faults.add(path="/query", **rule)
    await collect_fails(sb, realm, QboUnavailable, message)
    assert queries(sb) == FAST.transient_retries + 1


async def test_slow_responses_time_out_and_are_retried() -> None:
    sb = make_qbo(throttle=None)
    realm = sb.add_company("Slow", seed=16, payments=20)
    sb.faults.add(kind="latency", seconds=1.0, path="/query", count=1)
    sb.faults.add(kind="latency", seconds=0.05, path="/query", count=1)
    policy = QboPolicy(timeout=0.4, backoff_initial=0.01, backoff_max=0.02, max_per_second=1000)
    async with sb.serve(), client(sb.api_url, realm, SandboxTokens.issue(sb, realm), policy) as qbo:
        got = await collect(qbo)
    assert len(got) == 20
    assert queries(sb) == 2


async def test_query_errors_are_not_retried() -> None:
    sb = make_qbo(throttle=None)
    realm = sb.add_company("Bad query", seed=17, payments=3)
    async with sb.serve(), client(sb.api_url, realm, SandboxTokens.issue(sb, realm)) as qbo:
        with pytest.raises(QboRequestError, match=r"HTTP 400.*QueryParserError.*intuit_tid"):
            await qbo.query("SELECT * FROM")
    assert queries(sb) == 1


async def test_wrong_realm_is_403_authorization_failed() -> None:
    sb = make_qbo(throttle=None)
    realm = sb.add_company("Mine", seed=18, payments=3)
    other = sb.add_company("Theirs", seed=19, payments=3)
    await collect_fails(sb, other, QboAuthError, r"HTTP 403.*AuthorizationFailed.*no longer be authorized", realm)


async def test_unreadable_payment_is_a_clear_error_naming_it() -> None:
    sb = make_qbo(throttle=None)
    realm = sb.add_company("Broken", seed=20, payments=10)
    victim = next(iter(sb.companies[realm].payments.values()))
    victim["Line"] = [{"Amount": "lots", "LinkedTxn": []}]
    await collect_fails(sb, realm, QboDataError, rf"Payment \(Id {victim['Id']}\) that cannot be read: Line\.0")


# --- 401: refresh once and retry --------------------------------------------------------------


async def test_lowercase_401_mid_run_refreshes_once_and_continues() -> None:
    sb = make_qbo(throttle=None)
    realm = sb.add_company("Expiring", seed=21, payments=250)
    async with sb.serve():
        tokens = SandboxTokens.issue(sb, realm)
        first_token = tokens.access
        async with client(sb.api_url, realm, tokens) as qbo:
            got: list[Payment] = []
            async for page in qbo.payment_pages(qbo_now() - timedelta(days=3650), 100):
                got.extend(page)
                if len(got) == 100:
                    sb.advance_clock(3700)  # the access token expires between pages
    assert len(got) == len(sb.companies[realm].payments)
    assert tokens.refreshes == 1 and tokens.rejected == [first_token]
    assert sb.requests["unauthorized"] == 1


async def test_401_after_a_refresh_is_an_auth_error_without_the_token() -> None:
    sb = make_qbo(throttle=None)
    realm = sb.add_company("Still 401", seed=22, payments=3)
    sb.faults.add(kind="status", status=401, path="/query")
    async with sb.serve():
        tokens = SandboxTokens.issue(sb, realm)
        async with client(sb.api_url, realm, tokens) as qbo:
            with pytest.raises(QboAuthError, match="even after a refresh") as err:
                await collect(qbo)
    assert tokens.refreshes == 1
    assert tokens.access not in str(err.value) and tokens.refresh not in str(err.value)


async def test_revoked_grant_surfaces_the_token_endpoint_error() -> None:
    sb = make_qbo(throttle=None)
    realm = sb.add_company("Revoked", seed=23, payments=3)
    async with sb.serve():
        tokens = SandboxTokens.issue(sb, realm)
        sb.revoke_all(realm)
        async with client(sb.api_url, realm, tokens) as qbo:
            with pytest.raises(OAuthError) as err:
                await collect(qbo)
    assert err.value.dead_grant


# --- pure parts -------------------------------------------------------------------------------


def test_fault_shapes_are_all_read() -> None:
    upper = Fault.from_json({"Fault": {"Error": [{"Message": "m", "Detail": "d", "code": "610"}], "type": "X"}})
    token_echo = "Token expired: eyJhbGciOiJkaXIiLCJlbmMiOiJBMTI4Q0JDLUhTMjU2In0"
    lower = Fault.from_json(
        {"fault": {"error": [{"message": "m2", "detail": token_echo, "code": "3200"}], "type": "AUTHENTICATION"}}
    )
    xml = Fault.from_xml(
        '<IntuitResponse><Fault type="AuthenticationFault"><Error code="100"><Message>General '
        "Authentication Error</Message><Detail>SRV-110</Detail></Error></Fault></IntuitResponse>"
    )
    assert upper is not None and upper.codes == {"610"} and upper.summary() == "m; d (code 610)"
    assert lower is not None and lower.type == "AUTHENTICATION" and "[redacted]" in lower.summary()
    assert xml is not None and xml.summary() == "General Authentication Error; SRV-110 (code 100)"
    assert Fault.from_json({"QueryResponse": {}}) is None and Fault.from_xml("<html/>") is None


async def test_rate_limiter_never_exceeds_its_window() -> None:
    now = [0.0]
    slept: list[float] = []

    async def sleep(seconds: float) -> None:
        slept.append(seconds)
        now[0] += seconds

    limiter = RateLimiter(3, window=60, clock=lambda: now[0], sleep=sleep)
    starts = []
    for _ in range(7):
        await limiter.acquire()
        starts.append(now[0])
    assert starts == [0, 0, 0, 60, 60, 60, 120]
    assert slept == [60, 60]


def test_bad_realm_id_is_refused() -> None:
    with pytest.raises(ValueError, match="company id"):
        QboClient("http://127.0.0.1:1", "1' OR '1", SandboxTokens(None, "a", "b"))  # type: ignore[arg-type]
