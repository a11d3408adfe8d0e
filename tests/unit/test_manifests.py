"""The per-integration objects (manifests.py): names, least-privilege RBAC, the hardened sync pod, the
suspend logic, Jobs made from the CronJob, and the desired-vs-observed comparison."""

from __future__ import annotations

import base64
import copy
import json
from typing import Any

import pytest
from pydantic import SecretStr

from qbo_operator.core import names
from qbo_operator.core.config import Settings
from qbo_operator.core.models import IntegrationSpec
from qbo_operator.core.schedule import expand
from qbo_operator.reconciler.manifests import (
    Owner,
    comparable,
    credentials_secret,
    cronjob,
    effective_schedule,
    job_from_cronjob,
    manual_job_name,
    needs_apply,
    role,
    role_binding,
    service_account,
    sftp_secret_name,
)

SETTINGS = Settings(
    qbo_client_id="client-id",
    qbo_client_secret=SecretStr("client-secret-value"),
    qbo_state_signing_key=SecretStr("k" * 40),
    qbo_gateway_url="https://qbo.example.com",
    greencheck_api_url="https://api.greencheck.example",
    greencheck_client_id="gc-id",
    greencheck_client_secret=SecretStr("gc-secret-value"),
    greencheck_service_provider_id="sp-1",
    qbo_sync_image="registry.example/qbo-operator:1.2.3",
    qbo_token_url="https://oauth.example/token",
)
OWNER = Owner("tenants", "acme-dispensary", "0b7d6f0e-uid", "qbo-system")
SPEC = IntegrationSpec.model_validate({"companyId": "5f0c3a2e-8d1b-4c7e-9a61-2b7f3c9d4e10"})


def the_cronjob(suspend: bool = False, settings: Settings = SETTINGS) -> dict[str, Any]:
    schedule, zone = effective_schedule(SPEC, settings, OWNER.namespace, OWNER.name, True)
    return cronjob(OWNER, settings, schedule, zone, suspend)


def pod_spec(obj: dict[str, Any]) -> dict[str, Any]:
    spec: dict[str, Any] = (
        obj["spec"]["jobTemplate"]["spec"]["template"]["spec"]
        if obj["kind"] == "CronJob"
        else obj["spec"]["template"]["spec"]
    )
    return spec


# --- names -------------------------------------------------------------------------------------


@pytest.mark.parametrize("length", [1, 20, 43, 44, 52, 53, 63])
def test_names_fit_their_limits_and_stay_stable(length: int) -> None:
    name = ("a" * length)[:length]
    cron = names.sync_workload_name("tenants", name)
    account, tokens = names.sync_access_name(name), names.token_secret_name(name)
    assert len(cron) <= 52 and cron.endswith("-qbo-sync") and cron.startswith("tenants-a")
    assert len(account) <= 63 and len(tokens) <= 63
    assert cron == names.sync_workload_name("tenants", name)  # stable across calls (and restarts: no randomness)


@pytest.mark.parametrize(
    ("a", "b"),
    [
        (("tenants", "x" * 60 + "-one"), ("tenants", "x" * 60 + "-two")),  # long names sharing a prefix
        (("a-b", "c"), ("a", "b-c")),  # the same words joined differently
        (("team-1", "acme"), ("team-2", "acme")),  # one name in two namespaces
    ],
)
def test_sync_workload_names_of_different_integrations_differ(a: tuple[str, str], b: tuple[str, str]) -> None:
    assert names.sync_workload_name(*a) != names.sync_workload_name(*b)
    assert len(manual_job_name(names.sync_workload_name(*a), "token")) <= 63  # a Job name is the pods' label


def test_long_names_that_share_a_prefix_do_not_collide() -> None:
    a, b = "x" * 60 + "-one", "x" * 60 + "-two"
    assert names.sync_access_name(a) != names.sync_access_name(b)


def test_manual_job_names_follow_the_token() -> None:
    base = OWNER.workload
    assert manual_job_name(base, "2026-11-25T10:00:00Z") == manual_job_name(base, "2026-11-25T10:00:00Z")
    assert manual_job_name(base, "one") != manual_job_name(base, "two")
    assert manual_job_name(base, "one").startswith(f"{base}-m-")


# --- ownership and RBAC ------------------------------------------------------------------------


