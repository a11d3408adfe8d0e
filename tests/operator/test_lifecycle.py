"""An integration's life as a platform engineer sees it: kubectl apply, the Connect link, the token Secret
arriving, going, breaking; suspension; specs CEL cannot judge; one realm, one integration."""

from __future__ import annotations

import json
import subprocess
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

from qbo_operator.core import names, signing
from qbo_operator.core.schedule import expand
from qbo_operator.harness.controlplane import ControlPlane
from qbo_operator.harness.sandbox.qbo import QboSandbox
from tests.support.kube import (
    HOME,
    apply,
    audit_writes,
    conditions,
    events,
    get,
    merge_patch,
    qbi,
    settled,
    sync_cronjob,
    sync_kubeconfig,
)
from tests.support.objects import b64, fake_tokens, integration, issued_tokens, token_secret
from tests.support.operator import GATEWAY_URL, SIGNING_KEY, Account, StartOperator
from tests.support.processes import Operator
from tests.support.wait import wait_for


def owned_by(obj: dict[str, object], uid: str) -> bool:
    refs = obj["metadata"].get("ownerReferences") or []  # type: ignore[union-attr]
    return any(r["uid"] == uid and r.get("controller") and r.get("blockOwnerDeletion") for r in refs)


def assert_owned_children(cluster: ControlPlane, namespace: str, uid: str) -> None:
    """acme's Role, RoleBinding and empty token Secret, owned by it, and nothing else in its namespace (no platform
    credential); its CronJob and ServiceAccount at home, labelled with it, the CronJob suspended (nothing to sync
    until someone connects), on its expanded schedule, running as that account."""
    account, workload = names.sync_access_name("acme"), names.sync_workload_name(namespace, "acme")
    for kind, name in [
        ("role", account),
        ("rolebinding", account),
        ("secret", names.token_secret_name("acme")),  # created by the operator, empty until a Connect
    ]:
        child = wait_for(f"{kind} {name}", lambda k=kind, n=name: get(cluster, k, namespace, n))
        assert owned_by(child, uid), f"{kind} {name} is not owned by the integration"
    assert not (get(cluster, "secret", namespace, names.token_secret_name("acme")) or {}).get("data")
    secrets = cluster.kubectl_json("get", "secrets", "-n", namespace)["items"]
    assert [s["metadata"]["name"] for s in secrets] == [names.token_secret_name("acme")]
    for kind in ("serviceaccount", "cronjob"):
        child = wait_for(f"{kind} {workload}", lambda k=kind: get(cluster, k, HOME, workload))
        assert child["metadata"]["labels"][names.INTEGRATION_UID_LABEL] == uid
    cron = sync_cronjob(cluster, namespace, "acme")
    assert cron is not None
    assert cron["spec"]["suspend"] is True  # nothing to sync until someone connects
    assert cron["spec"]["schedule"] == expand("H 3 * * *", f"{namespace}/acme")
    assert cron["spec"]["timeZone"] == "America/Los_Angeles"
    pod = cron["spec"]["jobTemplate"]["spec"]["template"]["spec"]
    assert pod["serviceAccountName"] == workload
    assert pod["containers"][0]["image"] == "registry.example/qbo-operator:test"


