"""Which QuickBooks company a new grant is for (issue 17, finding 1; docs/gateway.md "Verifying the realm").

Intuit's token answer does not name the company, and the `realmId` in the redirect is whatever the browser
sends back. Intuit answers a CompanyInfo read only for the company the grant was issued for (403 `003100`
or 401 for any other), so a read of the claimed realm with the new access token is Intuit's own word."""

from __future__ import annotations

import logging
from enum import StrEnum

import httpx

from qbo_operator.core import names

log = logging.getLogger(__name__)

TIMEOUT = httpx.Timeout(20.0, connect=5.0)


class Verdict(StrEnum):
    VERIFIED = "verified"  # Intuit read the company with this token
    REFUSED = "refused"  # Intuit refused (401/403): the token is not for this company
    UNAVAILABLE = "unavailable"  # no answer that says either way (network, 5xx, throttled)


def verdict_for(status_code: int) -> Verdict:
    """What an HTTP status from the CompanyInfo read says about the claimed realm."""
    if status_code == 200:
        return Verdict.VERIFIED
    if status_code in (401, 403):
        return Verdict.REFUSED
    return Verdict.UNAVAILABLE


def company_info_url(api_url: str, realm_id: str) -> str:
    return f"{api_url.rstrip('/')}/v3/company/{realm_id}/companyinfo/{realm_id}"


async def verify_realm(api_url: str, realm_id: str, access_token: str) -> Verdict:
    """Read CompanyInfo of `realm_id` with `access_token`; the answer's status is the verdict."""
    try:
        async with httpx.AsyncClient(timeout=TIMEOUT) as http:
            response = await http.get(
                company_info_url(api_url, realm_id),
                params={"minorversion": names.QBO_MINOR_VERSION},
                headers={"Authorization": f"Bearer {access_token}", "Accept": "application/json"},
            )
    except httpx.HTTPError as exc:
        log.warning("CompanyInfo read for realm %s failed: %s", realm_id, type(exc).__name__)
        return Verdict.UNAVAILABLE
    verdict = verdict_for(response.status_code)
    if verdict is not Verdict.VERIFIED:
        log.info("CompanyInfo read for realm %s: HTTP %d (%s)", realm_id, response.status_code, verdict.value)
    return verdict
