"""A real Kubernetes control plane on loopback: etcd → kube-apiserver → kube-controller-manager.

Built from pinned upstream Go modules by tools/build.sh (envtest's KUBEBUILDER_ASSETS layout) and
used by the tests, `make cluster` and `qbo-operator demo`. There is no kubelet: `run_job_pods`
plays one by running a Job's Pod command locally and setting the Pod's phase, so the real Job and
CronJob controllers do the rest (docs/control-plane.md §5).

Processes run in their own process groups with pid files in the run directory; a run whose owner
died is found by those pid files and stopped by the next start (no orphans after a killed run)."""

from __future__ import annotations

import argparse
import base64
import contextlib
import datetime as dt
import json
import os
import shutil
import signal
import socket
import ssl
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from qbo_operator.harness.pki import make_pki
from qbo_operator.harness.polling import WaitTimeout, wait_for

BINARIES = ("etcd", "kube-apiserver", "kube-controller-manager", "kubectl", "helm")
CONTROLLERS = (
    "garbage-collector-controller",
    "namespace-controller",
    "job-controller",
    "cronjob-controller",
    "ttl-after-finished-controller",
    # fills the built-in admin/edit/view roles, so a test can act as a tenant with `edit` (tests/operator)
    "clusterrole-aggregation-controller",
)
RUNS_ROOT = Path(tempfile.gettempdir()) / "qbo-controlplane"
AUDIT_POLICY = """apiVersion: audit.k8s.io/v1
kind: Policy
omitStages: ["RequestReceived"]
rules:
  - level: None
    users: ["system:kube-controller-manager", "system:apiserver"]
  - level: None
    nonResourceURLs: ["/healthz*", "/readyz*", "/livez*", "/version", "/openapi*"]
  - level: Metadata
"""


class ControlPlaneError(RuntimeError):
    pass


def find_assets() -> Path:
    """KUBEBUILDER_ASSETS, else build (or reuse) the binaries with tools/build.sh from a checkout."""
    env = os.environ.get("KUBEBUILDER_ASSETS")
    if env:
        path = Path(env)
    else:
        script = Path(__file__).resolve().parents[3] / "tools" / "build.sh"
        if not script.exists():
            raise ControlPlaneError("set KUBEBUILDER_ASSETS to a folder with etcd, kube-apiserver, kubectl and helm")
        path = Path(subprocess.run(["bash", str(script)], check=True, capture_output=True, text=True).stdout.strip())
    missing = [b for b in BINARIES if not (path / b).is_file()]
    if missing:
        raise ControlPlaneError(f"KUBEBUILDER_ASSETS={path} lacks {', '.join(missing)}: run `make tools`")
    return path


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


def _b64(path: Path) -> str:
    return base64.b64encode(path.read_bytes()).decode()


def kubeconfig_yaml(server: str, ca: Path, user: Mapping[str, Any]) -> str:
    return json.dumps(
        {
            "apiVersion": "v1",
            "kind": "Config",
            "clusters": [{"name": "qbo-local", "cluster": {"server": server, "certificate-authority-data": _b64(ca)}}],
            "users": [{"name": "user", "user": dict(user)}],
            "contexts": [{"name": "qbo-local", "context": {"cluster": "qbo-local", "user": "user"}}],
            "current-context": "qbo-local",
        },
        indent=2,
    )


# --- the control plane -----------------------------------------------------------------------


