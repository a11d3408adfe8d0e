"""The operator tests' settings and identity: the operator runs under the chart's ServiceAccount, with
these secrets (scanned for in its output afterwards)."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from tests.support.processes import Operator

QBO_CLIENT_ID = "ABoperator-test-client-0001"
QBO_CLIENT_SECRET = "qbo-client-secret-op-5e2b7c1d9a"
GREENCHECK_CLIENT_SECRET = "greencheck-client-secret-op-8d4f2a"
SIGNING_KEY = "signing-key-for-operator-tests-0123456789abcdef"
GATEWAY_URL = "https://qbo.example.test"
OPERATOR_NAMESPACE = "qbo-system"


@dataclass(frozen=True)
class Account:
    """A ServiceAccount's kubeconfig (its token) and its user name in the audit log."""

    kubeconfig: Path
    username: str


StartOperator = Callable[..., Operator]
