"""The objects the operator keeps for each integration, as plain dicts (pure, no I/O).

The sync runs in the release namespace ("home"), where the platform credentials are (one Secret per Intuit
environment, `credentials_secret`), so a tenant namespace holds nothing but that tenant's tokens: the CronJob
and its ServiceAccount live at home, named for the integration's namespace and name and labelled with its uid
(no ownerReference can cross namespaces; the operator deletes them with the integration). In the tenant's
namespace a Role and RoleBinding, owned by the CR, let that ServiceAccount touch exactly its own token Secret
(and, delivering over SFTP, read its SFTP Secret) and its own CR (docs/security.md "Platform credentials").

`needs_apply` compares what we want with what the API server has (which adds defaults of its own),
so the reconcile writes only when something we own differs."""

from __future__ import annotations

import base64
import copy
import hashlib
import json
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from qbo_operator.core import names
from qbo_operator.core.config import Environment, Settings, app_variables
from qbo_operator.core.kube import owner_reference
from qbo_operator.core.models import IntegrationSpec
from qbo_operator.core.schedule import expand

FIELD_MANAGER = "qbo-operator"
COMPONENT_LABEL = "app.kubernetes.io/component"
SYNC_COMPONENT = "sync"
CREDENTIALS_COMPONENT = "sync-credentials"
CONTAINER_NAME = "sync"
RUN_AS = 65532
MANUAL_INSTANTIATE_ANNOTATION = "cronjob.kubernetes.io/instantiate"

# Job limits. The sync resumes from its watermark, so retries and deadlines lose nothing.
BACKOFF_LIMIT = 2
ACTIVE_DEADLINE_SECONDS = 2 * 3600
TTL_SECONDS_AFTER_FINISHED = 2 * 24 * 3600
STARTING_DEADLINE_SECONDS = 3600
SUCCESSFUL_JOBS_HISTORY_LIMIT = 3
FAILED_JOBS_HISTORY_LIMIT = 3
CONFIG_ERROR_EXIT_CODE = 2  # `qbo-operator` exits 2 on configuration errors: retrying cannot help


@dataclass(frozen=True)
class Owner:
    """The QuickbooksIntegration that owns everything built here, and the release namespace its sync runs in."""

    namespace: str
    name: str
    uid: str
    home: str

    def reference(self) -> dict[str, Any]:
        return owner_reference(self.name, self.uid)

    @property
    def account(self) -> str:
        """The Role and RoleBinding in the integration's namespace."""
        return names.sync_access_name(self.name)

    @property
    def workload(self) -> str:
        """The CronJob and its ServiceAccount at home."""
        return names.sync_workload_name(self.namespace, self.name)


def labels(name: str, component: str = SYNC_COMPONENT) -> dict[str, str]:
    return {
        names.MANAGED_BY_LABEL: names.MANAGED_BY,
        "app.kubernetes.io/name": "qbo-operator",
        COMPONENT_LABEL: component,
        names.INTEGRATION_LABEL: name,
    }


def home_labels(owner: Owner) -> dict[str, str]:
    """Labels of the sync objects at home: whose they are (namespace, name, uid), in place of an ownerReference."""
    return {
        **labels(owner.name),
        names.INTEGRATION_NAMESPACE_LABEL: owner.namespace,
        names.INTEGRATION_UID_LABEL: owner.uid,
    }


def _metadata(owner: Owner, name: str, component: str = SYNC_COMPONENT) -> dict[str, Any]:
    return {
        "name": name,
        "namespace": owner.namespace,
        "labels": labels(owner.name, component),
        "ownerReferences": [owner.reference()],
    }


def _home_metadata(owner: Owner) -> dict[str, Any]:
    return {"name": owner.workload, "namespace": owner.home, "labels": home_labels(owner)}


def service_account(owner: Owner) -> dict[str, Any]:
    return {
        "apiVersion": "v1",
        "kind": "ServiceAccount",
        "metadata": _home_metadata(owner),
        "automountServiceAccountToken": False,  # the Job's pod opts in itself
    }


def sftp_secret_name(spec: IntegrationSpec) -> str | None:
    """The Secret the sync reads its SSH login from when it delivers over SFTP, else None."""
    delivery = spec.delivery
    return delivery.sftp.secret_name if delivery.method == "sftp" and delivery.sftp is not None else None


