"""The CRD and the chart against a real API server (tests/conftest.py's control plane): the CEL rules
refuse bad specs with their messages, the chart applies (server-side dry run) in every mode, and the
installed RBAC lets the operator and the gateway do exactly what they need, checked as their own
ServiceAccounts."""

from __future__ import annotations

import base64
import subprocess
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from qbo_operator.core import models, names
from qbo_operator.harness.controlplane import ControlPlane
from qbo_operator.reconciler import manifests
from tests.support.chart import CHART, MODES, install_namespaced
from tests.support.objects import SFTP

pytestmark = pytest.mark.e2e

COMPANY = "5f0c3a2e-8d1b-4c7e-9a61-2b7f3c9d4e10"


def integration(name: str, namespace: str, **spec: Any) -> dict[str, Any]:
    return {
        "apiVersion": names.API_VERSION,
        "kind": names.KIND,
        "metadata": {"name": name, "namespace": namespace},
        "spec": {"companyId": COMPANY, **spec},
    }


def apply(cluster: ControlPlane, obj: dict[str, Any], *args: str) -> subprocess.CompletedProcess[str]:
    return cluster.kubectl("apply", "-f", "-", *args, input=yaml.safe_dump(obj), check=False)


def patch(cluster: ControlPlane, namespace: str, name: str, body: str, *args: str) -> subprocess.CompletedProcess[str]:
    return cluster.kubectl("patch", "qbi", name, "-n", namespace, "--type=merge", "-p", body, *args, check=False)


# --- the CRD ------------------------------------------------------------------------------------------------


def test_defaults_are_applied(cluster: ControlPlane, namespace: str) -> None:
    assert apply(cluster, integration("acme", namespace)).returncode == 0
    spec = cluster.kubectl_json("get", "qbi", "acme", "-n", namespace)["spec"]
    assert spec == {
        "companyId": COMPANY,
        "environment": "production",
        "suspend": False,
        "revokeOnDelete": True,
        "delivery": {"method": "api"},
    }
    models.IntegrationSpec.model_validate(spec)  # what the API server stores, the processes parse


@pytest.mark.parametrize(
    ("delivery", "stored"),
    [
        ({}, {"method": "api"}),
        ({"method": "api"}, {"method": "api"}),
        ({"method": "sftp", "sftp": SFTP}, {"method": "sftp", "sftp": {**SFTP, "port": 22}}),
        ({"method": "sftp", "sftp": {**SFTP, "port": 2222}}, {"method": "sftp", "sftp": {**SFTP, "port": 2222}}),
    ],
    ids=["empty", "api", "sftp", "sftp-port"],
)
def test_a_complete_delivery_is_accepted_with_its_defaults(
    cluster: ControlPlane, namespace: str, delivery: dict[str, Any], stored: dict[str, Any]
) -> None:
    result = apply(cluster, integration("acme", namespace, delivery=delivery), "--validate=strict")
    assert result.returncode == 0, result.stderr
    spec = cluster.kubectl_json("get", "qbi", "acme", "-n", namespace)["spec"]
    assert spec["delivery"] == stored
    parsed = models.IntegrationSpec.model_validate(spec).delivery
    assert parsed.method == stored["method"]
    assert (parsed.sftp.secret_name if parsed.sftp else None) == stored.get("sftp", {}).get("secretName")


def test_kubectl_explain_helps(cluster: ControlPlane) -> None:
    text = cluster.kubectl("explain", "qbi.spec.schedule").stdout
    assert "5-field cron expression" in text and "H 2 * * *" in text
    assert "Green Check company (CRB) id" in cluster.kubectl("explain", "quickbooksintegration.spec.companyId").stdout
    assert "ssh-privatekey" in cluster.kubectl("explain", "qbi.spec.delivery.sftp.secretName").stdout


