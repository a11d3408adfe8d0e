"""The token Secret and CR parsing: a bad Secret names the key a person must fix."""

from __future__ import annotations

import base64
from datetime import UTC, datetime, timedelta, timezone

import pytest

from qbo_operator.core import names
from qbo_operator.core.models import (
    Integration,
    TimeZoneMissing,
    Tokens,
    TokenSecretError,
    parse_rfc3339,
    rfc3339,
    secret_text,
)


def b64(text: str) -> str:
    return base64.b64encode(text.encode()).decode()


def secret_data(**overrides: str | None) -> dict[str, str]:
    plain = {
        "access_token": "at-123",
        "refresh_token": "rt-456",
        "realm_id": "9130355357483456",
        "scope": names.ACCOUNTING_SCOPE,
        "connected_at": "2026-11-24T17:03:11Z",
        "expires_at": "2026-11-24T18:03:11Z",
        "refresh_token_expires_at": "2027-03-04T17:03:11Z",
    }
    plain.update({k: v for k, v in overrides.items() if v is not None})
    for k, v in overrides.items():
        if v is None:
            plain.pop(k, None)
    return {k: b64(v) for k, v in plain.items()}


def test_round_trip() -> None:
    tokens = Tokens.from_secret_data(secret_data(refresh_token_hard_expires_at="2031-11-24T17:03:11Z"))
    assert tokens.connected_at == datetime(2026, 11, 24, 17, 3, 11, tzinfo=UTC)
    assert Tokens.from_secret_data(tokens.to_secret_data()) == tokens
    assert "at-123" not in repr(tokens) and "rt-456" not in repr(tokens)


@pytest.mark.parametrize(
    ("overrides", "key", "problem"),
    [
        ({"access_token": None}, "access_token", "is missing"),
        ({"realm_id": None}, "realm_id", "is missing"),
        ({"refresh_token": "  "}, "refresh_token", "is empty"),
        ({"expires_at": "tomorrow"}, "expires_at", "is not an RFC 3339 time"),
        ({"connected_at": "2026-11-24T17:03:11"}, "connected_at", "has no time zone"),
    ],
)
def test_bad_secrets_name_the_key(overrides: dict[str, str | None], key: str, problem: str) -> None:
    with pytest.raises(TokenSecretError) as err:
        Tokens.from_secret_data(secret_data(**overrides))
    assert err.value.key == key and problem in str(err.value)


def test_undecodable_value_names_the_key() -> None:
    data = secret_data()
    data["scope"] = "%%%not-base64"
    with pytest.raises(TokenSecretError) as err:
        Tokens.from_secret_data(data)
    assert err.value.key == "scope"


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("2026-11-24T17:03:11Z", datetime(2026, 11, 24, 17, 3, 11, tzinfo=UTC)),
        ("2026-11-24T17:03:11.250Z", datetime(2026, 11, 24, 17, 3, 11, 250000, tzinfo=UTC)),
        ("2026-11-24T09:03:11-08:00", datetime(2026, 11, 24, 9, 3, 11, tzinfo=timezone(timedelta(hours=-8)))),
        ("2026-11-24T17:03:11+00:00", datetime(2026, 11, 24, 17, 3, 11, tzinfo=UTC)),
        ("2026-11-24T17:03:11", TimeZoneMissing),
        ("tomorrow", ValueError),
        ("", ValueError),
    ],
)
def test_parse_rfc3339(text: str, expected: datetime | type[Exception]) -> None:
    if isinstance(expected, datetime):
        parsed = parse_rfc3339(text)
        assert parsed == expected and parsed.utcoffset() == expected.utcoffset()
        assert parse_rfc3339(rfc3339(parsed)) == parsed.replace(microsecond=0)
    else:
        with pytest.raises(expected):
            parse_rfc3339(text)


@pytest.mark.parametrize(
    ("data", "expected"),
    [
        (None, None),
        ({}, None),
        ({"realm_id": b64(" 123 ")}, "123"),
        ({"realm_id": b64("   ")}, "is empty"),
        ({"realm_id": "%%%"}, "is not valid base64 text"),
        ({"realm_id": base64.b64encode(b"\xff").decode()}, "is not valid base64 text"),
    ],
)
def test_secret_text(data: dict[str, str] | None, expected: str | None) -> None:
    if expected is None or not expected.startswith("is "):
        assert secret_text(data, "realm_id") == expected
    else:
        with pytest.raises(TokenSecretError, match=expected) as err:
            secret_text(data, "realm_id")
        assert err.value.key == "realm_id"


def test_integration_from_object_defaults() -> None:
    obj = {
        "metadata": {"name": "acme", "namespace": "tenants", "uid": "u1", "generation": 3},
        "spec": {"companyId": "5f0c3a2e-8d1b-4c7e-9a61-2b7f3c9d4e10"},
    }
    integration = Integration.from_object(obj)
    assert integration.spec.environment == "production" and integration.spec.revoke_on_delete
    assert integration.token_secret_name == "acme-qbo-tokens"
    assert integration.status.phase is None and integration.sync_requested is None


@pytest.mark.parametrize(
    ("name", "fn", "limit"),
    [
        ("a" * 60, names.token_secret_name, 63),
        ("b" * 63, names.token_secret_name, 63),
        ("acme-dispensary", names.gateway_access_name, 63),
    ],
)
def test_derived_names_fit_and_are_stable(name: str, fn: object, limit: int) -> None:
    first = fn(name)  # type: ignore[operator]
    assert len(first) <= limit and first == fn(name)  # type: ignore[operator]
    assert fn(name + "x") != first  # type: ignore[operator]


@pytest.mark.parametrize(
    ("given", "method", "sftp"),
    [
        (None, "api", None),  # written before spec.delivery existed, or parsed without the API server's defaults
        ({"method": "api"}, "api", None),
        (
            {
                "method": "sftp",
                "sftp": {
                    "host": "sftp.example",
                    "username": "acme",
                    "directory": "/upload",
                    "locationId": "loc-1",
                    "secretName": "acme-sftp",
                },
            },
            "sftp",
            ("sftp.example", 22, "acme", "/upload", "loc-1", "acme-sftp"),
        ),
    ],
)
def test_delivery_is_parsed_from_the_resource(
    given: dict[str, object] | None, method: str, sftp: tuple[object, ...] | None
) -> None:
    spec: dict[str, object] = {"companyId": "5f0c3a2e-8d1b-4c7e-9a61-2b7f3c9d4e10"}
    if given is not None:
        spec["delivery"] = given
    obj = {"metadata": {"namespace": "tenants", "name": "acme", "uid": "u"}, "spec": spec}
    delivery = Integration.from_object(obj).spec.delivery
    assert delivery.method == method
    got = delivery.sftp
    assert (
        None if got is None else (got.host, got.port, got.username, got.directory, got.location_id, got.secret_name)
    ) == sftp
