"""The level-based `reconcile(namespace, name)`: read the views, call the pure functions, write the differences.

It computes the desired children and status from the indexes (`manifests`, `conditions`) and writes only
what differs, under a per-integration lock. Watch events of the CR and of every labelled child, the
housekeeping timer and a retry timer after an error all call it. Running it twice changes nothing; in a
steady state it makes no API call at all. It waits for kopf's finalizer before its first write, so kopf's
precondition-guarded patch never loses a race against ours.

It owns only what it created (`ownership`): before its first write of a child or of the token Secret it
looks at the name (the indexes, else one read), and an object there that has no ownerReference to this
integration's uid is left alone: phase Error, `SecretConflict` or `ObjectConflict`, and no child is
written at all (so no Role names a Secret that is not ours). The token Secret it creates itself, empty,
before any Connect."""

from __future__ import annotations

import asyncio
import datetime as dt
import json
import logging
import time
from collections.abc import Coroutine, Mapping
from typing import Any

from kubernetes_asyncio.client.exceptions import ApiException

from qbo_operator.core import names, realm_claims, signing
from qbo_operator.core.config import Settings
from qbo_operator.core.kube import Kube
from qbo_operator.core.models import Integration, rfc3339
from qbo_operator.core.status import SYNCED, Reason
from qbo_operator.reconciler import conditions, manifests, ownership
from qbo_operator.reconciler.conditions import Computed, Observed, SpecProblem, TokenState
from qbo_operator.reconciler.metrics import OperatorMetrics
from qbo_operator.reconciler.views import IntegrationState, Key, Views, integration_essence, snapshot
from qbo_operator.reconciler.writes import Writer, describe

log = logging.getLogger("qbo_operator.operator")

MAX_CONCURRENT_RECONCILES = 16
RETRY_MAX_DELAY = 300.0


def _ref(namespace: str, name: str, kind: str = names.KIND) -> dict[str, str]:
    return {"namespace": namespace, "name": name, "kind": kind}


def cronjob_refusal(exc: ApiException) -> SpecProblem | None:
    """A 422 Invalid from the API server about the CronJob we built from the spec, as a spec problem."""
    if exc.status != 422:
        return None
    try:
        status = json.loads(exc.body or "{}")
    except ValueError:
        return None
    if (status.get("details") or {}).get("kind") not in ("CronJob", "cronjobs"):
        return None
    message = str(status.get("message") or "")
    reason = Reason.INVALID_TIME_ZONE if "timeZone" in message else Reason.INVALID_SCHEDULE
    field_name = "spec.timeZone" if reason == Reason.INVALID_TIME_ZONE else "spec.schedule"
    return SpecProblem(
        reason, f"The API server refused the sync CronJob: {message[:512]}. Fix {field_name} of this integration."
    )


