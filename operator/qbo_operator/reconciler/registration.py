"""The kopf handlers on a fresh registry, and the watches that feed the views (docs/design.md §1, §2).

kopf watches the QuickbooksIntegrations only for its finalizer and the deletion handler (revoke, `housekeeping`).
What the reconcile reads comes from one `core.informer` per kind (`Watches`): each listed object or watch event
goes into the indexes (`views`, summaries only) and is reduced at once to a `Change`, a few strings, so no body
is held while anything waits. No reconcile runs before every kind has been listed once (the workers start then,
`Runtime.open`); until then the changes that need the whole picture wait as Changes. Every event of the CR or of
a labelled child queues the one level-based reconcile (`Runtime.request`), and one operator-wide scan, started at
start-up, runs the housekeeping of the integrations that are due. kopf itself writes only its finalizer (and its
progress annotations while a deletion handler retries): no create/update handlers, so no diff-base annotation
(`controller.NoDiffBase`); no indexes, timers or daemons, so kopf keeps no body and no start-up gate of its own.
Nothing registers at import time."""

from __future__ import annotations

import asyncio
import functools
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import kopf

from qbo_operator.core import names
from qbo_operator.core.informer import Informer, Resource, object_key
from qbo_operator.core.models import Integration
from qbo_operator.reconciler import housekeeping
from qbo_operator.reconciler.housekeeping import DELETE_HANDLER_RETRIES, HOUSEKEEPING_INTERVAL
from qbo_operator.reconciler.reconcile import Runtime
from qbo_operator.reconciler.views import CR, CRONJOBS, INDEXERS, SECRETS, SERVICE_ACCOUNTS, plain, secret_token

# Kinds kept at home (the release namespace), where no ownerReference can collect them: one whose integration no
# longer exists is deleted, also on the first listing (the operator may have been down when the integration went).
SWEPT = {SERVICE_ACCOUNTS: "ServiceAccount", CRONJOBS: "CronJob"}


def _runtime(memo: Any) -> Runtime:
    runtime: Runtime = memo.runtime
    return runtime


@dataclass(frozen=True, slots=True)
class Change:
    """What handling one listed object or watch event needs (`type` None: listed)."""

    resource: Resource
    type: str | None
    namespace: str
    name: str
    integration: str | None  # a child's integration label
    owner_namespace: str  # the integration's namespace: the child's own, or the one its label names at home
    at_home: bool
    realm: str | None  # a CR's status.realmId; the realm a Secret's token holds


def change(resource: Resource, event_type: str | None, body: Mapping[str, Any]) -> Change:
    namespace, name = object_key(body)
    labels = (body.get("metadata") or {}).get("labels") or {}
    realm: str | None = None
    if resource == CR:
        realm = (body.get("status") or {}).get("realmId") or None
    elif resource == SECRETS and event_type != "DELETED":
        token = secret_token(body)
        realm = token.realm_id if token is not None else None
    return Change(
        resource,
        event_type,
        namespace,
        name,
        labels.get(names.INTEGRATION_LABEL) or None,
        labels.get(names.INTEGRATION_NAMESPACE_LABEL) or namespace,
        names.INTEGRATION_NAMESPACE_LABEL in labels,
        realm,
    )


