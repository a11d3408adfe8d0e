"""The token Secret: one per integration, holding its QuickBooks grant. Its shape and every write to it.

Three processes write it, so its labels, owner and concurrency rules live here once:

- the gateway creates it after a Connect, or replaces it when it is this integration's (`store`);
- the sync and the operator's keep-alive replace its data after a refresh (`replace_data`), and the
  operator adopts it (`adopt`): both are JSON patches guarded by the resourceVersion the writer read,
  so a concurrent refresh is never overwritten;
- everyone reads it with `read_tokens` (strict: `Tokens.from_secret_data` names the bad key), except
  the gateway's look at an earlier connection, which must survive a broken Secret (`previous_connection`).

No token value is ever logged or put in a message."""

from __future__ import annotations

import copy
import logging
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from kubernetes_asyncio import client

from qbo_operator.core import names
from qbo_operator.core.kube import ApiException, Kube, owner_reference
from qbo_operator.core.models import Integration, Tokens, TokenSecretError, parse_rfc3339, secret_text

log = logging.getLogger(__name__)


class SecretMissing(Exception):
    def __init__(self, namespace: str, name: str) -> None:
        super().__init__(f"token Secret {namespace}/{name} does not exist")


class NotOurs(Exception):
    """A Secret of that name exists and belongs to something else: it is never overwritten."""


@dataclass(frozen=True)
class Stored:
    tokens: Tokens
    resource_version: str
    data: dict[str, str]


@dataclass(frozen=True)
class Previous:
    realm_id: str | None
    connected_at: datetime | None


# --- shape (pure) ----------------------------------------------------------------------------


def labels(integration_name: str) -> dict[str, str]:
    return {names.MANAGED_BY_LABEL: names.MANAGED_BY, names.INTEGRATION_LABEL: integration_name}


def manifest(
    namespace: str,
    integration_name: str,
    data: Mapping[str, str],
    *,
    name: str | None = None,
    owner: Mapping[str, Any] | None = None,
) -> dict[str, Any]:
    """The Secret as the gateway creates it. Without `owner` (bench and test fixtures) the operator
    adopts it on its next reconcile."""
    metadata: dict[str, Any] = {
        "name": name or names.token_secret_name(integration_name),
        "namespace": namespace,
        "labels": labels(integration_name),
    }
    if owner is not None:
        metadata["ownerReferences"] = [dict(owner)]
    return {"apiVersion": "v1", "kind": "Secret", "type": "Opaque", "metadata": metadata, "data": dict(data)}


def gateway_owner(integration: Integration) -> dict[str, Any]:
    """The gateway may not set blockOwnerDeletion (see `kube.owner_reference`)."""
    return owner_reference(integration.name, integration.uid, block_owner_deletion=False)


def owns(secret: client.V1Secret, integration: Integration) -> bool:
    """May the gateway overwrite this Secret? Only if it is this integration's (label or owner)."""
    if (secret.type or "Opaque") != "Opaque":
        return False
    meta = secret.metadata
    if ((meta.labels if meta else None) or {}).get(names.INTEGRATION_LABEL) == integration.name:
        return True
    return any(o.uid == integration.uid for o in (meta.owner_references if meta else None) or [])


def replacement(existing: Mapping[str, Any], integration: Integration, data: Mapping[str, str]) -> dict[str, Any]:
    """`existing` (this integration's Secret, as a plain dict) with our labels and owner and new `data`.
    Other labels and owners stay; its resourceVersion makes the PUT fail if someone wrote since."""
    body = copy.deepcopy(dict(existing))
    meta = body.setdefault("metadata", {})
    meta["labels"] = {**(meta.get("labels") or {}), **labels(integration.name)}
    others = [
        o
        for o in meta.get("ownerReferences") or []
        if not (o.get("kind") == names.KIND and o.get("name") == integration.name)
    ]
    meta["ownerReferences"] = [*others, gateway_owner(integration)]
    body["data"] = dict(data)
    return body


def adopted_owners(owners: Sequence[Mapping[str, Any]], owner_name: str, owner_uid: str) -> list[dict[str, Any]] | None:
    """The Secret's ownerReferences with the integration's added, or None when it already has one.
    Ours is the controller unless another reference already is (an object has at most one)."""
    if any(ref.get("uid") == owner_uid for ref in owners):
        return None
    controller = not any(ref.get("controller") for ref in owners)
    return [*(dict(ref) for ref in owners), owner_reference(owner_name, owner_uid, controller=controller)]


def previous_connection(data: Mapping[str, str] | None) -> Previous:
    """realm_id and connected_at of an existing token Secret, read leniently (a broken Secret that a
    person is repairing by reconnecting still tells us when the connection began)."""
    return Previous(_lenient_text(data, "realm_id"), _lenient_time(_lenient_text(data, "connected_at")))


def _lenient_text(data: Mapping[str, str] | None, key: str) -> str | None:
    try:
        return secret_text(data, key)
    except TokenSecretError:
        return None


def _lenient_time(text: str | None) -> datetime | None:
    try:
        return parse_rfc3339(text) if text else None
    except ValueError:
        return None


# --- reads and writes ------------------------------------------------------------------------


async def read_tokens(kube: Kube, namespace: str, name: str) -> Stored:
    """The Secret's tokens and version; SecretMissing or TokenSecretError (naming the key) otherwise."""
    secret = await kube.read_secret(namespace, name)
    if secret is None:
        raise SecretMissing(namespace, name)
    data: dict[str, str] = dict(secret.data or {})
    tokens = Tokens.from_secret_data(data)
    return Stored(tokens, str(secret.metadata.resource_version), data)


async def store(kube: Kube, integration: Integration, tokens: Tokens) -> None:
    """Create the token Secret, or replace this integration's existing one with its resourceVersion;
    a conflict (someone else wrote meanwhile) re-reads and retries once. NotOurs: left alone."""
    namespace, name = integration.namespace, integration.token_secret_name
    data = tokens.to_secret_data()
    for attempt in range(2):
        existing = await kube.read_secret(namespace, name)
        try:
            if existing is None:
                body = manifest(namespace, integration.name, data, name=name, owner=gateway_owner(integration))
                await kube.create_secret(namespace, body)
                return
            if not owns(existing, integration):
                raise NotOurs(f"Secret {namespace}/{name} is not this integration's")
            plain = kube.api.sanitize_for_serialization(existing)
            await kube.replace_secret(namespace, name, replacement(plain, integration, data))
            return
        except ApiException as exc:
            if exc.status == 409 and attempt == 0:
                log.info("Secret %s/%s changed while writing; re-reading once", namespace, name)
                continue
            raise


async def replace_data(
    kube: Kube, namespace: str, name: str, data: dict[str, str], resource_version: str
) -> client.V1Secret:
    """Replace `data` only if nobody wrote since `resource_version` (422 otherwise)."""
    ops = [{"op": "replace", "path": "/data", "value": data}]
    return await kube.patch_secret_if_unchanged(namespace, name, resource_version, ops)


async def adopt(
    kube: Kube, namespace: str, name: str, resource_version: str, owners: list[dict[str, Any]]
) -> client.V1Secret:
    """Set the ownerReferences (`adopted_owners`) only if nobody wrote since `resource_version`:
    a refresh may be writing the same Secret (422 otherwise)."""
    ops = [{"op": "add", "path": "/metadata/ownerReferences", "value": owners}]
    return await kube.patch_secret_if_unchanged(namespace, name, resource_version, ops)
