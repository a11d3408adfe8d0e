"""/readyz follows the API server; the gateway works under its own least-privilege ServiceAccount."""

from __future__ import annotations

import subprocess
import time
from pathlib import Path

import httpx

from qbo_operator.harness.controlplane import ControlPlane
from tests.support.connect import connect_via_http, heading, new_company
from tests.support.kube import (
    audit,
    create_integration,
    events_text,
    gateway_service_account,
    kubeconfig_via,
    secret_or_none,
    set_status,
    webhook_count,
)
from tests.support.objects import decoded
from tests.support.paths import QBO_OPERATOR
from tests.support.processes import GatewayFactory, Keys, StackFactory
from tests.support.proxies import TcpProxy
from tests.support.wait import wait_for
from tests.support.webhooks import cloudevent, dumps


def test_readyz_fails_while_the_api_server_is_unreachable_and_nothing_is_lost(
    cluster: ControlPlane, namespace: str, gateway_factory: GatewayFactory, keys: Keys, tmp_path: Path
) -> None:
    realm = "7700" + str(time.time_ns())[-12:]
    create_integration(cluster, namespace, "acme")
    set_status(cluster, namespace, "acme", {"realmId": realm})
    proxy = TcpProxy(cluster.api_port).start()
    kubeconfig = kubeconfig_via(cluster.kubeconfig, proxy.port, tmp_path / "via-proxy.kubeconfig")
    gw = gateway_factory(keys, kubeconfig=kubeconfig, args=["--webhook-flush-seconds", "0.3"])
    try:
        assert httpx.get(f"{gw.local}/readyz").status_code == 200

        proxy.stop()
        resp = wait_for(
            "/readyz 503", lambda: (r := httpx.get(f"{gw.local}/readyz", timeout=10)).status_code == 503 and r
        )
        assert "API server unreachable" in resp.text
        assert httpx.get(f"{gw.local}/healthz").status_code == 200  # alive, just not ready
        # Verified webhooks are still acknowledged at once; their counts wait in memory.
        for i in range(4):
            assert gw.post_webhook(dumps([cloudevent(realm, str(i))])).status_code == 200
        time.sleep(1)
        assert webhook_count(cluster, namespace, "acme") == 0

        proxy = TcpProxy(cluster.api_port, port=proxy.port).start()
        wait_for("ready", lambda: httpx.get(f"{gw.local}/readyz", timeout=10).status_code == 200, timeout=60)
        wait_for("counts written later", lambda: webhook_count(cluster, namespace, "acme") == 4, timeout=60)
        assert gw.metric("qbo_webhook_status_patches_total", result="failed") >= 1
    finally:
        proxy.stop()


def test_the_documented_role_is_sufficient(cluster: ControlPlane, namespace: str, stack_factory: StackFactory) -> None:
    """Connect, reconnect, a refused realm (Event), and webhook status writes, as the ServiceAccount
    `qbo-gateway` with only: quickbooksintegrations get/list/watch, quickbooksintegrations/status
    get/patch, secrets get/update (no create: the token Secret is the operator's), events create."""
    kubeconfig = gateway_service_account(cluster, namespace)
    s = stack_factory(
        kubeconfig=kubeconfig,
        gateway_args=["--namespace", namespace, "--webhook-flush-seconds", "0.3"],
        start_gateway=False,
    )
    realm = new_company(s.sb)
    other_realm = new_company(s.sb, "Someone Else Inc")
    obj = create_integration(cluster, namespace, "acme")
    link = s.gw.connect_link(namespace, "acme", obj["metadata"]["uid"])
    set_status(cluster, namespace, "acme", {"authorizationURL": link})
    s.gw.start()

    assert heading(connect_via_http(link, realm).text) == "QuickBooks is connected"  # Secret get + update, Event
    assert heading(connect_via_http(link, realm).text) == "QuickBooks is connected"  # Secret get + update
    secret = secret_or_none(cluster, namespace, "acme-qbo-tokens")
    assert secret is not None and decoded(secret)["realm_id"] == realm
    set_status(cluster, namespace, "acme", {"realmId": realm})
    wrong = connect_via_http(link, other_realm)
    assert heading(wrong.text) == "That is not the QuickBooks company connected before"  # Warning Event
    assert '"reason": "RealmMismatch"' in events_text(cluster, namespace)

    for i in range(3):
        assert s.gw.post_webhook(dumps([cloudevent(realm, str(i))])).status_code == 200
    wait_for("status patched by the ServiceAccount", lambda: webhook_count(cluster, namespace, "acme") == 3)
    assert httpx.get(f"{s.gw.local}/readyz").status_code == 200

    user = f"system:serviceaccount:{namespace}:qbo-gateway"
    calls = audit(cluster, namespace, user)
    denied = [
        (e["verb"], e["objectRef"].get("resource")) for e in calls if (e.get("responseStatus") or {}).get("code") == 403
    ]
    assert not denied, denied
    used = {(e["verb"], e["objectRef"]["resource"], e["objectRef"].get("subresource", "")) for e in calls}
    assert {
        ("list", "quickbooksintegrations", ""),
        ("watch", "quickbooksintegrations", ""),
        ("get", "quickbooksintegrations", ""),
        ("patch", "quickbooksintegrations", "status"),
        ("get", "secrets", ""),
        ("update", "secrets", ""),
        ("create", "events", ""),
    } <= used
    # the audit above is this namespace's; the coverage heartbeat at home would log an HTTP 403 if refused
    assert "Forbidden" not in s.gw.log() and "HTTP 403" not in s.gw.log()


