"""The kopf handlers: read, call the pure functions, write only what differs (DESIGN §1, §2).

How the pieces fit:

- Indexes (`@kopf.index`) hold what the operator observes: the CRs, the labelled Secrets (token and
  credentials Secrets, summarised without their values), ServiceAccounts, Roles, RoleBindings, CronJobs and
  sync Jobs. kopf fills every index from the initial listing before any handler runs, so a freshly started
  operator never mistakes "not listed yet" for "missing".
- One level-based `reconcile(namespace, name)` computes the desired children and status from those indexes
  (`manifests`, `conditions`) and writes only the differences, under a per-integration lock. It is called by
  watch events of the CR and of every labelled child, by a housekeeping timer, and by a retry timer after an
  error. Running it twice changes nothing; in a steady state it makes no API call at all.
- kopf itself writes only its finalizer (and its progress annotations while a deletion handler retries):
  there are no create/update handlers, so the diff-base annotation is never needed (`NoDiffBase`). The
  reconcile waits for that finalizer before its first write, so kopf's precondition-guarded patch never
  loses a race against ours: a new integration costs exactly 8 writes (10 with its token Secret), none retried.
- Deletion (`@kopf.on.delete`) revokes the grant at Intuit with bounded retries and never blocks the
  deletion for good; garbage collection removes the owned objects.
"""

from __future__ import annotations

import asyncio
import copy
import datetime as dt
import hashlib
import json
import logging
import socket
import time
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

import kopf
from kubernetes_asyncio import client
from kubernetes_asyncio.client.exceptions import ApiException
from tenacity import AsyncRetrying, RetryError, retry_if_exception_type, stop_after_attempt, wait_exponential

from qbo_operator.core import names, oauth, signing, tokens
from qbo_operator.core.config import Settings
from qbo_operator.core.kube import Kube
from qbo_operator.core.models import Integration, Phase, Tokens, TokenSecretError, rfc3339
from qbo_operator.core.status import SYNCED, Reason
from qbo_operator.reconciler import conditions, manifests
from qbo_operator.reconciler.conditions import Computed, JobOutcome, Observed, SpecProblem, TokenState
from qbo_operator.reconciler.metrics import OperatorMetrics

log = logging.getLogger("qbo_operator.operator")

CR = (names.GROUP, names.VERSION, names.PLURAL)
SECRETS = ("", "v1", "secrets")
SERVICE_ACCOUNTS = ("", "v1", "serviceaccounts")
ROLES = ("rbac.authorization.k8s.io", "v1", "roles")
ROLE_BINDINGS = ("rbac.authorization.k8s.io", "v1", "rolebindings")
CRONJOBS = ("batch", "v1", "cronjobs")
JOBS = ("batch", "v1", "jobs")
CHILD_RESOURCES = (SECRETS, SERVICE_ACCOUNTS, ROLES, ROLE_BINDINGS, CRONJOBS, JOBS)
LABELLED: dict[str, Any] = {names.INTEGRATION_LABEL: kopf.PRESENT}

HOUSEKEEPING_INTERVAL = 3600.0
HARD_EXPIRY_WARNING = dt.timedelta(days=30)
KEEPALIVE_WINDOW = dt.timedelta(days=30)  # refresh a suspended integration's tokens this long before expiry
MAX_CONCURRENT_RECONCILES = 16
RETRY_MAX_DELAY = 300.0
REVOKE_ATTEMPTS = 4
DELETE_HANDLER_RETRIES = 5

# Index ids double as the kwargs names kopf passes them under.
INDEXES = (
    "integrations",
    "realm_claims",
    "secrets",
    "realm_secrets",
    "serviceaccounts",
    "roles",
    "rolebindings",
    "cronjobs",
    "jobs",
)

Key = tuple[str, str]
# kubernetes_asyncio accepts `_content_type` at run time; its stubs do not list it.
_APPLY_PATCH: dict[str, Any] = {"_content_type": "application/apply-patch+yaml"}
_MERGE_PATCH: dict[str, Any] = {"_content_type": "application/merge-patch+json"}
_JSON_PATCH: dict[str, Any] = {"_content_type": "application/json-patch+json"}


# --- what the indexes hold -------------------------------------------------------------------


@dataclass(frozen=True)
class SecretView:
    """A labelled Secret without its values: token Secrets parsed, credentials Secrets digested."""

    integration: str
    credentials: bool
    token: TokenState | None
    observed: dict[str, Any]

    @property
    def resource_version(self) -> str:
        return str(self.observed["metadata"].get("resourceVersion", ""))

    @property
    def owner_references(self) -> list[dict[str, Any]]:
        return list(self.observed["metadata"].get("ownerReferences") or [])


@dataclass(frozen=True)
class JobView:
    name: str
    trigger: str | None
    outcome: JobOutcome | None


