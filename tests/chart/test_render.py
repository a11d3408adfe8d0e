"""The chart rendered with the real helm binary: lint, the three modes, what each object must contain,
and the values the schema or the templates refuse (with the message a person sees)."""

from __future__ import annotations

import base64
import json
import re
import shutil
import subprocess
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import pytest
import yaml

from qbo_operator.core import names
from qbo_operator.reconciler import manifests
from tests.support.chart import CHART, MODES, NAMESPACE, RELEASE, Helm, container, env_of, find, one

FULLNAME = f"{RELEASE}-qbo-operator"
WATCHED = ["tenants", "tenants-b"]
SECRET_KEYS = {
    "QBO_CLIENT_ID",
    "QBO_CLIENT_SECRET",
    "QBO_WEBHOOK_VERIFIER_TOKEN",
    "QBO_STATE_SIGNING_KEY",
    "GREENCHECK_CLIENT_ID",
    "GREENCHECK_CLIENT_SECRET",
}
CLUSTER_SCOPED = {"ClusterRole", "ClusterRoleBinding"}


# --- lint and render --------------------------------------------------------------------------------


@pytest.mark.parametrize("mode", MODES)
def test_helm_lint_strict_is_clean(helm: Helm, mode: str) -> None:
    result = helm.run("lint", "--strict", str(CHART), *MODES[mode])
    assert result.returncode == 0, result.stdout + result.stderr
    assert "[WARNING]" not in result.stdout and "[ERROR]" not in result.stdout, result.stdout


@pytest.mark.parametrize("mode", MODES)
def test_every_object_is_labelled_and_namespaced(rendered: dict[str, list[dict[str, Any]]], mode: str) -> None:
    objs = rendered[mode]
    assert objs
    for obj in objs:
        meta = obj["metadata"]
        labels = meta["labels"]
        for key in (
            "helm.sh/chart",
            "app.kubernetes.io/name",
            "app.kubernetes.io/instance",
            "app.kubernetes.io/version",
        ):
            assert labels.get(key), f"{obj['kind']}/{meta['name']} lacks label {key}"
        assert labels["app.kubernetes.io/managed-by"] == "Helm"
        assert labels["app.kubernetes.io/component"]
        if obj["kind"] in CLUSTER_SCOPED:
            assert "namespace" not in meta
        elif obj["kind"] not in ("Role", "RoleBinding"):
            assert meta["namespace"] == NAMESPACE, f"{obj['kind']}/{meta['name']}"


def test_default_mode_renders_the_expected_objects(rendered: dict[str, list[dict[str, Any]]]) -> None:
    kinds = sorted((o["kind"], o["metadata"]["name"]) for o in rendered["default"])
    assert kinds == sorted(
        [
            ("ServiceAccount", f"{FULLNAME}-operator"),
            ("ServiceAccount", f"{FULLNAME}-gateway"),
            ("Secret", f"{FULLNAME}-credentials"),
            ("ClusterRole", f"{FULLNAME}-operator-cluster"),
            ("ClusterRoleBinding", f"{FULLNAME}-operator-cluster"),
            ("ClusterRole", f"{FULLNAME}-operator"),
            ("ClusterRoleBinding", f"{FULLNAME}-operator"),
            ("ClusterRole", f"{FULLNAME}-gateway"),
            ("ClusterRoleBinding", f"{FULLNAME}-gateway"),
            # the realm claims, in the release namespace only (templates/realm-claims-rbac.yaml)
            ("Role", f"{FULLNAME}-operator-claims"),
            ("RoleBinding", f"{FULLNAME}-operator-claims"),
            ("Role", f"{FULLNAME}-gateway-claims"),
            ("RoleBinding", f"{FULLNAME}-gateway-claims"),
            # the webhook coverage Leases (templates/webhook-coverage-rbac.yaml)
            ("Role", f"{FULLNAME}-gateway-webhook-coverage"),
            ("RoleBinding", f"{FULLNAME}-gateway-webhook-coverage"),
            ("Role", f"{FULLNAME}-sync-webhook-coverage"),
            ("RoleBinding", f"{FULLNAME}-sync-webhook-coverage"),
            ("Service", f"{FULLNAME}-operator-metrics"),
            ("Service", f"{FULLNAME}-gateway"),
            ("Deployment", f"{FULLNAME}-operator"),
            ("Deployment", f"{FULLNAME}-gateway"),
            # `helm test` hooks (templates/tests/health.yaml)
            ("ServiceAccount", f"{FULLNAME}-test"),
            ("Pod", f"{FULLNAME}-test"),
        ]
    )


def test_full_mode_adds_the_optional_objects(rendered: dict[str, list[dict[str, Any]]]) -> None:
    kinds = {o["kind"] for o in rendered["full"]}
    assert {"Ingress", "PodDisruptionBudget", "NetworkPolicy", "ServiceMonitor", "PrometheusRule", "ConfigMap"} <= kinds


