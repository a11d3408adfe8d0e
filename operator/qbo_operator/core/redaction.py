"""Text from outside servers on its way into errors, status and Events: never with a token in it."""

from __future__ import annotations

import re

# Long opaque runs (bearer tokens, refresh tokens, JWTs) that a server or proxy may echo back.
_OPAQUE_RE = re.compile(r"[A-Za-z0-9_\-.~+/=]{32,}")


def redact(text: str, limit: int = 300, known: tuple[str, ...] = ()) -> str:
    """Remove `known` secret values and long opaque strings, fold white space, bound the length."""
    for value in known:
        if value:
            text = text.replace(value, "[redacted]")
    text = _OPAQUE_RE.sub("[redacted]", text)
    text = " ".join(text.split())
    return text if len(text) <= limit else text[: limit - 1] + "…"
