"""The sandbox's OAuth server over real HTTP: consent, code exchange, rotation, expiry, revoke (docs/qbo.md §1)."""

from __future__ import annotations

import re

import httpx
import pytest

from qbo_operator.harness.sandbox.qbo import QboSandbox
from tests.support.sandbox import (
    CLIENT_ID,
    CLIENT_SECRET,
    REDIRECT_URI,
    SCOPE,
    FakeClock,
    SandboxFactory,
    auth_params,
    connect,
    consent,
    realm_of,
    token_request,
)

TID = re.compile(r"^1-[0-9a-f]{8}-[0-9a-f]{24}$")


def refresh_body(token: str) -> dict[str, str]:
    return {"grant_type": "refresh_token", "refresh_token": token}


async def test_discovery_document_points_at_the_sandbox(sandbox: QboSandbox) -> None:
    async with sandbox.serve() as base, httpx.AsyncClient() as http:
        for path in (
            "/.well-known/openid_configuration",
            "/.well-known/openid_configuration/",
            "/.well-known/openid_sandbox_configuration",
            "/.well-known/openid_sandbox_configuration/",
        ):
            doc = (await http.get(base + path)).json()
            assert doc["authorization_endpoint"] == f"{base}/connect/oauth2"
            assert doc["token_endpoint"] == f"{base}/oauth2/v1/tokens/bearer"
            assert doc["revocation_endpoint"] == f"{base}/v2/oauth2/tokens/revoke"
            assert doc["token_endpoint_auth_methods_supported"] == ["client_secret_post", "client_secret_basic"]
        assert sandbox.discovery_url == f"{base}/.well-known/openid_configuration"
        assert sandbox.requests["discovery"] == 4


async def test_consent_page_lists_companies_and_approve_redirects_with_code(make_sandbox: SandboxFactory) -> None:
    sb = make_sandbox()
    acme = sb.add_company("Acme Dispensary", seed=1, payments=5)
    other = sb.add_company("Bridgetown Wholesale", seed=2, payments=5)
    async with sb.serve() as base, httpx.AsyncClient() as http:
        for path in ("/connect/oauth2", "/app/connect/oauth2"):
            page = await http.get(base + path, params=auth_params())
            assert page.status_code == 200
            assert "text/html" in page.headers["Content-Type"]
            for realm, name in ((acme, "Acme Dispensary"), (other, "Bridgetown Wholesale")):
                assert f'<option value="{realm}">{name} (realm {realm})</option>' in page.text
            assert SCOPE in page.text
            assert 'value="approve"' in page.text and 'value="deny"' in page.text
        query = await consent(http, base, other, state="s-1")
    assert query["state"] == "s-1" and query["realmId"] == other and query["code"].startswith("AB11")


async def test_deny_redirects_with_access_denied(sandbox: QboSandbox) -> None:
    async with sandbox.serve() as base, httpx.AsyncClient() as http:
        query = await consent(http, base, realm_of(sandbox), decision="deny", state="s-9")
    assert query == {"error": "access_denied", "state": "s-9"}
    assert sandbox.authority.codes == {}


@pytest.mark.parametrize(
    ("override", "message"),
    [
        ({"client_id": "someone-else"}, "invalid_client"),
        ({"redirect_uri": REDIRECT_URI + "/x"}, "invalid_redirect_uri"),
        ({"redirect_uri": "http://evil.example/oauth/callback"}, "invalid_redirect_uri"),
        ({"response_type": "token"}, "unsupported_response_type"),
        ({"scope": ""}, "invalid_scope"),
        ({"scope": "com.intuit.quickbooks.nonsense"}, "invalid_scope"),
        ({"scope": "openid email"}, "invalid_scope"),
        ({"state": ""}, "invalid_request"),
    ],
)
async def test_bad_authorize_requests_get_an_error_page_not_a_redirect(
    sandbox: QboSandbox, override: dict[str, str], message: str
) -> None:
    async with sandbox.serve() as base, httpx.AsyncClient() as http:
        get = await http.get(f"{base}/connect/oauth2", params=auth_params(**override))
        post = await http.post(
            f"{base}/connect/oauth2",
            data={**auth_params(**override), "realmId": realm_of(sandbox), "decision": "approve"},
        )
    for resp in (get, post):
        assert resp.status_code == 400
        assert "Location" not in resp.headers
        assert message in resp.text
    assert sandbox.authority.codes == {}


