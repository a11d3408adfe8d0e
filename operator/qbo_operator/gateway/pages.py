"""The HTML pages people see: the Connect page, the "connected" page and one page per failure.

Plain HTML and one inline stylesheet whose hash goes into the Content-Security-Policy, so the pages
need no JavaScript and no other request. Every value put into a page is HTML-escaped here. Pure
functions: text in, (status, html) out."""

from __future__ import annotations

import base64
import hashlib
import html
import re
from dataclasses import dataclass
from datetime import datetime
from importlib import resources
from string import Template
from urllib.parse import urlsplit

from qbo_operator.core.status import Reason

_TEMPLATES = resources.files("qbo_operator.gateway") / "templates"


def _load(name: str) -> Template:
    return Template(_TEMPLATES.joinpath(name).read_text(encoding="utf-8"))


_BASE = _load("base.html")
_CONNECT = _load("connect.html")
_CONNECTED = _load("connected.html")
_RESULT = _load("result.html")

_style = re.search(r"<style>(.*?)</style>", _BASE.template, re.S)
assert _style is not None, "base.html must carry its stylesheet inline"
STYLE_HASH = "sha256-" + base64.b64encode(hashlib.sha256(_style.group(1).encode()).digest()).decode()


def content_security_policy(form_targets: tuple[str, ...] = ()) -> str:
    """No scripts, no frames, no plugins; only the inline stylesheet; forms post here (and the
    Connect button's redirect may go on to Intuit's authorization origin)."""
    form = " ".join(("'self'", *form_targets))
    return f"default-src 'none'; style-src '{STYLE_HASH}'; form-action {form}; frame-ancestors 'none'; base-uri 'none'"


def origin(url: str) -> str:
    parts = urlsplit(url)
    return f"{parts.scheme}://{parts.netloc}"


def _e(text: str) -> str:
    return html.escape(text, quote=True)


def _page(title: str, content: str, tone: str = "", reference: str = "") -> str:
    ref = f" Reference: <code>{_e(reference)}</code>." if reference else ""
    return _BASE.substitute(title=_e(title), content=content, tone=tone, reference=ref)


def company_label(company_name: str | None, name: str) -> str:
    return (company_name or "").strip() or name


def connect_page(company: str, action: str, expires: datetime, already_connected: bool) -> str:
    already = ""
    if already_connected:
        already = (
            '<p class="notice">This integration has been connected before. Connect again only if you were '
            "asked to, and choose the same QuickBooks company as last time.</p>"
        )
    content = _CONNECT.substitute(
        company=_e(company),
        action=_e(action),
        expires=_e(expires.strftime("%d %B %Y, %H:%M UTC")),
        already=already,
    )
    return _page(f"Connect {company}", content)


def connected_page(company: str, reconnected: bool, reference: str) -> str:
    since = (
        "Payments recorded while the connection was broken are caught up as well."
        if reconnected
        else "Payments recorded from now on are sent."
    )
    content = _CONNECTED.substitute(company=_e(company), since=since)
    return _page("QuickBooks is connected", content, tone="ok", reference=reference)


@dataclass(frozen=True)
class Failure:
    status: int
    heading: str
    what: str
    todo: str
    tone: str = "bad"


_START_AGAIN = "Open your Connect link again and press Connect."
_ASK = "Ask your Green Check contact for a new Connect link."

