"""Intuit's webhook delivery, imitated (docs/qbo.md §5): signed POSTs, batched, in order, retried.

Events carry ids only. A delivery is one POST holding every event queued since the last one (up
to `max_batch`), in the CloudEvents array format or the legacy `eventNotifications` format, signed
with `intuit-signature`. Anything but HTTP 200 within `timeout` seconds is retried on Intuit's
schedule (compressed for tests); later events wait behind it, as Intuit's do. Every attempt is
logged in `deliveries`."""

from __future__ import annotations

import asyncio
import base64
import contextlib
import hashlib
import json
import threading
import uuid
from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, Literal

import aiohttp

from qbo_operator.core.signing import webhook_signature

WebhookFormat = Literal["cloudevents", "legacy"]
# Intuit's retry schedule (seconds after a failed attempt), then every 6 hours.
INTUIT_RETRY_DELAYS: tuple[float, ...] = (0.0, 10.0, 20.0, 30.0, 300.0, 1200.0, 7200.0, 14400.0, 21600.0)
# The same schedule a hundred times faster: the sandbox's default.
FAST_RETRY_DELAYS: tuple[float, ...] = tuple(d / 100 for d in INTUIT_RETRY_DELAYS)
_VERBS = {
    "Create": "created",
    "Update": "updated",
    "Delete": "deleted",
    "Void": "void",
    "Merge": "merged",
    "Emailed": "emailed",
}


@dataclass(frozen=True)
class WebhookEvent:
    id: str
    realm_id: str
    entity: str
    entity_id: str
    operation: str  # Create, Update, Delete, Void, ...
    time: datetime


@dataclass(frozen=True)
class WebhookDelivery:
    """One attempt: `number` counts deliveries (batches), `attempt` counts tries of that batch."""

    number: int
    attempt: int
    event_ids: tuple[str, ...]
    body: bytes
    signature: str
    sent_at: datetime
    status: int | None
    error: str | None

    @property
    def ok(self) -> bool:
        return self.status == 200


def _utc(dt: datetime, timespec: str) -> str:
    return dt.astimezone(UTC).isoformat(timespec=timespec).replace("+00:00", "Z")


def cloudevents_body(events: Sequence[WebhookEvent], source: str) -> bytes:
    payload = [
        {
            "specversion": "1.0",
            "id": e.id,
            "source": source,
            "type": f"qbo.{e.entity.lower()}.{_VERBS.get(e.operation, e.operation.lower())}.v1",
            "datacontenttype": "application/json",
            "time": _utc(e.time, "microseconds"),
            "intuitentityid": e.entity_id,
            "intuitaccountid": e.realm_id,
            "data": {},
        }
        for e in events
    ]
    return json.dumps(payload, separators=(",", ":")).encode()


def legacy_body(events: Sequence[WebhookEvent]) -> bytes:
    by_realm: dict[str, list[dict[str, Any]]] = {}
    for e in events:
        by_realm.setdefault(e.realm_id, []).append(
            {"name": e.entity, "id": e.entity_id, "operation": e.operation, "lastUpdated": _utc(e.time, "milliseconds")}
        )
    payload = {
        "eventNotifications": [
            {"realmId": realm, "dataChangeEvent": {"entities": entities}} for realm, entities in by_realm.items()
        ]
    }
    return json.dumps(payload, separators=(",", ":")).encode()


