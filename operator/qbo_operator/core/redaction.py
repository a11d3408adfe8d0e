"""Text from outside servers on its way into errors, status and Events: never with a token in it.

Two nets (docs/security.md "Redaction"): the secrets the caller knows (a client secret, a bearer token), of
any length and with any punctuation, also when the server echoes them percent-encoded or JSON-escaped; and
long opaque runs (tokens no one told us about), also percent-encoded ones."""

from __future__ import annotations

import functools
import re

REDACTED = "[redacted]"

# Long opaque runs (bearer tokens, refresh tokens, JWTs) that a server or proxy may echo back; a
# percent-encoded byte (`%2B`) counts as one character of the run, so encoding does not split a token.
_OPAQUE_RE = re.compile(r"(?:[A-Za-z0-9_\-.~+/=]|%[0-9A-Fa-f]{2}){32,}")


def _character(ch: str) -> str:
    """A pattern for one character of a known secret: as itself, percent-encoded (either hex case),
    `+` for a form-encoded space, or backslash-escaped as JSON writes `"`, `\\` and `/`."""
    encoded = "".join(f"%{byte:02X}" for byte in ch.encode())
    ways = [re.escape(ch), f"(?i:{re.escape(encoded)})"]
    if ch == " ":
        ways.append(r"\+")
    if ch in '"\\/':
        ways.append(re.escape("\\" + ch))
    return "(?:" + "|".join(ways) + ")"


@functools.lru_cache(maxsize=64)
def known_pattern(known: tuple[str, ...]) -> re.Pattern[str] | None:
    """One pattern for every non-empty known value, the longest first (a value that contains another
    is removed whole)."""
    values = sorted({v for v in known if v}, key=len, reverse=True)
    if not values:
        return None
    return re.compile("|".join("".join(_character(ch) for ch in value) for value in values))


def redact(text: str, limit: int = 300, known: tuple[str, ...] = ()) -> str:
    """Remove `known` secret values and long opaque strings, fold white space, bound the length."""
    pattern = known_pattern(tuple(known))
    if pattern is not None:
        text = pattern.sub(REDACTED, text)
    text = _OPAQUE_RE.sub(REDACTED, text)
    text = " ".join(text.split())
    return text if len(text) <= limit else text[: limit - 1] + "…"
