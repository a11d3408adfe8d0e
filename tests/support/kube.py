"""Reading and writing the tests' objects on the control plane (kubectl), the API server's audit log, and
ServiceAccounts with exactly the documented permissions."""

from __future__ import annotations

import base64
import copy
import json
import subprocess
from collections.abc import Iterable, Mapping
from datetime import datetime
from pathlib import Path
from typing import Any

import httpx
import yaml

from qbo_operator.core import names
from qbo_operator.core.models import parse_rfc3339
from qbo_operator.harness.controlplane import ControlPlane, KubeClients
from tests.support.objects import OWNER_UID_PENDING, integration, new_company_id, token_secret
from tests.support.paths import ROOT

WRITE_VERBS = {"create", "update", "patch", "delete", "deletecollection"}


def apply(cluster: KubeClients, *objects: Mapping[str, Any]) -> None:
    """`kubectl apply`; objects owned by an integration whose uid is pending (`objects.token_secret`) are
    applied after the rest, with the integration's uid, as the operator creates them."""
    pending = [o for o in objects if _pending_owner(o)]
    now = [o for o in objects if not _pending_owner(o)]
    if now:
        cluster.kubectl("apply", "-f", "-", input="\n---\n".join(json.dumps(o) for o in now))
    if pending:
        resolved = [_with_owner_uid(cluster, o) for o in pending]
        cluster.kubectl("apply", "-f", "-", input="\n---\n".join(json.dumps(o) for o in resolved))


def _pending_owner(obj: Mapping[str, Any]) -> bool:
    refs = (obj.get("metadata") or {}).get("ownerReferences") or []
    return any(r.get("kind") == names.KIND and r.get("uid") == OWNER_UID_PENDING for r in refs)


def _with_owner_uid(cluster: KubeClients, obj: Mapping[str, Any]) -> dict[str, Any]:
    out = copy.deepcopy(dict(obj))
    meta = out["metadata"]
    for ref in meta["ownerReferences"]:
        if ref.get("kind") == names.KIND and ref.get("uid") == OWNER_UID_PENDING:
            ref["uid"] = qbi(cluster, meta["namespace"], ref["name"])["metadata"]["uid"]
    return out


def get(cluster: KubeClients, kind: str, namespace: str, name: str) -> dict[str, Any] | None:
    """The object, or None if it does not exist (any other error fails the test)."""
    result = cluster.kubectl("get", kind, name, "-n", namespace, "-o", "json", check=False)
    if result.returncode != 0:
        if "NotFound" in result.stderr or "not found" in result.stderr:
            return None
        raise AssertionError(result.stderr)
    obj: dict[str, Any] = json.loads(result.stdout)
    return obj


def secret_or_none(cluster: KubeClients, namespace: str, name: str) -> dict[str, Any] | None:
    return get(cluster, "secret", namespace, name)


def qbi(cluster: KubeClients, namespace: str, name: str) -> dict[str, Any]:
    """The QuickbooksIntegration, which must exist."""
    obj = get(cluster, names.PLURAL, namespace, name)
    assert obj is not None, f"{namespace}/{name} is gone"
    return obj


def create_integration(
    cluster: KubeClients,
    namespace: str,
    name: str,
    company_name: str | None = "Acme Dispensary",
    token_secret_name: str | None = None,
    kubeconfig: Path | None = None,
    operator_secret: bool = True,
) -> dict[str, Any]:
    """`kubectl create` (not apply: it must not exist yet) of an integration with a company id of its own,
    and (`operator_secret`) its empty token Secret as the operator creates it on first sight, owned by its
    uid: gateway tests run no operator, and the gateway only fills a Secret the operator created."""
    obj = integration(
        namespace, name, companyId=new_company_id(), companyName=company_name, tokenSecretName=token_secret_name
    )
    cluster.kubectl("create", "-f", "-", input=json.dumps(obj), kubeconfig=kubeconfig)
    if operator_secret:
        secret = token_secret(namespace, name, None, name=token_secret_name or names.token_secret_name(name))
        apply(cluster, secret)
    return qbi(cluster, namespace, name)


def merge_patch(
    cluster: KubeClients,
    kind: str,
    namespace: str,
    name: str,
    patch: Mapping[str, Any],
    *,
    status: bool = False,
    check: bool = True,
) -> subprocess.CompletedProcess[str]:
    """`kubectl patch --type=merge` of the object (of its status subresource with `status`)."""
    subresource = ["--subresource=status"] if status else []
    args = ["patch", kind, name, "-n", namespace, *subresource, "--type=merge", "-p", json.dumps(patch)]
    return cluster.kubectl(*args, check=check)


def set_status(cluster: KubeClients, namespace: str, name: str, status: dict[str, Any]) -> None:
    """Merge `status` into the integration's status subresource, as the operator would."""
    cluster.patch_status(names.PLURAL, name, namespace, status)


def conditions(obj: Mapping[str, Any]) -> dict[str, dict[str, Any]]:
    return {c["type"]: c for c in (obj.get("status") or {}).get("conditions") or []}


