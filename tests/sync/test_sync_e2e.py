"""`qbo-operator sync` end to end: a real process against the real control plane and both sandboxes.

Expected records are computed in the test from the sandbox's raw data (tests/support/sync.py), never
with the product's mapping code."""

from __future__ import annotations

import asyncio
import base64
import collections
import json
import math
import random
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any

import pytest
from aiohttp import web

from qbo_operator.core import oauth
from qbo_operator.core.models import Tokens
from qbo_operator.harness.sandbox.qbo_store import parse_time
from tests.support.proxies import Proxy
from tests.support.sync import (
    CRB,
    E2E,
    Run,
    assert_exact,
    expected_records,
    qbo_settings,
    sandboxes,
    utc,
)

pytestmark = pytest.mark.e2e


@asynccontextmanager
async def connected(
    cluster: Any, namespace: str, *, history: int, new: int, seed: int
) -> AsyncIterator[tuple[E2E, dict[str, dict[str, Any]]]]:
    """`environment` with the integration created and `new` payments since connectedAt: (e, expected records)."""
    async with sandboxes(cluster, namespace, payments=history) as e:
        e.create_integration()
        yield e, e.add_payments(new, seed=seed)


def window_payments(e: E2E) -> list[dict[str, Any]]:
    return [p for p in e.qbo.companies[e.realm].payments.values()
            if parse_time(p["MetaData"]["CreateTime"]) >= e.connected_at]  # fmt: skip


def keyset_bound(stamps: list[str]) -> int:
    """Queries to page `stamps` (LastUpdatedTimes) by keyset, 1,000 a page: ⌈(n + 1)/1000⌉ (a full last page
    needs one more query to prove it is the last), plus, for each second holding a whole page, the query that
    found it, its pages by Id (again one more for a full last page) and its count before and after."""
    per_second = collections.Counter(utc(t) for t in stamps)
    saturated = sum(math.ceil((n + 1) / 1000) + 3 for n in per_second.values() if n >= 1000)
    return math.ceil((len(stamps) + 1) / 1000) + saturated


def requests_bound(e: E2E, expected: dict[str, dict[str, Any]], in_window: list[dict[str, Any]]) -> int:
    """QBO requests for a window over CDC's cap (docs/sync.md "Requests per night"): two CDC calls and one per
    further 1,000 payments for deletes, keyset pages of changed invoices and payments, the invoices to read,
    the payment methods, the changed invoices' other payments."""
    invoices = {w["invoice"] for w in expected.values()}
    changed = [
        i["MetaData"]["LastUpdatedTime"]
        for i in e.qbo.companies[e.realm].invoices.values()
        if utc(i["MetaData"]["LastUpdatedTime"]) >= e.connected_at
    ]
    paid = [p["MetaData"]["LastUpdatedTime"] for p in in_window]
    cdc = 2 + math.ceil(len(in_window) / 1000)
    return cdc + keyset_bound(changed) + keyset_bound(paid) + math.ceil(len(invoices) / 1000) + 1 + 1


def qbo_queries(e: E2E) -> int:
    """Metered Accounting reads: queries and CDC calls."""
    return int(e.qbo.requests["query"] + e.qbo.requests["cdc"])


def gc_requests(e: E2E) -> int:
    return sum(v for k, v in e.gc.requests.items() if k != "control")


# --- the happy path, and re-runs --------------------------------------------------------------


def the_data_has_every_case(
    e: E2E, expected: dict[str, dict[str, Any]]
) -> tuple[dict[str, list[str]], list[dict[str, Any]], list[dict[str, Any]]]:
    """The data really contains what the test is about: history before connectedAt, sales receipts, a
    payment split over three invoices, and voided, unapplied and credit-only payments in the window.
    Returns (external ids by payment id, the window's payments, those of them that yield no record)."""
    company = e.qbo.companies[e.realm]
    assert any(parse_time(p["MetaData"]["CreateTime"]) < e.connected_at for p in company.payments.values())
    assert company.sales_receipts
    by_payment: dict[str, list[str]] = {}
    for eid, want in expected.items():
        by_payment.setdefault(want["payment"], []).append(eid)
    assert any(len(v) == 3 for v in by_payment.values()), "no payment split over three invoices"
    in_window = window_payments(e)
    skipped = [p for p in in_window if p["Id"] not in by_payment]
    assert any(str(p.get("PrivateNote", "")).startswith("Voided") for p in skipped)
    assert any(not p["Line"] and Decimal(str(p["UnappliedAmt"])) > 0 for p in skipped)  # unapplied
    assert any(p["Line"] and all(x["LinkedTxn"][0]["TxnType"] != "Invoice" for x in p["Line"])
               for p in skipped)  # credit-only  # fmt: skip
    return by_payment, in_window, skipped


