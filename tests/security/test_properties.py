"""Property-based tests (hypothesis) of the code that reads what the outside world sends: webhook bodies,
Connect links and OAuth state, QBO query responses and the mapping of what they hold, Green Check answers
and the token Secret. Whatever arrives, each either yields a value or raises its one documented error
(never a crash of another kind), capabilities cannot be forged by editing them, and nothing read from a
response body that looks like a token is carried into an error message."""

from __future__ import annotations

import base64
import json
import os
import string
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any, TypeVar

import httpx
import pytest
from hypothesis import HealthCheck, assume, example, given, settings
from hypothesis import strategies as st

from qbo_operator.core import signing
from qbo_operator.core.models import Tokens, TokenSecretError
from qbo_operator.gateway.webhook_models import KNOWN_ENTITIES, PayloadError, parse_delivery
from qbo_operator.sync.greencheck import GreenCheckClient, GreenCheckError
from qbo_operator.sync.greencheck import _Expired as GcExpired
from qbo_operator.sync.greencheck import _Split as GcSplit
from qbo_operator.sync.mapping import external_id, map_payment, to_cents
from qbo_operator.sync.qbo import QboClient, QboDataError, QboError, _parse
from qbo_operator.sync.qbo import _Unauthorized as QboUnauthorized
from qbo_operator.sync.qbo_models import Invoice, Payment
from qbo_operator.sync.records import PaymentSet, Record
from qbo_operator.sync.transport import Transient
from tests.support.greencheck import ALL_TOKEN_KEYS, minimal_set
from tests.support.ledger import Report

EXAMPLES = 300
T = TypeVar("T")
CONNECTED = datetime(2026, 11, 1, tzinfo=UTC)
_counts: dict[tuple[str, str], int] = {}  # (test node id, input kind) -> examples run


def counted(kind: str) -> None:
    nodeid = os.environ.get("PYTEST_CURRENT_TEST", "?").rsplit(" ", 1)[0]
    _counts[(nodeid, kind)] = _counts.get((nodeid, kind), 0) + 1


@pytest.fixture(scope="module", autouse=True)
def _record_examples() -> Iterator[None]:
    """After the module: one report row per input kind, each carrying its own test's outcome."""
    yield
    for (nodeid, kind), n in sorted(_counts.items()):
        Report(nodeid).row("hostile input", f"hypothesis examples: {kind}", tried=n, held=n)


def attempt(fn: Callable[[], T], *errors: type[BaseException]) -> tuple[T | None, BaseException | None]:
    """(value, None), or (None, error) when `fn` raised one of `errors`; anything else propagates."""
    try:
        return fn(), None
    except errors as exc:
        return None, exc


QBO_ERRORS = (QboError, Transient, QboUnauthorized)


def fast(n: int = EXAMPLES) -> settings:
    return settings(max_examples=n, deadline=None, suppress_health_check=[HealthCheck.too_slow], database=None)


texts = st.text(max_size=80)
opaque_token = st.text(alphabet=string.ascii_letters + string.digits + "-_.", min_size=40, max_size=120)


# --- Connect links and OAuth state ---------------------------------------------------------------------


@fast()
@given(
    key=st.text(min_size=16, max_size=64),
    ns=texts,
    name=texts,
    uid=texts,
    exp=st.integers(0, 2**40),
    field=st.integers(0, 3),
    other=texts,
)
def test_a_connect_link_verifies_for_exactly_what_it_was_signed_for(
    key: str, ns: str, name: str, uid: str, exp: int, field: int, other: str
) -> None:
    counted("connect links")
    sig = signing.connect_link_signature(key, ns, name, uid, exp)
    assert signing.verify_connect_link(key, ns, name, uid, str(exp), sig, now=0) == exp
    fields = [ns, name, uid, str(exp)]
    assume(
        other != fields[field] and not (field == 3 and other.isdecimal() and other.lstrip("0") == str(exp).lstrip("0"))
    )
    fields[field] = other
    with pytest.raises(signing.SignatureError):
        signing.verify_connect_link(key, fields[0], fields[1], fields[2], fields[3], sig, now=0)