# --- the Deployments ---------------------------------------------------------------------------------


def _port(c: Mapping[str, Any], name: str) -> int:
    return next(int(p["containerPort"]) for p in c["ports"] if p["name"] == name)


def test_operator_deployment(rendered: dict[str, list[dict[str, Any]]]) -> None:
    dep = one(rendered["default"], "Deployment", "-operator")
    assert dep["spec"]["replicas"] == 1
    assert dep["spec"]["strategy"] == {"type": "Recreate"}
    c = container(dep)
    assert c["image"] == "ghcr.io/greencheck/qbo-operator:0.1.0"
    assert c["args"] == [
        "run",
        "--standalone",
        "--all-namespaces",
        "--health-port=8080",
        "--metrics-port=9090",
        "--read-budget=500000",
    ]
    assert c["livenessProbe"]["httpGet"]["path"] == "/healthz"
    assert _port(c, c["livenessProbe"]["httpGet"]["port"]) == 8080
    assert _port(c, "metrics") == 9090
    service = one(rendered["default"], "Service", "-operator-metrics")
    assert service["spec"]["ports"] == [
        {"name": "metrics", "port": 9090, "targetPort": "metrics", "protocol": "TCP"},
        {"name": "health", "port": 8080, "targetPort": "health", "protocol": "TCP"},
    ]
    assert service["spec"]["selector"] == dep["spec"]["selector"]["matchLabels"]


def test_operator_serves_each_watched_namespace(rendered: dict[str, list[dict[str, Any]]]) -> None:
    c = container(one(rendered["namespaced"], "Deployment", "-operator"))
    assert c["args"][:4] == ["run", "--standalone", "--namespace=tenants", "--namespace=tenants-b"]
    assert "--all-namespaces" not in c["args"]


def test_operator_peering_option(helm: Helm) -> None:
    objs = helm.template(sets={"operator.peering.enabled": True, "operator.peering.priority": 10})
    args = container(one(objs, "Deployment", "-operator"))["args"]
    assert args[:3] == ["run", "--peering=qbo-operator", "--priority=10"]
    assert "--standalone" not in args
    rules = one(objs, "ClusterRole", "-operator-cluster")["rules"]
    assert {
        "apiGroups": ["kopf.dev"],
        "resources": ["clusterkopfpeerings"],
        "verbs": ["get", "list", "watch", "patch"],
    } in rules


def test_gateway_deployment_service_and_probes(rendered: dict[str, list[dict[str, Any]]]) -> None:
    dep = one(rendered["default"], "Deployment", "-gateway")
    assert dep["spec"]["replicas"] == 2
    c = container(dep)
    assert c["args"] == ["gateway", "--host=0.0.0.0", "--port=8000"]
    assert c["readinessProbe"]["httpGet"] == {"path": "/readyz", "port": "http"}
    assert c["livenessProbe"]["httpGet"] == {"path": "/healthz", "port": "http"}
    assert _port(c, "http") == 8000
    service = one(rendered["default"], "Service", "-gateway")
    assert service["spec"]["ports"] == [{"name": "http", "port": 80, "targetPort": "http", "protocol": "TCP"}]
    assert service["spec"]["selector"] == dep["spec"]["selector"]["matchLabels"]


def test_gateway_replicas_value(helm: Helm) -> None:
    objs = helm.template(sets={"gateway.replicas": 3})
    assert one(objs, "Deployment", "-gateway")["spec"]["replicas"] == 3


# --- environment (docs/design.md §6) ------------------------------------------------------------------


def _secret_ref(value: Any) -> tuple[str, str]:
    ref = value["secretKeyRef"]
    return ref["name"], ref["key"]