@pytest.mark.parametrize(
    ("name", "spec", "message"),
    [
        ("bad-id", {"companyId": "acme"}, "spec.companyId"),
        ("bad-schedule", {"schedule": "every night"}, "schedule must be a 5-field cron expression"),
        ("tz-in-schedule", {"schedule": "CRON_TZ=UTC 0 2 * * *"}, "put the time zone in spec.timeZone"),
        ("bad-zone", {"timeZone": "Local"}, "timeZone must be an IANA time zone name"),
        ("bad-zone-2", {"timeZone": "not a zone"}, "timeZone must be an IANA time zone name"),
        ("bad-env", {"environment": "staging"}, 'spec.environment: Unsupported value: "staging"'),
        ("bad-secret", {"tokenSecretName": "Not_A_Name"}, "spec.tokenSecretName"),
        ("bad-method", {"delivery": {"method": "ftp"}}, 'spec.delivery.method: Unsupported value: "ftp"'),
        ("sftp-no-block", {"delivery": {"method": "sftp"}}, "spec.delivery.sftp is required when method is sftp"),
        (
            "sftp-no-host",
            {"delivery": {"method": "sftp", "sftp": {k: v for k, v in SFTP.items() if k != "host"}}},
            "sftp.host is required",
        ),
        ("sftp-no-method", {"delivery": {"sftp": SFTP}}, "spec.delivery.sftp is set but method is not sftp"),
        ("bad-port", {"delivery": {"method": "sftp", "sftp": {**SFTP, "port": 65536}}}, "spec.delivery.sftp.port"),
        ("bad-dir", {"delivery": {"method": "sftp", "sftp": {**SFTP, "directory": "/a/../b"}}}, "a .. path segment"),
        ("x" * 64, {}, "metadata.name must be at most 63 characters"),
    ],
)
def test_bad_specs_are_refused_with_a_message(
    cluster: ControlPlane, namespace: str, name: str, spec: dict[str, Any], message: str
) -> None:
    result = apply(cluster, integration(name, namespace, **spec))
    assert result.returncode != 0
    assert message in result.stderr
    assert cluster.kubectl("get", "qbi", "-n", namespace, "-o", "name").stdout.strip() == ""


def test_company_id_is_required(cluster: ControlPlane, namespace: str) -> None:
    obj = integration("acme", namespace)
    del obj["spec"]["companyId"]
    result = apply(cluster, obj)
    assert result.returncode != 0 and "spec.companyId: Required value" in result.stderr


def test_unknown_fields_are_refused(cluster: ControlPlane, namespace: str) -> None:
    result = apply(cluster, integration("acme", namespace, compnyName="typo"), "--validate=strict")
    assert result.returncode != 0
    assert 'unknown field "spec.compnyName"' in result.stderr


def test_company_id_is_immutable(cluster: ControlPlane, namespace: str) -> None:
    assert apply(cluster, integration("acme", namespace)).returncode == 0
    result = patch(cluster, namespace, "acme", f'{{"spec":{{"companyId":"{uuid.uuid4()}"}}}}')
    assert result.returncode != 0
    assert "companyId is immutable: create a new QuickbooksIntegration for another company" in result.stderr
    assert patch(cluster, namespace, "acme", '{"spec":{"companyName":"Acme"}}').returncode == 0


def test_token_secret_name_is_immutable(cluster: ControlPlane, namespace: str) -> None:
    assert apply(cluster, integration("plain", namespace)).returncode == 0
    added = patch(cluster, namespace, "plain", '{"spec":{"tokenSecretName":"other"}}')
    assert added.returncode != 0 and "tokenSecretName is immutable" in added.stderr
    assert apply(cluster, integration("named", namespace, tokenSecretName="mine")).returncode == 0
    changed = patch(cluster, namespace, "named", '{"spec":{"tokenSecretName":"theirs"}}')
    assert changed.returncode != 0 and "tokenSecretName is immutable" in changed.stderr
    removed = patch(cluster, namespace, "named", '{"spec":{"tokenSecretName":null}}')
    assert removed.returncode != 0 and "tokenSecretName is immutable" in removed.stderr


def test_environment_is_locked_once_a_realm_is_connected(cluster: ControlPlane, namespace: str) -> None:
    assert apply(cluster, integration("acme", namespace, environment="sandbox")).returncode == 0
    assert patch(cluster, namespace, "acme", '{"spec":{"environment":"production"}}').returncode == 0
    connected = patch(cluster, namespace, "acme", '{"status":{"realmId":"9130355357483456"}}', "--subresource=status")
    assert connected.returncode == 0, connected.stderr
    result = patch(cluster, namespace, "acme", '{"spec":{"environment":"sandbox"}}')
    assert result.returncode != 0
    assert "spec.environment cannot change once a QuickBooks company is connected" in result.stderr