@fast()
@given(exp=texts, sig=texts)
@example(exp="²", sig="x")  # a Unicode digit that str.isdigit() accepts and int() refuses
@example(exp="9" * 5000, sig="x")  # past Python's 4300-digit limit for int(str)
def test_any_link_query_is_a_signature_error_never_a_crash(exp: str, sig: str) -> None:
    """Whatever `exp` and `sig` a browser sends, the answer is SignatureError (a plain error page)."""
    counted("connect link queries")
    with pytest.raises(signing.SignatureError):
        signing.verify_connect_link("k" * 32, "tenants", "acme", "uid-1", exp, sig, now=0)


@fast()
@given(
    ns=texts,
    name=texts,
    uid=texts,
    nonce=st.text(min_size=1, max_size=40),
    position=st.integers(0, 10**6),
    char=st.characters(),
)
def test_oauth_state_cannot_be_edited(ns: str, name: str, uid: str, nonce: str, position: int, char: str) -> None:
    counted("state tokens")
    key = "state-signing-key-0123456789"
    token = signing.make_state(key, ns, name, uid, nonce, now=1000)
    state = signing.parse_state(key, token, nonce, now=1000)
    assert (state.namespace, state.name, state.uid, state.nonce) == (ns, name, uid, nonce)
    i = position % len(token)
    assume(token[i] != char)
    edited = token[:i] + char + token[i + 1 :]
    with pytest.raises(signing.SignatureError):
        signing.parse_state(key, edited, nonce, now=1000)
    with pytest.raises(signing.SignatureError) as wrong_browser:
        signing.parse_state(key, token, nonce + "x", now=1000)
    assert wrong_browser.value.reason == "cookie_mismatch"
    with pytest.raises(signing.SignatureError) as late:
        signing.parse_state(key, token, nonce, now=1000 + signing.STATE_TTL_SECONDS + 1)
    assert late.value.reason == "expired_state"


@fast()
@given(
    token=st.one_of(st.none(), texts, st.builds(lambda a, b: f"{a}.{b}", texts, texts)),
    cookie=st.one_of(st.none(), texts),
)
def test_any_state_and_cookie_is_a_signature_error_never_a_crash(token: str | None, cookie: str | None) -> None:
    counted("state tokens")
    with pytest.raises(signing.SignatureError):
        signing.parse_state("state-signing-key-0123456789", token, cookie, now=0)


@fast()
@given(body=st.binary(max_size=2000), flip=st.integers(0, 10**6), header=st.one_of(st.none(), texts))
def test_webhook_signature_holds_for_the_exact_body_only(body: bytes, flip: int, header: str | None) -> None:
    counted("webhook signatures")
    token = "verifier-token-for-properties"
    sig = signing.webhook_signature(token, body)
    assert signing.verify_webhook(token, body, sig)
    assert signing.verify_webhook(token, body, f"  {sig} ")
    if body:
        i = flip % len(body)
        changed = body[:i] + bytes([body[i] ^ 0x01]) + body[i + 1 :]
        assert not signing.verify_webhook(token, changed, sig)
    assert signing.verify_webhook(token, body, header) == (header is not None and header.strip() == sig)


# --- webhook bodies ------------------------------------------------------------------------------------

json_scalar = st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | texts
json_value = st.recursive(
    json_scalar, lambda inner: st.lists(inner, max_size=4) | st.dictionaries(texts, inner, max_size=4), max_leaves=16
)
cloud_event = st.fixed_dictionaries(
    {
        "specversion": st.just("1.0"),
        "id": texts,
        "type": st.builds(lambda e, v: f"qbo.{e}.{v}.v1", texts, texts),
        "intuitaccountid": texts,
        "intuitentityid": texts,
    },
    optional={"time": texts, "data": json_value, "source": texts},
)
webhook_documents = st.one_of(
    json_value,
    st.lists(cloud_event | json_value, max_size=5),
    st.fixed_dictionaries(
        {
            "eventNotifications": st.lists(
                st.fixed_dictionaries(
                    {
                        "realmId": texts | json_value,
                        "dataChangeEvent": st.fixed_dictionaries(
                            {
                                "entities": st.lists(
                                    st.dictionaries(
                                        st.sampled_from(["name", "id", "operation", "lastUpdated"]), texts | json_value
                                    ),
                                    max_size=4,
                                )
                            }
                        )
                        | json_value,
                    }
                ),
                max_size=3,
            )
        }
    ),
)


