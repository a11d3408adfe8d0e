"""Webhook coverage: since when the gateways are sure every Intuit webhook delivery reached the integrations' status.

A webhook-gated night (docs/sync.md "Webhook-gated nights") skips QuickBooks only when no Payment or Invoice
webhook arrived since the last read. That silence means "nothing changed" only if no delivery could have been
lost in between, so the gateways keep one Lease per Intuit environment in the release namespace,
`qbo-webhooks-<environment>`:

- `spec.acquireTime` is `since`: the gateways vouch for every delivery after it. A replica that starts moves it
  to its start (a replica that crashed may have held counts it never wrote); so does a delivery the gateway
  refused or could not read (a bad signature may be Intuit's with a rotated verifier token), and a gap in
  the heartbeat (no gateway was answering: Intuit gives up on a delivery after its last retry).
- `spec.renewTime` is the last heartbeat, written only after a flush that wrote every count it took (every count
  that can change a night: gateway/webhooks.py `urgent`), and
  `spec.leaseDurationSeconds` how stale it may get before the sync stops trusting it (`max_gap`).

The sync reads it (get, by name) and reads QuickBooks whenever `since` is later than its last read or the
heartbeat is stale; a Lease it cannot read means "not sure", which means read."""

from __future__ import annotations

import logging
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from qbo_operator.core import names
from qbo_operator.core.kube import ApiException, Kube
from qbo_operator.core.models import parse_rfc3339

log = logging.getLogger(__name__)

BEAT_SECONDS = 30.0  # how often a gateway replica renews the heartbeat
MAX_GAP_SECONDS = 120  # a heartbeat older than this means no gateway is recording (the sync reads)


def lease_name(environment: str) -> str:
    return f"qbo-webhooks-{environment}"


@dataclass(frozen=True)
class Coverage:
    """Every delivery after `since` is in status, as of `renewed`; trusted while `renewed` is within `max_gap`."""

    since: datetime
    renewed: datetime
    max_gap: timedelta
    holder: str = ""

    def fresh(self, now: datetime) -> bool:
        return now - self.renewed <= self.max_gap


def beat(
    previous: Coverage | None, now: datetime, *, restarted: bool, lost_at: datetime | None, holder: str
) -> Coverage:
    """The coverage after one replica's heartbeat at `now` (pure).

    `restarted`: this replica's first beat; `lost_at`: the latest delivery it refused or could not read since
    its last beat. Coverage starts over at `now` when there was none, it went stale, or this replica just
    started; a lost delivery moves `since` to when it was lost (never back)."""
    gap = timedelta(seconds=MAX_GAP_SECONDS)
    since = now if previous is None or restarted or not previous.fresh(now) else previous.since
    if lost_at is not None:
        since = max(since, lost_at)
    return Coverage(since=since, renewed=now, max_gap=gap, holder=holder)


def _micro(at: datetime) -> str:
    """A Lease's MicroTime."""
    return at.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def manifest(namespace: str, environment: str, coverage: Coverage) -> dict[str, Any]:
    return {
        "apiVersion": "coordination.k8s.io/v1",
        "kind": "Lease",
        "metadata": {
            "name": lease_name(environment),
            "namespace": namespace,
            "labels": {names.MANAGED_BY_LABEL: names.MANAGED_BY},
        },
        "spec": {
            "holderIdentity": coverage.holder,
            "acquireTime": _micro(coverage.since),
            "renewTime": _micro(coverage.renewed),
            "leaseDurationSeconds": int(coverage.max_gap.total_seconds()),
        },
    }


def from_lease(lease: Any) -> Coverage | None:
    """The coverage a Lease (a client object or a dict) records; None when it records none."""
    raw = lease.to_dict() if hasattr(lease, "to_dict") else lease
    spec = (raw or {}).get("spec") or {}
    since = spec.get("acquire_time", spec.get("acquireTime"))
    renewed = spec.get("renew_time", spec.get("renewTime"))
    seconds = spec.get("lease_duration_seconds", spec.get("leaseDurationSeconds"))
    if since is None or renewed is None or not seconds:
        return None

    def at(value: Any) -> datetime:
        return value.astimezone(UTC) if isinstance(value, datetime) else parse_rfc3339(str(value))

    holder = spec.get("holder_identity", spec.get("holderIdentity")) or ""
    return Coverage(since=at(since), renewed=at(renewed), max_gap=timedelta(seconds=int(seconds)), holder=holder)


async def read(kube: Kube, namespace: str, environment: str) -> Coverage | None:
    """The environment's coverage; None when there is none or it cannot be read (the caller then reads QBO)."""
    try:
        lease = await kube.read_lease(namespace, lease_name(environment))
    except Exception as exc:  # any failure means "not sure": the sync reads QuickBooks
        why = f"HTTP {exc.status}" if isinstance(exc, ApiException) else type(exc).__name__
        log.warning(
            "cannot read webhook coverage %s/%s (%s): reading QuickBooks", namespace, lease_name(environment), why
        )
        return None
    return None if lease is None else from_lease(lease)


async def renew(
    kube: Kube,
    namespace: str,
    environment: str,
    now: datetime,
    *,
    restarted: bool,
    lost_at: datetime | None,
    holder: str,
) -> Coverage:
    """Write one heartbeat under the Lease's resourceVersion (a replica racing us wins; we retry next beat)."""
    lease = await kube.read_lease(namespace, lease_name(environment))
    previous = None if lease is None else from_lease(lease)
    coverage = beat(previous, now, restarted=restarted, lost_at=lost_at, holder=holder)
    body = manifest(namespace, environment, coverage)
    if lease is None:
        await kube.create_lease(namespace, body)
    else:
        body["metadata"]["resourceVersion"] = lease.metadata.resource_version
        await kube.replace_lease(namespace, lease_name(environment), body)
    return coverage
