"""The test kubelet: the local control plane has none, so the tests run a Job's Pod here with the harness's
own pieces (`run_job_pods`; `pod_argv`, `pod_env` and `report_pod_exit` for a Pod a test may SIGKILL)."""

from __future__ import annotations

import subprocess
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from qbo_operator.harness.controlplane import (
    ControlPlane,
    PodRun,
    pod_argv,
    pod_env,
    report_pod_exit,
    run_job_pods,
    wait_for_pods,
)
from tests.support.paths import QBO_OPERATOR

COMMANDS = {"qbo-operator": QBO_OPERATOR}  # the image's entry point → the one under test


@dataclass
class PodProcess:
    """A Pod whose command runs here, its output (stdout and stderr, as one stream) in `log`."""

    namespace: str
    name: str
    container: str
    image: str
    proc: subprocess.Popen[bytes]
    log: Path

    def running(self) -> bool:
        return self.proc.poll() is None


class Kubelet:
    """Runs Jobs' Pods on this machine. `env` is added to every Pod's environment; `identity` maps
    (namespace, ServiceAccount) to a kubeconfig so a Pod runs as its own ServiceAccount (without it, as
    the cluster's admin); `on_log` is told of every Pod's log file (the secret-hygiene scan reads them)."""

    def __init__(
        self,
        cluster: ControlPlane,
        logs: Path,
        env: Mapping[str, str] | None = None,
        identity: Callable[[str, str], Path] | None = None,
        on_log: Callable[[Path], None] | None = None,
    ) -> None:
        self.cluster = cluster
        self.logs = logs
        self.env = dict(env or {})
        self.identity = identity
        self.on_log = on_log
        self.runs = 0

    def _kubeconfig(self, namespace: str, pod: Mapping[str, Any]) -> Path:
        if self.identity is None:
            return self.cluster.kubeconfig
        return self.identity(namespace, pod["spec"].get("serviceAccountName") or "default")

    def run(self, namespace: str, job: str, timeout: float = 120, **env: str) -> PodRun:
        """Run the Job's next Pod to its end (`harness.controlplane.run_job_pods`): exit code, stdout, stderr."""
        pod = wait_for_pods(self.cluster, namespace, job, timeout=timeout)[0]
        pod_env = {"KUBECONFIG": str(self._kubeconfig(namespace, pod)), **self.env, **env}
        result = run_job_pods(self.cluster, namespace, job, env=pod_env, command_map=COMMANDS)
        self._log(result.pod).write_text(result.stdout + result.stderr)
        return result

    def start(self, namespace: str, job: str, timeout: float = 120, **env: str) -> PodProcess:
        """Start the Job's next Pending Pod and return while it runs (to be killed, or finished)."""
        pod = wait_for_pods(self.cluster, namespace, job, timeout=timeout)[0]
        container = pod["spec"]["containers"][0]
        environment = pod_env(self.cluster, namespace, pod, self._kubeconfig(namespace, pod), {**self.env, **env})
        log = self._log(pod["metadata"]["name"])
        with log.open("wb") as out:
            proc = subprocess.Popen(
                pod_argv(container, COMMANDS), env=environment, stdout=out, stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
            )  # fmt: skip
        return PodProcess(namespace, pod["metadata"]["name"], container["name"], container.get("image", ""), proc, log)

    def kill(self, pod: PodProcess) -> bool:
        """SIGKILL the Pod's process; True if it was still running."""
        if not pod.running():
            return False
        pod.proc.kill()
        pod.proc.wait()
        return True

    def finish(self, pod: PodProcess, timeout: float = 300) -> int:
        """Wait for the process and set the Pod's phase from its exit code (a SIGKILL is 137); a phase that
        cannot be written (the API server is down) leaves the Pod Pending, as on a real node. Returns the
        process's return code (-9 after a SIGKILL)."""
        rc = pod.proc.wait(timeout)
        code = 128 - rc if rc < 0 else rc
        report_pod_exit(self.cluster, pod.namespace, pod.name, pod.container, pod.image, code, check=False)
        return rc

    def _log(self, pod: str) -> Path:
        self.runs += 1
        self.logs.mkdir(parents=True, exist_ok=True)
        log = self.logs / f"sync-{self.runs:03d}-{pod}.log"
        if self.on_log is not None:
            self.on_log(log)
        return log
