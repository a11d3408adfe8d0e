"""POST /webhooks/quickbooks: verify, de-duplicate, answer 200 at once, write status later (docs/design.md §4).

The answer never waits for Kubernetes: a verified delivery only touches memory (de-duplication,
metrics, a per-integration pending count), and `StatusRecorder` folds the pending counts into each
integration's `status.webhook` at most once per flush interval (a backlog: the counts that change a night
first, `urgent`). The fold is a read-modify-write
guarded by `metadata.resourceVersion`, so concurrent gateway replicas (and the sync resetting the
count) never lose an increment: a 409 re-reads and re-adds."""

from __future__ import annotations

import asyncio
import logging
import time
from collections import OrderedDict
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from aiohttp import web

from qbo_operator.core import signing, webhook_coverage
from qbo_operator.core.config import Environment
from qbo_operator.core.kube import ApiException, Kube
from qbo_operator.core.models import Integration, rfc3339
from qbo_operator.gateway.metrics import GatewayMetrics
from qbo_operator.gateway.realm_index import RealmIndex
from qbo_operator.gateway.webhook_models import Delivery, PayloadError, parse_delivery

log = logging.getLogger(__name__)

MAX_BODY_BYTES = 1024 * 1024
# Intuit posts a few KiB at once; a body still arriving after this is a slow client holding a connection.
BODY_READ_SECONDS = 10.0
# The entities the sync reads changes of (CDC on Payment and Invoice): an event for one means the next night
# reads QuickBooks (sync/gate.py); every entity is still counted in qbo_webhook_events_total.
SYNC_ENTITIES = frozenset({"Payment", "Invoice"})
_MAX_PATCH_ATTEMPTS = 6
_PATCH_CONCURRENCY = 8
# A flush writes at most this many integrations whose counts change no night's decision (`urgent`); the rest wait
# for a later flush, oldest first. About a second of one core per flush; at 10,000 busy integrations unbounded
# flushes lasted minutes and the coverage heartbeat, which waits for a complete flush, went stale.
FLUSH_WRITES = 500


class SeenIds:
    """Bounded memory of recent event keys: at most `capacity` keys, each for at most `ttl` seconds."""

    def __init__(self, capacity: int = 100_000, ttl: float = 24 * 3600, clock: Any = time.monotonic) -> None:
        self.capacity = capacity
        self.ttl = ttl
        self._clock = clock
        self._seen: OrderedDict[str, float] = OrderedDict()

    def __len__(self) -> int:
        return len(self._seen)

    def add(self, key: str) -> bool:
        """True when `key` is new (and remember it), False for a repeat within the TTL."""
        now = self._clock()
        while self._seen:
            _, at = next(iter(self._seen.items()))
            if now - at <= self.ttl:
                break
            self._seen.popitem(last=False)
        if key in self._seen:
            return False
        while len(self._seen) >= self.capacity:
            self._seen.popitem(last=False)
        self._seen[key] = now
        return True


@dataclass
class Pending:
    uid: str
    count: int
    last_event_time: datetime
    since: float = field(default_factory=time.monotonic)  # when the oldest of these counts arrived


def urgent(integration: Integration | None) -> bool:
    """Whether writing an integration's pending counts can change what its next night does (sync/gate.py).

    Only when its status shows a read but no webhook since that read: the count would turn a skipped night into a
    read. With no read yet the night reads anyway (FirstRead), and once a webhook since the read is in status every
    later one changes nothing until the next read. An integration the index does not hold is urgent (unknown)."""
    if integration is None:
        return True
    last_read = integration.status.last_read_time
    if last_read is None:
        return False
    webhook = integration.status.webhook
    return webhook is None or webhook.last_event_time is None or webhook.last_event_time < last_read


def split(
    pending: Mapping[tuple[str, str], Pending], is_urgent: Callable[[tuple[str, str]], bool], limit: int
) -> tuple[dict[tuple[str, str], Pending], dict[tuple[str, str], Pending]]:
    """(what this flush writes, what waits): everything when at most `limit` are pending; otherwise every urgent
    one, and the oldest others up to `limit` in all."""
    if len(pending) <= limit:
        return dict(pending), {}
    take: dict[tuple[str, str], Pending] = {}
    others: list[tuple[tuple[str, str], Pending]] = []
    for key, item in pending.items():
        if is_urgent(key):
            take[key] = item
        else:
            others.append((key, item))
    others.sort(key=lambda pair: pair[1].since)
    room = max(0, limit - len(take))
    take.update(others[:room])
    return take, dict(others[room:])


