"""How a sync run reports: its status (progress, the outcome, a dead grant), its Events and its error line.

A base class of `run.SyncRun`, apart so the run reads as reading and delivering; these methods only write
what the run measured, through the one status vocabulary (`core.status`) and the one Event builder
(`Kube.emit_event`)."""

from __future__ import annotations

import logging
import sys
from datetime import datetime
from typing import Any

from qbo_operator.core.config import Trigger
from qbo_operator.core.kube import ApiException, Kube
from qbo_operator.core.models import Integration, MeteredReads, Phase, SyncResult, rfc3339
from qbo_operator.core.oauth import now as utcnow
from qbo_operator.core.status import CONNECTED, READY, SYNCED, ConditionStatus, ConditionType, Reason, set_condition
from qbo_operator.core.tokens import GrantDead
from qbo_operator.sync.gate import Gate
from qbo_operator.sync.ledger import Ledger, Stats
from qbo_operator.sync.preflight import KUBE_ERRORS, SyncFailed, why
from qbo_operator.sync.qbo import QboClient
from qbo_operator.sync.records import Delivery

log = logging.getLogger("qbo_operator.sync.run")

COMPONENT = "qbo-operator-sync"


def fail_line(message: str) -> None:
    print(f"qbo-operator sync: error: {message}", file=sys.stderr, flush=True)


