"""Webhook-gated nights: whether tonight's run reads QuickBooks at all (docs/sync.md "Webhook-gated nights").

Intuit meters Accounting reads per app, not per company (docs/qbo.md), and a company where nothing happened
still costs a CDC call a night. QuickBooks already says by webhook which companies had a Payment or Invoice
change, so a run skips every metered call when it can be sure nothing changed since its last read, and reads
in every other case. Skipping never moves the watermark: the next read covers everything since the last one,
so a wrong "nothing changed" delays a change to the next read (at most `full_read_every_days`), never loses it.

`decide` is pure; the rules are checked in this order, the first that applies wins."""

from __future__ import annotations

import enum
from dataclasses import dataclass
from datetime import datetime, timedelta

from qbo_operator.core.webhook_coverage import Coverage

# A nightly schedule drifts by minutes (`H` spreads, Job start-up): a read due "every 7 days" is due from
# 7 days less this, so it does not slip to the 8th night.
DUE_SLACK = timedelta(hours=1)


class Gate(enum.StrEnum):
    """Why a run read QuickBooks (every value but NO_WEBHOOKS) or skipped it (`status.lastSync.gate`)."""

    REQUESTED = "Requested"  # a person asked for this run (sync-requested-at)
    GATING_OFF = "GatingOff"  # fullReadEveryDays 0: every night reads
    FIRST_READ = "FirstRead"  # no read since this connection
    REJECTED = "RetryRejected"  # payments Green Check refused are sent again every run
    FULL_READ_DUE = "FullReadDue"  # the last read is fullReadEveryDays old
    WEBHOOKS = "Webhooks"  # a Payment or Invoice webhook since the last read
    UNCONFIRMED = "WebhooksUnconfirmed"  # no webhook ever seen for this company since it connected
    NO_COVERAGE = "CoverageUnknown"  # the gateways' coverage Lease is missing or unreadable
    GATEWAY_DOWN = "GatewayDown"  # no gateway heartbeat lately: deliveries may be failing now
    MAY_HAVE_LOST = "WebhooksMayBeLost"  # a gateway restarted, went quiet or refused a delivery since the last read
    NO_WEBHOOKS = "NoWebhooks"  # none of the above: nothing changed, no QuickBooks call


@dataclass(frozen=True)
class Night:
    """What `decide` reads: the integration's status and spec, the coverage, the run's trigger and clock."""

    now: datetime
    connected_at: datetime
    last_read: datetime | None  # status.lastReadTime: when the last successful run that read QBO started
    last_webhook: datetime | None  # status.webhook.lastEventTime: the last Payment/Invoice webhook's arrival
    rejected: int  # status.rejected.count
    every_days: int  # spec.fullReadEveryDays, else the operator-wide default
    requested: bool
    coverage: Coverage | None
    margin: timedelta  # changes QBO stamps before it commits them, and clock skew (the settle time)


def decide(n: Night) -> Gate:
    if n.requested:
        return Gate.REQUESTED
    if n.every_days <= 0:
        return Gate.GATING_OFF
    if n.last_read is None or n.last_read < n.connected_at:
        return Gate.FIRST_READ
    if n.rejected:
        return Gate.REJECTED
    if n.now - n.last_read >= timedelta(days=n.every_days) - DUE_SLACK:
        return Gate.FULL_READ_DUE
    since = n.last_read - n.margin  # a webhook this late may be for a change the last read did not see
    if n.last_webhook is not None and n.last_webhook >= since:
        return Gate.WEBHOOKS
    if n.last_webhook is None or n.last_webhook < n.connected_at:
        return Gate.UNCONFIRMED
    if n.coverage is None:
        return Gate.NO_COVERAGE
    if not n.coverage.fresh(n.now):
        return Gate.GATEWAY_DOWN
    if n.coverage.since > since:
        return Gate.MAY_HAVE_LOST
    return Gate.NO_WEBHOOKS


def skip_message(n: Night) -> str:
    """One sentence for status.lastSync.message on a skipped night."""
    assert n.last_read is not None
    due = n.last_read + timedelta(days=n.every_days)
    return (
        f"no Payment or Invoice webhook since the last read at {n.last_read.isoformat()}: no QuickBooks reads "
        f"tonight (the next full read is due by {due.date().isoformat()})"
    )