def role(owner: Owner, token_secret: str, sftp_secret: str | None = None) -> dict[str, Any]:
    """Only its own token Secret and its own CR, by name; Events cannot be restricted by name. Delivering over
    SFTP, the sync also reads (`get` only) its SFTP Secret, by name."""
    secret_rules: list[dict[str, Any]] = [
        {
            "apiGroups": [""],
            "resources": ["secrets"],
            "resourceNames": [token_secret],
            "verbs": ["get", "update", "patch"],
        }
    ]
    if sftp_secret and sftp_secret != token_secret:
        secret_rules.append(
            {"apiGroups": [""], "resources": ["secrets"], "resourceNames": [sftp_secret], "verbs": ["get"]}
        )
    return {
        "apiVersion": "rbac.authorization.k8s.io/v1",
        "kind": "Role",
        "metadata": _metadata(owner, owner.account),
        "rules": [
            *secret_rules,
            {
                "apiGroups": [names.GROUP],
                "resources": [names.PLURAL],
                "resourceNames": [owner.name],
                "verbs": ["get"],
            },
            {
                "apiGroups": [names.GROUP],
                "resources": [f"{names.PLURAL}/status"],
                "resourceNames": [owner.name],
                "verbs": ["get", "patch"],
            },
            {"apiGroups": [""], "resources": ["events"], "verbs": ["create"]},
        ],
    }


def role_binding(owner: Owner) -> dict[str, Any]:
    return {
        "apiVersion": "rbac.authorization.k8s.io/v1",
        "kind": "RoleBinding",
        "metadata": _metadata(owner, owner.account),
        "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "Role", "name": owner.account},
        "subjects": [{"kind": "ServiceAccount", "name": owner.workload, "namespace": owner.home}],
    }


GATEWAY_COMPONENT = "gateway-access"


def gateway_role(owner: Owner, token_secret: str) -> dict[str, Any]:
    """The gateway may read and fill this integration's token Secret, by name, and no other Secret. It
    creates none: the operator creates the token Secret, so the gateway needs no namespace-wide `create`
    (which RBAC cannot narrow by name)."""
    return {
        "apiVersion": "rbac.authorization.k8s.io/v1",
        "kind": "Role",
        "metadata": _metadata(owner, names.gateway_access_name(owner.name), GATEWAY_COMPONENT),
        "rules": [
            {"apiGroups": [""], "resources": ["secrets"], "resourceNames": [token_secret], "verbs": ["get", "update"]}
        ],
    }


def gateway_role_binding(owner: Owner, service_account: str) -> dict[str, Any]:
    namespace, name = service_account.split("/")
    role_name = names.gateway_access_name(owner.name)
    return {
        "apiVersion": "rbac.authorization.k8s.io/v1",
        "kind": "RoleBinding",
        "metadata": _metadata(owner, role_name, GATEWAY_COMPONENT),
        "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "Role", "name": role_name},
        "subjects": [{"kind": "ServiceAccount", "name": name, "namespace": namespace}],
    }


def credentials_secret(home: str, settings: Settings, environment: Environment = "production") -> dict[str, Any]:
    """The operator's client credentials for the sync Jobs of `environment`, at home only, for the Jobs' `envFrom`
    (never in a pod spec). Only that environment's Intuit app, under the app's own variable names: a sandbox
    integration's Job never holds the production keys, and its sync reads the app the operator would."""
    app = settings.for_environment(environment)
    intuit = (app.qbo_client_id, app.qbo_client_secret.get_secret_value())
    values = {
        **{var: value for var, value in zip(app_variables(environment), intuit, strict=True) if value},
        "GREENCHECK_CLIENT_ID": settings.greencheck_client_id,
        "GREENCHECK_CLIENT_SECRET": settings.greencheck_client_secret.get_secret_value(),
    }
    return {
        "apiVersion": "v1",
        "kind": "Secret",
        "metadata": {
            "name": names.sync_credentials_name(environment),
            "namespace": home,
            "labels": {
                names.MANAGED_BY_LABEL: names.MANAGED_BY,
                "app.kubernetes.io/name": "qbo-operator",
                COMPONENT_LABEL: CREDENTIALS_COMPONENT,
            },
        },
        "type": "Opaque",
        "data": {k: base64.b64encode(v.encode()).decode() for k, v in values.items()},
    }


def effective_schedule(
    spec: IntegrationSpec, settings: Settings, namespace: str, name: str, spec_ok: bool
) -> tuple[str, str]:
    """(schedule with H expanded, time zone). A spec the operator refused falls back to the defaults, so
    the CronJob stays valid (and suspended) until the spec is fixed."""
    schedule = spec.schedule if spec_ok and spec.schedule else settings.qbo_default_schedule
    zone = spec.time_zone if spec_ok and spec.time_zone else settings.qbo_default_time_zone
    return expand(schedule, f"{namespace}/{name}"), zone


