"""Fault injection (shared `Faults` + the QBO renderers) over real HTTP, and the HTTP control API."""

from __future__ import annotations

import asyncio
from decimal import Decimal
from typing import Any

import httpx
import pytest
from aiohttp import web

from qbo_operator.harness.sandbox.faults import NGINX_502, FaultRule, Faults
from qbo_operator.harness.sandbox.qbo import QboSandbox, _loopback
from tests.support.sandbox import FakeClock, FakeMonotonic, realm_of, token_request


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


async def test_each_fault_kind_in_intuit_shapes(sandbox: QboSandbox) -> None:
    realm = realm_of(sandbox)
    token = sandbox.issue_tokens(realm)["access_token"]
    info = f"/v3/company/{realm}/companyinfo/1"
    async with sandbox.serve() as base, httpx.AsyncClient() as http:

        async def once(**rule: Any) -> httpx.Response:
            sandbox.faults.clear()
            sandbox.faults.add(path="/companyinfo/", count=1, **rule)
            resp = await http.get(base + info, headers=bearer(token))
            assert (await http.get(base + info, headers=bearer(token))).status_code == 200, "count=1 fires once"
            return resp

        system = await once(kind="status")
        assert system.status_code == 500
        assert system.json()["Fault"]["type"] == "SystemFault" and system.json()["Fault"]["Error"][0]["code"] == "10000"
        assert system.headers["intuit_tid"]

        unavailable = await once(kind="status", status=503)
        assert unavailable.status_code == 503 and unavailable.json()["Fault"]["type"] == "SystemFault"

        expired = await once(kind="status", status=401)
        assert expired.status_code == 401 and expired.json()["fault"]["error"][0]["code"] == "3200"

        gateway = await once(kind="html_502")
        assert gateway.status_code == 502 and gateway.text == NGINX_502
        assert gateway.headers["Content-Type"].startswith("text/html")

        throttle = await once(kind="throttle", retry_after=7)
        assert throttle.status_code == 429 and throttle.json()["Fault"]["Error"][0]["code"] == "3001"
        assert throttle.headers["Retry-After"] == "7"

        xml = await once(kind="xml_fault", status=401)
        assert xml.status_code == 401 and "AuthenticationFault" in xml.text
        assert xml.headers["Content-Type"].startswith("application/xml")

        malformed = await once(kind="malformed")
        assert malformed.status_code == 200
        with pytest.raises(ValueError):
            malformed.json()

        with pytest.raises(httpx.RemoteProtocolError):
            await once(kind="truncated")

        sandbox.faults.clear()
        sandbox.faults.add(kind="status", path="/oauth2/v1/tokens/bearer", status=503, count=1)
        token_fault = await token_request(http, base, {"grant_type": "refresh_token", "refresh_token": "x"})
        assert token_fault.status_code == 503 and token_fault.json() == {"error": "temporarily_unavailable"}
    assert sandbox.faults.fired["status"] == 4


async def test_latency_delays_but_answers(sandbox: QboSandbox) -> None:
    realm = realm_of(sandbox)
    token = sandbox.issue_tokens(realm)["access_token"]
    sandbox.faults.add(kind="latency", path="companyinfo", seconds=1.5, count=1)
    async with sandbox.serve() as base, httpx.AsyncClient(timeout=30) as http:
        with pytest.raises(httpx.ReadTimeout):
            await http.get(f"{base}/v3/company/{realm}/companyinfo/1", headers=bearer(token), timeout=0.5)
        ok = await http.get(f"{base}/v3/company/{realm}/companyinfo/1", headers=bearer(token))
    assert ok.status_code == 200


def test_rules_are_deterministic() -> None:
    def run(seed: int) -> list[bool]:
        faults = Faults(seed=seed)
        faults.add(kind="status", path=r"^/v3/", probability=0.3)
        return [faults.choose("GET", "/v3/company/1/query") is not None for _ in range(200)]

    assert run(7) == run(7)
    assert run(7) != run(8)
    assert 30 < sum(run(7)) < 90

    faults = Faults()
    rule_id = faults.add({"kind": "status", "path": "query", "skip": 2, "count": 3, "method": "post"})
    fired = [faults.choose("POST", "/v3/company/1/query") is not None for _ in range(7)]
    assert fired == [False, False, True, True, True, False, False]
    assert faults.choose("GET", "/v3/company/1/query") is None, "method filter"
    assert faults.choose("POST", "/_sandbox/state") is None, "control paths are exempt"
    assert faults.rules[0]["fired"] == 3 and faults.rules[0]["exhausted"]
    assert faults.remove(rule_id) and not faults.remove(rule_id)