def test_every_object_in_the_tenant_namespace_is_owned_by_the_integration() -> None:
    for obj in (role(OWNER, "acme-dispensary-qbo-tokens"), role_binding(OWNER)):
        (ref,) = obj["metadata"]["ownerReferences"]
        assert ref == {
            "apiVersion": names.API_VERSION,
            "kind": names.KIND,
            "name": OWNER.name,
            "uid": OWNER.uid,
            "controller": True,
            "blockOwnerDeletion": True,
        }
        assert obj["metadata"]["namespace"] == OWNER.namespace
        assert obj["metadata"]["labels"][names.INTEGRATION_LABEL] == OWNER.name
        assert obj["metadata"]["labels"][names.MANAGED_BY_LABEL] == names.MANAGED_BY


def test_the_sync_workload_is_at_home_labelled_with_its_integration() -> None:
    """No ownerReference can cross namespaces: the labels say whose the CronJob and its account are."""
    for obj in (service_account(OWNER), the_cronjob()):
        meta = obj["metadata"]
        assert (meta["namespace"], meta["name"]) == (OWNER.home, OWNER.workload)
        assert "ownerReferences" not in meta
        assert meta["labels"][names.INTEGRATION_LABEL] == OWNER.name
        assert meta["labels"][names.INTEGRATION_NAMESPACE_LABEL] == OWNER.namespace
        assert meta["labels"][names.INTEGRATION_UID_LABEL] == OWNER.uid


def test_role_names_exactly_its_own_secret_and_cr() -> None:
    rules = role(OWNER, "custom-tokens")["rules"]
    by_resource = {tuple(r["resources"]): r for r in rules}
    assert by_resource[("secrets",)] == {
        "apiGroups": [""],
        "resources": ["secrets"],
        "resourceNames": ["custom-tokens"],
        "verbs": ["get", "update", "patch"],
    }
    assert by_resource[(names.PLURAL,)]["resourceNames"] == [OWNER.name]
    assert by_resource[(names.PLURAL,)]["verbs"] == ["get"]
    assert by_resource[(f"{names.PLURAL}/status",)]["resourceNames"] == [OWNER.name]
    assert by_resource[(f"{names.PLURAL}/status",)]["verbs"] == ["get", "patch"]
    assert by_resource[("events",)]["verbs"] == ["create"]  # Events cannot be restricted by name
    for rule in rules:
        assert "*" not in rule["verbs"] and "*" not in rule["resources"]
        assert "list" not in rule["verbs"] and "watch" not in rule["verbs"]  # no enumeration of other objects
        if rule["resources"] != ["events"]:
            assert rule["resourceNames"]


SFTP = {"host": "sftp.example", "username": "acme", "directory": "/upload", "locationId": "loc-1"}


@pytest.mark.parametrize(
    ("delivery", "granted"),
    [
        (None, None),
        ({"method": "api"}, None),
        ({"method": "sftp", "sftp": {**SFTP, "secretName": "acme-sftp"}}, "acme-sftp"),
        # The sync never reads the SFTP Secret of an integration that delivers over the API.
        ({"method": "api", "sftp": {**SFTP, "secretName": "acme-sftp"}}, None),
    ],
)
def test_sftp_secret_name_follows_the_method(delivery: dict[str, Any] | None, granted: str | None) -> None:
    given = {} if delivery is None else {"delivery": delivery}
    spec = IntegrationSpec.model_validate({"companyId": "5f0c3a2e-8d1b-4c7e-9a61-2b7f3c9d4e10", **given})
    assert sftp_secret_name(spec) == granted


@pytest.mark.parametrize(
    ("sftp_secret", "secret_rules"),
    [
        (None, [("custom-tokens", ["get", "update", "patch"])]),
        ("acme-sftp", [("custom-tokens", ["get", "update", "patch"]), ("acme-sftp", ["get"])]),
        # A name already granted: the token Secret keeps its rule (check_spec gives such a spec phase Error).
        ("custom-tokens", [("custom-tokens", ["get", "update", "patch"])]),
    ],
    ids=["api", "sftp", "sftp-is-token-secret"],
)
def test_role_grants_the_sftp_secret_by_name_and_get_only(
    sftp_secret: str | None, secret_rules: list[tuple[str, list[str]]]
) -> None:
    rules = role(OWNER, "custom-tokens", sftp_secret)["rules"]
    secrets = [r for r in rules if r["resources"] == ["secrets"]]
    assert [(name, r["verbs"]) for r in secrets for name in r["resourceNames"]] == secret_rules
    assert all(r["apiGroups"] == [""] and len(r["resourceNames"]) == 1 for r in secrets)
    others = [r for r in rules if r["resources"] != ["secrets"]]
    assert others == [r for r in role(OWNER, "custom-tokens")["rules"] if r["resources"] != ["secrets"]]


