"""Helpers for the sync tests: QBO sandbox companies, a token source backed by the sandbox's real
token endpoint, and the expected Green Check records computed independently from sandbox data."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field
from datetime import UTC, datetime
from decimal import ROUND_HALF_UP, Decimal
from typing import Any

from pydantic import SecretStr

from qbo_operator.core import oauth
from qbo_operator.core.config import Settings
from qbo_operator.harness.sandbox.qbo import QboSandbox
from qbo_operator.harness.sandbox.qbo_store import parse_time

QBO_CLIENT_ID = "ABsync-test-client-0001"
QBO_CLIENT_SECRET = "qbo-client-secret-3c1d9e8f7a6b"
REDIRECT_URI = "http://127.0.0.1:8000/oauth/callback"


def make_qbo(**kw: Any) -> QboSandbox:
    return QboSandbox(QBO_CLIENT_ID, QBO_CLIENT_SECRET, REDIRECT_URI, "verifier-token", **kw)


def qbo_settings(sb: QboSandbox) -> Settings:
    return Settings(
        qbo_client_id=QBO_CLIENT_ID,
        qbo_client_secret=SecretStr(QBO_CLIENT_SECRET),
        qbo_token_url=sb.token_url,
        qbo_api_url=sb.api_url,
    )


@dataclass
class SandboxTokens:
    """A TokenSource for client tests: refreshes through the sandbox's token endpoint (oauth.refresh)."""

    settings: Settings
    access: str
    refresh: str
    refreshes: int = 0
    rejected: list[str] = field(default_factory=list)

    @classmethod
    def issue(cls, sb: QboSandbox, realm: str) -> SandboxTokens:
        reply = sb.issue_tokens(realm)
        return cls(qbo_settings(sb), reply["access_token"], reply["refresh_token"])

    async def access_token(self) -> str:
        return self.access

    async def refreshed_access_token(self, rejected: str) -> str:
        self.rejected.append(rejected)
        reply = await asyncio.to_thread(oauth.refresh, self.settings, self.refresh)
        self.access, self.refresh = reply.access_token, reply.refresh_token
        self.refreshes += 1
        return self.access


def cents(value: Any) -> int:
    return int((Decimal(str(value)) * 100).quantize(Decimal(1), rounding=ROUND_HALF_UP))


def expected_records(sb: QboSandbox, realm: str, connected_at: datetime) -> dict[str, dict[str, Any]]:
    """external_id → {payment id, invoice id, applied cents}: what Green Check must end up holding.

    Written from the sandbox's raw Intuit JSON without the product's mapping code: payments created
    at or after connectedAt, not voided, one record per invoice they are applied to."""
    company = sb.companies[realm]
    out: dict[str, dict[str, Any]] = {}
    for pay in company.payments.values():
        created = parse_time(pay["MetaData"]["CreateTime"])
        if created < connected_at:
            continue
        if str(pay.get("PrivateNote", "")).startswith("Voided") and Decimal(str(pay["TotalAmt"])) == 0:
            continue
        applied: dict[str, int] = {}
        for line in pay.get("Line", []):
            for link in line.get("LinkedTxn", []):
                if link["TxnType"] == "Invoice" and link["TxnId"] in company.invoices:
                    applied[link["TxnId"]] = applied.get(link["TxnId"], 0) + cents(line["Amount"])
        for inv_id, amount in applied.items():
            out[f"qbo:{realm}:payment:{pay['Id']}:invoice:{inv_id}"] = {
                "payment": pay["Id"],
                "invoice": inv_id,
                "amount": amount,
                "doc_number": company.invoices[inv_id].get("DocNumber"),
            }
    return out


def utc(text: str) -> datetime:
    return datetime.fromisoformat(text.replace("Z", "+00:00")).astimezone(UTC)