def settled(cluster: KubeClients, namespace: str, name: str, phase: str, **cond: str) -> dict[str, Any] | None:
    """The CR once the operator reconciled its current generation into `phase` (and condition reasons)."""
    obj = get(cluster, names.PLURAL, namespace, name)
    if obj is None:
        return None
    status = obj.get("status") or {}
    if status.get("phase") != phase or status.get("observedGeneration") != obj["metadata"]["generation"]:
        return None
    conds = conditions(obj)
    for type_, reason in cond.items():
        if (conds.get(type_) or {}).get("reason") != reason:
            return None
    return obj


def webhook_count(cluster: KubeClients, namespace: str, name: str) -> int:
    status = qbi(cluster, namespace, name).get("status") or {}
    return int((status.get("webhook") or {}).get("eventsSinceLastSync", 0))


def events(cluster: KubeClients, namespace: str, name: str) -> list[dict[str, Any]]:
    items = cluster.kubectl_json("get", "events", "-n", namespace, "--field-selector", f"involvedObject.name={name}")
    return list(items["items"])


def events_text(cluster: KubeClients, namespace: str) -> str:
    return cluster.kubectl("get", "events", "-n", namespace, "-o", "json").stdout


def jobs(cluster: KubeClients, namespace: str) -> list[dict[str, Any]]:
    """The sync Jobs of the integrations in `namespace`: they run at HOME, labelled with that namespace."""
    label = f"{names.INTEGRATION_NAMESPACE_LABEL}={namespace}"
    return list(cluster.kubectl_json("get", "jobs", "-n", HOME, "-l", label)["items"])


def manual_jobs(cluster: KubeClients, namespace: str) -> list[dict[str, Any]]:
    """The Jobs the operator made for "sync now" requests. A hashed nightly schedule may come due while a
    test runs; the CronJob controller's Job is not the operator's to count."""
    return [
        j
        for j in jobs(cluster, namespace)
        if (j["metadata"].get("annotations") or {}).get(names.SYNC_REQUESTED_ANNOTATION)
    ]


def scan_for_secrets(text: str, secrets: Iterable[str]) -> list[str]:
    return [s for s in secrets if s and s in text]


def assert_not_readable(sensitive: Iterable[str], readable: Mapping[str, str]) -> None:
    """No secret value in anything a person or a scraper can read (where → text: logs, Events, status...)."""
    values = list(sensitive)
    for where, text in readable.items():
        for value in values:
            assert value not in text, f"a secret value leaked into the {where}"


# --- the audit log ---------------------------------------------------------------------------------


def audit(cluster: ControlPlane, namespace: str, username: str) -> list[dict[str, Any]]:
    """The API server's audit events for one user in one namespace (a watch is logged when it starts)."""
    return [
        e
        for e in cluster.audit_events()
        if (e.get("stage") == "ResponseComplete" or (e.get("stage") == "ResponseStarted" and e.get("verb") == "watch"))
        and (e.get("user") or {}).get("username") == username
        and (e.get("objectRef") or {}).get("namespace") == namespace
    ]


def audit_writes(cluster: ControlPlane, username: str, since: datetime, namespace: str | None = None) -> list[str]:
    """Write requests `username` made since `since`, from the API server's audit log."""
    out = []
    for event in cluster.audit_events():
        if event.get("stage") != "ResponseComplete" or event.get("verb") not in WRITE_VERBS:
            continue
        if (event.get("user") or {}).get("username") != username:
            continue
        stamp = parse_rfc3339(event["requestReceivedTimestamp"])
        if stamp < since:
            continue
        ref = event.get("objectRef") or {}
        if namespace is not None and ref.get("namespace") != namespace:
            continue
        out.append(
            f"{event['verb']} {ref.get('resource')}/{ref.get('subresource') or ''} {ref.get('namespace')}/"
            f"{ref.get('name')} -> {(event.get('responseStatus') or {}).get('code')}"
        )
    return out


# --- identities ------------------------------------------------------------------------------------

GATEWAY_ROLE_RULES: list[dict[str, Any]] = [
    {"apiGroups": [names.GROUP], "resources": [names.PLURAL], "verbs": ["get", "list", "watch"]},
    {"apiGroups": [names.GROUP], "resources": [f"{names.PLURAL}/status"], "verbs": ["get", "patch"]},
    # no `create`: the operator creates token Secrets, the gateway only fills them (the chart grants get/update by
    # name, per integration; here namespace-wide, as no operator runs)
    {"apiGroups": [""], "resources": ["secrets"], "verbs": ["get", "update"]},
    {"apiGroups": [""], "resources": ["events"], "verbs": ["create"]},
]
# The release namespace the processes default to (POD_NAMESPACE): the realm claims (the chart's
# realm-claims-rbac.yaml), and the sync CronJobs, their ServiceAccounts and Jobs, beside the platform credentials.
HOME = "qbo-system"
CLAIMS_NAMESPACE = HOME
GATEWAY_CLAIM_RULES: list[dict[str, Any]] = [
    {"apiGroups": ["coordination.k8s.io"], "resources": ["leases"], "verbs": ["get", "create", "delete"]},
    # the webhook coverage Leases (the chart's webhook-coverage-rbac.yaml)
    {
        "apiGroups": ["coordination.k8s.io"],
        "resources": ["leases"],
        "resourceNames": ["qbo-webhooks-production", "qbo-webhooks-sandbox"],
        "verbs": ["get", "update"],
    },
]