@pytest.mark.parametrize(
    ("before", "after", "apply"),
    [
        (None, None, False),
        ("acme-sftp", "acme-sftp", False),
        (None, "acme-sftp", True),  # method api → sftp
        ("acme-sftp", None, True),  # sftp → api: the grant is withdrawn
        ("acme-sftp", "acme-sftp-2", True),  # the secretName changed
    ],
)
def test_a_changed_sftp_secret_re_applies_the_role(before: str | None, after: str | None, apply: bool) -> None:
    observed = comparable(server_copy(role(OWNER, "t", before)))
    assert needs_apply(role(OWNER, "t", after), observed) is apply


def test_role_binding_binds_the_account_to_the_role() -> None:
    binding = role_binding(OWNER)
    assert binding["roleRef"] == {"apiGroup": "rbac.authorization.k8s.io", "kind": "Role", "name": OWNER.account}
    # the sync's ServiceAccount lives at home, beside the platform credentials
    assert binding["subjects"] == [{"kind": "ServiceAccount", "name": OWNER.workload, "namespace": OWNER.home}]


def test_credentials_secret_mirrors_the_operator_env_once_at_home() -> None:
    secret = credentials_secret(OWNER.home, SETTINGS)
    assert (secret["metadata"]["namespace"], secret["metadata"]["name"]) == (
        OWNER.home,
        "qbo-sync-credentials-production",
    )
    assert names.INTEGRATION_LABEL not in secret["metadata"]["labels"]  # one for every integration
    decoded = {k: base64.b64decode(v).decode() for k, v in secret["data"].items()}
    assert decoded == {
        "QBO_CLIENT_ID": "client-id",
        "QBO_CLIENT_SECRET": "client-secret-value",
        "GREENCHECK_CLIENT_ID": "gc-id",
        "GREENCHECK_CLIENT_SECRET": "gc-secret-value",
    }


# --- the CronJob and its pod -------------------------------------------------------------------


def test_cronjob_runs_the_sync_under_its_own_account() -> None:
    obj = the_cronjob()
    spec = obj["spec"]
    assert obj["metadata"]["name"] == OWNER.workload
    assert spec["concurrencyPolicy"] == "Forbid"
    assert spec["startingDeadlineSeconds"] > 0
    assert spec["successfulJobsHistoryLimit"] >= 1 and spec["failedJobsHistoryLimit"] >= 1
    job = spec["jobTemplate"]["spec"]
    assert job["backoffLimit"] >= 0 and job["activeDeadlineSeconds"] > 0 and job["ttlSecondsAfterFinished"] > 0
    pod = pod_spec(obj)
    assert pod["serviceAccountName"] == OWNER.workload
    assert pod["automountServiceAccountToken"] is True  # the sync reads its CR and Secret from the API
    assert pod["restartPolicy"] == "Never"
    (container,) = pod["containers"]
    assert container["image"] == "registry.example/qbo-operator:1.2.3"
    assert container["command"] == ["qbo-operator", "sync", "--namespace", "tenants", "--name", OWNER.name]
    assert container["envFrom"] == [{"secretRef": {"name": "qbo-sync-credentials-production"}}]


def test_pod_is_hardened() -> None:
    pod = pod_spec(the_cronjob())
    assert pod["securityContext"]["runAsNonRoot"] is True
    assert pod["securityContext"]["runAsUser"] == 65532
    assert pod["securityContext"]["seccompProfile"] == {"type": "RuntimeDefault"}
    (container,) = pod["containers"]
    sc = container["securityContext"]
    assert sc["runAsNonRoot"] is True and sc["runAsUser"] == 65532
    assert sc["readOnlyRootFilesystem"] is True
    assert sc["allowPrivilegeEscalation"] is False
    assert sc["privileged"] is False
    assert sc["capabilities"] == {"drop": ["ALL"]}
    assert sc["seccompProfile"] == {"type": "RuntimeDefault"}
    (mount,) = container["volumeMounts"]
    volume = next(v for v in pod["volumes"] if v["name"] == mount["name"])
    assert mount["mountPath"] == "/tmp" and "emptyDir" in volume