class KubeClients:
    """kubectl and helm bound to one cluster's kubeconfig and to the pinned binaries."""

    assets: Path | None

    @property
    def dir(self) -> Path:
        raise NotImplementedError

    @property
    def kubeconfig(self) -> Path:
        raise NotImplementedError

    def bin(self, name: str) -> str:
        assert self.assets is not None
        return str(self.assets / name)

    def env(self) -> dict[str, str]:
        return {**os.environ, "KUBECONFIG": str(self.kubeconfig)}

    def kubectl(
        self, *args: str, check: bool = True, input: str | None = None, kubeconfig: Path | None = None
    ) -> subprocess.CompletedProcess[str]:
        cmd = [self.bin("kubectl"), f"--kubeconfig={kubeconfig or self.kubeconfig}", *args]
        result = subprocess.run(cmd, capture_output=True, text=True, input=input, timeout=120)
        if check and result.returncode != 0:
            raise ControlPlaneError(f"kubectl {' '.join(args)} failed ({result.returncode}): {result.stderr.strip()}")
        return result

    def kubectl_json(self, *args: str) -> Any:
        return json.loads(self.kubectl(*args, "-o", "json").stdout)

    def patch_status(
        self, resource: str, name: str, namespace: str, status: Mapping[str, Any], *, check: bool = True
    ) -> subprocess.CompletedProcess[str]:
        """Merge `status` into the object's status subresource, as its controller (or a kubelet) would."""
        body = json.dumps({"status": status})
        return self.kubectl(
            "patch", resource, name, "-n", namespace, "--subresource=status", "--type=merge", "-p", body, check=check
        )

    def helm(self, *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
        env = {
            **self.env(),
            "HELM_CACHE_HOME": str(self.dir / "helm-cache"),
            "HELM_CONFIG_HOME": str(self.dir / "helm-config"),
            "HELM_DATA_HOME": str(self.dir / "helm-data"),
        }
        result = subprocess.run([self.bin("helm"), *args], capture_output=True, text=True, env=env, timeout=300)
        if check and result.returncode != 0:
            raise ControlPlaneError(f"helm {' '.join(args)} failed ({result.returncode}): {result.stderr.strip()}")
        return result

    def apply_crds(self, *paths: Path) -> None:
        for path in paths:
            self.kubectl("apply", "--server-side", "-f", str(path))
        self.kubectl("wait", "--for=condition=Established", "--timeout=60s", "crd", "--all")


@dataclass
class ControlPlane(KubeClients):
    """One control plane in `directory` (created when None). Use as a context manager or start()/stop()."""

    directory: Path | None = None
    assets: Path | None = None
    local: bool = True
    start_timeout: float = 90.0
    extra_apiserver_flags: Sequence[str] = ()
    processes: dict[str, subprocess.Popen[bytes]] = field(default_factory=dict)
    api_port: int = 0
    _owns_dir: bool = False

    # paths ------------------------------------------------------------------------------------
    @property
    def dir(self) -> Path:
        assert self.directory is not None
        return self.directory

    @property
    def kubeconfig(self) -> Path:
        return self.dir / "kubeconfig"

    @property
    def audit_log(self) -> Path:
        return self.dir / "audit.log"

    @property
    def server(self) -> str:
        return f"https://127.0.0.1:{self.api_port}"

    # lifecycle --------------------------------------------------------------------------------
    def __enter__(self) -> ControlPlane:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def start(self) -> None:
        reap_orphans()
        self.assets = self.assets or find_assets()
        if self.directory is None:
            RUNS_ROOT.mkdir(parents=True, exist_ok=True)
            self.directory = Path(tempfile.mkdtemp(prefix="run-", dir=RUNS_ROOT))
            self._owns_dir = True
        self.dir.mkdir(parents=True, exist_ok=True)
        (self.dir / "owner.pid").write_text(str(os.getpid()))
        shutil.rmtree(self.dir / "etcd", ignore_errors=True)  # a fresh cluster every start
        make_pki(self.dir / "pki")
        try:
            self._start_etcd()
            self.start_apiserver()
            self._write_admin_kubeconfig()
            self._start_controller_manager()
        except BaseException:
            self.stop()
            raise

    def _spawn(self, name: str, args: list[str]) -> subprocess.Popen[bytes]:
        log = open(self.dir / f"{name}.log", "ab")  # noqa: SIM115 - owned by the child for its lifetime
        proc = subprocess.Popen(
            [self.bin(name), *args],
            stdout=log,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            process_group=0,
        )
        log.close()
        self.processes[name] = proc
        (self.dir / f"{name}.pid").write_text(str(proc.pid))
        return proc

    def _wait(self, name: str, url: str, context: ssl.SSLContext | None = None) -> None:
        deadline = time.monotonic() + self.start_timeout
        proc = self.processes[name]
        while time.monotonic() < deadline:
            if proc.poll() is not None:
                tail = (self.dir / f"{name}.log").read_text(errors="replace")[-3000:]
                raise ControlPlaneError(f"{name} exited with {proc.returncode} while starting:\n{tail}")
            with (
                contextlib.suppress(OSError),
                urllib.request.urlopen(url, timeout=2, context=context) as resp,  # noqa: S310 - loopback URL
            ):
                if resp.status == 200:
                    return
            time.sleep(0.1)
        raise ControlPlaneError(f"{name} was not ready at {url} within {self.start_timeout:.0f}s (log: {self.dir})")

    def _start_etcd(self) -> None:
        client, peer = free_port(), free_port()
        self.etcd_url = f"http://127.0.0.1:{client}"
        self._spawn(
            "etcd",
            [
                "--name=default",
                f"--data-dir={self.dir / 'etcd'}",
                f"--listen-client-urls={self.etcd_url}",
                f"--advertise-client-urls={self.etcd_url}",
                f"--listen-peer-urls=http://127.0.0.1:{peer}",
                f"--initial-advertise-peer-urls=http://127.0.0.1:{peer}",
                f"--initial-cluster=default=http://127.0.0.1:{peer}",
                "--unsafe-no-fsync=true",
                "--log-level=warn",
            ],
        )
        self._wait("etcd", f"{self.etcd_url}/health")

    def start_apiserver(self) -> None:
        """(Re)start kube-apiserver on the same port: tests kill and restart it to prove recovery."""
        self.api_port = self.api_port or free_port()
        (self.dir / "audit-policy.yaml").write_text(AUDIT_POLICY)
        pki = self.dir / "pki"
        self._spawn(
            "kube-apiserver",
            [
                f"--etcd-servers={self.etcd_url}",
                "--bind-address=127.0.0.1",
                f"--secure-port={self.api_port}",
                "--advertise-address=127.0.0.1",
                "--endpoint-reconciler-type=none",
                f"--cert-dir={pki}",
                f"--client-ca-file={pki / 'ca.crt'}",
                f"--service-account-issuer=https://127.0.0.1:{self.api_port}/",
                f"--service-account-key-file={pki / 'sa.pub'}",
                f"--service-account-signing-key-file={pki / 'sa.key'}",
                "--service-cluster-ip-range=10.0.0.0/24",
                "--authorization-mode=RBAC",
                "--disable-admission-plugins=ServiceAccount",
                "--allow-privileged=true",
                f"--audit-policy-file={self.dir / 'audit-policy.yaml'}",
                f"--audit-log-path={self.audit_log}",
                "--audit-log-format=json",
                "--v=1",
                *self.extra_apiserver_flags,
            ],
        )
        context = ssl.create_default_context(cafile=str(pki / "ca.crt"))
        self._wait("kube-apiserver", f"{self.server}/readyz", context)

    def _write_admin_kubeconfig(self) -> None:
        pki = self.dir / "pki"
        user = {
            "client-certificate-data": _b64(pki / "admin.crt"),
            "client-key-data": _b64(pki / "admin.key"),
        }
        self.kubeconfig.write_text(kubeconfig_yaml(self.server, pki / "ca.crt", user))
        self.kubeconfig.chmod(0o600)

    def _start_controller_manager(self) -> None:
        pki = self.dir / "pki"
        self._spawn(
            "kube-controller-manager",
            [
                f"--kubeconfig={self.kubeconfig}",
                "--leader-elect=false",
                f"--controllers={','.join(CONTROLLERS)}",
                "--secure-port=0",
                f"--service-account-private-key-file={pki / 'sa.key'}",
                f"--root-ca-file={pki / 'ca.crt'}",
                "--kube-api-qps=100",
                "--kube-api-burst=200",
                "--concurrent-job-syncs=10",
                "--v=1",
            ],
        )

    def kill_apiserver(self) -> None:
        proc = self.processes.pop("kube-apiserver")
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()

    def stop(self) -> None:
        for name in ("kube-controller-manager", "kube-apiserver", "etcd"):
            proc = self.processes.pop(name, None)
            if proc is not None:
                terminate_group(proc.pid, proc)
            with contextlib.suppress(FileNotFoundError):
                (self.dir / f"{name}.pid").unlink()
        if self._owns_dir and self.directory is not None:
            shutil.rmtree(self.directory, ignore_errors=True)

    # clients ----------------------------------------------------------------------------------
    def service_account_kubeconfig(self, namespace: str, name: str, hours: int = 6) -> Path:
        """A kubeconfig that authenticates as the ServiceAccount itself (a real TokenRequest token),
        so RBAC is exercised exactly as in a cluster."""
        token = self.kubectl("create", "token", name, "-n", namespace, f"--duration={hours}h").stdout.strip()
        path = self.dir / f"sa-{namespace}-{name}.kubeconfig"
        path.write_text(kubeconfig_yaml(self.server, self.dir / "pki" / "ca.crt", {"token": token}))
        path.chmod(0o600)
        return path

    def audit_events(self) -> Iterator[dict[str, Any]]:
        """Every audit event so far, oldest first. The API server rotates its log at 100 MB
        (lumberjack's default when no size is given), into `audit-<time>.log` beside it: a 10,000-integration
        run writes several, and reading only `audit.log` lost most of its events."""
        files = [*sorted(self.dir.glob("audit-*.log")), self.audit_log]
        for path in files:
            if not path.exists():
                continue
            with path.open() as fh:
                for line in fh:
                    with contextlib.suppress(ValueError):
                        yield json.loads(line)


class ExternalCluster(KubeClients):
    """An existing cluster (QBO_E2E_KUBECONFIG, e.g. kind) behind the same interface as ControlPlane,
    for the end-to-end tests that need no local-only powers (audit log, apiserver restarts, test kubelet)."""

    local = False

    def __init__(self, kubeconfig: Path, assets: Path | None = None) -> None:
        self._kubeconfig = kubeconfig
        self.assets = assets or find_assets()
        self.directory = Path(tempfile.mkdtemp(prefix="external-", dir=tempfile.gettempdir()))

    @property
    def dir(self) -> Path:
        return self.directory

    @property
    def kubeconfig(self) -> Path:
        return self._kubeconfig

    def stop(self) -> None:
        shutil.rmtree(self.directory, ignore_errors=True)

    def service_account_kubeconfig(self, namespace: str, name: str, hours: int = 6) -> Path:
        token = self.kubectl("create", "token", name, "-n", namespace, f"--duration={hours}h").stdout.strip()
        view = self.kubectl_json("config", "view", "--raw", "--minify")
        cluster = view["clusters"][0]["cluster"]
        config = {
            "apiVersion": "v1",
            "kind": "Config",
            "clusters": [{"name": "e2e", "cluster": cluster}],
            "users": [{"name": "sa", "user": {"token": token}}],
            "contexts": [{"name": "e2e", "context": {"cluster": "e2e", "user": "sa"}}],
            "current-context": "e2e",
        }
        path = self.dir / f"sa-{namespace}-{name}.kubeconfig"
        path.write_text(json.dumps(config))
        path.chmod(0o600)
        return path


def terminate_group(
    pid: int, proc: subprocess.Popen[bytes] | None = None, grace: float = 10.0, sig: int = signal.SIGTERM
) -> None:
    """Send `sig` to the process group led by `pid`; SIGKILL the group if it has not exited after `grace`."""
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pid, sig)
    deadline = time.monotonic() + grace
    while time.monotonic() < deadline:
        if proc is not None:
            if proc.poll() is not None:
                return
        elif not pid_alive(pid):
            return
        time.sleep(0.05)
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pid, signal.SIGKILL)
    if proc is not None:
        proc.wait()


def pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    # a zombie is not alive
    with contextlib.suppress(OSError):
        if "State:\tZ" in Path(f"/proc/{pid}/status").read_text():
            return False
    return True


def _is_ours(pid: int, binary: str) -> bool:
    with contextlib.suppress(OSError):
        return Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")[0].endswith(binary.encode())
    return False


def reap_orphans(root: Path = RUNS_ROOT) -> list[int]:
    """Stop processes of runs whose owner process has died (a killed test run), by their pid files."""
    stopped: list[int] = []
    if not root.exists():
        return stopped
    for run in root.iterdir():
        owner = run / "owner.pid"
        if not owner.exists():
            continue
        try:
            owner_pid = int(owner.read_text())
        except ValueError:
            owner_pid = -1
        if owner_pid > 0 and pid_alive(owner_pid):
            continue
        for name in ("kube-controller-manager", "kube-apiserver", "etcd"):
            pidfile = run / f"{name}.pid"
            if pidfile.exists():
                with contextlib.suppress(ValueError):
                    pid = int(pidfile.read_text())
                    if pid_alive(pid) and _is_ours(pid, name):
                        terminate_group(pid)
                        stopped.append(pid)
        shutil.rmtree(run, ignore_errors=True)
    return stopped


# --- playing the kubelet ---------------------------------------------------------------------


