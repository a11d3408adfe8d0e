"""`helm test`: the chart's test hook (templates/tests/health.yaml) rendered, and run through the real
`helm test` against the local control plane.

The local control plane has no nodes, so no kubelet starts the hook's Pod and nothing answers at the
Services' cluster DNS names. As the test kubelet does for sync Jobs, this test plays the kubelet: it runs
the Pod's own command (the shipped files/helm-test.py) on this machine with the Pod's environment, the
Service URLs pointed at local stand-ins for the operator's and the gateway's health endpoints, and the
API discovery check made for real with the hook ServiceAccount's own token; then it reports the Pod's
exit as a kubelet would, and `helm test` judges the release from that. What needs nodes (pulling the
image, cluster DNS, the Services routing to the Deployments' pods) is not exercised here."""

from __future__ import annotations

import http.server
import subprocess
import threading
import uuid
from collections.abc import Iterator, Mapping
from typing import Any

import pytest
import yaml

from qbo_operator.harness.controlplane import ControlPlane, report_pod_exit
from tests.support.chart import CHART, NAMESPACE, RELEASE, Helm, env_of, one
from tests.support.wait import wait_for

FULLNAME = f"{RELEASE}-qbo-operator"


def container(pod: Mapping[str, Any]) -> Mapping[str, Any]:
    (only,) = pod["spec"]["containers"]
    return only  # type: ignore[no-any-return]


# --- the rendered hook --------------------------------------------------------------------------------------


def test_the_hook_checks_both_processes_and_the_crd(helm: Helm) -> None:
    objs = helm.template()
    pod = one(objs, "Pod", "-test")
    account = one(objs, "ServiceAccount", "-test")
    for obj in (pod, account):
        assert obj["metadata"]["annotations"]["helm.sh/hook"] == "test"
        assert obj["metadata"]["annotations"]["helm.sh/hook-delete-policy"] == "before-hook-creation,hook-succeeded"
    assert account["metadata"]["annotations"]["helm.sh/hook-weight"] == "-1"  # before the Pod
    spec = pod["spec"]
    assert spec["restartPolicy"] == "Never"
    assert spec["serviceAccountName"] == f"{FULLNAME}-test"
    c = container(pod)
    assert c["command"] == ["python3", "-c"]
    assert c["args"] == [(CHART / "files" / "helm-test.py").read_text()]
    assert env_of(c) | {"PYTHONDONTWRITEBYTECODE": "1"} == {
        "OPERATOR_HEALTHZ": f"http://{FULLNAME}-operator-metrics.{NAMESPACE}.svc:8080/healthz",
        "GATEWAY_HEALTHZ": f"http://{FULLNAME}-gateway.{NAMESPACE}.svc:80/healthz",
        "GATEWAY_READYZ": f"http://{FULLNAME}-gateway.{NAMESPACE}.svc:80/readyz",
        "CRD_API_PATH": "/apis/integrations.greencheckverified.com/v1alpha1",
        "CRD_PLURAL": "quickbooksintegrations",
        "PYTHONDONTWRITEBYTECODE": "1",
    }
    # hardened like the Deployments
    assert c["securityContext"]["readOnlyRootFilesystem"] is True
    assert c["securityContext"]["capabilities"] == {"drop": ["ALL"]}
    assert spec["securityContext"]["runAsNonRoot"] is True
    assert c["resources"]["limits"]["memory"]
    # the operator's /healthz is reachable through its Service
    service = one(objs, "Service", "-operator-metrics")
    assert {"name": "health", "port": 8080, "targetPort": "health", "protocol": "TCP"} in service["spec"]["ports"]


def test_the_hook_follows_ports_and_can_be_left_out(helm: Helm) -> None:
    objs = helm.template(sets={"operator.healthPort": 8181, "gateway.service.port": 8443})
    env = env_of(container(one(objs, "Pod", "-test")))
    assert env["OPERATOR_HEALTHZ"].endswith(".svc:8181/healthz")
    assert env["GATEWAY_READYZ"].endswith(".svc:8443/readyz")
    kinds = {(o["kind"], o["metadata"]["name"]) for o in helm.template(sets={"helmTest.enabled": False})}
    assert not {k for k in kinds if k[1].endswith("-test")}


