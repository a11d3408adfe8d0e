"""The operator's Prometheus metrics (docs/design.md §7).

Per-integration series are computed at scrape time from the operator's in-memory index of the CRs (the
cert-manager / crate-operator pattern): a deleted integration leaves the index, so its series vanish with
no bookkeeping. Counters and the histogram are ordinary prometheus-client instruments on the same
registry. The API-write counter exists so tests and benchmarks can prove that an idle operator writes
nothing."""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator, Mapping
from datetime import UTC, datetime
from typing import Any

from prometheus_client import (
    GC_COLLECTOR,
    PLATFORM_COLLECTOR,
    PROCESS_COLLECTOR,
    CollectorRegistry,
    Counter,
    Histogram,
)
from prometheus_client.core import GaugeMetricFamily, Metric
from prometheus_client.registry import Collector
from pydantic import ValidationError

from qbo_operator.core.config import ENVIRONMENTS
from qbo_operator.core.models import Integration, MeteredReads, Phase, SyncResult
from qbo_operator.core.status import SYNCED, Reason

RECONCILE_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0)
_KEYS = ("namespace", "name")


def _ts(value: datetime | None) -> float | None:
    return value.timestamp() if value is not None else None


_PER_INTEGRATION: tuple[tuple[str, str, str], ...] = (
    # (attribute, metric name, help)
    ("connected", "qbo_integration_connected", "1 if the phase is Connected."),
    ("suspended", "qbo_integration_suspended", "1 if spec.suspend is true."),
    (
        "success",
        "qbo_integration_last_sync_success",
        "1 if the last sync succeeded (records rejected by Green Check included), 0 if it failed.",
    ),
    (
        "last_success",
        "qbo_integration_last_successful_sync_timestamp_seconds",
        "When the last successful sync finished (Unix time).",
    ),
    ("payments", "qbo_integration_last_sync_payments", "Payments delivered by the last sync."),
    ("rejected", "qbo_integration_last_sync_rejected", "Payments Green Check rejected in the last sync."),
    (
        "kept",
        "qbo_integration_rejected_payments",
        "Payments Green Check refused, kept in status.rejected and sent again by every run until accepted.",
    ),
    (
        "expiry",
        "qbo_integration_refresh_token_expiry_timestamp_seconds",
        "When the rolling refresh token expires unless refreshed (Unix time).",
    ),
    (
        "metered",
        "qbo_integration_metered_reads",
        "Metered QuickBooks API calls the sync made this calendar month (UTC; status.meteredReads).",
    ),
)
READ_BUDGET = 500_000  # Intuit's Builder tier: metered Accounting API calls a month per app


def _add_integration(families: dict[str, GaugeMetricFamily], integ: Integration, realm_ids: bool, month: str) -> str:
    """Adds one integration's samples; returns its phase ("" when it has none yet)."""
    status = integ.status
    key = [integ.namespace, integ.name]
    phase = status.phase.value if status.phase else ""
    realm = (status.realm_id or "") if realm_ids else ""
    families["info"].add_metric([*key, integ.spec.company_id, realm, phase], 1)
    families["connected"].add_metric(key, 1 if status.phase == Phase.CONNECTED else 0)
    families["suspended"].add_metric(key, 1 if integ.spec.suspend else 0)
    last = status.last_sync
    if last is not None and last.result is not None:
        families["success"].add_metric(key, 0 if last.result == SyncResult.FAILED else 1)
        families["payments"].add_metric(key, last.payments_synced)
        families["rejected"].add_metric(key, last.records_rejected)
    if status.rejected is not None:
        families["kept"].add_metric(key, status.rejected.count)
    if (ts := _ts(status.last_successful_sync_time)) is not None:
        families["last_success"].add_metric(key, ts)
    if (ts := _ts(status.refresh_token_expires_at)) is not None:
        families["expiry"].add_metric(key, ts)
    families["metered"].add_metric(key, status.metered_reads.in_month(month) if status.metered_reads else 0)
    return phase


def integration_families(
    bodies: Iterable[Mapping[str, Any]], realm_ids: bool = False, now: datetime | None = None
) -> list[GaugeMetricFamily]:
    """The per-integration gauges for the CRs in `bodies` (objects being deleted are left out).

    `realm_id` is empty (to Prometheus: absent) unless `realm_ids`: /metrics is unauthenticated, and a realm id
    is what a forged Connect callback needs (issue 17, finding 8; `qbo-operator run --metrics-realm-ids`)."""
    by_phase = GaugeMetricFamily("qbo_integrations", "Integrations by phase.", labels=["phase"])
    families = {
        "info": GaugeMetricFamily(
            "qbo_integration_info",
            "One series per integration, carrying its company, realm and phase.",
            labels=["namespace", "name", "company_id", "realm_id", "phase"],
        ),
        **{attr: GaugeMetricFamily(name, help_text, labels=_KEYS) for attr, name, help_text in _PER_INTEGRATION},
    }
    counts = dict.fromkeys((p.value for p in Phase), 0)
    month = MeteredReads.month_of(now or datetime.now(UTC))
    for integ in _parsed(bodies):
        if phase := _add_integration(families, integ, realm_ids, month):
            counts[phase] += 1
    for phase, count in counts.items():
        by_phase.add_metric([phase], count)
    return [by_phase, *families.values()]


_EPOCH = datetime.min.replace(tzinfo=UTC)
_WORKED = (SyncResult.SUCCEEDED, SyncResult.PARTIALLY_SUCCEEDED)  # a run that got through Intuit's token endpoint


