"""Sync Jobs: "sync now" makes exactly one Job per request token; a Job that dies before it reports sets
Synced=False with reason JobFailed."""

from __future__ import annotations

import json
from typing import Any

from qbo_operator.core import names
from qbo_operator.harness.controlplane import ControlPlane
from qbo_operator.reconciler import manifests
from tests.support.kube import HOME, apply, conditions, events, manual_jobs, merge_patch, qbi, settled
from tests.support.kubelet import Kubelet
from tests.support.objects import fake_tokens, integration, token_secret
from tests.support.processes import Operator
from tests.support.wait import wait_for

REQUEST = names.SYNC_REQUESTED_ANNOTATION


def request_sync(cluster: ControlPlane, namespace: str, name: str, token: str) -> None:
    cluster.kubectl("annotate", "--overwrite", names.PLURAL, name, "-n", namespace, f"{REQUEST}={token}")


def handled(cluster: ControlPlane, namespace: str, name: str, token: str) -> dict[str, Any] | None:
    obj = qbi(cluster, namespace, name)
    return obj if (obj.get("status") or {}).get("lastHandledSyncRequest") == token else None


def test_sync_now_makes_exactly_one_job_per_request(cluster: ControlPlane, namespace: str, operator: Operator) -> None:
    apply(cluster, integration(namespace, "acme"), token_secret(namespace, "acme", fake_tokens("7000000000000001")))
    wait_for("Connected", lambda: settled(cluster, namespace, "acme", "Connected"))
    cron_name = names.sync_workload_name(namespace, "acme")
    cron_uid = cluster.kubectl_json("get", "cronjob", cron_name, "-n", HOME)["metadata"]["uid"]

    request_sync(cluster, namespace, "acme", "2026-11-25T10:00:00Z")
    wait_for("the request handled", lambda: handled(cluster, namespace, "acme", "2026-11-25T10:00:00Z"))
    (job,) = wait_for("one Job", lambda: manual_jobs(cluster, namespace))
    assert job["metadata"]["name"] == manifests.manual_job_name(cron_name, "2026-11-25T10:00:00Z")
    assert job["metadata"]["ownerReferences"][0]["uid"] == cron_uid  # like `kubectl create job --from=cronjob`
    assert job["metadata"]["annotations"][names.TRIGGER_ANNOTATION] == "Manual"
    container = job["spec"]["template"]["spec"]["containers"][0]
    env = {e["name"]: e.get("value") for e in container["env"]}
    assert env["QBO_SYNC_TRIGGER"] == "Manual"
    assert container["command"] == ["qbo-operator", "sync", "--namespace", namespace, "--name", "acme"]
    started = [e for e in events(cluster, namespace, "acme") if e["reason"] == "SyncRequested"]
    assert len(started) == 1 and job["metadata"]["name"] in started[0]["message"]

    # The same token again: nothing new.
    request_sync(cluster, namespace, "acme", "2026-11-25T10:00:00Z")
    # A crash between creating the Job and recording the token (status lost): the request is handled again,
    # and the Job's name, derived from the token, keeps it to one Job.
    cluster.kubectl(
        "patch", names.PLURAL, "acme", "-n", namespace, "--subresource=status", "--type=merge",
        "-p", json.dumps({"status": {"lastHandledSyncRequest": None}}),
    )  # fmt: skip
    wait_for("the request handled again", lambda: handled(cluster, namespace, "acme", "2026-11-25T10:00:00Z"))
    assert len(manual_jobs(cluster, namespace)) == 1
    assert len([e for e in events(cluster, namespace, "acme") if e["reason"] == "SyncRequested"]) == 1

    # A new token: one more Job.
    request_sync(cluster, namespace, "acme", "second")
    wait_for("the second request handled", lambda: handled(cluster, namespace, "acme", "second"))
    assert sorted(j["metadata"]["name"] for j in manual_jobs(cluster, namespace)) == sorted(
        [manifests.manual_job_name(cron_name, "2026-11-25T10:00:00Z"), manifests.manual_job_name(cron_name, "second")]
    )

    # Suspended: refused with a Warning, still echoed so it is not retried forever.
    merge_patch(cluster, names.PLURAL, namespace, "acme", {"spec": {"suspend": True}})
    wait_for("Suspended", lambda: settled(cluster, namespace, "acme", "Connected", Suspended="Suspended"))
    request_sync(cluster, namespace, "acme", "third")
    wait_for("the third request handled", lambda: handled(cluster, namespace, "acme", "third"))
    assert len(manual_jobs(cluster, namespace)) == 2
    refused = [e for e in events(cluster, namespace, "acme") if e["reason"] == "SyncRequestRefused"]
    assert len(refused) == 1 and refused[0]["type"] == "Warning" and "suspended" in refused[0]["message"]


def test_sync_now_on_an_unconnected_integration_is_refused(
    cluster: ControlPlane, namespace: str, operator: Operator
) -> None:
    apply(cluster, integration(namespace, "lonely"))
    wait_for("Pending", lambda: settled(cluster, namespace, "lonely", "Pending"))
    request_sync(cluster, namespace, "lonely", "now")
    wait_for("the request handled", lambda: handled(cluster, namespace, "lonely", "now"))
    refused = [e for e in events(cluster, namespace, "lonely") if e["reason"] == "SyncRequestRefused"]
    assert len(refused) == 1 and "not connected" in refused[0]["message"]
    assert manual_jobs(cluster, namespace) == []


def test_a_job_that_dies_before_reporting_sets_job_failed(
    cluster: ControlPlane, namespace: str, operator: Operator, kubelet: Kubelet
) -> None:
    apply(cluster, integration(namespace, "acme"), token_secret(namespace, "acme", fake_tokens("7000000000000002")))
    wait_for("Connected", lambda: settled(cluster, namespace, "acme", "Connected", Ready="Connected"))
    request_sync(cluster, namespace, "acme", "go")
    (job,) = wait_for("the Job", lambda: manual_jobs(cluster, namespace))
    name = job["metadata"]["name"]

    # Play the kubelet: the real `qbo-operator sync` runs with the pod's environment, but a setting is broken,
    # so it exits 2 (configuration error) before it can write any status. The pod failure policy fails the Job.
    run = kubelet.run(HOME, name, GREENCHECK_API_URL="not a url")
    assert run.exit_code == 2, run.stderr
    assert "GREENCHECK_API_URL" in run.stderr

    obj = wait_for("JobFailed", lambda: settled(cluster, namespace, "acme", "Connected", Synced="JobFailed"))
    synced, ready = conditions(obj)["Synced"], conditions(obj)["Ready"]
    assert synced["status"] == "False" and name in synced["message"]
    assert ready["status"] == "False" and ready["reason"] == "JobFailed"
    assert "lastSync" not in obj["status"]  # the process never reported: only the Job says it failed
    warning = [e for e in events(cluster, namespace, "acme") if e["reason"] == "JobFailed"]
    assert len(warning) == 1 and warning[0]["type"] == "Warning"
    assert operator.samples("qbo_integration_connected", namespace=namespace, name="acme") == [1.0]
