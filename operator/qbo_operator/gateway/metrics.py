"""The gateway's Prometheus metrics (DESIGN §7), in a registry of their own per application.

Label values come from fixed sets only (results, canonical entity names, operation words, route
names), never from raw paths or payload text, so no label can carry a secret or explode cardinality."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Histogram, generate_latest
from prometheus_client.exposition import CONTENT_TYPE_LATEST

from qbo_operator.gateway.webhook_models import Operation

WEBHOOK_RESULTS = ("accepted", "bad_signature", "bad_payload", "unknown_realm", "too_large")
CALLBACK_RESULTS = (
    "connected",
    "denied",
    "intuit_error",
    "bad_state",
    "expired_state",
    "cookie_mismatch",
    "replayed",
    "not_found",
    "duplicate_realm",
    "realm_mismatch",
    "secret_conflict",
    "exchange_failed",
    "write_failed",
)
CONNECT_RESULTS = ("shown", "started", "bad_link", "expired_link", "not_found")

__all__ = ["CONTENT_TYPE_LATEST", "GatewayMetrics"]


class GatewayMetrics:
    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        self.registry = registry or CollectorRegistry()
        self.webhook_requests = Counter(
            "qbo_webhook_requests_total",
            "Webhook deliveries by outcome (a verified delivery is always answered 200).",
            ["result"],
            registry=self.registry,
        )
        self.webhook_events = Counter(
            "qbo_webhook_events_total",
            "New (de-duplicated) webhook events by QBO entity and operation.",
            ["entity", "operation"],
            registry=self.registry,
        )
        self.webhook_duplicates = Counter(
            "qbo_webhook_duplicate_events_total",
            "Webhook events dropped because their id was seen recently (Intuit retries).",
            registry=self.registry,
        )
        self.webhook_status_patches = Counter(
            "qbo_webhook_status_patches_total",
            "Coalesced status.webhook patches by outcome (conflict: another writer won; re-read).",
            ["result"],
            registry=self.registry,
        )
        self.oauth_callbacks = Counter(
            "qbo_oauth_callbacks_total",
            "OAuth callbacks from Intuit by outcome.",
            ["result"],
            registry=self.registry,
        )
        self.connect_requests = Counter(
            "qbo_connect_requests_total",
            "Connect-link page views and Connect button presses by outcome.",
            ["result"],
            registry=self.registry,
        )
        self.request_duration = Histogram(
            "qbo_http_request_duration_seconds",
            "Time to answer an HTTP request, by route name.",
            ["handler"],
            registry=self.registry,
            buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 3.0, 5.0, 10.0),
        )
        # Zero-valued series exist from the start, so rate() and alerts work before the first event.
        for result in WEBHOOK_RESULTS:
            self.webhook_requests.labels(result)
        for result in CALLBACK_RESULTS:
            self.oauth_callbacks.labels(result)
        for result in CONNECT_RESULTS:
            self.connect_requests.labels(result)
        for result in ("ok", "conflict", "gone", "failed"):
            self.webhook_status_patches.labels(result)
        for entity in ("Payment", "Invoice"):
            for op in Operation:
                self.webhook_events.labels(entity, op.value)

    def render(self) -> bytes:
        return generate_latest(self.registry)
