"""HMAC capabilities: Connect links, OAuth `state`, and Intuit's webhook signature (docs/design.md §4).

Pure functions, no I/O. Every comparison is constant-time (`hmac.compare_digest`); each token
kind has its own domain prefix so a signature of one kind is never valid as another."""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import json
import secrets
from dataclasses import dataclass
from urllib.parse import quote, urlencode

CONNECT_LINK_TTL_SECONDS = 7 * 24 * 3600
STATE_TTL_SECONDS = 600


class SignatureError(ValueError):
    """A token that must not be honoured. `reason` is a short machine word for metrics and pages."""

    def __init__(self, reason: str, message: str) -> None:
        super().__init__(message)
        self.reason = reason


def _b64u(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def _unb64u(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


def _mac(key: str, domain: str, message: str) -> bytes:
    return hmac.new(key.encode(), f"{domain}\n{message}".encode(), hashlib.sha256).digest()


# --- Connect links ---------------------------------------------------------------------------


def connect_link_signature(key: str, namespace: str, name: str, uid: str, expires: int) -> str:
    return _b64u(_mac(key, "qbo-connect-link/v1", f"{namespace}\n{name}\n{uid}\n{expires}"))


def connect_link(gateway_url: str, key: str, namespace: str, name: str, uid: str, expires: int) -> str:
    sig = connect_link_signature(key, namespace, name, uid, expires)
    path = f"/connect/{quote(namespace, safe='')}/{quote(name, safe='')}"
    return f"{gateway_url.rstrip('/')}{path}?{urlencode({'exp': expires, 'sig': sig})}"


def parse_expiry(text: str | None) -> int | None:
    """A link's `exp`: plain ASCII digits of a sane length (`²` and 5,000-digit values are not)."""
    if not text or len(text) > 20 or not (text.isascii() and text.isdigit()):
        return None
    return int(text)


def verify_connect_link(
    key: str, namespace: str, name: str, uid: str, expires: str | None, sig: str | None, now: float
) -> int:
    """Return the expiry of a valid link, else raise SignatureError (bad_link or expired_link)."""
    expiry = parse_expiry(expires)
    if expiry is None or not sig:
        raise SignatureError("bad_link", "This Connect link is incomplete.")
    expected = connect_link_signature(key, namespace, name, uid, expiry)
    if not hmac.compare_digest(expected.encode(), sig.encode()):
        raise SignatureError("bad_link", "This Connect link is not valid.")
    if expiry < now:
        raise SignatureError("expired_link", "This Connect link has expired.")
    return expiry


# --- OAuth state -----------------------------------------------------------------------------


@dataclass(frozen=True)
class OAuthState:
    namespace: str
    name: str
    uid: str
    nonce: str
    expires: int


def new_nonce() -> str:
    return secrets.token_urlsafe(24)


def make_state(key: str, namespace: str, name: str, uid: str, nonce: str, now: float) -> str:
    payload = {"ns": namespace, "n": name, "u": uid, "nc": nonce, "exp": int(now) + STATE_TTL_SECONDS}
    body = _b64u(json.dumps(payload, separators=(",", ":"), sort_keys=True).encode())
    return f"{body}.{_b64u(_mac(key, 'qbo-oauth-state/v1', body))}"


def parse_state(key: str, token: str | None, cookie_nonce: str | None, now: float) -> OAuthState:
    """Verify signature, expiry and the browser binding (the `__Host-` cookie's nonce)."""
    if not token or token.count(".") != 1:
        raise SignatureError("bad_state", "The sign-in answer did not carry a valid state.")
    body, sig = token.split(".")
    expected = _b64u(_mac(key, "qbo-oauth-state/v1", body))
    if not hmac.compare_digest(expected.encode(), sig.encode()):
        raise SignatureError("bad_state", "The sign-in answer did not carry a valid state.")
    try:
        payload = json.loads(_unb64u(body))
        state = OAuthState(payload["ns"], payload["n"], payload["u"], payload["nc"], int(payload["exp"]))
    except (ValueError, KeyError, TypeError, binascii.Error):
        raise SignatureError("bad_state", "The sign-in answer did not carry a valid state.") from None
    if state.expires < now:
        raise SignatureError("expired_state", "The sign-in took longer than 10 minutes.")
    if not cookie_nonce or not hmac.compare_digest(state.nonce.encode(), cookie_nonce.encode()):
        raise SignatureError("cookie_mismatch", "The sign-in finished in a different browser than it started.")
    return state


# --- Intuit webhooks -------------------------------------------------------------------------


def webhook_signature(verifier_token: str, body: bytes) -> str:
    """Intuit's `intuit-signature`: base64(HMAC-SHA256(verifier token, raw body))."""
    return base64.b64encode(hmac.new(verifier_token.encode(), body, hashlib.sha256).digest()).decode()


def verify_webhook(verifier_token: str, body: bytes, header: str | None) -> bool:
    if not header:
        return False
    expected = webhook_signature(verifier_token, body)
    return hmac.compare_digest(expected.encode(), header.strip().encode())
