"""GreenCheckClient against the sandbox over real HTTP: tokens, batching, splitting, retries."""

from __future__ import annotations

import asyncio
import hashlib
import itertools
import json
import logging
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager

import pytest
from aiohttp import web

from qbo_operator.harness.sandbox.greencheck import GreenCheckSandbox
from qbo_operator.sync.greencheck import GreenCheckClient, GreenCheckError, GreenCheckPolicy, token_expiry
from qbo_operator.sync.records import (
    MAX_BODY_BYTES,
    Batch,
    Batcher,
    PaymentResult,
    PaymentSet,
    batches,
    encode_body,
    encode_payment_set,
    idempotency_key,
)
from tests.support.greencheck import CLIENT_ID, CLIENT_SECRET, CRB, REALM, SP_ID, make_record, make_set
from tests.support.http import serve_app

FAST = GreenCheckPolicy(backoff_initial=0.01, backoff_max=0.05, transient_retries=3, default_throttle_wait=0.01)


def client(url: str, policy: GreenCheckPolicy = FAST, secret: str = CLIENT_SECRET) -> GreenCheckClient:
    return GreenCheckClient(url, CLIENT_ID, secret, SP_ID, policy)


def batch(*ns: int) -> Batch:
    """One single-invoice payment per n: payment n applied to invoice 1000 + n."""
    return Batch(CRB, REALM, [make_set(n, n) for n in ns])


def statuses(results: list[PaymentResult]) -> list[str]:
    """Each payment's status, and its records' statuses when applied: `created`, `rejected`, `retracted+created`."""
    return [r.status if r.status == "rejected" else "+".join(x.status for x in r.records) for r in results]


def body_of(sets: list[PaymentSet]) -> bytes:
    return encode_body(REALM, [encode_payment_set(s) for s in sets])


# --- pure parts -------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("expires_at", "now", "expected"),
    [(3600, 1_800_000_000.0, 1_800_003_600.0), (1_800_003_600, 1_800_000_000.0, 1_800_003_600.0),
     (0, 1_800_000_000.0, 1_800_000_000.0)],
)  # fmt: skip
def test_expires_at_is_read_both_ways(expires_at: float, now: float, expected: float) -> None:
    assert token_expiry(expires_at, now) == expected


def test_batcher_respects_counts_and_measured_size_and_keeps_order() -> None:
    sets = [make_set(i, *range(i * 10, i * 10 + i % 7), memo="m" * (i * 37 % 900)) for i in range(1, 300)]
    limit = 20_000
    out = list(batches(sets, CRB, REALM, max_items=25, max_bytes=limit))
    assert [s.payment_id for b in out for s in b.payments] == [s.payment_id for s in sets]
    for b in out:
        assert 1 <= len(b.payments) <= 25 and b.records_count <= 25
        assert list(b.encoded or []) == [encode_payment_set(s) for s in b.payments]  # measured = sent
        assert len(body_of(list(b.payments))) < limit
    # no batch could have taken the next set (it was cut for a reason)
    for b, nxt in itertools.pairwise(out):
        grown = [*b.payments, nxt.payments[0]]
        assert len(grown) > 25 or sum(len(s.records) for s in grown) > 25 or len(body_of(grown)) >= limit


@pytest.mark.parametrize(
    ("sets", "sizes"),
    [
        ([make_set(i, i) for i in range(1201)], [500, 500, 201]),  # 500 sets of one record
        ([make_set(i) for i in range(1201)], [500, 500, 201]),  # 500 empty sets (retractions)
        ([make_set(i, *range(i * 300, i * 300 + 300)) for i in range(4)], [1, 1, 1, 1]),  # ≤ 500 records
        ([make_set(0, *range(250)), make_set(1, *range(300, 550)), make_set(2, 999)], [2, 1]),
    ],
    ids=["one-record-sets", "empty-sets", "300-record-sets", "exactly-500-records"],
)
def test_batcher_defaults_are_500_sets_and_500_records(sets: list[PaymentSet], sizes: list[int]) -> None:
    assert [len(b.payments) for b in batches(sets, CRB, REALM)] == sizes


