"""The secret-hygiene scan with every process at its most verbose level (issue 17, finding 5): the operator with
`-v`, the gateway with `--log-level DEBUG` and the sync with QBO_LOG_LEVEL=DEBUG. A Connect, a sync and a
deletion with revocation at Intuit go through the whole product, and no secret value it used appears in
anything it wrote: the HTTP and Kubernetes client libraries log headers, token answers and Secret bodies at
DEBUG, and core.logging keeps them below WARNING silent in every process."""

from __future__ import annotations

import contextlib
import logging
from pathlib import Path

import pytest

from qbo_operator.core import names
from qbo_operator.core.logging import QuietClients
from qbo_operator.harness.controlplane import ControlPlane
from qbo_operator.harness.localstack import SYSTEM_NAMESPACE, LocalStack
from tests.support.ledger import SECRETS, Report, SecretLedger, snapshot_cluster
from tests.support.objects import COMPANY_IDS
from tests.support.stack import Product

NAMESPACE = "verbose-tenant"


def start_verbose(stack: LocalStack) -> None:
    """The gateway and the operator as LocalStack starts them, each at its most verbose level."""
    for name, args in (
        ("gateway", ["gateway", "--host", "127.0.0.1", "--port", str(stack.gateway_port), "--log-level", "DEBUG"]),
        (
            "operator",
            ["run", "--standalone", "--all-namespaces", "-v", "--health-port", str(stack.operator_health_port),
             "--metrics-port", str(stack.operator_metrics_port)],
        ),
    ):  # fmt: skip
        kubeconfig = stack.cp.service_account_kubeconfig(SYSTEM_NAMESPACE, stack.service_account(name))
        env = {**stack.base_env(), "KUBECONFIG": str(kubeconfig), "POD_NAMESPACE": SYSTEM_NAMESPACE}
        stack.spawn(name, args, env)
    stack.wait_http("gateway", f"{stack.gateway_url}/readyz", timeout=90)
    stack.wait_http("operator", f"http://127.0.0.1:{stack.operator_health_port}/healthz", timeout=90)


def test_no_secret_appears_with_every_process_at_its_most_verbose_level(
    cluster: ControlPlane, tmp_path: Path, report: Report
) -> None:
    if not cluster.local:
        pytest.skip("needs the local control plane's test kubelet")
    stack = LocalStack(cluster, tmp_path / "verbose")
    p = Product(stack, cluster)
    ledger = SecretLedger()
    metrics, realm = "", "no realm yet"
    try:
        stack.start_sandboxes("Verbose Dispensary", history=10, seed=17)
        realm = stack.qbo_state()["realms"][0]["realmId"]
        stack.install_chart()
        start_verbose(stack)
        p.create_integration(NAMESPACE, "verbose", COMPANY_IDS[0])
        p.connect(NAMESPACE, "verbose", realm)
        tokens = [p.token_secret(NAMESPACE, "verbose")]  # as the gateway stored them (the sync rotates them)
        run = p.kubelet.run(SYSTEM_NAMESPACE, p.request_sync(NAMESPACE, "verbose", "first"), QBO_LOG_LEVEL="DEBUG")
        assert run.exit_code == 0, (run.stdout + run.stderr)[-2000:]
        tokens.append(p.token_secret(NAMESPACE, "verbose"))
        metrics = p.metrics()
        cluster.kubectl("delete", names.PLURAL, "verbose", "-n", NAMESPACE, "--wait=true", "--timeout=90s")
    finally:
        logs = stack.workdir / "logs"
        with contextlib.suppress(Exception):
            ledger.add_text("metrics", metrics or p.metrics())
        p.register_for_hygiene("verbose hygiene")
        p.clean_up()
        stack.stop()

    ledger.add_secrets(stack.creds.secret_values(), "client secret or signing key")
    for data in tokens:
        for key in ("access_token", "refresh_token"):
            ledger.add_secret(data.get(key), f"QBO {key}")
            SECRETS.add_secret(data.get(key), f"QBO {key} (verbose hygiene)")
    ledger.add_dir(logs)
    snapshot_cluster(cluster, "verbose hygiene")
    texts = ledger.sources()
    debug_lines = sum(text.count("DEBUG") + text.count('"level": "debug"') for text in texts.values())
    hits = ledger.scan()
    report.row(
        "secret hygiene",
        "every process at its most verbose level",
        tried=f"{len(ledger.values)} values x {len(texts)} sources",
        held=f"{len(hits)} leaks",
        kind="attack",
    )
    assert debug_lines > 0, "no process logged at DEBUG: the scan would prove nothing"
    where = "\n".join(f"  {h.label} in {h.source}" for h in hits[:40])
    assert hits == [], f"{len(hits)} secret leaks at DEBUG (values never printed):\n{where}"
    assert "qbo_integration_info{" in metrics and realm not in metrics  # no realm ids on /metrics by default


QUIET_TABLE: list[tuple[str, int, bool]] = [
    # (logger, level, reaches the log)
    ("requests_oauthlib.oauth2_session", logging.DEBUG, False),
    ("oauthlib.oauth2.rfc6749", logging.INFO, False),
    ("urllib3.connectionpool", logging.DEBUG, False),
    ("httpx", logging.INFO, False),
    ("httpcore.http11", logging.DEBUG, False),
    ("kubernetes_asyncio.client.rest", logging.DEBUG, False),
    ("aiohttp.client", logging.DEBUG, False),
    ("kubernetes_asyncio.client.rest", logging.WARNING, True),  # a warning still says something went wrong
    ("urllib3.connectionpool", logging.ERROR, True),
    ("httpx_extra", logging.DEBUG, True),  # a prefix of the name is not the logger
    ("aiohttp.server", logging.DEBUG, True),
    ("qbo_operator.gateway.connect", logging.DEBUG, True),
    ("kopf.objects", logging.DEBUG, True),
]


@pytest.mark.parametrize(("logger", "level", "reaches"), QUIET_TABLE)
def test_the_client_libraries_are_quiet_below_warning(logger: str, level: int, reaches: bool) -> None:
    record = logging.LogRecord(logger, level, __file__, 1, "message", None, None)
    assert QuietClients().filter(record) is reaches
