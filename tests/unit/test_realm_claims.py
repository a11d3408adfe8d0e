"""The realm claim's pure parts: its name, its manifest, and reading its holder back (table-driven)."""

from __future__ import annotations

import pytest

from qbo_operator.core import realm_claims
from qbo_operator.core.realm_claims import Holder


@pytest.mark.parametrize(
    ("environment", "realm", "name"),
    [
        ("production", "9130355357481111", "qbo-realm-production-9130355357481111"),
        ("sandbox", "9130355357481111", "qbo-realm-sandbox-9130355357481111"),
        ("production", "1" * 32, "qbo-realm-production-" + "1" * 32),  # the longest realm id the gateway takes
    ],
)
def test_lease_name_is_per_environment_and_a_dns_label(environment: str, realm: str, name: str) -> None:
    assert realm_claims.lease_name(environment, realm) == name
    assert len(name) <= 63


def test_the_manifest_names_its_holder_and_reads_back() -> None:
    holder = Holder("tenant-a", "acme", "0b6d2c1e-uid")
    lease = realm_claims.manifest("qbo-system", "production", "42", holder)
    assert lease["metadata"]["namespace"] == "qbo-system"
    assert lease["metadata"]["name"] == "qbo-realm-production-42"
    assert lease["spec"] == {"holderIdentity": "tenant-a/acme"}
    assert realm_claims.holder_of(lease["metadata"]["annotations"]) == holder
    assert str(holder) == "tenant-a/acme" and holder.key == ("tenant-a", "acme")


@pytest.mark.parametrize(
    "annotations",
    [
        None,
        {},
        {
            "integrations.greencheckverified.com/claim-namespace": "a",
            "integrations.greencheckverified.com/claim-name": "b",
        },
        {
            "integrations.greencheckverified.com/claim-namespace": "a",
            "integrations.greencheckverified.com/claim-name": "b",
            "integrations.greencheckverified.com/claim-uid": "",
        },
    ],
)
def test_a_lease_that_is_not_a_well_formed_claim_has_no_holder(annotations: dict[str, str] | None) -> None:
    assert realm_claims.holder_of(annotations) is None