def test_batcher_stays_under_5_mb() -> None:
    big = [make_set(i, i, memo="x" * 30_000) for i in range(400)]
    out = list(batches(big, CRB, REALM))
    assert all(len(body_of(list(b.payments))) < MAX_BODY_BYTES for b in out)
    assert sum(len(b.payments) for b in out) == 400 and len(out) >= 3


def test_a_payment_seen_again_closes_the_batch_so_the_later_set_wins() -> None:
    b = Batcher(CRB, REALM)
    assert b.add(make_set(1, 1)) is None and b.add(make_set(2, 2)) is None
    full = b.add(make_set(1))
    assert full is not None and [s.payment_id for s in full.payments] == ["1", "2"]
    last = b.flush()
    assert last is not None and last.payments == (make_set(1),) and b.flush() is None


@pytest.mark.parametrize(
    ("payment_set", "max_bytes", "message"),
    [
        (make_set(9, 1, memo="x" * 2000), 1000, "payment 9 alone encodes to"),
        (make_set(8, *range(501)), MAX_BODY_BYTES, "payment 8 has 501 records"),
    ],
)
def test_a_set_larger_than_the_limits_is_refused_clearly(payment_set: PaymentSet, max_bytes: int, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        Batcher(CRB, REALM, max_bytes=max_bytes).add(payment_set)


def test_idempotency_key_is_the_sha256_of_the_run_and_the_body() -> None:
    content = body_of([make_set(1, 1)])
    assert idempotency_key(content) == hashlib.sha256(content).hexdigest() != idempotency_key(content + b" ")
    assert idempotency_key(content, "run-1") == hashlib.sha256(b"run-1\n" + content).hexdigest()
    assert idempotency_key(content, "run-1") != idempotency_key(content, "run-2")  # a later run is applied again


def test_records_count_counts_records_not_sets() -> None:
    assert Batch(CRB, REALM, [make_set(1, 1, 2), make_set(2), make_set(3, 3)]).records_count == 3


# --- against the sandbox ----------------------------------------------------------------------


async def test_deliver_applies_payment_sets_and_caches_the_token(sandbox: GreenCheckSandbox) -> None:
    changed = [make_set(3, 3, open_balance=1), make_set(4, 4), make_set(1), make_set(2, 2)]
    async with sandbox.serve() as url, client(url) as gc:
        first = await gc.deliver(batch(1, 2, 3))
        second = await gc.deliver(Batch(CRB, REALM, changed))
    assert [(r.payment_id, r.status) for r in first] == [("1", "applied"), ("2", "applied"), ("3", "applied")]
    assert [r.records[0].external_id for r in first] == [make_record(n).external_id for n in (1, 2, 3)]
    assert statuses(first) == ["created"] * 3
    assert statuses(second) == ["updated", "created", "retracted", "unchanged"]
    assert set(sandbox.current_records(CRB)) == {make_record(n).external_id for n in (2, 3, 4)}
    assert sandbox.requests["auth_token"] == 1 and sandbox.requests["invoice_payments"] == 2
    assert gc.requests == 3
    assert (CRB, idempotency_key(body_of(changed), gc.run_id)) in sandbox.idempotency_keys


async def test_a_replayed_answer_is_the_first_answer(sandbox: GreenCheckSandbox) -> None:
    """The same body is the same key: Green Check answers with what that request did the first time (a retry
    after a timeout learns what its lost attempt changed). The same sets in another body are re-applied."""
    async with sandbox.serve() as url:
        async with client(url) as gc:
            assert statuses(await gc.deliver(batch(1, 2))) == ["created", "created"]
            assert statuses(await gc.deliver(batch(1, 2))) == ["created", "created"]  # replayed
            assert statuses(await gc.deliver(batch(2, 1))) == ["unchanged", "unchanged"]  # another body
        slow = [0.6]

        async def answer_late(crb: str, results: list[dict[str, object]]) -> None:
            if slow:
                await asyncio.sleep(slow.pop())  # stored, but the answer comes after the client gave up

        sandbox.after_ingest = answer_late
        policy = GreenCheckPolicy(timeout=0.3, backoff_initial=0.01, backoff_max=0.01)
        async with client(url, policy) as retrying:
            # the first attempt times out but is processed; the retry gets the replay: still "created"
            assert statuses(await retrying.deliver(batch(3))) == ["created"]
    assert sandbox.replays == 2
    assert sandbox.results == {"created": 3, "unchanged": 2}


async def test_empty_batch_sends_nothing(sandbox: GreenCheckSandbox) -> None:
    async with sandbox.serve() as url, client(url) as gc:
        assert await gc.deliver(Batch(CRB, REALM, [])) == []
    assert sum(sandbox.requests.values()) == 0


async def test_batch_contract_is_enforced_before_sending(sandbox: GreenCheckSandbox) -> None:
    async with sandbox.serve() as url, client(url) as gc:
        with pytest.raises(ValueError, match="at most 500"):
            await gc.deliver(Batch(CRB, REALM, [make_set(i) for i in range(501)]))
        with pytest.raises(ValueError, match="at most 500"):
            await gc.deliver(Batch(CRB, REALM, [make_set(1, *range(300)), make_set(2, *range(300, 501))]))
        with pytest.raises(ValueError, match="must not repeat"):
            await gc.deliver(Batch(CRB, REALM, [make_set(1, 1), make_set(1)]))
    assert sum(sandbox.requests.values()) == 0


async def test_expired_token_is_refreshed_and_the_batch_retried_once(sandbox: GreenCheckSandbox) -> None:
    async with sandbox.serve() as url, client(url) as gc:
        await gc.deliver(batch(1))
        sandbox.expire_tokens()
        results = await gc.deliver(batch(2))
    assert statuses(results) == ["created"]
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
            assert statuses(results) == ["created", "created"]
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
    assert statuses(results) == ["created", "created"]
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
    assert statuses(results) == ["created"]
    assert sandbox.requests["invoice_payments"] == 2
    # the slow request was still processed by the server: the retry is answered by its replay
    assert sandbox.received[make_record(1).external_id] >= 1 and len(sandbox.records[CRB]) == 1


async def test_413_splits_the_batch_by_payment_sets_in_half_until_it_fits() -> None:
    sets = [make_set(i, i) for i in range(40)]
    one = len(encode_payment_set(sets[0]))
    sb = GreenCheckSandbox(CLIENT_ID, CLIENT_SECRET, SP_ID, max_body_bytes=one * 12)
    async with sb.serve() as url, client(url) as gc:
        results = await gc.deliver(Batch(CRB, REALM, sets))
    assert [r.payment_id for r in results] == [s.payment_id for s in sets]
    assert set(statuses(results)) == {"created"}
    # 12 sets fit: 40 is refused, each 20 is refused, the four 10s are accepted
    assert sb.responses[413] == 3
    assert sb.requests["invoice_payments"] == 3 + 4
    assert all(v == 1 for v in sb.received.values())


async def test_single_set_too_large_fails_clearly() -> None:
    sb = GreenCheckSandbox(CLIENT_ID, CLIENT_SECRET, SP_ID, max_body_bytes=200)
    async with sb.serve() as url, client(url) as gc:
        with pytest.raises(GreenCheckError, match="payment 1 as too large"):
            await gc.deliver(batch(1, 2))


async def test_rejected_sets_come_back_with_errors_and_do_not_block_others(sandbox: GreenCheckSandbox) -> None:
    sandbox.reject_external_ids.add(make_record(2).external_id)
    async with sandbox.serve() as url, client(url) as gc:
        results = await gc.deliver(Batch(CRB, REALM, [make_set(1, 1), make_set(2, 2), make_set(3, 3, total=-5)]))
    assert statuses(results) == ["created", "rejected", "rejected"]
    assert results[1].errors[0].field == "records[0].external_id"
    assert (results[2].errors[0].field, results[2].errors[0].message) == ("records[0].invoice.total", "must be ≥ 0")
    assert set(sandbox.current_records(CRB)) == {make_record(1).external_id}


async def test_422_splits_and_isolates_the_refused_set(sandbox: GreenCheckSandbox) -> None:
    # The first three bodies are refused as a whole: [1,2,3,4] → [1,2] → [1]; then everything is accepted.
    sandbox.faults.add(kind="status", status=422, path="invoice-payments", count=3)
    async with sandbox.serve() as url, client(url) as gc:
        results = await gc.deliver(batch(1, 2, 3, 4))
    assert statuses(results) == ["rejected", "created", "created", "created"]
    assert results[0].errors and results[0].errors[0].message
    assert set(sandbox.records[CRB]) == {make_record(n).external_id for n in (2, 3, 4)}


async def test_a_corrected_payment_is_updated_in_place(sandbox: GreenCheckSandbox) -> None:
    """The invoice's open balance moved after delivery: sending the payment's set again corrects the record."""
    async with sandbox.serve() as url, client(url) as gc:
        await gc.deliver(batch(1))
        results = await gc.deliver(Batch(CRB, REALM, [make_set(1, 1, open_balance=7)]))
    assert statuses(results) == ["updated"]
    assert sandbox.records[CRB][make_record(1).external_id]["invoice"]["open_balance"] == 7
    assert [v["status"] for v in sandbox.versions(CRB, make_record(1).external_id)] == ["created", "updated"]


async def _token(request: web.Request) -> web.StreamResponse:
    return web.json_response({"access_token": "t", "expires_at": 3600})


async def _empty(request: web.Request) -> web.StreamResponse:
    return web.json_response({})


@asynccontextmanager
async def fake_server(handler: Callable[[web.Request], Awaitable[web.StreamResponse]]) -> AsyncIterator[str]:
    app = web.Application()
    app.router.add_post("/auth/token", _token)
    app.router.add_post("/service-providers/{sp}/crbs/{crb}/sales/invoice-payments", handler)
    async with serve_app(app) as url:
        yield url


async def test_answer_missing_results_is_not_counted_as_delivered() -> None:
    async def partial(request: web.Request) -> web.Response:
        data = json.loads(await request.read())
        first = data["payments"][0]["payment_id"]
        return web.json_response({"results": [{"payment_id": first, "status": "applied"}]},
                                 headers={"x-amzn-requestid": "req-123"})  # fmt: skip

    async with fake_server(partial) as url, client(url) as gc:
        with pytest.raises(GreenCheckError, match=r"lacks results for 1 of 2 payments.*x-amzn-requestid req-123"):
            await gc.deliver(batch(1, 2))


async def test_a_422_for_one_set_names_the_fields_within_the_set() -> None:
    async def refuse(request: web.Request) -> web.Response:
        details = {"body.payments[0].records[1].invoice.total": {"message": "must be ≥ 0"}, "body": "bad"}
        return web.json_response({"message": "Validation Failed", "details": details}, status=422)

    async with fake_server(refuse) as url, client(url) as gc:
        [result] = await gc.deliver(batch(1))
    assert result.status == "rejected" and result.records == []
    assert [(e.field, e.message) for e in result.errors] == [
        ("records[1].invoice.total", "must be ≥ 0"),
        ("body", "bad"),
    ]


async def test_unreachable_server_fails_after_bounded_retries() -> None:
    async with fake_server(_empty) as url:
        pass  # closed: nothing listens there any more
    async with client(url) as gc:
        with pytest.raises(GreenCheckError, match=r"unavailable after 4 attempts: connection failed"):
            await gc.deliver(batch(1))
    assert gc.requests == 4
