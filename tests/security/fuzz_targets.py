"""Coverage-guided fuzzing (atheris, libFuzzer) of the code that reads hostile input.

    python -m tests.security.fuzz_targets TARGET [libFuzzer flags: -runs=N -max_total_time=S -seed=N]

Targets: `webhook` (signature check + body parsing), `tokens` (OAuth state, Connect links, the token
Secret), `qbo` (a query response → client verdict → Payment → Green Check payment set), `greencheck` (an
ingestion answer → per-payment results). Each input either yields a value or raises the documented error
of that code; anything else is a crash that libFuzzer reports with the input that caused it. libFuzzer
prints "Done <n> runs" when it finishes: tests/security/test_fuzz.py runs each target in a subprocess,
bounded in runs and time, and counts those inputs."""

from __future__ import annotations

import base64
import json
import sys
from collections.abc import Callable
from datetime import UTC, datetime
from decimal import Decimal
from pathlib import Path

import atheris

with atheris.instrument_imports(include=["qbo_operator"]):
    import httpx

    from qbo_operator.core import signing
    from qbo_operator.core.models import Tokens, TokenSecretError
    from qbo_operator.gateway.webhook_models import KNOWN_ENTITIES, PayloadError, parse_delivery
    from qbo_operator.sync.greencheck import GreenCheckClient, GreenCheckError
    from qbo_operator.sync.greencheck import _Expired as GcExpired
    from qbo_operator.sync.greencheck import _Split as GcSplit
    from qbo_operator.sync.mapping import map_payment
    from qbo_operator.sync.qbo import QboClient, QboDataError, QboError, _parse
    from qbo_operator.sync.qbo import _Unauthorized as QboUnauthorized
    from qbo_operator.sync.qbo_models import Invoice, Payment
    from qbo_operator.sync.transport import Transient

from tests.support.greencheck import ALL_TOKEN_KEYS, minimal_set

KEY = "fuzz-signing-key-0123456789abcdef"
VERIFIER = "fuzz-verifier-token"
CONNECTED = datetime(2020, 1, 1, tzinfo=UTC)
STATUSES = (200, 200, 200, 400, 401, 403, 413, 422, 429, 500, 502, 503)


class _NoTokens:
    async def access_token(self) -> str:
        return "unused"

    async def refreshed_access_token(self, rejected: str) -> str:
        return "unused"


_QBO = QboClient("http://127.0.0.1:9", "9130355357483456", _NoTokens())
_GC = GreenCheckClient("http://127.0.0.1:9", "id", "secret", "sp")
_INVOICE = _parse(
    Invoice,
    {"Id": "1", "MetaData": {"CreateTime": "2020-01-01T00:00:00Z"}, "DocNumber": "1001", "TotalAmt": 10, "Balance": 0},
)


def webhook(data: bytes) -> None:
    fdp = atheris.FuzzedDataProvider(data)
    header = fdp.ConsumeUnicodeNoSurrogates(64)
    body = fdp.ConsumeBytes(fdp.remaining_bytes())
    signing.verify_webhook(VERIFIER, body, header)
    assert signing.verify_webhook(VERIFIER, body, signing.webhook_signature(VERIFIER, body))
    try:
        delivery = parse_delivery(body)
    except PayloadError:
        return
    for event in delivery.events:
        assert 0 < len(event.realm_id) <= 128 and 0 < len(event.entity_id) <= 128
        assert event.entity in (*KNOWN_ENTITIES, "Other")


def tokens(data: bytes) -> None:
    fdp = atheris.FuzzedDataProvider(data)
    choice = fdp.ConsumeIntInRange(0, 2)
    if choice == 0:
        token, cookie = fdp.ConsumeUnicodeNoSurrogates(200), fdp.ConsumeUnicodeNoSurrogates(40)
        try:
            signing.parse_state(KEY, token, cookie, now=1000)
        except signing.SignatureError:
            return
        raise AssertionError("a state token nobody signed was accepted")
    if choice == 1:
        exp, sig = fdp.ConsumeUnicodeNoSurrogates(30), fdp.ConsumeUnicodeNoSurrogates(60)
        try:
            signing.verify_connect_link(KEY, "tenants", "acme", "uid", exp, sig, now=0)
        except signing.SignatureError:
            return
        raise AssertionError("a Connect link nobody signed was accepted")
    secret: dict[str, str] = {}
    for key in ALL_TOKEN_KEYS:
        if fdp.ConsumeBool():
            raw = fdp.ConsumeBytes(fdp.ConsumeIntInRange(0, 60))
            secret[key] = base64.b64encode(raw).decode() if fdp.ConsumeBool() else raw.decode("ascii", "replace")
    try:
        Tokens.from_secret_data({k: v.encode("ascii", "replace").decode() for k, v in secret.items()})
    except TokenSecretError:
        return


