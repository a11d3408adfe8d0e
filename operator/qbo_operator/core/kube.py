"""Thin async access to the API server (kubernetes_asyncio) shared by operator, gateway and sync.

Only what the three processes need: read an integration, patch its status, read and write Secrets
with optimistic concurrency, hold the realm claims (Leases), and emit Events. The two shapes every
writer shares are built here and nowhere else: the Event on an integration (`event_body`) and the
ownerReference (`owner_reference`). No business logic here; the token Secret's own rules are in `token_secret`."""

from __future__ import annotations

import os
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from datetime import UTC, datetime
from typing import Any

from kubernetes_asyncio import client, config
from kubernetes_asyncio.client.exceptions import ApiException

from qbo_operator.core import names
from qbo_operator.core.models import Integration, rfc3339

__all__ = ["ApiException", "Kube", "connect", "event_body", "owner_reference"]


async def _load_config() -> None:
    if os.environ.get("KUBERNETES_SERVICE_HOST") and not os.environ.get("KUBECONFIG"):
        config.load_incluster_config()  # type: ignore[no-untyped-call]
    else:
        await config.load_kube_config(config_file=os.environ.get("KUBECONFIG"))


@asynccontextmanager
async def connect() -> AsyncIterator[Kube]:
    """A Kube for the in-cluster ServiceAccount, or for $KUBECONFIG outside a cluster."""
    await _load_config()
    async with client.ApiClient() as api:
        yield Kube(api)


class Kube:
    def __init__(self, api: client.ApiClient) -> None:
        self.api = api
        self.core = client.CoreV1Api(api)
        self.custom = client.CustomObjectsApi(api)
        self.batch = client.BatchV1Api(api)
        self.coordination = client.CoordinationV1Api(api)

    # --- QuickbooksIntegration ---------------------------------------------------------------

    async def get_integration_object(self, namespace: str, name: str) -> dict[str, Any]:
        obj: dict[str, Any] = await self.custom.get_namespaced_custom_object(
            names.GROUP, names.VERSION, namespace, names.PLURAL, name
        )
        return obj

    async def get_integration(self, namespace: str, name: str) -> Integration:
        return Integration.from_object(await self.get_integration_object(namespace, name))

    async def patch_status(
        self, namespace: str, name: str, status: dict[str, Any], resource_version: str | None = None
    ) -> dict[str, Any]:
        """JSON merge patch of `.status` (keys set to None are removed). With `resource_version` the
        API server applies it only if nobody wrote since (409 otherwise): a safe read-modify-write."""
        body: dict[str, Any] = {"status": status}
        if resource_version is not None:
            body["metadata"] = {"resourceVersion": resource_version}
        obj: dict[str, Any] = await self.custom.patch_namespaced_custom_object_status(
            names.GROUP,
            names.VERSION,
            namespace,
            names.PLURAL,
            name,
            body,
            _content_type="application/merge-patch+json",  # type: ignore[call-arg]  # the stubs omit it
        )
        return obj

    # --- Secrets -----------------------------------------------------------------------------

    async def read_secret(self, namespace: str, name: str) -> client.V1Secret | None:
        try:
            return await self.core.read_namespaced_secret(name, namespace)
        except ApiException as exc:
            if exc.status == 404:
                return None
            raise

    async def create_secret(self, namespace: str, body: dict[str, Any]) -> client.V1Secret:
        return await self.core.create_namespaced_secret(namespace, body)  # type: ignore[arg-type]  # dicts serialise as-is

    async def replace_secret(self, namespace: str, name: str, body: dict[str, Any]) -> client.V1Secret:
        """PUT the whole Secret; the body's resourceVersion makes it fail with 409 if someone wrote since."""
        return await self.core.replace_namespaced_secret(name, namespace, body)  # type: ignore[arg-type]

    async def patch_secret_if_unchanged(
        self, namespace: str, name: str, resource_version: str, ops: list[dict[str, Any]]
    ) -> client.V1Secret:
        """Apply JSON-patch `ops` only if nobody wrote since `resource_version`; otherwise the leading
        `test` op fails with 422 (Unprocessable), which callers treat like a 409: re-read, never overwrite."""
        body = [{"op": "test", "path": "/metadata/resourceVersion", "value": resource_version}, *ops]
        return await self.core.patch_namespaced_secret(
            name,
            namespace,
            body,
            _content_type="application/json-patch+json",  # type: ignore[call-arg]
        )

    # --- Leases (the realm claims, the webhook coverage) ----------------------------------------

    async def read_lease(self, namespace: str, name: str) -> client.V1Lease | None:
        try:
            return await self.coordination.read_namespaced_lease(name, namespace)
        except ApiException as exc:
            if exc.status == 404:
                return None
            raise

    async def create_lease(self, namespace: str, body: dict[str, Any]) -> client.V1Lease:
        """Create or fail with 409: the API server decides which of several racing writers holds it."""
        return await self.coordination.create_namespaced_lease(namespace, body)  # type: ignore[arg-type]

    async def replace_lease(self, namespace: str, name: str, body: dict[str, Any]) -> client.V1Lease:
        """Replace under the body's resourceVersion (409 when another writer came first)."""
        return await self.coordination.replace_namespaced_lease(name, namespace, body)  # type: ignore[arg-type]

    async def delete_lease_if_unchanged(self, namespace: str, name: str, uid: str, resource_version: str) -> None:
        """Delete exactly the Lease that was read (409 if it changed since, 404 if it is gone already)."""
        await self.coordination.delete_namespaced_lease(
            name,
            namespace,
            body=client.V1DeleteOptions(
                preconditions=client.V1Preconditions(uid=uid, resource_version=resource_version)
            ),
        )

    # --- Events ------------------------------------------------------------------------------

    async def emit_event(
        self,
        integration: Integration,
        event_type: str,
        reason: str,
        message: str,
        component: str,
        *,
        event_name: str | None = None,
        instance: str | None = None,
    ) -> None:
        """Create the Event `event_body` describes (ApiException 409 when `event_name` exists already)."""
        body = event_body(
            integration, event_type, reason, message, component, datetime.now(UTC), name=event_name, instance=instance
        )
        await self.core.create_namespaced_event(integration.namespace, body)  # type: ignore[arg-type]


