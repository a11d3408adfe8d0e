"""QboClient against the QBO sandbox over real HTTP: change paging (keyset on LastUpdatedTime, ties shuffled
by the sandbox as Intuit may), bulk reads, CDC, 504s and timeouts that halve a page, throttling, faults, 401s."""

from __future__ import annotations

import asyncio
from collections import Counter
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from aiohttp import web

from qbo_operator.core.oauth import OAuthError
from qbo_operator.harness.sandbox.qbo import QboSandbox
from qbo_operator.harness.sandbox.qbo_api import ThrottleLimits
from qbo_operator.harness.sandbox.qbo_store import parse_time
from qbo_operator.sync.qbo import (
    MAX_RESULTS,
    QboAuthError,
    QboClient,
    QboDataError,
    QboPolicy,
    QboRequestError,
    QboUnavailable,
    RateLimiter,
    qbo_time,
)
from qbo_operator.sync.qbo_models import CDC_CAP, Changes, Fault, Invoice, Payment
from tests.support.sync import SandboxTokens, make_qbo

# Tests lift the client-side pacing (tested on its own below) so they finish quickly.
FAST = QboPolicy(throttle_wait=0.05, backoff_initial=0.01, backoff_max=0.05, transient_retries=3, timeout=5,
                 max_per_second=1000)  # fmt: skip
LONG_AGO = timedelta(days=3650)


def client(url: str, realm: str, tokens: SandboxTokens, policy: QboPolicy = FAST) -> QboClient:
    return QboClient(url, realm, tokens, policy)


async def collect(qbo: QboClient, since: datetime | None = None, page_size: int = 1000, **kw: Any) -> list[Payment]:
    """Every payment changed at or after `since` (default: ten years ago), in the order yielded."""
    start = since if since is not None else qbo_now() - LONG_AGO
    return [p async for page in qbo.changed(Payment, start, page_size=page_size, **kw) for p in page]


async def collect_fails(sb: QboSandbox, realm: str, error: type[Exception], match: str, tokens_for: str = "") -> None:
    """Reading `realm`'s payments fails with `error` matching `match` (tokens issued for `tokens_for`, else realm)."""
    async with sb.serve(), client(sb.api_url, realm, SandboxTokens.issue(sb, tokens_for or realm)) as qbo:
        with pytest.raises(error, match=match):
            await collect(qbo)


def qbo_now() -> datetime:
    return datetime.now(UTC)


def queries(sb: QboSandbox) -> int:
    return int(sb.requests["query"])


@contextmanager
def spied(sb: QboSandbox) -> Iterator[list[str]]:
    """The statement of every query the sandbox receives, in order (faulted ones included)."""
    statements: list[str] = []

    @web.middleware
    async def spy(request: web.Request, handler: Callable[[web.Request], Any]) -> web.StreamResponse:
        if request.path.endswith("/query"):
            statements.append((await request.read()).decode())
        response: web.StreamResponse = await handler(request)
        return response

    original = sb.make_app

    def app_with_spy() -> web.Application:
        app = original()
        app.middlewares.insert(0, spy)
        return app

    sb.make_app = app_with_spy  # type: ignore[method-assign]
    yield statements


def page_sizes(statements: list[str]) -> list[int]:
    """MAXRESULTS of every page query (not COUNT)."""
    return [int(s.rsplit("MAXRESULTS ", 1)[1]) for s in statements if "MAXRESULTS" in s]


def assert_each_once(got: list[Payment], want: set[str]) -> None:
    ids = [p.id for p in got]
    assert set(ids) == want, (len(set(ids)), len(want))
    assert [i for i, n in Counter(ids).items() if n > 1] == []


def assert_oldest_change_first(got: list[Payment]) -> None:
    """Intuit's LastUpdatedTime has whole seconds, so the order is by second; ties come in any order."""
    seconds = [p.changed_at.astimezone(UTC).replace(microsecond=0) for p in got]
    assert seconds == sorted(seconds)