def test_env_holds_settings_but_no_secret() -> None:
    obj = the_cronjob()
    env = {e["name"]: e for e in pod_spec(obj)["containers"][0]["env"]}
    assert env["GREENCHECK_API_URL"]["value"] == "https://api.greencheck.example"
    assert env["GREENCHECK_SERVICE_PROVIDER_ID"]["value"] == "sp-1"
    assert env["QBO_TOKEN_URL"]["value"] == "https://oauth.example/token"
    assert env["QBO_REVOKE_URL"]["value"] == SETTINGS.qbo_revoke_url  # the sync revokes fenced-out refreshes
    assert env["QBO_SYNC_TRIGGER"]["value"] == "Schedule"
    assert env["JOB_NAME"]["valueFrom"]["fieldRef"]["fieldPath"] == "metadata.labels['job-name']"
    assert "QBO_API_URL" not in env  # unset: the sync picks Intuit's host for the environment
    text = json.dumps(obj)
    assert "client-secret-value" not in text and "gc-secret-value" not in text
    with_api = Settings(**{**SETTINGS.model_dump(), "qbo_api_url": "http://127.0.0.1:9000"})
    env = {e["name"]: e for e in pod_spec(the_cronjob(settings=with_api))["containers"][0]["env"]}
    assert env["QBO_API_URL"]["value"] == "http://127.0.0.1:9000"


@pytest.mark.parametrize(("given", "passed"), [("", None), ("json", "json"), ("text", "text")])
def test_the_sync_jobs_log_in_the_operators_format(given: str, passed: str | None) -> None:
    """The chart's logFormat reaches the operator as QBO_LOG_FORMAT; the sync Jobs get the same (unset: unset)."""
    settings = Settings(**{**SETTINGS.model_dump(), "qbo_log_format": given})
    env = {e["name"]: e for e in pod_spec(the_cronjob(settings=settings))["containers"][0]["env"]}
    assert (env["QBO_LOG_FORMAT"]["value"] if "QBO_LOG_FORMAT" in env else None) == passed


@pytest.mark.parametrize("suspend", [True, False])
def test_suspend_is_passed_through(suspend: bool) -> None:
    assert the_cronjob(suspend=suspend)["spec"]["suspend"] is suspend


@pytest.mark.parametrize(
    ("spec", "spec_ok", "schedule", "zone"),
    [
        ({}, True, "H 2 * * *", "UTC"),
        ({"schedule": "H 4 * * 1-5", "timeZone": "America/Los_Angeles"}, True, "H 4 * * 1-5", "America/Los_Angeles"),
        ({"schedule": "30 1 * * *"}, True, "30 1 * * *", "UTC"),
        # A spec the operator refused falls back to the defaults so the CronJob stays valid.
        ({"schedule": "61 2 * * *", "timeZone": "Mars/Olympus"}, False, "H 2 * * *", "UTC"),
    ],
)
def test_effective_schedule(spec: dict[str, Any], spec_ok: bool, schedule: str, zone: str) -> None:
    parsed = IntegrationSpec.model_validate({"companyId": "5f0c3a2e-8d1b-4c7e-9a61-2b7f3c9d4e10", **spec})
    got = effective_schedule(parsed, SETTINGS, "tenants", "acme", spec_ok)
    assert got == (expand(schedule, "tenants/acme"), zone)
    assert "H" not in got[0]


# --- sync now ----------------------------------------------------------------------------------


def test_job_from_cronjob_is_a_manual_copy() -> None:
    cron = the_cronjob()
    cron["metadata"]["uid"] = "cron-uid"
    before = copy.deepcopy(cron)
    job = job_from_cronjob(cron, "cron-uid", "2026-11-25T10:00:00Z")
    assert cron == before  # the CronJob is not changed
    meta = job["metadata"]
    assert meta["name"] == manual_job_name(cron["metadata"]["name"], "2026-11-25T10:00:00Z")
    assert meta["annotations"]["cronjob.kubernetes.io/instantiate"] == "manual"
    assert meta["annotations"][names.TRIGGER_ANNOTATION] == "Manual"
    assert meta["annotations"][names.SYNC_REQUESTED_ANNOTATION] == "2026-11-25T10:00:00Z"
    assert meta["labels"][names.INTEGRATION_LABEL] == OWNER.name
    (owner,) = meta["ownerReferences"]
    assert (owner["kind"], owner["uid"], owner["controller"]) == ("CronJob", "cron-uid", True)
    env = {e["name"]: e.get("value") for e in pod_spec(job)["containers"][0]["env"]}
    assert env["QBO_SYNC_TRIGGER"] == "Manual"
    # Everything else is the CronJob's Job template.
    expected = copy.deepcopy(cron["spec"]["jobTemplate"]["spec"])
    expected["template"]["spec"]["containers"][0]["env"] = pod_spec(job)["containers"][0]["env"]
    assert job["spec"] == expected