def _resolve_env(cp: ControlPlane, namespace: str, container: dict[str, Any]) -> dict[str, str]:
    env: dict[str, str] = {}
    secrets: dict[str, dict[str, str]] = {}
    maps: dict[str, dict[str, str]] = {}

    def secret(name: str) -> dict[str, str]:
        if name not in secrets:
            data = cp.kubectl_json("get", "secret", name, "-n", namespace).get("data") or {}
            secrets[name] = {k: base64.b64decode(v).decode() for k, v in data.items()}
        return secrets[name]

    def config_map(name: str) -> dict[str, str]:
        if name not in maps:
            maps[name] = cp.kubectl_json("get", "configmap", name, "-n", namespace).get("data") or {}
        return maps[name]

    for source in container.get("envFrom") or []:
        if "secretRef" in source:
            env.update(secret(source["secretRef"]["name"]))
        elif "configMapRef" in source:
            env.update(config_map(source["configMapRef"]["name"]))
    for var in container.get("env") or []:
        if "value" in var:
            env[var["name"]] = var["value"]
        elif ref := (var.get("valueFrom") or {}).get("secretKeyRef"):
            env[var["name"]] = secret(ref["name"])[ref["key"]]
        elif ref := (var.get("valueFrom") or {}).get("configMapKeyRef"):
            env[var["name"]] = config_map(ref["name"])[ref["key"]]
    return env


