"""Manifests and tokens the tests put on the control plane, named as the product names them (`core.names`)."""

from __future__ import annotations

import base64
import uuid
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Any

from qbo_operator.core import names
from qbo_operator.core.kube import owner_reference
from qbo_operator.core.models import Tokens
from qbo_operator.core.oauth import TokenResponse

if TYPE_CHECKING:
    from qbo_operator.harness.sandbox.qbo import QboSandbox

# Green Check CRB ids: the integration's spec.companyId is the company's id at Green Check.
COMPANY_IDS = (
    "5f0c3a2e-8d1b-4c7e-9a61-2b7f3c9d4e10",
    "0b8f2d4e-6a1c-4e3b-9d7f-1a2b3c4d5e6f",
    "9c1d2e3f-4a5b-4c6d-8e7f-0a1b2c3d4e5f",
)
COMPANY_ID = COMPANY_IDS[0]
# The uid of an ownerReference to an integration that `kube.apply` fills in (the integration's uid is known
# only once it exists).
OWNER_UID_PENDING = ""


def new_company_id() -> str:
    return str(uuid.uuid4())


# A complete spec.delivery.sftp block (the CRD and refusal tests take fields out of it).
SFTP = {
    "host": "sftp.greencheck.example",
    "username": "acme",
    "directory": "/upload",
    "locationId": "loc-1",
    "secretName": "acme-sftp",
}


def integration(namespace: str, name: str, **spec: Any) -> dict[str, Any]:
    """A QuickbooksIntegration; `spec` adds or overrides fields, and a field given as None is left out."""
    fields = {"companyId": COMPANY_ID, "companyName": f"{name} Co", **spec}
    return {
        "apiVersion": names.API_VERSION,
        "kind": names.KIND,
        "metadata": {"name": name, "namespace": namespace},
        "spec": {k: v for k, v in fields.items() if v is not None},
    }


def token_secret(
    namespace: str,
    integration_name: str,
    tokens: Tokens | None,
    data: dict[str, str] | None = None,
    name: str | None = None,
    labelled: bool = True,
    owned: bool = True,
) -> dict[str, Any]:
    """The token Secret as the product has it: the operator's (labelled, owned by the integration's uid),
    filled as the gateway fills it. Its ownerReference carries an empty uid that `kube.apply` fills with
    the integration's (`OWNER_UID_PENDING`). `owned=False` / `labelled=False` model a Secret written by
    hand, which the operator must never use."""
    labels = {names.MANAGED_BY_LABEL: names.MANAGED_BY, names.INTEGRATION_LABEL: integration_name}
    metadata: dict[str, Any] = {
        "name": name or names.token_secret_name(integration_name),
        "namespace": namespace,
        **({"labels": labels} if labelled else {}),
    }
    if owned:
        metadata["ownerReferences"] = [owner_reference(integration_name, OWNER_UID_PENDING)]
    return {
        "apiVersion": "v1",
        "kind": "Secret",
        "type": "Opaque",
        "metadata": metadata,
        "data": data if data is not None else (tokens.to_secret_data() if tokens else {}),
    }


def issued_tokens(sb: QboSandbox, realm: str, **over: Any) -> Tokens:
    """Tokens the QBO sandbox really issued for `realm` (a live grant), as the gateway would store them."""
    now = datetime.now(UTC).replace(microsecond=0)
    tokens = TokenResponse.model_validate(sb.issue_tokens(realm)).to_tokens(realm, now, now)
    return tokens.model_copy(update=over) if over else tokens


def fake_tokens(realm: str, **over: Any) -> Tokens:
    """Tokens no server knows: enough for everything but a refresh or a revocation."""
    now = datetime.now(UTC).replace(microsecond=0)
    values: dict[str, Any] = {
        "access_token": f"at-{realm}-{now.timestamp():.0f}-opaque-value",
        "refresh_token": f"rt-{realm}-{now.timestamp():.0f}-opaque-value",
        "realm_id": realm,
        "scope": names.ACCOUNTING_SCOPE,
        "connected_at": now,
        "expires_at": now + timedelta(hours=1),
        "refresh_token_expires_at": now + timedelta(days=100),
        "refresh_token_hard_expires_at": now + timedelta(days=1800),
        "refreshed_at": now,
        **over,
    }
    return Tokens(**values)


def b64(text: str) -> str:
    return base64.b64encode(text.encode()).decode()


def decoded(secret: dict[str, Any]) -> dict[str, str]:
    """A Secret's `data`, base64-decoded."""
    return {k: base64.b64decode(v).decode() for k, v in (secret.get("data") or {}).items()}