def test_environment_names_and_sources(rendered: dict[str, list[dict[str, Any]]]) -> None:
    objs = rendered["full"]
    operator = env_of(container(one(objs, "Deployment", "-operator")))
    gateway = env_of(container(one(objs, "Deployment", "-gateway")))
    secret = f"{FULLNAME}-credentials"
    operator_secrets = {
        "QBO_CLIENT_ID",
        "QBO_CLIENT_SECRET",
        "QBO_STATE_SIGNING_KEY",
        "GREENCHECK_CLIENT_ID",
        "GREENCHECK_CLIENT_SECRET",
    }
    gateway_secrets = {"QBO_CLIENT_ID", "QBO_CLIENT_SECRET", "QBO_STATE_SIGNING_KEY", "QBO_WEBHOOK_VERIFIER_TOKEN"}
    for env, wanted in ((operator, operator_secrets), (gateway, gateway_secrets)):
        from_secret = {k for k, v in env.items() if isinstance(v, dict) and "secretKeyRef" in v}
        assert from_secret == wanted
        for key in wanted:
            assert _secret_ref(env[key]) == (secret, key)
        assert env["POD_NAMESPACE"] == {"fieldRef": {"fieldPath": "metadata.namespace"}}
        assert env["QBO_GATEWAY_URL"] == "https://qbo.example.com"
        assert env["QBO_REDIRECT_URI"] == "https://qbo.example.com/oauth/callback"
        assert env["QBO_TOKEN_URL"] == "https://oauth.example.com/tokens"
        for unset in ("QBO_AUTH_URL", "QBO_REVOKE_URL", "QBO_API_URL", "QBO_DISCOVERY_URL"):
            assert unset not in env
    assert operator["GREENCHECK_API_URL"] == "https://api.greencheck.example.com"
    assert operator["GREENCHECK_SERVICE_PROVIDER_ID"] == "sp-1234"
    assert operator["QBO_DEFAULT_SCHEDULE"] == "H 3 * * *"
    assert operator["QBO_DEFAULT_TIME_ZONE"] == "America/Los_Angeles"
    image = "ghcr.io/greencheck/qbo-operator:0.1.0@sha256:" + "0" * 64
    assert operator["QBO_SYNC_IMAGE"] == image
    assert container(one(objs, "Deployment", "-operator"))["image"] == image
    assert gateway["QBO_WATCH_NAMESPACES"] == ""
    assert "QBO_WATCH_NAMESPACES" not in operator  # the operator gets --namespace flags


def test_default_schedule_and_time_zone(rendered: dict[str, list[dict[str, Any]]]) -> None:
    env = env_of(container(one(rendered["default"], "Deployment", "-operator")))
    assert env["QBO_DEFAULT_SCHEDULE"] == "H 2 * * *"
    assert env["QBO_DEFAULT_TIME_ZONE"] == "UTC"


def test_gateway_knows_the_watched_namespaces(rendered: dict[str, list[dict[str, Any]]]) -> None:
    env = env_of(container(one(rendered["namespaced"], "Deployment", "-gateway")))
    assert env["QBO_WATCH_NAMESPACES"] == "tenants,tenants-b"


def test_all_endpoint_overrides_and_explicit_redirect_uri(helm: Helm) -> None:
    urls = {
        "qboDiscoveryUrl": ("QBO_DISCOVERY_URL", "http://127.0.0.1:9001/.well-known/openid_configuration"),
        "qboAuthUrl": ("QBO_AUTH_URL", "http://127.0.0.1:9001/connect/oauth2"),
        "qboTokenUrl": ("QBO_TOKEN_URL", "http://127.0.0.1:9001/oauth2/v1/tokens/bearer"),
        "qboRevokeUrl": ("QBO_REVOKE_URL", "http://127.0.0.1:9001/v2/oauth2/tokens/revoke"),
        "qboApiUrl": ("QBO_API_URL", "http://127.0.0.1:9001"),
    }
    sets = {f"config.{key}": url for key, (_, url) in urls.items()}
    sets["config.gatewayUrl"] = "https://qbo.example.com/"
    sets["config.redirectUri"] = "https://login.example.com/cb"
    objs = helm.template(sets=sets)
    for name in ("-operator", "-gateway"):
        env = env_of(container(one(objs, "Deployment", name)))
        for var, url in urls.values():
            assert env[var] == url
        assert env["QBO_REDIRECT_URI"] == "https://login.example.com/cb"


def test_credentials_secret_and_generated_signing_key(rendered: dict[str, list[dict[str, Any]]], helm: Helm) -> None:
    secret = one(rendered["full"], "Secret", "-credentials")
    data = {k: base64.b64decode(v).decode() for k, v in secret["data"].items()}
    assert set(data) == SECRET_KEYS
    assert data["QBO_CLIENT_SECRET"] == "test-client-secret-value"
    assert data["QBO_STATE_SIGNING_KEY"] == "0123456789abcdef0123456789abcdef0123456789abcdef"
    generated = base64.b64decode(one(rendered["default"], "Secret", "-credentials")["data"]["QBO_STATE_SIGNING_KEY"])
    assert len(generated) >= 32
    again = base64.b64decode(one(helm.template(), "Secret", "-credentials")["data"]["QBO_STATE_SIGNING_KEY"])
    assert again != generated  # random per render; an install keeps its key across upgrades (test_cluster.py)


def test_existing_secret_replaces_the_chart_secret(helm: Helm) -> None:
    objs = helm.template(sets={"credentials.existingSecret": "qbo-creds"})
    assert find(objs, "Secret") == []
    for name in ("-operator", "-gateway"):
        env = env_of(container(one(objs, "Deployment", name)))
        refs = {_secret_ref(v)[0] for v in env.values() if isinstance(v, dict) and "secretKeyRef" in v}
        assert refs == {"qbo-creds"}


# --- security (docs/design.md §4) ----------------------------------------------------------------------


