"""A tenant with the built-in `edit` role in its namespace reaches no platform credential (issue 17, finding 3).

`edit` reads every Secret of the namespace and may run Pods as any of its ServiceAccounts (and mint their tokens).
The app's Intuit client secret and Green Check's credentials act for every company, so none of that may reach them:
they live only in the release namespace, beside the sync CronJobs (docs/security.md "Platform credentials in one
place"). The real operator process, a connected integration, and real requests as the tenant (impersonated by the
cluster's admin) and as each ServiceAccount of the namespace."""

from __future__ import annotations

import base64
import uuid
from pathlib import Path

from qbo_operator.core import names
from qbo_operator.harness.controlplane import ControlPlane, kubeconfig_yaml
from tests.support.kube import HOME, apply, settled
from tests.support.ledger import Report
from tests.support.objects import fake_tokens, integration, token_secret
from tests.support.operator import GREENCHECK_CLIENT_SECRET, QBO_CLIENT_SECRET
from tests.support.processes import Operator
from tests.support.wait import wait_for

PLATFORM = {"QBO_CLIENT_SECRET": QBO_CLIENT_SECRET, "GREENCHECK_CLIENT_SECRET": GREENCHECK_CLIENT_SECRET}


def leaks(text: str) -> list[str]:
    """Which platform credentials `text` holds, as themselves or base64-encoded (as Secret data is)."""
    return [
        key for key, value in PLATFORM.items() if value in text or base64.b64encode(value.encode()).decode() in text
    ]


def test_a_tenant_with_edit_reaches_no_platform_credential(
    cluster: ControlPlane, namespace: str, operator: Operator, report: Report, tmp_path: Path
) -> None:
    apply(cluster, integration(namespace, "acme"), token_secret(namespace, "acme", fake_tokens("7300000000000001")))
    wait_for("Connected", lambda: settled(cluster, namespace, "acme", "Connected"))
    credentials = names.sync_credentials_name("production")
    assert cluster.kubectl("get", "secret", credentials, "-n", HOME, check=False).returncode == 0  # it exists, at home

    tenant = f"tenant-{uuid.uuid4().hex[:6]}"
    cluster.kubectl(
        "create", "rolebinding", f"{tenant}-edit", "--clusterrole=edit", f"--user={tenant}", "-n", namespace
    )  # fmt: skip

    def as_tenant(*args: str) -> tuple[int, str]:
        done = cluster.kubectl(*args, f"--as={tenant}", check=False)
        return done.returncode, done.stdout + done.stderr

    # Everything the namespace's Secrets hold, as the tenant reads it.
    code, secrets = as_tenant("get", "secrets", "-n", namespace, "-o", "json")
    assert code == 0, secrets
    assert leaks(secrets) == [], "a platform credential is readable in the tenant namespace"

    # Every ServiceAccount of the namespace (and one the tenant makes), as the tenant may act: mint its token, then
    # look for the credentials with it.
    code, said = as_tenant("create", "serviceaccount", "probe", "-n", namespace)
    assert code == 0, said
    code, accounts = as_tenant("get", "serviceaccounts", "-n", namespace, "-o", "jsonpath={.items[*].metadata.name}")
    assert code == 0, accounts
    tried = 0
    for account in accounts.split():
        code, token = as_tenant("create", "token", account, "-n", namespace, "--duration=10m")
        if code != 0:
            continue
        tried += 1
        kubeconfig = tmp_path / f"{account}.kubeconfig"
        kubeconfig.write_text(kubeconfig_yaml(cluster.server, cluster.dir / "pki" / "ca.crt", {"token": token.strip()}))
        for args in (("get", "secret", credentials, "-n", HOME), ("get", "secrets", "-n", HOME)):
            done = cluster.kubectl(*args, kubeconfig=kubeconfig, check=False)
            assert done.returncode != 0 and "forbidden" in done.stderr.lower(), f"{account} can {args}"
            assert not leaks(done.stdout + done.stderr)
    assert tried >= 1, "the tenant could mint no ServiceAccount token: the test proves nothing"
    # As the tenant itself, the release namespace is closed.
    for args in (("get", "secret", credentials, "-n", HOME), ("get", "secrets", "-n", HOME)):
        code, said = as_tenant(*args)
        assert code != 0 and "forbidden" in said.lower() and not leaks(said), args
    report.row(
        "attacks", "a tenant with `edit` looks for platform credentials", tried=f"{tried} accounts + Secrets",
        held="none reachable", kind="attack",
    )  # fmt: skip
