"""Webhook delivery to a real aiohttp receiver: signatures, both formats, batching, order, retries (docs/qbo.md §5)."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from typing import Any

from aiohttp import web

from qbo_operator.core.signing import verify_webhook
from qbo_operator.harness.sandbox.qbo_webhooks import (
    FAST_RETRY_DELAYS,
    INTUIT_RETRY_DELAYS,
    cloudevents_body,
    legacy_body,
)
from tests.support.http import serve_app
from tests.support.sandbox import VERIFIER, FakeClock, SandboxFactory


@dataclass
class Receiver:
    """A webhook endpoint that answers from a script of status codes (then 200) and keeps what it got."""

    statuses: list[int] = field(default_factory=list)
    delay: Callable[[int], float] = lambda n: 0.0
    received: list[tuple[bytes, dict[str, str]]] = field(default_factory=list)
    url: str = ""

    async def handle(self, request: web.Request) -> web.Response:
        body = await request.read()
        n = len(self.received)
        self.received.append((body, dict(request.headers)))
        await asyncio.sleep(self.delay(n))
        status = self.statuses[n] if n < len(self.statuses) else 200
        return web.Response(status=status)

    def accepted(self) -> list[Any]:
        """Every event in acknowledged deliveries, de-duplicated by id, in arrival order."""
        out: dict[str, Any] = {}
        for n, (body, _) in enumerate(self.received):
            if (self.statuses[n] if n < len(self.statuses) else 200) == 200:
                for event in json.loads(body):
                    out.setdefault(event["id"], event)
        return list(out.values())


@asynccontextmanager
async def serving(receiver: Receiver) -> AsyncIterator[Receiver]:
    app = web.Application()
    app.router.add_post("/webhooks/quickbooks", receiver.handle)
    async with serve_app(app) as url:
        receiver.url = f"{url}/webhooks/quickbooks"
        yield receiver


async def test_cloudevents_signed_batched_and_typed(make_sandbox: SandboxFactory, clock: FakeClock) -> None:
    async with serving(Receiver()) as hook:
        sb = make_sandbox(webhook_url=hook.url, webhook_batch_window=0.05)
        realm = sb.add_company("Acme Dispensary", seed=1, payments=20)
        assert sb.webhook_deliveries == [], "history is not announced"
        clock.advance(10)
        async with sb.serve():
            created = sb.generate_payments(realm, n=40, seed=4)
            voided = [p["Id"] for p in created if p.get("PrivateNote", "").startswith("Voided")]
            sb.delete_payment(realm, created[0]["Id"])
            assert await sb.wait_webhooks(10)
    assert voided, "the mix includes voids"
    assert len(hook.received) == 1, "one aggregated delivery"
    body, headers = hook.received[0]
    assert headers["Content-Type"] == "application/cloudevents+json"
    assert verify_webhook(VERIFIER, body, headers["intuit-signature"])
    assert not verify_webhook("another-token", body, headers["intuit-signature"])
    events = json.loads(body)
    assert isinstance(events, list)
    types = [(e["type"], e["intuitentityid"]) for e in events]
    assert types == (
        [("qbo.payment.created.v1", p["Id"]) for p in created]
        + [("qbo.payment.void.v1", pid) for pid in voided]
        + [("qbo.payment.deleted.v1", created[0]["Id"])]
    )
    first = events[0]
    assert first["specversion"] == "1.0" and first["datacontenttype"] == "application/json"
    assert first["intuitaccountid"] == realm and first["data"] == {}
    assert first["source"].startswith("intuit.") and first["time"].endswith("Z")
    assert len({e["id"] for e in events}) == len(events)
    assert [d.status for d in sb.webhook_deliveries] == [200]


async def test_legacy_format(make_sandbox: SandboxFactory, clock: FakeClock) -> None:
    async with serving(Receiver()) as hook:
        sb = make_sandbox(webhook_url=hook.url, webhook_format="legacy", webhook_batch_window=0.05)
        realm = sb.add_company("Acme Dispensary", seed=1, payments=20)
        clock.advance(10)
        async with sb.serve():
            payment = sb.create_payment(
                realm, [next(i["Id"] for i in sb.companies[realm].invoices.values() if i["Balance"] > 0)]
            )
            sb.void_payment(realm, payment["Id"])
            assert await sb.wait_webhooks(10)
    body, headers = hook.received[0]
    assert headers["Content-Type"] == "application/json"
    assert verify_webhook(VERIFIER, body, headers["intuit-signature"])
    (note,) = json.loads(body)["eventNotifications"]
    assert note["realmId"] == realm
    assert [(e["name"], e["id"], e["operation"]) for e in note["dataChangeEvent"]["entities"]] == [
        ("Payment", payment["Id"], "Create"),
        ("Payment", payment["Id"], "Void"),
    ]
    assert note["dataChangeEvent"]["entities"][0]["lastUpdated"].endswith(".000Z")


async def test_retries_until_200_then_later_events_follow_in_order(
    make_sandbox: SandboxFactory, clock: FakeClock
) -> None:
    receiver = Receiver(statuses=[500, 503, 400])
    async with serving(receiver) as hook:
        sb = make_sandbox(webhook_url=hook.url, webhook_retry_delays=(0.0, 0.05, 0.1))
        realm = sb.add_company("Acme Dispensary", seed=1, payments=20)
        clock.advance(10)
        async with sb.serve():
            first = sb.generate_payments(realm, n=3, seed=1)
            while not sb.webhook_deliveries:
                await asyncio.sleep(0.005)
            second = sb.generate_payments(realm, n=2, seed=2)  # queued behind the failing delivery
            assert await sb.wait_webhooks(10)
    attempts = [(d.number, d.attempt, d.status) for d in sb.webhook_deliveries]
    assert attempts[:4] == [(1, 1, 500), (1, 2, 503), (1, 3, 400), (1, 4, 200)]
    assert all(status == 200 for _, _, status in attempts[4:]) and attempts[4][0] == 2
    bodies = [b for b, _ in receiver.received]
    assert bodies[0] == bodies[1] == bodies[2] == bodies[3], "a retry resends the same signed body"
    ids = [e["intuitentityid"] for e in receiver.accepted() if e["type"] == "qbo.payment.created.v1"]
    assert ids == [p["Id"] for p in first + second]


async def test_slow_receiver_is_retried(make_sandbox: SandboxFactory, clock: FakeClock) -> None:
    receiver = Receiver(delay=lambda n: 5.0 if n == 0 else 0.0)
    async with serving(receiver) as hook:
        sb = make_sandbox(webhook_url=hook.url, webhook_timeout=1.5, webhook_retry_delays=(0.0,))
        realm = sb.add_company("Acme Dispensary", seed=1, payments=20)
        clock.advance(10)
        async with sb.serve():
            sb.generate_payments(realm, n=1, seed=1)
            assert await sb.wait_webhooks(10)
    first, second = sb.webhook_deliveries[:2]
    assert first.status is None and first.error is not None and "1.5 s" in first.error
    assert second.status == 200 and second.attempt == 2


async def test_unreachable_receiver_keeps_events_pending(make_sandbox: SandboxFactory, clock: FakeClock) -> None:
    sb = make_sandbox(webhook_url="http://127.0.0.1:9/nothing", webhook_retry_delays=(0.01,))
    realm = sb.add_company("Acme Dispensary", seed=1, payments=20)
    clock.advance(10)
    async with sb.serve():
        sb.generate_payments(realm, n=2, seed=1)
        assert not await sb.wait_webhooks(0.3)
        assert sb.webhooks.pending == 2
    assert len(sb.webhook_deliveries) >= 2
    assert all(d.status is None and d.error for d in sb.webhook_deliveries)
    assert sb.webhooks.pending == 2, "stopping keeps unacknowledged events"


async def test_no_url_no_events(make_sandbox: SandboxFactory, clock: FakeClock) -> None:
    sb = make_sandbox()
    realm = sb.add_company("Acme Dispensary", seed=1, payments=20)
    clock.advance(10)
    async with sb.serve():
        sb.generate_payments(realm, n=5, seed=1)
        assert await sb.wait_webhooks(1)
    assert sb.webhook_deliveries == [] and sb.webhooks.pending == 0


def test_body_builders_and_schedule() -> None:
    assert INTUIT_RETRY_DELAYS[:4] == (0.0, 10.0, 20.0, 30.0) and INTUIT_RETRY_DELAYS[-1] == 21600.0
    assert tuple(d / 100 for d in INTUIT_RETRY_DELAYS) == FAST_RETRY_DELAYS
    assert json.loads(cloudevents_body([], "intuit.x")) == []
    assert json.loads(legacy_body([])) == {"eventNotifications": []}