class Clock:
    """A sandbox clock the test moves, so payments can be made to share one second."""

    def __init__(self) -> None:
        self.now = datetime.now(UTC).replace(microsecond=0)

    def __call__(self) -> datetime:
        return self.now

    def tick(self, seconds: float) -> None:
        self.now += timedelta(seconds=seconds)


def burst(sb: QboSandbox, clock: Clock, realm: str, per_second: int, seconds: int) -> set[str]:
    """`per_second` unapplied payments created in each of `seconds` whole seconds; their ids."""
    company = sb.companies[realm]
    customer = next(iter(company.customers))
    clock.tick(60)  # past the consent's second
    ids = set()
    for _ in range(seconds):
        for _ in range(per_second):
            ids.add(sb.create_payment(realm, (), unapplied="12.34", customer_id=customer)["Id"])
        clock.tick(1)
    return ids


# --- change paging ----------------------------------------------------------------------------


@pytest.mark.parametrize("page_size", [1000, 37, 10])
async def test_changed_returns_every_payment_once_oldest_change_first(page_size: int) -> None:
    sb = make_qbo(throttle=None, tie_shuffle_seed=page_size)
    realm = sb.add_company("Paging", seed=3, payments=400)
    with spied(sb) as statements:
        async with sb.serve():
            tokens = SandboxTokens.issue(sb, realm)
            sb.generate_payments(realm, 300, seed=4)  # ~5 a second: many share a second
            async with client(sb.api_url, realm, tokens) as qbo:
                got = await collect(qbo, page_size=page_size)
    assert_each_once(got, set(sb.companies[realm].payments))
    assert_oldest_change_first(got)
    assert set(page_sizes(statements)) == {page_size}  # MAXRESULTS is the page size asked for, never above 1000


@pytest.mark.parametrize("page_size", [1000, 37, 10])
async def test_2500_payments_in_two_seconds_with_shuffled_ties_each_come_once(page_size: int) -> None:
    """Every query returns the tied rows in a new order; a second holding a whole page is read by Id."""
    clock = Clock()
    sb = make_qbo(throttle=None, clock=clock, tie_shuffle_seed=11)
    realm = sb.add_company("Burst", seed=5, payments=20)
    with spied(sb) as statements:
        async with sb.serve():
            tokens = SandboxTokens.issue(sb, realm)
            new = burst(sb, clock, realm, per_second=1250, seconds=2)
            async with client(sb.api_url, realm, tokens) as qbo:
                got = await collect(qbo, page_size=page_size)
    assert len(new) == 2500
    assert_each_once(got, set(sb.companies[realm].payments))
    assert_oldest_change_first(got)
    assert sb.queries_answered >= len(statements) > 0  # the shuffle was in force on every query
    assert sum("SELECT COUNT(*)" in s for s in statements) == 4  # each saturated second, before and after its pass
    assert all("ORDERBY Id" in s for s in statements if "LastUpdatedTime = " in s and "COUNT" not in s)
    assert max(page_sizes(statements)) <= MAX_RESULTS


async def test_created_since_leaves_out_payments_created_before_it_however_recently_changed() -> None:
    sb = make_qbo(throttle=None)
    realm = sb.add_company("Created", seed=6, payments=50)
    old = min(sb.companies[realm].payments, key=int)
    async with sb.serve():
        tokens = SandboxTokens.issue(sb, realm)
        cutoff = sb.now()
        sb.update_payment(realm, old, ref_num="R-EDITED")  # created long ago, changed now
        fresh = {p["Id"] for p in sb.generate_payments(realm, 40, seed=7)}
        async with client(sb.api_url, realm, tokens) as qbo:
            recent = await collect(qbo, since=cutoff, created_since=cutoff)
            changed = await collect(qbo, since=cutoff)
    assert_each_once(recent, fresh)
    assert_each_once(changed, fresh | {old})
    edited = next(p for p in changed if p.id == old)
    assert edited.sync_token == "1" and edited.payment_ref_num == "R-EDITED"