async def test_sync_delivers_exactly_the_expected_records_then_nothing_then_ten_more(
    cluster: Any, namespace: str
) -> None:
    async with sandboxes(cluster, namespace) as e:
        e.create_integration()
        expected = e.add_payments(1000, seed=7)
        company = e.qbo.companies[e.realm]
        by_payment, in_window, skipped = the_data_has_every_case(e, expected)

        before_q, before_gc = qbo_queries(e), gc_requests(e)
        started = datetime.now(UTC)
        run = await e.sync()
        assert run.rc == 0, run.stderr
        assert run.error_lines == []
        assert_exact(e, expected)
        st = e.status()
        last = st["lastSync"]
        assert last["result"] == "Succeeded" and last["trigger"] == "Schedule"
        assert last["jobName"] == "acme-qbo-sync-29123456"
        assert last["paymentsSynced"] == len(by_payment), last["message"]
        assert last["paymentsSkipped"] == len(skipped)
        assert last["recordsRejected"] == 0
        assert last["amountSyncedCents"] == sum(w["amount"] for w in expected.values())
        assert last["qboRequests"] == qbo_queries(e) - before_q
        assert last["greenCheckRequests"] == gc_requests(e) - before_gc
        # Every change up to the run's start less ten minutes (changes QBO stamps late) is behind the watermark.
        ceiling = utc(st["syncWatermark"])
        assert started - timedelta(minutes=10, seconds=2) <= ceiling <= datetime.now(UTC) - timedelta(minutes=10)
        assert st["lastSuccessfulSyncTime"] and st["webhook"]["eventsSinceLastSync"] == 0
        synced = e.condition("Synced")
        assert synced is not None and (synced["status"], synced["reason"]) == ("True", "Succeeded")
        assert "progress:" in run.stderr  # progress lines for long runs

        assert last["qboRequests"] <= requests_bound(e, expected, in_window), dict(e.qbo.requests)

        # Again: nothing new, nothing duplicated (what changed in the last ten minutes is re-read: unchanged).
        created = e.gc.results["created"]
        again = await e.sync()
        assert again.rc == 0, again.stderr
        assert_exact(e, expected)
        assert e.gc.results["created"] == created
        assert e.status()["lastSync"]["paymentsSynced"] == 0

        # Ten more payments, one invoice each: exactly ten more records.
        open_invoices = [i for i, inv in company.invoices.items() if inv["Balance"] > 0][:10]
        for inv_id in open_invoices:
            e.qbo.create_payment(e.realm, [inv_id], method="Cash")
        expected_more = expected_records(e.qbo, e.realm, e.connected_at)
        assert len(expected_more) == len(expected) + 10
        more = await e.sync()
        assert more.rc == 0, more.stderr
        assert_exact(e, expected_more)
        assert e.gc.results["created"] == created + 10
        # The ten, and the earlier payments of the invoices they paid: their open balance changed.
        touched = {w["payment"] for eid, w in expected_more.items() if expected.get(eid) != w}
        assert e.status()["lastSync"]["paymentsSynced"] == len(touched) >= 10
        # The month's metered reads: the three runs' QuickBooks calls, added up (issue #20's read budget).
        assert e.status()["meteredReads"]["requests"] == qbo_queries(e) - before_q
        e.assert_no_secrets_leaked()


async def test_dry_run_prints_the_records_and_sends_and_writes_nothing(cluster: Any, namespace: str) -> None:
    async with connected(cluster, namespace, history=80, new=150, seed=3) as (e, expected):
        run = await e.sync("--dry-run")
        assert run.rc == 0, run.stderr
        sets = [json.loads(line) for line in run.stdout.splitlines()]
        printed = [r for s in sets for r in s["records"]]
        assert {r["external_id"] for r in printed} == set(expected)
        assert all(r["payment"]["amount"] == expected[r["external_id"]]["amount"] for r in printed)
        assert gc_requests(e) == 0
        st = e.status()
        assert "syncWatermark" not in st and "lastSync" not in st
        e.assert_no_secrets_leaked()