# One page per way a Connect or callback can fail. `{company}` is filled in (escaped).
FAILURES: dict[str, Failure] = {
    "bad_link": Failure(
        403,
        "This Connect link is not valid",
        "The link is incomplete or was changed (for example, cut off when it was copied), or it belongs to "
        "an integration that has since been set up again. Nothing was connected.",
        "Copy the whole link from the message you received and open it again. If that does not work, " + _ASK,
    ),
    "expired_link": Failure(
        410,
        "This Connect link has expired",
        "Connect links work for 7 days. Nothing was connected.",
        _ASK,
        tone="warn",
    ),
    "already_connected": Failure(
        409,
        "This integration is already connected",
        "QuickBooks is connected and working for this integration, so this Connect link no longer works. "
        "Nothing was changed.",
        "There is nothing to do. If the connection stops working, your Green Check contact will send you a new "
        "Connect link.",
        tone="ok",
    ),
    "not_configured": Failure(
        503,
        "QuickBooks cannot be connected yet",
        "Green Check has not finished setting up this kind of QuickBooks connection, so you were not sent to "
        "Intuit. Nothing was connected.",
        f"Tell your Green Check contact (reason: {Reason.MISSING_CREDENTIALS}); this link works once they "
        "have fixed it.",
        tone="warn",
    ),
    "cross_site": Failure(
        403,
        "Please use the Connect page itself",
        "The Connect button was pressed from another website, not from this Connect page, so for your safety "
        "nothing was started.",
        "Open your Connect link directly in your browser and press Connect there.",
        tone="warn",
    ),
    "not_found": Failure(
        404,
        "There is nothing to connect here",
        "This Connect link points to an integration that does not exist (it may have been removed). "
        "Nothing was connected.",
        _ASK,
    ),
    "denied": Failure(
        200,
        "QuickBooks was not connected",
        "Access was declined at Intuit, so {company} was not connected. Nothing was saved.",
        "If that was a mistake, start again and choose Connect (or Approve) at Intuit.",
        tone="warn",
    ),
    "intuit_error": Failure(
        502,
        "Intuit could not finish the sign-in",
        "Intuit sent back an error instead of a connection, so {company} was not connected. Nothing was saved.",
        "Start again in a few minutes.",
    ),
    "bad_state": Failure(
        400,
        "This sign-in cannot be finished",
        "The answer that came back from Intuit was incomplete or had been changed, so for your safety "
        "nothing was saved.",
        _START_AGAIN,
    ),
    "expired_state": Failure(
        400,
        "The sign-in took too long",
        "More than 10 minutes passed between pressing Connect and coming back from Intuit, so for your "
        "safety nothing was saved.",
        "Start again and finish within 10 minutes.",
        tone="warn",
    ),
    "cookie_mismatch": Failure(
        400,
        "Please finish in the same browser",
        "The sign-in came back to a different browser (or one that blocks cookies) than the one where "
        "Connect was pressed, so for your safety nothing was saved.",
        "Open your Connect link in this browser, with cookies allowed for this site, and press Connect again.",
        tone="warn",
    ),
    "replayed": Failure(
        409,
        "This sign-in was already used",
        "Each answer from Intuit can be used only once, and this one has been used already (perhaps the "
        "page was reloaded). Nothing new was saved.",
        "If you just saw “QuickBooks is connected”, you are done. Otherwise start again.",
        tone="warn",
    ),
    "duplicate_realm": Failure(
        409,
        "That QuickBooks company is already connected elsewhere",
        "The company chosen at Intuit is already connected to another Green Check integration, and a "
        "QuickBooks company can belong to only one. Nothing was saved.",
        "If you picked the wrong company, start again and choose the one for {company}. If it is the right "
        f"company, tell your Green Check contact (reason: {Reason.DUPLICATE_REALM}).",
    ),
    "realm_mismatch": Failure(
        409,
        "That is not the QuickBooks company connected before",
        "{company} is already linked to a different QuickBooks company, and the company cannot be switched. "
        "Nothing was saved.",
        "Start again and choose the same company as before. To move to another company, your Green Check "
        f"contact needs to set up a new integration (reason: {Reason.REALM_MISMATCH}).",
    ),
    "realm_unverified": Failure(
        403,
        "QuickBooks did not confirm that company",
        "The answer that came back from Intuit named a different QuickBooks company than the one that was "
        "chosen at Intuit, so the new connection was cancelled at Intuit and nothing was saved.",
        "Start again and choose the company for {company} at Intuit. If it keeps happening, tell your Green "
        "Check contact.",
    ),
    "secret_conflict": Failure(
        409,
        "The connection cannot be stored",
        "The place where this integration keeps its QuickBooks connection is already used by something "
        "else, so it was not overwritten. Nothing was saved.",
        f"Tell your Green Check contact (reason: {Reason.SECRET_CONFLICT}); they can fix it and send you the link "
        "again.",
    ),
    "not_ready": Failure(
        503,
        "This integration is not ready yet",
        "The place where this integration keeps its QuickBooks connection has not been set up yet, so the "
        "connection was cancelled at Intuit and nothing was saved.",
        "Wait a minute and start again. If it keeps happening, tell your Green Check contact.",
        tone="warn",
    ),
    "exchange_failed": Failure(
        502,
        "QuickBooks did not answer",
        "Intuit's sign-in service could not be reached or did not accept the request, so the connection "
        "was not finished. Nothing was saved.",
        "Wait a few minutes and start again.",
        tone="warn",
    ),
    "write_failed": Failure(
        503,
        "The connection could not be saved",
        "Intuit approved the connection, but it could not be stored just now. Nothing was saved.",
        "Wait a minute and start again. If it keeps happening, tell your Green Check contact.",
    ),
    "method_not_allowed": Failure(
        405, "This page cannot be used that way", "The request was not understood.", _START_AGAIN
    ),
    "page_not_found": Failure(404, "Page not found", "There is no page at this address.", _START_AGAIN),
}


def failure_page(result: str, company: str | None, retry_url: str | None, reference: str = "") -> tuple[int, str]:
    """(HTTP status, HTML) for a failure. `retry_url` is offered only when the caller has proved the
    browser started this flow (never to someone holding only a bad or stolen link)."""
    f = FAILURES[result]
    who = _e(company) if company else "the company"
    retry = ""
    if retry_url:
        retry = (
            f'<p><a class="button" href="{_e(retry_url)}">Start again</a></p>'
            '<p class="small">The button opens a fresh Connect link for this integration.</p>'
        )
    content = _RESULT.substitute(
        heading=_e(f.heading),
        what=_e(f.what).replace("{company}", who),
        todo=_e(f.todo).replace("{company}", who),
        retry=retry,
    )
    return f.status, _page(f.heading, content, tone=f.tone, reference=reference)