class Runtime(Views):
    """Everything the handlers share, passed to kopf as the operator-wide memo (`memo.runtime`)."""

    def __init__(
        self, settings: Settings, kube: Kube, metrics: OperatorMetrics, namespaces: tuple[str, ...] = ()
    ) -> None:
        super().__init__()
        self.settings = settings
        self.kube = kube
        self.namespaces = namespaces  # watched; () for all
        self.metrics = metrics
        self.writer = Writer(kube, metrics)
        self._semaphore = asyncio.Semaphore(MAX_CONCURRENT_RECONCILES)
        self._background: list[asyncio.Task[None]] = []
        self._started = time.monotonic()
        self._reconciled = False
        self._queue: asyncio.Queue[Key] = asyncio.Queue()
        self._queued: set[Key] = set()
        self._workers: list[asyncio.Task[None]] = []
        self.opened = asyncio.Event()  # every kind listed once: the views are complete

    def background(self, work: Coroutine[Any, Any, None]) -> None:
        """Run `work` (the housekeeping scan) until the operator stops."""
        self._background.append(asyncio.create_task(work))

    # one integration at a time, errors retried ------------------------------------------------
    def request(self, namespace: str, name: str) -> None:
        """Queue a reconcile and return at once; a key already waiting is queued once. Watch events call this
        rather than awaiting `reconcile`, so nothing holds an event while it waits its turn (in a creation burst,
        thousands at once: the operator's memory peak, issue 20), and the ~8 events of a new integration's
        children coalesce into fewer passes. A key is dequeued before its pass starts, so an event during a
        pass queues the next one (the reconcile reads levels). Nothing is dequeued before `open`."""
        key = (namespace, name)
        if key in self._queued:
            return
        self._queued.add(key)
        self._queue.put_nowait(key)

    def open(self) -> None:
        """Every kind has been listed once: start the reconcile workers."""
        if not self._workers:
            log.info(
                "indexes filled %.1fs after start-up: %d integrations", self.uptime(), len(self.integration_keys())
            )
            self._workers = [asyncio.create_task(self._work()) for _ in range(MAX_CONCURRENT_RECONCILES)]
        self.opened.set()

    def uptime(self) -> float:
        return time.monotonic() - self._started

    async def _work(self) -> None:
        while True:
            key = await self._queue.get()
            self._queued.discard(key)
            await self.reconcile(*key)  # logs and schedules its own retry on failure

    async def reconcile(self, namespace: str, name: str) -> None:
        """Bring one integration to its desired state; errors are logged and retried with back-off."""
        key = (namespace, name)
        async with self.state(key).lock, self._semaphore:
            started = time.monotonic()
            try:
                await self._reconcile(namespace, name)
            except Exception as exc:
                self.metrics.reconcile_total.labels(result="error").inc()
                delay = self._schedule_retry(key)
                log.error(
                    "reconcile failed (%s); retrying in %.0fs",
                    describe(exc),
                    delay,
                    extra={"k8s_ref": _ref(namespace, name)},
                )
            else:
                self.metrics.reconcile_total.labels(result="success").inc()
                self.state(key).failures = 0
                if not self._reconciled:
                    self._reconciled = True
                    log.info(
                        "first reconcile %.1fs after start-up, %d integrations indexed",
                        self.uptime(),
                        len(self.integration_keys()),
                    )
            finally:
                self.metrics.reconcile_duration.observe(time.monotonic() - started)

    def _schedule_retry(self, key: Key) -> float:
        state = self.state(key)
        state.failures += 1
        delay = min(RETRY_MAX_DELAY, float(2**state.failures))
        if state.retry is None or state.retry.done():
            state.retry = asyncio.create_task(self._retry_later(key, delay))
        return delay

    async def _retry_later(self, key: Key, delay: float) -> None:
        await asyncio.sleep(delay)
        if (state := self.states.get(key)) is not None:
            state.retry = None
        await self.reconcile(*key)

    def forget(self, namespace: str, name: str) -> None:
        """Drop what we remember of a deleted integration (a reconcile still holding its lock keeps it)."""
        state = self.states.pop((namespace, name), None)
        if state is None:
            return
        if state.retry is not None:
            state.retry.cancel()
        if state.lock.locked():
            self.states[(namespace, name)] = IntegrationState(lock=state.lock)

    async def stop(self) -> None:
        tasks = [state.retry for state in self.states.values() if state.retry is not None]
        tasks += self._background + self._workers
        self._background, self._workers = [], []
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)

    # the reconcile ---------------------------------------------------------------------------
    async def _reconcile(self, namespace: str, name: str, attempt: int = 0) -> None:
        body = self.body(namespace, name)
        meta = (body or {}).get("metadata") or {}
        if body is None or meta.get("deletionTimestamp"):
            return
        if names.FINALIZER not in (meta.get("finalizers") or []):
            # kopf adds its finalizer on first sight with a resourceVersion precondition; writing first would
            # make that patch fail and retry. Its own event brings us back here a moment later.
            return
        integ = Integration.from_object(body)
        state = self.state((namespace, name))
        now = dt.datetime.now(dt.UTC)
        owner = manifests.Owner(namespace, name, integ.uid, self.settings.pod_namespace)
        token, conflict = await self._claim_token_secret(integ, owner)
        conflict = conflict or await self._foreign_child(integ, owner)
        duplicate_owner = await self._duplicate_owner(integ, token.realm_id)
        observed = self._observe(integ, state, token, now, conflict, duplicate_owner)
        computed = conditions.compute(observed)
        # With a conflict nothing is written but the status: no child, so no Role grants anything on the
        # foreign object (and, not connected, no sync-now Job needs the CronJob).
        cron: dict[str, Any] = {}
        cronjob_uid = ""
        try:
            if conflict is None:
                cron, cronjob_uid = await self._ensure_children(integ, owner, observed.spec_problem, computed)
        except ApiException as exc:
            refusal = cronjob_refusal(exc) if attempt == 0 else None
            if refusal is None:
                raise
            # The API server judges cron syntax a little differently from croniter: say so, then retry with
            # the CronJob on the default schedule (suspended, as the phase is now Error).
            state.refused_cronjob[integ.generation] = refusal
            await self._reconcile(namespace, name, attempt=1)
            return

        if computed.connected and conditions.CONNECTED_ENVIRONMENT_ANNOTATION not in integ.annotations:
            written = await self.writer.annotate(
                namespace, name, {conditions.CONNECTED_ENVIRONMENT_ANNOTATION: integ.spec.environment}
            )
            state.written = snapshot(integration_essence(written))

        handled = await self._sync_request(integ, computed, cron, cronjob_uid)
        await self._write_status(self.body(namespace, name) or body, integ, computed, handled, now)
        state.dead_grant = None  # recorded in status now; it holds from there

    def _observe(
        self,
        integ: Integration,
        state: IntegrationState,
        token: TokenState,
        now: dt.datetime,
        conflict: SpecProblem | None = None,
        duplicate_owner: str | None = None,
    ) -> Observed:
        """The pure computation's input: the CR, its token, its Jobs, and what the housekeeping learnt."""
        namespace, name = integ.namespace, integ.name
        problem = (
            conflict
            or conditions.check_spec(
                integ.spec,
                name,
                integ.annotations.get(conditions.CONNECTED_ENVIRONMENT_ANNOTATION),
                self.settings.qbo_default_time_zone,
                self.settings.missing_credentials(integ.spec.environment),
            )
            or state.refused_cronjob.get(integ.generation)
        )
        return Observed(
            namespace=namespace,
            name=name,
            generation=integ.generation,
            spec=integ.spec,
            status=integ.status,
            token=token,
            now=now,
            spec_problem=problem,
            duplicate_owner=duplicate_owner,
            last_job=self.last_job(namespace, name),
            dead_grant=state.dead_grant,
        )

    async def _duplicate_owner(self, integ: Integration, realm: str | None) -> str | None:
        """Who else owns `realm`, if anyone. Only when another integration also holds it (rare) is the realm's
        claim read (core/realm_claims, written by the gateway once Intuit confirmed the realm): its live holder
        decides, whatever any status says. A realm no gateway claimed (tokens written by hand, or a claim whose
        holder is gone) falls back to the index's rule (`realm_owner`)."""
        me = (integ.namespace, integ.name)
        if not realm or self.realm_holders(realm) <= {me}:
            return None
        try:
            claim = await realm_claims.read(self.kube, self.settings.pod_namespace, integ.spec.environment, realm)
        except ApiException as exc:
            log.warning("cannot read the claim of realm %s: HTTP %s", realm, exc.status, extra={"k8s_ref": _ref(*me)})
            claim = None
        holder = claim.holder if claim is not None else None
        if holder is not None:
            if holder.uid == integ.uid:
                return None
            body = self.body(*holder.key)
            if body is not None and (body.get("metadata") or {}).get("uid") == holder.uid:
                return str(holder)
        return self.realm_owner(realm, me)

    async def ensure_platform_credentials(self) -> None:
        """The one copy of the platform credentials per configured Intuit environment, at home, for the sync
        Jobs' `envFrom`; written at start-up (the operator's own variables change only with a restart), and only
        when it differs from what is there."""
        home = self.settings.pod_namespace
        for environment in self.settings.environments:
            desired = manifests.credentials_secret(home, self.settings, environment)
            raw = await self.writer.read("Secret", home, desired["metadata"]["name"])
            if manifests.needs_apply(desired, manifests.comparable(raw) if raw is not None else None):
                await self.writer.apply(desired)
                log.info("wrote the %s platform credentials for the sync Jobs in %s", environment, home)

    async def remove_sync_workload(self, integ: Integration) -> None:
        """On deletion: the CronJob (its Jobs and Pods follow) and ServiceAccount at home, if they are ours."""
        name, home = names.sync_workload_name(integ.namespace, integ.name), self.settings.pod_namespace
        for kind in ("CronJob", "ServiceAccount"):
            raw = await self.writer.read(kind, home, name)
            if ownership.owned_by(raw, integ.uid, (integ.namespace, integ.name)):
                await self.writer.delete(kind, home, name)

    async def release_realm_claims(self, integ: Integration) -> None:
        """On deletion: free the realms this integration holds a claim on (its status's and its Secret's)."""
        view = self.secret(integ.namespace, integ.token_secret_name)
        realms = {integ.status.realm_id, view.token.realm_id if view is not None and view.token is not None else None}
        for realm in sorted(r for r in realms if r):
            try:
                released = await realm_claims.release(
                    self.kube, self.settings.pod_namespace, integ.spec.environment, realm, integ.uid
                )
            except ApiException as exc:
                log.warning("cannot release the claim of realm %s: HTTP %s", realm, exc.status)
                continue
            if released:
                log.info("released the claim of realm %s", realm, extra={"k8s_ref": _ref(integ.namespace, integ.name)})

    async def _claim_token_secret(
        self, integ: Integration, owner: manifests.Owner
    ) -> tuple[TokenState, SpecProblem | None]:
        """The token Secret's state, creating it (empty, ours) when the name is free; a Secret of that name
        that is not ours is a conflict: its contents are never used, its metadata never changed."""
        key, secret_name = (owner.namespace, owner.name), integ.token_secret_name
        view = self.secret(owner.namespace, secret_name)
        observed = self.child(key, "secrets", "Secret", secret_name)
        token = view.token if view is not None and view.token is not None else TokenState.missing()
        if observed is None:
            created = await self.writer.create_token_secret(owner.namespace, owner.name, owner.uid, secret_name)
            if created is not None:
                self.remember_child(key, "Secret", secret_name, manifests.comparable(created))
                log.info("created token Secret %s", secret_name, extra={"k8s_ref": _ref(*key, "Secret")})
                return TokenState.missing(), None
            raw = await self.writer.read("Secret", owner.namespace, secret_name)  # exists, not labelled by us
            observed = manifests.comparable(raw) if raw is not None else None
            token = TokenState.from_secret_data((raw or {}).get("data"))
        field = "spec.tokenSecretName" if integ.spec.token_secret_name else ""
        problem = ownership.conflict("Secret", secret_name, observed, owner.uid, field)
        return (TokenState.missing(), problem) if problem is not None else (token, None)

    async def _foreign_child(self, integ: Integration, owner: manifests.Owner) -> SpecProblem | None:
        """The first child name taken by an object that is not ours. The indexes hold only labelled objects,
        so a name they do not know (and we never wrote) is read once, all such names at once (a new integration's
        ~6 reads cost one round trip); a child we wrote costs nothing."""
        key = (owner.namespace, owner.name)
        gateway = bool(self.settings.qbo_gateway_service_account)
        children = manifests.child_names(owner, gateway)
        known = [self.child(key, index, kind, name, namespace) for index, kind, namespace, name in children]

        async def read(kind: str, namespace: str, name: str) -> dict[str, Any] | None:
            raw = await self.writer.read(kind, namespace, name)
            return manifests.comparable(raw) if raw is not None else None

        unknown = [i for i, observed in enumerate(known) if observed is None]
        reads = await asyncio.gather(*(read(*children[i][1:]) for i in unknown))
        for i, observed in zip(unknown, reads, strict=True):
            known[i] = observed
        for i, ((_, kind, namespace, name), observed) in enumerate(zip(children, known, strict=True)):
            home_key = key if namespace == owner.home else None
            if i in unknown and observed is not None and ownership.owned_by(observed, owner.uid, home_key):
                self.remember_child(key, kind, name, observed)  # ours, not yet indexed
            if (problem := ownership.conflict(kind, name, observed, owner.uid, home_key=home_key)) is not None:
                return problem
        return None

    async def _ensure_children(
        self, integ: Integration, owner: manifests.Owner, problem: SpecProblem | None, computed: Computed
    ) -> tuple[dict[str, Any], str]:
        """The owned objects, applied where they differ; returns the CronJob as built and its uid."""
        settings = self.settings
        schedule_ok = problem is None or problem.reason not in (Reason.INVALID_SCHEDULE, Reason.INVALID_TIME_ZONE)
        schedule, zone = manifests.effective_schedule(integ.spec, settings, owner.namespace, owner.name, schedule_ok)
        suspend = integ.spec.suspend or not computed.connected
        cron = manifests.cronjob(owner, settings, schedule, zone, suspend, integ.spec.environment)
        # Two waves: the API server checks a RoleBinding against its Role (RBAC escalation prevention), so
        # the Role must exist first; everything else is independent.
        waves = [
            [
                ("serviceaccounts", manifests.service_account(owner)),
                ("roles", manifests.role(owner, integ.token_secret_name, manifests.sftp_secret_name(integ.spec))),
                ("cronjobs", cron),
            ],
            [("rolebindings", manifests.role_binding(owner))],
        ]
        if settings.qbo_gateway_service_account:
            waves[0].append(("roles", manifests.gateway_role(owner, integ.token_secret_name)))
            waves[1].append(
                ("rolebindings", manifests.gateway_role_binding(owner, settings.qbo_gateway_service_account))
            )
        key = (owner.namespace, owner.name)
        results = [r for wave in waves for r in await asyncio.gather(*(self._ensure(key, i, o) for i, o in wave))]
        return cron, str((results[2].get("metadata") or {}).get("uid") or "")

    async def _ensure(self, owner: Key, index: str, obj: dict[str, Any]) -> dict[str, Any]:
        kind, meta = obj["kind"], obj["metadata"]
        observed = self.child(owner, index, kind, meta["name"], meta["namespace"])
        if not manifests.needs_apply(obj, observed):
            assert observed is not None
            return observed
        written = manifests.comparable(await self.writer.apply(obj))
        self.remember_child(owner, kind, meta["name"], written)
        log.info("applied %s %s", kind, meta["name"], extra={"k8s_ref": _ref(meta["namespace"], meta["name"], kind)})
        return written

    async def _sync_request(
        self, integ: Integration, computed: Computed, cron: dict[str, Any], cronjob_uid: str
    ) -> str | None:
        """Handle the sync-now annotation; returns the token to echo in status.lastHandledSyncRequest."""
        token = integ.sync_requested
        if not token or token == integ.status.last_handled_sync_request:
            return integ.status.last_handled_sync_request
        why = None
        if integ.spec.suspend:
            why = "the integration is suspended (spec.suspend is true)"
        elif not computed.connected:
            why = f"the integration is not connected (phase {computed.phase.value})"
        if why is not None:
            await self.writer.event(integ, "Warning", Reason.SYNC_REQUEST_REFUSED, f"Sync request not run: {why}.")
            return token
        if not cronjob_uid:
            raise RuntimeError(f"the CronJob {cron['metadata']['name']} has no uid yet")
        job = manifests.job_from_cronjob(cron, cronjob_uid, token)
        if await self.writer.create_job(job):
            await self.writer.event(
                integ, "Normal", Reason.SYNC_REQUESTED, f"Started sync Job {job['metadata']['name']} as requested."
            )
        return token

    def _connect_link(self, integ: Integration, computed: Computed, now: dt.datetime) -> tuple[str | None, str | None]:
        """The Connect link and its expiry while not connected: the current one while good, else a new one."""
        if computed.connected:
            return None, None
        settings = self.settings
        key = settings.qbo_state_signing_key.get_secret_value()
        link = integ.status.authorization_url
        if not conditions.connect_link_current(
            link, settings.qbo_gateway_url, key, integ.namespace, integ.name, integ.uid, now.timestamp()
        ):
            expires = int(now.timestamp()) + signing.CONNECT_LINK_TTL_SECONDS
            link = signing.connect_link(settings.qbo_gateway_url, key, integ.namespace, integ.name, integ.uid, expires)
        assert link is not None
        return link, rfc3339(dt.datetime.fromtimestamp(conditions.link_expiry(link), dt.UTC))

    async def _write_status(
        self, body: Mapping[str, Any], integ: Integration, computed: Computed, handled: str | None, now: dt.datetime
    ) -> None:
        raw_status: dict[str, Any] = dict(body.get("status") or {})
        link, link_expires = self._connect_link(integ, computed, now)
        desired: dict[str, Any] = {
            "phase": computed.phase.value,
            "conditions": conditions.merge_conditions(computed.conditions, raw_status.get("conditions") or []),
            "observedGeneration": integ.generation,
            "cronJobName": names.sync_workload_name(integ.namespace, integ.name),
            "cronJobNamespace": self.settings.pod_namespace,
            "authorizationURL": link,
            "authorizationURLExpiresAt": link_expires,
            **computed.token_fields,
        }
        if handled is not None:
            desired["lastHandledSyncRequest"] = handled
        patch = conditions.status_patch(raw_status, desired)
        if not patch:
            return
        written = await self.writer.patch_status(integ.namespace, integ.name, patch)
        self.state((integ.namespace, integ.name)).written = snapshot(integration_essence(written))
        log.info("status updated: %s", ", ".join(sorted(patch)), extra={"k8s_ref": _ref(integ.namespace, integ.name)})
        if (event := conditions.phase_event(raw_status.get("phase"), computed)) is not None:
            await self.writer.event(integ, *event)
        old_synced: Mapping[str, Any] = next(
            (c for c in raw_status.get("conditions") or [] if c.get("type") == SYNCED), {}
        )
        new_synced = computed.condition(SYNCED)
        if new_synced["reason"] == Reason.JOB_FAILED and old_synced.get("reason") != Reason.JOB_FAILED:
            await self.writer.event(integ, "Warning", Reason.JOB_FAILED, new_synced["message"])