def test_status_is_a_subresource_with_a_full_schema(cluster: ControlPlane, namespace: str) -> None:
    assert apply(cluster, integration("acme", namespace)).returncode == 0
    assert patch(cluster, namespace, "acme", '{"status":{"phase":"Connected"}}').returncode == 0  # ignored
    assert "status" not in cluster.kubectl_json("get", "qbi", "acme", "-n", namespace)
    bad = patch(cluster, namespace, "acme", '{"status":{"phase":"Happy"}}', "--subresource=status")
    assert bad.returncode != 0 and 'status.phase: Unsupported value: "Happy"' in bad.stderr
    pruned = patch(cluster, namespace, "acme", '{"status":{"phase":"Pending","extra":1}}', "--subresource=status")
    assert pruned.returncode == 0
    assert cluster.kubectl_json("get", "qbi", "acme", "-n", namespace)["status"] == {"phase": "Pending"}


def test_printer_columns(cluster: ControlPlane, namespace: str) -> None:
    assert apply(cluster, integration("acme", namespace, companyName="Acme Dispensary")).returncode == 0
    sftp = integration("beta", namespace, companyName="Beta", delivery={"method": "sftp", "sftp": SFTP})
    assert apply(cluster, sftp).returncode == 0
    narrow = cluster.kubectl("get", "qbi", "-n", namespace).stdout.splitlines()
    wide = cluster.kubectl("get", "qbi", "-n", namespace, "-o", "wide").stdout.splitlines()
    assert narrow[0].split() == ["NAME", "COMPANY", "PHASE", "READY", "LAST", "SYNC", "AGE"]
    assert wide[0].split() == [
        "NAME",
        "COMPANY",
        "PHASE",
        "READY",
        "REALM",
        "SUSPENDED",
        "REJECTED",
        "DELIVERY",
        "LAST",
        "SYNC",
        "AGE",
    ]
    assert "Acme Dispensary" in narrow[1]
    # No status here (no operator): empty cells, so read the column where its header starts.
    delivery = wide[0].index("DELIVERY")
    assert {row.split()[0]: row[delivery:].split()[0] for row in wide[1:]} == {"acme": "api", "beta": "sftp"}
    assert cluster.kubectl("get", "greencheck", "-n", namespace, "-o", "name").stdout.split() == [
        f"quickbooksintegration.integrations.greencheckverified.com/{name}" for name in ("acme", "beta")
    ]


# --- the chart ----------------------------------------------------------------------------------------------


def _template(cluster: ControlPlane, release: str, namespace: str, *args: str) -> str:
    result = cluster.helm("template", release, str(CHART), "--namespace", namespace, *args)
    return result.stdout


@pytest.mark.parametrize("mode", MODES)
def test_server_side_dry_run_accepts_every_object(cluster: ControlPlane, namespace: str, mode: str) -> None:
    args = [
        *MODES[mode],
        "--set",
        "serviceMonitor.renderMode=skipIfMissing",
        "--set",
        "prometheusRule.renderMode=skipIfMissing",
    ]
    if mode == "namespaced":
        args += ["--set", f"watchNamespaces={{{namespace}}}"]
    manifest = _template(cluster, f"dry-{mode}", namespace, *args)
    result = cluster.kubectl("apply", "--dry-run=server", "--validate=strict", "-f", "-", input=manifest, check=False)
    assert result.returncode == 0, result.stderr
    assert result.stdout.count("(server dry run)") == len([d for d in yaml.safe_load_all(manifest) if d])


@pytest.fixture
def release(cluster: ControlPlane, namespace: str) -> Iterator[dict[str, str]]:
    """A namespaced install into `namespace`, watching one fresh namespace; uninstalled afterwards."""
    name = f"r{uuid.uuid4().hex[:6]}"
    watched = f"{namespace[:50]}-w"
    other = f"{namespace[:50]}-o"
    for ns in (watched, other):
        cluster.kubectl("create", "namespace", ns)
    values_file = cluster.dir / f"{name}-values.yaml"
    installed = install_namespaced(cluster, name, namespace, watched, values_file)
    try:
        yield {
            "name": name,
            "namespace": namespace,
            "watched": watched,
            "other": other,
            "fullname": f"{name}-qbo-operator",
            "notes": installed.stdout,
            "values": str(values_file),
        }
    finally:
        cluster.helm("uninstall", name, "--namespace", namespace, check=False)
        for ns in (watched, other):
            cluster.kubectl("delete", "namespace", ns, "--wait=false", check=False)


def _can(cluster: ControlPlane, kubeconfig: Path, verb: str, resource: str, namespace: str) -> bool:
    """`kubectl auth can-i` as the ServiceAccount; "quickbooksintegrations/status" means the subresource."""
    resource, _, sub = resource.partition("/")
    args = ["auth", "can-i", verb, resource, "-n", namespace, *([f"--subresource={sub}"] if sub else [])]
    result = cluster.kubectl(*args, kubeconfig=kubeconfig, check=False)
    return result.stdout.strip() == "yes"