@pytest.mark.parametrize(
    "spec",
    [
        {"kind": "explode"},
        {"kind": "status", "path": "("},
        {"kind": "status", "probability": 2},
        {"kind": "status", "count": 0},
        {"kind": "status", "status": 99},
        {"kind": "latency", "seconds": -1},
        {"kind": "status", "colour": "red"},
    ],
)
def test_bad_rules_are_refused(spec: dict[str, object]) -> None:
    with pytest.raises(ValueError):  # pydantic's ValidationError is a ValueError
        Faults().add(spec)


async def test_faults_work_in_any_aiohttp_app() -> None:
    """The Green Check sandbox reuses the middleware: it must not assume QBO."""
    faults = Faults(seed=1)
    faults.add(kind="status", path="^/api/", status=502, count=1)
    faults.add(kind="truncated", path="^/api/", count=1)

    async def handler(request: web.Request) -> web.Response:
        return web.json_response({"ok": True, "padding": "y" * 200})

    app = web.Application(middlewares=[faults.middleware()])
    app.router.add_get("/api/x", handler)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = runner.addresses[0][1]
    try:
        async with httpx.AsyncClient() as http:
            first = await http.get(f"http://127.0.0.1:{port}/api/x")
            assert first.status_code == 502 and first.json()["error"] == "injected_fault"
            with pytest.raises(httpx.RemoteProtocolError):
                await http.get(f"http://127.0.0.1:{port}/api/x")
            assert (await http.get(f"http://127.0.0.1:{port}/api/x")).json()["ok"] is True
    finally:
        await runner.cleanup()


async def _companies(ctl: httpx.AsyncClient, base: str) -> str:
    """Companies through the control API; returns the new one's realm."""
    state = (await ctl.get("/state")).json()
    assert [r["name"] for r in state["realms"]] == ["Acme Dispensary"]
    assert state["urls"]["api"] == base

    created = await ctl.post("/companies", json={"name": "Bridgetown Wholesale", "seed": 4, "payments": 30})
    assert created.status_code == 201
    realm = created.json()["realmId"]
    assert created.json()["counts"]["Payment"] == 30
    assert (await ctl.post("/companies", json={"name": ""})).status_code == 400
    assert (await ctl.post("/companies", content=b"{nope")).status_code == 400

    return str(realm)


async def _payments(
    ctl: httpx.AsyncClient, sandbox: QboSandbox, clock: FakeClock, realm: str
) -> tuple[dict[str, Any], dict[str, Any]]:
    """Tokens, generated and explicit payments, listing, void and delete; returns (tokens, the explicit payment)."""
    tokens = (await ctl.post(f"/companies/{realm}/tokens")).json()
    clock.advance(5)
    generated = await ctl.post(f"/companies/{realm}/payments", json={"n": 25, "seed": 3})
    assert generated.status_code == 201 and generated.json()["created"] == 25

    company = sandbox.companies[realm]
    invoice = next(i for i in company.invoices.values() if i["Balance"] > 1)
    explicit = await ctl.post(
        f"/companies/{realm}/payments",
        json={"invoice_ids": [invoice["Id"]], "amounts": ["1.00"], "method": "ACH/EFT", "ref_num": "ACH1"},
    )
    assert explicit.status_code == 201, explicit.text
    payment = explicit.json()["payment"]
    assert payment["TotalAmt"] == 1.0 and payment["PaymentMethodRef"] == {"value": "5"}
    bad = await ctl.post(f"/companies/{realm}/payments", json={"invoice_ids": [invoice["Id"]], "amounts": ["-1"]})
    assert bad.status_code == 400 and "positive" in bad.json()["error"]
    assert (await ctl.post("/companies/000/payments", json={"n": 1})).status_code == 404

    listing = (await ctl.get(f"/companies/{realm}/payments", params={"offset": 50, "limit": 10})).json()
    assert listing["total"] == 56 and len(listing["payments"]) == 6
    assert listing["payments"][-1]["Id"] == payment["Id"]

    voided = (await ctl.post(f"/companies/{realm}/payments/{payment['Id']}/void")).json()["payment"]
    assert voided["TotalAmt"] == 0 and voided["PrivateNote"] == "Voided"
    assert (await ctl.delete(f"/companies/{realm}/payments/{payment['Id']}")).status_code == 200
    assert (await ctl.delete(f"/companies/{realm}/payments/{payment['Id']}")).status_code == 400
    assert company.invoices[invoice["Id"]]["Balance"] == invoice["Balance"]

    return tokens, payment