# --- desired vs observed -----------------------------------------------------------------------


def server_copy(obj: dict[str, Any]) -> dict[str, Any]:
    """What the API server returns: our fields plus its defaults and bookkeeping."""
    out = copy.deepcopy(obj)
    out["metadata"].update({"uid": "u-1", "resourceVersion": "42", "creationTimestamp": "2026-11-25T00:00:00Z"})
    out["metadata"]["managedFields"] = [{"manager": "qbo-operator"}]
    if obj["kind"] == "CronJob":
        pod = out["spec"]["jobTemplate"]["spec"]["template"]["spec"]
        pod.update(
            {"dnsPolicy": "ClusterFirst", "schedulerName": "default-scheduler", "terminationGracePeriodSeconds": 30}
        )
        pod["containers"][0]["terminationMessagePath"] = "/dev/termination-log"
        out["spec"]["jobTemplate"]["spec"]["completionMode"] = "NonIndexed"
        out["status"] = {"lastScheduleTime": "2026-11-25T02:00:00Z"}
    return out


@pytest.mark.parametrize(
    "build",
    [
        lambda: service_account(OWNER),
        lambda: role(OWNER, "t"),
        lambda: role(OWNER, "t", "acme-sftp"),
        lambda: role_binding(OWNER),
        lambda: credentials_secret(OWNER, SETTINGS),
        lambda: the_cronjob(),
    ],
)
def test_no_apply_when_the_server_only_added_defaults(build: Any) -> None:
    desired = build()
    observed = comparable(server_copy(desired))
    assert not needs_apply(desired, observed)
    assert needs_apply(desired, None)


def test_apply_when_a_field_we_own_differs() -> None:
    desired = the_cronjob(suspend=False)
    observed = comparable(server_copy(the_cronjob(suspend=True)))
    assert needs_apply(desired, observed)
    drifted = server_copy(desired)
    drifted["spec"]["jobTemplate"]["spec"]["template"]["spec"]["containers"][0]["env"].append(
        {"name": "X", "value": "1"}
    )
    assert needs_apply(desired, comparable(drifted))  # an env var someone added: we own the list


def test_secret_values_are_compared_by_digest_only() -> None:
    desired = credentials_secret(OWNER.home, SETTINGS)
    observed = comparable(server_copy(desired))
    assert "data" not in observed and "client-secret-value" not in json.dumps(observed)
    rotated = Settings(**{**SETTINGS.model_dump(), "qbo_client_secret": SecretStr("rotated")})
    assert needs_apply(credentials_secret(OWNER.home, rotated), observed)


def test_other_owners_may_be_added_to_our_objects() -> None:
    desired = role(OWNER, "acme-dispensary-qbo-tokens")
    observed = server_copy(desired)
    observed["metadata"]["ownerReferences"].append({"apiVersion": "v1", "kind": "Other", "name": "x", "uid": "o"})
    assert not needs_apply(desired, comparable(observed))
    observed["metadata"]["ownerReferences"] = observed["metadata"]["ownerReferences"][1:]
    assert needs_apply(desired, comparable(observed))


def test_the_gateway_is_granted_exactly_the_token_secret_by_name() -> None:
    from qbo_operator.core import names as _names
    from qbo_operator.reconciler.manifests import Owner, gateway_role, gateway_role_binding

    owner = Owner("tenants", "acme", "uid-1", "qbo-system")
    role = gateway_role(owner, "acme-qbo-tokens")
    assert role["metadata"]["name"] == _names.gateway_access_name("acme") == "acme-qbo-gateway"
    assert role["rules"] == [
        {"apiGroups": [""], "resources": ["secrets"], "resourceNames": ["acme-qbo-tokens"], "verbs": ["get", "update"]}
    ]
    binding = gateway_role_binding(owner, "qbo-system/qbo-operator-gateway")
    assert binding["roleRef"]["name"] == "acme-qbo-gateway"
    assert binding["subjects"] == [
        {"kind": "ServiceAccount", "name": "qbo-operator-gateway", "namespace": "qbo-system"}
    ]
    assert role["metadata"]["ownerReferences"] == binding["metadata"]["ownerReferences"] == [owner.reference()]
