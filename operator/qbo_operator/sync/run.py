"""`qbo-operator sync --namespace NS --name NAME [--dry-run]`: one sync run (docs/design.md §5).

1. Read the integration and its token Secret. Not connected (no or broken Secret, Disconnected,
   Error) → exit 1 with what to do. Suspended without a manual trigger → exit 0, "suspended, nothing
   to do" (a leftover scheduled Job is not a failure; the Suspended condition already says why).
2. Refresh the access token if it expires within 5 minutes or was last refreshed over 20 h ago,
   persisting first (`qbo_operator.core.tokens`). A dead grant → phase Disconnected, Connected=False
   (TokenRevoked or RefreshTokenExpired), exit 1.
3. Window: payments created at or after max(connectedAt, syncWatermark − 10 min).
4. Stream payment pages (1000 rows); collect the invoices they link and read them in bulk,
   `Id IN (…)` up to 1000 ids a request, carried across pages so invoice reads stay near
   ⌈invoices/1000⌉. Map each (payment, invoice) pair; deliver in batches (≤ 500 records, < 5 MB).
5. After each acknowledged batch, advance `status.syncWatermark` to T, where every payment created
   before T has been delivered (or skipped, or rejected): T is the CreateTime of the oldest payment
   not yet fully acknowledged, or of the newest one when all are. Payments sharing T's second on
   both sides of a boundary are re-read next time (the 10-minute overlap) and Green Check drops the
   repeats by external id. A crash anywhere loses nothing and duplicates nothing.
6. Write `status.lastSync`, `lastSuccessfulSyncTime` (on Succeeded and PartiallySucceeded: the
   watermark covers the window either way), reset `webhook.eventsSinceLastSync`, and the `Synced`
   condition. Rejected records are named in the message and a Warning Event; the run is then
   PartiallySucceeded. Exit 0 on success or partial success, 1 on failure (one line on stderr).

`--dry-run` prints the records it would send as JSON lines on stdout and sends and writes nothing
(a token refresh, when due, is still persisted: Intuit may already have rotated the old one).

Tuning (page and batch sizes, waits, retries) and run metadata (JOB_NAME, QBO_SYNC_TRIGGER) come from
the environment through `core.config`."""

from __future__ import annotations

import argparse
import asyncio
import logging
import os
import sys
from collections.abc import AsyncIterator
from datetime import datetime
from typing import Any

from kubernetes_asyncio.config import ConfigException

from qbo_operator.core import kube as kube_mod
from qbo_operator.core.config import (
    Settings,
    Trigger,
    Tuning,
    job_name_from_env,
    load_settings,
    missing_credentials_message,
    trigger_from_env,
)
from qbo_operator.core.kube import ApiException, Kube
from qbo_operator.core.models import Integration, Phase, SyncResult, TokenSecretError, rfc3339
from qbo_operator.core.oauth import now as utcnow
from qbo_operator.core.status import CONNECTED, READY, SYNCED, ConditionStatus, ConditionType, Reason, set_condition
from qbo_operator.core.token_secret import SecretMissing
from qbo_operator.core.tokens import GrantDead, RefreshUnavailable, TokenManager
from qbo_operator.sync.greencheck import GreenCheckClient, GreenCheckError, GreenCheckPolicy
from qbo_operator.sync.grouping import Group, Grouper
from qbo_operator.sync.ledger import Ledger, window_start
from qbo_operator.sync.mapping import is_voided, map_payment
from qbo_operator.sync.preflight import KUBE_ERRORS, SyncFailed, load_integration, read_connection, wanted, why
from qbo_operator.sync.qbo import QboClient, QboError, QboPolicy
from qbo_operator.sync.qbo_models import Invoice, Payment
from qbo_operator.sync.records import Batch, Batcher

log = logging.getLogger("qbo_operator.sync.run")

COMPONENT = "qbo-operator-sync"


# ---------------------------------------------------------------------------------------------
# The run


