"""The Writer: every API write the operator's own code makes, in one place, each counted.

qbo_operator_api_writes_total{kind,verb} lets tests and benchmarks prove that an idle operator writes nothing
(kopf itself writes only its finalizer). Children are written by server-side apply under our field manager,
only once they are known to be ours (`ownership`); the token Secret, which the gateway and the sync fill, is
created empty with a plain create (never applied: a create fails on an existing Secret instead of taking it
over). `read` looks at an object the indexes do not hold (they hold only labelled ones), before its first
write."""

from __future__ import annotations

import logging
import socket
from typing import Any

from kubernetes_asyncio import client
from kubernetes_asyncio.client.exceptions import ApiException

from qbo_operator.core import names, token_secret
from qbo_operator.core.kube import Kube
from qbo_operator.core.models import Integration
from qbo_operator.reconciler import manifests
from qbo_operator.reconciler.metrics import OperatorMetrics

log = logging.getLogger("qbo_operator.operator")

# kubernetes_asyncio accepts `_content_type` at run time; its stubs do not list it.
_APPLY_PATCH: dict[str, Any] = {"_content_type": "application/apply-patch+yaml"}
_MERGE_PATCH: dict[str, Any] = {"_content_type": "application/merge-patch+json"}


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

    async def create_token_secret(
        self, namespace: str, integration_name: str, uid: str, name: str
    ) -> dict[str, Any] | None:
        """Create the integration's empty token Secret; None when a Secret of that name exists already."""
        self._count("Secret", "create")
        try:
            body = token_secret.empty(namespace, integration_name, uid, name)
            return self._dict(await self.kube.create_secret(namespace, body))
        except ApiException as exc:
            if exc.status == 409:
                return None
            raise

    async def delete(self, kind: str, namespace: str, name: str) -> bool:
        """Delete one of our objects at home (no ownerReference collects them); its Jobs and Pods follow by
        garbage collection. False when it was gone already."""
        deleter: Any = {
            "ServiceAccount": self.kube.core.delete_namespaced_service_account,
            "CronJob": self.kube.batch.delete_namespaced_cron_job,
        }[kind]
        self._count(kind, "delete")
        try:
            await deleter(name, namespace, propagation_policy="Background")
        except ApiException as exc:
            if exc.status == 404:
                return False
            raise
        log.info("deleted %s %s/%s: its integration is gone", kind, namespace, name)
        return True

    async def read(self, kind: str, namespace: str, name: str) -> dict[str, Any] | None:
        """An object as the API server has it (a read, not counted as a write); None when absent."""
        reader: Any = {
            "ServiceAccount": self.kube.core.read_namespaced_service_account,
            "Secret": self.kube.core.read_namespaced_secret,
            "Role": self.rbac.read_namespaced_role,
            "RoleBinding": self.rbac.read_namespaced_role_binding,
            "CronJob": self.kube.batch.read_namespaced_cron_job,
        }[kind]
        try:
            return self._dict(await reader(name, namespace))
        except ApiException as exc:
            if exc.status == 404:
                return None
            raise

    async def event(
        self,
        integ: Integration,
        event_type: str,
        reason: str,
        message: str,
        event_name: str | None = None,
    ) -> bool:
        """A core/v1 Event on the integration. With `event_name`, at most one such Event exists (409: skip)."""
        self._count("Event", "create")
        try:
            await self.kube.emit_event(
                integ, event_type, reason, message, names.MANAGED_BY, event_name=event_name, instance=self.instance
            )
        except ApiException as exc:
            if exc.status == 409 and event_name:
                return False
            log.warning("could not record Event %s on %s/%s: HTTP %s", reason, integ.namespace, integ.name, exc.status)
            return False
        return True


def describe(exc: BaseException) -> str:
    """An error for the log: type and HTTP status/reason, never a response body (it may echo a Secret)."""
    if isinstance(exc, ApiException):
        return f"API error HTTP {exc.status} {exc.reason}"
    return f"{type(exc).__name__}: {exc}"
