"""Least privilege, checked with real requests on the control plane (kubectl as each ServiceAccount, with a
TokenRequest token, so RBAC decides exactly as in a cluster), and against the API server's audit log.

- Each sync ServiceAccount reaches only its own token Secret and its own QuickbooksIntegration.
- The gateway (chart installed in namespaced mode) cannot read Secrets it did not write, nor CRs outside
  the namespaces it serves.
- The operator's ClusterRole grants no verb it never uses: the product runs an integration's whole life
  (create, connect, sync, suspend, lose and regain its tokens, restart, delete) and every (resource, verb)
  the chart grants is matched with the requests the audit log recorded for the operator's ServiceAccount.
  A grant never used fails the test unless a comment in the chart's RBAC templates justifies it, by
  naming its verb and its resource (e.g. escalation prevention: the operator must hold what the sync
  Role it creates grants)."""

from __future__ import annotations

import datetime as dt
import json
import re
import subprocess
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml

from qbo_operator.core import names
from qbo_operator.core.models import parse_rfc3339
from qbo_operator.harness.controlplane import ControlPlane
from qbo_operator.harness.localstack import CHART, RELEASE, SYSTEM_NAMESPACE
from tests.support.chart import install_namespaced
from tests.support.kube import api_request
from tests.support.kubelet import Kubelet
from tests.support.ledger import SECRETS, Report
from tests.support.objects import COMPANY_IDS
from tests.support.stack import Product, product
from tests.support.wait import STACK_TIMEOUT, wait_for

pytestmark = pytest.mark.e2e

TEMPLATES = CHART / "templates"
NS_A, NS_B = "lp-tenant-a", "lp-tenant-b"
VERBS = ("get", "list", "watch", "create", "update", "patch", "delete", "deletecollection")


class Life:
    """What the module's product did, and when, for the audit-log comparison."""

    started: dt.datetime
    product: Product
    kubelet: Kubelet


@pytest.fixture(scope="module")
def life(cluster: ControlPlane, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Life]:
    """The product, and two tenants' integrations taken through their lives (the audit log records it)."""
    if not cluster.local:
        pytest.skip("needs the local control plane's audit log and test kubelet")
    local_cluster = cluster
    out = Life()
    out.started = dt.datetime.now(dt.UTC) - dt.timedelta(seconds=1)
    workdir = tmp_path_factory.mktemp("least-privilege")
    with product(local_cluster, workdir, companies=2, history=10, seed=11) as p:
        out.product, out.kubelet = p, p.kubelet
        p.create_integration(NS_A, "alpha", COMPANY_IDS[0])
        p.create_integration(NS_A, "beta", COMPANY_IDS[1])
        p.create_integration(NS_B, "gamma", COMPANY_IDS[2])
        p.connect(NS_A, "alpha", p.realms[0])
        p.connect(NS_A, "beta", p.realms[1])
        p.qbo("POST", f"/companies/{p.realms[0]}/payments", json={"n": 20, "seed": 5})
        run = out.kubelet.run(SYSTEM_NAMESPACE, p.request_sync(NS_A, "alpha", "first"))
        assert run.exit_code == 0, (run.stdout + run.stderr)[-2000:]
        # suspended and resumed; its tokens deleted (Disconnected) and the Connect flow again
        for suspend in ("true", "false"):
            p.cp.kubectl(
                "patch", names.PLURAL, "alpha", "-n", NS_A, "--type=merge", "-p", f'{{"spec":{{"suspend":{suspend}}}}}'
            )
            wait_for("suspension seen", lambda s=suspend: _suspended(p, s), timeout=STACK_TIMEOUT, interval=0.25)
        p.cp.kubectl("delete", "secret", names.token_secret_name("alpha"), "-n", NS_A)
        wait_for(
            "alpha Disconnected", lambda: p.phase(NS_A, "alpha") == "Disconnected", timeout=STACK_TIMEOUT, interval=0.25
        )
        p.connect(NS_A, "alpha", p.realms[0])
        # the operator restarted (its start-up listing), then a deletion with revocation at Intuit
        p.kill("operator")
        p.ready("operator")
        p.cp.kubectl("delete", names.PLURAL, "gamma", "-n", NS_B, "--wait=true", "--timeout=90s")
        p.record_secrets(NS_A, "alpha")
        p.record_secrets(NS_A, "beta")
        yield out
        p.cp.kubectl("delete", names.PLURAL, "--all", "-n", NS_A, "--wait=true", "--timeout=120s", check=False)