class Watches:
    """The informers of every indexed kind, and what their changes set off."""

    def __init__(self, runtime: Runtime) -> None:
        self.runtime = runtime
        self.informers = [
            Informer(
                runtime.kube.api,
                resource,
                functools.partial(self.observe, resource),
                runtime.namespaces,
                None if resource == CR else names.INTEGRATION_LABEL,  # only our labelled children travel
            )
            for resource in INDEXERS
        ]
        self._pending: list[Change] | None = []  # None once open
        self._tasks: set[asyncio.Task[Any]] = set()

    async def run(self) -> None:
        await asyncio.gather(*(informer.run() for informer in self.informers), self._open())

    async def _open(self) -> None:
        await asyncio.gather(*(informer.synced.wait() for informer in self.informers))
        pending, self._pending = self._pending or [], None
        for waiting in pending:
            self.handle(waiting, listing=waiting.type is None)
        self.runtime.open()

    def observe(self, resource: Resource, event_type: str | None, body: dict[str, Any]) -> None:
        """The informers' sink: index the object, then handle (or keep) its Change."""
        if event_type == "DELETED" and "uid" not in (body.get("metadata") or {}):  # went during a gap: name only
            body = self.runtime.last_known(resource, object_key(body)) or body
        self.runtime.apply(resource, event_type, body)
        what = change(resource, event_type, body)
        if self._pending is None:
            self.handle(what, listing=False)
        elif event_type is not None or (resource in SWEPT and what.at_home):
            self._pending.append(what)  # needs every kind listed
        else:
            self.handle(what, listing=True)  # first listing: no peer to look at yet

    def handle(self, what: Change, listing: bool) -> None:
        """`listing`: part of the first listing, where every integration is reconciled by its own CR's Change."""
        runtime = self.runtime
        if what.resource == CR:
            if what.type != "DELETED":
                runtime.request(what.namespace, what.name)
                return
            runtime.forget(what.namespace, what.name)
            for peer in runtime.realm_holders(what.realm) if what.realm else ():
                runtime.request(*peer)
            return
        if what.resource == SECRETS:
            if what.type == "DELETED" and what.integration:
                runtime.forget_child((what.namespace, what.integration), "Secret", what.name)  # created again
            if listing:
                runtime.remember_secret_realm(what.namespace, what.name, what.realm)
                return
            for target in runtime.secret_targets(what.namespace, what.name, what.integration, what.realm):
                runtime.request(*target)
            return
        if what.integration is None:
            return
        owner = (what.owner_namespace, what.integration)
        kind = SWEPT.get(what.resource)
        if kind and what.at_home and what.type != "DELETED" and runtime.body(*owner) is None:
            task = asyncio.create_task(runtime.writer.delete(kind, what.namespace, what.name))
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)
            return
        if not listing:
            runtime.request(*owner)


def build_registry(housekeeping_interval: float = HOUSEKEEPING_INTERVAL) -> kopf.OperatorRegistry:
    """All handlers on a fresh registry (nothing registers at import time)."""
    registry = kopf.OperatorRegistry()
    _register_lifecycle(registry, housekeeping_interval)
    _register_deletion(registry)
    return registry


def _register_lifecycle(registry: kopf.OperatorRegistry, housekeeping_interval: float) -> None:
    @kopf.on.login(registry=registry)
    async def login(**kwargs: Any) -> kopf.ConnectionInfo | None:
        info: kopf.ConnectionInfo | None = await kopf.login_via_async_client(**kwargs)
        return info

    @kopf.on.startup(registry=registry)
    async def startup(*, memo: Any, **_: Any) -> None:
        runtime = _runtime(memo)
        await runtime.ensure_platform_credentials()
        runtime.background(Watches(runtime).run())
        runtime.background(housekeeping.scan_forever(runtime, housekeeping_interval))

    @kopf.on.cleanup(registry=registry)
    async def cleanup(*, memo: Any, **_: Any) -> None:
        await _runtime(memo).stop()

    @kopf.on.probe(id="integrations", registry=registry)
    async def probe(*, memo: Any, **_: Any) -> int:
        return len(_runtime(memo).integration_keys())


def _register_deletion(registry: kopf.OperatorRegistry) -> None:
    @kopf.on.delete(*CR, id="revoke", registry=registry, timeout=600, retries=DELETE_HANDLER_RETRIES, backoff=10)
    async def revoke(*, body: kopf.Body, retry: int, memo: Any, **_: Any) -> None:
        await _runtime(memo).opened.wait()  # it reads the views
        await housekeeping.finalize(_runtime(memo), body, retry)
        integration = Integration.from_object(plain(body))
        await _runtime(memo).release_realm_claims(integration)
        await _runtime(memo).remove_sync_workload(integration)
