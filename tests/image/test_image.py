"""The built image, run as the chart runs it (uid 65532, read-only root, only /tmp writable): its three
commands work from what the image holds, against the sandboxes and the control plane on loopback.

The sandboxes and the control plane run from the test's virtualenv; the image runs only the product."""

from __future__ import annotations

import asyncio
import json
import re
import time
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass
from datetime import UTC
from pathlib import Path

import httpx
import pytest

from qbo_operator import __version__
from qbo_operator.core import signing
from qbo_operator.harness.controlplane import ControlPlane, free_port
from qbo_operator.harness.sandbox.greencheck import GreenCheckSandbox
from qbo_operator.harness.sandbox.qbo import QboSandbox
from qbo_operator.harness.sandbox.qbo_store import parse_time
from tests.support.image import Container, Image, wait_until
from tests.support.kube import apply, create_integration, render_chart_rbac, settled
from tests.support.objects import integration
from tests.support.paths import ROOT
from tests.support.processes import Keys
from tests.support.sync import E2E, GC_CLIENT_ID, GC_CLIENT_SECRET, SP_ID, make_qbo

pytestmark = pytest.mark.e2e

# Where a run finds its kubeconfig: mounted read-only into the tmpfs, as a Secret volume would be.
KUBECONFIG = "/tmp/kube/config"
StartContainer = Callable[..., Container]


def lock_pins() -> dict[str, str]:
    """name → version of every package requirements/runtime.lock pins."""
    text = (ROOT / "requirements" / "runtime.lock").read_text()
    return {m[1].lower().replace("_", "-"): m[2] for m in re.finditer(r"^([A-Za-z0-9_.-]+)==(\S+)", text, re.M)}


# A probe run inside the image with its own python3: what the process sees and what the image holds.
PROBE = r"""
import importlib.metadata as md, importlib.util, json, os, shutil, sys
def writable(path):
    try:
        with open(os.path.join(path, ".probe"), "w"):
            pass
        return True
    except OSError:
        return False
status = dict(line.split(":", 1) for line in open("/proc/self/status"))
import qbo_operator
package = os.path.dirname(qbo_operator.__file__)
print(json.dumps({
    "uid": os.getuid(), "gid": os.getgid(), "groups": os.getgroups(), "cwd": os.getcwd(), "pid": os.getpid(),
    "cap_eff": status["CapEff"].strip(), "no_new_privs": status["NoNewPrivs"].strip(),
    "writable": {p: writable(p) for p in ("/", "/etc", "/opt/venv", package, "/tmp")},
    "home": os.environ.get("HOME"),
    "executable": sys.executable,
    "modules": {m: importlib.util.find_spec(m) is not None for m in ("pip", "ensurepip", "setuptools", "tests")},
    "tools": {t: shutil.which(t) for t in ("pip", "pip3", "gcc", "cc", "make")},
    "distributions": sorted(f"{d.metadata['Name'].lower().replace('_', '-')}=={d.version}" for d in md.distributions()),
    "templates": sorted(os.listdir(os.path.join(package, "gateway", "templates"))),
    "uncompiled": [os.path.join(r, f) for r, _, fs in os.walk(package) for f in fs
                   if f.endswith(".py") and not os.path.exists(importlib.util.cache_from_source(os.path.join(r, f)))],
}))
"""


def test_version_and_help(image: Image) -> None:
    version = image.run("--version")
    assert (version.returncode, version.stdout.strip()) == (0, f"qbo-operator {__version__}"), version.stderr
    for args in (["--help"], []):  # no arguments: the image's CMD, --help
        shown = image.run(*args)
        assert shown.returncode == 0, shown.stderr
        assert shown.stdout.startswith("usage: qbo-operator"), shown.stdout
        for command in ("run", "gateway", "sync"):
            assert re.search(rf"^\s+{command}\s", shown.stdout, re.M), f"{command} missing from:\n{shown.stdout}"