# --- `helm test` against the local control plane ------------------------------------------------------------


class Health(http.server.BaseHTTPRequestHandler):
    """A process's health endpoints: 200, or the status the test put in `failing` for a path."""

    failing: dict[str, int] = {}  # noqa: RUF012 - set per server class

    def do_GET(self) -> None:
        status = self.failing.get(self.path, 200 if self.path in ("/healthz", "/readyz") else 404)
        self.send_response(status)
        self.end_headers()

    def log_message(self, *args: Any) -> None:
        pass


@pytest.fixture
def stand_ins() -> Iterator[dict[str, http.server.ThreadingHTTPServer]]:
    servers = {}
    for name in ("operator", "gateway"):
        handler = type(f"{name}Health", (Health,), {"failing": {}})
        server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
        threading.Thread(target=server.serve_forever, daemon=True).start()
        servers[name] = server
    yield servers
    for server in servers.values():
        server.shutdown()
        server.server_close()


def _url(server: http.server.ThreadingHTTPServer, path: str) -> str:
    host, port = server.server_address[:2]
    return f"http://{host!s}:{port}{path}"


def _install(cluster: ControlPlane, namespace: str) -> str:
    release = f"t{uuid.uuid4().hex[:6]}"
    values = {
        "watchNamespaces": [namespace],
        "config": {"gatewayUrl": "https://qbo.example.com", "greencheckApiUrl": "https://gc.example.com"},
        "credentials": {"clientId": "cid", "clientSecret": "csecret", "webhookVerifierToken": "verifier"},
    }
    values_file = cluster.dir / f"{release}-values.yaml"
    values_file.write_text(yaml.safe_dump(values))
    cluster.helm("install", release, str(CHART), "--namespace", namespace, "-f", str(values_file), "--wait=false")
    return release


def _play_kubelet(
    cluster: ControlPlane, namespace: str, pod_name: str, servers: dict[str, http.server.ThreadingHTTPServer]
) -> subprocess.CompletedProcess[str]:
    """Run the hook Pod's command here, as its ServiceAccount, then report its exit like a kubelet."""
    pod: dict[str, Any] = wait_for(
        f"the helm test Pod {pod_name}",
        lambda: cluster.kubectl_json("get", "pods", "-n", namespace, "--field-selector", f"metadata.name={pod_name}")[
            "items"
        ],
        timeout=60,
    )[0]
    c = pod["spec"]["containers"][0]
    token = cluster.kubectl("create", "token", pod["spec"]["serviceAccountName"], "-n", namespace).stdout.strip()
    token_file = cluster.dir / f"{pod_name}-{uuid.uuid4().hex[:6]}.token"
    token_file.write_text(token)
    env = {
        **{e["name"]: e["value"] for e in c["env"]},
        "OPERATOR_HEALTHZ": _url(servers["operator"], "/healthz"),
        "GATEWAY_HEALTHZ": _url(servers["gateway"], "/healthz"),
        "GATEWAY_READYZ": _url(servers["gateway"], "/readyz"),
        "KUBERNETES_API": cluster.server,
        "TOKEN_FILE": str(token_file),
        "CA_FILE": str(cluster.dir / "pki" / "ca.crt"),
    }
    result = subprocess.run(
        [c["command"][0], *c["command"][1:], *c["args"]], env=env, capture_output=True, text=True, timeout=60
    )
    report_pod_exit(cluster, namespace, pod_name, c["name"], c["image"], result.returncode)
    return result


