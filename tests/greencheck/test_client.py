"""GreenCheckClient against the sandbox over real HTTP: tokens, batching, splitting, retries."""

from __future__ import annotations

import asyncio
import hashlib
import itertools
import json
import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import pytest
from aiohttp import web

from qbo_operator.harness.sandbox.greencheck import GreenCheckSandbox
from qbo_operator.sync.greencheck import GreenCheckClient, GreenCheckError, GreenCheckPolicy, token_expiry
from qbo_operator.sync.records import (
    MAX_BODY_BYTES,
    Batch,
    Batcher,
    batches,
    encode_body,
    encode_record,
    idempotency_key,
)
from tests.support.greencheck import CLIENT_ID, CLIENT_SECRET, CRB, REALM, SP_ID, make_record
from tests.support.http import serve_app

FAST = GreenCheckPolicy(backoff_initial=0.01, backoff_max=0.05, transient_retries=3, default_throttle_wait=0.01)


def client(url: str, policy: GreenCheckPolicy = FAST, secret: str = CLIENT_SECRET) -> GreenCheckClient:
    return GreenCheckClient(url, CLIENT_ID, secret, SP_ID, policy)


def batch(*ns: int) -> Batch:
    return Batch(CRB, REALM, [make_record(n) for n in ns])


# --- pure parts -------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("expires_at", "now", "expected"),
    [(3600, 1_800_000_000.0, 1_800_003_600.0), (1_800_003_600, 1_800_000_000.0, 1_800_003_600.0),
     (0, 1_800_000_000.0, 1_800_000_000.0)],
)  # fmt: skip
def test_expires_at_is_read_both_ways(expires_at: float, now: float, expected: float) -> None:
    assert token_expiry(expires_at, now) == expected


def test_batcher_respects_count_and_measured_size_and_keeps_order() -> None:
    records = [make_record(i, memo="m" * (i * 37 % 900)) for i in range(1, 400)]
    limit = 20_000
    out = list(batches(records, CRB, REALM, max_records=25, max_bytes=limit))
    assert [r.external_id for b in out for r in b.records] == [r.external_id for r in records]
    for b in out:
        assert 1 <= len(b.records) <= 25
        assert len(encode_body(REALM, [encode_record(r) for r in b.records])) < limit
    # no batch could have taken the next record (it was cut for a reason)
    for b, nxt in itertools.pairwise(out):
        grown = [encode_record(r) for r in [*b.records, nxt.records[0]]]
        assert len(b.records) == 25 or len(encode_body(REALM, grown)) >= limit


def test_batcher_defaults_are_500_records_under_5_mb() -> None:
    records = [make_record(i) for i in range(1201)]
    sizes = [len(b.records) for b in batches(records, CRB, REALM)]
    assert sizes == [500, 500, 201]
    big = [make_record(i, memo="x" * 30_000) for i in range(400)]
    out = list(batches(big, CRB, REALM))
    assert all(len(encode_body(REALM, [encode_record(r) for r in b.records])) < MAX_BODY_BYTES for b in out)
    assert sum(len(b.records) for b in out) == 400 and len(out) >= 3


def test_a_record_larger_than_the_limit_is_refused_clearly() -> None:
    with pytest.raises(ValueError, match="alone encodes to"):
        Batcher(CRB, REALM, max_bytes=1000).add(make_record(1, memo="x" * 2000))


def test_idempotency_key_is_the_sha256_of_sorted_ids() -> None:
    ids = ["b", "a", "c"]
    assert idempotency_key(ids) == hashlib.sha256(b"a\nb\nc").hexdigest() == idempotency_key(sorted(ids))


# --- against the sandbox ----------------------------------------------------------------------


async def test_deliver_creates_then_reports_duplicates_and_caches_the_token(sandbox: GreenCheckSandbox) -> None:
    async with sandbox.serve() as url, client(url) as gc:
        first = await gc.deliver(batch(1, 2, 3))
        second = await gc.deliver(batch(3, 4))
    assert [(r.external_id, r.status) for r in first] == [(make_record(n).external_id, "created") for n in (1, 2, 3)]
    assert [r.status for r in second] == ["duplicate", "created"]
    assert sandbox.requests["auth_token"] == 1 and sandbox.requests["invoice_payments"] == 2
    assert gc.requests == 3
    assert (CRB, idempotency_key([make_record(n).external_id for n in (1, 2, 3)])) in sandbox.idempotency_keys