class AppCredentialsOutcomes:
    """The operator's own token refreshes, per environment: the last outcome (refused for the app's
    credentials or not) and when. Sync Jobs run in other pods; their outcomes arrive as Synced conditions."""

    def __init__(self) -> None:
        self._last: dict[str, tuple[datetime, bool]] = {}

    def record(self, environment: str, rejected: bool, at: datetime) -> None:
        self._last[environment] = (at, rejected)

    def last(self, environment: str) -> tuple[datetime, bool] | None:
        return self._last.get(environment)


def _refused_run(integ: Integration) -> datetime | None:
    """When the integration's last sync run was refused for the app's credentials (None: it was not)."""
    synced = integ.status.condition(SYNCED)
    if synced is None or synced.status != "False" or synced.reason != Reason.APP_CREDENTIALS_INVALID:
        return None
    last = integ.status.last_sync
    return (last.finished_at if last is not None else None) or synced.last_transition_time or _EPOCH


def app_credentials_family(integrations: Iterable[Integration], own: AppCredentialsOutcomes) -> GaugeMetricFamily:
    """`qbo_app_credentials_rejected{environment}`: the newest evidence of each environment's Intuit app
    wins, whoever refreshed: the operator's own refreshes and each integration's last run (refused: Synced=False
    AppCredentialsInvalid; worked: Succeeded or PartiallySucceeded). 1 while it is a refusal, 0 after a newer
    success or with no evidence."""
    evidence: dict[str, list[tuple[datetime, bool]]] = {e: [] for e in ENVIRONMENTS}
    for integ in integrations:
        last = integ.status.last_sync
        if (at := _refused_run(integ)) is not None:
            evidence[integ.spec.environment].append((at, True))
        elif last is not None and last.finished_at is not None and last.result in _WORKED:
            evidence[integ.spec.environment].append((last.finished_at, False))
    family = GaugeMetricFamily(
        "qbo_app_credentials_rejected",
        "1 while Intuit refuses the operator's own app credentials for this environment (invalid_client or "
        "unauthorized_client), by the newest refresh the operator or a sync run made; 0 otherwise.",
        labels=["environment"],
    )
    for environment, seen in evidence.items():
        if (mine := own.last(environment)) is not None:
            seen.append(mine)
        newest = max(seen, key=lambda e: (e[0], not e[1]), default=(_EPOCH, False))
        family.add_metric([environment], 1 if newest[1] else 0)
    return family


def read_budget_families(
    integrations: Iterable[Integration], budget: int, now: datetime | None = None
) -> list[GaugeMetricFamily]:
    """Per app (an Intuit app per environment): this month's metered calls of its integrations, and the budget.
    Intuit meters per app, so the budget is per environment, not per company."""
    month = MeteredReads.month_of(now or datetime.now(UTC))
    spent = dict.fromkeys(ENVIRONMENTS, 0)
    for integ in integrations:
        if integ.status.metered_reads is not None:
            spent[integ.spec.environment] += integ.status.metered_reads.in_month(month)
    reads = GaugeMetricFamily(
        "qbo_app_metered_reads",
        "Metered QuickBooks API calls this calendar month (UTC) by all integrations of one Intuit app.",
        labels=["environment"],
    )
    limit = GaugeMetricFamily(
        "qbo_app_read_budget",
        "The monthly metered-call budget of one Intuit app (--read-budget).",
        labels=["environment"],
    )
    for environment in ENVIRONMENTS:
        reads.add_metric([environment], spent[environment])
        limit.add_metric([environment], budget)
    return [reads, limit]


def _parsed(bodies: Iterable[Mapping[str, Any]]) -> Iterator[Integration]:
    for body in bodies:
        if (body.get("metadata") or {}).get("deletionTimestamp"):
            continue
        try:
            yield Integration.from_object(dict(body))
        except ValidationError:
            continue


class IntegrationCollector(Collector):
    """Reads the CR index at every scrape."""

    def __init__(
        self,
        source: Callable[[], Iterable[Mapping[str, Any]]],
        realm_ids: bool = False,
        app_credentials: AppCredentialsOutcomes | None = None,
        read_budget: int = READ_BUDGET,
    ) -> None:
        self._source = source
        self._realm_ids = realm_ids
        self._app_credentials = app_credentials or AppCredentialsOutcomes()
        self._read_budget = read_budget

    def collect(self) -> Iterator[Metric]:
        bodies = list(self._source())
        yield from integration_families(bodies, self._realm_ids)
        integrations = list(_parsed(bodies))
        yield app_credentials_family(integrations, self._app_credentials)
        yield from read_budget_families(integrations, self._read_budget)

    def describe(self) -> Iterator[Metric]:
        return iter(())  # not known before the first scrape; keeps registration from calling collect()


class OperatorMetrics:
    """One registry per operator process: process metrics, the per-integration collector, counters."""

    def __init__(
        self, source: Callable[[], Iterable[Mapping[str, Any]]], realm_ids: bool = False, read_budget: int = READ_BUDGET
    ) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        for collector in (PROCESS_COLLECTOR, PLATFORM_COLLECTOR, GC_COLLECTOR):
            self.registry.register(collector)
        self.app_credentials = AppCredentialsOutcomes()
        self.registry.register(IntegrationCollector(source, realm_ids, self.app_credentials, read_budget))
        self.reconcile_total = Counter(
            "qbo_reconcile_total",
            "Reconciles of an integration, by result (success or error).",
            ["result"],
            registry=self.registry,
        )
        self.reconcile_duration = Histogram(
            "qbo_reconcile_duration_seconds",
            "How long one reconcile of an integration took.",
            buckets=RECONCILE_BUCKETS,
            registry=self.registry,
        )
        self.api_writes = Counter(
            "qbo_operator_api_writes_total",
            "Writes the operator's own code sent to the API server, by object kind and verb.",
            ["kind", "verb"],
            registry=self.registry,
        )
        for result in ("success", "error"):
            self.reconcile_total.labels(result=result)
