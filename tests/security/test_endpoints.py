"""Endpoint overrides (issue 17, finding 11): https, or plain http to a loopback host only (the local
sandboxes), for every override variable, the revoke URL included, and for the endpoints a discovery
document names. Anything else is one clear configuration line naming the variable."""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from http.server import BaseHTTPRequestHandler, HTTPServer

import pytest

from qbo_operator.core.config import ConfigError, load_settings
from qbo_operator.core.endpoints import RULE, insecure, is_loopback
from tests.support.config import GOOD

OVERRIDES = ("GREENCHECK_API_URL", "QBO_AUTH_URL", "QBO_TOKEN_URL", "QBO_REVOKE_URL", "QBO_API_URL")

URL_TABLE: list[tuple[str, bool]] = [
    # (url, accepted)
    ("https://api.example.com", True),
    ("https://10.0.0.5:8443/v3", True),
    ("http://127.0.0.1:8080", True),
    ("http://127.8.9.10/x", True),  # all of 127.0.0.0/8
    ("http://[::1]:9000", True),
    ("http://localhost:9000", True),
    ("http://LOCALHOST.:9000", True),
    ("http://api.example.com", False),
    ("http://10.0.0.5:8080", False),
    ("http://128.0.0.1", False),
    ("http://[::2]:9000", False),
    ("http://localhost.example.com", False),
    ("http://127.0.0.1.nip.io", False),
    ("http://qbo-sandbox.qbo-system.svc:8080", False),  # in the cluster is not on this machine
]


@pytest.mark.parametrize(("url", "accepted"), URL_TABLE)
def test_endpoint_table(url: str, accepted: bool) -> None:
    assert (insecure("X", url) is None) is accepted


@pytest.mark.parametrize(("host", "loopback"), [("127.0.0.1", True), ("::1", True), ("localhost", True),
                                                (None, False), ("", False), ("example.com", False)])  # fmt: skip
def test_is_loopback(host: str | None, loopback: bool) -> None:
    assert is_loopback(host) is loopback


@pytest.mark.parametrize("var", OVERRIDES)
@pytest.mark.parametrize(("url", "accepted"), [URL_TABLE[0], URL_TABLE[2], URL_TABLE[7], URL_TABLE[13]])
def test_every_override_is_https_unless_loopback(var: str, url: str, accepted: bool) -> None:
    env = {**GOOD, var: url}
    if accepted:
        load_settings("sync", env)
        return
    with pytest.raises(ConfigError) as err:
        load_settings("sync", env)
    assert err.value.problems == [f"{var}={url!r} must be an https URL: {RULE}"]


def test_our_own_public_url_is_not_an_endpoint_override() -> None:
    """The gateway's URL is what people open; the chart's preflight asks for https there (tests/chart)."""
    env = {**GOOD, "QBO_GATEWAY_URL": "http://qbo.example.com", "QBO_REDIRECT_URI": "http://qbo.example.com/cb"}
    assert load_settings("gateway", env).qbo_gateway_url == "http://qbo.example.com"


@contextmanager
def discovery(document: dict[str, str]) -> Iterator[str]:
    body = json.dumps(document).encode()

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            self.send_response(200)
            self.send_header("Content-Type", "application/json")
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args: object) -> None:
            return None

    server = HTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_port}/.well-known/openid_configuration"
    finally:
        server.shutdown()
        thread.join(5)


def test_endpoints_from_the_discovery_document_are_checked_too() -> None:
    document = {
        "authorization_endpoint": "https://appcenter.example.com/connect/oauth2",
        "token_endpoint": "http://oauth.example.com/tokens/bearer",
        "revocation_endpoint": "ftp://oauth.example.com/revoke",
    }
    with discovery(document) as url, pytest.raises(ConfigError) as err:
        load_settings("sync", {**GOOD, "QBO_DISCOVERY_URL": url})
    assert err.value.problems == [
        f"QBO_TOKEN_URL (from QBO_DISCOVERY_URL)='http://oauth.example.com/tokens/bearer' must be an https URL: {RULE}",
        "QBO_REVOKE_URL (from QBO_DISCOVERY_URL)='ftp://oauth.example.com/revoke' is not an http(s) URL",
    ]
    loopback = {k: "http://127.0.0.1:9/x" for k in document}
    with discovery(loopback) as url:
        assert load_settings("sync", {**GOOD, "QBO_DISCOVERY_URL": url}).qbo_revoke_url == "http://127.0.0.1:9/x"