async def test_replayed_answers_count_as_new_only_for_our_own_unanswered_attempt(sandbox: GreenCheckSandbox) -> None:
    """The Idempotency-Key of a batch recurs when a later run sends the same records: the replayed
    'created' is then old news. A retry after a timeout is answered by a replay of its own request."""
    async with sandbox.serve() as url:
        async with client(url) as first_run:
            assert [r.status for r in await first_run.deliver(batch(1, 2))] == ["created", "created"]
            assert [r.status for r in await first_run.deliver(batch(1, 2))] == ["duplicate", "duplicate"]
        async with client(url) as second_run:
            assert [r.status for r in await second_run.deliver(batch(1, 2))] == ["duplicate", "duplicate"]
        slow = [0.6]

        async def answer_late(crb: str, results: list[dict[str, object]]) -> None:
            if slow:
                await asyncio.sleep(slow.pop())  # stored, but the answer comes after the client gave up

        sandbox.after_ingest = answer_late
        policy = GreenCheckPolicy(timeout=0.3, backoff_initial=0.01, backoff_max=0.01)
        async with client(url, policy) as retrying:
            # the first attempt times out but is processed; the retry gets the replay: still "created"
            assert [r.status for r in await retrying.deliver(batch(3))] == ["created"]
    assert sandbox.replays >= 3
    assert sandbox.results["created"] == 3


async def test_empty_batch_sends_nothing(sandbox: GreenCheckSandbox) -> None:
    async with sandbox.serve() as url, client(url) as gc:
        assert await gc.deliver(Batch(CRB, REALM, [])) == []
    assert sum(sandbox.requests.values()) == 0


async def test_batch_contract_is_enforced_before_sending(sandbox: GreenCheckSandbox) -> None:
    async with sandbox.serve() as url, client(url) as gc:
        with pytest.raises(ValueError, match="at most 500"):
            await gc.deliver(Batch(CRB, REALM, [make_record(i) for i in range(501)]))
        with pytest.raises(ValueError, match="must not repeat"):
            await gc.deliver(Batch(CRB, REALM, [make_record(1), make_record(1)]))
    assert sum(sandbox.requests.values()) == 0


async def test_expired_token_is_refreshed_and_the_batch_retried_once(sandbox: GreenCheckSandbox) -> None:
    async with sandbox.serve() as url, client(url) as gc:
        await gc.deliver(batch(1))
        sandbox.expire_tokens()
        results = await gc.deliver(batch(2))
    assert [r.status for r in results] == ["created"]
    assert sandbox.requests["auth_token"] == 2
    assert sandbox.responses[403] == 1
    assert set(sandbox.records[CRB]) == {make_record(1).external_id, make_record(2).external_id}


async def test_token_that_is_always_expired_fails_clearly() -> None:
    sb = GreenCheckSandbox(CLIENT_ID, CLIENT_SECRET, SP_ID, token_lifetime=0)
    async with sb.serve() as url, client(url) as gc:
        with pytest.raises(GreenCheckError, match=r"EXPIRED_TOKEN.*clock") as err:
            await gc.deliver(batch(1))
    assert "x-amzn-requestid" in str(err.value)
    assert sb.requests["invoice_payments"] == 2  # retried once, not forever


async def test_seconds_style_expires_at_keeps_the_token_cached() -> None:
    sb = GreenCheckSandbox(CLIENT_ID, CLIENT_SECRET, SP_ID, token_lifetime=3600, expires_at_style="seconds")
    async with sb.serve() as url, client(url) as gc:
        await gc.deliver(batch(1))
        await gc.deliver(batch(2))
    assert sb.requests["auth_token"] == 1


async def test_bad_credentials_fail_with_a_hint_and_no_secret(sandbox: GreenCheckSandbox) -> None:
    async with sandbox.serve() as url, client(url, secret="wrong-secret-value") as gc:
        with pytest.raises(GreenCheckError, match="GREENCHECK_CLIENT_SECRET") as err:
            await gc.deliver(batch(1))
    assert "wrong-secret-value" not in str(err.value)
    assert sandbox.requests["auth_token"] == 1  # a 401 is not retried


