"""realm → integration index, fed by a list+watch of QuickbooksIntegrations (never a list per request).

Webhook deliveries name a realm; the callback must know whether another integration already owns
a realm (DuplicateRealm). Both read this in-memory index. `IndexState` is the pure part (apply a listed
object or a watch event) and is tested on its own; `RealmIndex` feeds it from `core.informer`."""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import Any

from pydantic import ValidationError

from qbo_operator.core import names
from qbo_operator.core.informer import Informer
from qbo_operator.core.kube import Kube
from qbo_operator.core.models import Integration

log = logging.getLogger(__name__)

Key = tuple[str, str]  # (namespace, name)


# What the gateway reads of a status (the Connect page's checks, the realm, the counts it adds to, and the last read,
# which says whether a count is urgent: webhooks.urgent); the rest (the conditions, lastSync, the rejected payments)
# and every annotation (kubectl's last-applied copy among them) would only grow the index: a whole parsed
# integration is ~15 KiB, 18 KiB of gateway memory each at 10,000 (issue 20).
INDEXED_STATUS = ("phase", "authorizationURL", "authorizationURLExpiresAt", "realmId", "webhook", "lastReadTime")


def slim(obj: dict[str, Any]) -> dict[str, Any]:
    """The CR reduced to what the gateway reads."""
    meta = {k: v for k, v in (obj.get("metadata") or {}).items() if k not in ("annotations", "managedFields")}
    status = obj.get("status") or {}
    return {**obj, "metadata": meta, "status": {k: status[k] for k in INDEXED_STATUS if k in status}}


def _parse(obj: dict[str, Any]) -> Integration | None:
    try:
        return Integration.from_object(slim(obj))
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

    def apply(self, event_type: str | None, obj: dict[str, Any]) -> None:
        """One object listed (None) or one watch event (ADDED / MODIFIED / DELETED); others change nothing."""
        meta = obj.get("metadata") or {}
        namespace, name = meta.get("namespace", ""), meta.get("name", "")
        if event_type == "DELETED":
            self.remove(namespace, name)
        elif event_type in (None, "ADDED", "MODIFIED"):
            integration = _parse(obj)
            if integration is None:
                self.remove(namespace, name)
            else:
                self.put(integration)


class RealmIndex:
    """Keeps IndexState current from the API server (`core.informer`); `synced` once every scope has been listed."""

    def __init__(self, kube: Kube, namespaces: Sequence[str] = ()) -> None:
        self.kube = kube
        self.namespaces = tuple(namespaces)
        self.state = IndexState()
        self._informer = Informer(kube.api, (names.GROUP, names.VERSION, names.PLURAL), self.state.apply, namespaces)

    @property
    def synced(self) -> bool:
        return self._informer.synced.is_set()

    def watches(self, namespace: str) -> bool:
        return not self.namespaces or namespace in self.namespaces

    def get(self, namespace: str, name: str) -> Integration | None:
        return self.state.get(namespace, name)

    def by_realm(self, realm_id: str) -> list[Integration]:
        return self.state.by_realm(realm_id)

    async def run(self) -> None:
        """Follow every scope until cancelled."""
        await self._informer.run()