async def _faults_throttle_and_grants(
    ctl: httpx.AsyncClient, sandbox: QboSandbox, base: str, realm: str, tokens: dict[str, Any]
) -> None:
    fault_ids = (
        await ctl.post("/faults", json={"rules": [{"kind": "status", "path": "companyinfo", "count": 1}]})
    ).json()
    assert fault_ids["ids"] == ["f1"]
    assert (await ctl.post("/faults", json={"kind": "nope"})).status_code == 400
    assert len((await ctl.get("/faults")).json()["rules"]) == 1
    async with httpx.AsyncClient() as http:
        url = f"{base}/v3/company/{realm}/companyinfo/1"
        assert (await http.get(url, headers=bearer(tokens["access_token"]))).status_code == 500
        assert (await ctl.delete("/faults")).json() == {"rules": []}

        sandbox.throttle.clock = FakeMonotonic()  # time stands still: every request is in the same second
        limits = {"per_second": 1, "per_minute": None, "concurrent": None}
        assert (await ctl.post("/throttle", json=limits)).status_code == 200
        codes = [(await http.get(url, headers=bearer(tokens["access_token"]))).status_code for _ in range(3)]
        assert codes == [200, 429, 429]
        assert (await ctl.post("/throttle", json={"enabled": False})).json() == {"throttle": None}

        rotated = (await ctl.post("/rotate", json={"realmId": realm})).json()
        assert rotated == {"grants": 1}
        refreshed = await token_request(
            http, base, {"grant_type": "refresh_token", "refresh_token": tokens["refresh_token"]}
        )
        assert refreshed.json()["refresh_token"] != tokens["refresh_token"]

        revoked = (await ctl.post(f"/companies/{realm}/revoke")).json()
        assert revoked == {"revoked": 1}
        assert (await http.get(url, headers=bearer(tokens["access_token"]))).status_code == 401


async def test_control_api(sandbox: QboSandbox, clock: FakeClock) -> None:
    async with sandbox.serve() as base, httpx.AsyncClient(base_url=base + "/_sandbox", timeout=30) as ctl:
        realm = await _companies(ctl, base)
        tokens, payment = await _payments(ctl, sandbox, clock, realm)
        await _faults_throttle_and_grants(ctl, sandbox, base, realm, tokens)
        before = sandbox.now()
        moved = (await ctl.post("/clock", json={"advance": 3600})).json()
        assert moved["now"] == sandbox.now().isoformat()
        assert (sandbox.now() - before).total_seconds() == 3600
        assert (await ctl.post("/clock", json={"advance": -1})).status_code == 400

        location = (await ctl.post("/approve", json={"state": "s", "realmId": realm})).json()["location"]
        assert "code=AB11" in location and f"realmId={realm}" in location
        hooks = (await ctl.post("/webhooks", json={"url": "http://127.0.0.1:9/hook", "format": "legacy"})).json()
        assert hooks["url"] == "http://127.0.0.1:9/hook" and hooks["format"] == "legacy"
        state = (await ctl.get("/state")).json()
        assert state["grants"]["revoked"] == 1 and state["grants"]["rotations"] == 1
    assert Decimal(str(payment["TotalAmt"])) == Decimal("1.00")


def test_control_api_answers_loopback_peers_only() -> None:
    """Bound to 127.0.0.1 by default; bound wider, only loopback peers may steer it (unless allowed)."""
    assert _loopback("127.0.0.1") and _loopback("::1") and _loopback("127.0.0.2")
    assert not _loopback("10.0.0.8") and not _loopback(None) and not _loopback("garbage")


def test_fault_rule_defaults() -> None:
    rule = FaultRule(kind="latency")
    assert rule.path == ".*" and rule.probability == 1.0 and rule.count is None


async def test_concurrent_faults_are_counted_once_each(sandbox: QboSandbox) -> None:
    realm = realm_of(sandbox)
    token = sandbox.issue_tokens(realm)["access_token"]
    sandbox.faults.add(kind="status", path="companyinfo", count=5)
    async with sandbox.serve() as base, httpx.AsyncClient() as http:
        url = f"{base}/v3/company/{realm}/companyinfo/1"
        results = await asyncio.gather(*(http.get(url, headers=bearer(token)) for _ in range(9)))
    assert sorted(r.status_code for r in results) == [200] * 4 + [500] * 5