async def test_429_storm_waits_for_the_reset_and_delivers_everything() -> None:
    sb = GreenCheckSandbox(CLIENT_ID, CLIENT_SECRET, SP_ID, rate_limit=2, rate_window=0.2)
    policy = GreenCheckPolicy(throttle_retries=50, backoff_initial=0.01, backoff_max=0.05)
    async with sb.serve() as url, client(url, policy) as gc:
        for n in range(10):
            results = await gc.deliver(batch(2 * n, 2 * n + 1))
            assert [r.status for r in results] == ["created", "created"]
    assert len(sb.records[CRB]) == 20
    assert sb.responses[429] > 0  # it really was throttled
    assert sb.responses[200] == 10 + 1  # every batch once, plus the token


async def test_endless_429_gives_up_with_the_reason() -> None:
    sb = GreenCheckSandbox(CLIENT_ID, CLIENT_SECRET, SP_ID)
    sb.faults.add(kind="throttle", path="invoice-payments", retry_after=0)
    policy = GreenCheckPolicy(throttle_retries=3, backoff_initial=0.01)
    async with sb.serve() as url, client(url, policy) as gc:
        with pytest.raises(GreenCheckError, match=r"kept throttling \(429\) after 3 waits"):
            await gc.deliver(batch(1))
    assert sb.requests["invoice_payments"] == 4


async def test_5xx_and_malformed_answers_are_retried_with_backoff(
    sandbox: GreenCheckSandbox, caplog: pytest.LogCaptureFixture
) -> None:
    sandbox.faults.add(kind="status", status=503, path="invoice-payments", count=1)
    sandbox.faults.add(kind="html_502", path="invoice-payments", count=1)
    sandbox.faults.add(kind="malformed", path="invoice-payments", count=1)
    caplog.set_level(logging.WARNING, logger="qbo_operator.sync.greencheck")
    async with sandbox.serve() as url, client(url) as gc:
        results = await gc.deliver(batch(1, 2))
    assert [r.status for r in results] == ["created", "created"]
    assert sandbox.requests["invoice_payments"] == 4
    retries = [r.getMessage() for r in caplog.records if "retrying" in r.getMessage()]
    assert len(retries) == 3
    assert all("x-amzn-requestid" in m for m in retries)
    assert "HTTP 503" in retries[0] and "HTTP 502" in retries[1] and "unreadable" in retries[2]


async def test_persistent_5xx_fails_after_a_bounded_number_of_attempts(sandbox: GreenCheckSandbox) -> None:
    sandbox.faults.add(kind="status", status=500, path="invoice-payments")
    async with sandbox.serve() as url, client(url) as gc:
        with pytest.raises(GreenCheckError, match=r"unavailable after 4 attempts: HTTP 500") as err:
            await gc.deliver(batch(1))
    assert "x-amzn-requestid" in str(err.value)
    assert sandbox.requests["invoice_payments"] == 4
    assert CRB not in sandbox.records


async def test_slow_answers_past_the_timeout_are_retried(sandbox: GreenCheckSandbox) -> None:
    sandbox.faults.add(kind="latency", seconds=1.0, path="invoice-payments", count=1)
    policy = GreenCheckPolicy(timeout=0.3, backoff_initial=0.01, backoff_max=0.05)
    async with sandbox.serve() as url, client(url, policy) as gc:
        results = await gc.deliver(batch(1))
    assert [r.status for r in results] == ["created"]
    assert sandbox.requests["invoice_payments"] == 2
    # the slow request was still processed by the server: the retry must be a duplicate or replay
    assert sandbox.received[make_record(1).external_id] >= 1 and len(sandbox.records[CRB]) == 1


async def test_413_splits_the_batch_in_half_until_it_fits() -> None:
    records = [make_record(i) for i in range(40)]
    one = len(encode_record(records[0]))
    sb = GreenCheckSandbox(CLIENT_ID, CLIENT_SECRET, SP_ID, max_body_bytes=one * 12)
    async with sb.serve() as url, client(url) as gc:
        results = await gc.deliver(Batch(CRB, REALM, records))
    assert [r.external_id for r in results] == [r.external_id for r in records]
    assert {r.status for r in results} == {"created"}
    # 12 records fit: 40 is refused, each 20 is refused, the four 10s are accepted
    assert sb.responses[413] == 3
    assert sb.requests["invoice_payments"] == 3 + 4
    assert all(v == 1 for v in sb.received.values())