def test_install_prints_what_to_do_next(release: dict[str, str]) -> None:
    assert "kubectl get qbi -A" in release["notes"]
    assert "ACTION REQUIRED" not in release["notes"]
    assert f"namespace: {release['watched']}" in release["notes"]


def test_operator_rbac_as_its_service_account(cluster: ControlPlane, release: dict[str, str]) -> None:
    sa = cluster.service_account_kubeconfig(release["namespace"], f"{release['fullname']}-operator")
    watched, other = release["watched"], release["other"]
    for verb, resource in [
        ("watch", names.PLURAL),
        ("patch", names.PLURAL),
        ("patch", f"{names.PLURAL}/status"),
        ("create", "secrets"),
        ("update", "secrets"),
        ("create", "serviceaccounts"),
        ("create", "roles"),
        ("create", "rolebindings"),
        ("create", "cronjobs.batch"),
        ("create", "jobs.batch"),
        ("create", "events"),
    ]:
        assert _can(cluster, sa, verb, resource, watched), f"operator cannot {verb} {resource}"
        assert not _can(cluster, sa, verb, resource, other), f"operator can {verb} {resource} outside its namespaces"
    assert _can(cluster, sa, "list", "customresourcedefinitions.apiextensions.k8s.io", "default")
    assert not _can(cluster, sa, "delete", names.PLURAL, watched)
    assert not _can(cluster, sa, "delete", "secrets", watched)  # garbage collection deletes, not the operator
    assert not _can(cluster, sa, "escalate", "roles", watched)
    # Escalation prevention for real: the operator creates a sync Role it fully holds.
    # The owner must exist, or the garbage collector removes the Role before the RoleBinding refers to it.
    assert apply(cluster, integration("acme", watched)).returncode == 0
    uid = cluster.kubectl_json("get", "qbi", "acme", "-n", watched)["metadata"]["uid"]
    owner = manifests.Owner(watched, "acme", uid, release["namespace"])
    for obj in (
        manifests.service_account(owner),
        manifests.role(owner, "acme-qbo-tokens", sftp_secret="acme-sftp"),
        manifests.role_binding(owner),
    ):
        # server-side apply (a PATCH), as the operator writes: no `get` needed
        result = cluster.kubectl(
            "apply", "--server-side", "--field-manager=qbo-operator", "-f", "-",
            input=yaml.safe_dump(obj), kubeconfig=sa, check=False,
        )  # fmt: skip
        assert result.returncode == 0, result.stderr


def test_gateway_rbac_as_its_service_account(cluster: ControlPlane, release: dict[str, str]) -> None:
    sa = cluster.service_account_kubeconfig(release["namespace"], f"{release['fullname']}-gateway")
    watched, other = release["watched"], release["other"]
    allowed = [
        ("get", names.PLURAL),
        ("list", names.PLURAL),
        ("watch", names.PLURAL),
        ("patch", f"{names.PLURAL}/status"),
        ("create", "events"),
    ]
    refused = [
        ("create", "secrets"),  # the operator creates each token Secret; the gateway only fills it
        ("get", "secrets"),  # token Secrets only, by name, through the operator's per-integration Role
        ("update", "secrets"),
        ("list", "secrets"),
        ("watch", "secrets"),
        ("delete", "secrets"),
        ("patch", names.PLURAL),
        ("create", "roles"),
        ("create", "cronjobs.batch"),
    ]
    for verb, resource in allowed:
        assert _can(cluster, sa, verb, resource, watched), f"gateway cannot {verb} {resource}"
        assert not _can(cluster, sa, verb, resource, other), f"gateway can {verb} {resource} outside its namespaces"
    for verb, resource in refused:
        assert not _can(cluster, sa, verb, resource, watched), f"gateway can {verb} {resource}"


def test_upgrade_keeps_the_generated_signing_key(cluster: ControlPlane, release: dict[str, str]) -> None:
    def key() -> str:
        secret = cluster.kubectl_json("get", "secret", f"{release['fullname']}-credentials", "-n", release["namespace"])
        return base64.b64decode(secret["data"]["QBO_STATE_SIGNING_KEY"]).decode()

    before = key()
    assert len(before) >= 32
    cluster.helm("upgrade", release["name"], str(CHART), "--namespace", release["namespace"], "-f", release["values"])
    assert key() == before