async def test_window_starts_at_since_inclusive_to_the_second() -> None:
    sb = make_qbo(throttle=None, tie_shuffle_seed=3)
    realm = sb.add_company("Window", seed=7, payments=200)
    ordered = sorted(sb.companies[realm].payments.values(), key=lambda p: parse_time(p["MetaData"]["LastUpdatedTime"]))
    pivot = parse_time(ordered[120]["MetaData"]["LastUpdatedTime"])
    async with sb.serve(), client(sb.api_url, realm, SandboxTokens.issue(sb, realm)) as qbo:
        got = await collect(qbo, since=pivot + timedelta(milliseconds=900), page_size=25)
    second = pivot.replace(microsecond=0)
    want = {p["Id"] for p in ordered if parse_time(p["MetaData"]["LastUpdatedTime"]) >= second}
    assert_each_once(got, want)
    assert ordered[120]["Id"] in want


async def test_rows_changed_during_paging_come_again_with_their_new_version() -> None:
    """A row changed after it was read moves past the window and is read again (its newest SyncToken); a
    row changed before it was read comes once; nothing unchanged is lost or repeated."""
    clock = Clock()
    sb = make_qbo(throttle=None, clock=clock, tie_shuffle_seed=5)
    realm = sb.add_company("Moving", seed=8, payments=300)
    async with sb.serve(), client(sb.api_url, realm, SandboxTokens.issue(sb, realm)) as qbo:
        ordered = sorted(sb.companies[realm].payments, key=int)
        got: list[Payment] = []
        edited: set[str] = set()
        async for page in qbo.changed(Payment, clock.now - LONG_AGO, page_size=50):
            if not got:
                clock.tick(5)
                # two payments a bookkeeper may still edit (the generated history voids a few, by the clock)
                live = [p.id for p in page if p.id not in sb.companies[realm].voided]
                on_page = {p.id for p in page}
                seen = live[0]
                unseen = next(i for i in ordered if i not in on_page and i not in sb.companies[realm].voided)
                for pid in (seen, unseen):
                    sb.update_payment(realm, pid, ref_num=f"moved-{pid}")
                edited = {seen, unseen}
            got.extend(page)
    counts = Counter(p.id for p in got)
    assert set(counts) == set(sb.companies[realm].payments)
    assert counts[seen] == 2 and counts[unseen] == 1
    assert all(n == 1 for pid, n in counts.items() if pid != seen)
    last = {p.id: p for p in got}
    books = sb.companies[realm].payments  # the newest version (the generated history may have edited it before)
    assert all(
        last[pid].payment_ref_num == f"moved-{pid}" and last[pid].sync_token == str(books[pid]["SyncToken"])
        for pid in edited
    )


async def test_a_row_leaving_a_saturated_second_mid_read_hides_no_other() -> None:
    clock = Clock()
    sb = make_qbo(throttle=None, clock=clock)
    realm = sb.add_company("Saturated", seed=5, payments=5)
    async with sb.serve():
        tokens = SandboxTokens.issue(sb, realm)
        new = burst(sb, clock, realm, per_second=100, seconds=1)
        async with client(sb.api_url, realm, tokens) as qbo:
            got: list[Payment] = []
            async for page in qbo.changed(Payment, clock.now - LONG_AGO, page_size=10):
                got.extend(page)
                read = sorted((p.id for p in got if p.id in new), key=int)
                if len(read) == 20:  # two pages into the second: one row already read changes again
                    clock.tick(5)
                    sb.update_payment(realm, read[0], ref_num="moved")
    assert set(sb.companies[realm].payments) - {p.id for p in got} == set()


async def test_a_payment_deleted_mid_run_does_not_hide_an_unseen_one() -> None:
    """Offset paging would skip the row that slides into the deleted row's place; keyset paging does not."""
    sb = make_qbo(throttle=None, tie_shuffle_seed=9)
    realm = sb.add_company("Deletes", seed=8, payments=300)
    async with sb.serve(), client(sb.api_url, realm, SandboxTokens.issue(sb, realm)) as qbo:
        seen: list[Payment] = []
        async for page in qbo.changed(Payment, qbo_now() - LONG_AGO, page_size=50):
            if not seen:
                for p in page[:5]:
                    sb.delete_payment(realm, p.id)
            seen.extend(page)
    assert set(sb.companies[realm].payments) <= {p.id for p in seen}
    assert len(seen) == len({p.id for p in seen})