def test_runs_as_65532_on_a_read_only_root_holding_only_the_locked_runtime(image: Image) -> None:
    probe = image.run("-c", PROBE, entrypoint="python3")
    assert probe.returncode == 0, probe.stderr
    seen = json.loads(probe.stdout)
    # The process: the image's user, no supplementary groups, no capabilities, no privilege escalation,
    # PID 1 of its own PID namespace, in the image's WORKDIR; only /tmp takes writes.
    assert (seen["uid"], seen["gid"], seen["groups"]) == (65532, 65532, [])
    assert (seen["cap_eff"], seen["no_new_privs"], seen["pid"]) == ("0000000000000000", "1", 1)
    assert (seen["cwd"], seen["home"], seen["executable"]) == ("/tmp", "/tmp", "/opt/venv/bin/python3")
    assert seen["writable"] == {p: p == "/tmp" for p in seen["writable"]}
    # The content: no pip, no compiler, no tests; the templates; every module compiled at build time.
    assert seen["modules"] == {"pip": False, "ensurepip": False, "setuptools": False, "tests": False}
    assert seen["tools"] == {t: None for t in seen["tools"]}
    assert {"base.html", "connect.html", "connected.html", "result.html"} <= set(seen["templates"])
    assert seen["uncompiled"] == []
    # Exactly requirements/runtime.lock, and the project: no test or harness-only extra came along.
    expected = sorted([*(f"{n}=={v}" for n, v in lock_pins().items()), f"qbo-operator=={__version__}"])
    assert seen["distributions"] == expected


# --- sync --dry-run ------------------------------------------------------------------------------------------


@dataclass
class ImageSync(E2E):
    """The sync end-to-end set-up, with `qbo-operator sync` run from the image instead of the virtualenv."""

    image: Image | None = None

    async def start(self, *args: str, measure_rss: bool = False, **env: str) -> asyncio.subprocess.Process:
        assert self.image is not None and not measure_rss
        values = {k: v for k, v in self.env(**env).items() if k not in ("PATH", "HOME")}
        values["KUBECONFIG"] = KUBECONFIG
        cmd = self.image.command(
            "sync", "--namespace", self.namespace, "--name", self.name, *args,
            env=values, files={KUBECONFIG: self.cluster.kubeconfig},
        )  # fmt: skip
        return await asyncio.create_subprocess_exec(
            *cmd, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE, stdin=asyncio.subprocess.DEVNULL
        )