# --- crash safety -----------------------------------------------------------------------------


async def test_sigkill_at_20_random_points_then_every_record_exactly_once(cluster: Any, namespace: str) -> None:
    rng = random.Random(20261125)
    async with connected(cluster, namespace, history=100, new=1000, seed=11) as (e, expected):
        # pages of 200 and batches of 50: about 11 QuickBooks and 21 Green Check requests a run
        small = {"QBO_SYNC_PAGE_SIZE": "200", "QBO_SYNC_BATCH_SIZE": "50"}
        kinds = {"gc_before": 21, "gc_after": 21, "qbo": 10}
        watermarks: list[str] = []
        killed = 0
        for _ in range(20):
            kind = rng.choice(sorted(kinds))
            k = rng.randint(1, kinds[kind])
            proc = await e.start(measure_rss=False, **small)

            async def hook(
                crb: str,
                items: list[dict[str, Any]],
                _p: Any = proc,
                _k: int = k,
                _calls: list[int] = [],  # noqa: B006
            ) -> None:
                _calls.append(1)
                if len(_calls) == _k and _p.returncode is None:
                    _p.kill()

            e.gc.before_ingest = hook if kind == "gc_before" else None
            e.gc.after_ingest = hook if kind == "gc_after" else None
            watcher = None
            if kind == "qbo":
                start = qbo_queries(e)

                async def watch(_p: Any = proc, _k: int = k, _start: int = start) -> None:
                    while _p.returncode is None:
                        if qbo_queries(e) - _start >= _k:
                            _p.kill()
                            return
                        await asyncio.sleep(0.002)

                watcher = asyncio.ensure_future(watch())
            run = await e.finish(proc)
            if watcher:
                watcher.cancel()
            killed += run.rc == -9
            assert run.rc in (0, -9), run.stderr
            st = e.status()
            if "syncWatermark" in st:
                watermarks.append(st["syncWatermark"])
        e.gc.before_ingest = e.gc.after_ingest = None
        assert killed >= 15  # most points fell inside a run
        assert watermarks == sorted(watermarks)  # never moved backwards
        final = await e.sync(measure_rss=False, **small)
        assert final.rc == 0, final.stderr
        assert_exact(e, expected)
        assert e.gc.results["created"] == len(expected)  # each record created exactly once
        e.assert_no_secrets_leaked()


def paid_before_and_at_the_connection(e: E2E) -> str:
    """An invoice paid in part an hour before the connection and again at it, as a bookkeeper's second
    instalment: the invoice changes at connectedAt and lists a payment older than the window. Returns its id."""
    company = e.qbo.companies[e.realm]
    hour_before = e.connected_at - timedelta(hours=1)
    customer = next(iter(company.customers))
    product = next(i for i in company.items.values() if i["UnitPrice"] > 1)
    invoice = company.add_invoice(customer, [(product["Id"], Decimal(3))], hour_before - timedelta(days=1))
    for at in (hour_before, e.connected_at):
        company.add_payment(at, invoices=[(invoice["Id"], "1.00")])
    assert utc(invoice["MetaData"]["LastUpdatedTime"]) == e.connected_at
    return str(invoice["Id"])


async def test_green_check_failure_mid_run_keeps_the_progress_and_the_next_run_completes(
    cluster: Any, namespace: str
) -> None:
    async with connected(cluster, namespace, history=60, new=400, seed=5) as (e, expected):
        held = paid_before_and_at_the_connection(e)
        expected = expected_records(e.qbo, e.realm, e.connected_at)
        e.gc.faults.add(kind="status", status=503, path="invoice-payments", skip=3)
        run = await e.sync(QBO_SYNC_BATCH_SIZE="50")
        assert run.rc == 1
        assert len(run.error_lines) == 1
        assert "Green Check" in run.error_lines[0] and "HTTP 503" in run.error_lines[0]
        assert "resumes from the watermark" in run.error_lines[0]
        st = e.status()
        assert st["lastSync"]["result"] == "Failed"
        cond = e.condition("Synced")
        assert cond is not None and (cond["status"], cond["reason"]) == ("False", "GreenCheckUnavailable")
        delivered = len(e.gc.records[CRB])
        assert 0 < delivered < len(expected)  # three batches of 50 payment sets made it
        # progress was checkpointed, past the invoice whose older payment this first night never sends
        assert utc(st["syncWatermark"]) > e.connected_at, held
        assert any(ev["reason"] == "SyncFailed" and ev["type"] == "Warning" for ev in e.events())
        e.gc.faults.clear()
        again = await e.sync()
        assert again.rc == 0, again.stderr
        assert_exact(e, expected)
        e.assert_no_secrets_leaked()