class RunReport:
    """The run's state these methods read; `SyncRun` sets it."""

    kube: Kube
    namespace: str
    name: str
    dry_run: bool
    trigger: Trigger
    job_name: str
    started: datetime
    ledger: Ledger
    stats: Stats
    integration: Integration | None
    qbo: QboClient | None
    gc: Delivery | None
    watermark: datetime | None
    gate: Gate | None
    skipped: str | None

    @property
    def ref(self) -> str:
        return f"{self.namespace}/{self.name}"

    async def _patch_status(self, status: dict[str, Any]) -> None:
        if self.dry_run:
            return
        try:
            await self.kube.patch_status(self.namespace, self.name, status)
        except KUBE_ERRORS as exc:
            raise SyncFailed(
                Reason.JOB_FAILED,
                f"could not record progress in {self.ref} status ({why(exc)}); the next run "
                "resumes from the last recorded watermark",
            ) from None

    async def _patch_with_conditions(
        self, status: dict[str, Any], conditions: list[tuple[ConditionType, ConditionStatus, str, str]]
    ) -> None:
        """Status plus conditions, read-modify-write under the object's resourceVersion (retry on 409)."""
        for _ in range(5):
            obj = await self.kube.get_integration_object(self.namespace, self.name)
            current = list((obj.get("status") or {}).get("conditions") or [])
            generation = (obj.get("metadata") or {}).get("generation")
            now = utcnow()
            for type_, cstatus, reason, message in conditions:
                current = set_condition(current, type_, cstatus, reason, message, now, generation)
            try:
                await self.kube.patch_status(
                    self.namespace,
                    self.name,
                    {**status, "conditions": current},
                    resource_version=obj["metadata"]["resourceVersion"],
                )
                return
            except ApiException as exc:
                if exc.status != 409:
                    raise
        raise ApiException(status=409, reason="status kept changing")

    def _metered(self) -> dict[str, Any]:
        """status.meteredReads with this run's QuickBooks calls added (failed runs spend reads too)."""
        previous = self.integration.status.metered_reads if self.integration else None
        spent = self.qbo.requests if self.qbo else 0
        return MeteredReads.after(previous, utcnow(), spent).model_dump(by_alias=True)

    def _last_sync(self, result: SyncResult, message: str) -> dict[str, Any]:
        return {
            "jobName": self.job_name,
            "trigger": self.trigger,
            "startedAt": rfc3339(self.started),
            "finishedAt": rfc3339(utcnow()),
            "result": str(result),
            "paymentsSynced": self.stats.payments_synced,
            "paymentsSkipped": self.stats.payments_skipped,
            "recordsRejected": len(self.stats.rejected),
            "recordsCreated": self.stats.records["created"],
            "recordsUpdated": self.stats.records["updated"],
            "recordsRetracted": self.stats.records["retracted"],
            "amountSyncedCents": self.stats.amount_cents,
            "qboRequests": self.qbo.requests if self.qbo else 0,
            "gate": str(self.gate) if self.gate else None,
            "greenCheckRequests": self.gc.requests if self.gc else 0,
            "message": message,
        }

    async def _finish_ok(self) -> int:
        if self.skipped is not None:
            return await self._finish_skipped(self.skipped)
        # Every change up to the run's start is acknowledged: the watermark may move to the ceiling.
        watermark = self.ledger.finish()
        rejected = bool(self.stats.rejected)
        result = SyncResult.PARTIALLY_SUCCEEDED if rejected else SyncResult.SUCCEEDED
        message = self.stats.summary()
        if self.dry_run:
            log.info("dry run finished: %s (%d payment sets printed)", message, self.stats.sets_sent)
            return 0
        status: dict[str, Any] = {
            "lastSync": self._last_sync(result, message),
            "meteredReads": self._metered(),
            "lastSuccessfulSyncTime": rfc3339(utcnow()),
            "lastReadTime": rfc3339(self.started),
            "webhook": {"eventsSinceLastSync": 0},
        }
        if self.watermark is None or watermark > self.watermark:
            status["syncWatermark"] = rfc3339(watermark)
        kept = self.ledger.rejected_status()
        status["rejected"] = {"count": len(kept), "payments": kept}
        reason = Reason.RECORDS_REJECTED if rejected else Reason.SUCCEEDED
        try:
            await self._patch_with_conditions(status, [(SYNCED, "True", reason, message)])
        except KUBE_ERRORS as exc:
            fail_line(f"the sync finished but its status could not be written ({why(exc)}): {message}")
            return 1
        if rejected:
            await self._event("Warning", Reason.RECORDS_REJECTED, message)
        log.info("finished (%s): %s", result, message)
        return 0

    async def _finish_skipped(self, message: str) -> int:
        """A webhook-gated night: a success that read nothing, so the watermark, the rejected list, the
        webhook counts and lastReadTime stay as they were (the next read starts where the last one ended)."""
        status: dict[str, Any] = {
            "lastSync": self._last_sync(SyncResult.SUCCEEDED, message),
            "meteredReads": self._metered(),
            "lastSuccessfulSyncTime": rfc3339(utcnow()),
        }
        try:
            await self._patch_with_conditions(status, [(SYNCED, "True", Reason.SUCCEEDED, message)])
        except KUBE_ERRORS as exc:
            fail_line(f"the night was skipped but its status could not be written ({why(exc)})")
            return 1
        log.info("finished (%s): %s", SyncResult.SUCCEEDED, message)
        return 0

    async def _finish_failed(self, exc: SyncFailed) -> None:
        message = str(exc)
        fail_line(message)
        if self.dry_run or self.integration is None or not exc.record:
            return
        done = self.stats.summary()
        full = f"{message} (before failing: {done})" if self.stats.sets_sent or self.stats.payments_read else message
        conditions: list[tuple[ConditionType, ConditionStatus, str, str]] = (
            [(SYNCED, "False", exc.reason, full)] if exc.reason else []
        )
        try:
            await self._patch_with_conditions(
                {"lastSync": self._last_sync(SyncResult.FAILED, full), "meteredReads": self._metered()}, conditions
            )
        except KUBE_ERRORS as api_exc:
            log.warning("could not write the failure to status (%s)", why(api_exc))
        await self._event("Warning", Reason.SYNC_FAILED, full)

    async def _disconnected(self, exc: GrantDead) -> None:
        """A dead grant: phase Disconnected and Connected=False with the reason, visible at once."""
        try:
            await self._patch_with_conditions(
                {"phase": str(Phase.DISCONNECTED)},
                [(CONNECTED, "False", exc.reason, str(exc)), (READY, "False", exc.reason, str(exc))],
            )
        except KUBE_ERRORS as api_exc:
            log.warning("could not mark %s Disconnected (%s)", self.ref, why(api_exc))
        await self._event("Warning", exc.reason, str(exc))

    async def _event(self, kind: str, reason: str, message: str) -> None:
        if self.integration is None or self.dry_run:
            return
        try:
            await self.kube.emit_event(self.integration, kind, reason, message, COMPONENT)
        except KUBE_ERRORS as exc:
            log.warning("could not emit the %s Event (%s)", reason, why(exc))
