"""`qbo-operator sync --namespace NS --name NAME [--dry-run]`: one sync run (docs/design.md §5).

1. Read the integration and its token Secret. Not connected (no or broken Secret, Disconnected,
   Error) → exit 1 with what to do. Suspended without a manual trigger → exit 0, "suspended, nothing
   to do" (a leftover scheduled Job is not a failure; the Suspended condition already says why).
2. Refresh the access token if it expires within 5 minutes or was last refreshed over 20 h ago,
   persisting first (`qbo_operator.core.tokens`). A dead grant → phase Disconnected, Connected=False
   (TokenRevoked or RefreshTokenExpired), exit 1.
3. Webhook-gated nights (`gate`): with no Payment or Invoice webhook since the last read, and nothing
   that makes the silence uncertain, make no QuickBooks call, record "no changes" and exit 0.
4. Window: changes stamped (LastUpdatedTime) at or after max(connectedAt, syncWatermark), to payments
   created at or after connectedAt (`_changes`: CDC when it holds them all, else keyset queries).
5. Each changed payment becomes one payment set (`mapping`): its invoices are read in bulk, `Id IN (…)`
   up to 1000 ids a request, with a cache, so invoice reads stay near ⌈invoices/1000⌉; a changed invoice
   sends its payments again; a voided, unapplied, credit-only or deleted payment is an empty set, which
   retracts whatever Green Check held. Sets go out in batches (≤ 500 sets and records, < 5 MB).
6. After each acknowledged batch, advance `status.syncWatermark` (`ledger.Ledger.advance`: the change
   time of the oldest set not yet settled, never past the run's start less 10 minutes) together with
   `status.rejected`, the payments Green Check refused, which every run sends again until accepted. A
   crash anywhere loses nothing; what is sent twice is `unchanged` at Green Check.
7. Write `status.lastSync`, `lastSuccessfulSyncTime` (on Succeeded and PartiallySucceeded: the
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
import dataclasses
import logging
import os
import sys
from collections.abc import AsyncIterator, Iterable
from datetime import datetime, timedelta
from typing import Any

from kubernetes_asyncio.config import ConfigException

from qbo_operator.core import kube as kube_mod
from qbo_operator.core import webhook_coverage
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
from qbo_operator.core.logging import QUIET_LOGGERS
from qbo_operator.core.models import Integration, TokenSecretError, rfc3339
from qbo_operator.core.oauth import now as utcnow
from qbo_operator.core.status import Reason
from qbo_operator.core.token_secret import SecretMissing
from qbo_operator.core.tokens import AppCredentialsRejected, GrantDead, RefreshUnavailable, TokenManager
from qbo_operator.sync import gate
from qbo_operator.sync.gate import Gate
from qbo_operator.sync.greencheck import GreenCheckClient, GreenCheckError, GreenCheckPolicy
from qbo_operator.sync.grouping import Group, Grouper
from qbo_operator.sync.ledger import Entry, Ledger, Rejection, window_start
from qbo_operator.sync.mapping import is_voided, map_payment
from qbo_operator.sync.preflight import (
    KUBE_ERRORS,
    SyncFailed,
    load_integration,
    read_connection,
    read_sftp_keys,
    wanted,
    why,
)
from qbo_operator.sync.qbo import QboClient, QboError, QboPolicy
from qbo_operator.sync.qbo_models import Changes, Invoice, Payment
from qbo_operator.sync.records import Batch, Batcher, Delivery, PaymentSet
from qbo_operator.sync.report import RunReport, fail_line
from qbo_operator.sync.sftp import SftpClient, SftpError, SftpPolicy

log = logging.getLogger("qbo_operator.sync.run")

CDC_LOOKBACK = timedelta(days=30) - timedelta(minutes=5)  # Intuit's 30 days, less a margin for clocks


async def _once(items: Iterable[Payment]) -> AsyncIterator[list[Payment]]:
    """A list of payments as a one-page stream."""
    page = list(items)
    if page:
        yield page


# ---------------------------------------------------------------------------------------------
# The run


class SyncRun(RunReport):
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
        self.ledger = Ledger(self.started, self.started)  # replaced once the window is known
        self.stats = self.ledger.stats
        self.grouper = Grouper(tuning.page_size)
        self._sent_tokens: dict[str, str] = {}  # payment id → SyncToken sent in this run
        self._linked: dict[str, datetime] = {}  # payments of changed invoices not sent yet → invoice change time
        self._rejected_written: list[dict[str, str]] | None = None
        self.integration: Integration | None = None
        self.qbo: QboClient | None = None
        self.gc: Delivery | None = None
        self.watermark: datetime | None = None
        self.connected_at: datetime | None = None
        self._payment_methods: dict[str, str] | None = None
        self._credit_cards: set[str] = set()
        self.gate: Gate | None = None
        self.skipped: str | None = None  # a webhook-gated night's message: no QuickBooks call was made

    # --- entry --------------------------------------------------------------------------------

    async def run(self) -> int:
        try:
            integ = await self._load()
        except SyncFailed as exc:
            fail_line(str(exc))
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
        self.gate, night = await self._gate(integ, self.connected_at)
        if self.gate is Gate.NO_WEBHOOKS:
            self.skipped = gate.skip_message(night)  # written and logged by _finish_ok
            return
        since = window_start(self.connected_at, self.watermark)
        kept = integ.status.rejected.payments if integ.status.rejected else []
        self.ledger = Ledger(
            since,
            self.started - timedelta(seconds=self.tuning.settle),
            {r.payment_id: Rejection(r.payment_id, r.sync_token, r.reason) for r in kept},
        )
        self.stats = self.ledger.stats
        self._rejected_written = self.ledger.rejected_status()
        log.info(
            "syncing %s: QuickBooks company %s, changes since %s to payments created since %s%s",
            self.ref,
            realm,
            rfc3339(since),
            rfc3339(self.connected_at),
            " (dry run: nothing is sent)" if self.dry_run else "",
        )
        self.qbo = QboClient(app.api_url(integ.spec.environment), realm, tokens, QboPolicy.from_tuning(self.tuning))
        if not self.dry_run:
            self.gc = await self._delivery(integ, realm)
        await self._read_and_deliver(Batcher(integ.spec.company_id, realm, max_items=self.tuning.batch_size), since)

    async def _gate(self, integ: Integration, connected_at: datetime) -> tuple[Gate, gate.Night]:
        """Whether tonight reads QuickBooks (`sync.gate`); the gateways' coverage Lease is read only when the
        answer depends on it."""
        status = integ.status
        every = integ.spec.full_read_every_days
        night = gate.Night(
            now=utcnow(),
            connected_at=connected_at,
            last_read=status.last_read_time,
            last_webhook=status.webhook.last_event_time if status.webhook else None,
            rejected=status.rejected.count if status.rejected else 0,
            every_days=self.settings.qbo_full_read_every_days if every is None else every,
            requested=self.trigger == "Manual" or self.dry_run,
            coverage=None,
            margin=timedelta(seconds=self.tuning.settle),
        )
        decision = gate.decide(night)
        if decision is Gate.NO_COVERAGE:
            coverage = await webhook_coverage.read(self.kube, self.settings.pod_namespace, integ.spec.environment)
            night = dataclasses.replace(night, coverage=coverage)
            decision = gate.decide(night)
        log.info("%s: %s", self.ref, "no QuickBooks reads tonight" if decision is Gate.NO_WEBHOOKS else
                 f"reading QuickBooks ({decision})")  # fmt: skip
        return decision, night

    async def _delivery(self, integ: Integration, realm: str) -> Delivery:
        """Green Check's JSON API (the default), or its documented SFTP intake (`spec.delivery.method: sftp`)."""
        sftp = integ.spec.delivery.sftp
        if integ.spec.delivery.method == "sftp" and sftp is not None:
            private_key, known_hosts = await read_sftp_keys(self.kube, self.namespace, sftp)
            try:
                return SftpClient(sftp, realm, private_key, known_hosts, SftpPolicy.from_tuning(self.tuning))
            except SftpError as exc:
                raise SyncFailed(Reason.DELIVERY_REFUSED, str(exc)) from None
        return GreenCheckClient(
            self.settings.greencheck_api_url,
            self.settings.greencheck_client_id,
            self.settings.greencheck_client_secret.get_secret_value(),
            self.settings.greencheck_service_provider_id,
            GreenCheckPolicy.from_tuning(self.tuning),
        )

    async def _fresh_tokens(self, app: Settings, secret_name: str) -> TokenManager:
        """Refreshes (and persists) the tokens before the first QBO call; each failure becomes its reason."""
        tokens = TokenManager(self.kube, app, self.namespace, secret_name)
        try:
            await tokens.ensure_fresh()
        except GrantDead as exc:
            await self._disconnected(exc)
            raise SyncFailed(None, str(exc)) from None
        except AppCredentialsRejected as exc:
            raise SyncFailed(Reason.APP_CREDENTIALS_INVALID, str(exc)) from None
        except RefreshUnavailable as exc:
            raise SyncFailed(Reason.QUICKBOOKS_UNAVAILABLE, f"{exc}; the next run retries") from None
        except KUBE_ERRORS as exc:
            raise SyncFailed(
                Reason.JOB_FAILED, f"cannot read or update token Secret {secret_name} ({why(exc)})"
            ) from None
        return tokens

    async def _read_and_deliver(self, batcher: Batcher, since: datetime) -> None:
        try:
            await self._changes(batcher, since)
            last = batcher.flush()
            if last is not None:
                await self._deliver(last)
        except GrantDead as exc:
            await self._disconnected(exc)
            raise SyncFailed(None, str(exc)) from None
        except AppCredentialsRejected as exc:
            raise SyncFailed(Reason.APP_CREDENTIALS_INVALID, str(exc)) from None
        except (SecretMissing, TokenSecretError) as exc:
            raise SyncFailed(Reason.JOB_FAILED, f"the token Secret changed under the run: {exc}") from None
        except (QboError, RefreshUnavailable) as exc:
            raise SyncFailed(
                Reason.QUICKBOOKS_UNAVAILABLE, f"QuickBooks: {exc}; the next run resumes from the watermark"
            ) from None
        except GreenCheckError as exc:
            refused = isinstance(exc, SftpError) and exc.refused
            raise SyncFailed(
                Reason.DELIVERY_REFUSED if refused else Reason.GREENCHECK_UNAVAILABLE,
                f"Green Check: {exc}; the next run resumes from the watermark",
            ) from None
        except KUBE_ERRORS as exc:
            raise SyncFailed(Reason.JOB_FAILED, f"Kubernetes API error during the run ({why(exc)})") from None

    # --- reading: what changed since the watermark ---------------------------------------------

    async def _changes(self, batcher: Batcher, since: datetime) -> None:
        """Every payment set the window calls for (docs/sync.md "Reading QuickBooks"):

        1. the payments Green Check refused before, sent again;
        2. one CDC call (Payment, Invoice) when `since` is within Intuit's 30 days: below its 1,000-object
           cap it is the whole change set (changed payments and invoices, deletes) in one request;
           otherwise keyset queries on LastUpdatedTime for invoices and payments, and CDC for deletes;
        3. deleted payments as empty sets (Green Check retracts their records);
        4. the changed payments, in change order (their change times move the watermark);
        5. the payments applied to a changed invoice and not changed themselves, read by id (their records
           carry the invoice). Until sent, each holds the watermark at its invoice's change time. Not when the
           window starts at the connection: every payment created since then changed since, so step 4 reads it,
           and what a changed invoice lists besides was created before the connection (never sent, so it must
           not hold the watermark either: a first night cut off mid-run would keep no progress)."""
        assert self.qbo is not None and self.connected_at is not None
        linking = since > self.connected_at
        await self._send_ids(list(self.ledger.rejected), batcher)
        changes = await self._cdc(since)
        payments: AsyncIterator[list[Payment]]
        if changes is not None and changes.complete:
            self.stats.pages += 1
            self._note_invoices(changes.invoices, linking)
            deleted = changes.deleted.get("Payment", [])
            payments = _once(sorted(changes.payments, key=lambda p: p.changed_at))
        else:
            async for invoices in self.qbo.changed(Invoice, since, page_size=self.tuning.page_size):
                self.stats.pages += 1
                self._note_invoices(invoices, linking)
            deleted = await self._deleted_payments(since, changes)
            payments = self.qbo.changed(
                Payment, since, created_since=self.connected_at, page_size=self.tuning.page_size
            )
        await self._send_deleted(deleted, batcher)
        await self._send_payments(payments, batcher, stream=True)
        await self._send_ids(sorted(self._linked), batcher)
        self._linked.clear()

    def _note_invoices(self, invoices: list[Invoice], linking: bool) -> None:
        """Changed invoices: cached as read, and (`linking`) their payments noted with the earliest such change."""
        self.grouper.remember(invoices)
        if not linking:
            return
        for invoice in invoices:
            for payment_id in invoice.payment_ids():
                held = self._linked.get(payment_id)
                self._linked[payment_id] = invoice.changed_at if held is None else min(held, invoice.changed_at)

    async def _cdc(self, since: datetime) -> Changes | None:
        """One CDC answer for payments and invoices, or None when `since` is past Intuit's look-back."""
        assert self.qbo is not None
        if since < utcnow() - CDC_LOOKBACK:
            log.warning(
                "the window starts %s, beyond CDC's 30 days: payments deleted before the last 30 days cannot "
                "be seen (see docs/sync.md)",
                rfc3339(since),
            )
            return None
        return await self.qbo.cdc(["Payment", "Invoice"], since)

    async def _deleted_payments(self, since: datetime, first: Changes | None) -> list[str]:
        """Deleted payment ids when one CDC answer for both entities held the cap: ask for payments alone,
        and move `changedSince` forward past each capped answer (Intuit answers oldest first)."""
        assert self.qbo is not None
        if first is None:
            return []
        deleted: dict[str, None] = dict.fromkeys(first.deleted.get("Payment", []))
        answer, at = first, since
        while not answer.complete:
            answer = await self.qbo.cdc(["Payment"], at)
            deleted.update(dict.fromkeys(answer.deleted.get("Payment", [])))
            newest = max((p.changed_at for p in answer.payments), default=at)
            if answer.complete or newest <= at:
                if not answer.complete:
                    log.warning("more than 1,000 payments changed at %s; deletes in that second may be missed", at)
                break
            at = newest
        return list(deleted)

    async def _send_ids(self, ids: list[str], batcher: Batcher) -> None:
        """Payments named by id (refused before, or applied to a changed invoice): read and sent again;
        one that no longer exists is sent as an empty set."""
        assert self.qbo is not None
        if not ids:
            return
        found = await self.qbo.read(Payment, ids, chunk=self.tuning.page_size)
        self.stats.pages += 1
        await self._send_payments(_once([found[i] for i in ids if i in found]), batcher, stream=False)
        await self._send_deleted([i for i in ids if i not in found], batcher)

    async def _send_deleted(self, ids: list[str], batcher: Batcher) -> None:
        for payment_id in ids:
            if payment_id in self._sent_tokens:
                continue
            self._sent_tokens[payment_id] = "deleted"
            self.stats.deleted += 1
            entry = self.ledger.open(payment_id, "deleted")
            await self._hand(entry, PaymentSet(payment_id=payment_id, records=[]), batcher)

    async def _send_payments(self, pages: AsyncIterator[list[Payment]], batcher: Batcher, *, stream: bool) -> None:
        """Payments with their invoices (`grouping.Grouper`), mapped and handed to the batcher.

        `stream`: the payments come in change order and their change times may move the watermark."""
        async for group in self._groups(pages):
            for payment, invoices in group:
                await self._emit(payment, invoices, batcher, stream)

    async def _groups(
        self, pages: AsyncIterator[list[Payment]]
    ) -> AsyncIterator[list[tuple[Payment, dict[str, Invoice]]]]:
        grouper = self.grouper
        async for page in pages:
            self.stats.payments_read += len(page)
            for payment in page:
                if self._sent_tokens.get(payment.id) == payment.sync_token:
                    continue  # sent already in this run (a changed invoice's payment)
                ids = [] if self._skippable(payment) else payment.invoice_ids()
                if not grouper.fits(ids) and (full := grouper.close()) is not None:
                    yield await self._resolve(full)
                grouper.add(payment, ids)
            self._progress()
        if (last := grouper.close()) is not None:
            yield await self._resolve(last)

    def _skippable(self, payment: Payment) -> bool:
        assert self.connected_at is not None
        return payment.create_time < self.connected_at or is_voided(payment)

    async def _resolve(self, group: Group) -> list[tuple[Payment, dict[str, Invoice]]]:
        """Read the group's missing invoices in bulk, and the payment methods' names when first needed."""
        assert self.qbo is not None
        found = await self.qbo.read_invoices(list(group.need), chunk=self.tuning.page_size) if group.need else {}
        # only a payment that can have records needs its method's name (not voided, unapplied or out of scope)
        unnamed = any(
            p.payment_method_ref and not p.payment_method_ref.name and p.invoice_ids() and not self._skippable(p)
            for p in group.payments
        )
        if self._payment_methods is None and unnamed:
            self._payment_methods = await self._read_payment_methods()
        return self.grouper.resolve(group, found)

    async def _read_payment_methods(self) -> dict[str, str]:
        """PaymentMethodRef carries only an id: one query names them all, inactive ones too (at most once a
        run), and notes which are cards (`Type` CREDIT_CARD) whatever their name."""
        assert self.qbo is not None
        try:
            qr = await self.qbo.query(
                "SELECT * FROM PaymentMethod WHERE Active IN (true, false) STARTPOSITION 1 MAXRESULTS 1000"
            )
        except QboError as exc:
            log.warning("could not read payment methods (%s); their payment type is 'unknown'", exc)
            return {}
        rows = qr.get("PaymentMethod", [])
        methods = (
            [r for r in rows if isinstance(r, dict) and "Id" in r and "Name" in r] if isinstance(rows, list) else []
        )
        self._credit_cards = {str(r["Id"]) for r in methods if str(r.get("Type", "")).upper() == "CREDIT_CARD"}
        return {str(r["Id"]): str(r["Name"]) for r in methods}

    # --- mapping and delivery -----------------------------------------------------------------

    async def _emit(self, payment: Payment, invoices: dict[str, Invoice], batcher: Batcher, stream: bool) -> None:
        """Map one payment and hand its set to the batcher (or print it: dry run), in the ledger."""
        assert self.connected_at is not None
        mapped = map_payment(
            payment, invoices, batcher.realm_id, self.connected_at, self._payment_methods, self._credit_cards
        )
        self._linked.pop(payment.id, None)  # read in this run: no second read by id
        if mapped.payment_set is None:  # created before the connection (a changed invoice's): out of scope
            return
        for skip in mapped.skips:
            self.stats.skip_reasons[str(skip.reason)] += 1
        if not mapped.payment_set.records:
            self.stats.payments_skipped += 1
        self._sent_tokens[payment.id] = payment.sync_token
        entry = self.ledger.open(payment.id, payment.sync_token, payment.changed_at if stream else None)
        await self._hand(entry, mapped.payment_set, batcher)

    async def _hand(self, entry: Entry, payment_set: PaymentSet, batcher: Batcher) -> None:
        if self.dry_run:
            sys.stdout.write(payment_set.model_dump_json() + "\n")
            self.ledger.printed(entry)
            return
        try:
            full = batcher.add(payment_set)
        except ValueError as exc:
            self.ledger.refuse(entry, str(exc))
            return
        if full is not None:  # the batch this set did not fit in (or one holding an older set of its payment)
            await self._deliver(full)
        self.ledger.sent(entry, payment_set)

    async def _deliver(self, batch: Batch) -> None:
        """Send one batch; record the watermark (and the rejected list) it allows (module docstring, step 5)."""
        assert self.gc is not None
        self.ledger.acknowledge(await self.gc.deliver(batch))
        await self._checkpoint(min(self.ledger.advance(), *self._linked.values(), self.ledger.ceiling))
        self._progress()

    async def _checkpoint(self, watermark: datetime) -> None:
        """The watermark and the rejected list together, so a refused payment is never behind the watermark
        without being in the list."""
        rejected = self.ledger.rejected_status()
        moved = self.watermark is None or watermark > self.watermark
        if not moved and rejected == self._rejected_written:
            return
        status: dict[str, Any] = {"rejected": {"count": len(rejected), "payments": rejected}}
        if moved:
            status["syncWatermark"] = rfc3339(watermark)
        await self._patch_status(status)
        self._rejected_written = rejected
        if moved:
            self.watermark = watermark

    def _progress(self) -> None:
        s = self.stats
        log.info(
            "progress: %d pages, %d payments read, %d payment sets sent (records: %d created, %d updated, "
            "%d retracted, %d unchanged; %d payments rejected), %d QuickBooks and %d Green Check requests",
            s.pages,
            s.payments_read,
            s.sets_sent,
            s.records["created"],
            s.records["updated"],
            s.records["retracted"],
            s.records["unchanged"],
            len(s.rejected),
            self.qbo.requests if self.qbo else 0,
            self.gc.requests if self.gc else 0,
        )


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
    for noisy in QUIET_LOGGERS:
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
        fail_line(
            f"cannot reach the Kubernetes API ({type(exc).__name__}{f' HTTP {status}' if status else ''}); "
            "check KUBECONFIG or the pod's ServiceAccount"
        )
        return 1