@pytest.mark.parametrize("mode", MODES)
def test_pods_are_hardened(rendered: dict[str, list[dict[str, Any]]], mode: str) -> None:
    deployments = find(rendered[mode], "Deployment")
    assert len(deployments) == 2
    for dep in deployments:
        pod = dep["spec"]["template"]["spec"]
        assert pod["securityContext"]["runAsNonRoot"] is True
        assert pod["securityContext"]["runAsUser"] == 65532
        assert pod["securityContext"]["seccompProfile"] == {"type": "RuntimeDefault"}
        for c in pod["containers"]:
            sc = c["securityContext"]
            assert sc["runAsNonRoot"] is True
            assert sc["runAsUser"] == 65532
            assert sc["readOnlyRootFilesystem"] is True
            assert sc["allowPrivilegeEscalation"] is False
            assert sc["privileged"] is False
            assert sc["capabilities"] == {"drop": ["ALL"]}
            assert sc["seccompProfile"] == {"type": "RuntimeDefault"}
            assert {"name": "tmp", "mountPath": "/tmp"} in c["volumeMounts"]
            assert c["resources"]["limits"]["memory"] and c["resources"]["requests"]["cpu"]
        tmp = next(v for v in pod["volumes"] if v["name"] == "tmp")
        assert tmp == {"name": "tmp", "emptyDir": {"sizeLimit": "64Mi"}}
        assert pod["enableServiceLinks"] is False


# --- RBAC ------------------------------------------------------------------------------------------------

CR_GROUP = names.GROUP
OPERATOR_RULES = [
    {"apiGroups": [CR_GROUP], "resources": ["quickbooksintegrations"], "verbs": ["get", "list", "watch", "patch"]},
    {"apiGroups": [CR_GROUP], "resources": ["quickbooksintegrations/status"], "verbs": ["get", "patch"]},
    {"apiGroups": [CR_GROUP], "resources": ["quickbooksintegrations/finalizers"], "verbs": ["update"]},
    {"apiGroups": ["batch"], "resources": ["cronjobs/finalizers"], "verbs": ["update"]},
    {"apiGroups": [""], "resources": ["secrets"], "verbs": ["get", "list", "watch", "create", "update", "patch"]},
    {
        "apiGroups": [""],
        "resources": ["serviceaccounts"],
        "verbs": ["get", "list", "watch", "create", "patch", "delete"],
    },
    {
        "apiGroups": ["rbac.authorization.k8s.io"],
        "resources": ["roles", "rolebindings"],
        "verbs": ["get", "list", "watch", "create", "patch"],
    },
    {"apiGroups": ["batch"], "resources": ["cronjobs"], "verbs": ["get", "list", "watch", "create", "patch", "delete"]},
    {"apiGroups": ["batch"], "resources": ["jobs"], "verbs": ["list", "watch", "create"]},
    {"apiGroups": [""], "resources": ["events"], "verbs": ["create"]},
]
GATEWAY_RULES = [
    {"apiGroups": [CR_GROUP], "resources": ["quickbooksintegrations"], "verbs": ["get", "list", "watch"]},
    {"apiGroups": [CR_GROUP], "resources": ["quickbooksintegrations/status"], "verbs": ["patch"]},
    # no Secret verb: the operator creates token Secrets and grants the gateway each one by name
    {"apiGroups": [""], "resources": ["events"], "verbs": ["create"]},
]
CRD_RULE = {
    "apiGroups": ["apiextensions.k8s.io"],
    "resources": ["customresourcedefinitions"],
    "verbs": ["list", "watch"],
}


def _binding_subject(binding: Mapping[str, Any]) -> tuple[str, str, str]:
    [subject] = binding["subjects"]
    return subject["kind"], subject["name"], subject["namespace"]


def test_cluster_mode_rbac(rendered: dict[str, list[dict[str, Any]]]) -> None:
    objs = rendered["default"]
    assert_claims_rbac(objs)
    assert_coverage_rbac(objs)
    claims = {f"{FULLNAME}-{account}-claims" for account in ("operator", "gateway")}
    coverage = {f"{FULLNAME}-{account}-webhook-coverage" for account in ("gateway", "sync")}
    assert {o["metadata"]["name"] for o in find(objs, "Role") + find(objs, "RoleBinding")} == claims | coverage
    assert one(objs, "ClusterRole", "qbo-operator-operator")["rules"] == OPERATOR_RULES
    assert one(objs, "ClusterRole", "-gateway")["rules"] == GATEWAY_RULES
    assert one(objs, "ClusterRole", "-operator-cluster")["rules"] == [CRD_RULE]  # kopf lists no namespaces
    for suffix, account in (
        ("qbo-operator-operator", "operator"),
        ("-operator-cluster", "operator"),
        ("-gateway", "gateway"),
    ):
        binding = one(objs, "ClusterRoleBinding", suffix)
        assert binding["roleRef"] == {
            "apiGroup": "rbac.authorization.k8s.io",
            "kind": "ClusterRole",
            "name": binding["metadata"]["name"],
        }
        assert _binding_subject(binding) == ("ServiceAccount", f"{FULLNAME}-{account}", NAMESPACE)