async def test_page_size_above_intuits_1000_is_refused_before_any_request() -> None:
    sb = make_qbo(throttle=None)
    realm = sb.add_company("Limits", seed=9, payments=3)
    async with sb.serve(), client(sb.api_url, realm, SandboxTokens.issue(sb, realm)) as qbo:
        for size in (0, MAX_RESULTS + 1):
            with pytest.raises(ValueError, match=r"page size must be 1\.\.1000"):
                await collect(qbo, page_size=size)
    assert queries(sb) == 0


async def test_statement_and_transport_follow_the_contract() -> None:
    sb = make_qbo(throttle=None)
    realm = sb.add_company("Contract", seed=9, payments=5)
    seen: list[tuple[str, str | None]] = []

    @web.middleware
    async def headers(request: web.Request, handler: Callable[[web.Request], Any]) -> web.StreamResponse:
        seen.append((request.headers.get("Content-Type", ""), request.query.get("minorversion")))
        response: web.StreamResponse = await handler(request)
        return response

    with spied(sb) as statements:
        spy_app = sb.make_app

        def app() -> web.Application:
            a = spy_app()
            a.middlewares.insert(0, headers)
            return a

        sb.make_app = app  # type: ignore[method-assign]
        since = parse_time("2026-01-02T03:04:05.678-08:00")
        async with sb.serve(), client(sb.api_url, realm, SandboxTokens.issue(sb, realm)) as qbo:
            await collect(qbo, since=since, created_since=since)
            await qbo.read_invoices(["1", "2"])
    assert statements == [
        "SELECT * FROM Payment WHERE Metadata.LastUpdatedTime >= '2026-01-02T11:04:05+00:00' AND "
        "Metadata.CreateTime >= '2026-01-02T11:04:05+00:00' ORDERBY Metadata.LastUpdatedTime STARTPOSITION 1 "
        "MAXRESULTS 1000",
        "SELECT * FROM Invoice WHERE Id IN ('1','2') STARTPOSITION 1 MAXRESULTS 1000",
    ]
    assert set(seen) == {("application/text", "75")}
    assert qbo_time(since) == "2026-01-02T11:04:05+00:00"


# --- bulk reads -------------------------------------------------------------------------------


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


async def test_read_payments_by_id_leaves_out_deleted_and_unknown_ones() -> None:
    sb = make_qbo(throttle=None)
    realm = sb.add_company("Read", seed=10, payments=30)
    ids = sorted(sb.companies[realm].payments, key=int)
    async with sb.serve(), client(sb.api_url, realm, SandboxTokens.issue(sb, realm)) as qbo:
        sb.delete_payment(realm, ids[0])
        sb.update_payment(realm, ids[1], ref_num="R-2")
        found = await qbo.read(Payment, [*ids[:5], "424242", ids[2]])
    assert set(found) == set(ids[1:5])
    assert found[ids[1]].payment_ref_num == "R-2" and found[ids[1]].sync_token == "1"
    assert queries(sb) == 1


# --- Change Data Capture ----------------------------------------------------------------------