def _suspended(p: Product, value: str) -> bool:
    cond = next((c for c in p.integration(NS_A, "alpha")["status"]["conditions"] if c["type"] == "Suspended"), {})
    return cond.get("status") == ("True" if value == "true" else "False")


def as_account(cp: ControlPlane, kubeconfig: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return cp.kubectl(*args, kubeconfig=kubeconfig, check=False)


def patch_status(kubeconfig: Path, namespace: str, name: str) -> subprocess.CompletedProcess[str]:
    """A server-side dry-run merge patch of the CR's status, as one bare request (kubectl would read first)."""
    path = f"/apis/{names.GROUP}/{names.VERSION}/namespaces/{namespace}/{names.PLURAL}/{name}/status?dryRun=All"
    resp = api_request(kubeconfig, "PATCH", path, {"status": {}}, "application/merge-patch+json")
    return subprocess.CompletedProcess(
        ["PATCH", path], 0 if resp.is_success else 1, resp.text, "Forbidden" if resp.status_code == 403 else resp.text
    )


def create_sa_token_secret(kubeconfig: Path, namespace: str, name: str) -> httpx.Response:
    """POST a `kubernetes.io/service-account-token` Secret (dry run) under `name`: the request a compromised
    gateway would make to mint a token for an account in the namespace (finding 4)."""
    body = {
        "apiVersion": "v1",
        "kind": "Secret",
        "type": "kubernetes.io/service-account-token",
        "metadata": {"name": name, "annotations": {"kubernetes.io/service-account.name": "default"}},
    }
    path = f"/api/v1/namespaces/{namespace}/secrets?dryRun=All"
    return api_request(kubeconfig, "POST", path, body, "application/json")


def allowed(result: subprocess.CompletedProcess[str]) -> bool:
    if result.returncode == 0:
        return True
    assert "forbidden" in result.stderr.lower(), result.stderr  # refused by RBAC, not by anything else
    return False


# --- the sync ServiceAccounts ----------------------------------------------------------------------


def test_each_sync_account_reaches_only_its_own_secret_and_integration(life: Life, report: Report) -> None:
    p = life.product
    cp = p.cp
    cp.kubectl(
        "create",
        "secret",
        "generic",
        names.token_secret_name("gamma"),
        "-n",
        NS_B,
        "--from-literal=refresh_token=other-tenants-refresh-token-value",
        check=False,
    )
    SECRETS.add_secret("other-tenants-refresh-token-value", "another tenant's token (least-privilege test)")
    tried = 0
    for name, other in (("alpha", "beta"), ("beta", "alpha")):
        kubeconfig = p.kubeconfig_for(SYSTEM_NAMESPACE, names.sync_workload_name(NS_A, name))
        own_secret, other_secret = names.token_secret_name(name), names.token_secret_name(other)
        may = [
            ("get", "secret", own_secret, "-n", NS_A),
            ("patch", "secret", own_secret, "-n", NS_A, "--dry-run=server", "-p", '{"metadata":{"labels":{"x":"y"}}}'),
            ("get", names.PLURAL, name, "-n", NS_A),
        ]
        may_not = [
            ("get", "secret", other_secret, "-n", NS_A),  # the other tenant's tokens, same namespace
            ("get", "secret", names.token_secret_name("gamma"), "-n", NS_B),  # another namespace
            # the platform credentials beside it at home: only the kubelet reads them (envFrom)
            ("get", "secret", names.sync_credentials_name("production"), "-n", SYSTEM_NAMESPACE),
            ("get", "secrets", "-n", SYSTEM_NAMESPACE),
            ("get", "secrets", "-n", NS_A),  # no listing
            ("delete", "secret", own_secret, "-n", NS_A, "--dry-run=server"),
            ("create", "secret", "generic", "planted", "-n", NS_A, "--dry-run=server"),
            ("get", names.PLURAL, other, "-n", NS_A),
            ("get", names.PLURAL, "-n", NS_A),  # no listing
            ("get", names.PLURAL, "-A"),
            (
                "patch",
                names.PLURAL,
                name,
                "-n",
                NS_A,
                "--type=merge",
                "-p",
                '{"spec":{"suspend":true}}',
                "--dry-run=server",
            ),  # its own spec: not the sync's to change
            ("get", "pods", "-n", NS_A),
            ("get", "configmaps", "-n", NS_A),
            ("create", "role", "x", "--verb=get", "--resource=secrets", "-n", NS_A, "--dry-run=server"),
        ]
        for args in may:
            assert allowed(as_account(cp, kubeconfig, *args)), f"{name}'s sync account cannot {args}"
        for args in may_not:
            assert not allowed(as_account(cp, kubeconfig, *args)), f"{name}'s sync account can {args}"
        assert allowed(patch_status(kubeconfig, NS_A, name)), f"{name}'s sync account cannot patch its status"
        assert not allowed(patch_status(kubeconfig, NS_A, other)), f"{name}'s sync account can patch {other}'s status"
        tried += len(may) + len(may_not) + 2
    report.row(
        "least privilege", "sync ServiceAccounts: own Secret and CR only (real requests)", tried=tried, held=tried
    )


# --- the gateway, chart in namespaced mode -----------------------------------------------------------


@pytest.fixture(scope="module")
def namespaced_release(cluster: ControlPlane) -> Iterator[dict[str, Any]]:
    """A second release of the chart serving one namespace, with the gateway's account and a Secret in
    the served namespace that the gateway never wrote."""
    cp = cluster
    name = f"lp{uuid.uuid4().hex[:6]}"
    home, watched, other = f"{name}-system", f"{name}-served", f"{name}-other"
    for ns in (home, watched, other):
        cp.kubectl("create", "namespace", ns)
    install_namespaced(cp, name, home, watched, cp.dir / f"{name}-values.yaml", secret_suffix="-least-privilege")
    cp.kubectl("create", "secret", "generic", "bank-database", "-n", watched, "--from-literal=password=hunter2-db")
    for ns in (watched, other):
        cp.kubectl(
            "apply",
            "-f",
            "-",
            input=json.dumps(
                {
                    "apiVersion": names.API_VERSION,
                    "kind": names.KIND,
                    "metadata": {"name": "acme", "namespace": ns},
                    "spec": {"companyId": COMPANY_IDS[0]},
                }
            ),
        )
    try:
        yield {
            "kubeconfig": cp.service_account_kubeconfig(home, f"{name}-qbo-operator-gateway"),
            "watched": watched,
            "other": other,
        }
    finally:
        cp.helm("uninstall", name, "--namespace", home, check=False)
        for ns in (home, watched, other):
            cp.kubectl("delete", "namespace", ns, "--wait=false", check=False)


def test_gateway_reads_no_integration_outside_its_namespaces(
    cluster: ControlPlane, namespaced_release: dict[str, Any], report: Report
) -> None:
    cp, r = cluster, namespaced_release
    kc, watched, other = r["kubeconfig"], r["watched"], r["other"]
    assert allowed(as_account(cp, kc, "get", names.PLURAL, "acme", "-n", watched))
    assert allowed(patch_status(kc, watched, "acme"))
    suspend = '{"spec":{"suspend":true}}'
    refused = [
        ("get", names.PLURAL, "acme", "-n", other),
        ("get", names.PLURAL, "-A"),
        ("create", "secret", "generic", "x", "-n", other, "--dry-run=server"),
        # no Secret at all, even where it serves: the operator creates token Secrets (findings 2 and 4)
        ("create", "secret", "generic", "x", "-n", watched, "--dry-run=server"),
        ("create", "secret", "generic", names.token_secret_name("acme"), "-n", watched, "--dry-run=server"),
        ("get", "secrets", "-n", watched),  # no listing
        ("patch", names.PLURAL, "acme", "-n", watched, "--type=merge", "-p", suspend, "--dry-run=server"),
        ("delete", "secret", "bank-database", "-n", watched, "--dry-run=server"),
    ]
    for args in refused:
        assert not allowed(as_account(cp, kc, *args)), f"the gateway can {args}"
    assert not allowed(patch_status(kc, other, "acme")), "the gateway can patch status outside its namespaces"
    minted = create_sa_token_secret(kc, watched, names.token_secret_name("acme"))
    assert minted.status_code == 403, f"the gateway could create a service-account-token Secret: {minted.status_code}"
    checks = len(refused) + 4
    report.row(
        "least privilege",
        "gateway (namespaced chart): no CR or Secret outside its namespaces",
        tried=checks,
        held=checks,
        kind="attack",  # among them: the gateway creating a (service-account-token) Secret
    )


def test_gateway_cannot_read_secrets_it_did_not_write(
    cluster: ControlPlane, namespaced_release: dict[str, Any], report: Report
) -> None:
    """docs/design.md §4: the gateway may read CRs, write token Secrets and patch CR status, nothing else. A Secret
    of the tenant's own (a database password) in a namespace the gateway serves is not the gateway's."""
    cp, r = cluster, namespaced_release
    SECRETS.add_secret("hunter2-db", "a tenant's own Secret (least-privilege test)")
    result = as_account(cp, r["kubeconfig"], "get", "secret", "bank-database", "-n", r["watched"], "-o", "json")
    held = not allowed(result)
    report.row("least privilege", "gateway cannot read a Secret it did not write", tried=1, held=int(held))
    assert held, (
        "the gateway's ServiceAccount read a Secret it never wrote (it may get/update only token Secrets, "
        "granted by name per integration)"
    )


# --- the operator's ClusterRole against the audit log ------------------------------------------------


def granted_rules(cp: ControlPlane) -> dict[tuple[str, str], set[str]]:
    """(apiGroup, resource) -> verbs of the operator's ClusterRoles, and of its realm-claims Role in the release
    namespace, as the installed release has them."""
    manifest = cp.helm("get", "manifest", RELEASE, "--namespace", SYSTEM_NAMESPACE).stdout
    out: dict[tuple[str, str], set[str]] = {}
    for doc in yaml.safe_load_all(manifest):
        if not doc or not doc["metadata"]["name"].startswith(f"{RELEASE}-operator"):
            continue
        if doc["kind"] != "ClusterRole" and (doc["kind"], doc["metadata"]["name"]) != (
            "Role",
            f"{RELEASE}-operator-claims",
        ):
            continue
        for rule in doc.get("rules") or []:
            assert not rule.get("resourceNames"), rule
            for group in rule["apiGroups"]:
                for resource in rule["resources"]:
                    out.setdefault((group, resource), set()).update(rule["verbs"])
    return out


def used_requests(cp: ControlPlane, username: str, since: dt.datetime) -> dict[tuple[str, str], set[str]]:
    """(apiGroup, resource[/subresource]) -> verbs the account really used (and was allowed), from the audit
    log. A server-side apply that created its object (201) also used `create`."""
    out: dict[tuple[str, str], set[str]] = {}
    for event in cp.audit_events():
        if (event.get("user") or {}).get("username") != username or event.get("stage") == "Panic":
            continue
        if parse_rfc3339(event["requestReceivedTimestamp"]) < since:
            continue
        ref = event.get("objectRef") or {}
        if not ref.get("resource"):
            continue
        code = (event.get("responseStatus") or {}).get("code", 200)
        if code == 403 or ref.get("apiGroup") in ("authorization.k8s.io", "authentication.k8s.io"):
            continue  # refused, or the self-reviews every authenticated user may make
        resource = ref["resource"] + (f"/{ref['subresource']}" if ref.get("subresource") else "")
        verbs = out.setdefault((ref.get("apiGroup", ""), resource), set())
        verbs.add(event["verb"])
        if event["verb"] == "patch" and code == 201:
            verbs.add("create")
    return out


_RESOURCE_WORDS = {
    "quickbooksintegrations": ("integration", r"\bcrs?\b"),
    "status": ("status",),
    "finalizers": ("finalizers",),
    "secrets": ("secret",),
    "serviceaccounts": ("serviceaccount", "service account"),
    "roles": (r"\brole\b", r"\broles\b"),
    "rolebindings": ("rolebinding",),
    "cronjobs": ("cronjob",),
    "jobs": (r"\bjobs?\b",),
    "events": ("event",),
    "customresourcedefinitions": ("crd", "resource definition"),
    "namespaces": ("namespace",),
    "clusterkopfpeerings": ("peering",),
    "leases": ("lease", "claim"),
}


def chart_comments() -> list[str]:
    """Every comment in the chart's RBAC templates (`#` lines and {{/* */}} blocks), one string each."""
    blocks: list[str] = []
    for path in (TEMPLATES / "_rbac.tpl", TEMPLATES / "operator-rbac.yaml", TEMPLATES / "realm-claims-rbac.yaml"):
        text = path.read_text()
        blocks += re.findall(r"\{\{-?\s*/\*(.*?)\*/\s*-?\}\}", text, re.S)
        current: list[str] = []
        for line in [*text.splitlines(), ""]:
            if line.strip().startswith("#"):
                current.append(line.strip().lstrip("#"))
            elif current:
                blocks.append(" ".join(current))
                current = []
    return [b.lower() for b in blocks]


def justified(resource: str, verb: str, comments: list[str]) -> bool:
    """A comment block names the verb, the resource and (for a subresource) the subresource too."""
    parts = [_RESOURCE_WORDS.get(part, (part.rstrip("s"),)) for part in resource.split("/")]
    for block in comments:
        if re.search(rf"(?<![a-z]){verb}(?![a-z])", block) and all(
            any(re.search(w, block) for w in words) for words in parts
        ):
            return True
    return False


def test_operator_cluster_role_grants_no_verb_it_never_uses(life: Life, report: Report) -> None:
    """Runs last in the module: it ends the life with the deletion of a connected integration (the grant
    revoked at Intuit), then reads the audit log."""
    cp = life.product.cp
    cp.kubectl("delete", names.PLURAL, "alpha", "-n", NS_A, "--wait=true", "--timeout=120s")
    username = f"system:serviceaccount:{SYSTEM_NAMESPACE}:{life.product.stack.service_account('operator')}"
    granted = granted_rules(cp)
    used = wait_for("the audit log", lambda: used_requests(cp, username, life.started), timeout=30, interval=0.25)
    comments = chart_comments()
    rows: list[tuple[str, str, str]] = []
    unjustified = []
    for (group, resource), verbs in sorted(granted.items()):
        for verb in sorted(verbs, key=VERBS.index):
            if verb in used.get((group, resource), set()):
                state = "used"
            elif justified(resource, verb, comments):
                state = "unused, justified in the chart"
            else:
                state = "UNUSED"
                unjustified.append(f"{verb} {resource}{f'.{group}' if group else ''}")
            rows.append((f"{resource}{f'.{group}' if group else ''}", verb, state))
    beyond = sorted(f"{v} {r}" for (g, r), vs in used.items() for v in vs if v not in granted.get((g, r), set()))
    width = max(len(r[0]) for r in rows)
    print("\noperator ClusterRole: granted (resource, verb) and whether the audit log shows it used")
    for resource, verb, state in rows:
        print(f"  {resource:<{width}}  {verb:<16} {state}")
    report.row(
        "least privilege",
        "operator ClusterRole grants vs audit log",
        tried=f"{len(rows)} grants",
        held=f"{len(rows) - len(unjustified)} used or justified",
    )
    assert beyond == [], f"requests the audit log shows allowed but the chart does not grant: {beyond}"
    assert unjustified == [], (
        f"{len(unjustified)} grants of the operator's ClusterRole were never used in a whole life of an "
        f"integration and no chart comment justifies them: {', '.join(unjustified)}"
    )