def assert_claims_rbac(objs: list[dict[str, Any]]) -> None:
    """Leases in the release namespace only: the gateway gets, creates and deletes realm claims, the operator
    gets and deletes them (docs/security.md "Realm claims")."""
    for account, verbs in (("operator", ["get", "delete"]), ("gateway", ["get", "create", "delete"])):
        role = one(objs, "Role", f"-{account}-claims")
        assert role["metadata"]["namespace"] == NAMESPACE
        assert role["rules"] == [{"apiGroups": ["coordination.k8s.io"], "resources": ["leases"], "verbs": verbs}]
        binding = one(objs, "RoleBinding", f"-{account}-claims")
        assert binding["metadata"]["namespace"] == NAMESPACE and binding["roleRef"]["name"] == role["metadata"]["name"]
        assert _binding_subject(binding) == ("ServiceAccount", f"{FULLNAME}-{account}", NAMESPACE)


def assert_coverage_rbac(objs: list[dict[str, Any]]) -> None:
    """The two webhook coverage Leases by name, in the release namespace only: the gateway renews them, the
    release namespace's ServiceAccounts (each integration's sync) read them (docs/sync.md "Webhook-gated nights")."""
    leases = ["qbo-webhooks-production", "qbo-webhooks-sandbox"]
    for account, verbs in (("gateway", ["get", "update"]), ("sync", ["get"])):
        role = one(objs, "Role", f"-{account}-webhook-coverage")
        assert role["metadata"]["namespace"] == NAMESPACE
        rule = {"apiGroups": ["coordination.k8s.io"], "resources": ["leases"], "resourceNames": leases, "verbs": verbs}
        assert role["rules"] == [rule]
        binding = one(objs, "RoleBinding", f"-{account}-webhook-coverage")
        assert binding["metadata"]["namespace"] == NAMESPACE and binding["roleRef"]["name"] == role["metadata"]["name"]
    gateway = one(objs, "RoleBinding", "-gateway-webhook-coverage")
    assert _binding_subject(gateway) == ("ServiceAccount", f"{FULLNAME}-gateway", NAMESPACE)
    [group] = one(objs, "RoleBinding", "-sync-webhook-coverage")["subjects"]
    assert (group["kind"], group["name"]) == ("Group", f"system:serviceaccounts:{NAMESPACE}")


def test_namespaced_mode_rbac(rendered: dict[str, list[dict[str, Any]]]) -> None:
    objs = rendered["namespaced"]
    assert_claims_rbac(objs)
    assert_coverage_rbac(objs)
    assert [o["metadata"]["name"] for o in find(objs, "ClusterRole")] == [f"{FULLNAME}-operator-cluster"]
    assert one(objs, "ClusterRole")["rules"] == [CRD_RULE]
    # the operator also in the release namespace: the sync CronJobs, their accounts and the platform credentials
    for account, rules, where in (
        ("operator", OPERATOR_RULES, sorted({*WATCHED, NAMESPACE})),
        ("gateway", GATEWAY_RULES, WATCHED),
    ):
        roles = find(objs, "Role", f"-{account}")
        assert sorted(r["metadata"]["namespace"] for r in roles) == where
        assert all(r["rules"] == rules for r in roles)
        bindings = find(objs, "RoleBinding", f"-{account}")
        assert sorted(b["metadata"]["namespace"] for b in bindings) == where
        for b in bindings:
            assert b["roleRef"]["kind"] == "Role"
            assert _binding_subject(b) == ("ServiceAccount", f"{FULLNAME}-{account}", NAMESPACE)


@pytest.mark.parametrize("mode", MODES)
def test_rbac_has_no_wildcards_or_escalation_verbs(rendered: dict[str, list[dict[str, Any]]], mode: str) -> None:
    for obj in rendered[mode]:
        for rule in obj.get("rules", []) if obj["kind"] in ("Role", "ClusterRole") else []:
            for field in ("apiGroups", "resources", "verbs"):
                assert "*" not in rule[field], f"{obj['metadata']['name']}: {rule}"
            assert not {"escalate", "bind", "impersonate"} & set(rule["verbs"])


def _covers(held: list[dict[str, Any]], rule: Mapping[str, Any]) -> bool:
    return all(
        any(
            group in h["apiGroups"] and resource in h["resources"] and verb in h["verbs"] and "resourceNames" not in h
            for h in held
        )
        for group in rule["apiGroups"]
        for resource in rule["resources"]
        for verb in rule["verbs"]
    )


def test_operator_holds_every_permission_of_the_sync_role_it_creates() -> None:
    """RBAC escalation prevention: the operator may only create Roles granting what it holds itself."""
    role = manifests.role(
        manifests.Owner("tenants", "acme", "0000", "qbo-system"), "acme-qbo-tokens", sftp_secret="acme-sftp"
    )
    missing = [rule for rule in role["rules"] if not _covers(OPERATOR_RULES, rule)]
    assert missing == []