@dataclass
class PodRun:
    pod: str
    exit_code: int
    stdout: str
    stderr: str


def wait_for_pods(cp: ControlPlane, namespace: str, job: str, timeout: float = 60.0) -> list[dict[str, Any]]:
    """The Job's Pending Pods, once there is one (the Job controller creates them)."""

    def pending() -> list[dict[str, Any]]:
        pods = cp.kubectl_json("get", "pods", "-n", namespace, "-l", f"job-name={job}")["items"]
        return [p for p in pods if (p.get("status") or {}).get("phase", "Pending") == "Pending"]

    try:
        return wait_for(f"a Pending pod of Job {namespace}/{job}", pending, timeout, 0.2)
    except WaitTimeout:
        raise ControlPlaneError(f"no Pending pod of Job {namespace}/{job} appeared within {timeout:.0f}s") from None


def pod_argv(container: Mapping[str, Any], command_map: Mapping[str, str] | None = None) -> list[str]:
    """The container's command and args, its program looked up in `command_map` (image path → local path)."""
    argv = list(container.get("command") or []) + list(container.get("args") or [])
    if command_map and argv and argv[0] in command_map:
        argv[0] = command_map[argv[0]]
    return argv


def pod_env(
    cp: ControlPlane, namespace: str, pod: Mapping[str, Any], kubeconfig: Path, extra: Mapping[str, str] | None = None
) -> dict[str, str]:
    """The environment the Pod's first container would get (envFrom, env, Secret and ConfigMap refs),
    here under `kubeconfig`, plus `extra`."""
    return {
        "PATH": os.environ.get("PATH", ""),
        "HOME": os.environ.get("HOME", tempfile.gettempdir()),
        "HOSTNAME": pod["metadata"]["name"],
        "KUBECONFIG": str(kubeconfig),
        **_resolve_env(cp, namespace, pod["spec"]["containers"][0]),
        **(extra or {}),
    }


