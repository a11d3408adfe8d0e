"""Proofs that the tests run against a real API server, each a behaviour a mock would not have."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from qbo_operator.harness.controlplane import ControlPlane, ControlPlaneError, pid_alive, reap_orphans
from tests.support.kube import merge_patch
from tests.support.kubelet import Kubelet

WIDGET_CRD = """
apiVersion: apiextensions.k8s.io/v1
kind: CustomResourceDefinition
metadata: {name: widgets.test.example.com}
spec:
  group: test.example.com
  scope: Namespaced
  names: {kind: Widget, plural: widgets, singular: widget}
  versions:
    - name: v1
      served: true
      storage: true
      subresources: {}
      schema:
        openAPIV3Schema:
          type: object
          properties:
            spec:
              type: object
              required: [size]
              properties:
                size: {type: integer, minimum: 1}
                color: {type: string}
              x-kubernetes-validations:
                - rule: "self.size <= 10 || self.color == 'red'"
                  message: "big widgets must be red"
                - rule: "!has(oldSelf.color) || self.color == oldSelf.color"
                  message: "color is immutable"
            status:
              type: object
              properties:
                ready: {type: boolean}
"""


def widget(name: str, size: int, color: str | None = None) -> str:
    spec: dict[str, object] = {"size": size}
    if color:
        spec["color"] = color
    return json.dumps({"apiVersion": "test.example.com/v1", "kind": "Widget", "metadata": {"name": name}, "spec": spec})


@pytest.fixture(scope="module")
def widgets(cluster: ControlPlane) -> None:
    cluster.kubectl("apply", "-f", "-", input=WIDGET_CRD)
    cluster.kubectl("wait", "--for=condition=Established", "crd/widgets.test.example.com", "--timeout=60s")


def test_version_is_stamped(cluster: ControlPlane) -> None:
    version = cluster.kubectl_json("version")
    assert version["serverVersion"]["gitVersion"].startswith("v1.34.")
    assert version["clientVersion"]["gitVersion"] == version["serverVersion"]["gitVersion"]


def test_schema_and_cel_rules_are_enforced(cluster: ControlPlane, namespace: str, widgets: None) -> None:
    bad = cluster.kubectl("apply", "-n", namespace, "-f", "-", input=widget("w0", 0), check=False)
    assert bad.returncode != 0
    assert "spec.size" in bad.stderr and "greater than or equal to 1" in bad.stderr
    cel = cluster.kubectl("apply", "-n", namespace, "-f", "-", input=widget("w1", 20, "blue"), check=False)
    assert cel.returncode != 0 and "big widgets must be red" in cel.stderr
    cluster.kubectl("apply", "-n", namespace, "-f", "-", input=widget("w2", 3, "blue"))
    change = cluster.kubectl("apply", "-n", namespace, "-f", "-", input=widget("w2", 3, "green"), check=False)
    assert change.returncode != 0 and "color is immutable" in change.stderr


def test_unknown_fields_are_refused(cluster: ControlPlane, namespace: str, widgets: None) -> None:
    body = json.loads(widget("w3", 2))
    body["spec"]["colour"] = "red"
    result = cluster.kubectl(
        "apply", "-n", namespace, "--validate=strict", "-f", "-", input=json.dumps(body), check=False
    )
    assert result.returncode != 0 and 'unknown field "spec.colour"' in result.stderr


def test_stale_resource_version_conflicts(cluster: ControlPlane, namespace: str) -> None:
    cluster.kubectl("create", "configmap", "cm", "-n", namespace, "--from-literal=a=1")
    obj = cluster.kubectl_json("get", "configmap", "cm", "-n", namespace)
    first = dict(obj, data={"a": "2"})
    cluster.kubectl("replace", "-f", "-", input=json.dumps(first))
    stale = dict(obj, data={"a": "3"})  # still carries the old resourceVersion
    result = cluster.kubectl("replace", "-f", "-", input=json.dumps(stale), check=False)
    assert result.returncode != 0
    assert "the object has been modified" in result.stderr  # HTTP 409 Conflict
    assert cluster.kubectl_json("get", "configmap", "cm", "-n", namespace)["data"] == {"a": "2"}


def test_status_is_ignored_without_the_status_subresource_path(
    cluster: ControlPlane, namespace: str, widgets: None
) -> None:
    # The Widget CRD declares no status subresource, so /status does not exist ...
    cluster.kubectl("apply", "-n", namespace, "-f", "-", input=widget("w4", 1))
    result = merge_patch(cluster, "widget", namespace, "w4", {"status": {"ready": True}}, status=True, check=False)
    assert (result.returncode != 0 and "NotFound" in result.stderr) or "not found" in result.stderr
    # ... while for a resource with the subresource, a status change through the main resource is dropped.
    cluster.kubectl("create", "job", "j", "-n", namespace, "--image=busybox", "--", "true")
    merge_patch(cluster, "job", namespace, "j", {"status": {"active": 7}})
    assert cluster.kubectl_json("get", "job", "j", "-n", namespace).get("status", {}).get("active") != 7


def test_role_with_resource_names_denies_other_objects(cluster: ControlPlane, namespace: str) -> None:
    for name in ("mine", "theirs"):
        cluster.kubectl("create", "secret", "generic", name, "-n", namespace, f"--from-literal=k={name}")
    cluster.kubectl("create", "serviceaccount", "reader", "-n", namespace)
    cluster.kubectl(
        "create",
        "role",
        "reader",
        "-n",
        namespace,
        "--verb=get",
        "--resource=secrets",
        "--resource-name=mine",
    )
    cluster.kubectl(
        "create",
        "rolebinding",
        "reader",
        "-n",
        namespace,
        "--role=reader",
        f"--serviceaccount={namespace}:reader",
    )
    kubeconfig = cluster.service_account_kubeconfig(namespace, "reader")
    assert cluster.kubectl("get", "secret", "mine", "-n", namespace, kubeconfig=kubeconfig).returncode == 0
    denied = cluster.kubectl("get", "secret", "theirs", "-n", namespace, kubeconfig=kubeconfig, check=False)
    assert denied.returncode != 0 and "Forbidden" in denied.stderr
    denied_list = cluster.kubectl("get", "secrets", "-n", namespace, kubeconfig=kubeconfig, check=False)
    assert denied_list.returncode != 0 and "Forbidden" in denied_list.stderr


def test_deleting_an_owner_garbage_collects_dependents(cluster: ControlPlane, namespace: str) -> None:
    cluster.kubectl("create", "configmap", "owner", "-n", namespace)
    uid = cluster.kubectl_json("get", "configmap", "owner", "-n", namespace)["metadata"]["uid"]
    dependent = {
        "apiVersion": "v1",
        "kind": "Secret",
        "metadata": {
            "name": "dependent",
            "namespace": namespace,
            "ownerReferences": [{"apiVersion": "v1", "kind": "ConfigMap", "name": "owner", "uid": uid}],
        },
        "stringData": {"k": "v"},
    }
    cluster.kubectl("apply", "-f", "-", input=json.dumps(dependent))
    cluster.kubectl("delete", "configmap", "owner", "-n", namespace)
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        if cluster.kubectl("get", "secret", "dependent", "-n", namespace, check=False).returncode != 0:
            return
        time.sleep(0.5)
    pytest.fail("the garbage collector did not delete the dependent Secret")


@pytest.mark.parametrize(("code", "condition"), [(0, "Complete"), (3, "Failed")])
def test_jobs_complete_or_fail_through_the_test_kubelet(
    cluster: ControlPlane, namespace: str, kubelet: Kubelet, code: int, condition: str
) -> None:
    job = f"exit-{code}"
    cluster.kubectl("create", "job", job, "-n", namespace, "--image=busybox", "--", "sh", "-c", f"exit {code}")
    merge_patch(cluster, "job", namespace, job, {"spec": {"backoffLimit": 0}}, check=False)
    run = kubelet.run(namespace, job)
    assert run.exit_code == code
    cluster.kubectl("wait", f"--for=condition={condition}", f"job/{job}", "-n", namespace, "--timeout=90s")


def test_cronjob_schedule_and_time_zone_are_accepted(cluster: ControlPlane, namespace: str) -> None:
    cluster.kubectl(
        "create",
        "cronjob",
        "nightly",
        "-n",
        namespace,
        "--image=busybox",
        "--schedule=17 2 * * *",
        "--",
        "true",
    )
    merge_patch(cluster, "cronjob", namespace, "nightly", {"spec": {"timeZone": "America/Los_Angeles"}})
    spec = cluster.kubectl_json("get", "cronjob", "nightly", "-n", namespace)["spec"]
    assert (spec["schedule"], spec["timeZone"]) == ("17 2 * * *", "America/Los_Angeles")
    bad = merge_patch(cluster, "cronjob", namespace, "nightly", {"spec": {"timeZone": "Mars/Olympus"}}, check=False)
    assert bad.returncode != 0 and "timeZone" in bad.stderr


def test_a_killed_run_leaves_no_orphans(tmp_path: Path) -> None:
    """A test process SIGKILLed mid-run leaves etcd etc. behind; the next start stops them by pid file."""
    script = (
        "import time\nfrom qbo_operator.harness.controlplane import ControlPlane\n"
        "cp = ControlPlane(); cp.start(); print(cp.dir, flush=True); time.sleep(600)\n"
    )
    proc = subprocess.Popen([sys.executable, "-c", script], stdout=subprocess.PIPE, text=True, env=os.environ.copy())
    assert proc.stdout is not None
    run_dir = Path(proc.stdout.readline().strip())
    pids = [int((run_dir / f"{n}.pid").read_text()) for n in ("etcd", "kube-apiserver", "kube-controller-manager")]
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert all(pid_alive(pid) for pid in pids)  # still running: orphans
    stopped = reap_orphans()
    assert set(pids) <= set(stopped)
    assert not any(pid_alive(pid) for pid in pids)
    assert not run_dir.exists()


def test_missing_assets_say_what_to_do(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("KUBEBUILDER_ASSETS", str(tmp_path))
    with pytest.raises(ControlPlaneError, match="make tools"):
        ControlPlane().start()
