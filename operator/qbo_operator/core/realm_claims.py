"""Realm claims: which integration a QuickBooks company belongs to, decided once, atomically, where only we write.

One Lease per (environment, realm) in the release's own namespace, named `qbo-realm-<environment>-<realm>`,
naming its holder (namespace, name and uid of the QuickbooksIntegration). The gateway creates it after Intuit
confirmed the realm for the new tokens and before it stores them; the API server lets exactly one of several
racing creates succeed, so two gateway replicas connecting one company at once cannot both win. A claim whose
holder is gone (deleted, or re-created under another uid) is taken over by deleting exactly the Lease that was
read (uid and resourceVersion preconditions) and creating it again. The operator reads a claim to settle
DuplicateRealm and releases its integration's claims on deletion.

Why not `status.realmId`: any status writer (each sync Job may patch its own integration's status, a tenant
may be granted `quickbooksintegrations/status`) could write another company's realm id there. Tenants and
sync Jobs have no access to the release namespace (docs/security.md "Realm claims")."""

from __future__ import annotations

import enum
import logging
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from typing import Any

from qbo_operator.core import names
from qbo_operator.core.kube import ApiException, Kube

log = logging.getLogger(__name__)

COMPONENT = "realm-claim"
_PREFIX = f"{names.GROUP}/claim-"
_NAMESPACE, _NAME, _UID = f"{_PREFIX}namespace", f"{_PREFIX}name", f"{_PREFIX}uid"
_TAKEOVERS = 3


@dataclass(frozen=True)
class Holder:
    namespace: str
    name: str
    uid: str

    @property
    def key(self) -> tuple[str, str]:
        return self.namespace, self.name

    def __str__(self) -> str:
        return f"{self.namespace}/{self.name}"


class Outcome(enum.Enum):
    HELD = "held"  # the claim is this integration's (new, taken over from a gone holder, or already its own)
    TAKEN = "taken"  # another integration that still exists holds it


def lease_name(environment: str, realm_id: str) -> str:
    """Realm ids are digits (the gateway accepts canonical ones only), so the name is a valid DNS label."""
    return f"qbo-realm-{environment}-{realm_id}"


def manifest(namespace: str, environment: str, realm_id: str, holder: Holder) -> dict[str, Any]:
    return {
        "apiVersion": "coordination.k8s.io/v1",
        "kind": "Lease",
        "metadata": {
            "name": lease_name(environment, realm_id),
            "namespace": namespace,
            "labels": {names.MANAGED_BY_LABEL: names.MANAGED_BY, "app.kubernetes.io/component": COMPONENT},
            "annotations": {_NAMESPACE: holder.namespace, _NAME: holder.name, _UID: holder.uid},
        },
        # holderIdentity for `kubectl get lease`; the annotations are what we read.
        "spec": {"holderIdentity": f"{holder.namespace}/{holder.name}"},
    }


def holder_of(annotations: Mapping[str, str] | None) -> Holder | None:
    """The holder a Lease's annotations name; None for a Lease that is not a well-formed claim."""
    notes = annotations or {}
    parts = notes.get(_NAMESPACE), notes.get(_NAME), notes.get(_UID)
    if not all(parts):
        return None
    return Holder(*(str(p) for p in parts))


@dataclass(frozen=True)
class Claim:
    holder: Holder | None
    uid: str
    resource_version: str


async def read(kube: Kube, namespace: str, environment: str, realm_id: str) -> Claim | None:
    lease = await kube.read_lease(namespace, lease_name(environment, realm_id))
    if lease is None:
        return None
    meta = lease.metadata
    return Claim(holder_of(meta.annotations), meta.uid or "", meta.resource_version or "")


Alive = Callable[[Holder], Awaitable[bool]]


async def claim(kube: Kube, namespace: str, environment: str, realm_id: str, me: Holder, alive: Alive) -> Outcome:
    """Hold the realm for `me`, or say who else does. `alive(holder)`: does that integration still exist
    with that uid (when unsure, say yes: refusing a Connect is recoverable, two owners of a realm are not)."""
    for _ in range(_TAKEOVERS):
        try:
            await kube.create_lease(namespace, manifest(namespace, environment, realm_id, me))
            return Outcome.HELD
        except ApiException as exc:
            if exc.status != 409:
                raise
        current = await read(kube, namespace, environment, realm_id)
        if current is None:
            continue  # released meanwhile: create again
        if current.holder == me:
            return Outcome.HELD
        if current.holder is not None and await alive(current.holder):
            return Outcome.TAKEN
        log.info(
            "realm %s: the claim of %s is stale (its integration is gone); taking it over", realm_id, current.holder
        )
        try:
            await kube.delete_lease_if_unchanged(
                namespace, lease_name(environment, realm_id), current.uid, current.resource_version
            )
        except ApiException as exc:
            if exc.status not in (404, 409):  # gone or changed meanwhile: look again
                raise
    return Outcome.TAKEN  # it kept changing under us: refuse, the person may try again


async def release(kube: Kube, namespace: str, environment: str, realm_id: str, uid: str) -> bool:
    """Delete the claim if `uid` holds it (and only that version of it); True if one was deleted."""
    current = await read(kube, namespace, environment, realm_id)
    if current is None or current.holder is None or current.holder.uid != uid:
        return False
    try:
        await kube.delete_lease_if_unchanged(
            namespace, lease_name(environment, realm_id), current.uid, current.resource_version
        )
    except ApiException as exc:
        if exc.status in (404, 409):
            return False
        raise
    return True