class WebhookSender:
    """Queues events and delivers them from one background task (started by `start`)."""

    def __init__(
        self,
        verifier_token: str,
        client_id: str,
        *,
        url: str | None = None,
        fmt: WebhookFormat = "cloudevents",
        retry_delays: Sequence[float] = FAST_RETRY_DELAYS,
        timeout: float = 3.0,
        batch_window: float = 0.0,
        max_batch: int = 500,
        clock: Callable[[], datetime] = lambda: datetime.now(UTC),
    ) -> None:
        if not retry_delays:
            raise ValueError("retry_delays needs at least one delay")
        self._token = verifier_token
        self.url = url
        self.format: WebhookFormat = fmt
        self.retry_delays = tuple(retry_delays)
        self.timeout = timeout
        self.batch_window = batch_window
        self.max_batch = max_batch
        self.clock = clock
        self.source = "intuit." + base64.b64encode(hashlib.sha256(client_id.encode()).digest()).decode()
        self.deliveries: list[WebhookDelivery] = []
        self._pending: deque[WebhookEvent] = deque()
        self._current: tuple[WebhookEvent, ...] = ()
        self._lock = threading.Lock()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._wake: asyncio.Event | None = None
        self._task: asyncio.Task[None] | None = None
        self._batches = 0

    @property
    def pending(self) -> int:
        """Events not yet acknowledged (queued or in the delivery being retried)."""
        with self._lock:
            return len(self._pending) + len(self._current)

    def enqueue(self, realm_id: str, entity: str, entity_id: str, operation: str, at: datetime) -> WebhookEvent:
        event = WebhookEvent(str(uuid.uuid4()), realm_id, entity, entity_id, operation, at)
        with self._lock:
            self._pending.append(event)
        self._poke()
        return event

    def _poke(self) -> None:
        loop, wake = self._loop, self._wake
        if loop is None or wake is None or loop.is_closed():
            return
        try:
            running = asyncio.get_running_loop()
        except RuntimeError:
            running = None
        if running is loop:
            wake.set()
        else:
            loop.call_soon_threadsafe(wake.set)

    async def start(self) -> None:
        if self._task is not None:
            return
        self._loop = asyncio.get_running_loop()
        self._wake = asyncio.Event()
        self._task = asyncio.create_task(self._run(), name="qbo-sandbox-webhooks")
        self._wake.set()

    async def stop(self) -> None:
        task, self._task = self._task, None
        if task is not None:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
        with self._lock:
            # An unacknowledged batch goes back to the front of the queue.
            self._pending.extendleft(reversed(self._current))
            self._current = ()
        self._loop = None
        self._wake = None

    async def wait_idle(self, seconds: float = 10.0) -> bool:
        """True once every queued event has been acknowledged with a 200 (False after `seconds`)."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + seconds
        while self.pending:
            if loop.time() >= deadline:
                return False
            await asyncio.sleep(0.01)
        return True

    async def _run(self) -> None:
        assert self._wake is not None
        async with aiohttp.ClientSession() as session:
            while True:
                await self._wake.wait()
                self._wake.clear()
                if self.batch_window:
                    await asyncio.sleep(self.batch_window)
                while True:
                    with self._lock:
                        n = min(self.max_batch, len(self._pending))
                        self._current = tuple(self._pending.popleft() for _ in range(n))
                    if not self._current:
                        break
                    await self._deliver(session, self._current)
                    with self._lock:
                        self._current = ()

    async def _deliver(self, session: aiohttp.ClientSession, events: tuple[WebhookEvent, ...]) -> None:
        self._batches += 1
        number = self._batches
        if self.format == "legacy":
            body, content_type = legacy_body(events), "application/json"
        else:
            body, content_type = cloudevents_body(events, self.source), "application/cloudevents+json"
        signature = webhook_signature(self._token, body)
        headers = {"Content-Type": content_type, "intuit-signature": signature, "User-Agent": "Intuit-Webhooks/sandbox"}
        attempt = 0
        while True:
            attempt += 1
            url = self.url
            status: int | None = None
            error: str | None = None
            if url is None:
                error = "no webhook URL configured"
            else:
                try:
                    timeout = aiohttp.ClientTimeout(total=self.timeout)
                    async with session.post(url, data=body, headers=headers, timeout=timeout) as resp:
                        status = resp.status
                        await resp.read()
                except TimeoutError:
                    error = f"no answer within {self.timeout:g} s"
                except aiohttp.ClientError as exc:
                    error = type(exc).__name__
            self.deliveries.append(
                WebhookDelivery(
                    number, attempt, tuple(e.id for e in events), body, signature, self.clock(), status, error
                )
            )
            if status == 200:
                return
            await asyncio.sleep(self.retry_delays[min(attempt - 1, len(self.retry_delays) - 1)])