async def test_consent_post_refuses_unknown_realm_and_decision(sandbox: QboSandbox) -> None:
    async with sandbox.serve() as base, httpx.AsyncClient() as http:
        unknown = await http.post(
            f"{base}/connect/oauth2", data={**auth_params(), "realmId": "123", "decision": "approve"}
        )
        undecided = await http.post(
            f"{base}/connect/oauth2", data={**auth_params(), "realmId": realm_of(sandbox), "decision": "maybe"}
        )
    assert unknown.status_code == 400 and "no company" in unknown.text
    assert undecided.status_code == 400 and "Approve or Deny" in undecided.text
    assert sandbox.authority.codes == {}


async def test_code_exchange_basic_and_post_auth(sandbox: QboSandbox) -> None:
    async with sandbox.serve() as base, httpx.AsyncClient() as http:
        for basic in (True, False):
            query = await consent(http, base, realm_of(sandbox))
            resp = await token_request(
                http,
                base,
                {"grant_type": "authorization_code", "code": query["code"], "redirect_uri": REDIRECT_URI},
                basic=basic,
            )
            assert resp.status_code == 200, resp.text
            body = resp.json()
            assert set(body) == {
                "token_type",
                "access_token",
                "expires_in",
                "refresh_token",
                "x_refresh_token_expires_in",
            }
            assert body["token_type"] == "bearer"
            assert body["expires_in"] == 3600
            assert body["x_refresh_token_expires_in"] == 8726400
            assert resp.headers["Cache-Control"] == "no-store"
            assert TID.match(resp.headers["intuit_tid"])


async def test_code_is_single_use_and_bound_to_redirect_uri(make_sandbox: SandboxFactory) -> None:
    sb = make_sandbox(redirect_uri=[REDIRECT_URI, "http://127.0.0.1:8000/other"])
    realm = sb.add_company("Acme Dispensary", payments=3)
    async with sb.serve() as base, httpx.AsyncClient() as http:
        code = (await consent(http, base, realm))["code"]
        exchange = {"grant_type": "authorization_code", "code": code, "redirect_uri": REDIRECT_URI}
        first = await token_request(http, base, exchange)
        again = await token_request(http, base, exchange)
        assert first.status_code == 200
        assert again.status_code == 400 and again.json()["error"] == "invalid_grant"

        code = (await consent(http, base, realm))["code"]
        wrong = await token_request(
            http, base, {**exchange, "code": code, "redirect_uri": "http://127.0.0.1:8000/other"}
        )
        retry = await token_request(http, base, {**exchange, "code": code})
        assert wrong.status_code == 400 and wrong.json()["error"] == "invalid_grant"
        assert retry.status_code == 400, "a code is spent by the first attempt, even a failed one"
        missing = await token_request(http, base, {"grant_type": "authorization_code", "redirect_uri": REDIRECT_URI})
        assert missing.status_code == 400 and missing.json()["error"] == "invalid_grant"


async def test_code_expires(sandbox: QboSandbox, clock: FakeClock) -> None:
    async with sandbox.serve() as base, httpx.AsyncClient() as http:
        code = (await consent(http, base, realm_of(sandbox)))["code"]
        clock.advance(601)
        resp = await token_request(
            http, base, {"grant_type": "authorization_code", "code": code, "redirect_uri": REDIRECT_URI}
        )
    assert resp.status_code == 400 and resp.json()["error"] == "invalid_grant"


@pytest.mark.parametrize(
    "auth",
    [
        {"auth": (CLIENT_ID, "wrong-secret")},
        {"auth": ("other-client", CLIENT_SECRET)},
        {"headers": {"Authorization": "Basic !!!not-base64"}},
        {"headers": {"Authorization": "Bearer something"}},
        {},
        {"data_extra": {"client_id": CLIENT_ID, "client_secret": "nope"}},
    ],
)
async def test_invalid_client_is_401_with_intuit_tid(sandbox: QboSandbox, auth: dict[str, object]) -> None:
    async with sandbox.serve() as base, httpx.AsyncClient() as http:
        data = {"grant_type": "refresh_token", "refresh_token": "AB11whatever", **auth.get("data_extra", {})}  # type: ignore[dict-item]
        resp = await http.post(
            f"{base}/oauth2/v1/tokens/bearer",
            data=data,
            auth=auth.get("auth"),  # type: ignore[arg-type]
            headers=auth.get("headers"),  # type: ignore[arg-type]
        )
    assert resp.status_code == 401
    assert resp.json() == {"error": "invalid_client"}
    assert TID.match(resp.headers["intuit_tid"])