def report_pod_exit(
    cp: KubeClients, namespace: str, pod: str, container: str, image: str, exit_code: int, *, check: bool = True
) -> None:
    """What the kubelet reports when the container ends: phase and terminated state from its exit code,
    from which the Job controller completes or retries the Job."""
    now = dt.datetime.now(dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
    reason = "Completed" if exit_code == 0 else "Error"
    state = {"terminated": {"exitCode": exit_code, "reason": reason, "startedAt": now, "finishedAt": now}}
    status = {
        "phase": "Succeeded" if exit_code == 0 else "Failed",
        "containerStatuses": [
            {"name": container, "image": image, "imageID": "", "ready": False, "restartCount": 0, "state": state}
        ],
    }
    cp.patch_status("pod", pod, namespace, status, check=check)


def run_job_pods(
    cp: ControlPlane,
    namespace: str,
    job: str,
    env: Mapping[str, str] | None = None,
    command_map: Mapping[str, str] | None = None,
    timeout: float = 600.0,
) -> PodRun:
    """Act as the kubelet for the Job's next Pending Pod: run its command here with the Pod's
    environment (+ `env`), then set the Pod's phase from the exit code."""
    pod = wait_for_pods(cp, namespace, job)[0]
    container = pod["spec"]["containers"][0]
    argv = pod_argv(container, command_map)
    result = subprocess.run(
        argv, env=pod_env(cp, namespace, pod, cp.kubeconfig, env), capture_output=True, text=True, timeout=timeout
    )
    name = pod["metadata"]["name"]
    report_pod_exit(cp, namespace, name, container["name"], container.get("image", ""), result.returncode)
    return PodRun(name, result.returncode, result.stdout, result.stderr)


# --- `make cluster` --------------------------------------------------------------------------


def _cli(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m qbo_operator.harness.controlplane")
    parser.add_argument("action", choices=["up", "down", "serve"])
    parser.add_argument("--dir", type=Path, default=Path(".cache/cluster"))
    parser.add_argument("--crds", type=Path, default=Path("crds"))
    args = parser.parse_args(argv)
    directory: Path = args.dir.resolve()
    if args.action == "down":
        return _down(directory)
    if args.action == "up":
        return _up(directory, args.crds)
    return _serve(directory, args.crds)


def _down(directory: Path) -> int:
    pidfile = directory / "serve.pid"
    if pidfile.exists():
        terminate_group(int(pidfile.read_text()), grace=30)
        pidfile.unlink(missing_ok=True)
        print(f"control plane in {directory} stopped")
    else:
        print(f"no control plane running in {directory}")
    return 0


def _up(directory: Path, crds: Path) -> int:
    """Start `serve` in the background, detached, and return once it has written `ready`."""
    if (directory / "serve.pid").exists() and pid_alive(int((directory / "serve.pid").read_text())):
        print(f"already running: export KUBECONFIG={directory / 'kubeconfig'}")
        return 0
    directory.mkdir(parents=True, exist_ok=True)
    log = open(directory / "serve.log", "wb")  # noqa: SIM115 - handed to the child
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "qbo_operator.harness.controlplane",
            "serve",
            "--dir",
            str(directory),
            "--crds",
            str(crds),
        ],
        stdout=log,
        stderr=subprocess.STDOUT,
        stdin=subprocess.DEVNULL,
        start_new_session=True,
    )
    (directory / "serve.pid").write_text(str(proc.pid))
    print("starting the local control plane (etcd, kube-apiserver, kube-controller-manager)...", flush=True)
    deadline = time.monotonic() + 120
    while not (directory / "ready").exists():
        if proc.poll() is not None or time.monotonic() > deadline:
            print((directory / "serve.log").read_text()[-3000:], file=sys.stderr)
            return 1
        time.sleep(0.2)
    print(f"ready. export KUBECONFIG={directory / 'kubeconfig'}\nstop it with: make cluster-down")
    return 0


def _serve(directory: Path, crds: Path) -> int:
    """The control plane in the foreground until SIGTERM; `ready` exists while it serves."""
    (directory / "ready").unlink(missing_ok=True)
    cp = ControlPlane(directory=directory)
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
    try:
        cp.start()
        if crds.exists():
            cp.apply_crds(*sorted(crds.glob("*.yaml")))
        (directory / "ready").write_text("ok")
        while True:
            time.sleep(3600)
    finally:
        (directory / "ready").unlink(missing_ok=True)
        cp.stop()


if __name__ == "__main__":
    sys.exit(_cli())