async def test_quickbooks_unavailable_fails_with_the_reason_and_keeps_the_watermark(
    cluster: Any, namespace: str
) -> None:
    async with sandboxes(cluster, namespace, payments=60) as e:
        e.create_integration()
        assert (await e.sync()).rc == 0
        watermark, metered = e.status()["syncWatermark"], e.status()["meteredReads"]["requests"]
        e.qbo.faults.add(kind="html_502", path="/v3/company/")  # CDC and queries alike
        run = await e.sync()
        assert run.rc == 1
        (line,) = run.error_lines
        assert "QuickBooks" in line and "502 Bad Gateway" in line and "after 3 attempts" in line
        st = e.status()
        assert st["syncWatermark"] == watermark and st["lastSync"]["result"] == "Failed"
        # a failed run spends metered reads too: they count against the month's budget
        assert st["lastSync"]["qboRequests"] == 3 and st["meteredReads"]["requests"] == metered + 3
        cond = e.condition("Synced")
        assert cond is not None and cond["reason"] == "QuickbooksUnavailable"
        e.assert_no_secrets_leaked()


# --- tokens -----------------------------------------------------------------------------------


class SecretCheckingProxy(Proxy):
    """Forwards Accounting API calls to the QBO sandbox, first checking that the bearer token used is
    the one stored in the token Secret at that moment (so it was persisted before use)."""

    def __init__(self, e: E2E, on_query: Any = None) -> None:
        super().__init__(e.qbo.api_url)
        self.e = e
        self.checked = 0
        self.violations: list[str] = []
        self.on_query = on_query
        self.queries = 0

    async def handle(self, request: web.Request) -> web.Response:
        bearer = request.headers.get("Authorization", "").removeprefix("Bearer ")
        stored = await asyncio.to_thread(self.e.secret_data)
        self.checked += 1
        if bearer != stored["access_token"]:
            self.violations.append(f"request {self.checked} used a token not (yet) in the Secret")
        self.queries += 1
        if self.on_query is not None:
            self.on_query(self.queries)
        return await super().handle(request)

    async def sync(self, page_size: str) -> Run:
        """One sync whose Accounting API calls all go through this proxy."""
        async with self.serve() as url:
            self.e.qbo_api_url = url
            return await self.e.sync(QBO_SYNC_PAGE_SIZE=page_size)


async def test_rotated_refresh_token_is_in_the_secret_before_the_access_token_is_used(
    cluster: Any, namespace: str
) -> None:
    async with connected(cluster, namespace, history=60, new=300, seed=9) as (e, expected):
        e.expire_access_token()  # refresh at start ...
        e.qbo.force_rotation(e.realm)  # ... which rotates the refresh token
        old_refresh = e.secret_data()["refresh_token"]

        def mid_run(n: int) -> None:
            if n == 2:  # ... and again mid-run: the access token dies, the next refresh rotates too
                e.qbo.advance_clock(3700)
                e.qbo.force_rotation(e.realm)

        proxy = SecretCheckingProxy(e, mid_run)
        run = await proxy.sync(page_size="100")
        assert run.rc == 0, run.stderr
        assert proxy.violations == []
        # CDC, the invoice read, and that read again after the mid-run refresh (how many further reads the
        # night needs depends on the generated books), each checked against the Secret
        assert proxy.checked >= 3
        assert e.qbo.requests["unauthorized"] == 1  # the mid-run 401
        stored = e.secret_data()
        assert stored["refresh_token"] != old_refresh
        Tokens.from_secret_data({k: base64.b64encode(v.encode()).decode() for k, v in stored.items()})
        assert utc(stored["refreshed_at"]) > datetime.now(UTC) - timedelta(minutes=5)
        # the old refresh token is dead, the stored one works
        settings = qbo_settings(e.qbo)
        with pytest.raises(oauth.OAuthError):
            await asyncio.to_thread(oauth.refresh, settings, old_refresh)
        await asyncio.to_thread(oauth.refresh, settings, stored["refresh_token"])
        assert_exact(e, expected)
        e.assert_no_secrets_leaked()