def qbo(data: bytes) -> None:
    fdp = atheris.FuzzedDataProvider(data)
    status = STATUSES[fdp.ConsumeIntInRange(0, len(STATUSES) - 1)]
    ctype = ("application/json", "text/html", "application/xml", "")[fdp.ConsumeIntInRange(0, 3)]
    body = fdp.ConsumeBytes(fdp.remaining_bytes())
    resp = httpx.Response(
        status,
        content=body,
        headers={"content-type": ctype} if ctype else {},
        request=httpx.Request("POST", "http://qbo/query"),
    )
    try:
        out = _QBO._interpret(resp, "bearer")
    except (QboError, Transient, QboUnauthorized):
        return
    rows = (out.get("QueryResponse") or {}).get("Payment") if isinstance(out.get("QueryResponse"), dict) else None
    if not isinstance(rows, list):
        return
    for row in rows[:20]:
        if not isinstance(row, dict):
            continue
        try:
            payment = _parse(Payment, row)
        except QboDataError:
            continue
        try:
            mapped = map_payment(payment, {"1": _INVOICE}, "9130355357483456", CONNECTED)
        except ValueError:
            continue  # the documented error of the mapping (an amount it cannot express in cents)
        if mapped.payment_set is not None:
            assert mapped.payment_set.payment_id == payment.id
            assert all(r.payment.id == payment.id for r in mapped.payment_set.records)


def greencheck(data: bytes) -> None:
    fdp = atheris.FuzzedDataProvider(data)
    status = STATUSES[fdp.ConsumeIntInRange(0, len(STATUSES) - 1)]
    n = fdp.ConsumeIntInRange(1, 3)
    body = fdp.ConsumeBytes(fdp.remaining_bytes())
    resp = httpx.Response(status, content=body, request=httpx.Request("POST", "http://gc/x"))
    sets = _SETS[:n]
    try:
        results = _GC._results(resp, sets)
    except (GreenCheckError, Transient, GcSplit, GcExpired):
        return
    assert [r.payment_id for r in results] == [s.payment_id for s in sets]


_SETS = [minimal_set(i) for i in range(3)]

TARGETS: dict[str, Callable[[bytes], None]] = {
    "webhook": webhook,
    "tokens": tokens,
    "qbo": qbo,
    "greencheck": greencheck,
}

# Seeds: one well-formed input per target, so the fuzzer starts from inside the interesting code.
SEEDS: dict[str, list[bytes]] = {
    "webhook": [
        b"\x00"
        + json.dumps(
            [
                {
                    "specversion": "1.0",
                    "id": "1",
                    "type": "qbo.payment.created.v1",
                    "intuitaccountid": "1",
                    "intuitentityid": "2",
                }
            ]
        ).encode(),
        b"\x00"
        + json.dumps(
            {
                "eventNotifications": [
                    {
                        "realmId": "1",
                        "dataChangeEvent": {
                            "entities": [
                                {
                                    "name": "Payment",
                                    "id": "1",
                                    "operation": "Create",
                                    "lastUpdated": "2026-01-01T00:00:00Z",
                                }
                            ]
                        },
                    }
                ]
            }
        ).encode(),
    ],
    "qbo": [
        b"\x00\x00"
        + json.dumps(
            {
                "QueryResponse": {
                    "Payment": [
                        {
                            "Id": "9",
                            "MetaData": {
                                "CreateTime": "2026-01-01T00:00:00Z",
                                "LastUpdatedTime": "2026-01-02T00:00:00Z",
                            },
                            "TotalAmt": Decimal("10.00"),
                            "Line": [{"Amount": Decimal("10.00"), "LinkedTxn": [{"TxnId": "1", "TxnType": "Invoice"}]}],
                        }
                    ]
                }
            },
            default=str,
        ).encode(),
        b"\x09\x01" + b'{"Fault":{"Error":[{"Message":"m","Detail":"d","code":"3001"}],"type":"ThrottleExceeded"}}',
    ],
    "greencheck": [
        b"\x00\x00"
        + json.dumps(
            {
                "results": [
                    {
                        "payment_id": "0",
                        "status": "applied",
                        "records": [{"external_id": "qbo:1:payment:0:invoice:1", "status": "created"}],
                    }
                ]
            }
        ).encode()
    ],
    "tokens": [b"\x00" + signing.make_state(KEY, "ns", "n", "u", "nonce", 1000).encode()],
}


def main() -> None:
    if len(sys.argv) < 2 or sys.argv[1] not in TARGETS:
        print(
            f"usage: python -m tests.security.fuzz_targets {{{'|'.join(TARGETS)}}} [CORPUS_DIR] [libFuzzer flags]",
            file=sys.stderr,
        )
        sys.exit(2)
    name = sys.argv.pop(1)
    target = TARGETS[name]
    corpus = next((Path(a) for a in sys.argv[1:] if not a.startswith("-")), None)
    for i, seed in enumerate(SEEDS.get(name, [])):
        target(seed)  # a well-formed input must pass before fuzzing starts from it
        if corpus is not None:
            corpus.mkdir(parents=True, exist_ok=True)
            (corpus / f"seed-{i}").write_bytes(seed)
    atheris.Setup(sys.argv, target)
    atheris.Fuzz()


if __name__ == "__main__":
    main()
