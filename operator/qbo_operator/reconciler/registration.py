"""The kopf handlers on a fresh registry: they read, call the pure functions and write (docs/design.md §1, §2).

Indexes fill the views (`views`) with summaries, never whole bodies; every watch event of the CR or of a
labelled child queues the one level-based reconcile (`Runtime.request`: the handler returns at once, so kopf's
per-object worker does not wait, holding the event, for a reconcile's turn); one operator-wide scan, started at
start-up, runs the housekeeping of the integrations that are due, and deletion revokes the grant (`housekeeping`).
kopf itself writes only its finalizer (and its progress annotations while a deletion handler retries): there
are no create/update handlers, so the diff-base annotation is never needed (`controller.NoDiffBase`), and no
timers or daemons, so kopf keeps no live body per object. Nothing registers at import time."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import kopf

from qbo_operator.core import names
from qbo_operator.core.models import Integration
from qbo_operator.reconciler import housekeeping, manifests
from qbo_operator.reconciler.housekeeping import DELETE_HANDLER_RETRIES, HOUSEKEEPING_INTERVAL
from qbo_operator.reconciler.reconcile import Runtime
from qbo_operator.reconciler.views import (
    CR,
    CRONJOBS,
    INDEXES,
    JOBS,
    LABELLED,
    ROLE_BINDINGS,
    ROLES,
    SECRETS,
    SERVICE_ACCOUNTS,
    JobView,
    Key,
    SecretView,
    Snapshot,
    integration_essence,
    job_view,
    plain,
    secret_view,
    snapshot,
)

Resource = tuple[str, str, str]


def _runtime(memo: Any) -> Runtime:
    runtime: Runtime = memo.runtime
    return runtime


def _integration_of(labels: Mapping[str, str]) -> str | None:
    return labels.get(names.INTEGRATION_LABEL) or None


def _owner_namespace(labels: Mapping[str, str], namespace: str | None) -> str:
    """The integration's namespace: the object's own, or for the sync objects at home the one their label names."""
    return labels.get(names.INTEGRATION_NAMESPACE_LABEL) or namespace or ""


def build_registry(housekeeping_interval: float = HOUSEKEEPING_INTERVAL) -> kopf.OperatorRegistry:
    """All handlers on a fresh registry (nothing registers at import time)."""
    registry = kopf.OperatorRegistry()
    _register_lifecycle(registry, housekeeping_interval)
    _register_indexes(registry)
    _register_events(registry)
    _register_deletion(registry)
    return registry


def _register_lifecycle(registry: kopf.OperatorRegistry, housekeeping_interval: float) -> None:
    @kopf.on.login(registry=registry)
    async def login(**kwargs: Any) -> kopf.ConnectionInfo | None:
        info: kopf.ConnectionInfo | None = await kopf.login_via_async_client(**kwargs)
        return info

    @kopf.on.startup(registry=registry)
    async def startup(*, memo: Any, **kwargs: Any) -> None:
        runtime = _runtime(memo)
        runtime.indices.update({name: kwargs[name] for name in INDEXES})
        await runtime.ensure_platform_credentials()
        runtime.background(housekeeping.scan_forever(runtime, housekeeping_interval))

    @kopf.on.cleanup(registry=registry)
    async def cleanup(*, memo: Any, **_: Any) -> None:
        await _runtime(memo).stop()

    @kopf.on.probe(id="integrations", registry=registry)
    async def probe(*, memo: Any, **_: Any) -> int:
        return len(_runtime(memo).integration_keys())


def _register_indexes(registry: kopf.OperatorRegistry) -> None:
    @kopf.index(*CR, id="integrations", registry=registry)
    async def integrations(*, namespace: str | None, name: str, body: kopf.Body, **_: Any) -> dict[Key, Snapshot]:
        return {(namespace or "", name): snapshot(integration_essence(body))}

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

    def child_index(resource: Resource, index_id: str) -> None:
        @kopf.index(*resource, id=index_id, labels=LABELLED, registry=registry)
        async def index(*, namespace: str | None, name: str, body: kopf.Body, **_: Any) -> dict[Key, Snapshot]:
            return {(namespace or "", name): snapshot(manifests.comparable(body))}

    child_index(SERVICE_ACCOUNTS, "serviceaccounts")
    child_index(ROLES, "roles")
    child_index(ROLE_BINDINGS, "rolebindings")
    child_index(CRONJOBS, "cronjobs")

    @kopf.index(*JOBS, id="jobs", labels=LABELLED, registry=registry)
    async def jobs(*, namespace: str | None, labels: kopf.Labels, body: kopf.Body, **_: Any) -> dict[Key, JobView]:
        return {(_owner_namespace(labels, namespace), labels[names.INTEGRATION_LABEL]): job_view(body)}


def _register_events(registry: kopf.OperatorRegistry) -> None:
    @kopf.on.event(*CR, id="integration_event", registry=registry)
    async def integration_event(
        *, type: str | None, namespace: str | None, name: str, body: kopf.Body, memo: Any, **_: Any
    ) -> None:
        runtime, namespace = _runtime(memo), namespace or ""
        if type == "DELETED":
            runtime.forget(namespace, name)
            realm = (body.get("status") or {}).get("realmId")
            if realm:
                for peer in runtime.realm_holders(realm):
                    runtime.request(*peer)
            return
        runtime.request(namespace, name)

    @kopf.on.event(*SECRETS, id="secret_event", labels=LABELLED, registry=registry)
    async def secret_event(
        *, type: str | None, namespace: str | None, name: str, labels: kopf.Labels, body: kopf.Body, memo: Any, **_: Any
    ) -> None:
        runtime, namespace = _runtime(memo), namespace or ""
        if type == "DELETED" and (integration := _integration_of(labels)):
            runtime.forget_child((namespace, integration), "Secret", name)  # a token Secret is created again
        targets = runtime.secret_targets(namespace, name, _integration_of(labels), None if type == "DELETED" else body)
        if type is None:
            return  # the initial listing: every integration is reconciled by its own listing event
        for target in targets:
            runtime.request(*target)

    def child_event(resource: Resource, event_id: str, sweep: str | None = None) -> None:
        """Reconcile the integration a child belongs to. `sweep` (a kind kept at home, where no ownerReference can
        collect it): an object whose integration no longer exists is deleted, also on the initial listing (the
        operator may have been down when the integration went)."""

        @kopf.on.event(*resource, id=event_id, labels=LABELLED, registry=registry)
        async def on_child(
            *, type: str | None, namespace: str | None, name: str, labels: kopf.Labels, memo: Any, **_: Any
        ) -> None:
            runtime, integration = _runtime(memo), _integration_of(labels)
            if integration is None:
                return
            owner_namespace = _owner_namespace(labels, namespace)
            at_home = names.INTEGRATION_NAMESPACE_LABEL in labels
            if sweep and at_home and type != "DELETED" and runtime.body(owner_namespace, integration) is None:
                await runtime.writer.delete(sweep, namespace or "", name)
                return
            if type is not None:
                runtime.request(owner_namespace, integration)

    child_event(SERVICE_ACCOUNTS, "serviceaccount_event", sweep="ServiceAccount")
    child_event(ROLES, "role_event")
    child_event(ROLE_BINDINGS, "rolebinding_event")
    child_event(CRONJOBS, "cronjob_event", sweep="CronJob")
    child_event(JOBS, "job_event")


def _register_deletion(registry: kopf.OperatorRegistry) -> None:
    @kopf.on.delete(*CR, id="revoke", registry=registry, timeout=600, retries=DELETE_HANDLER_RETRIES, backoff=10)
    async def revoke(*, body: kopf.Body, retry: int, memo: Any, **_: Any) -> None:
        await housekeeping.finalize(_runtime(memo), body, retry)
        integration = Integration.from_object(plain(body))
        await _runtime(memo).release_realm_claims(integration)
        await _runtime(memo).remove_sync_workload(integration)