def _env(settings: Settings, trigger: str) -> list[dict[str, Any]]:
    plain = {
        "GREENCHECK_API_URL": settings.greencheck_api_url,
        "GREENCHECK_SERVICE_PROVIDER_ID": settings.greencheck_service_provider_id,
        "QBO_TOKEN_URL": settings.qbo_token_url,
        # the sync revokes the tokens of a refresh that revoke-on-delete fenced out (core/tokens.py)
        "QBO_REVOKE_URL": settings.qbo_revoke_url,
        "QBO_DISCOVERY_URL": settings.qbo_discovery_url,
        "QBO_API_URL": settings.qbo_api_url,
        "QBO_SANDBOX_TOKEN_URL": settings.qbo_sandbox_token_url,
        "QBO_SANDBOX_REVOKE_URL": settings.qbo_sandbox_revoke_url,
        "QBO_SANDBOX_API_URL": settings.qbo_sandbox_api_url,
        "QBO_SYNC_TRIGGER": trigger,
        "QBO_LOG_FORMAT": settings.qbo_log_format,
        "QBO_FULL_READ_EVERY_DAYS": str(settings.qbo_full_read_every_days),
    }
    env: list[dict[str, Any]] = [{"name": k, "value": v} for k, v in plain.items() if v]
    env.append(
        {
            "name": "JOB_NAME",
            "valueFrom": {"fieldRef": {"apiVersion": "v1", "fieldPath": "metadata.labels['job-name']"}},
        }
    )
    # the release namespace, where the gateways' webhook coverage Lease lives (core/webhook_coverage.py)
    env.append(
        {"name": "POD_NAMESPACE", "valueFrom": {"fieldRef": {"apiVersion": "v1", "fieldPath": "metadata.namespace"}}}
    )
    return env


def _pod_template(owner: Owner, settings: Settings, environment: Environment) -> dict[str, Any]:
    container_security = {
        "runAsNonRoot": True,
        "runAsUser": RUN_AS,
        "runAsGroup": RUN_AS,
        "readOnlyRootFilesystem": True,
        "allowPrivilegeEscalation": False,
        "privileged": False,
        "capabilities": {"drop": ["ALL"]},
        "seccompProfile": {"type": "RuntimeDefault"},
    }
    return {
        "metadata": {"labels": home_labels(owner)},
        "spec": {
            "serviceAccountName": owner.workload,
            "automountServiceAccountToken": True,  # the sync reads its CR and token Secret from the API
            "restartPolicy": "Never",
            "enableServiceLinks": False,
            "securityContext": {
                "runAsNonRoot": True,
                "runAsUser": RUN_AS,
                "runAsGroup": RUN_AS,
                "fsGroup": RUN_AS,
                "seccompProfile": {"type": "RuntimeDefault"},
            },
            "containers": [
                {
                    "name": CONTAINER_NAME,
                    "image": settings.qbo_sync_image,
                    "imagePullPolicy": "IfNotPresent",
                    "command": ["qbo-operator", "sync", "--namespace", owner.namespace, "--name", owner.name],
                    "envFrom": [{"secretRef": {"name": names.sync_credentials_name(environment)}}],
                    "env": _env(settings, "Schedule"),
                    "resources": {"requests": {"cpu": "50m", "memory": "128Mi"}, "limits": {"memory": "512Mi"}},
                    "securityContext": container_security,
                    "terminationMessagePolicy": "FallbackToLogsOnError",
                    "volumeMounts": [{"name": "tmp", "mountPath": "/tmp"}],  # noqa: S108 - an emptyDir
                }
            ],
            "volumes": [{"name": "tmp", "emptyDir": {"sizeLimit": "64Mi"}}],
        },
    }


def cronjob(
    owner: Owner,
    settings: Settings,
    schedule: str,
    time_zone: str,
    suspend: bool,
    environment: Environment = "production",
) -> dict[str, Any]:
    return {
        "apiVersion": "batch/v1",
        "kind": "CronJob",
        "metadata": _home_metadata(owner),
        "spec": {
            "schedule": schedule,
            "timeZone": time_zone,
            "suspend": suspend,
            "concurrencyPolicy": "Forbid",
            "startingDeadlineSeconds": STARTING_DEADLINE_SECONDS,
            "successfulJobsHistoryLimit": SUCCESSFUL_JOBS_HISTORY_LIMIT,
            "failedJobsHistoryLimit": FAILED_JOBS_HISTORY_LIMIT,
            "jobTemplate": {
                "metadata": {"labels": home_labels(owner), "annotations": {names.TRIGGER_ANNOTATION: "Schedule"}},
                "spec": {
                    "backoffLimit": BACKOFF_LIMIT,
                    "activeDeadlineSeconds": ACTIVE_DEADLINE_SECONDS,
                    "ttlSecondsAfterFinished": TTL_SECONDS_AFTER_FINISHED,
                    "podFailurePolicy": {
                        "rules": [
                            {
                                "action": "FailJob",
                                "onExitCodes": {
                                    "containerName": CONTAINER_NAME,
                                    "operator": "In",
                                    "values": [CONFIG_ERROR_EXIT_CODE],
                                },
                            },
                            {"action": "Ignore", "onPodConditions": [{"type": "DisruptionTarget", "status": "True"}]},
                        ]
                    },
                    "template": _pod_template(owner, settings, environment),
                },
            },
        },
    }