@asynccontextmanager
async def sync_environment(cluster: ControlPlane, namespace: str, image: Image) -> AsyncIterator[ImageSync]:
    """Both sandboxes serving on loopback; connectedAt is the CreateTime of the middle history payment."""
    qbo = make_qbo()
    realm = qbo.add_company("Acme Dispensary", seed=5, payments=40, history_days=10)
    history = sorted(parse_time(p["MetaData"]["CreateTime"]) for p in qbo.companies[realm].payments.values())
    connected_at = history[len(history) // 2].astimezone(UTC)
    gc = GreenCheckSandbox(GC_CLIENT_ID, GC_CLIENT_SECRET, SP_ID)
    async with qbo.serve(), gc.serve() as gc_url:
        yield ImageSync(cluster, namespace, qbo, gc, gc_url, realm=realm, connected_at=connected_at, image=image)


async def test_sync_dry_run_prints_the_expected_records(cluster: ControlPlane, namespace: str, image: Image) -> None:
    async with sync_environment(cluster, namespace, image) as e:
        e.create_integration()
        expected = e.add_payments(60, seed=9)
        assert expected
        run = await e.sync("--dry-run")
        assert run.rc == 0, run.stderr
        printed = [r for line in run.stdout.splitlines() for r in json.loads(line)["records"]]  # payment sets
        assert {r["external_id"] for r in printed} == set(expected)
        assert all(r["payment"]["amount"] == expected[r["external_id"]]["amount"] for r in printed)
        assert sum(v for k, v in e.gc.requests.items() if k != "control") == 0
        assert "lastSync" not in e.status()
        e.assert_no_secrets_leaked()


# --- gateway -------------------------------------------------------------------------------------------------


def test_gateway_answers_health_and_renders_the_connect_page(
    cluster: ControlPlane, namespace: str, image: Image, run_image: StartContainer, tmp_path: Path
) -> None:
    keys, port = Keys(), free_port()
    base = f"http://127.0.0.1:{port}"
    env = {
        "KUBECONFIG": KUBECONFIG,
        "QBO_CLIENT_ID": keys.client_id,
        "QBO_CLIENT_SECRET": keys.client_secret,
        "QBO_WEBHOOK_VERIFIER_TOKEN": keys.verifier_token,
        "QBO_STATE_SIGNING_KEY": keys.signing_key,
        "QBO_GATEWAY_URL": base,
        "QBO_REDIRECT_URI": f"{base}/oauth/callback",
        "QBO_AUTH_URL": "http://127.0.0.1:9/connect/oauth2",
        "QBO_TOKEN_URL": "http://127.0.0.1:9/oauth2/v1/tokens/bearer",
    }
    gateway = run_image(
        "gateway", "--host", "127.0.0.1", "--port", str(port),
        env=env, files={KUBECONFIG: cluster.kubeconfig}, log=tmp_path / "gateway.log",
    )  # fmt: skip

    def answers(path: str) -> bool:
        try:
            return httpx.get(base + path, timeout=2).status_code == 200
        except httpx.HTTPError:
            return False

    wait_until("the gateway's /readyz", lambda: answers("/readyz"), gateway)
    assert answers("/healthz")

    obj = create_integration(cluster, namespace, "acme", company_name="Acme Dispensary")
    link = signing.connect_link(
        base, keys.signing_key, namespace, "acme", obj["metadata"]["uid"], int(time.time()) + 600
    )
    page = httpx.get(link, timeout=10)
    assert page.status_code == 200, gateway.output()[-3000:]
    assert "Connect Acme Dispensary to Green Check" in page.text
    assert 'method="post"' in page.text and "</html>" in page.text.lower()
    gateway.assert_running()
    assert gateway.stop() == 0, gateway.output()[-3000:]


# --- run -----------------------------------------------------------------------------------------------------

OPERATOR_NAMESPACE = "qbo-system"


def test_run_reconciles_an_integration_to_pending(
    cluster: ControlPlane, namespace: str, image: Image, run_image: StartContainer, tmp_path: Path
) -> None:
    cluster.kubectl("create", "namespace", OPERATOR_NAMESPACE, check=False)
    docs, account = render_chart_rbac(cluster, OPERATOR_NAMESPACE)
    apply(cluster, *docs)
    kubeconfig = cluster.service_account_kubeconfig(OPERATOR_NAMESPACE, account)
    health = free_port()
    qbo = QboSandbox("ABimage-test-client", "qbo-client-secret-image-4f1e", "http://127.0.0.1:8000/oauth/callback")
    with qbo.serve_in_thread():
        env = {
            "KUBECONFIG": KUBECONFIG,
            "QBO_CLIENT_ID": "ABimage-test-client",
            "QBO_CLIENT_SECRET": "qbo-client-secret-image-4f1e",
            "QBO_STATE_SIGNING_KEY": "signing-key-for-image-tests-0123456789abcdef",
            "QBO_GATEWAY_URL": "https://qbo.example.test",
            "QBO_TOKEN_URL": qbo.token_url,
            "QBO_REVOKE_URL": qbo.revoke_url,
            "QBO_API_URL": qbo.api_url,
            "GREENCHECK_API_URL": f"http://127.0.0.1:{free_port()}",
            "GREENCHECK_CLIENT_ID": "greencheck-client-image",
            "GREENCHECK_CLIENT_SECRET": "greencheck-client-secret-image",
            "GREENCHECK_SERVICE_PROVIDER_ID": "sp-image-tests",
            "QBO_SYNC_IMAGE": "localhost/qbo-operator:dev",
        }
        operator = run_image(
            "run", "--standalone", "--namespace", namespace, "--bind-address=127.0.0.1",
            f"--health-port={health}", f"--metrics-port={free_port()}",
            env=env, files={KUBECONFIG: kubeconfig}, log=tmp_path / "operator.log",
        )  # fmt: skip

        def healthy() -> bool:
            try:
                return httpx.get(f"http://127.0.0.1:{health}/healthz", timeout=2).status_code == 200
            except httpx.HTTPError:
                return False

        wait_until("the operator's /healthz", healthy, operator)
        apply(cluster, integration(namespace, "acme", companyName="Acme Dispensary"))
        obj = wait_until(
            "Pending",
            lambda: settled(cluster, namespace, "acme", "Pending", Connected="AwaitingAuthorization"),
            operator,
        )
        assert obj["status"]["authorizationURL"].startswith(f"https://qbo.example.test/connect/{namespace}/acme?")
        # Deleted while the operator runs, so its finalizer goes with it; then SIGTERM stops it cleanly.
        cluster.kubectl("delete", "qbi", "acme", "-n", namespace, "--wait=true", "--timeout=60s")
        assert operator.stop() == 0, operator.output()[-3000:]