class Heartbeat:
    """This replica's part of the webhook coverage (core/webhook_coverage.py): one Lease per environment whose
    app's deliveries reach this gateway, renewed after flushes that wrote everything."""

    def __init__(self, kube: Kube, namespace: str, environments: Sequence[Environment], holder: str) -> None:
        self.kube = kube
        self.namespace = namespace
        self.holder = holder
        self._restarted = dict.fromkeys(environments, True)
        self._lost: dict[Environment, datetime | None] = dict.fromkeys(environments)
        self._next = 0.0

    def lost(self, at: datetime) -> None:
        """A delivery was refused or could not be read: coverage restarts at `at` (every environment's, since
        a refused delivery names none)."""
        for environment, held in self._lost.items():
            self._lost[environment] = at if held is None else max(held, at)

    async def beat(self) -> None:
        """Renew every BEAT_SECONDS, and at once when a lost delivery is to be recorded."""
        if time.monotonic() < self._next and not any(self._lost.values()):
            return
        self._next = time.monotonic() + webhook_coverage.BEAT_SECONDS
        for environment, restarted in self._restarted.items():
            lost_at = self._lost[environment]
            try:
                await webhook_coverage.renew(
                    self.kube, self.namespace, environment, datetime.now(UTC),
                    restarted=restarted, lost_at=lost_at, holder=self.holder,
                )  # fmt: skip
            except Exception as exc:  # a 409 (another replica beat first) or an outage: the next beat retries
                why = f"HTTP {exc.status}" if isinstance(exc, ApiException) else type(exc).__name__
                log.warning("cannot renew webhook coverage for %s (%s)", environment, why)
                self._next = 0.0
                continue
            self._restarted[environment] = False
            if self._lost[environment] == lost_at:
                self._lost[environment] = None