@fast(300)
@given(body=st.one_of(st.binary(max_size=3000), webhook_documents.map(lambda d: json.dumps(d).encode())))
@example(body=b"[" * 100_000)
@example(body=b'{"eventNotifications": ' * 5000)
def test_any_webhook_body_parses_to_bounded_events_or_a_payload_error(body: bytes) -> None:
    counted("webhook bodies")
    delivery, error = attempt(lambda: parse_delivery(body), PayloadError)
    if error is not None:
        assert len(str(error)) < 400
        return
    assert delivery is not None
    again = parse_delivery(body)
    assert [e.key for e in delivery.events] == [e.key for e in again.events]  # de-duplication keys are stable
    for event in delivery.events:
        assert 0 < len(event.realm_id) <= 128 and 0 < len(event.entity_id) <= 128
        assert event.entity in (*KNOWN_ENTITIES, "Other")
        assert len(event.key) == 64 and all(c in "0123456789abcdef" for c in event.key)
        assert event.time is None or event.time.tzinfo is not None
    assert all(len(p) <= 300 for p in delivery.problems)


# --- QBO query responses --------------------------------------------------------------------------------


class _NoTokens:
    async def access_token(self) -> str:
        return "unused"

    async def refreshed_access_token(self, rejected: str) -> str:
        return "unused"


_clients: dict[str, Any] = {}


def _qbo() -> QboClient:
    """One client for every example (only its response interpretation is exercised: nothing is sent)."""
    if "qbo" not in _clients:
        _clients["qbo"] = QboClient("http://127.0.0.1:9", "9130355357483456", _NoTokens())
    client: QboClient = _clients["qbo"]
    return client


def _gc() -> GreenCheckClient:
    if "gc" not in _clients:
        _clients["gc"] = GreenCheckClient("http://127.0.0.1:9", "id", "secret", "sp")
    client: GreenCheckClient = _clients["gc"]
    return client


def _fault_json(message: str, detail: str, code: str) -> bytes:
    return json.dumps(
        {"Fault": {"Error": [{"Message": message, "Detail": detail, "code": code}], "type": "x"}}
    ).encode()


response_bodies = st.one_of(
    st.binary(max_size=2000),
    json_value.map(lambda d: json.dumps(d).encode()),
    st.builds(_fault_json, texts, texts, st.sampled_from(["3001", "610", "5000", "", "0100"])),
    st.builds(lambda t: f"<html><head><title>{t}</title></head></html>".encode(), texts),
    st.builds(lambda m: f'<Fault type="x"><Error code="500"><Message>{m}</Message></Error></Fault>'.encode(), texts),
)
statuses = st.sampled_from([200, 200, 400, 401, 403, 404, 429, 500, 502, 503, 504, 302, 418])
content_types = st.sampled_from(["application/json", "text/html", "application/xml", "text/plain", ""])


@fast(400)
@given(status=statuses, body=response_bodies, ctype=content_types, retry_after=st.one_of(st.none(), texts))
def test_any_qbo_response_is_a_result_or_one_of_the_clients_errors(
    status: int, body: bytes, ctype: str, retry_after: str | None
) -> None:
    counted("QBO responses")
    headers = {"content-type": ctype} if ctype else {}
    if retry_after is not None and retry_after.isascii() and retry_after.isprintable():
        headers["Retry-After"] = retry_after
    resp = httpx.Response(status, content=body, headers=headers, request=httpx.Request("POST", "http://qbo/query"))
    out, error = attempt(lambda: _qbo()._interpret(resp, "bearer-token-sent"), *QBO_ERRORS)
    if error is not None:
        assert len(str(error)) < 2000
        assert getattr(error, "delay", 0) >= 0
        return
    assert status == 200 and isinstance(out, dict)


@fast(300)
@given(status=statuses, token=opaque_token, where=st.sampled_from(["detail", "title", "text", "xml"]))
def test_a_token_echoed_in_a_qbo_error_body_stays_out_of_the_error(status: int, token: str, where: str) -> None:
    counted("QBO responses")
    assume(any(c.isdigit() for c in token) or len(token) > 48)
    body = {
        "detail": _fault_json("Invalid token", f"token={token} is invalid", "100"),
        "title": f"<html><head><title>Bearer {token}</title></head><body>nope</body></html>".encode(),
        "text": f"Authorization: Bearer {token}".encode(),
        "xml": f"<Fault><Error code='1'><Message>x</Message><Detail>{token}</Detail></Error></Fault>".encode(),
    }[where]
    resp = httpx.Response(status, content=body, request=httpx.Request("POST", "http://qbo/query"))
    _, error = attempt(lambda: _qbo()._interpret(resp, "bearer-token-sent"), *QBO_ERRORS)
    assert token not in str(error)


