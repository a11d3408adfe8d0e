"""The operator as a real process on the session's control plane, under the chart's ServiceAccount and
RBAC (rendered with `helm template`), talking to a real QBO sandbox for token refresh and revocation."""

from __future__ import annotations

import re
from collections.abc import Iterator
from pathlib import Path

import pytest

from qbo_operator.core import names
from qbo_operator.harness.controlplane import ControlPlane, free_port
from qbo_operator.harness.sandbox.qbo import QboSandbox
from tests.support.kube import apply, render_chart_rbac, scan_for_secrets
from tests.support.operator import (
    GATEWAY_URL,
    GREENCHECK_CLIENT_SECRET,
    OPERATOR_NAMESPACE,
    QBO_CLIENT_ID,
    QBO_CLIENT_SECRET,
    SIGNING_KEY,
    Account,
    StartOperator,
)
from tests.support.processes import Operator


@pytest.fixture(scope="session")
def qbo_sandbox() -> Iterator[QboSandbox]:
    sb = QboSandbox(QBO_CLIENT_ID, QBO_CLIENT_SECRET, "http://127.0.0.1:8000/oauth/callback")
    with sb.serve_in_thread():
        yield sb


@pytest.fixture(scope="session")
def operator_account(cluster: ControlPlane) -> Account:
    """The chart's operator ServiceAccount, ClusterRoles and bindings, and a kubeconfig with its token."""
    cluster.kubectl("create", "namespace", OPERATOR_NAMESPACE, check=False)
    docs, account = render_chart_rbac(cluster, OPERATOR_NAMESPACE)
    apply(cluster, *docs)
    return Account(
        cluster.service_account_kubeconfig(OPERATOR_NAMESPACE, account),
        f"system:serviceaccount:{OPERATOR_NAMESPACE}:{account}",
    )


@pytest.fixture
def operator_env(qbo_sandbox: QboSandbox) -> dict[str, str]:
    return {
        "QBO_CLIENT_ID": QBO_CLIENT_ID,
        "QBO_CLIENT_SECRET": QBO_CLIENT_SECRET,
        "QBO_STATE_SIGNING_KEY": SIGNING_KEY,
        "QBO_GATEWAY_URL": GATEWAY_URL,
        "QBO_TOKEN_URL": qbo_sandbox.token_url,
        "QBO_REVOKE_URL": qbo_sandbox.revoke_url,
        "QBO_API_URL": qbo_sandbox.api_url,
        "GREENCHECK_API_URL": f"http://127.0.0.1:{free_port()}",
        "GREENCHECK_CLIENT_ID": "greencheck-client-op",
        "GREENCHECK_CLIENT_SECRET": GREENCHECK_CLIENT_SECRET,
        "GREENCHECK_SERVICE_PROVIDER_ID": "sp-operator-tests",
        "QBO_SYNC_IMAGE": "registry.example/qbo-operator:test",
    }


@pytest.fixture
def secret_values() -> list[str]:
    """Values that must never appear in the operator's output; tests add the tokens they create."""
    return [QBO_CLIENT_SECRET, GREENCHECK_CLIENT_SECRET, SIGNING_KEY]


@pytest.fixture
def start_operator(
    cluster: ControlPlane,
    operator_account: Account,
    operator_env: dict[str, str],
    secret_values: list[str],
    tmp_path: Path,
    request: pytest.FixtureRequest,
) -> Iterator[StartOperator]:
    """Start operator processes for this test. Afterwards: the test's integrations are deleted while an
    operator still runs (so no finalizer outlives it), the operators stop, and their output is scanned."""
    started: list[Operator] = []
    base = re.sub(r"[^a-z0-9]+", "-", request.node.name.lower())[:60]

    def start(*args: str, env: dict[str, str] | None = None) -> Operator:
        op = Operator(
            operator_account.kubeconfig, {**operator_env, **(env or {})}, tmp_path / f"{base}-{len(started)}.log"
        )
        started.append(op)
        return op.start(*args)

    yield start
    running = [op for op in started if op.proc is not None]
    if running:
        cluster.kubectl(
            "delete", names.PLURAL, "--all", "--all-namespaces", "--wait=true", "--timeout=120s", check=False
        )
    for op in started:
        op.stop()
    leaked = {
        op.log.name: [f"{v[:4]}…({len(v)} chars)" for v in scan_for_secrets(op.output(), secret_values)]
        for op in started
    }
    leaked = {k: v for k, v in leaked.items() if v}
    assert not leaked, f"secret values in the operator's output (see {tmp_path}): {leaked}"


@pytest.fixture
def operator(start_operator: StartOperator) -> Operator:
    return start_operator("--all-namespaces")