async def test_two_concurrent_syncs_cannot_corrupt_the_secret(cluster: Any, namespace: str) -> None:
    async with connected(cluster, namespace, history=60, new=400, seed=13) as (e, expected):
        for _ in range(3):
            e.expire_access_token()
            e.qbo.force_rotation(e.realm)
            first, second = await asyncio.gather(e.sync(), e.sync())
            assert (first.rc, second.rc) == (0, 0), (first.stderr, second.stderr)
            stored = e.secret_data()
            tokens = Tokens.from_secret_data({k: base64.b64encode(v.encode()).decode() for k, v in stored.items()})
            assert tokens.realm_id == e.realm
            # the stored refresh token is the live one: a refresh with it works
            reply = await asyncio.to_thread(oauth.refresh, qbo_settings(e.qbo), tokens.refresh_token)
            e.token_reply = reply.model_dump()
            e.write_secret()
        assert e.status()["phase"] == "Connected"
        assert_exact(e, expected)
        e.assert_no_secrets_leaked()


@pytest.mark.parametrize("expired", [False, True])
async def test_dead_grant_marks_the_integration_disconnected(cluster: Any, namespace: str, expired: bool) -> None:
    async with sandboxes(cluster, namespace, payments=30) as e:
        e.create_integration()
        e.qbo.revoke_all(e.realm)
        if expired:
            e.write_secret(expires_at=datetime.now(UTC) - timedelta(minutes=1),
                           refresh_token_expires_at=datetime.now(UTC) - timedelta(days=1))  # fmt: skip
        else:
            e.expire_access_token()
        run = await e.sync()
        assert run.rc == 1
        (line,) = run.error_lines
        assert "invalid_grant" in line and "Connect link" in line
        st = e.status()
        assert st["phase"] == "Disconnected"
        reason = "RefreshTokenExpired" if expired else "TokenRevoked"
        connected = e.condition("Connected")
        assert connected is not None and (connected["status"], connected["reason"]) == ("False", reason)
        assert any(ev["reason"] == reason and ev["type"] == "Warning" for ev in e.events())
        assert gc_requests(e) == 0
        # and a second run refuses at once, saying what to do
        again = await e.sync()
        assert again.rc == 1 and "Disconnected" in again.error_lines[0]
        e.assert_no_secrets_leaked()


async def test_grant_revoked_mid_run_marks_disconnected(cluster: Any, namespace: str) -> None:
    async with sandboxes(cluster, namespace, payments=30) as e:
        e.create_integration()
        e.qbo.generate_payments(e.realm, 200, seed=2)

        def revoke(n: int) -> None:
            if n == 2:
                e.qbo.revoke_all(e.realm)

        run = await SecretCheckingProxy(e, revoke).sync(page_size="50")
        assert run.rc == 1, run.stderr
        assert e.status()["phase"] == "Disconnected"
        connected = e.condition("Connected")
        assert connected is not None and connected["reason"] == "TokenRevoked"
        e.assert_no_secrets_leaked()


# --- rejections, preconditions ----------------------------------------------------------------


async def test_rejected_then_accepted_kept_in_the_cluster_and_retried(cluster: Any, namespace: str) -> None:
    """Refused payments are named, kept in status (listable with kubectl), do not hold the watermark, and are
    sent again by the next run until accepted; then they are gone from the list and Green Check has them."""
    async with connected(cluster, namespace, history=60, new=200, seed=17) as (e, expected):
        refused = sorted(expected)[:3]
        payments = sorted({expected[eid]["payment"] for eid in refused}, key=int)
        e.gc.reject_external_ids.update(refused)
        run = await e.sync()
        assert run.rc == 0, run.stderr
        st = e.status()
        last = st["lastSync"]
        assert last["result"] == "PartiallySucceeded" and last["recordsRejected"] == len(payments)
        for pid in payments:
            assert f"payment {pid}" in last["message"]
        cond = e.condition("Synced")
        assert cond is not None and (cond["status"], cond["reason"]) == ("True", "RecordsRejected")
        events = [ev for ev in e.events() if ev["reason"] == "RecordsRejected"]
        assert events and events[0]["type"] == "Warning"
        held = {eid for eid, want in expected.items() if want["payment"] in payments}
        assert set(e.gc.records[CRB]) == set(expected) - held
        assert st["rejected"]["count"] == len(payments)
        listed = e.kubectl("get", "qbi", e.name, "-o", "jsonpath={.status.rejected.payments[*].paymentId}")
        assert listed.stdout.split() == payments
        assert utc(st["syncWatermark"]) >= datetime.now(UTC) - timedelta(minutes=11)  # rejections do not hold it

        e.gc.clear_rejections()
        retry = await e.sync()
        assert retry.rc == 0, retry.stderr
        st = e.status()
        assert st["lastSync"]["result"] == "Succeeded" and st["rejected"] == {"count": 0, "payments": []}
        assert_exact(e, expected)
        e.assert_no_secrets_leaked()