def _plain(body: Mapping[str, Any]) -> dict[str, Any]:
    out = copy.deepcopy(dict(body))
    (out.get("metadata") or {}).pop("managedFields", None)
    return out


def _time(value: Any) -> dt.datetime | None:
    if not value:
        return None
    try:
        return dt.datetime.fromisoformat(str(value).replace("Z", "+00:00"))
    except ValueError:
        return None


def job_view(body: Mapping[str, Any]) -> JobView:
    meta = body.get("metadata") or {}
    status = body.get("status") or {}
    outcome = None
    for cond in status.get("conditions") or []:
        if cond.get("status") != "True":
            continue
        when = _time(cond.get("lastTransitionTime")) or _time(status.get("completionTime"))
        if cond.get("type") == "Failed" and when is not None:
            outcome = JobOutcome(meta.get("name", ""), True, when, cond.get("reason"), cond.get("message"))
        elif cond.get("type") == "Complete" and outcome is None and when is not None:
            outcome = JobOutcome(meta.get("name", ""), False, _time(status.get("completionTime")) or when)
    trigger = (meta.get("annotations") or {}).get(names.TRIGGER_ANNOTATION)
    return JobView(meta.get("name", ""), trigger, outcome)


def secret_view(body: Mapping[str, Any]) -> SecretView:
    meta = body.get("metadata") or {}
    labels = meta.get("labels") or {}
    credentials = labels.get(manifests.COMPONENT_LABEL) == manifests.CREDENTIALS_COMPONENT
    token = None if credentials else TokenState.from_secret_data(body.get("data"))
    return SecretView(labels.get(names.INTEGRATION_LABEL, ""), credentials, token, manifests.comparable(body))


def _rv(obj: Mapping[str, Any] | None) -> int:
    try:
        return int(((obj or {}).get("metadata") or {}).get("resourceVersion") or -1)
    except ValueError:
        return -1


def _fresher(indexed: dict[str, Any] | None, written: dict[str, Any] | None) -> dict[str, Any] | None:
    """Our own last write until the watch catches up with it (resourceVersions of one object only grow)."""
    if written is None:
        return indexed
    if indexed is None or _rv(written) > _rv(indexed):
        return written
    return indexed


def _only(index: kopf.Index[Any, Any] | None, key: Any) -> Any:
    if index is None:
        return None
    store = index.get(key)
    return next(iter(store), None) if store else None


# --- writes ----------------------------------------------------------------------------------


class Writer:
    """Every API write the reconcile makes, counted in qbo_operator_api_writes_total{kind,verb}."""

    def __init__(self, kube: Kube, metrics: OperatorMetrics) -> None:
        self.kube = kube
        self.metrics = metrics
        self.rbac = client.RbacAuthorizationV1Api(kube.api)
        self.instance = socket.gethostname()

    def _count(self, kind: str, verb: str) -> None:
        self.metrics.api_writes.labels(kind=kind, verb=verb).inc()

    def _dict(self, obj: Any) -> dict[str, Any]:
        out: dict[str, Any] = self.kube.api.sanitize_for_serialization(obj)
        return out

    async def apply(self, obj: dict[str, Any]) -> dict[str, Any]:
        """Server-side apply (create or update) of an object we own; fields we stop setting are removed."""
        kind, meta = obj["kind"], obj["metadata"]
        name, ns = meta["name"], meta["namespace"]
        kwargs: dict[str, Any] = {"field_manager": manifests.FIELD_MANAGER, "force": True, **_APPLY_PATCH}
        self._count(kind, "apply")
        result: Any
        if kind == "ServiceAccount":
            result = await self.kube.core.patch_namespaced_service_account(name, ns, obj, **kwargs)
        elif kind == "Secret":
            result = await self.kube.core.patch_namespaced_secret(name, ns, obj, **kwargs)
        elif kind == "Role":
            result = await self.rbac.patch_namespaced_role(name, ns, obj, **kwargs)
        elif kind == "RoleBinding":
            result = await self.rbac.patch_namespaced_role_binding(name, ns, obj, **kwargs)
        elif kind == "CronJob":
            result = await self.kube.batch.patch_namespaced_cron_job(name, ns, obj, **kwargs)
        else:  # pragma: no cover - the builders make only the kinds above
            raise ValueError(f"cannot apply {kind}")
        return self._dict(result)

    async def create_job(self, job: dict[str, Any]) -> bool:
        """Create a Job; False when a Job of that name exists already (the request was handled before)."""
        self._count("Job", "create")
        try:
            body: Any = job
            await self.kube.batch.create_namespaced_job(job["metadata"]["namespace"], body)
        except ApiException as exc:
            if exc.status == 409:
                return False
            raise
        return True

    async def patch_status(self, namespace: str, name: str, patch: dict[str, Any]) -> dict[str, Any]:
        self._count(names.KIND, "patch-status")
        return await self.kube.patch_status(namespace, name, patch)

    async def annotate(self, namespace: str, name: str, annotations: dict[str, str]) -> dict[str, Any]:
        self._count(names.KIND, "patch")
        obj: dict[str, Any] = await self.kube.custom.patch_namespaced_custom_object(
            names.GROUP,
            names.VERSION,
            namespace,
            names.PLURAL,
            name,
            {"metadata": {"annotations": annotations}},
            **_MERGE_PATCH,
        )
        return obj

    async def adopt_secret(
        self, namespace: str, name: str, resource_version: str, owners: list[dict[str, Any]]
    ) -> dict[str, Any]:
        """Add our ownerReference, only if nobody wrote the Secret since we saw it (a refresh may be writing)."""
        self._count("Secret", "patch")
        body = [
            {"op": "test", "path": "/metadata/resourceVersion", "value": resource_version},
            {"op": "add", "path": "/metadata/ownerReferences", "value": owners},
        ]
        return self._dict(await self.kube.core.patch_namespaced_secret(name, namespace, body, **_JSON_PATCH))

    async def event(
        self,
        integ: Integration,
        event_type: str,
        reason: str,
        message: str,
        event_name: str | None = None,
    ) -> bool:
        """A core/v1 Event on the integration. With `event_name`, at most one such Event exists (409: skip)."""
        now = rfc3339(dt.datetime.now(dt.UTC))
        meta: dict[str, Any] = {"namespace": integ.namespace}
        if event_name:
            meta["name"] = event_name
        else:
            meta["generateName"] = f"{integ.name}."
        body: Any = {
            "metadata": meta,
            "involvedObject": {
                "apiVersion": names.API_VERSION,
                "kind": names.KIND,
                "name": integ.name,
                "namespace": integ.namespace,
                "uid": integ.uid,
            },
            "type": event_type,
            "reason": reason,
            "message": message[:1024],
            "source": {"component": names.MANAGED_BY},
            "reportingComponent": names.MANAGED_BY,
            "reportingInstance": self.instance,
            "firstTimestamp": now,
            "lastTimestamp": now,
            "count": 1,
        }
        self._count("Event", "create")
        try:
            await self.kube.core.create_namespaced_event(integ.namespace, body)
        except ApiException as exc:
            if exc.status == 409 and event_name:
                return False
            log.warning("could not record Event %s on %s/%s: HTTP %s", reason, integ.namespace, integ.name, exc.status)
            return False
        return True