class SyncRun:
    def __init__(
        self,
        kube: Kube,
        settings: Settings,
        tuning: Tuning,
        namespace: str,
        name: str,
        *,
        dry_run: bool,
        trigger: Trigger,
        job_name: str,
    ) -> None:
        self.kube = kube
        self.settings = settings
        self.tuning = tuning
        self.namespace = namespace
        self.name = name
        self.dry_run = dry_run
        self.trigger = trigger
        self.job_name = job_name
        self.started = utcnow()
        self.ledger = Ledger()
        self.stats = self.ledger.stats
        self.integration: Integration | None = None
        self.qbo: QboClient | None = None
        self.gc: GreenCheckClient | None = None
        self.watermark: datetime | None = None
        self.connected_at: datetime | None = None
        self._payment_methods: dict[str, str] | None = None

    @property
    def ref(self) -> str:
        return f"{self.namespace}/{self.name}"

    # --- entry --------------------------------------------------------------------------------

    async def run(self) -> int:
        try:
            integ = await self._load()
        except SyncFailed as exc:
            _fail_line(str(exc))
            return exc.exit_code
        if integ is None:
            return 0
        try:
            await self._sync(integ)
        except SyncFailed as exc:
            await self._finish_failed(exc)
            return exc.exit_code
        finally:
            if self.qbo:
                await self.qbo.aclose()
            if self.gc:
                await self.gc.aclose()
        return await self._finish_ok()

    async def _load(self) -> Integration | None:
        integ = await load_integration(self.kube, self.namespace, self.name)
        self.integration = integ
        return integ if wanted(integ, self.ref, self.trigger) else None

    async def _sync(self, integ: Integration) -> None:
        secret_name = integ.token_secret_name
        missing = self.settings.missing_credentials(integ.spec.environment)
        if missing:  # the operator shows it too (phase Error); lastSync stays as it was
            raise SyncFailed(None, missing_credentials_message(integ.spec.environment, missing), record=False)
        app = self.settings.for_environment(integ.spec.environment)  # the Intuit app that issued the grant
        stored = await read_connection(self.kube, self.namespace, integ, self.ref)
        realm = stored.tokens.realm_id
        self.connected_at = integ.status.connected_at or stored.tokens.connected_at
        self.watermark = integ.status.sync_watermark
        tokens = await self._fresh_tokens(app, secret_name)
        since = window_start(self.connected_at, self.watermark)
        log.info(
            "syncing %s: QuickBooks company %s, payments created since %s%s",
            self.ref,
            realm,
            rfc3339(since),
            " (dry run: nothing is sent)" if self.dry_run else "",
        )
        self.qbo = QboClient(app.api_url(integ.spec.environment), realm, tokens, QboPolicy.from_tuning(self.tuning))
        if not self.dry_run:
            self.gc = GreenCheckClient(
                self.settings.greencheck_api_url,
                self.settings.greencheck_client_id,
                self.settings.greencheck_client_secret.get_secret_value(),
                self.settings.greencheck_service_provider_id,
                GreenCheckPolicy.from_tuning(self.tuning),
            )
        await self._read_and_deliver(Batcher(integ.spec.company_id, realm, max_records=self.tuning.batch_size), since)

    async def _fresh_tokens(self, app: Settings, secret_name: str) -> TokenManager:
        """Refreshes (and persists) the tokens before the first QBO call; each failure becomes its reason."""
        tokens = TokenManager(self.kube, app, self.namespace, secret_name)
        try:
            await tokens.ensure_fresh()
        except GrantDead as exc:
            await self._disconnected(exc)
            raise SyncFailed(None, str(exc)) from None
        except RefreshUnavailable as exc:
            raise SyncFailed(Reason.QUICKBOOKS_UNAVAILABLE, f"{exc}; the next run retries") from None
        except KUBE_ERRORS as exc:
            raise SyncFailed(
                Reason.JOB_FAILED, f"cannot read or update token Secret {secret_name} ({why(exc)})"
            ) from None
        return tokens

    async def _read_and_deliver(self, batcher: Batcher, since: datetime) -> None:
        realm = batcher.realm_id
        try:
            async for group in self._groups(since):
                for payment, invoices in group:
                    await self._emit(payment, invoices, realm, batcher)
            last = batcher.flush()
            if last is not None:
                await self._deliver(last)
        except GrantDead as exc:
            await self._disconnected(exc)
            raise SyncFailed(None, str(exc)) from None
        except (SecretMissing, TokenSecretError) as exc:
            raise SyncFailed(Reason.JOB_FAILED, f"the token Secret changed under the run: {exc}") from None
        except (QboError, RefreshUnavailable) as exc:
            raise SyncFailed(
                Reason.QUICKBOOKS_UNAVAILABLE, f"QuickBooks: {exc}; the next run resumes from the watermark"
            ) from None
        except GreenCheckError as exc:
            raise SyncFailed(
                Reason.GREENCHECK_UNAVAILABLE, f"Green Check: {exc}; the next run resumes from the watermark"
            ) from None
        except KUBE_ERRORS as exc:
            raise SyncFailed(Reason.JOB_FAILED, f"Kubernetes API error during the run ({why(exc)})") from None

    # --- reading: payment pages → groups of payments with their invoices ----------------------

    async def _groups(self, since: datetime) -> AsyncIterator[list[tuple[Payment, dict[str, Invoice]]]]:
        """Payments in CreateTime order with their invoices, in groups cut by `grouping.Grouper`."""
        assert self.qbo is not None
        grouper = Grouper(self.tuning.page_size)
        async for page in self.qbo.payment_pages(since, self.tuning.page_size):
            self.stats.pages += 1
            self.stats.payments_read += len(page)
            for payment in page:
                ids = [] if self._skippable(payment) else payment.invoice_ids()
                if not grouper.fits(ids) and (full := grouper.close()) is not None:
                    yield await self._resolve(grouper, full)
                grouper.add(payment, ids)
            self._progress()
        if (last := grouper.close()) is not None:
            yield await self._resolve(grouper, last)

    def _skippable(self, payment: Payment) -> bool:
        assert self.connected_at is not None
        return payment.create_time < self.connected_at or is_voided(payment)

    async def _resolve(self, grouper: Grouper, group: Group) -> list[tuple[Payment, dict[str, Invoice]]]:
        """Read the group's missing invoices in bulk, and the payment methods' names when first needed."""
        assert self.qbo is not None
        found = await self.qbo.read_invoices(list(group.need), chunk=self.tuning.page_size) if group.need else {}
        unnamed = any(p.payment_method_ref and not p.payment_method_ref.name for p in group.payments)
        if self._payment_methods is None and unnamed:
            self._payment_methods = await self._read_payment_methods()
        return grouper.resolve(group, found)

    async def _read_payment_methods(self) -> dict[str, str]:
        """PaymentMethodRef usually carries only an id: one query names them all (at most once a run)."""
        assert self.qbo is not None
        try:
            qr = await self.qbo.query("SELECT * FROM PaymentMethod STARTPOSITION 1 MAXRESULTS 1000")
        except QboError as exc:
            log.warning("could not read payment methods (%s); their payment type is 'unknown'", exc)
            return {}
        rows = qr.get("PaymentMethod", [])
        return {
            str(r["Id"]): str(r["Name"])
            for r in rows
            if isinstance(rows, list) and isinstance(r, dict) and "Id" in r and "Name" in r
        }

    # --- mapping and delivery -----------------------------------------------------------------

    async def _emit(self, payment: Payment, invoices: dict[str, Invoice], realm: str, batcher: Batcher) -> None:
        """Map one payment and hand its records to the batcher (or print them: dry run), in the ledger."""
        assert self.connected_at is not None
        mapped = map_payment(payment, invoices, realm, self.connected_at, self._payment_methods)
        for skip in mapped.skips:
            self.stats.skip_reasons[str(skip.reason)] += 1
        if not mapped.records:
            self.stats.payments_skipped += 1
        entry = self.ledger.open(payment.create_time, len(mapped.records))
        for record in mapped.records:
            if self.dry_run:
                sys.stdout.write(record.model_dump_json() + "\n")
                self.ledger.printed(entry)
                continue
            try:
                full = batcher.add(record)
            except ValueError as exc:
                self.ledger.refuse(entry, record.external_id, str(exc))
                continue
            self.ledger.sent(entry, record.external_id, record.payment.amount)
            if full is not None:
                await self._deliver(full)
        if self.dry_run:
            self.ledger.advance()

    async def _deliver(self, batch: Batch) -> None:
        """Send one batch; record the watermark it allows (see the module docstring, step 5)."""
        assert self.gc is not None
        self.ledger.acknowledge(await self.gc.deliver(batch))
        watermark = self.ledger.advance()
        if watermark is not None and (self.watermark is None or watermark > self.watermark):
            await self._patch_status({"syncWatermark": rfc3339(watermark)})
            self.watermark = watermark
        self._progress()

    def _progress(self) -> None:
        s = self.stats
        log.info(
            "progress: %d pages, %d payments read, %d records sent (%d new, %d already there, %d rejected), "
            "%d QuickBooks and %d Green Check requests",
            s.pages,
            s.payments_read,
            s.records_sent,
            s.created,
            s.duplicate,
            len(s.rejected),
            self.qbo.requests if self.qbo else 0,
            self.gc.requests if self.gc else 0,
        )

    # --- status -------------------------------------------------------------------------------

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
            "amountSyncedCents": self.stats.amount_cents,
            "qboRequests": self.qbo.requests if self.qbo else 0,
            "greenCheckRequests": self.gc.requests if self.gc else 0,
            "message": message,
        }

    async def _finish_ok(self) -> int:
        # Everything in the window is acknowledged: the watermark may move to the newest payment.
        watermark = self.ledger.advance()
        rejected = bool(self.stats.rejected)
        result = SyncResult.PARTIALLY_SUCCEEDED if rejected else SyncResult.SUCCEEDED
        message = self.stats.summary()
        if self.dry_run:
            log.info("dry run finished: %s (%d records printed)", message, self.stats.records_sent)
            return 0
        status: dict[str, Any] = {
            "lastSync": self._last_sync(result, message),
            "lastSuccessfulSyncTime": rfc3339(utcnow()),
            "webhook": {"eventsSinceLastSync": 0},
        }
        if watermark is not None and (self.watermark is None or watermark > self.watermark):
            status["syncWatermark"] = rfc3339(watermark)
        reason = Reason.RECORDS_REJECTED if rejected else Reason.SUCCEEDED
        try:
            await self._patch_with_conditions(status, [(SYNCED, "True", reason, message)])
        except KUBE_ERRORS as exc:
            _fail_line(f"the sync finished but its status could not be written ({why(exc)}): {message}")
            return 1
        if rejected:
            await self._event("Warning", Reason.RECORDS_REJECTED, message)
        log.info("finished (%s): %s", result, message)
        return 0

    async def _finish_failed(self, exc: SyncFailed) -> None:
        message = str(exc)
        _fail_line(message)
        if self.dry_run or self.integration is None or not exc.record:
            return
        done = self.stats.summary()
        full = f"{message} (before failing: {done})" if self.stats.records_sent or self.stats.payments_read else message
        conditions: list[tuple[ConditionType, ConditionStatus, str, str]] = (
            [(SYNCED, "False", exc.reason, full)] if exc.reason else []
        )
        try:
            await self._patch_with_conditions({"lastSync": self._last_sync(SyncResult.FAILED, full)}, conditions)
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