def test_gateway_holds_no_verb_on_secrets() -> None:
    """Not even `create` (RBAC cannot narrow it by name): token Secrets come from the operator, by name."""
    assert not [r for r in GATEWAY_RULES if "secrets" in r["resources"] or "*" in r["resources"]]


# --- Ingress, PDB, NetworkPolicy ----------------------------------------------------------------------


def test_ingress_routes_only_the_public_paths_with_tls(rendered: dict[str, list[dict[str, Any]]]) -> None:
    ingress = one(rendered["full"], "Ingress")
    spec = ingress["spec"]
    assert spec["ingressClassName"] == "nginx"
    assert spec["tls"] == [{"hosts": ["qbo.example.com"], "secretName": f"{FULLNAME}-gateway-tls"}]
    [rule] = spec["rules"]
    assert rule["host"] == "qbo.example.com"
    paths = {p["path"]: p["backend"]["service"] for p in rule["http"]["paths"]}
    assert set(paths) == {"/connect/", "/oauth/callback", "/webhooks/quickbooks"}
    assert all(s == {"name": f"{FULLNAME}-gateway", "port": {"name": "http"}} for s in paths.values())


def test_pdb_selects_the_gateway(rendered: dict[str, list[dict[str, Any]]]) -> None:
    pdb = one(rendered["full"], "PodDisruptionBudget")
    gateway = one(rendered["full"], "Deployment", "-gateway")
    assert pdb["spec"] == {"minAvailable": 1, "selector": gateway["spec"]["selector"]}


def test_network_policies(rendered: dict[str, list[dict[str, Any]]]) -> None:
    objs = rendered["full"]
    for component, ports in (("operator", {"metrics", "health"}), ("gateway", {"http"})):
        policy = one(objs, "NetworkPolicy", f"-{component}")["spec"]
        dep = one(objs, "Deployment", f"-{component}")
        assert policy["podSelector"] == dep["spec"]["selector"]
        assert policy["policyTypes"] == ["Ingress", "Egress"]
        assert {p["port"] for rule in policy["ingress"] for p in rule["ports"]} == ports
        egress_ports = {(p["port"], p["protocol"]) for rule in policy["egress"] for p in rule["ports"]}
        assert egress_ports == {(53, "UDP"), (53, "TCP"), (443, "TCP"), (6443, "TCP")}
        api = next(rule for rule in policy["egress"] if {"port": 6443, "protocol": "TCP"} in rule["ports"])
        assert api["to"] == [{"ipBlock": {"cidr": "10.96.0.1/32"}}]


# --- monitoring -----------------------------------------------------------------------------------------

ALERTS_FILE = CHART / "files" / "alerts.yaml"
MONITORING = {"serviceMonitor.enabled": True, "prometheusRule.enabled": True}


def _monitoring_kinds(objs: list[dict[str, Any]]) -> list[str]:
    return sorted(o["kind"] for o in objs if o["kind"] in ("ServiceMonitor", "PrometheusRule"))


def test_render_mode_skip_if_missing(helm: Helm) -> None:
    assert _monitoring_kinds(helm.template(sets=MONITORING)) == []
    with_crds = helm.template(
        "--api-versions",
        "monitoring.coreos.com/v1/ServiceMonitor",
        "--api-versions",
        "monitoring.coreos.com/v1/PrometheusRule",
        sets=MONITORING,
    )
    assert _monitoring_kinds(with_crds) == ["PrometheusRule", "ServiceMonitor", "ServiceMonitor"]


def test_render_mode_always_render(helm: Helm) -> None:
    sets = {**MONITORING, "serviceMonitor.renderMode": "alwaysRender", "prometheusRule.renderMode": "alwaysRender"}
    assert _monitoring_kinds(helm.template(sets=sets)) == ["PrometheusRule", "ServiceMonitor", "ServiceMonitor"]


def test_render_mode_fail_if_missing(helm: Helm) -> None:
    error = helm.template_error(sets={"serviceMonitor.enabled": True, "serviceMonitor.renderMode": "failIfMissing"})
    assert "serviceMonitor.enabled is true with renderMode failIfMissing" in error
    assert "monitoring.coreos.com/v1/ServiceMonitor" in error
    objs = helm.template(
        "--api-versions",
        "monitoring.coreos.com/v1/ServiceMonitor",
        sets={"serviceMonitor.enabled": True, "serviceMonitor.renderMode": "failIfMissing"},
    )
    assert _monitoring_kinds(objs) == ["ServiceMonitor", "ServiceMonitor"]


