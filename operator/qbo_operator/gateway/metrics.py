"""The gateway's Prometheus metrics (docs/design.md §7), in a registry of their own per application.

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
    "realm_unverified",
    "secret_conflict",
    "not_ready",
    "exchange_failed",
    "write_failed",
)
CONNECT_RESULTS = (
    "shown",
    "started",
    "bad_link",
    "expired_link",
    "not_found",
    "already_connected",
    "cross_site",
    "not_configured",
)
STATUS_PATCH_RESULTS = ("ok", "conflict", "gone", "failed")

__all__ = ["CONTENT_TYPE_LATEST", "GatewayMetrics"]


def _by_result(name: str, documentation: str, results: tuple[str, ...], registry: CollectorRegistry) -> Counter:
    """A counter labelled by `result`, every known result present from the start (at zero), so rate()
    and alerts work before the first event."""
    counter = Counter(name, documentation, ["result"], registry=registry)
    for result in results:
        counter.labels(result)
    return counter


class GatewayMetrics:
    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        self.registry = registry = registry or CollectorRegistry()
        self.webhook_requests = _by_result(
            "qbo_webhook_requests_total",
            "Webhook deliveries by outcome (a verified delivery is always answered 200).",
            WEBHOOK_RESULTS,
            registry,
        )
        self.webhook_events = Counter(
            "qbo_webhook_events_total",
            "New (de-duplicated) webhook events by QBO entity and operation.",
            ["entity", "operation"],
            registry=registry,
        )
        self.webhook_duplicates = Counter(
            "qbo_webhook_duplicate_events_total",
            "Webhook events dropped because their id was seen recently (Intuit retries).",
            registry=registry,
        )
        self.webhook_status_patches = _by_result(
            "qbo_webhook_status_patches_total",
            "Coalesced status.webhook patches by outcome (conflict: another writer won; re-read).",
            STATUS_PATCH_RESULTS,
            registry,
        )
        self.oauth_callbacks = _by_result(
            "qbo_oauth_callbacks_total", "OAuth callbacks from Intuit by outcome.", CALLBACK_RESULTS, registry
        )
        self.connect_requests = _by_result(
            "qbo_connect_requests_total",
            "Connect-link page views and Connect button presses by outcome.",
            CONNECT_RESULTS,
            registry,
        )
        self.request_duration = Histogram(
            "qbo_http_request_duration_seconds",
            "Time to answer an HTTP request, by route name.",
            ["handler"],
            registry=registry,
            buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 3.0, 5.0, 10.0),
        )
        for entity in ("Payment", "Invoice"):
            for op in Operation:
                self.webhook_events.labels(entity, op.value)

    def render(self) -> bytes:
        return generate_latest(self.registry)
