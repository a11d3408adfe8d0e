"""A wrong client secret is the operator's fault, never a company's (issue 15, part 6): Intuit's token endpoint
(here the QBO sandbox's) answers invalid_client, and no integration becomes Disconnected for it. The operator
says so on the integration (a Warning Event) and operator-wide (`qbo_app_credentials_rejected`), counting the
sync runs refused for the same reason, and the gauge falls back to 0 once a refresh with the right secret works."""

from __future__ import annotations

import time
from datetime import UTC, datetime, timedelta

from qbo_operator.core import names
from qbo_operator.core.models import Tokens, rfc3339
from qbo_operator.harness.controlplane import ControlPlane
from qbo_operator.harness.sandbox.qbo import QboSandbox
from tests.support.kube import apply, conditions, events, get, qbi, set_status, settled
from tests.support.objects import COMPANY_IDS, integration, issued_tokens, token_secret
from tests.support.operator import StartOperator
from tests.support.wait import wait_for

WRONG_SECRET = "wrong-client-secret-" + "x" * 20
GAUGE = "qbo_app_credentials_rejected"


def stored(cluster: ControlPlane, namespace: str, name: str) -> Tokens:
    secret = get(cluster, "secret", namespace, names.token_secret_name(name))
    assert secret is not None
    return Tokens.from_secret_data(secret["data"])


def refused_run(cluster: ControlPlane, namespace: str, name: str, finished: datetime) -> None:
    """What a sync Job writes when TokenManager raises AppCredentialsRejected: a failed run, Synced=False."""
    conds = [c for c in qbi(cluster, namespace, name)["status"]["conditions"] if c["type"] != "Synced"]
    synced = {
        "type": "Synced",
        "status": "False",
        "reason": "AppCredentialsInvalid",
        "message": "Intuit refused the operator's production app credentials (invalid_client): fix QBO_CLIENT_ID "
        "and QBO_CLIENT_SECRET in the operator's credentials Secret",
        "lastTransitionTime": rfc3339(finished),
    }
    last = {"jobName": f"{name}-1", "startedAt": rfc3339(finished - timedelta(seconds=5))}
    set_status(
        cluster,
        namespace,
        name,
        {"conditions": [*conds, synced], "lastSync": {**last, "finishedAt": rfc3339(finished), "result": "Failed"}},
    )


def test_a_wrong_client_secret_never_disconnects_an_integration(
    cluster: ControlPlane,
    namespace: str,
    start_operator: StartOperator,
    qbo_sandbox: QboSandbox,
    secret_values: list[str],
) -> None:
    secret_values.append(WRONG_SECRET)
    wrong = start_operator("--all-namespaces", "--housekeeping-interval=2", env={"QBO_CLIENT_SECRET": WRONG_SECRET})
    realm = qbo_sandbox.add_company("Wrong Keys Dispensary", payments=0)
    soon = datetime.now(UTC).replace(microsecond=0) + timedelta(days=10)
    sleepy = issued_tokens(qbo_sandbox, realm, refresh_token_expires_at=soon)  # due for a keep-alive refresh
    nightly = issued_tokens(qbo_sandbox, qbo_sandbox.add_company("Nightly Dispensary", payments=0))
    secret_values.extend([sleepy.access_token, sleepy.refresh_token, nightly.access_token, nightly.refresh_token])
    apply(
        cluster,
        integration(namespace, "sleepy", suspend=True),
        token_secret(namespace, "sleepy", sleepy),
        integration(namespace, "nightly", companyId=COMPANY_IDS[1]),
        token_secret(namespace, "nightly", nightly),
    )
    wait_for("Connected", lambda: settled(cluster, namespace, "nightly", "Connected", Connected="Authorized"))
    ran_at = datetime.now(UTC).replace(microsecond=0)
    refused_run(cluster, namespace, "nightly", ran_at)

    # The keep-alive refresh is refused for the app: a Warning on the integration and the gauge, nothing else.
    warning = wait_for(
        "the Warning",
        lambda: [e for e in events(cluster, namespace, "sleepy") if e["reason"] == "AppCredentialsInvalid"],
    )
    assert "QBO_CLIENT_ID and QBO_CLIENT_SECRET" in warning[0]["message"] and warning[0]["type"] == "Warning"
    wait_for("the gauge", lambda: wrong.samples(GAUGE, environment="production") == [1.0])
    assert wrong.samples(GAUGE, environment="sandbox") == [0.0]
    time.sleep(5)  # more ticks, more refused refreshes
    for name in ("sleepy", "nightly"):
        obj = settled(cluster, namespace, name, "Connected", Connected="Authorized")
        assert obj is not None, f"{name} left Connected: {qbi(cluster, namespace, name).get('status')}"
    assert conditions(qbi(cluster, namespace, "nightly"))["Synced"]["reason"] == "AppCredentialsInvalid"
    assert stored(cluster, namespace, "sleepy").refresh_token == sleepy.refresh_token  # the grant untouched
    assert len([e for e in events(cluster, namespace, "sleepy") if e["reason"] == "AppCredentialsInvalid"]) == 1
    wrong.stop()

    # The credentials are fixed (a new operator pod): its refresh works, newer than the refused run, so 0.
    qbo_sandbox.force_rotation(realm)
    right = start_operator("--all-namespaces", "--housekeeping-interval=2")
    wait_for(
        "the keep-alive refresh", lambda: stored(cluster, namespace, "sleepy").refresh_token != sleepy.refresh_token
    )
    kept = stored(cluster, namespace, "sleepy")
    secret_values.extend([kept.access_token, kept.refresh_token])
    wait_for("the gauge back to 0", lambda: right.samples(GAUGE, environment="production") == [0.0])
