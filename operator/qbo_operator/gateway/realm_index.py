"""realm → integration index, fed by a list+watch of QuickbooksIntegrations (never a list per request).

Webhook deliveries name a realm; the callback must know whether another integration already owns
a realm (DuplicateRealm). Both read this in-memory index. `IndexState` is the pure part (apply an
event, replace a scope after a list) and is tested on its own; `RealmIndex` runs one list+watch
loop per watched namespace (or one cluster-wide) with kubernetes_asyncio."""

from __future__ import annotations

import asyncio
import logging
import random
from collections.abc import Iterable, Sequence
from typing import Any

from kubernetes_asyncio import watch
from kubernetes_asyncio.client.exceptions import ApiException
from pydantic import ValidationError

from qbo_operator.core import names
from qbo_operator.core.kube import Kube
from qbo_operator.core.models import Integration

log = logging.getLogger(__name__)

Key = tuple[str, str]  # (namespace, name)
WATCH_TIMEOUT_SECONDS = 300
_BACKOFF_MAX = 30.0


def _parse(obj: dict[str, Any]) -> Integration | None:
    try:
        return Integration.from_object(obj)
    except ValidationError as exc:
        meta = obj.get("metadata") or {}
        log.warning(
            "ignoring QuickbooksIntegration %s/%s that does not parse: %s",
            meta.get("namespace"),
            meta.get("name"),
            exc.errors()[0]["msg"],
        )
        return None


class IndexState:
    """The index itself: objects by key and keys by realm. No I/O."""

    def __init__(self) -> None:
        self._objects: dict[Key, Integration] = {}
        self._by_realm: dict[str, set[Key]] = {}

    def __len__(self) -> int:
        return len(self._objects)

    def get(self, namespace: str, name: str) -> Integration | None:
        return self._objects.get((namespace, name))

    def by_realm(self, realm_id: str) -> list[Integration]:
        """Integrations whose status.realmId is `realm_id`, sorted for a stable choice."""
        return [self._objects[k] for k in sorted(self._by_realm.get(realm_id, ()))]

    def put(self, integration: Integration) -> None:
        key = (integration.namespace, integration.name)
        self.remove(*key)
        self._objects[key] = integration
        if integration.status.realm_id:
            self._by_realm.setdefault(integration.status.realm_id, set()).add(key)

    def remove(self, namespace: str, name: str) -> None:
        old = self._objects.pop((namespace, name), None)
        if old is not None and old.status.realm_id:
            keys = self._by_realm.get(old.status.realm_id)
            if keys is not None:
                keys.discard((namespace, name))
                if not keys:
                    del self._by_realm[old.status.realm_id]

    def apply(self, event_type: str, obj: dict[str, Any]) -> None:
        """One watch event (ADDED / MODIFIED / DELETED); BOOKMARK and others change nothing."""
        meta = obj.get("metadata") or {}
        namespace, name = meta.get("namespace", ""), meta.get("name", "")
        if event_type == "DELETED":
            self.remove(namespace, name)
        elif event_type in ("ADDED", "MODIFIED"):
            integration = _parse(obj)
            if integration is None:
                self.remove(namespace, name)
            else:
                self.put(integration)

    def replace_scope(self, namespace: str | None, objects: Iterable[dict[str, Any]]) -> None:
        """After a (re)list: the scope (one namespace, or all when None) holds exactly `objects`."""
        for key in [k for k in self._objects if namespace is None or k[0] == namespace]:
            self.remove(*key)
        for obj in objects:
            integration = _parse(obj)
            if integration is not None:
                self.put(integration)


class RealmIndex:
    """Keeps IndexState current from the API server; `synced` once every scope has been listed."""

    def __init__(self, kube: Kube, namespaces: Sequence[str] = ()) -> None:
        self.kube = kube
        self.namespaces = tuple(namespaces)
        self.state = IndexState()
        self._scopes: tuple[str | None, ...] = self.namespaces or (None,)
        self._synced: set[str | None] = set()

    @property
    def synced(self) -> bool:
        return all(s in self._synced for s in self._scopes)

    def watches(self, namespace: str) -> bool:
        return not self.namespaces or namespace in self.namespaces

    def get(self, namespace: str, name: str) -> Integration | None:
        return self.state.get(namespace, name)

    def by_realm(self, realm_id: str) -> list[Integration]:
        return self.state.by_realm(realm_id)

    async def run(self) -> None:
        """Run every scope's list+watch loop until cancelled."""
        await asyncio.gather(*(self._run_scope(scope) for scope in self._scopes))

    def _list_call(self, scope: str | None) -> tuple[Any, tuple[Any, ...]]:
        custom = self.kube.custom
        if scope is None:
            return custom.list_cluster_custom_object, (names.GROUP, names.VERSION, names.PLURAL)
        return custom.list_namespaced_custom_object, (names.GROUP, names.VERSION, scope, names.PLURAL)

    async def _run_scope(self, scope: str | None) -> None:
        func, args = self._list_call(scope)
        resource_version: str | None = None
        failures = 0
        where = scope or "all namespaces"
        while True:
            try:
                if resource_version is None:
                    listing = await func(*args, _request_timeout=30)
                    self.state.replace_scope(scope, listing.get("items") or [])
                    resource_version = (listing.get("metadata") or {}).get("resourceVersion")
                    if scope not in self._synced:
                        log.info("realm index synced for %s: %d integrations", where, len(self.state))
                    self._synced.add(scope)
                async with watch.Watch() as w:
                    stream = w.stream(
                        func,
                        *args,
                        resource_version=resource_version,
                        allow_watch_bookmarks=True,
                        timeout_seconds=WATCH_TIMEOUT_SECONDS,
                        _request_timeout=(10, WATCH_TIMEOUT_SECONDS + 30),
                    )
                    async for event in stream:
                        self.state.apply(event["type"], event["raw_object"])
                        resource_version = w.resource_version or resource_version
                        failures = 0
            except asyncio.CancelledError:
                raise
            except ApiException as exc:
                if exc.status == 410:  # our resourceVersion is too old: list again
                    log.info("realm index watch for %s expired; listing again", where)
                    resource_version = None
                    continue
                failures += 1
                log.warning("realm index watch for %s failed (HTTP %s %s); retrying", where, exc.status, exc.reason)
            except Exception as exc:  # network errors, API server restarts
                failures += 1
                log.warning("realm index watch for %s interrupted (%s); retrying", where, type(exc).__name__)
            if failures:
                await asyncio.sleep(min(_BACKOFF_MAX, 0.5 * 2 ** min(failures, 6)) * random.uniform(0.5, 1.0))  # noqa: S311