class StatusRecorder:
    """Pending counts per integration, flushed as coalesced optimistic-concurrency status patches."""

    def __init__(
        self,
        kube: Kube,
        index: RealmIndex,
        metrics: GatewayMetrics,
        flush_seconds: float,
        heartbeat: Heartbeat | None = None,
        max_writes: int = FLUSH_WRITES,
    ) -> None:
        self.kube = kube
        self.index = index
        self.metrics = metrics
        self.flush_seconds = flush_seconds
        self.heartbeat = heartbeat
        self.max_writes = max_writes
        self.pending: dict[tuple[str, str], Pending] = {}
        self._lock = asyncio.Lock()

    def record(self, integration: Integration, count: int, when: datetime) -> None:
        key = (integration.namespace, integration.name)
        cur = self.pending.get(key)
        if cur is None or cur.uid != integration.uid:
            self.pending[key] = Pending(integration.uid, count, when)
        else:
            cur.count += count
            cur.last_event_time = max(cur.last_event_time, when)

    def _requeue(self, key: tuple[str, str], item: Pending) -> None:
        cur = self.pending.get(key)
        if cur is None:
            self.pending[key] = item
        elif cur.uid == item.uid:
            cur.count += item.count
            cur.last_event_time = max(cur.last_event_time, item.last_event_time)
            cur.since = min(cur.since, item.since)

    async def run(self) -> None:
        """Flush, and vouch for the coverage only after a flush that wrote every count it took."""
        while True:
            # before the realm index is synced, an event may find no integration: not yet vouched for
            if await self.flush() and self.heartbeat is not None and self.index.synced:
                await self.heartbeat.beat()
            await asyncio.sleep(self.flush_seconds)

    async def flush(self, everything: bool = False) -> bool:
        """Write what is pending (`split`: a big backlog writes the urgent counts and the oldest others; at exit,
        `everything`); what cannot be written now stays pending for the next flush. True when everything taken
        was written: what waits then changes no night's decision, so the heartbeat may vouch for it."""
        async with self._lock:
            limit = len(self.pending) if everything else self.max_writes
            batch, self.pending = split(self.pending, lambda key: urgent(self.index.get(*key)), limit)
            if not batch:
                return True
            sem = asyncio.Semaphore(_PATCH_CONCURRENCY)
            failed: list[bool] = []

            async def one(key: tuple[str, str], item: Pending) -> None:
                async with sem:
                    if not await self._write(key, item):
                        self._requeue(key, item)
                        failed.append(True)

            await asyncio.gather(*(one(k, v) for k, v in batch.items()))
            return not failed

    async def _write(self, key: tuple[str, str], item: Pending) -> bool:
        """Fold `item` into the integration's status.webhook. False = try again at the next flush."""
        namespace, name = key
        cached = self.index.get(namespace, name)
        try:
            for attempt in range(_MAX_PATCH_ATTEMPTS):
                current = (
                    cached
                    if attempt == 0 and cached is not None and cached.resource_version
                    else await self._read(namespace, name)
                )
                if current.uid != item.uid:
                    self.metrics.webhook_status_patches.labels("gone").inc()
                    return True  # recreated under the same name: the events were for the old one
                if await self._patch(namespace, name, current, item):
                    self.metrics.webhook_status_patches.labels("ok").inc()
                    return True
                self.metrics.webhook_status_patches.labels("conflict").inc()
        except _Settled as settled:
            return settled.done
        log.warning("webhook status of %s/%s kept changing under us; retrying at the next flush", namespace, name)
        return False

    async def _read(self, namespace: str, name: str) -> Integration:
        try:
            return Integration.from_object(await self.kube.get_integration_object(namespace, name))
        except Exception as exc:
            raise self._settled(f"cannot read {namespace}/{name} for its webhook status", exc) from None

    async def _patch(self, namespace: str, name: str, current: Integration, item: Pending) -> bool:
        """Write the folded counts on `current`'s resourceVersion; False when someone wrote since (409)."""
        webhook = current.status.webhook
        last = item.last_event_time
        if webhook is not None and webhook.last_event_time is not None:
            last = max(last, webhook.last_event_time)
        count = (webhook.events_since_last_sync if webhook is not None else 0) + item.count
        try:
            await self.kube.patch_status(
                namespace,
                name,
                {"webhook": {"lastEventTime": rfc3339(last), "eventsSinceLastSync": count}},
                resource_version=current.resource_version,
            )
        except Exception as exc:
            if isinstance(exc, ApiException) and exc.status == 409:
                return False
            raise self._settled(f"cannot patch {namespace}/{name} webhook status", exc) from None
        return True

    def _settled(self, failure: str, exc: Exception) -> _Settled:
        """A failed read or write ends this write: 404 means the integration is gone (nothing left to
        do), anything else is logged and counted and the counts stay pending."""
        if isinstance(exc, ApiException) and exc.status == 404:
            self.metrics.webhook_status_patches.labels("gone").inc()
            return _Settled(True)
        why = f"HTTP {exc.status}" if isinstance(exc, ApiException) else type(exc).__name__
        log.warning("%s: %s", failure, why)
        self.metrics.webhook_status_patches.labels("failed").inc()
        return _Settled(False)


class _Settled(Exception):
    """The write of one integration's counts is over: `done` True (written or moot) or False (retry later)."""

    def __init__(self, done: bool) -> None:
        super().__init__()
        self.done = done