def test_unwatched_namespaces_are_invisible(
    cluster: ControlPlane, namespace: str, gateway_factory: GatewayFactory, keys: Keys
) -> None:
    realm = "7711" + str(time.time_ns())[-12:]
    obj = create_integration(cluster, namespace, "acme")
    set_status(cluster, namespace, "acme", {"realmId": realm})
    gw = gateway_factory(keys, args=["--namespace", "somewhere-else", "--webhook-flush-seconds", "0.3"])
    resp = httpx.get(gw.connect_link(namespace, "acme", obj["metadata"]["uid"]))
    assert (resp.status_code, heading(resp.text)) == (403, "This Connect link is not valid")
    assert gw.post_webhook(dumps([cloudevent(realm, "1")])).status_code == 200
    assert gw.metric("qbo_webhook_requests_total", result="unknown_realm") == 1


def test_metrics_label_requests_by_route_never_by_path(
    cluster: ControlPlane, namespace: str, gateway_factory: GatewayFactory, keys: Keys
) -> None:
    gw = gateway_factory(keys)
    for path in ("/connect/a/b?exp=1&sig=secret-looking", "/connect/c/d", "/oauth/callback?code=x", "/nope/x"):
        httpx.get(f"{gw.local}{path}")
    handlers = {dict(labels)["handler"] for (name, labels), _ in gw.metrics().items() if "handler" in dict(labels)}
    assert handlers <= {
        "connect",
        "connect_start",
        "oauth_callback",
        "webhook",
        "healthz",
        "readyz",
        "metrics",
        "favicon",
        "unmatched",
    }
    assert {"connect", "oauth_callback", "unmatched"} <= handlers
    assert "secret-looking" not in httpx.get(f"{gw.local}/metrics").text


def test_missing_configuration_fails_at_start_naming_each_variable(tmp_path: Path) -> None:
    result = subprocess.run(
        [QBO_OPERATOR, "gateway", "--port", "1"],
        env={"PATH": "/usr/bin:/bin", "QBO_CLIENT_ID": "x", "QBO_STATE_SIGNING_KEY": "short"},
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 2
    lines = result.stderr.strip().splitlines()
    for var in ("QBO_CLIENT_SECRET", "QBO_WEBHOOK_VERIFIER_TOKEN", "QBO_REDIRECT_URI", "QBO_GATEWAY_URL"):
        assert any(var in line for line in lines), result.stderr
    assert any("QBO_STATE_SIGNING_KEY must be at least" in line for line in lines)
    assert "short" not in result.stderr


def test_watch_namespaces_from_flags_or_environment() -> None:
    from qbo_operator.gateway.app import watch_namespaces

    assert watch_namespaces(["a", "b", "a"], {"QBO_WATCH_NAMESPACES": "x"}) == ("a", "b")
    assert watch_namespaces(None, {"QBO_WATCH_NAMESPACES": " x, y ,,"}) == ("x", "y")
    assert watch_namespaces(None, {}) == ()
