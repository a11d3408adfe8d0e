"""Conformance: Intuit's own Python client (`intuit-oauth`) and our requests-oauthlib module work
against the sandbox unchanged, given only the sandbox's discovery URL or endpoints."""

from __future__ import annotations

from urllib.parse import parse_qs, urlsplit

import pytest
import requests
from intuitlib.client import AuthClient  # type: ignore[import-untyped]
from intuitlib.enums import Scopes  # type: ignore[import-untyped]
from intuitlib.exceptions import AuthClientError  # type: ignore[import-untyped]

from qbo_operator.core import oauth
from qbo_operator.core.config import Settings
from qbo_operator.harness.sandbox.qbo import QboSandbox
from tests.support.sandbox import CLIENT_ID, CLIENT_SECRET, REDIRECT_URI, FakeClock, realm_of


def approve_in_form(authorization_url: str, realm: str) -> dict[str, str]:
    """Submit the consent form with a plain HTTP POST, as a browser's Approve button would."""
    page = requests.get(authorization_url, timeout=10)
    assert page.status_code == 200
    parts = urlsplit(authorization_url)
    form = {k: v[0] for k, v in parse_qs(parts.query).items()}
    resp = requests.post(
        f"{parts.scheme}://{parts.netloc}{parts.path}",
        data={**form, "realmId": realm, "decision": "approve"},
        allow_redirects=False,
        timeout=10,
    )
    assert resp.status_code == 302
    return {k: v[0] for k, v in parse_qs(urlsplit(resp.headers["Location"]).query).items()}


@pytest.mark.parametrize(
    "discovery", ["/.well-known/openid_configuration/", "/.well-known/openid_sandbox_configuration"]
)
def test_intuitlib_full_flow_unchanged(sandbox: QboSandbox, clock: FakeClock, discovery: str) -> None:
    realm = realm_of(sandbox)
    with sandbox.serve_in_thread() as base:
        client = AuthClient(CLIENT_ID, CLIENT_SECRET, REDIRECT_URI, environment=base + discovery)
        assert client.token_endpoint == sandbox.token_url
        url = client.get_authorization_url([Scopes.ACCOUNTING])
        assert url.startswith(sandbox.auth_url + "?")
        callback = approve_in_form(url, realm)
        assert callback["state"] == client.state_token
        client.get_bearer_token(callback["code"], realm_id=callback["realmId"])
        assert client.realm_id == realm
        assert client.expires_in == 3600 and client.x_refresh_token_expires_in == 8726400
        first_access, first_refresh = client.access_token, client.refresh_token

        # The access token works on the Accounting API.
        info = requests.get(
            f"{sandbox.api_url}/v3/company/{realm}/companyinfo/{realm}",
            params={"minorversion": "75"},
            headers={"Authorization": f"Bearer {client.access_token}", "Accept": "application/json"},
            timeout=10,
        )
        assert info.status_code == 200
        assert info.json()["CompanyInfo"]["CompanyName"] == "Acme Dispensary"

        clock.advance(7200)
        client.include_refresh_token_hard_expires_in = True
        client.refresh()
        assert client.access_token != first_access
        assert client.refresh_token == first_refresh
        assert client.x_refresh_token_expires_in == 8726400 - 7200
        assert client.x_refresh_token_hard_expires_in == 5 * 365 * 86400 - 7200

        clock.advance(86400)
        client.refresh()
        assert client.refresh_token != first_refresh
        with pytest.raises(AuthClientError) as err:
            client.refresh(refresh_token=first_refresh)
        assert err.value.status_code == 400 and err.value.intuit_tid

        assert client.revoke() is True
        with pytest.raises(AuthClientError) as err:
            client.refresh()
        assert err.value.status_code == 400
        assert b"invalid_grant" in err.value.content


def test_intuitlib_reports_invalid_client(sandbox: QboSandbox) -> None:
    with sandbox.serve_in_thread() as base:
        client = AuthClient(CLIENT_ID, "wrong", REDIRECT_URI, environment=base + "/.well-known/openid_configuration")
        with pytest.raises(AuthClientError) as err:
            client.refresh(refresh_token="AB11nothing")
    assert err.value.status_code == 401 and err.value.intuit_tid


def test_our_oauth_module_against_the_sandbox(
    sandbox: QboSandbox, clock: FakeClock, monkeypatch: pytest.MonkeyPatch
) -> None:
    """qbo_operator.core.oauth (requests-oauthlib) exchanges, refreshes through a rotation, and revokes."""
    monkeypatch.setenv("OAUTHLIB_INSECURE_TRANSPORT", "1")  # plain http on loopback
    realm = realm_of(sandbox)
    with sandbox.serve_in_thread():
        settings = Settings(
            qbo_client_id=CLIENT_ID,
            qbo_client_secret=CLIENT_SECRET,
            qbo_redirect_uri=REDIRECT_URI,
            qbo_auth_url=sandbox.auth_url,
            qbo_token_url=sandbox.token_url,
            qbo_revoke_url=sandbox.revoke_url,
        )
        callback = approve_in_form(oauth.authorization_url(settings, "state-1"), realm)
        tokens = oauth.exchange_code(settings, callback["code"])
        assert tokens.x_refresh_token_hard_expires_in == 5 * 365 * 86400
        clock.advance(86400)
        rotated = oauth.refresh(settings, tokens.refresh_token)
        assert rotated.refresh_token != tokens.refresh_token
        with pytest.raises(oauth.OAuthError) as err:
            oauth.refresh(settings, tokens.refresh_token)
        assert err.value.dead_grant
        oauth.revoke(settings, rotated.refresh_token)
        with pytest.raises(oauth.OAuthError) as err:
            oauth.refresh(settings, rotated.refresh_token)
        assert err.value.error == "invalid_grant"