async def test_not_connected_suspended_and_missing_integrations(cluster: Any, namespace: str) -> None:
    async with sandboxes(cluster, namespace, payments=20) as e:
        missing = await e.sync()
        assert missing.rc == 1 and "does not exist" in missing.error_lines[0]

        e.create_integration(with_secret=False)
        no_secret = await e.sync()
        assert no_secret.rc == 1
        assert "not connected yet" in no_secret.error_lines[0] and "Connect link" in no_secret.error_lines[0]
        assert "lastSync" not in e.status()

        e.write_secret()
        raw = e.kubectl("get", "secret", f"{e.name}-qbo-tokens", "-o", "json").stdout
        secret = json.loads(raw)
        del secret["data"]["refresh_token"]
        e.kubectl("replace", "-f", "-", input=json.dumps(secret))
        broken = await e.sync()
        assert broken.rc == 1 and "'refresh_token' is missing" in broken.error_lines[0]

        e.write_secret()
        e.kubectl("patch", "qbi", e.name, "--type=merge", "-p", '{"spec": {"suspend": true}}')
        suspended = await e.sync()
        assert suspended.rc == 0 and "suspended, nothing to do" in suspended.stderr
        assert gc_requests(e) == 0 and qbo_queries(e) == 0
        manual = await e.sync(QBO_SYNC_TRIGGER="Manual")
        assert manual.rc == 0, manual.stderr
        assert e.status()["lastSync"]["trigger"] == "Manual"

        bad_trigger = await e.sync(QBO_SYNC_TRIGGER="Sometimes")
        assert bad_trigger.rc == 2 and "QBO_SYNC_TRIGGER='Sometimes'" in bad_trigger.stderr
        no_config = await e.sync(GREENCHECK_API_URL="")
        assert no_config.rc == 2 and "GREENCHECK_API_URL is required" in no_config.stderr
        e.assert_no_secrets_leaked()


# --- scale ------------------------------------------------------------------------------------


@pytest.mark.slow
@pytest.mark.timeout(5400)
async def test_memory_stays_flat_from_1000_to_100000_payments(cluster: Any, namespace: str) -> None:
    runs: dict[int, Run] = {}
    for n in (1_000, 100_000):
        e_ns = f"{namespace}-{n}"
        cluster.kubectl("create", "namespace", e_ns)
        async with sandboxes(cluster, e_ns, payments=20, seed=n) as e:
            e.create_integration()
            await asyncio.to_thread(e.qbo.generate_payments, e.realm, n, 1)
            expected = expected_records(e.qbo, e.realm, e.connected_at)
            run = await e.finish(await e.start(measure_rss=True), timeout=5000)
            assert run.rc == 0, run.stderr
            assert len(e.gc.records[CRB]) == len(expected)
            last = e.status()["lastSync"]
            in_window = len(window_payments(e))
            invoices = len({w["invoice"] for w in expected.values()})
            bound = math.ceil(in_window / 1000) + math.ceil(invoices / 1000) + 2
            runs[n] = run
            print(f"{n} payments: peak RSS {run.max_rss_kb} kB, {last['qboRequests']} QBO requests (bound {bound}), "
                  f"{last['greenCheckRequests']} Green Check requests")  # fmt: skip
            assert last["qboRequests"] <= bound
        cluster.kubectl("delete", "namespace", e_ns, "--wait=false", check=False)
    ratio = runs[100_000].max_rss_kb / runs[1_000].max_rss_kb
    print(f"peak RSS ratio 100,000 / 1,000 payments: {ratio:.2f}")
    assert ratio <= 1.5