def test_service_monitors_set_the_job_names_the_alerts_match(rendered: dict[str, list[dict[str, Any]]]) -> None:
    objs = rendered["full"]
    for component, port, job in (("operator", "metrics", "qbo-operator"), ("gateway", "http", "qbo-gateway")):
        monitor = one(objs, "ServiceMonitor", f"-{component}")
        service = one(objs, "Service", "-operator-metrics" if component == "operator" else "-gateway")
        assert monitor["metadata"]["labels"]["release"] == "kube-prometheus-stack"
        assert monitor["spec"]["selector"]["matchLabels"].items() <= service["metadata"]["labels"].items()
        assert monitor["spec"]["namespaceSelector"] == {"matchNames": [NAMESPACE]}
        [endpoint] = monitor["spec"]["endpoints"]
        assert endpoint["port"] == port and endpoint["path"] == "/metrics"
        assert endpoint["relabelings"][0] == {"action": "replace", "targetLabel": "job", "replacement": job}
        assert endpoint.get("honorLabels", False) is (component == "operator")
        assert f'job="{job}"' in ALERTS_FILE.read_text()


def _file_groups(replace: Mapping[str, str] | None = None) -> list[dict[str, Any]]:
    text = ALERTS_FILE.read_text()
    for old, new in (replace or {}).items():
        text = text.replace(old, new)
    groups: list[dict[str, Any]] = yaml.safe_load(text)["groups"]
    return groups


def test_prometheus_rule_embeds_the_alerts_file(rendered: dict[str, list[dict[str, Any]]]) -> None:
    rule = one(rendered["full"], "PrometheusRule")
    assert rule["metadata"]["labels"]["release"] == "kube-prometheus-stack"
    assert rule["spec"]["groups"] == _file_groups()


def test_prometheus_rule_follows_job_names_runbooks_labels_and_disabled_alerts(
    helm: Helm, promtool: str, tmp_path: Path
) -> None:
    sets = {
        "serviceMonitor.enabled": True,  # the preflight refuses the alerts without the series they match
        "prometheusRule.enabled": True,
        "prometheusRule.renderMode": "alwaysRender",
        "prometheusRule.runbookBaseUrl": "https://wiki.example.com/runbooks",
        "prometheusRule.additionalRuleLabels.team": "payments",
        "prometheusRule.disabledAlerts[0]": "QuickbooksIntegrationSuspendedTooLong",
        "serviceMonitor.jobNames.operator": "custom-operator",
        "serviceMonitor.jobNames.gateway": "custom-gateway",
    }
    groups = one(helm.template(sets=sets), "PrometheusRule")["spec"]["groups"]
    expected = _file_groups(
        {
            'job="qbo-operator"': 'job="custom-operator"',
            'job="qbo-gateway"': 'job="custom-gateway"',
            "https://github.com/greencheck/qbo-operator/blob/main/docs/runbooks/": "https://wiki.example.com/runbooks/",
        }
    )
    for group in expected:
        group["rules"] = [r for r in group["rules"] if r["alert"] != "QuickbooksIntegrationSuspendedTooLong"]
        for r in group["rules"]:
            r["labels"] = {**r["labels"], "team": "payments"}
    assert groups == expected
    text = json.dumps(groups)
    assert 'qbo-operator\\"' not in text and "github.com" not in text
    rules_file = tmp_path / "rendered-rules.yaml"
    rules_file.write_text(yaml.safe_dump({"groups": groups}))
    result = subprocess.run([promtool, "check", "rules", str(rules_file)], capture_output=True, text=True, check=False)
    assert result.returncode == 0, result.stdout + result.stderr


def test_grafana_dashboard_config_map(rendered: dict[str, list[dict[str, Any]]]) -> None:
    cm = one(rendered["full"], "ConfigMap", "-dashboard")
    assert cm["metadata"]["labels"]["grafana_dashboard"] == "1"
    assert json.loads(cm["data"]["qbo-operator.json"]) == json.loads((CHART / "files" / "dashboard.json").read_text())


# --- checkov skips -------------------------------------------------------------------------------------


def test_checkov_skips_carry_reasons_and_the_digest_skip_goes_with_a_digest(
    rendered: dict[str, list[dict[str, Any]]],
) -> None:
    for mode, expect_digest_skip in (("default", True), ("full", False)):
        for dep in find(rendered[mode], "Deployment"):
            skips = {k: v for k, v in dep["metadata"]["annotations"].items() if k.startswith("checkov.io/skip")}
            checks = {v.split("=", 1)[0] for v in skips.values()}
            assert {"CKV_K8S_15", "CKV_K8S_35", "CKV_K8S_38"} <= checks
            assert ("CKV_K8S_43" in checks) is expect_digest_skip
            assert all(len(v.split("=", 1)[1]) > 20 for v in skips.values())