money = st.decimals(
    min_value=Decimal("-1e9"), max_value=Decimal("1e9"), places=2, allow_nan=False, allow_infinity=False
)
ids = st.integers(1, 60).map(str)


@st.composite
def payments(draw: st.DrawFn) -> tuple[dict[str, Any], dict[str, dict[str, Any]]]:
    lines: list[dict[str, Any]] = draw(
        st.lists(
            st.fixed_dictionaries(
                {
                    "Amount": money,
                    "LinkedTxn": st.lists(
                        st.fixed_dictionaries(
                            {"TxnId": ids, "TxnType": st.sampled_from(["Invoice", "Invoice", "CreditMemo"])}
                        ),
                        max_size=2,
                    ),
                }
            ),
            max_size=5,
        )
    )
    created = CONNECTED + timedelta(seconds=draw(st.integers(-3600, 3600)))
    payment = {
        "Id": draw(ids),
        "MetaData": {"CreateTime": created.isoformat()},
        "TotalAmt": draw(money),
        "Line": lines,
        "PrivateNote": draw(st.sampled_from([None, "Voided", "note"])),
        "PaymentMethodRef": draw(st.sampled_from([None, {"value": "1", "name": "Cash"}, {"value": "3"}])),
    }
    linked = {link["TxnId"] for line in lines for link in line["LinkedTxn"] if link["TxnType"] == "Invoice"}
    present = draw(st.sets(st.sampled_from(sorted(linked)), max_size=len(linked))) if linked else set()
    invoices = {
        i: {
            "Id": i,
            "MetaData": {"CreateTime": "2026-10-01T00:00:00Z", "LastUpdatedTime": created.isoformat()},
            "DocNumber": draw(st.one_of(st.none(), texts)),
            "TotalAmt": draw(money),
            "Balance": draw(money),
            "Line": [
                {
                    "Amount": draw(money),
                    "DetailType": "SalesItemLineDetail",
                    "SalesItemLineDetail": {
                        "ItemRef": {"value": "7", "name": draw(texts)},
                        "Qty": draw(money),
                        "UnitPrice": draw(money),
                    },
                }
            ],
        }
        for i in present
    }
    return payment, invoices


def cents(value: Decimal) -> int:
    return int(value * 100)


def expected_cash(raw: dict[str, Any]) -> dict[str, tuple[int, int]]:
    """Invoice id → (cash, credit) in cents, in line order, computed here without the product's mapping: a
    line linked to anything but an Invoice is credit, taken by the invoices in turn, each as much as it can."""
    owed: dict[str, int] = {}
    credit = 0
    for line in raw["Line"]:
        kinds = {link["TxnType"] for link in line["LinkedTxn"]}
        for link in line["LinkedTxn"]:
            if link["TxnType"] == "Invoice":
                owed[link["TxnId"]] = owed.get(link["TxnId"], 0) + cents(line["Amount"])
        if kinds - {"Invoice"}:
            credit += cents(line["Amount"])
    left, out = max(credit, 0), {}
    for invoice_id, amount in owed.items():
        take = min(left, max(amount, 0))
        left -= take
        out[invoice_id] = (amount - take, take)
    return out