def sync_cronjob(cluster: KubeClients, namespace: str, name: str) -> dict[str, Any] | None:
    """The integration's sync CronJob, at HOME."""
    return get(cluster, "cronjob", HOME, names.sync_workload_name(namespace, name))


def sync_kubeconfig(cluster: ControlPlane, namespace: str, name: str, hours: int = 1) -> Path:
    """A kubeconfig of the integration's sync ServiceAccount (at HOME), as its Job's pod would act."""
    return cluster.service_account_kubeconfig(HOME, names.sync_workload_name(namespace, name), hours=hours)


def role_and_binding(
    name: str, namespace: str, rules: list[dict[str, Any]], subject: dict[str, str]
) -> tuple[dict[str, Any], dict[str, Any]]:
    """A Role of `rules` and the RoleBinding that grants it to `subject`, both named `name`."""
    rbac = "rbac.authorization.k8s.io"
    meta = {"name": name, "namespace": namespace}
    return (
        {"apiVersion": f"{rbac}/v1", "kind": "Role", "metadata": meta, "rules": rules},
        {
            "apiVersion": f"{rbac}/v1",
            "kind": "RoleBinding",
            "metadata": meta,
            "roleRef": {"apiGroup": rbac, "kind": "Role", "name": name},
            "subjects": [subject],
        },
    )


def gateway_service_account(cluster: ControlPlane, namespace: str, name: str = "qbo-gateway") -> Path:
    """ServiceAccount + Role (GATEWAY_ROLE_RULES, nothing more) + RoleBinding, and the realm-claims Role in
    CLAIMS_NAMESPACE; returns its kubeconfig."""
    subject = {"kind": "ServiceAccount", "name": name, "namespace": namespace}
    apply(
        cluster,
        {"apiVersion": "v1", "kind": "ServiceAccount", "metadata": {"name": name, "namespace": namespace}},
        *role_and_binding(name, namespace, GATEWAY_ROLE_RULES, subject),
        *role_and_binding(f"{name}-{namespace}-claims", CLAIMS_NAMESPACE, GATEWAY_CLAIM_RULES, subject),
    )
    return cluster.service_account_kubeconfig(namespace, name)


def render_chart_rbac(cluster: KubeClients, namespace: str) -> tuple[list[dict[str, Any]], str]:
    """The chart's operator ServiceAccount and RBAC (`helm template`; its realm-claims Role in `namespace`),
    and the ServiceAccount's name."""
    rendered = cluster.helm(
        "template",
        "qbo",
        str(ROOT / "charts" / "qbo-operator"),
        "--namespace",
        namespace,
        "--show-only",
        "templates/operator-rbac.yaml",
        "--show-only",
        "templates/serviceaccounts.yaml",
        "--show-only",
        "templates/realm-claims-rbac.yaml",
    ).stdout
    docs = [
        d
        for d in yaml.safe_load_all(rendered)
        if d and (d["metadata"].get("labels") or {}).get("app.kubernetes.io/component") == "operator"
    ]
    accounts = [d for d in docs if d["kind"] == "ServiceAccount"]
    assert len(accounts) == 1, [d["metadata"]["name"] for d in docs]
    for doc in docs:
        if doc["kind"] == "ServiceAccount":
            doc["metadata"]["namespace"] = namespace
    return docs, accounts[0]["metadata"]["name"]


def kubeconfig_via(source: Path, port: int, dest: Path) -> Path:
    """A copy of `source` that reaches the API server through 127.0.0.1:`port`."""
    config = json.loads(source.read_text())
    for entry in config["clusters"]:
        entry["cluster"]["server"] = f"https://127.0.0.1:{port}"
    dest.write_text(json.dumps(config))
    dest.chmod(0o600)
    return dest


def api_request(kubeconfig: Path, method: str, path: str, body: Any = None, content_type: str = "") -> httpx.Response:
    """One request to the API server as the kubeconfig's user (a bearer token), nothing else around it:
    kubectl sometimes reads before it writes, which would test a different permission."""
    config = json.loads(kubeconfig.read_text())
    cluster, user = config["clusters"][0]["cluster"], config["users"][0]["user"]
    ca = kubeconfig.with_suffix(".ca.crt")
    ca.write_bytes(base64.b64decode(cluster["certificate-authority-data"]))
    headers = {"Authorization": f"Bearer {user['token']}"}
    if content_type:
        headers["Content-Type"] = content_type
    content = json.dumps(body).encode() if body is not None else None
    with httpx.Client(verify=str(ca), timeout=30) as http:
        return http.request(method, cluster["server"] + path, content=content, headers=headers)
