"""Names that users, the chart and stored state depend on: chosen once, never renamed."""

from __future__ import annotations

import hashlib

GROUP = "integrations.greencheckverified.com"
VERSION = "v1alpha1"
API_VERSION = f"{GROUP}/{VERSION}"
KIND = "QuickbooksIntegration"
PLURAL = "quickbooksintegrations"

FINALIZER = f"{GROUP}/finalizer"
ANNOTATION_PREFIX = GROUP  # kopf's progress/diff-base annotations live under this prefix
SYNC_REQUESTED_ANNOTATION = f"{GROUP}/sync-requested-at"
INTEGRATION_LABEL = f"{GROUP}/integration"
# On the sync objects in the release namespace (no ownerReference can cross namespaces): whose they are.
INTEGRATION_NAMESPACE_LABEL = f"{GROUP}/integration-namespace"
INTEGRATION_UID_LABEL = f"{GROUP}/integration-uid"
TRIGGER_ANNOTATION = f"{GROUP}/trigger"
MANAGED_BY_LABEL = "app.kubernetes.io/managed-by"
MANAGED_BY = "qbo-operator"

ACCOUNTING_SCOPE = "com.intuit.quickbooks.accounting"
# The Accounting API minor version every request names (the sync's reads and the gateway's realm check).
QBO_MINOR_VERSION = "75"

# The SFTP Secret's keys (spec.delivery.sftp.secretName): the private key under the key of Kubernetes'
# `kubernetes.io/ssh-auth` Secret type, so `kubectl create secret generic --type=kubernetes.io/ssh-auth` fits,
# and the server's pinned host key in OpenSSH `known_hosts` form (no trust on first use).
SFTP_PRIVATE_KEY = "ssh-privatekey"
SFTP_KNOWN_HOSTS = "known_hosts"

# Kubernetes object names are at most 63 characters for labels/CronJob-created Jobs (CronJob names ≤ 52).
_CRONJOB_MAX = 52
_DNS_MAX = 63


def shorten(name: str, suffix: str, limit: int) -> str:
    """`name + suffix`, or a stable hash-shortened form when that is longer than `limit`."""
    full = f"{name}{suffix}"
    if len(full) <= limit:
        return full
    digest = hashlib.sha256(name.encode()).hexdigest()[:8]
    keep = limit - len(suffix) - len(digest) - 1
    return f"{name[:keep].rstrip('-')}-{digest}{suffix}"


def token_secret_name(name: str) -> str:
    return shorten(name, "-qbo-tokens", _DNS_MAX)


def sync_workload_name(namespace: str, name: str) -> str:
    """The sync CronJob and its ServiceAccount, in the release namespace: one per integration of any namespace,
    so the name carries both (and a digest of both, as `a-b`/`c` and `a`/`b-c` would otherwise meet)."""
    digest = hashlib.sha256(f"{namespace}/{name}".encode()).hexdigest()[:8]
    suffix = f"-{digest}-qbo-sync"
    return f"{f'{namespace}-{name}'[: _CRONJOB_MAX - len(suffix)].rstrip('-')}{suffix}"


def sync_credentials_name(environment: str) -> str:
    """The one copy of the platform credentials a sync Job of `environment` reads, in the release namespace."""
    return f"qbo-sync-credentials-{environment}"


def gateway_access_name(name: str) -> str:
    """Role and RoleBinding that let the gateway read and update exactly this integration's token Secret."""
    return shorten(name, "-qbo-gateway", _DNS_MAX)


def sync_access_name(name: str) -> str:
    """The Role and RoleBinding, in the integration's namespace, that let its sync Job reach its token Secret and
    its CR."""
    return shorten(name, "-qbo-sync", _DNS_MAX)