async def test_token_endpoint_refuses_bad_requests(sandbox: QboSandbox) -> None:
    async with sandbox.serve() as base, httpx.AsyncClient() as http:
        as_json = await http.post(
            f"{base}/oauth2/v1/tokens/bearer", json={"grant_type": "refresh_token"}, auth=(CLIENT_ID, CLIENT_SECRET)
        )
        odd_grant = await token_request(http, base, {"grant_type": "password"})
        unknown_refresh = await token_request(http, base, refresh_body("AB11" + "x" * 46))
    assert as_json.status_code == 400 and as_json.json() == {"error": "invalid_request"}
    assert odd_grant.status_code == 400 and odd_grant.json() == {"error": "unsupported_grant_type"}
    assert unknown_refresh.status_code == 400 and unknown_refresh.json()["error"] == "invalid_grant"


async def test_refresh_rotation_same_value_then_new_value_and_old_dies(sandbox: QboSandbox, clock: FakeClock) -> None:
    async with sandbox.serve() as base, httpx.AsyncClient() as http:
        tokens = await connect(http, base, realm_of(sandbox))
        first_rt = tokens["refresh_token"]

        clock.advance(3600)
        same = (await token_request(http, base, refresh_body(first_rt))).json()
        assert same["refresh_token"] == first_rt
        assert same["access_token"] != tokens["access_token"]
        assert same["x_refresh_token_expires_in"] == 8726400 - 3600  # counting down, not reset

        clock.advance(86400 - 3600)  # 24 h after the value was issued
        rotated = (await token_request(http, base, refresh_body(first_rt))).json()
        assert rotated["refresh_token"] != first_rt
        assert rotated["x_refresh_token_expires_in"] == 8726400  # restarts with the new value

        old = await token_request(http, base, refresh_body(first_rt))
        assert old.status_code == 400 and old.json()["error"] == "invalid_grant"
        assert TID.match(old.headers["intuit_tid"])

        clock.advance(60)
        newer = (await token_request(http, base, refresh_body(rotated["refresh_token"]))).json()
        assert newer["refresh_token"] == rotated["refresh_token"]
        assert newer["x_refresh_token_expires_in"] == 8726400 - 60


async def test_force_rotation_and_grace_window(make_sandbox: SandboxFactory, clock: FakeClock) -> None:
    sb = make_sandbox(refresh_grace_seconds=600)
    realm = sb.add_company("Acme Dispensary", payments=3)
    async with sb.serve() as base, httpx.AsyncClient() as http:
        rt = (await connect(http, base, realm))["refresh_token"]
        assert sb.force_rotation() == 1
        new_rt = (await token_request(http, base, refresh_body(rt))).json()["refresh_token"]
        assert new_rt != rt
        # Within the grace window the old value still works and yields the current one.
        clock.advance(599)
        assert (await token_request(http, base, refresh_body(rt))).json()["refresh_token"] == new_rt
        clock.advance(1)
        late = await token_request(http, base, refresh_body(rt))
        assert late.status_code == 400 and late.json()["error"] == "invalid_grant"
        assert (await token_request(http, base, refresh_body(new_rt))).status_code == 200


async def test_refresh_token_expires_after_its_lifetime(make_sandbox: SandboxFactory, clock: FakeClock) -> None:
    sb = make_sandbox(refresh_token_lifetime=1000, rotation_seconds=10_000)
    realm = sb.add_company("Acme Dispensary", payments=3)
    async with sb.serve() as base, httpx.AsyncClient() as http:
        rt = (await connect(http, base, realm))["refresh_token"]
        clock.advance(999)
        assert (await token_request(http, base, refresh_body(rt))).json()["x_refresh_token_expires_in"] == 1
        clock.advance(1)
        dead = await token_request(http, base, refresh_body(rt))
    assert dead.status_code == 400 and dead.json()["error"] == "invalid_grant"


