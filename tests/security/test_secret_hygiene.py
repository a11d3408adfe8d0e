"""Secret hygiene. The check itself is session-level (tests/conftest.py `secret_hygiene`): every
token, client secret and signing key a stack of these suites used is searched for in everything the
stacks produced (process logs, sync output, Events, every CR status, /metrics, exception texts) once the
session ends, and any hit fails the run. These tests prove the scanner finds what it must, so a clean
result means something, and check the product's own secret-bearing types and messages directly."""

from __future__ import annotations

import base64
import json
import threading
from datetime import UTC, datetime, timedelta
from http.server import BaseHTTPRequestHandler, HTTPServer
from pathlib import Path

from pydantic import SecretStr

from qbo_operator.core import oauth
from qbo_operator.core.config import ConfigError, Settings, load_settings
from qbo_operator.core.models import Tokens, TokenSecretError
from tests.support.ledger import SECRETS, Report, SecretLedger

ACCESS = "eyJlbmMiOiJBMTI4Q0JDLUhTMjU2IiwiYWxnIjoiZGlyIn0..planted-access-token-value-0123456789"
REFRESH = "AB11764633600planted-refresh-token-value"


def test_the_scanner_finds_a_planted_secret_in_every_kind_of_source(tmp_path: Path) -> None:
    ledger = SecretLedger()
    ledger.add_secret(ACCESS, "access token")
    ledger.add_secret(REFRESH, "refresh token")
    ledger.add_secret("short", "too short to be a secret")  # ignored: would match by accident
    log = tmp_path / "operator.log"
    log.write_text(f"line one\nrefreshing with {REFRESH} now\n")
    ledger.add_file(log)
    ledger.add_text("status", json.dumps({"message": f"token {ACCESS}"}))
    ledger.add_text("events", json.dumps([{"message": 'quoted "' + REFRESH + '"'}]))
    ledger.add_text("metrics", 'qbo_x{label="fine"} 1\n')
    hits = {(h.source, h.label) for h in ledger.scan()}
    assert hits == {(str(log), "refresh token"), ("status", "access token"), ("events", "refresh token")}
    assert all(h.label != "too short to be a secret" for h in ledger.scan())


def test_a_clean_source_has_no_hit_and_the_final_scan_runs_once(tmp_path: Path) -> None:
    ledger = SecretLedger()
    ledger.add_secret(ACCESS, "access token")
    ledger.add_text("log", "nothing to see " + ACCESS[:20])
    assert ledger.scan() == []
    assert ledger.final_scan() == [] and ledger.scanned
    ledger.add_text("late", ACCESS)
    assert ledger.final_scan() == []  # once per session: later additions belong to no one
    assert ledger.scan() != []


def test_token_values_never_reach_repr_or_errors() -> None:
    now = datetime.now(UTC)
    tokens = Tokens(
        access_token=ACCESS, refresh_token=REFRESH, realm_id="9130355357483456", scope="s", connected_at=now,
        expires_at=now + timedelta(hours=1), refresh_token_expires_at=now + timedelta(days=100),
    )  # fmt: skip
    assert ACCESS not in repr(tokens) and REFRESH not in repr(tokens) and REFRESH not in str(tokens)
    data = tokens.to_secret_data()
    data["expires_at"] = base64.b64encode(b"not a time " + REFRESH.encode()).decode()
    try:
        Tokens.from_secret_data(data)
    except TokenSecretError as exc:
        message = str(exc)
    assert "expires_at" in message and REFRESH not in message


def test_configuration_errors_name_the_variable_not_its_value() -> None:
    secret = "client-secret-value-that-must-not-show"
    env = {"QBO_CLIENT_ID": "id", "QBO_CLIENT_SECRET": secret, "QBO_STATE_SIGNING_KEY": "x" * 3}
    try:
        load_settings("gateway", env)
    except ConfigError as exc:
        text = "\n".join(exc.problems)
    assert text and secret not in text


def test_oauth_errors_carry_no_token_a_token_endpoint_echoes() -> None:
    """An error answer from the token endpoint that echoes the refresh token (in its description, or as a
    page that is not JSON) is reduced to what happened: the exception never carries the token."""
    answers = [
        (400, "application/json", json.dumps({"error": "invalid_grant", "error_description": f"bad token {REFRESH}"})),
        (502, "text/html", f"<html><title>Bad Gateway</title><body>refresh_token={REFRESH}</body></html>"),
        (200, "application/json", json.dumps({"access_token": ACCESS, "refresh_token": REFRESH})),  # fields missing
    ]
    for status, ctype, body in answers:
        server = HTTPServer(("127.0.0.1", 0), _echo_handler(status, ctype, body))
        thread = threading.Thread(target=server.serve_forever, daemon=True)
        thread.start()
        try:
            settings = Settings(
                qbo_client_id="id",
                qbo_client_secret=SecretStr("client-secret-for-echo-test"),
                qbo_token_url=f"http://127.0.0.1:{server.server_port}/oauth2/v1/tokens/bearer",
            )
            try:
                oauth.refresh(settings, REFRESH)
            except oauth.OAuthError as exc:
                message = f"{exc} {exc.error} {exc!r}"
            else:
                raise AssertionError(f"HTTP {status} was taken for a token answer")
        finally:
            server.shutdown()
            thread.join(5)
        assert REFRESH not in message and ACCESS not in message and "client-secret-for-echo-test" not in message


def _echo_handler(status: int, ctype: str, body: str) -> type[BaseHTTPRequestHandler]:
    class Echo(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            self.rfile.read(int(self.headers.get("Content-Length", "0")))
            self.send_response(status)
            self.send_header("Content-Type", ctype)
            self.end_headers()
            self.wfile.write(body.encode())

        def log_message(self, *args: object) -> None:
            return None

    return Echo


def test_no_secret_a_stack_used_appears_in_anything_it_produced(report: Report) -> None:
    """The scan, once every stack of tests/reliability and tests/security before this module has run (it
    runs again at the session's end for what comes later, e.g. when only tests/reliability is run)."""
    hits = SECRETS.final_scan()
    report.row(
        "secret hygiene",
        "secret values searched for in captured output",
        tried=f"{len(SECRETS.values)} values x {len(SECRETS.sources())} sources",
        held=f"{len(hits)} leaks",
    )
    where = "\n".join(f"  {h.label} in {h.source}" for h in hits[:40])
    assert hits == [], f"{len(hits)} secret leaks (values never printed):\n{where}"
