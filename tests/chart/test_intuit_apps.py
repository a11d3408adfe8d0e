"""The chart's two Intuit apps (issue 18): production keys in credentials.*, development keys in
credentials.sandbox.*, either left out; each pod gets the keys it uses, an existing Secret may hold either app."""

from __future__ import annotations

import base64
from typing import Any

import pytest

from qbo_operator.harness.controlplane import ControlPlane
from tests.support.chart import CHART, VALUES, Helm, container, env_of, find, one

SANDBOX = {
    "credentials.sandbox.clientId": "dev-client-id",
    "credentials.sandbox.clientSecret": "dev-client-secret",
    "credentials.sandbox.webhookVerifierToken": "dev-verifier",
}
APP_KEYS = {
    "operator": ("QBO_CLIENT_ID", "QBO_CLIENT_SECRET"),
    "gateway": ("QBO_CLIENT_ID", "QBO_CLIENT_SECRET", "QBO_WEBHOOK_VERIFIER_TOKEN"),
}


def refs(objs: list[dict[str, Any]], deployment: str) -> dict[str, dict[str, Any]]:
    """The Deployment's environment variables that come from a Secret: name → secretKeyRef."""
    env = env_of(container(one(objs, "Deployment", f"-{deployment}")))
    return {k: v["secretKeyRef"] for k, v in env.items() if isinstance(v, dict) and "secretKeyRef" in v}


def sandbox_keys(deployment: str) -> set[str]:
    return {k.replace("QBO_", "QBO_SANDBOX_", 1) for k in APP_KEYS[deployment]}


def test_both_apps_inline(helm: Helm) -> None:
    objs = helm.template("-f", str(VALUES / "full.yaml"), sets=SANDBOX)
    secret = one(objs, "Secret", "-credentials")
    data = {k: base64.b64decode(v).decode() for k, v in secret["data"].items()}
    assert data["QBO_SANDBOX_CLIENT_ID"] == "dev-client-id"
    assert data["QBO_SANDBOX_CLIENT_SECRET"] == "dev-client-secret"
    assert data["QBO_SANDBOX_WEBHOOK_VERIFIER_TOKEN"] == "dev-verifier"
    assert data["QBO_CLIENT_ID"] == "test-client-id"
    for deployment in ("operator", "gateway"):
        got = refs(objs, deployment)
        assert {k for k in got if "SANDBOX" in k} == sandbox_keys(deployment)
        assert all(got[k]["key"] == k and got[k].get("optional") is True for k in sandbox_keys(deployment))
        assert all("optional" not in got[k] for k in APP_KEYS[deployment])  # the chart's Secret has them


@pytest.mark.parametrize("mode", [(), ("-f", str(VALUES / "full.yaml"))])
def test_no_sandbox_app_no_sandbox_keys(helm: Helm, mode: tuple[str, ...]) -> None:
    objs = helm.template(*mode)
    assert not [k for k in one(objs, "Secret", "-credentials")["data"] if "SANDBOX" in k]
    for deployment in ("operator", "gateway"):
        assert not [k for k in refs(objs, deployment) if "SANDBOX" in k]


def test_an_existing_secret_may_hold_either_app(helm: Helm) -> None:
    objs = helm.template(sets={"credentials.existingSecret": "qbo-creds"})
    assert find(objs, "Secret") == []
    for deployment in ("operator", "gateway"):
        got = refs(objs, deployment)
        for key in (*APP_KEYS[deployment], *sandbox_keys(deployment)):
            assert got[key] == {"name": "qbo-creds", "key": key, "optional": True}
        assert got["QBO_STATE_SIGNING_KEY"] == {"name": "qbo-creds", "key": "QBO_STATE_SIGNING_KEY"}


def test_a_sandbox_only_release_renders_and_lints(helm: Helm) -> None:
    sets = {**SANDBOX, "credentials.greencheck.clientId": "gc", "credentials.greencheck.clientSecret": "gcs"}
    objs = helm.template(sets=sets)
    data = one(objs, "Secret", "-credentials")["data"]
    assert data["QBO_CLIENT_ID"] == "" and data["QBO_SANDBOX_CLIENT_ID"]  # empty production keys = no production app
    args = [f"{k}={v}" for k, v in sets.items()]
    result = helm.run("lint", "--strict", str(CHART), "--set", ",".join(args))
    assert result.returncode == 0, result.stdout + result.stderr


def test_inline_sandbox_keys_beside_an_existing_secret_are_refused(helm: Helm) -> None:
    error = helm.template_error(sets={"credentials.existingSecret": "mine", "credentials.sandbox.clientId": "x"})
    assert (
        "credentials.existingSecret is set, so credentials.sandbox.* must be empty: put QBO_SANDBOX_CLIENT_ID, "
        'QBO_SANDBOX_CLIENT_SECRET and QBO_SANDBOX_WEBHOOK_VERIFIER_TOKEN in the Secret "mine" instead'
    ) in error


@pytest.mark.parametrize(
    ("sets", "missing", "not_missing"),
    [
        ({}, ["credentials.clientId (QBO_CLIENT_ID)"], ["credentials.sandbox"]),
        (SANDBOX, [], ["credentials.clientId", "credentials.sandbox"]),
        (
            {"credentials.sandbox.clientId": "x"},
            ["credentials.sandbox.clientSecret (QBO_SANDBOX_CLIENT_SECRET)"],
            ["credentials.clientId"],
        ),
    ],
)
def test_notes_name_what_is_missing_of_the_apps(
    helm: Helm, cluster: ControlPlane, sets: dict[str, str], missing: list[str], not_missing: list[str]
) -> None:
    args = [a for k, v in sets.items() for a in ("--set", f"{k}={v}")]
    result = helm.run(
        "install", "qbo", str(CHART), "--dry-run=client", "--namespace", "qbo-system",
        "--kubeconfig", str(cluster.kubeconfig), *args,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    notes = result.stdout.split("NOTES:", 1)[1]
    for text in missing:
        assert text in notes
    for text in not_missing:
        assert text not in notes