def event_body(
    integration: Integration,
    event_type: str,
    reason: str,
    message: str,
    component: str,
    now: datetime,
    *,
    name: str | None = None,
    instance: str | None = None,
) -> dict[str, Any]:
    """A core/v1 Event on the integration, as `kubectl describe qbi` shows them. With `name`, at most
    one such Event can exist (the operator's once-only notices); otherwise the API server names it."""
    stamp = rfc3339(now)
    metadata: dict[str, Any] = {"namespace": integration.namespace}
    if name:
        metadata["name"] = name
    else:
        metadata["generateName"] = f"{integration.name}."
    event: dict[str, Any] = {
        "metadata": metadata,
        "involvedObject": {
            "apiVersion": names.API_VERSION,
            "kind": names.KIND,
            "name": integration.name,
            "namespace": integration.namespace,
            "uid": integration.uid,
        },
        "type": event_type,
        "reason": reason,
        "message": message[:1024],
        "source": {"component": component},
        "reportingComponent": component,
        "firstTimestamp": stamp,
        "lastTimestamp": stamp,
        "count": 1,
    }
    if instance:
        event["reportingInstance"] = instance
    return event


def owner_reference(
    name: str,
    uid: str,
    *,
    api_version: str = names.API_VERSION,
    kind: str = names.KIND,
    controller: bool = True,
    block_owner_deletion: bool = True,
) -> dict[str, Any]:
    """An ownerReference, so garbage collection removes the object with its owner.

    blockOwnerDeletion is True by default: a foreground delete of the owner then waits for its
    children. The API server lets a writer set it only if that writer may `update` the owner's
    `finalizers` subresource (OwnerReferencesPermissionEnforcement); the operator's role grants that
    for QuickbooksIntegrations and CronJobs, so everything the operator creates blocks (the token Secret
    too: the operator creates it, the gateway only fills it and leaves its references alone)."""
    return {
        "apiVersion": api_version,
        "kind": kind,
        "name": name,
        "uid": uid,
        "controller": controller,
        "blockOwnerDeletion": block_owner_deletion,
    }
