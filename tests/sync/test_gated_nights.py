"""Webhook-gated nights through the real `qbo-operator sync` against the control plane and the sandboxes.

The webhook inputs are written as the gateway writes them (status.webhook, the coverage Lease in the release
namespace); `tests/gateway/test_webhook_coverage.py` shows the gateway writing them, and the month of
bookkeeping runs both together. Each night here changes one input and checks the decision (status.lastSync.gate),
the metered QuickBooks calls the sandbox counted, and that Green Check equals the books after every read."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from qbo_operator.core import webhook_coverage
from qbo_operator.core.models import rfc3339
from tests.support.kube import apply, get
from tests.support.sync import E2E, assert_exact, sandboxes, utc

pytestmark = pytest.mark.e2e

ENV = {"QBO_SYNC_SETTLE_SECONDS": "0"}  # no margin, so "a webhook before the last read" is seconds old


def coverage(e: E2E, since: datetime, renewed: datetime | None = None) -> None:
    """The coverage Lease as the gateways write it, in the run's release namespace (the test's)."""
    vouched = webhook_coverage.Coverage(
        since=since, renewed=renewed or datetime.now(UTC), max_gap=timedelta(seconds=120), holder="test"
    )
    apply(e.cluster, webhook_coverage.manifest(e.namespace, "production", vouched))


def metered(e: E2E) -> int:
    return int(e.qbo.requests["query"] + e.qbo.requests["cdc"])


async def night(e: E2E, *args: str) -> tuple[str, int, dict[str, Any]]:
    """One run: (its gate, the metered calls the sandbox counted, the status after)."""
    before = metered(e)
    run = await e.sync(*args, POD_NAMESPACE=e.namespace, **ENV)
    assert run.rc == 0, run.stderr
    status = e.status()
    return status["lastSync"]["gate"], metered(e) - before, status


async def test_nights_read_quickbooks_only_when_a_webhook_or_an_uncertainty_says_so(
    cluster: Any, namespace: str
) -> None:
    async with sandboxes(cluster, namespace, payments=40) as e:
        e.create_integration()
        expected = e.add_payments(30, seed=3)

        gate, calls, first = await night(e)
        assert (gate, calls > 0) == ("FirstRead", True)
        assert_exact(e, expected)
        last_read = first["lastReadTime"]

        # A webhook before that read confirms the subscription; without coverage the run cannot be sure.
        e.patch_status({"webhook": {"lastEventTime": rfc3339(utc(last_read) - timedelta(seconds=1))}})
        gate, calls, _ = await night(e)
        assert (gate, calls > 0) == ("CoverageUnknown", True)

        # The gateways vouch since before the last read: nothing changed, no metered call, tokens still kept fresh.
        coverage(e, since=e.connected_at)
        status = e.status()
        e.expire_access_token()
        token_requests = e.qbo.requests["token"]
        gate, calls, quiet = await night(e)
        assert (gate, calls) == ("NoWebhooks", 0)
        assert e.qbo.requests["token"] == token_requests + 1  # the refresh is OAuth, not metered
        assert quiet["lastSync"]["qboRequests"] == 0 and quiet["lastSync"]["result"] == "Succeeded"
        assert quiet["syncWatermark"] == status["syncWatermark"] and quiet["lastReadTime"] == status["lastReadTime"]
        assert utc(quiet["lastSuccessfulSyncTime"]) > utc(status["lastSuccessfulSyncTime"])
        assert e.condition("Synced")["status"] == "True"  # type: ignore[index]

        # Bookkeeping with a webhook: read, and Green Check matches the books again.
        assert e.qbo.bookkeep(e.realm, 4, changes=8)
        e.patch_status({"webhook": {"lastEventTime": rfc3339(datetime.now(UTC))}})
        # status times have whole seconds: a read starting in the webhook's second would count it as after the
        # read (rightly: it cannot tell), and the next night would read again for it
        await asyncio.sleep(1.1)
        gate, calls, status = await night(e)
        assert (gate, calls > 0) == ("Webhooks", True)
        assert_exact(e)

        # Bookkeeping whose webhook was lost (a gateway restarted): the coverage says so, and the night reads.
        assert e.qbo.bookkeep(e.realm, 5, changes=8)
        coverage(e, since=datetime.now(UTC))
        gate, calls, _ = await night(e)
        assert (gate, calls > 0) == ("WebhooksMayBeLost", True)
        assert_exact(e)

        # No gateway heartbeat for minutes: deliveries may be failing now.
        coverage(e, since=e.connected_at, renewed=datetime.now(UTC) - timedelta(minutes=5))
        assert (await night(e))[0] == "GatewayDown"

        # Bookkeeping that no webhook announced at all (Intuit lost it): quiet nights skip it ...
        coverage(e, since=e.connected_at)
        assert (await night(e))[:2] == ("NoWebhooks", 0)
        assert e.qbo.bookkeep(e.realm, 6, changes=8)
        gate, calls, status = await night(e)
        assert (gate, calls) == ("NoWebhooks", 0)
        # ... until the full read is due (the last read 7 days ago), which delivers it: nothing is lost.
        e.patch_status({"lastReadTime": rfc3339(utc(status["lastReadTime"]) - timedelta(days=7))})
        gate, calls, _ = await night(e)
        assert (gate, calls > 0) == ("FullReadDue", True)
        assert_exact(e)

        # spec.fullReadEveryDays 0 turns gating off; a manual run always reads.
        e.kubectl("patch", "quickbooksintegration", e.name, "--type=merge", "-p", '{"spec":{"fullReadEveryDays":0}}')
        assert (await night(e))[0] == "GatingOff"
        e.kubectl("patch", "quickbooksintegration", e.name, "--type=merge", "-p", '{"spec":{"fullReadEveryDays":7}}')
        assert (await night(e))[:2] == ("NoWebhooks", 0)
        run = await e.sync(POD_NAMESPACE=e.namespace, QBO_SYNC_TRIGGER="Manual", **ENV)
        assert run.rc == 0, run.stderr
        assert e.status()["lastSync"]["gate"] == "Requested"
        assert get(e.cluster, "lease", e.namespace, webhook_coverage.lease_name("production")) is not None
        e.assert_no_secrets_leaked()