def manual_job_name(cronjob_name: str, token: str) -> str:
    """Derived from the request token, so a re-delivered request names the same Job (≤ 63 characters)."""
    return f"{cronjob_name}-m-{hashlib.sha256(token.encode()).hexdigest()[:8]}"


def job_from_cronjob(cronjob_obj: Mapping[str, Any], cronjob_uid: str, token: str) -> dict[str, Any]:
    """What `kubectl create job --from=cronjob/…` makes, plus the Manual trigger and the request token."""
    template = copy.deepcopy(cronjob_obj["spec"]["jobTemplate"])
    meta = cronjob_obj["metadata"]
    annotations = dict(template.get("metadata", {}).get("annotations") or {})
    annotations.update(
        {
            MANUAL_INSTANTIATE_ANNOTATION: "manual",
            names.TRIGGER_ANNOTATION: "Manual",
            names.SYNC_REQUESTED_ANNOTATION: token,
        }
    )
    spec = template["spec"]
    for container in spec["template"]["spec"]["containers"]:
        container["env"] = [
            {"name": "QBO_SYNC_TRIGGER", "value": "Manual"} if e["name"] == "QBO_SYNC_TRIGGER" else e
            for e in container.get("env", [])
        ]
    return {
        "apiVersion": "batch/v1",
        "kind": "Job",
        "metadata": {
            "name": manual_job_name(meta["name"], token),
            "namespace": meta["namespace"],
            "labels": dict(template.get("metadata", {}).get("labels") or {}),
            "annotations": annotations,
            "ownerReferences": [owner_reference(meta["name"], cronjob_uid, api_version="batch/v1", kind="CronJob")],
        },
        "spec": spec,
    }


# --- comparing desired with observed -----------------------------------------------------------


def child_names(owner: Owner, gateway: bool) -> list[tuple[str, str, str, str]]:
    """(index, kind, namespace, name) of every child `reconcile` applies for `owner` (with the gateway's Role and
    RoleBinding when the operator grants a gateway access): the names checked for ownership first."""
    out = [
        ("serviceaccounts", "ServiceAccount", owner.home, owner.workload),
        ("roles", "Role", owner.namespace, owner.account),
        ("rolebindings", "RoleBinding", owner.namespace, owner.account),
        ("cronjobs", "CronJob", owner.home, owner.workload),
    ]
    if gateway:
        access = names.gateway_access_name(owner.name)
        out += [("roles", "Role", owner.namespace, access), ("rolebindings", "RoleBinding", owner.namespace, access)]
    return out


def data_digest(data: Mapping[str, str] | None) -> str:
    return hashlib.sha256(json.dumps(dict(data or {}), sort_keys=True).encode()).hexdigest()


def comparable(obj: Mapping[str, Any]) -> dict[str, Any]:
    """The parts of an object we compare, with Secret data replaced by its digest (so an index of
    observed objects never holds secret values)."""
    out = {k: v for k, v in obj.items() if k not in ("status", "data", "stringData")}
    meta = dict(obj.get("metadata") or {})
    out["metadata"] = {
        k: meta[k]
        for k in ("name", "namespace", "labels", "annotations", "ownerReferences", "uid", "resourceVersion")
        if k in meta
    }
    if obj.get("kind") == "Secret":
        out["dataDigest"] = data_digest(obj.get("data"))
    return out


def _subset(desired: Any, observed: Any, path: tuple[str, ...] = ()) -> bool:
    if isinstance(desired, Mapping):
        if not isinstance(observed, Mapping):
            return False
        return all(_subset(v, observed.get(k), (*path, k)) for k, v in desired.items())
    if isinstance(desired, list):
        if not isinstance(observed, list):
            return False
        if path[-2:] == ("metadata", "ownerReferences"):
            # Others may add owners of their own; ours must be there.
            return all(any(_subset(d, o) for o in observed) for d in desired)
        return len(desired) == len(observed) and all(
            _subset(d, o, path) for d, o in zip(desired, observed, strict=True)
        )
    return bool(desired == observed)


def needs_apply(desired: Mapping[str, Any], observed: Mapping[str, Any] | None) -> bool:
    """True when the object is missing or a field we set differs (defaults the server adds are ignored)."""
    if observed is None:
        return True
    return not _subset(comparable(desired), observed)
