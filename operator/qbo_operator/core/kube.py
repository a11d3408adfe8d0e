"""Thin async access to the API server (kubernetes_asyncio) shared by operator, gateway and sync.

Only what the three processes need: read an integration, patch its status, read and write the
token Secret with optimistic concurrency, and emit Events. No business logic here."""

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

__all__ = ["ApiException", "Kube", "connect"]


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

    async def replace_secret_data(
        self, namespace: str, name: str, data: dict[str, str], resource_version: str
    ) -> client.V1Secret:
        """Replace `data` only if nobody wrote since `resource_version`; otherwise the failed `test` op
        answers 422 (Unprocessable), which callers treat like a 409 conflict: re-read, do not overwrite."""
        body = [
            {"op": "test", "path": "/metadata/resourceVersion", "value": resource_version},
            {"op": "replace", "path": "/data", "value": data},
        ]
        return await self.core.patch_namespaced_secret(
            name,
            namespace,
            body,
            _content_type="application/json-patch+json",  # type: ignore[call-arg]
        )

    # --- Events ------------------------------------------------------------------------------

    async def emit_event(
        self, integration: Integration, event_type: str, reason: str, message: str, component: str
    ) -> None:
        """A core/v1 Event on the integration, as `kubectl describe qbi` shows them."""
        now = datetime.now(UTC)
        event = {
            "metadata": {"generateName": f"{integration.name}.", "namespace": integration.namespace},
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
            "firstTimestamp": rfc3339(now),
            "lastTimestamp": rfc3339(now),
            "count": 1,
        }
        await self.core.create_namespaced_event(integration.namespace, event)  # type: ignore[arg-type]
