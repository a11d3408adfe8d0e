"""Connect links, OAuth state and webhook signatures: every tampering is refused."""

from __future__ import annotations

import base64
from urllib.parse import parse_qs, urlparse

import pytest

from qbo_operator.core import signing
from qbo_operator.core.signing import SignatureError

KEY = "k" * 32
NOW = 1_764_000_000.0


def _link_parts(url: str) -> tuple[str, str]:
    q = parse_qs(urlparse(url).query)
    return q["exp"][0], q["sig"][0]


def test_connect_link_round_trip() -> None:
    url = signing.connect_link("https://qbo.example.com/", KEY, "tenants", "acme", "uid-1", int(NOW) + 600)
    assert url.startswith("https://qbo.example.com/connect/tenants/acme?exp=")
    exp, sig = _link_parts(url)
    assert signing.verify_connect_link(KEY, "tenants", "acme", "uid-1", exp, sig, NOW) == int(NOW) + 600


@pytest.mark.parametrize(
    ("namespace", "name", "uid", "exp_delta", "sig_edit", "key", "reason"),
    [
        ("other", "acme", "uid-1", 0, None, KEY, "bad_link"),  # another namespace
        ("tenants", "acme2", "uid-1", 0, None, KEY, "bad_link"),  # another name
        ("tenants", "acme", "uid-2", 0, None, KEY, "bad_link"),  # recreated CR: new uid
        ("tenants", "acme", "uid-1", 1, None, KEY, "bad_link"),  # expiry moved
        ("tenants", "acme", "uid-1", 0, "flip", KEY, "bad_link"),  # one changed character
        ("tenants", "acme", "uid-1", 0, None, "x" * 32, "bad_link"),  # other key
        ("tenants", "acme", "uid-1", 0, "empty", KEY, "bad_link"),
    ],
)
def test_connect_link_tampering(
    namespace: str, name: str, uid: str, exp_delta: int, sig_edit: str | None, key: str, reason: str
) -> None:
    url = signing.connect_link("https://g", KEY, "tenants", "acme", "uid-1", int(NOW) + 600)
    exp, sig = _link_parts(url)
    exp = str(int(exp) + exp_delta)
    if sig_edit == "flip":
        sig = ("A" if sig[0] != "A" else "B") + sig[1:]
    elif sig_edit == "empty":
        sig = ""
    with pytest.raises(SignatureError) as err:
        signing.verify_connect_link(key, namespace, name, uid, exp, sig, NOW)
    assert err.value.reason == reason


@pytest.mark.parametrize("exp", [None, "", "soon", "-5", "1e9"])
def test_connect_link_malformed_expiry(exp: str | None) -> None:
    with pytest.raises(SignatureError) as err:
        signing.verify_connect_link(KEY, "ns", "n", "u", exp, "sig", NOW)
    assert err.value.reason == "bad_link"


def test_connect_link_expired() -> None:
    exp, sig = _link_parts(signing.connect_link("https://g", KEY, "ns", "n", "u", int(NOW) - 1))
    with pytest.raises(SignatureError) as err:
        signing.verify_connect_link(KEY, "ns", "n", "u", exp, sig, NOW)
    assert err.value.reason == "expired_link"


def test_state_round_trip_and_binding() -> None:
    nonce = signing.new_nonce()
    token = signing.make_state(KEY, "ns", "acme", "uid", nonce, NOW)
    state = signing.parse_state(KEY, token, nonce, NOW + 599)
    assert (state.namespace, state.name, state.uid, state.nonce) == ("ns", "acme", "uid", nonce)


@pytest.mark.parametrize(
    ("edit", "cookie", "at", "reason"),
    [
        ("none", "other-nonce", 0, "cookie_mismatch"),
        ("none", None, 0, "cookie_mismatch"),
        ("none", "NONCE", signing.STATE_TTL_SECONDS + 1, "expired_state"),
        ("body", "NONCE", 0, "bad_state"),
        ("sig", "NONCE", 0, "bad_state"),
        ("drop", "NONCE", 0, "bad_state"),
        ("garbage", "NONCE", 0, "bad_state"),
    ],
)
def test_state_refusals(edit: str, cookie: str | None, at: int, reason: str) -> None:
    token = signing.make_state(KEY, "ns", "acme", "uid", "NONCE", NOW)
    body, sig = token.split(".")
    if edit == "body":
        token = body[:-2] + ("AA" if body[-2:] != "AA" else "BB") + "." + sig
    elif edit == "sig":
        token = body + "." + sig[::-1]
    elif edit == "drop":
        token = body
    elif edit == "garbage":
        token = "not-base64!." + sig
    with pytest.raises(SignatureError) as err:
        signing.parse_state(KEY, token, cookie, NOW + at)
    assert err.value.reason == reason


def test_a_connect_link_signature_is_not_a_state_signature() -> None:
    """Domain separation: the same key never makes one kind of token valid as another."""
    link_sig = signing.connect_link_signature(KEY, "ns", "n", "u", 1)
    with pytest.raises(SignatureError):
        signing.parse_state(KEY, f"e30.{link_sig}", "x", NOW)


def test_intuit_webhook_signature_vector() -> None:
    body = b'{"eventNotifications":[]}'
    sig = signing.webhook_signature("verifier", body)
    assert base64.b64decode(sig) and signing.verify_webhook("verifier", body, sig)
    assert not signing.verify_webhook("verifier", body + b" ", sig)
    assert not signing.verify_webhook("other", body, sig)
    assert not signing.verify_webhook("verifier", body, None)
    assert not signing.verify_webhook("verifier", body, "")