@fast(300)
@given(data=payments())
def test_mapping_gives_one_payment_set_with_one_record_per_invoice_paid_and_exact_cash(
    data: tuple[dict[str, Any], dict[str, Any]],
) -> None:
    counted("payments mapped")
    raw_payment, raw_invoices = data
    payment = _parse(Payment, raw_payment)
    invoices = {i: _parse(Invoice, inv) for i, inv in raw_invoices.items()}
    mapped = map_payment(payment, invoices, "9130355357483456", CONNECTED)
    if payment.create_time < CONNECTED:  # never delivered: no set at all
        assert mapped.payment_set is None and len(mapped.skips) == 1
        return
    assert mapped.payment_set is not None and mapped.payment_set.payment_id == raw_payment["Id"]
    split = expected_cash(raw_payment)
    voided = raw_payment["PrivateNote"] == "Voided" and raw_payment["TotalAmt"] == 0
    if voided or not split or all(c == 0 for c, _ in split.values()):  # retracted: an empty set, with why
        assert mapped.payment_set.records == [] and len(mapped.skips) == 1
        return
    records = mapped.payment_set.records
    expected = {external_id("9130355357483456", raw_payment["Id"], i): v for i, v in split.items() if i in invoices}
    assert {r.external_id: (r.payment.amount, r.payment.credit_applied) for r in records} == expected
    assert len(records) == len(expected)  # one record per (payment, invoice), never two
    assert {s.invoice_id for s in mapped.skips} == set(split) - set(invoices)
    PaymentSet.model_validate(mapped.payment_set.model_dump())  # the contract's strict types hold
    for record in records:
        Record.model_validate(record.model_dump())


@fast()
@given(row=json_value)
def test_any_payment_row_is_a_payment_or_a_data_error(row: Any) -> None:
    counted("payment rows")
    if not isinstance(row, dict):
        row = {"Id": row}
    _, error = attempt(lambda: _parse(Payment, row), QboDataError)
    assert len(str(error)) < 1000


@fast()
@given(amount=st.decimals(allow_nan=False, allow_infinity=False))
@example(amount=Decimal("1E+10000000"))  # a garbled amount in a query response
def test_to_cents_of_any_finite_amount_is_cents_or_a_value_error(amount: Decimal) -> None:
    """QBO amounts arrive as JSON numbers parsed to Decimal: an absurd one must be a clear error."""
    counted("amounts")
    try:
        value = to_cents(amount)
    except ValueError:
        return
    assert isinstance(value, int)


# --- Green Check answers ------------------------------------------------------------------------------


def _results_body(answers: list[tuple[int, str]]) -> bytes:
    """An ingestion answer naming payments by number, each applied or rejected (maybe twice, maybe none)."""
    results = [{"payment_id": str(p), "status": status, "records": [], "errors": []} for p, status in answers]
    return json.dumps({"results": results}).encode()


green_check_bodies = st.one_of(
    response_bodies,
    st.builds(_results_body, st.lists(st.tuples(st.integers(0, 3), st.sampled_from(["applied", "rejected"])))),
)


@fast(400)
@given(
    status=st.sampled_from([200, 200, 400, 401, 403, 413, 422, 429, 500, 502, 503]),
    body=green_check_bodies,
    n=st.integers(1, 3),
)
def test_any_green_check_answer_is_results_or_one_of_the_clients_errors(status: int, body: bytes, n: int) -> None:
    counted("Green Check answers")
    client = _gc()
    sets = [minimal_set(i) for i in range(n)]
    resp = httpx.Response(status, content=body, request=httpx.Request("POST", "http://gc/ingest"))
    try:
        results = client._results(resp, sets)
    except (GreenCheckError, Transient, GcSplit, GcExpired):
        return
    assert [r.payment_id for r in results] == [s.payment_id for s in sets]  # one result per set, in order


# --- the token Secret ---------------------------------------------------------------------------------


@fast()
@given(
    values=st.dictionaries(
        st.sampled_from(ALL_TOKEN_KEYS),
        st.one_of(
            texts, st.sampled_from(["2026-11-24T17:03:11Z", "9999-12-31T23:59:59-23:59", "0001-01-01T00:00:00+14:00"])
        ),
    ),
    raw=st.dictionaries(st.sampled_from(ALL_TOKEN_KEYS), st.text(alphabet=string.printable, max_size=40), max_size=2),
)
def test_any_token_secret_is_tokens_or_an_error_naming_the_key_not_the_value(
    values: dict[str, str], raw: dict[str, str]
) -> None:
    counted("token Secrets")
    data = {k: base64.b64encode(v.encode()).decode() for k, v in values.items()}
    data.update(raw)  # some keys not base64 at all (the API server only ever returns ASCII base64)
    _, error = attempt(lambda: Tokens.from_secret_data(data), TokenSecretError)
    if error is not None:
        assert any(k in str(error) for k in ALL_TOKEN_KEYS)
        for value in [*values.values(), *raw.values()]:
            if len(value) >= 12:
                assert value not in str(error)