class WebhookReceiver:
    def __init__(
        self,
        verifier_tokens: Mapping[Environment, str],
        index: RealmIndex,
        recorder: StatusRecorder,
        metrics: GatewayMetrics,
        seen: SeenIds | None = None,
    ) -> None:
        # Intuit environment → its app's verifier token. Both apps may point their webhooks here: the token
        # that verifies tells whose delivery it is, and its events reach only that environment's integrations.
        self._tokens = {environment: token for environment, token in verifier_tokens.items() if token}
        self.index = index
        self.recorder = recorder
        self.metrics = metrics
        self.seen = seen or SeenIds()
        self._unknown_logged = SeenIds(capacity=1000, ttl=600)

    def _lost(self) -> None:
        """Events that may be lost: the next night of every integration reads QuickBooks (sync/gate.py)."""
        if self.recorder.heartbeat is not None:
            self.recorder.heartbeat.lost(datetime.now(UTC))

    def _answer(self, result: str, status: int, text: str) -> web.Response:
        self.metrics.webhook_requests.labels(result).inc()
        return web.Response(status=status, text=text + "\n", content_type="text/plain")

    async def _refuse(self, request: web.Request, status: int, text: str) -> web.StreamResponse:
        """Answer, then close the connection once the answer is out, rather than reading and discarding the
        rest of the body (aiohttp's default for keep-alive, which would swallow whatever a client sends)."""
        response = web.Response(status=status, text=text + "\n", headers={"Connection": "close"})
        await response.prepare(request)
        await response.write_eof()
        request.protocol.force_close()  # the transport flushes the answer before it closes
        return response

    async def _too_large(self, request: web.Request) -> web.StreamResponse:
        self.metrics.webhook_requests.labels("too_large").inc()
        return await self._refuse(request, 413, "payload too large")

    async def handle(self, request: web.Request) -> web.StreamResponse:
        length = request.content_length
        if length is not None and length > MAX_BODY_BYTES:
            log.warning("webhook body of %d bytes refused (limit %d)", length, MAX_BODY_BYTES)
            return await self._too_large(request)
        try:
            async with asyncio.timeout(BODY_READ_SECONDS):
                body = await request.read()  # the app's client_max_size enforces the limit while reading
        except web.HTTPRequestEntityTooLarge:
            log.warning("webhook body over %d bytes refused while reading", MAX_BODY_BYTES)
            return await self._too_large(request)
        except TimeoutError:
            log.warning("webhook body not complete after %.0f s: answered 408 and closed", BODY_READ_SECONDS)
            return await self._refuse(request, 408, "request body too slow")
        header = request.headers.get("intuit-signature")
        verified = [env for env, token in self._tokens.items() if signing.verify_webhook(token, body, header)]
        if not verified:
            log.warning("webhook with a missing or wrong intuit-signature refused (%d bytes)", len(body))
            self._lost()  # it may be Intuit's, signed with a verifier token we do not have
            return self._answer("bad_signature", 403, "bad signature")
        try:
            delivery = parse_delivery(body)
        except PayloadError as exc:
            # Verified, so it is Intuit's: answer 200 or Intuit retries (and holds later events) forever.
            log.error("verified webhook body could not be parsed, acknowledged anyway: %s", exc)
            self._lost()
            return self._answer("bad_payload", 200, "ok")
        result = self.process(delivery, verified[0] if len(verified) == 1 else None)
        return self._answer(result, 200, "ok")

    def process(self, delivery: Delivery, environment: Environment | None = None) -> str:
        """Record a verified delivery in memory and return its metrics result. `environment`: the Intuit
        environment whose app signed it (None: either), so a realm id never crosses environments."""
        for problem in delivery.problems[:5]:
            log.error("verified %s webhook has an unparseable event, skipped: %s", delivery.source_format, problem)
        if delivery.problems:
            self._lost()
        if not delivery.events:
            return "bad_payload" if delivery.problems else "accepted"
        known = 0
        now = datetime.now(UTC)
        for event in delivery.events:
            integrations = [i for i in self.index.by_realm(event.realm_id) if environment in (None, i.spec.environment)]
            if integrations:
                known += 1
            elif self._unknown_logged.add(event.realm_id):
                log.info("webhook for realm %s, which no watched integration is connected to", event.realm_id)
            if not self.seen.add(event.key):
                self.metrics.webhook_duplicates.inc()
                continue
            self.metrics.webhook_events.labels(event.entity, event.operation.value).inc()
            if event.entity in SYNC_ENTITIES:
                for integration in integrations:
                    self.recorder.record(integration, 1, now)  # status.webhook.lastEventTime: when it arrived
            if len(integrations) > 1:
                log.warning(
                    "realm %s is claimed by %d integrations: %s",
                    event.realm_id,
                    len(integrations),
                    ", ".join(f"{i.namespace}/{i.name}" for i in integrations),
                )
        if known == 0:
            return "unknown_realm"
        return "accepted"