async def test_cdc_returns_changed_payments_and_invoices_and_deleted_stubs() -> None:
    clock = Clock()
    sb = make_qbo(throttle=None, clock=clock)
    realm = sb.add_company("CDC", seed=12, payments=60)
    company = sb.companies[realm]
    pay_ids = sorted(company.payments, key=int)
    invoice_id = sorted(company.invoices, key=int)[-1]
    freed = {link["TxnId"] for line in company.payments[pay_ids[1]]["Line"] for link in line["LinkedTxn"]
             if link["TxnType"] == "Invoice"}  # fmt: skip
    async with sb.serve(), client(sb.api_url, realm, SandboxTokens.issue(sb, realm)) as qbo:
        clock.tick(60)
        since = clock.now
        sb.update_payment(realm, pay_ids[0], ref_num="R-CDC")
        sb.delete_payment(realm, pay_ids[1])
        sb.update_invoice(realm, invoice_id, doc_number="INV-CDC")
        changes = await qbo.cdc(["Payment", "Invoice"], since)
        nothing = await qbo.cdc(["Payment", "Invoice"], since + timedelta(hours=1))
    assert [(p.id, p.payment_ref_num) for p in changes.payments] == [(pay_ids[0], "R-CDC")]
    # deleting a payment reopens the invoices it paid: they changed too
    assert {i.id for i in changes.invoices} == {invoice_id, *freed}
    assert next(i.doc_number for i in changes.invoices if i.id == invoice_id) == "INV-CDC"
    assert changes.deleted == {"Payment": [pay_ids[1]], "Invoice": []}
    assert changes.complete and changes.objects == 2 + len(changes.invoices)
    assert (nothing.payments, nothing.invoices, nothing.objects, nothing.complete) == ([], [], 0, True)


async def test_cdc_at_intuits_cap_says_it_is_incomplete() -> None:
    clock = Clock()
    sb = make_qbo(throttle=None, clock=clock)
    realm = sb.add_company("CDC cap", seed=13, payments=5)
    async with sb.serve(), client(sb.api_url, realm, SandboxTokens.issue(sb, realm)) as qbo:
        since = clock.now + timedelta(seconds=30)
        burst(sb, clock, realm, per_second=CDC_CAP + 5, seconds=1)
        changes = await qbo.cdc(["Payment", "Invoice"], since)
    assert changes.objects == CDC_CAP and not changes.complete
    assert len({p.id for p in changes.payments}) == CDC_CAP


def test_cdc_body_parsing_with_deleted_stubs_and_unreadable_rows() -> None:
    meta = {"CreateTime": "2026-11-24T17:03:11-08:00", "LastUpdatedTime": "2026-11-25T09:00:00-08:00"}
    body = {"CDCResponse": [{"QueryResponse": [
        {"Payment": [{"Id": "5", "MetaData": meta, "TotalAmt": 10}, {"Id": "6", "status": "Deleted"}]},
        {"Invoice": [{"Id": "9", "status": "deleted", "MetaData": {"LastUpdatedTime": "x"}}], "startPosition": 1},
        {"CreditMemo": [{"Id": "77", "MetaData": meta}]},  # an entity not asked for is ignored
        None,
    ]}, {}]}  # fmt: skip
    changes = Changes.parse(body, ["Payment", "Invoice"])
    assert [p.id for p in changes.payments] == ["5"] and changes.invoices == []
    assert changes.deleted == {"Payment": ["6"], "Invoice": ["9"]}
    assert changes.objects == 3 and changes.complete
    assert Changes.parse({}, ["Payment"]).objects == 0
    with pytest.raises(ValueError, match="MetaData"):
        Changes.parse({"CDCResponse": [{"QueryResponse": [{"Invoice": [{"Id": "1"}]}]}]}, ["Invoice"])


# --- a 504 or a timeout halves the page -------------------------------------------------------


async def test_504_on_a_1000_row_page_halves_the_page_and_every_row_still_comes() -> None:
    sb = make_qbo(throttle=None, tie_shuffle_seed=21)
    realm = sb.add_company("Gateway timeout", seed=14, payments=2300)
    sb.faults.add(kind="status", status=504, path="/query", count=1)
    with spied(sb) as statements:
        async with sb.serve(), client(sb.api_url, realm, SandboxTokens.issue(sb, realm)) as qbo:
            got = await collect(qbo)
    assert_each_once(got, set(sb.companies[realm].payments))
    sizes = page_sizes(statements)
    assert sizes[:2] == [1000, 500] and set(sizes[1:]) == {500}  # halved for the rest of the run, not retried
    assert max(sizes) <= MAX_RESULTS


