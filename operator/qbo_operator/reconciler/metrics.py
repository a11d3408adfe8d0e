"""The operator's Prometheus metrics (docs/design.md §7).

Per-integration series come from the operator's in-memory index of the CRs at scrape time (the cert-manager /
crate-operator pattern): a deleted integration leaves the index, so its series vanish with no bookkeeping. At
10,000 integrations that is 90,000 series: prometheus-client parsed and formatted them in about 4 s a scrape, on
the event loop. So each integration is parsed once per state of its CR (`Seen`, cached by snapshot) and its
series are written as text by `render_integrations`; counters, the histogram and the per-app families stay
ordinary prometheus-client instruments, and `OperatorMetrics.exposition` serves both. The API-write counter exists
so tests and benchmarks can prove that an idle operator writes nothing."""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, Protocol

from prometheus_client import (
    GC_COLLECTOR,
    PLATFORM_COLLECTOR,
    PROCESS_COLLECTOR,
    CollectorRegistry,
    Counter,
    Histogram,
    generate_latest,
)
from prometheus_client.core import GaugeMetricFamily, Metric
from prometheus_client.registry import Collector
from prometheus_client.utils import floatToGoString
from pydantic import ValidationError

from qbo_operator.core.config import ENVIRONMENTS, Environment
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


def _num(value: float) -> str:
    """A sample value as prometheus-client writes it."""
    return str(floatToGoString(value))  # type: ignore[no-untyped-call]


def _label(value: str) -> str:
    """A label value in the text exposition format."""
    return value.replace("\\", "\\\\").replace("\n", "\\n").replace('"', '\\"')


@dataclass(frozen=True, slots=True)
class Seen:
    """One integration as the metrics read it, parsed once per state of its CR: its label text, phase and
    environment, one value per `_PER_INTEGRATION` gauge (None: no sample, e.g. a sync that never ran), its metered
    reads (month, count) and its app-credentials evidence (when, refused) for the per-app families."""

    key: str  # namespace="…",name="…"
    info: str  # the qbo_integration_info labels
    phase: str
    environment: Environment
    values: tuple[float | None, ...]
    metered: tuple[str, int] | None
    evidence: tuple[datetime, bool] | None

    def metered_in(self, month: str) -> int:
        return self.metered[1] if self.metered is not None and self.metered[0] == month else 0


def seen(integ: Integration, realm_ids: bool) -> Seen:
    """`realm_id` is empty (to Prometheus: absent) unless `realm_ids`: /metrics is unauthenticated, and a realm id
    is what a forged Connect callback needs (issue 17, finding 8; `qbo-operator run --metrics-realm-ids`)."""
    status = integ.status
    phase = status.phase.value if status.phase else ""
    realm = (status.realm_id or "") if realm_ids else ""
    key = f'namespace="{_label(integ.namespace)}",name="{_label(integ.name)}"'
    info = f'{key},company_id="{_label(integ.spec.company_id)}",realm_id="{_label(realm)}",phase="{phase}"'
    last = status.last_sync
    ran = last if last is not None and last.result is not None else None  # a sync that never ran has no value
    values: dict[str, float | None] = {
        "connected": 1 if status.phase == Phase.CONNECTED else 0,
        "suspended": 1 if integ.spec.suspend else 0,
        "success": None if ran is None else 0 if ran.result == SyncResult.FAILED else 1,
        "last_success": _ts(status.last_successful_sync_time),
        "payments": None if ran is None else ran.payments_synced,
        "rejected": None if ran is None else ran.records_rejected,
        "kept": status.rejected.count if status.rejected is not None else None,
        "expiry": _ts(status.refresh_token_expires_at),
    }
    metered = (status.metered_reads.month, status.metered_reads.requests) if status.metered_reads else None
    evidence: tuple[datetime, bool] | None = None
    if (at := _refused_run(integ)) is not None:
        evidence = (at, True)
    elif last is not None and last.finished_at is not None and last.result in _WORKED:
        evidence = (last.finished_at, False)
    return Seen(key, info, phase, integ.spec.environment, tuple(values.get(a) for a, _, _ in _PER_INTEGRATION),
                metered, evidence)  # fmt: skip