@pytest.mark.e2e
@pytest.mark.parametrize(
    ("failing", "expected_lines", "passes"),
    [
        (None, ["ok   operator /healthz", "ok   gateway /healthz", "ok   gateway /readyz", "ok   CRD"], True),
        (
            ("gateway", "/readyz", 503),
            ["ok   operator /healthz", "ok   gateway /healthz", "FAIL gateway /readyz: {url} answered 503", "ok   CRD"],
            False,
        ),
        (
            ("operator", "/healthz", 500),
            ["FAIL operator /healthz: {url} answered 500", "ok   gateway /healthz", "ok   gateway /readyz", "ok   CRD"],
            False,
        ),
    ],
    ids=["healthy", "gateway not ready", "operator unhealthy"],
)
def test_helm_test_runs_the_hook(
    local_cluster: ControlPlane,
    namespace: str,
    stand_ins: dict[str, http.server.ThreadingHTTPServer],
    failing: tuple[str, str, int] | None,
    expected_lines: list[str],
    passes: bool,
) -> None:
    cluster = local_cluster
    url = ""
    if failing is not None:
        process, path, status = failing
        stand_ins[process].RequestHandlerClass.failing[path] = status  # type: ignore[attr-defined]
        url = _url(stand_ins[process], path)
    release = _install(cluster, namespace)
    helm_test = subprocess.Popen(
        [str(cluster.bin("helm")), "test", release, "--namespace", namespace, "--timeout", "90s"],
        env=cluster.env(),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        run = _play_kubelet(cluster, namespace, f"{release}-qbo-operator-test", stand_ins)
        out, err = helm_test.communicate(timeout=120)
    finally:
        if helm_test.poll() is None:
            helm_test.kill()
            helm_test.wait()
    assert run.stdout.splitlines() == [line.format(url=url) for line in expected_lines], run.stderr
    assert run.returncode == (0 if passes else 1)
    if passes:
        assert helm_test.returncode == 0, err
        assert f"TEST SUITE:     {release}-qbo-operator-test" in out
        assert "Phase:          Succeeded" in out
        # hook-succeeded: helm deleted the Pod and its ServiceAccount
        left = cluster.kubectl("get", "pods,serviceaccounts", "-n", namespace, "-o", "name").stdout
        assert f"{release}-qbo-operator-test" not in left
    else:
        assert helm_test.returncode != 0
        assert f"pod {release}-qbo-operator-test failed" in err
        # kept for `kubectl logs`/`describe` (only hook-succeeded deletes it)
        cluster.kubectl("get", "pod", f"{release}-qbo-operator-test", "-n", namespace)


@pytest.mark.e2e
def test_the_crd_check_fails_when_the_api_does_not_serve_it(
    local_cluster: ControlPlane, namespace: str, stand_ins: dict[str, http.server.ThreadingHTTPServer]
) -> None:
    """The same script, asked about a group the API server does not serve, says what is missing."""
    cluster = local_cluster
    token_file = cluster.dir / f"admin-{uuid.uuid4().hex[:6]}.token"
    cluster.kubectl("create", "serviceaccount", "probe", "-n", namespace)
    token_file.write_text(cluster.kubectl("create", "token", "probe", "-n", namespace).stdout.strip())
    env = {
        "OPERATOR_HEALTHZ": _url(stand_ins["operator"], "/healthz"),
        "GATEWAY_HEALTHZ": _url(stand_ins["gateway"], "/healthz"),
        "GATEWAY_READYZ": _url(stand_ins["gateway"], "/readyz"),
        "CRD_API_PATH": "/apis/integrations.greencheckverified.com/v9",
        "CRD_PLURAL": "quickbooksintegrations",
        "KUBERNETES_API": cluster.server,
        "TOKEN_FILE": str(token_file),
        "CA_FILE": str(cluster.dir / "pki" / "ca.crt"),
    }
    script = (CHART / "files" / "helm-test.py").read_text()
    result = subprocess.run(["python3", "-c", script], env=env, capture_output=True, text=True, timeout=60)
    assert result.returncode == 1
    assert result.stdout.splitlines()[-1] == (
        f"FAIL CRD: {cluster.server}/apis/integrations.greencheckverified.com/v9 answered 404: is the "
        "QuickbooksIntegration CRD installed?"
    )