async def test_a_client_timeout_on_a_page_halves_it_likewise() -> None:
    sb = make_qbo(throttle=None)
    realm = sb.add_company("Slow page", seed=15, payments=1200)
    sb.faults.add(kind="latency", seconds=1.0, path="/query", count=2)
    policy = QboPolicy(timeout=0.5, backoff_initial=0.01, backoff_max=0.02, max_per_second=1000)
    with spied(sb) as statements:
        async with sb.serve(), client(sb.api_url, realm, SandboxTokens.issue(sb, realm), policy) as qbo:
            got = await collect(qbo)
    assert_each_once(got, set(sb.companies[realm].payments))
    assert page_sizes(statements)[:3] == [1000, 500, 250]


async def test_504s_halve_a_page_down_to_ten_then_retry_it_as_it_is() -> None:
    sb = make_qbo(throttle=None)
    realm = sb.add_company("Always slow", seed=16, payments=30)
    sb.faults.add(kind="status", status=504, path="/query", count=9)
    policy = QboPolicy(transient_retries=5, backoff_initial=0.01, backoff_max=0.02, max_per_second=1000)
    with spied(sb) as statements:
        async with sb.serve(), client(sb.api_url, realm, SandboxTokens.issue(sb, realm), policy) as qbo:
            got = await collect(qbo)
    assert_each_once(got, set(sb.companies[realm].payments))
    assert page_sizes(statements)[:9] == [1000, 500, 250, 125, 62, 31, 15, 10, 10]


async def test_504_on_a_bulk_read_halves_the_chunk() -> None:
    sb = make_qbo(throttle=None)
    realm = sb.add_company("Slow read", seed=17, payments=400)
    ids = sorted(sb.companies[realm].invoices, key=int)
    sb.faults.add(kind="status", status=504, path="/query", count=1)
    with spied(sb) as statements:
        async with sb.serve(), client(sb.api_url, realm, SandboxTokens.issue(sb, realm)) as qbo:
            found = await qbo.read(Invoice, ids)
    assert set(found) == set(ids)
    chunks = [s.count("'") // 2 for s in statements]
    assert chunks[0] == len(ids) and chunks[1] == len(ids) // 2 and sum(chunks[1:]) == len(ids)


# --- throttling and faults --------------------------------------------------------------------


async def test_429_storm_waits_and_retries_until_done() -> None:
    sb = make_qbo(throttle=ThrottleLimits(per_minute=None, per_second=2, concurrent=None))
    realm = sb.add_company("Storm", seed=11, payments=300)
    async with sb.serve():
        policy = QboPolicy(throttle_wait=0.3, throttle_retries=50, backoff_initial=0.01, max_per_second=1000)
        async with client(sb.api_url, realm, SandboxTokens.issue(sb, realm), policy) as qbo:
            got = await collect(qbo, page_size=25)
    assert_each_once(got, set(sb.companies[realm].payments))
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
    rule: dict[str, Any], message: str
) -> None:
    sb = make_qbo(throttle=None)
    realm = sb.add_company("Down", seed=15, payments=3)
    sb.faults.add(path="/query", **rule)
    await collect_fails(sb, realm, QboUnavailable, message)
    assert queries(sb) == FAST.transient_retries + 1


async def test_a_slow_request_that_cannot_shrink_times_out_and_is_retried() -> None:
    """A COUNT or a one-id read cannot be made smaller: a timeout there is retried as it is."""
    sb = make_qbo(throttle=None)
    realm = sb.add_company("Slow", seed=16, payments=20)
    one = min(sb.companies[realm].payments, key=int)
    sb.faults.add(kind="latency", seconds=1.0, path="/query", count=1)
    sb.faults.add(kind="latency", seconds=0.05, path="/query", count=1)
    policy = QboPolicy(timeout=0.4, backoff_initial=0.01, backoff_max=0.02, max_per_second=1000)
    async with sb.serve(), client(sb.api_url, realm, SandboxTokens.issue(sb, realm), policy) as qbo:
        got = await qbo.read(Payment, [one])
    assert list(got) == [one]
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
            async for page in qbo.changed(Payment, qbo_now() - LONG_AGO, page_size=100):
                if not got:
                    sb.advance_clock(3700)  # the access token expires between pages
                got.extend(page)
    assert_each_once(got, set(sb.companies[realm].payments))
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