# --- values the chart refuses -----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("sets", "message"),
    [
        ({"gateway.replicas": "two"}, "at '/gateway/replicas': got string, want integer"),
        (
            {"serviceMonitor.renderMode": "sometimes"},
            "at '/serviceMonitor/renderMode': value must be one of 'skipIfMissing', 'failIfMissing', 'alwaysRender'",
        ),
        ({"prometheusRule.renderMode": "always"}, "at '/prometheusRule/renderMode': value must be one of"),
        ({"gateway.replica": 3}, "at '/gateway': additional properties 'replica' not allowed"),
        (
            {"securityContext.readOnlyRootFilesystem": False},
            "at '/securityContext/readOnlyRootFilesystem': value must be true",
        ),
        (
            {"securityContext.allowPrivilegeEscalation": True},
            "at '/securityContext/allowPrivilegeEscalation': value must be false",
        ),
        ({"podSecurityContext.runAsNonRoot": False}, "at '/podSecurityContext/runAsNonRoot': value must be true"),
        ({"config.gatewayUrl": "qbo.example.com"}, "at '/config/gatewayUrl'"),
        ({"watchNamespaces[0]": "Tenants"}, "at '/watchNamespaces/0'"),
        (
            {"image.pullPolicy": "Sometimes"},
            "at '/image/pullPolicy': value must be one of 'Always', 'IfNotPresent', 'Never'",
        ),
        ({"image.digest": "latest"}, "at '/image/digest'"),
        ({"config.defaultSchedule": "nightly"}, "at '/config/defaultSchedule'"),
    ],
)
def test_schema_refuses_bad_values(helm: Helm, sets: dict[str, Any], message: str) -> None:
    error = helm.template_error(sets=sets)
    assert "values don't meet the specifications of the schema" in error
    assert message in error


@pytest.mark.parametrize(
    ("sets", "message"),
    [
        (
            {"credentials.existingSecret": "mine", "credentials.clientSecret": "inline"},
            "credentials.existingSecret is set, so credentials.clientSecret must be empty: "
            'put QBO_* keys in the Secret "mine" instead',
        ),
        (
            {"credentials.existingSecret": "mine", "credentials.greencheck.clientSecret": "inline"},
            "credentials.existingSecret is set, so credentials.greencheck.* must be empty",
        ),
        ({"credentials.stateSigningKey": "short"}, "credentials.stateSigningKey must be at least 32 characters"),
        (
            {"gateway.ingress.enabled": True},
            "gateway.ingress.enabled is true but neither gateway.ingress.host nor config.gatewayUrl is set",
        ),
        (
            {"gateway.pdb.enabled": True, "gateway.replicas": 1},
            "gateway.pdb.enabled with gateway.replicas <= 1 would block node drains",
        ),
        (
            {"operator.serviceAccount.create": False},
            "operator.serviceAccount.name is required when operator.serviceAccount.create is false",
        ),
    ],
)
def test_templates_refuse_inconsistent_values(helm: Helm, sets: dict[str, Any], message: str) -> None:
    assert message in helm.template_error(sets=sets)


# --- NOTES.txt ----------------------------------------------------------------------------------------------


def _notes(helm: Helm, tmp_path: Path, *args: str) -> str:
    """NOTES.txt as `helm install` prints it: rendered through a copy of the chart with one extra template
    (helm template never prints NOTES, and helm install --dry-run wants a cluster)."""
    chart = tmp_path / "chart"
    shutil.copytree(CHART, chart)
    (chart / "notes.txt").write_text((CHART / "templates" / "NOTES.txt").read_text())
    (chart / "templates" / "zz-notes.yaml").write_text(
        "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: notes\n"
        'data:\n  notes: {{ tpl (.Files.Get "notes.txt") . | quote }}\n'
    )
    objs = helm.template(*args, chart=chart)
    notes: str = one(objs, "ConfigMap", "notes")["data"]["notes"]
    return notes


def test_notes_say_what_to_do_next(helm: Helm, tmp_path: Path) -> None:
    notes = _notes(helm, tmp_path, *MODES["full"])
    assert "ACTION REQUIRED" not in notes
    assert "kubectl get qbi -A" in notes
    assert "kind: QuickbooksIntegration" in notes and "companyId:" in notes
    assert ".status.authorizationURL" in notes
    assert "Redirect URI:      https://qbo.example.com/oauth/callback" in notes
    assert "Webhook endpoint:  https://qbo.example.com/webhooks/quickbooks" in notes
    assert names.SYNC_REQUESTED_ANNOTATION in notes
    assert "ServiceMonitors installed, PrometheusRule installed, Grafana dashboard installed" in notes


def test_notes_list_missing_values(helm: Helm, tmp_path: Path) -> None:
    notes = _notes(helm, tmp_path, *MODES["namespaced"])
    assert "It serves QuickbooksIntegrations in the namespaces: tenants, tenants-b." in notes
    missing = re.findall(r"^  - (\S+)", notes, flags=re.MULTILINE)
    assert missing == [
        "config.greencheckApiUrl",
        "config.serviceProviderId",
        "credentials.clientId",
        "credentials.clientSecret",
        "credentials.webhookVerifierToken",
        "credentials.greencheck.clientId",
        "credentials.greencheck.clientSecret",
    ]
    assert "namespace: tenants" in notes