def test_a_new_integration_gets_a_link_its_objects_and_an_event(
    cluster: ControlPlane, namespace: str, operator: Operator, operator_account: Account
) -> None:
    since = datetime.now(UTC)
    apply(cluster, integration(namespace, "acme", schedule="H 3 * * *", timeZone="America/Los_Angeles"))
    # `kubectl wait` on the phase works, as the docs promise.
    cluster.kubectl(
        "wait", "--for=jsonpath={.status.phase}=Pending", f"{names.PLURAL}/acme", "-n", namespace, "--timeout=30s"
    )
    obj = wait_for("Pending", lambda: settled(cluster, namespace, "acme", "Pending", Connected="AwaitingAuthorization"))
    uid, status = obj["metadata"]["uid"], obj["status"]

    # The Connect link: signed for this object, valid for 7 days.
    url = status["authorizationURL"]
    assert url.startswith(f"{GATEWAY_URL}/connect/{namespace}/acme?")
    exp = url.split("exp=")[1].split("&")[0]
    sig = url.split("sig=")[1]
    now = datetime.now(UTC).timestamp()
    assert signing.verify_connect_link(SIGNING_KEY, namespace, "acme", uid, exp, sig, now) == int(exp)
    assert 7 * 86400 - 120 < int(exp) - now <= 7 * 86400
    assert status["authorizationURLExpiresAt"] == datetime.fromtimestamp(int(exp), UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
    assert (status["cronJobNamespace"], status["cronJobName"]) == (HOME, names.sync_workload_name(namespace, "acme"))
    assert set(conditions(obj)) == {"Ready", "Connected", "Synced", "Suspended", "Reconciling", "Stalled"}
    assert conditions(obj)["Ready"]["status"] == "False"
    assert conditions(obj)["Synced"]["reason"] == "NeverRun"
    assert obj["metadata"]["finalizers"] == [names.FINALIZER]
    assert not any(k.startswith(names.GROUP) for k in obj["metadata"].get("annotations") or {})  # no kopf state

    assert_owned_children(cluster, namespace, uid)

    # An Event says what happened and what to do.
    pending = [e for e in events(cluster, namespace, "acme") if e["reason"] == "Pending"]
    assert len(pending) == 1 and "Connect link" in pending[0]["message"]

    # `kubectl get qbi` shows the printer columns, the less important ones under -o wide.
    table = cluster.kubectl("get", "qbi", "-n", namespace).stdout
    header = table.splitlines()[0].split()
    assert header == ["NAME", "COMPANY", "PHASE", "READY", "LAST", "SYNC", "AGE"]
    assert "acme Co" in table and "Pending" in table
    wide = cluster.kubectl("get", "qbi", "-n", namespace, "-o", "wide").stdout.splitlines()[0]
    assert "REALM" in wide and "SUSPENDED" in wide

    # The metrics know it, and the first pass took exactly the writes it needed, without an error: the (empty)
    # token Secret, ServiceAccount, Role, RoleBinding, CronJob, status, Event (the platform credentials at home
    # are written once at start-up, when they differ).
    info = operator.samples("qbo_integration_info", namespace=namespace, name="acme")
    assert info == [1.0]
    assert operator.writes() - operator.writes(kind="Secret", verb="apply") == 7
    assert operator.samples("qbo_reconcile_total", result="error") == [0.0]

    # The API server agrees, and counts kopf's one write too (its finalizer): nothing failed, nothing retried.
    workload = names.sync_workload_name(namespace, "acme")

    def writes() -> list[str]:
        home = audit_writes(cluster, operator_account.username, since, HOME)
        return audit_writes(cluster, operator_account.username, since, namespace) + [w for w in home if workload in w]

    written = wait_for("8 writes", lambda: len(writes()) >= 8 and writes())
    time.sleep(2)
    assert writes() == written
    assert len(written) == 8 and all(w.endswith(("200", "201")) for w in written), written
    assert operator.samples("qbo_integration_connected", namespace=namespace, name="acme") == [0.0]


def broken_secrets_are_named(cluster: ControlPlane, namespace: str, realm: str, secret_values: list[str]) -> None:
    """A token Secret with a broken key → SecretInvalid, and the message names the key (never a value); then
    one without `scope`, named the same way."""
    broken = fake_tokens(realm)
    secret_values += [broken.access_token, broken.refresh_token]
    data = broken.to_secret_data()
    data["refresh_token_expires_at"] = b64("next tuesday")
    apply(cluster, token_secret(namespace, "acme", None, data=data))
    obj = wait_for(
        "SecretInvalid", lambda: settled(cluster, namespace, "acme", "Disconnected", Connected="SecretInvalid")
    )
    message = conditions(obj)["Connected"]["message"]
    assert "'refresh_token_expires_at'" in message and "acme-qbo-tokens" in message
    del data["scope"]
    data["refresh_token_expires_at"] = broken.to_secret_data()["refresh_token_expires_at"]
    apply(cluster, token_secret(namespace, "acme", None, data=data))
    wait_for(
        "the message naming scope",
        lambda: (
            (o := settled(cluster, namespace, "acme", "Disconnected"))
            and "'scope'" in conditions(o)["Connected"]["message"]
        ),
    )


def test_token_secret_arrives_goes_breaks_and_suspension_is_visible(
    cluster: ControlPlane, namespace: str, operator: Operator, qbo_sandbox: QboSandbox, secret_values: list[str]
) -> None:
    realm = qbo_sandbox.add_company("Lifecycle Dispensary", payments=0)
    apply(cluster, integration(namespace, "acme"))
    pending = wait_for("Pending", lambda: settled(cluster, namespace, "acme", "Pending"))
    uid = pending["metadata"]["uid"]

    tokens = issued_tokens(qbo_sandbox, realm)
    secret_values += [tokens.access_token, tokens.refresh_token]
    apply(cluster, token_secret(namespace, "acme", tokens))
    obj = wait_for("Connected", lambda: settled(cluster, namespace, "acme", "Connected", Ready="Connected"))
    status = obj["status"]
    assert status["realmId"] == realm
    assert status["connectedAt"] == tokens.connected_at.strftime("%Y-%m-%dT%H:%M:%SZ")
    assert status["refreshTokenExpiresAt"] == tokens.refresh_token_expires_at.strftime("%Y-%m-%dT%H:%M:%SZ")
    assert status["refreshTokenHardExpiresAt"]
    assert "authorizationURL" not in status  # a capability is not left lying around while connected
    assert conditions(obj)["Connected"]["reason"] == "Authorized"
    cluster.kubectl("wait", "--for=condition=Ready", f"{names.PLURAL}/acme", "-n", namespace, "--timeout=10s")
    cron = lambda: sync_cronjob(cluster, namespace, "acme")  # noqa: E731
    wait_for("the CronJob to run", lambda: cron()["spec"]["suspend"] is False)  # type: ignore[index]
    secret = wait_for(
        "the Secret owned",
        lambda: (
            (s := get(cluster, "secret", namespace, "acme-qbo-tokens")) and s["metadata"].get("ownerReferences") and s
        ),
    )
    assert owned_by(secret, uid)
    assert operator.samples("qbo_integration_connected", namespace=namespace, name="acme") == [1.0]

    # Deleted → Disconnected, SecretMissing, a fresh Connect link, the CronJob suspended.
    cluster.kubectl("delete", "secret", "acme-qbo-tokens", "-n", namespace)
    obj = wait_for(
        "Disconnected", lambda: settled(cluster, namespace, "acme", "Disconnected", Connected="SecretMissing")
    )
    assert obj["status"]["authorizationURL"].startswith(f"{GATEWAY_URL}/connect/{namespace}/acme?")
    assert obj["status"]["realmId"] == realm  # kept: the integration still belongs to that company
    wait_for("the CronJob suspended", lambda: cron()["spec"]["suspend"] is True)  # type: ignore[index]
    warnings = [e for e in events(cluster, namespace, "acme") if e["reason"] == "Disconnected"]
    assert warnings and warnings[0]["type"] == "Warning"

    broken_secrets_are_named(cluster, namespace, realm, secret_values)

    # Fixed → Connected again.
    apply(cluster, token_secret(namespace, "acme", tokens))
    connected = wait_for("Connected", lambda: settled(cluster, namespace, "acme", "Connected", Ready="Connected"))
    ready_before = conditions(connected)["Ready"]

    # Suspend: CronJob suspended, Suspended column true, Ready unchanged.
    merge_patch(cluster, names.PLURAL, namespace, "acme", {"spec": {"suspend": True}})
    obj = wait_for("Suspended", lambda: settled(cluster, namespace, "acme", "Connected", Suspended="Suspended"))
    assert conditions(obj)["Suspended"]["status"] == "True"
    assert conditions(obj)["Ready"]["status"] == ready_before["status"]
    assert conditions(obj)["Ready"]["lastTransitionTime"] == ready_before["lastTransitionTime"]
    wait_for("the CronJob suspended", lambda: cron()["spec"]["suspend"] is True)  # type: ignore[index]
    row = cluster.kubectl("get", "qbi", "acme", "-n", namespace, "-o", "wide").stdout.splitlines()
    suspended_col = row[0].split().index("SUSPENDED")
    assert row[1].split()[suspended_col + 1] == "true"  # COMPANY has two words
    assert operator.samples("qbo_integration_suspended", namespace=namespace, name="acme") == [1.0]


def test_specs_cel_cannot_judge_give_phase_error(cluster: ControlPlane, namespace: str, operator: Operator) -> None:
    apply(cluster, integration(namespace, "badcron", schedule="61 2 * * *"))
    apply(cluster, integration(namespace, "badzone", timeZone="Mars/Olympus"))
    obj = wait_for("Error", lambda: settled(cluster, namespace, "badcron", "Error", Ready="InvalidSchedule"))
    message = conditions(obj)["Ready"]["message"]
    assert "spec.schedule" in message and "61 2 * * *" in message and "H 2 * * *" in message
    obj = wait_for("Error", lambda: settled(cluster, namespace, "badzone", "Error", Ready="InvalidTimeZone"))
    message = conditions(obj)["Ready"]["message"]
    assert "spec.timeZone" in message and "Mars/Olympus" in message
    # The CronJob stays valid (the defaults) and suspended until the spec is fixed.
    cron = sync_cronjob(cluster, namespace, "badzone")
    assert cron is not None and cron["spec"]["suspend"] is True and cron["spec"]["timeZone"] == "UTC"
    warnings = [e for e in events(cluster, namespace, "badzone") if e["reason"] == "Error"]
    assert warnings and warnings[0]["type"] == "Warning" and "spec.timeZone" in warnings[0]["message"]

    merge_patch(cluster, names.PLURAL, namespace, "badzone", {"spec": {"timeZone": "Europe/Berlin"}})
    wait_for("Pending", lambda: settled(cluster, namespace, "badzone", "Pending"))
    wait_for(
        "the zone applied",
        lambda: (
            sync_cronjob(cluster, namespace, "badzone")["spec"]["timeZone"]  # type: ignore[index]
            == "Europe/Berlin"
        ),
    )

    # A schedule only the API server's cron parser refuses ("L" is croniter's, not Kubernetes'): the
    # operator reports the API server's own words and keeps the CronJob on the defaults, suspended.
    apply(cluster, integration(namespace, "lastday", schedule="0 2 L * *"))
    obj = wait_for("Error", lambda: settled(cluster, namespace, "lastday", "Error", Ready="InvalidSchedule"))
    assert "refused the sync CronJob" in conditions(obj)["Ready"]["message"]
    assert "spec.schedule" in conditions(obj)["Ready"]["message"]
    cron = sync_cronjob(cluster, namespace, "lastday")
    assert cron is not None and cron["spec"]["suspend"] is True
    assert cron["spec"]["schedule"] == expand("H 2 * * *", f"{namespace}/lastday")

    # What CEL can judge, the API server refuses with a message saying what to fix.
    bad = cluster.kubectl(
        "apply", "-f", "-", check=False, input=json.dumps(integration(namespace, "worse", schedule="H 2 * *"))
    )
    assert bad.returncode != 0 and "5-field cron expression" in bad.stderr


def test_environment_is_kept_once_connected(cluster: ControlPlane, namespace: str, operator: Operator) -> None:
    apply(cluster, integration(namespace, "envy"), token_secret(namespace, "envy", fake_tokens("4620816365211111")))
    wait_for("Connected", lambda: settled(cluster, namespace, "envy", "Connected"))
    wait_for(
        "the environment recorded",
        lambda: (
            (qbi(cluster, namespace, "envy")["metadata"].get("annotations") or {}).get(
                f"{names.GROUP}/connected-environment"
            )
            == "production"
        ),
    )

    # CEL refuses the change while status.realmId is set ...
    refused = merge_patch(cluster, names.PLURAL, namespace, "envy", {"spec": {"environment": "sandbox"}}, check=False)
    assert refused.returncode != 0 and "spec.environment cannot change" in refused.stderr
    # ... and the operator catches it when CEL cannot: here status.realmId was removed by hand while the
    # operator was down, so the API server let the environment change through.
    operator.stop()
    merge_patch(cluster, names.PLURAL, namespace, "envy", {"status": {"realmId": None}}, status=True)
    merge_patch(cluster, names.PLURAL, namespace, "envy", {"spec": {"environment": "sandbox"}})
    operator.start(*operator.args)
    obj = wait_for("Error", lambda: settled(cluster, namespace, "envy", "Error", Ready="EnvironmentChanged"))
    assert "back to production" in conditions(obj)["Ready"]["message"]
    assert "realmId" not in obj["status"]  # not restored, or CEL would lock the wrong environment in
    merge_patch(cluster, names.PLURAL, namespace, "envy", {"spec": {"environment": "production"}})
    obj = wait_for("Connected", lambda: settled(cluster, namespace, "envy", "Connected"))
    assert obj["status"]["realmId"] == "4620816365211111"


def test_one_realm_belongs_to_one_integration(cluster: ControlPlane, namespace: str, operator: Operator) -> None:
    realm = "9130355357481111"
    apply(cluster, integration(namespace, "first"), token_secret(namespace, "first", fake_tokens(realm)))
    wait_for("first Connected", lambda: settled(cluster, namespace, "first", "Connected"))
    apply(cluster, integration(namespace, "second"), token_secret(namespace, "second", fake_tokens(realm)))
    obj = wait_for("DuplicateRealm", lambda: settled(cluster, namespace, "second", "Error", Connected="DuplicateRealm"))
    assert f"{namespace}/first" in conditions(obj)["Connected"]["message"]
    assert "realmId" not in obj["status"]
    cron = sync_cronjob(cluster, namespace, "second")
    assert cron is not None and cron["spec"]["suspend"] is True

    # Reconnecting the first integration to another company is refused too.
    apply(cluster, token_secret(namespace, "first", fake_tokens("1111222233334444")))
    obj = wait_for(
        "RealmMismatch", lambda: settled(cluster, namespace, "first", "Disconnected", Connected="RealmMismatch")
    )
    assert realm in conditions(obj)["Connected"]["message"]

    # When the first integration goes, the realm is free for the second.
    cluster.kubectl("delete", names.PLURAL, "first", "-n", namespace, "--wait=true", "--timeout=60s")
    obj = wait_for("second Connected", lambda: settled(cluster, namespace, "second", "Connected"))
    assert obj["status"]["realmId"] == realm


def test_sync_account_reads_only_its_own_secret(cluster: ControlPlane, namespace: str, operator: Operator) -> None:
    apply(
        cluster,
        integration(namespace, "alpha"),
        integration(namespace, "beta"),
        token_secret(namespace, "alpha", fake_tokens("5550000000000001")),
        token_secret(namespace, "beta", fake_tokens("5550000000000002")),
    )
    for name in ("alpha", "beta"):
        wait_for(f"{name} Connected", lambda n=name: settled(cluster, namespace, n, "Connected"))
    kubeconfig = sync_kubeconfig(cluster, namespace, "alpha")

    def as_sync(*args: str) -> subprocess.CompletedProcess[str]:
        return cluster.kubectl(*args, "-n", namespace, check=False, kubeconfig=kubeconfig)

    own = as_sync("get", "secret", "alpha-qbo-tokens", "-o", "jsonpath={.data.realm_id}")
    assert own.returncode == 0 and own.stdout == b64("5550000000000001")
    for forbidden in (
        ("get", "secret", "beta-qbo-tokens"),  # another integration's tokens
        ("get", "secrets"),  # no listing
        ("get", names.PLURAL, "beta"),
        ("delete", "secret", "alpha-qbo-tokens"),
    ):
        result = as_sync(*forbidden)
        assert result.returncode != 0 and "forbidden" in result.stderr.lower(), forbidden
    assert as_sync("get", names.PLURAL, "alpha").returncode == 0
    patched = as_sync(
        "patch",
        names.PLURAL,
        "alpha",
        "--subresource=status",
        "--type=merge",
        "-p",
        '{"status":{"syncWatermark":"2026-11-25T00:00:00Z"}}',
    )
    assert patched.returncode == 0, patched.stderr
    refused = as_sync(
        "patch",
        names.PLURAL,
        "beta",
        "--subresource=status",
        "--type=merge",
        "-p",
        '{"status":{"syncWatermark":"2026-11-25T00:00:00Z"}}',
    )
    assert refused.returncode != 0


def sftp_secret(namespace: str, name: str) -> dict[str, object]:
    """An SFTP Secret of the documented shape, with placeholder values."""
    return {
        "apiVersion": "v1",
        "kind": "Secret",
        "metadata": {"name": name, "namespace": namespace},
        "type": "kubernetes.io/ssh-auth",
        "data": {names.SFTP_PRIVATE_KEY: b64("placeholder key"), names.SFTP_KNOWN_HOSTS: b64("placeholder hosts")},
    }


def test_an_sftp_sync_reads_its_sftp_secret_by_name_as_the_spec_says(
    cluster: ControlPlane, namespace: str, operator: Operator
) -> None:
    """The sync Role follows spec.delivery level by level: `get` on the named SFTP Secret only while the method is
    sftp, moved when secretName changes, withdrawn for the API, never the token Secret a second time."""
    sftp = {"host": "sftp.greencheck.example", "username": "gamma", "directory": "/upload", "locationId": "loc-1"}
    apply(
        cluster,
        sftp_secret(namespace, "gamma-sftp"),
        sftp_secret(namespace, "gamma-sftp-2"),
        integration(namespace, "gamma", delivery={"method": "sftp", "sftp": {**sftp, "secretName": "gamma-sftp"}}),
        integration(namespace, "delta"),
    )
    wait_for("gamma Pending", lambda: settled(cluster, namespace, "gamma", "Pending"))
    wait_for("delta Pending", lambda: settled(cluster, namespace, "delta", "Pending"))
    gamma, delta = sync_kubeconfig(cluster, namespace, "gamma"), sync_kubeconfig(cluster, namespace, "delta")

    def can(kubeconfig: Path, verb: str, secret: str) -> bool:
        args = ["auth", "can-i", verb, f"secrets/{secret}", "-n", namespace]
        return cluster.kubectl(*args, kubeconfig=kubeconfig, check=False).stdout.strip() == "yes"

    def grants(expected: dict[str, bool]) -> bool:
        return all(can(gamma, "get", secret) is allowed for secret, allowed in expected.items())

    wait_for("gamma-sftp granted", lambda: grants({"gamma-sftp": True, "gamma-sftp-2": False}))
    read = cluster.kubectl("get", "secret", "gamma-sftp", "-n", namespace, "-o", "name", kubeconfig=gamma, check=False)
    assert read.returncode == 0, read.stderr
    for verb in ("update", "patch", "delete", "list", "watch"):
        assert not can(gamma, verb, "gamma-sftp"), verb  # read only
    assert not can(delta, "get", "gamma-sftp")  # an API integration's sync: no SFTP Secret at all

    def delivery(value: dict[str, object]) -> None:
        merge_patch(cluster, names.PLURAL, namespace, "gamma", {"spec": {"delivery": value}})

    delivery({"sftp": {"secretName": "gamma-sftp-2"}})
    wait_for("the grant moved", lambda: grants({"gamma-sftp": False, "gamma-sftp-2": True}))

    # The token Secret as the SFTP Secret is refused (phase Error) and the SFTP grant withdrawn.
    delivery({"sftp": {"secretName": names.token_secret_name("gamma")}})
    obj = wait_for("Error", lambda: settled(cluster, namespace, "gamma", "Error", Ready="InvalidSpec"))
    assert "spec.delivery.sftp.secretName" in conditions(obj)["Ready"]["message"]
    wait_for("no SFTP grant", lambda: grants({"gamma-sftp-2": False}))

    delivery({"sftp": {"secretName": "gamma-sftp"}})
    wait_for("gamma Pending again", lambda: settled(cluster, namespace, "gamma", "Pending"))
    wait_for("gamma-sftp granted again", lambda: grants({"gamma-sftp": True}))

    delivery({"method": "api", "sftp": None})
    wait_for("the grant withdrawn", lambda: grants({"gamma-sftp": False, "gamma-sftp-2": False}))
    assert can(gamma, "get", names.token_secret_name("gamma"))  # its token Secret, as before


def test_the_connect_link_is_renewed_a_day_before_it_expires(
    cluster: ControlPlane, namespace: str, start_operator: StartOperator
) -> None:
    """A link good for a day and a few seconds is kept, then renewed by the housekeeping timer."""
    start_operator("--all-namespaces", "--housekeeping-interval=2")
    apply(cluster, integration(namespace, "linky"))
    obj = wait_for("Pending", lambda: settled(cluster, namespace, "linky", "Pending"))
    uid = obj["metadata"]["uid"]
    almost = int((datetime.now(UTC) + timedelta(days=1, seconds=6)).timestamp())
    link = signing.connect_link(GATEWAY_URL, SIGNING_KEY, namespace, "linky", uid, almost)
    cluster.kubectl(
        "patch",
        names.PLURAL,
        "linky",
        "-n",
        namespace,
        "--subresource=status",
        "--type=merge",
        "-p",
        json.dumps({"status": {"authorizationURL": link}}),
    )
    time.sleep(2)
    assert qbi(cluster, namespace, "linky")["status"]["authorizationURL"] == link  # still good for over a day
    renewed = wait_for(
        "a new link",
        lambda: (s := qbi(cluster, namespace, "linky")["status"])["authorizationURL"] != link and s,
        timeout=30,
    )
    exp = int(renewed["authorizationURL"].split("exp=")[1].split("&")[0])
    assert exp - datetime.now(UTC).timestamp() > 6 * 86400
    assert renewed["authorizationURLExpiresAt"] == datetime.fromtimestamp(exp, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
