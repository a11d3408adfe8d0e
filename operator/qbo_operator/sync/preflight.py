"""Before a sync reads anything: is the integration there and connected, and is its token Secret usable?

Each refusal is a `SyncFailed` whose message says what a person must do. These "not connected"
refusals do not write `lastSync` (`record=False`): the Connected condition already shows why."""

from __future__ import annotations

import asyncio
import base64
import binascii
import logging

from aiohttp import ClientError

from qbo_operator.core.config import Trigger
from qbo_operator.core.kube import ApiException, Kube
from qbo_operator.core.models import Integration, Phase, SftpDelivery, TokenSecretError
from qbo_operator.core.names import SFTP_KNOWN_HOSTS, SFTP_PRIVATE_KEY
from qbo_operator.core.status import CONNECTED, READY, Reason
from qbo_operator.core.token_secret import SecretMissing, Stored, read_tokens
from qbo_operator.sync.qbo import QboClient

log = logging.getLogger("qbo_operator.sync.run")

# What a call to the API server can raise: an answer, or no connection at all.
KUBE_ERRORS = (ApiException, OSError, ClientError, asyncio.TimeoutError)


class SyncFailed(Exception):
    """Ends the run. `reason`: the Synced condition's reason (None leaves Synced alone); `record`: write
    lastSync (False for "not connected" preconditions, which the Connected condition already shows)."""

    def __init__(self, reason: Reason | None, message: str, *, record: bool = True, exit_code: int = 1) -> None:
        super().__init__(message)
        self.reason = reason
        self.record = record
        self.exit_code = exit_code


def why(exc: BaseException) -> str:
    """An API error in a few words, never its body: `HTTP 403`, or the exception's type."""
    status = getattr(exc, "status", None)
    return f"HTTP {status}" if isinstance(exc, ApiException) and status else type(exc).__name__


async def load_integration(kube: Kube, namespace: str, name: str) -> Integration:
    ref = f"{namespace}/{name}"
    try:
        return await kube.get_integration(namespace, name)
    except ApiException as exc:
        if exc.status == 404:
            raise SyncFailed(None, f"QuickbooksIntegration {ref} does not exist", record=False) from None
        raise SyncFailed(None, f"cannot read QuickbooksIntegration {ref} ({why(exc)})", record=False) from None
    except KUBE_ERRORS as exc:
        raise SyncFailed(None, f"cannot reach the Kubernetes API ({why(exc)})", record=False) from None


def wanted(integ: Integration, ref: str, trigger: Trigger) -> bool:
    """False when there is nothing to do (being deleted; suspended without a manual trigger)."""
    phase = integ.status.phase
    if integ.deleting:
        log.info("%s is being deleted, nothing to do", ref)
        return False
    if integ.spec.suspend and trigger != "Manual":
        log.info("%s is suspended, nothing to do", ref)
        return False
    if phase == Phase.ERROR:
        cond = integ.status.condition(READY)
        raise SyncFailed(
            None,
            record=False,
            message=f"{ref} is in phase Error ({cond.message if cond else 'invalid spec'}); fix the spec first",
        )
    if phase == Phase.DISCONNECTED:
        cond = integ.status.condition(CONNECTED)
        reason = f" ({cond.reason})" if cond else ""
        raise SyncFailed(
            None,
            f"{ref} is Disconnected{reason}; a person at the company must open the Connect link in "
            "status.authorizationURL",
            record=False,
        )
    return True


async def read_connection(kube: Kube, namespace: str, integ: Integration, ref: str) -> Stored:
    """The integration's token Secret, checked against the company the integration is connected to."""
    secret_name = integ.token_secret_name
    try:
        stored = await read_tokens(kube, namespace, secret_name)
    except SecretMissing:
        raise SyncFailed(
            None,
            f"{ref} is not connected yet (token Secret {secret_name} is missing or holds no tokens); "
            "open the Connect link in status.authorizationURL",
            record=False,
        ) from None
    except TokenSecretError as exc:
        raise SyncFailed(
            None, f"token Secret {secret_name} is unusable: {exc}; reconnect through the Connect link", record=False
        ) from None
    realm = stored.tokens.realm_id
    if integ.status.realm_id and integ.status.realm_id != realm:
        raise SyncFailed(
            None,
            record=False,
            message=f"token Secret {secret_name} is for QuickBooks company {realm} but the integration "
            f"is connected to {integ.status.realm_id}; reconnect through the Connect link",
        )
    try:
        QboClient.check_realm_id(realm)
    except ValueError:
        raise SyncFailed(
            None, f"token Secret {secret_name} has a malformed realm_id; reconnect", record=False
        ) from None
    return stored


async def read_sftp_keys(kube: Kube, namespace: str, sftp: SftpDelivery) -> tuple[str, str]:
    """The SFTP Secret's private key and pinned host key, before QuickBooks is read: a run that could not
    deliver should not spend QuickBooks reads. The values never appear in a message."""
    name = sftp.secret_name
    where = f"SFTP Secret {namespace}/{name} (spec.delivery.sftp.secretName)"
    try:
        secret = await kube.read_secret(namespace, name)
    except KUBE_ERRORS as exc:
        raise SyncFailed(Reason.JOB_FAILED, f"cannot read {where} ({why(exc)})") from None
    if secret is None:
        raise SyncFailed(
            Reason.DELIVERY_REFUSED,
            f"{where} does not exist: create it with the keys {SFTP_PRIVATE_KEY} and {SFTP_KNOWN_HOSTS}",
        )
    data = secret.data or {}
    values: dict[str, str] = {}
    for key in (SFTP_PRIVATE_KEY, SFTP_KNOWN_HOSTS):
        try:
            values[key] = base64.b64decode(data.get(key) or "", validate=True).decode().strip()
        except (binascii.Error, UnicodeDecodeError):
            values[key] = ""
    missing = [k for k, v in values.items() if not v]
    if missing:
        raise SyncFailed(Reason.DELIVERY_REFUSED, f"{where} has no usable {' or '.join(missing)}")
    return values[SFTP_PRIVATE_KEY] + "\n", values[SFTP_KNOWN_HOSTS] + "\n"