async def test_single_record_too_large_fails_clearly() -> None:
    sb = GreenCheckSandbox(CLIENT_ID, CLIENT_SECRET, SP_ID, max_body_bytes=200)
    async with sb.serve() as url, client(url) as gc:
        with pytest.raises(GreenCheckError, match="too large"):
            await gc.deliver(batch(1, 2))


async def test_rejected_records_come_back_with_errors_and_do_not_block_others(sandbox: GreenCheckSandbox) -> None:
    sandbox.reject_external_ids.add(make_record(2).external_id)
    async with sandbox.serve() as url, client(url) as gc:
        results = await gc.deliver(Batch(CRB, REALM, [make_record(1), make_record(2), make_record(3, total=-5)]))
    assert [r.status for r in results] == ["created", "rejected", "rejected"]
    assert results[1].errors[0].field == "external_id"
    assert (results[2].errors[0].field, results[2].errors[0].message) == ("invoice.total", "must be ≥ 0")


async def test_422_splits_and_isolates_the_refused_record(sandbox: GreenCheckSandbox) -> None:
    # The first three bodies are refused as a whole: [1,2,3,4] → [1,2] → [1]; then everything is accepted.
    sandbox.faults.add(kind="status", status=422, path="invoice-payments", count=3)
    async with sandbox.serve() as url, client(url) as gc:
        results = await gc.deliver(batch(1, 2, 3, 4))
    assert [r.status for r in results] == ["rejected", "created", "created", "created"]
    assert results[0].errors and results[0].errors[0].message
    assert set(sandbox.records[CRB]) == {make_record(n).external_id for n in (2, 3, 4)}


async def test_reused_idempotency_key_with_a_changed_record_counts_as_duplicate(sandbox: GreenCheckSandbox) -> None:
    """After a crash the same external ids can come back with a changed body (the invoice's open balance
    moved): Green Check answers 422 for the key; the client splits, and one record under its own key
    is a record Green Check already holds."""
    async with sandbox.serve() as url, client(url) as gc:
        await gc.deliver(Batch(CRB, REALM, [make_record(1)]))
        results = await gc.deliver(Batch(CRB, REALM, [make_record(1, open_balance=7)]))
        both = await gc.deliver(Batch(CRB, REALM, [make_record(1, open_balance=9), make_record(2)]))
    assert [r.status for r in results] == ["duplicate"]
    assert [r.status for r in both] == ["duplicate", "created"]
    assert sandbox.records[CRB][make_record(1).external_id]["invoice"]["open_balance"] == 0  # the first version


@asynccontextmanager
async def fake_server(handler: web.Handler) -> AsyncIterator[str]:
    app = web.Application()
    app.router.add_post("/auth/token", lambda r: web.json_response({"access_token": "t", "expires_at": 3600}))
    app.router.add_post("/service-providers/{sp}/crbs/{crb}/sales/invoice-payments", handler)
    async with serve_app(app) as url:
        yield url


async def test_answer_missing_results_is_not_counted_as_delivered() -> None:
    async def partial(request: web.Request) -> web.Response:
        data = json.loads(await request.read())
        first = data["records"][0]["external_id"]
        return web.json_response({"results": [{"external_id": first, "status": "created"}]},
                                 headers={"x-amzn-requestid": "req-123"})  # fmt: skip

    async with fake_server(partial) as url, client(url) as gc:
        with pytest.raises(GreenCheckError, match=r"lacks results for 1 of 2 records.*x-amzn-requestid req-123"):
            await gc.deliver(batch(1, 2))


async def test_unreachable_server_fails_after_bounded_retries() -> None:
    async with fake_server(lambda r: web.json_response({})) as url:
        pass  # closed: nothing listens there any more
    async with client(url) as gc:
        with pytest.raises(GreenCheckError, match=r"unavailable after 4 attempts: connection failed"):
            await gc.deliver(batch(1))
    assert gc.requests == 4
