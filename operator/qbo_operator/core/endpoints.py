"""Which endpoint URLs may be plain http (issue 17, finding 11; docs/security.md "Endpoints").

Every override of an Intuit or Green Check endpoint carries client secrets, codes or tokens, so it must be
https; plain http is for the local sandboxes only, which listen on a loopback address (127.0.0.0/8, ::1 or
localhost): traffic that never leaves the machine."""

from __future__ import annotations

import ipaddress
from urllib.parse import urlsplit

LOOPBACK_NAMES = ("localhost",)
RULE = "plain http is allowed only for a loopback host (127.0.0.0/8, ::1, localhost)"


def is_loopback(host: str | None) -> bool:
    if not host:
        return False
    host = host.lower().rstrip(".")
    if host in LOOPBACK_NAMES:
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def not_a_url(name: str, url: str) -> str | None:
    """A configuration problem for `name` when `url` is not an http(s) URL with a host (else None)."""
    parts = urlsplit(url.strip())
    if parts.scheme.lower() not in ("http", "https") or not parts.netloc:
        return f"{name}={url!r} is not an http(s) URL"
    return None


def insecure(name: str, url: str) -> str | None:
    """A configuration problem for `name` when `url` is not https, or plain http to a host other than
    loopback (else None)."""
    if problem := not_a_url(name, url):
        return problem
    parts = urlsplit(url.strip())
    if parts.scheme.lower() == "https":
        return None
    try:
        host = parts.hostname
    except ValueError:
        host = None
    if is_loopback(host):
        return None
    return f"{name}={url!r} must be an https URL: {RULE}"