def _fail_line(message: str) -> None:
    print(f"qbo-operator sync: error: {message}", file=sys.stderr, flush=True)


# ---------------------------------------------------------------------------------------------
# Command


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--namespace", "-n", required=True, help="namespace of the QuickbooksIntegration")
    parser.add_argument("--name", required=True, help="name of the QuickbooksIntegration")
    parser.add_argument(
        "--dry-run",
        action="store_true",
        help="print the records that would be sent as JSON lines on stdout; send and write nothing",
    )


def main(args: argparse.Namespace) -> int:
    settings = load_settings("sync")
    tuning = Tuning.from_env(os.environ)
    trigger = trigger_from_env(os.environ)
    logging.basicConfig(stream=sys.stderr, level=logging.INFO, format="qbo-operator sync: %(message)s")
    for noisy in ("httpx", "httpcore", "kubernetes_asyncio", "urllib3", "requests_oauthlib", "oauthlib"):
        logging.getLogger(noisy).setLevel(logging.WARNING)
    job_name = job_name_from_env(os.environ)
    return asyncio.run(_main(args.namespace, args.name, args.dry_run, settings, tuning, trigger, job_name))


async def _main(
    namespace: str,
    name: str,
    dry_run: bool,
    settings: Settings,
    tuning: Tuning,
    trigger: Trigger,
    job_name: str,
) -> int:
    try:
        async with kube_mod.connect() as kube:
            run = SyncRun(kube, settings, tuning, namespace, name, dry_run=dry_run, trigger=trigger, job_name=job_name)
            return await run.run()
    except (OSError, ApiException, ConfigException) as exc:
        status = getattr(exc, "status", None)
        _fail_line(
            f"cannot reach the Kubernetes API ({type(exc).__name__}{f' HTTP {status}' if status else ''}); "
            "check KUBECONFIG or the pod's ServiceAccount"
        )
        return 1