async def test_hard_expiry_only_with_header_and_fatal_after(make_sandbox: SandboxFactory, clock: FakeClock) -> None:
    sb = make_sandbox(hard_expiry_seconds=100_000)
    realm = sb.add_company("Acme Dispensary", payments=3)
    header = {"x-include-refresh-token-hard-expires-in": "true"}
    async with sb.serve() as base, httpx.AsyncClient() as http:
        code = (await consent(http, base, realm))["code"]
        tokens = (
            await token_request(
                http,
                base,
                {"grant_type": "authorization_code", "code": code, "redirect_uri": REDIRECT_URI},
                headers=header,
            )
        ).json()
        assert tokens["x_refresh_token_hard_expires_in"] == 100_000
        # The rolling expiry never outlives the hard one.
        assert tokens["x_refresh_token_expires_in"] == 100_000
        rt = tokens["refresh_token"]

        clock.advance(90_000)  # past the 24 h rotation: a new value, still capped by the hard expiry
        without = (await token_request(http, base, refresh_body(rt))).json()
        assert "x_refresh_token_hard_expires_in" not in without
        assert without["x_refresh_token_expires_in"] == 10_000
        rt = without["refresh_token"]
        falsy = (
            await token_request(
                http, base, refresh_body(rt), headers={**header, "x-include-refresh-token-hard-expires-in": "false"}
            )
        ).json()
        assert "x_refresh_token_hard_expires_in" not in falsy
        with_header = (await token_request(http, base, refresh_body(rt), headers=header)).json()
        assert with_header["x_refresh_token_hard_expires_in"] == 10_000

        clock.advance(10_000)
        dead = await token_request(http, base, refresh_body(rt), headers=header)
        assert dead.status_code == 400 and dead.json()["error"] == "invalid_grant"

        # A new consent starts a new five-year clock.
        fresh = await connect(http, base, realm)
        assert fresh["x_refresh_token_expires_in"] == 100_000
        assert (await token_request(http, base, refresh_body(fresh["refresh_token"]))).status_code == 200


async def test_revoke_kills_refresh_and_access_token(sandbox: QboSandbox) -> None:
    realm = realm_of(sandbox)
    async with sandbox.serve() as base, httpx.AsyncClient() as http:
        for which in ("refresh_token", "access_token"):
            tokens = await connect(http, base, realm)
            api = f"{base}/v3/company/{realm}/companyinfo/1"
            bearer = {"Authorization": f"Bearer {tokens['access_token']}"}
            assert (await http.get(api, headers=bearer)).status_code == 200
            resp = await http.post(
                f"{base}/v2/oauth2/tokens/revoke",
                json={"token": tokens[which]},
                auth=(CLIENT_ID, CLIENT_SECRET),
                headers={"Accept": "application/json"},
            )
            assert resp.status_code == 200
            assert TID.match(resp.headers["intuit_tid"])
            refreshed = await token_request(http, base, refresh_body(tokens["refresh_token"]))
            assert refreshed.status_code == 400 and refreshed.json()["error"] == "invalid_grant"
            denied = await http.get(api, headers=bearer)
            assert denied.status_code == 401 and denied.json()["fault"]["error"][0]["code"] == "3200"
        assert sandbox.requests["revoke"] == 2


async def test_revoke_refuses_bad_client_and_bad_body(sandbox: QboSandbox) -> None:
    async with sandbox.serve() as base, httpx.AsyncClient() as http:
        tokens = await connect(http, base, realm_of(sandbox))
        url = f"{base}/v2/oauth2/tokens/revoke"
        wrong_client = await http.post(url, json={"token": tokens["refresh_token"]}, auth=(CLIENT_ID, "nope"))
        no_token = await http.post(url, json={}, auth=(CLIENT_ID, CLIENT_SECRET))
        not_json = await http.post(url, content=b"token=abc", auth=(CLIENT_ID, CLIENT_SECRET))
        unknown = await http.post(url, json={"token": "AB11unknown"}, auth=(CLIENT_ID, CLIENT_SECRET))
        still = await token_request(http, base, refresh_body(tokens["refresh_token"]))
    assert wrong_client.status_code == 401 and wrong_client.json() == {"error": "invalid_client"}
    assert no_token.status_code == 400 and not_json.status_code == 400
    assert unknown.status_code == 200  # RFC 7009: unknown tokens are not an error
    assert still.status_code == 200, "failed revokes must not kill the grant"


async def test_revoke_all_disconnects_a_realm(sandbox: QboSandbox) -> None:
    realm = realm_of(sandbox)
    async with sandbox.serve() as base, httpx.AsyncClient() as http:
        a = await connect(http, base, realm)
        b = await connect(http, base, realm)
        assert sandbox.revoke_all(realm) == 2
        for tokens in (a, b):
            resp = await token_request(http, base, refresh_body(tokens["refresh_token"]))
            assert resp.status_code == 400 and resp.json()["error"] == "invalid_grant"
    assert sandbox.revoke_all(realm) == 0


def test_approve_for_scripts(sandbox: QboSandbox) -> None:
    url = sandbox.approve(state="abc")
    assert url.startswith(REDIRECT_URI + "?code=AB11") and url.endswith(f"&state=abc&realmId={realm_of(sandbox)}")
    assert sandbox.deny("abc") == f"{REDIRECT_URI}?error=access_denied&state=abc"
    with pytest.raises(ValueError, match="not registered"):
        sandbox.approve(state="abc", redirect_uri="http://127.0.0.1:1/elsewhere")
    with pytest.raises(ValueError, match="no company"):
        sandbox.approve(state="abc", realm_id="42")