# --- the runtime -----------------------------------------------------------------------------


@dataclass
class Runtime:
    """Everything the handlers share, passed to kopf as the operator-wide memo (`memo.runtime`)."""

    settings: Settings
    kube: Kube
    metrics: OperatorMetrics
    indices: dict[str, kopf.Index[Any, Any]] = field(default_factory=dict)
    writer: Writer = field(init=False)
    _locks: dict[Key, asyncio.Lock] = field(default_factory=dict)
    _written_cr: dict[Key, dict[str, Any]] = field(default_factory=dict)
    _written_child: dict[tuple[str, str, str], dict[str, Any]] = field(default_factory=dict)
    _refused_cronjob: dict[tuple[str, str, int], SpecProblem] = field(default_factory=dict)
    _failures: dict[Key, int] = field(default_factory=dict)
    _retries: dict[Key, asyncio.Task[None]] = field(default_factory=dict)
    _secret_realms: dict[Key, str] = field(default_factory=dict)
    _warned: dict[Key, str] = field(default_factory=dict)
    _dead_grants: dict[Key, tuple[str, str]] = field(default_factory=dict)
    _semaphore: asyncio.Semaphore = field(default_factory=lambda: asyncio.Semaphore(MAX_CONCURRENT_RECONCILES))

    def __post_init__(self) -> None:
        self.writer = Writer(self.kube, self.metrics)

    # reading the indexes -------------------------------------------------------------------
    def index(self, name: str) -> kopf.Index[Any, Any] | None:
        return self.indices.get(name)

    def integration_bodies(self) -> Iterable[dict[str, Any]]:
        index = self.index("integrations")
        if index is None:
            return []
        return [body for store in list(index.values()) for body in list(store)]

    def body(self, namespace: str, name: str) -> dict[str, Any] | None:
        indexed = _only(self.index("integrations"), (namespace, name))
        if indexed is None:
            return None  # deleted (or not listed): never resurrect it from our own writes
        return _fresher(indexed, self._written_cr.get((namespace, name)))

    def child(self, index: str, kind: str, namespace: str, name: str) -> dict[str, Any] | None:
        indexed = _only(self.index(index), (namespace, name))
        if index == "secrets" and indexed is not None:
            indexed = indexed.observed
        return _fresher(indexed, self._written_child.get((kind, namespace, name)))

    def secret(self, namespace: str, name: str) -> SecretView | None:
        view: SecretView | None = _only(self.index("secrets"), (namespace, name))
        return view

    def last_job(self, namespace: str, name: str) -> JobOutcome | None:
        index = self.index("jobs")
        store = index.get((namespace, name)) if index is not None else None
        finished = [v.outcome for v in (store or []) if v.outcome is not None]
        return max(finished, key=lambda o: (o.finished_at, o.name), default=None)

    def realm_holders(self, realm: str) -> set[Key]:
        """Integrations that claim `realm` in status.realmId or hold it in their token Secret."""
        holders: set[Key] = set()
        claims, secrets = self.index("realm_claims"), self.index("realm_secrets")
        holders.update(claims.get(realm, ()) if claims is not None else ())
        for ns, integration, secret_name in secrets.get(realm, ()) if secrets is not None else ():
            body = self.body(ns, integration)
            if body is not None and Integration.from_object(body).token_secret_name == secret_name:
                holders.add((ns, integration))
        return holders

    def realm_owner(self, realm: str, me: Key) -> str | None:
        """The integration that owns `realm` when it is not `me`: the oldest that claimed it in its status,
        else the oldest whose token Secret holds it."""
        holders = {h for h in self.realm_holders(realm) if h == me or self._alive(h)}
        if holders <= {me}:
            return None
        claims = self.index("realm_claims")
        claimed = {h for h in holders if claims is not None and h in (claims.get(realm) or ())}
        pool = claimed or holders

        def age(key: Key) -> tuple[str, str, str]:
            body = self.body(*key) or {}
            return str((body.get("metadata") or {}).get("creationTimestamp") or ""), key[0], key[1]

        owner = min(pool, key=age)
        return None if owner == me else f"{owner[0]}/{owner[1]}"

    def secret_targets(
        self, namespace: str, name: str, integration: str | None, body: Mapping[str, Any] | None
    ) -> set[Key]:
        """Integrations to reconcile after a labelled Secret changed (`body` None: it was deleted): its own,
        and every other that holds the realm it holds now or held before (DuplicateRealm may resolve)."""
        targets: set[Key] = {(namespace, integration)} if integration else set()
        realms = {self._secret_realms.pop((namespace, name), None)}
        view = secret_view(body) if body is not None else None
        if view is not None and view.token is not None and view.token.realm_id:
            realms.add(view.token.realm_id)
            self._secret_realms[(namespace, name)] = view.token.realm_id
        for realm in realms:
            if realm:
                targets.update(self.realm_holders(realm))
        return targets

    def _alive(self, key: Key) -> bool:
        body = self.body(*key)
        return body is not None and not (body.get("metadata") or {}).get("deletionTimestamp")

    # reconcile -----------------------------------------------------------------------------
    def _lock(self, key: Key) -> asyncio.Lock:
        return self._locks.setdefault(key, asyncio.Lock())

    async def reconcile(self, namespace: str, name: str) -> None:
        """Bring one integration to its desired state; errors are logged and retried with back-off."""
        key = (namespace, name)
        async with self._lock(key), self._semaphore:
            started = time.monotonic()
            try:
                await self._reconcile(namespace, name)
            except Exception as exc:
                self.metrics.reconcile_total.labels(result="error").inc()
                delay = self._schedule_retry(key)
                log.error(
                    "reconcile failed (%s); retrying in %.0fs",
                    _describe(exc),
                    delay,
                    extra={"k8s_ref": {"namespace": namespace, "name": name, "kind": names.KIND}},
                )
            else:
                self.metrics.reconcile_total.labels(result="success").inc()
                self._failures.pop(key, None)
            finally:
                self.metrics.reconcile_duration.observe(time.monotonic() - started)

    def _schedule_retry(self, key: Key) -> float:
        attempt = self._failures.get(key, 0) + 1
        self._failures[key] = attempt
        delay = min(RETRY_MAX_DELAY, float(2**attempt))
        task = self._retries.get(key)
        if task is None or task.done():
            self._retries[key] = asyncio.create_task(self._retry_later(key, delay))
        return delay

    async def _retry_later(self, key: Key, delay: float) -> None:
        await asyncio.sleep(delay)
        self._retries.pop(key, None)
        await self.reconcile(*key)

    def forget(self, namespace: str, name: str) -> None:
        key = (namespace, name)
        for table in (self._written_cr, self._failures, self._warned, self._dead_grants):
            table.pop(key, None)
        task = self._retries.pop(key, None)
        if task is not None:
            task.cancel()
        self._written_child = {k: v for k, v in self._written_child.items() if k[1:] != key}
        self._refused_cronjob = {k: v for k, v in self._refused_cronjob.items() if k[:2] != key}
        lock = self._locks.get(key)
        if lock is not None and not lock.locked():
            del self._locks[key]

    async def stop(self) -> None:
        tasks = list(self._retries.values())
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)

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
        settings = self.settings
        now = dt.datetime.now(dt.UTC)
        owner = manifests.Owner(namespace, name, integ.uid)
        view = self.secret(namespace, integ.token_secret_name)
        token = view.token if view is not None and view.token is not None else TokenState.missing()

        problem = conditions.check_spec(
            integ.spec,
            name,
            integ.annotations.get(conditions.CONNECTED_ENVIRONMENT_ANNOTATION),
            settings.qbo_default_time_zone,
        ) or self._refused_cronjob.get((namespace, name, integ.generation))
        observed = Observed(
            namespace=namespace,
            name=name,
            generation=integ.generation,
            spec=integ.spec,
            status=integ.status,
            token=token,
            now=now,
            spec_problem=problem,
            duplicate_owner=self.realm_owner(token.realm_id, (namespace, name)) if token.realm_id else None,
            last_job=self.last_job(namespace, name),
            dead_grant=self._dead_grants.get((namespace, name)),
        )
        computed = conditions.compute(observed)

        # The owned objects.
        schedule_ok = problem is None or problem.reason not in (Reason.INVALID_SCHEDULE, Reason.INVALID_TIME_ZONE)
        schedule, zone = manifests.effective_schedule(integ.spec, settings, namespace, name, schedule_ok)
        cron = manifests.cronjob(owner, settings, schedule, zone, integ.spec.suspend or not computed.connected)
        # Two waves: the API server checks a RoleBinding against its Role (RBAC escalation prevention), so
        # the Role must exist first; everything else is independent.
        waves = [
            [
                ("serviceaccounts", manifests.service_account(owner)),
                ("roles", manifests.role(owner, integ.token_secret_name)),
                ("secrets", manifests.credentials_secret(owner, settings)),
                ("cronjobs", cron),
            ],
            [("rolebindings", manifests.role_binding(owner))],
        ]
        if settings.qbo_gateway_service_account:
            waves[0].append(("roles", manifests.gateway_role(owner, integ.token_secret_name)))
            waves[1].append(
                ("rolebindings", manifests.gateway_role_binding(owner, settings.qbo_gateway_service_account))
            )
        try:
            results = [r for wave in waves for r in await asyncio.gather(*(self._ensure(i, o) for i, o in wave))]
        except ApiException as exc:
            refusal = cronjob_refusal(exc) if attempt == 0 else None
            if refusal is None:
                raise
            # The API server judges cron syntax a little differently from croniter: say so, then retry with
            # the CronJob on the default schedule (suspended, as the phase is now Error).
            self._refused_cronjob[(namespace, name, integ.generation)] = refusal
            await self._reconcile(namespace, name, attempt=1)
            return
        cronjob_uid = str((results[3].get("metadata") or {}).get("uid") or "")

        if view is not None and view.token is not None:
            await self._adopt(owner, integ.token_secret_name, view)

        if computed.connected and conditions.CONNECTED_ENVIRONMENT_ANNOTATION not in integ.annotations:
            written = await self.writer.annotate(
                namespace, name, {conditions.CONNECTED_ENVIRONMENT_ANNOTATION: integ.spec.environment}
            )
            self._written_cr[(namespace, name)] = _plain(written)

        handled = await self._sync_request(integ, computed, cron, cronjob_uid)
        await self._write_status(self.body(namespace, name) or body, integ, computed, handled, now)
        self._dead_grants.pop((namespace, name), None)  # recorded in status now; it holds from there

    async def _ensure(self, index: str, obj: dict[str, Any]) -> dict[str, Any]:
        meta = obj["metadata"]
        key = (obj["kind"], meta["namespace"], meta["name"])
        observed = self.child(index, obj["kind"], meta["namespace"], meta["name"])
        if not manifests.needs_apply(obj, observed):
            assert observed is not None
            return observed
        written = manifests.comparable(await self.writer.apply(obj))
        self._written_child[key] = written
        log.info(
            "applied %s %s",
            obj["kind"],
            meta["name"],
            extra={"k8s_ref": {"namespace": meta["namespace"], "name": meta["name"], "kind": obj["kind"]}},
        )
        return written

    async def _adopt(self, owner: manifests.Owner, secret_name: str, view: SecretView) -> None:
        """Make the CR own its token Secret (DESIGN §3), so garbage collection removes it with the CR."""
        observed = _fresher(view.observed, self._written_child.get(("Secret", owner.namespace, secret_name)))
        assert observed is not None
        meta = observed.get("metadata") or {}
        owners = list(meta.get("ownerReferences") or [])
        if any(ref.get("uid") == owner.uid for ref in owners):
            return
        ours = owner.reference()
        if any(ref.get("controller") for ref in owners):
            ours["controller"] = False
        try:
            written = await self.writer.adopt_secret(
                owner.namespace, secret_name, str(meta.get("resourceVersion", "")), [*owners, ours]
            )
        except ApiException as exc:
            if exc.status not in (404, 409, 422):
                raise  # 404 gone, 409/422 changed since we saw it: the next event brings it back here
            return
        self._written_child[("Secret", owner.namespace, secret_name)] = manifests.comparable(written)

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
            await self.writer.event(integ, "Warning", "SyncRequestRefused", f"Sync request not run: {why}.")
            return token
        if not cronjob_uid:
            raise RuntimeError(f"the CronJob {names.cronjob_name(integ.name)} has no uid yet")
        job = manifests.job_from_cronjob(cron, cronjob_uid, token)
        if await self.writer.create_job(job):
            await self.writer.event(
                integ, "Normal", "SyncRequested", f"Started sync Job {job['metadata']['name']} as requested."
            )
        return token

    async def _write_status(
        self, body: Mapping[str, Any], integ: Integration, computed: Computed, handled: str | None, now: dt.datetime
    ) -> None:
        settings, status = self.settings, integ.status
        raw_status: dict[str, Any] = dict(body.get("status") or {})
        link: str | None = None
        link_expires: str | None = None
        if not computed.connected:
            key = settings.qbo_state_signing_key.get_secret_value()
            link = status.authorization_url
            if not conditions.connect_link_current(
                link, settings.qbo_gateway_url, key, integ.namespace, integ.name, integ.uid, now.timestamp()
            ):
                expires = int(now.timestamp()) + signing.CONNECT_LINK_TTL_SECONDS
                link = signing.connect_link(
                    settings.qbo_gateway_url, key, integ.namespace, integ.name, integ.uid, expires
                )
            assert link is not None
            link_expires = rfc3339(dt.datetime.fromtimestamp(conditions.link_expiry(link), dt.UTC))
        desired: dict[str, Any] = {
            "phase": computed.phase.value,
            "conditions": conditions.merge_conditions(computed.conditions, raw_status.get("conditions") or []),
            "observedGeneration": integ.generation,
            "cronJobName": names.cronjob_name(integ.name),
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
        self._written_cr[(integ.namespace, integ.name)] = _plain(written)
        ref = {"namespace": integ.namespace, "name": integ.name, "kind": names.KIND}
        log.info("status updated: %s", ", ".join(sorted(patch)), extra={"k8s_ref": ref})
        if (event := conditions.phase_event(raw_status.get("phase"), computed)) is not None:
            await self.writer.event(integ, *event)
        old_synced: Mapping[str, Any] = next(
            (c for c in raw_status.get("conditions") or [] if c.get("type") == SYNCED), {}
        )
        new_synced = computed.condition(SYNCED)
        if new_synced["reason"] == Reason.JOB_FAILED and old_synced.get("reason") != Reason.JOB_FAILED:
            await self.writer.event(integ, "Warning", Reason.JOB_FAILED.value, new_synced["message"])

    # housekeeping --------------------------------------------------------------------------
    async def housekeeping(self, namespace: str, name: str) -> None:
        """The timer: re-check what depends on the clock (Connect link expiry, refresh-token expiry), keep a
        suspended integration's grant alive, and warn before Intuit's hard expiry."""
        await self.reconcile(namespace, name)
        body = self.body(namespace, name)
        if body is None:
            return
        integ = Integration.from_object(body)
        view = self.secret(namespace, integ.token_secret_name)
        token = view.token if view is not None else None
        if token is None or not token.valid or integ.status.phase != Phase.CONNECTED:
            return
        now = dt.datetime.now(dt.UTC)
        if integ.spec.suspend:
            await self._keep_alive(integ, token, now)
        hard = token.refresh_token_hard_expires_at
        if hard is not None and hard - now <= HARD_EXPIRY_WARNING:
            day = now.strftime("%Y%m%d")
            if self._warned.get((namespace, name)) != day:
                digest = hashlib.sha256(f"{integ.uid}/{day}".encode()).hexdigest()[:10]
                await self.writer.event(
                    integ,
                    "Warning",
                    "RefreshTokenHardExpiry",
                    f"Intuit ends this grant at {rfc3339(hard)} (its 5-year limit), whatever the refreshes: "
                    "before then a person at the company must connect again with a fresh Connect link "
                    "(delete the token Secret to get one).",
                    event_name=f"{name}.hard-expiry.{digest}",
                )
                self._warned[(namespace, name)] = day

    async def _keep_alive(self, integ: Integration, token: TokenState, now: dt.datetime) -> None:
        """Suspended integrations run no sync, so nothing else refreshes their rolling refresh token: refresh
        it (persisting the rotation first, `tokens`) once it has less than KEEPALIVE_WINDOW left."""
        expires = token.refresh_token_expires_at
        if expires is None or expires - now > KEEPALIVE_WINDOW:
            return
        ref = {"namespace": integ.namespace, "name": integ.name, "kind": names.KIND}
        try:
            await tokens.ensure_fresh_tokens(
                self.kube, self.settings, integ.namespace, integ.token_secret_name, force=True
            )
        except tokens.GrantDead as exc:
            log.warning("keep-alive refresh: Intuit refused the grant (%s)", exc.reason, extra={"k8s_ref": ref})
            self._dead_grants[(integ.namespace, integ.name)] = (exc.reason, str(exc))
            await self.reconcile(integ.namespace, integ.name)
            return
        except (tokens.RefreshUnavailable, tokens.SecretMissing, TokenSecretError, ApiException) as exc:
            log.warning(
                "keep-alive refresh failed, retrying at the next tick: %s", _describe(exc), extra={"k8s_ref": ref}
            )
            return
        log.info("refreshed the tokens of a suspended integration to keep its grant alive", extra={"k8s_ref": ref})

    # deletion ------------------------------------------------------------------------------
    async def finalize(self, body: Mapping[str, Any], retry: int) -> None:
        """Revoke the grant at Intuit (when asked to), with bounded retries; never block deletion for good."""
        integ = Integration.from_object(_plain(body))
        ref = {"namespace": integ.namespace, "name": integ.name, "kind": names.KIND}
        if not integ.spec.revoke_on_delete:
            return
        try:
            secret = await self.kube.read_secret(integ.namespace, integ.token_secret_name)
        except ApiException as exc:
            if retry + 1 < DELETE_HANDLER_RETRIES:
                raise kopf.TemporaryError(f"cannot read the token Secret: HTTP {exc.status}", delay=10) from None
            await self._gave_up(integ, f"the token Secret could not be read (HTTP {exc.status})")
            return
        if secret is None or not secret.data:
            log.info("no token Secret: nothing to revoke at Intuit", extra={"k8s_ref": ref})
            return
        try:
            refresh_token = Tokens.from_secret_data(secret.data).refresh_token
        except TokenSecretError as exc:
            log.info("token Secret unusable (%s): nothing to revoke", exc, extra={"k8s_ref": ref})
            return
        try:
            async for attempt in AsyncRetrying(
                stop=stop_after_attempt(REVOKE_ATTEMPTS),
                wait=wait_exponential(multiplier=1, min=1, max=15),
                retry=retry_if_exception_type(oauth.OAuthError),
                reraise=False,
            ):
                with attempt:
                    await asyncio.to_thread(oauth.revoke, self.settings, refresh_token)
        except RetryError as exc:
            cause = exc.last_attempt.exception()
            await self._gave_up(integ, str(cause) if cause is not None else "unknown error")
            return
        log.info("revoked the grant at Intuit", extra={"k8s_ref": ref})
        await self.writer.event(integ, "Normal", "Revoked", "Revoked the QuickBooks grant at Intuit.")

    async def _gave_up(self, integ: Integration, why: str) -> None:
        ref = {"namespace": integ.namespace, "name": integ.name, "kind": names.KIND}
        log.warning("gave up revoking the grant at Intuit: %s", why, extra={"k8s_ref": ref})
        await self.writer.event(
            integ,
            "Warning",
            "RevokeFailed",
            f"Could not revoke the QuickBooks grant at Intuit ({why}); deleting anyway. Disconnect the app in "
            "QuickBooks (Settings > Apps) to end the grant.",
        )


def _describe(exc: BaseException) -> str:
    """An error for the log: type and HTTP status/reason, never a response body (it may echo a Secret)."""
    if isinstance(exc, ApiException):
        return f"API error HTTP {exc.status} {exc.reason}"
    return f"{type(exc).__name__}: {exc}"


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


# --- registration ----------------------------------------------------------------------------


def _runtime(memo: Any) -> Runtime:
    runtime: Runtime = memo.runtime
    return runtime


def _integration_of(labels: Mapping[str, str]) -> str | None:
    return labels.get(names.INTEGRATION_LABEL) or None


def build_registry(housekeeping_interval: float = HOUSEKEEPING_INTERVAL) -> kopf.OperatorRegistry:
    """All handlers on a fresh registry (nothing registers at import time)."""
    registry = kopf.OperatorRegistry()

    @kopf.on.login(registry=registry)
    async def login(**kwargs: Any) -> kopf.ConnectionInfo | None:
        info: kopf.ConnectionInfo | None = await kopf.login_via_async_client(**kwargs)
        return info

    @kopf.on.startup(registry=registry)
    async def startup(*, memo: Any, **kwargs: Any) -> None:
        runtime = _runtime(memo)
        runtime.indices.update({name: kwargs[name] for name in INDEXES})

    @kopf.on.cleanup(registry=registry)
    async def cleanup(*, memo: Any, **_: Any) -> None:
        await _runtime(memo).stop()

    @kopf.on.probe(id="integrations", registry=registry)
    async def probe(*, memo: Any, **_: Any) -> int:
        return sum(1 for _ in _runtime(memo).integration_bodies())

    # Indexes -------------------------------------------------------------------------------
    @kopf.index(*CR, id="integrations", registry=registry)
    async def integrations(*, namespace: str | None, name: str, body: kopf.Body, **_: Any) -> dict[Key, dict[str, Any]]:
        return {(namespace or "", name): _plain(body)}

    @kopf.index(*CR, id="realm_claims", registry=registry)
    async def realm_claims(*, namespace: str | None, name: str, status: kopf.Status, **_: Any) -> dict[str, Key]:
        realm = status.get("realmId")
        return {str(realm): (namespace or "", name)} if realm else {}

    @kopf.index(*SECRETS, id="secrets", labels=LABELLED, registry=registry)
    async def secrets(*, namespace: str | None, name: str, body: kopf.Body, **_: Any) -> dict[Key, SecretView]:
        return {(namespace or "", name): secret_view(body)}

    @kopf.index(*SECRETS, id="realm_secrets", labels=LABELLED, registry=registry)
    async def realm_secrets(
        *, namespace: str | None, name: str, body: kopf.Body, **_: Any
    ) -> dict[str, tuple[str, str, str]]:
        view = secret_view(body)
        if view.token is None or view.token.realm_id is None:
            return {}
        return {view.token.realm_id: (namespace or "", view.integration, name)}

    def child_index(resource: tuple[str, str, str], index_id: str) -> None:
        @kopf.index(*resource, id=index_id, labels=LABELLED, registry=registry)
        async def index(*, namespace: str | None, name: str, body: kopf.Body, **_: Any) -> dict[Key, dict[str, Any]]:
            return {(namespace or "", name): manifests.comparable(body)}

    child_index(SERVICE_ACCOUNTS, "serviceaccounts")
    child_index(ROLES, "roles")
    child_index(ROLE_BINDINGS, "rolebindings")
    child_index(CRONJOBS, "cronjobs")

    @kopf.index(*JOBS, id="jobs", labels=LABELLED, registry=registry)
    async def jobs(*, namespace: str | None, labels: kopf.Labels, body: kopf.Body, **_: Any) -> dict[Key, JobView]:
        return {(namespace or "", labels[names.INTEGRATION_LABEL]): job_view(body)}

    # Events --------------------------------------------------------------------------------
    @kopf.on.event(*CR, registry=registry)
    async def integration_event(
        *, type: str | None, namespace: str | None, name: str, body: kopf.Body, memo: Any, **_: Any
    ) -> None:
        runtime, namespace = _runtime(memo), namespace or ""
        if type == "DELETED":
            runtime.forget(namespace, name)
            realm = (body.get("status") or {}).get("realmId")
            if realm:
                await asyncio.gather(*(runtime.reconcile(*peer) for peer in runtime.realm_holders(realm)))
            return
        await runtime.reconcile(namespace, name)

    @kopf.on.event(*SECRETS, labels=LABELLED, registry=registry)
    async def secret_event(
        *, type: str | None, namespace: str | None, name: str, labels: kopf.Labels, body: kopf.Body, memo: Any, **_: Any
    ) -> None:
        runtime, namespace = _runtime(memo), namespace or ""
        targets = runtime.secret_targets(namespace, name, _integration_of(labels), None if type == "DELETED" else body)
        if type is None:
            return  # the initial listing: every integration is reconciled by its own listing event
        await asyncio.gather(*(runtime.reconcile(*target) for target in targets))

    def child_event(resource: tuple[str, str, str], event_id: str) -> None:
        @kopf.on.event(*resource, id=event_id, labels=LABELLED, registry=registry)
        async def on_child(
            *, type: str | None, namespace: str | None, labels: kopf.Labels, memo: Any, **_: Any
        ) -> None:
            if type is None:
                return
            if integration := _integration_of(labels):
                await _runtime(memo).reconcile(namespace or "", integration)

    child_event(SERVICE_ACCOUNTS, "serviceaccount_event")
    child_event(ROLES, "role_event")
    child_event(ROLE_BINDINGS, "rolebinding_event")
    child_event(CRONJOBS, "cronjob_event")
    child_event(JOBS, "job_event")

    # Timers and deletion -------------------------------------------------------------------
    def spread(*, namespace: str | None, name: str, **_: Any) -> float:
        """Start each integration's timer at its own offset, so a restart does not fire them all at once."""
        digest = int.from_bytes(hashlib.sha256(f"{namespace}/{name}".encode()).digest()[:4], "big")
        return float(digest % max(1, int(housekeeping_interval)))

    @kopf.timer(*CR, id="housekeeping", interval=housekeeping_interval, initial_delay=spread, registry=registry)
    async def housekeeping(*, namespace: str | None, name: str, memo: Any, **_: Any) -> None:
        await _runtime(memo).housekeeping(namespace or "", name)

    @kopf.on.delete(*CR, id="revoke", registry=registry, timeout=600, retries=DELETE_HANDLER_RETRIES, backoff=10)
    async def revoke(*, body: kopf.Body, retry: int, memo: Any, **_: Any) -> None:
        await _runtime(memo).finalize(body, retry)

    return registry