def render_integrations(seen_all: Sequence[Seen], now: datetime | None = None) -> str:
    """The per-integration families and `qbo_integrations{phase}` in the text exposition format."""
    month = MeteredReads.month_of(now or datetime.now(UTC))
    out: list[str] = []

    def family(name: str, help_text: str) -> None:
        out.append(f"# HELP {name} {help_text}\n# TYPE {name} gauge\n")

    counts = dict.fromkeys((p.value for p in Phase), 0)
    for one in seen_all:
        if one.phase:
            counts[one.phase] += 1
    family("qbo_integrations", "Integrations by phase.")
    out.extend(f'qbo_integrations{{phase="{phase}"}} {_num(count)}\n' for phase, count in counts.items())
    family("qbo_integration_info", "One series per integration, carrying its company, realm and phase.")
    out.extend(f"qbo_integration_info{{{one.info}}} 1.0\n" for one in seen_all)
    for i, (attr, name, help_text) in enumerate(_PER_INTEGRATION):
        family(name, help_text)
        if attr == "metered":
            out.extend(f"{name}{{{one.key}}} {_num(one.metered_in(month))}\n" for one in seen_all)
            continue
        out.extend(f"{name}{{{one.key}}} {_num(value)}\n" for one in seen_all if (value := one.values[i]) is not None)
    return "".join(out)


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


def app_credentials_family(seen_all: Iterable[Seen], own: AppCredentialsOutcomes) -> GaugeMetricFamily:
    """`qbo_app_credentials_rejected{environment}`: the newest evidence of each environment's Intuit app
    wins, whoever refreshed: the operator's own refreshes and each integration's last run (refused: Synced=False
    AppCredentialsInvalid; worked: Succeeded or PartiallySucceeded). 1 while it is a refusal, 0 after a newer
    success or with no evidence."""
    evidence: dict[str, list[tuple[datetime, bool]]] = {e: [] for e in ENVIRONMENTS}
    for one in seen_all:
        if one.evidence is not None:
            evidence[one.environment].append(one.evidence)
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


def read_budget_families(seen_all: Iterable[Seen], budget: int, now: datetime | None = None) -> list[GaugeMetricFamily]:
    """Per app (an Intuit app per environment): this month's metered calls of its integrations, and the budget.
    Intuit meters per app, so the budget is per environment, not per company."""
    month = MeteredReads.month_of(now or datetime.now(UTC))
    spent = dict.fromkeys(ENVIRONMENTS, 0)
    for one in seen_all:
        spent[one.environment] += one.metered_in(month)
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


class Versioned(Protocol):
    """What the source yields per integration (reconciler/views.Snapshot): the same object while the CR is
    unchanged, so a scrape parses only the integrations that changed since the last one."""

    def object(self) -> dict[str, Any]: ...


class IntegrationSeries(Collector):
    """The per-integration view of the CR index, refreshed once per scrape (`refresh`); as a collector it yields
    the per-app families, and `render_integrations` writes the per-integration ones."""

    def __init__(
        self,
        source: Callable[[], Iterable[Versioned]],
        realm_ids: bool = False,
        app_credentials: AppCredentialsOutcomes | None = None,
        read_budget: int = READ_BUDGET,
    ) -> None:
        self._source = source
        self._realm_ids = realm_ids
        self._app_credentials = app_credentials or AppCredentialsOutcomes()
        self._read_budget = read_budget
        self._cache: dict[Versioned, Seen | None] = {}
        self.current: list[Seen] = []

    def refresh(self) -> list[Seen]:
        cache: dict[Versioned, Seen | None] = {}
        for version in self._source():
            cache[version] = self._cache[version] if version in self._cache else self._seen(version.object())
        self._cache = cache
        self.current = [one for one in cache.values() if one is not None]
        return self.current

    def _seen(self, body: Mapping[str, Any]) -> Seen | None:
        if (body.get("metadata") or {}).get("deletionTimestamp"):
            return None
        try:
            return seen(Integration.from_object(dict(body)), self._realm_ids)
        except ValidationError:
            return None

    def collect(self) -> Iterator[Metric]:
        yield app_credentials_family(self.current, self._app_credentials)
        yield from read_budget_families(self.current, self._read_budget)

    def describe(self) -> Iterator[Metric]:
        return iter(())  # not known before the first scrape; keeps registration from calling collect()


class OperatorMetrics:
    """One registry per operator process: process metrics, the per-integration series, counters."""

    def __init__(
        self, source: Callable[[], Iterable[Versioned]], realm_ids: bool = False, read_budget: int = READ_BUDGET
    ) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        for collector in (PROCESS_COLLECTOR, PLATFORM_COLLECTOR, GC_COLLECTOR):
            self.registry.register(collector)
        self.app_credentials = AppCredentialsOutcomes()
        self.integrations = IntegrationSeries(source, realm_ids, self.app_credentials, read_budget)
        self.registry.register(self.integrations)
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

    def exposition(self) -> bytes:
        """/metrics: the registry, then the per-integration series (one refresh of the index for both)."""
        current = self.integrations.refresh()
        return generate_latest(self.registry) + render_integrations(current).encode()
