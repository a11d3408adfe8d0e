"""Start-up configuration, the sync's tuning and run metadata: each problem is one line naming the variable."""

from __future__ import annotations

import pytest

from qbo_operator.core.config import ConfigError, job_name_from_env, load_settings, trigger_from_env
from tests.support.config import GOOD


@pytest.mark.parametrize("component", ["operator", "gateway", "sync"])
def test_complete_configuration_loads(component: str) -> None:
    settings = load_settings(component, GOOD)  # type: ignore[arg-type]
    assert settings.qbo_client_id == "client"
    assert "secret-value" not in repr(settings) and "secret-value" not in str(settings)
    assert settings.api_url("production") == "https://quickbooks.api.intuit.com"
    assert settings.api_url("sandbox") == "https://sandbox-quickbooks.api.intuit.com"


@pytest.mark.parametrize(
    ("component", "change", "expected"),
    [
        ("gateway", {"QBO_CLIENT_ID": ""}, "QBO_CLIENT_ID is required for `qbo-operator gateway`"),
        ("sync", {"GREENCHECK_API_URL": None}, "GREENCHECK_API_URL is required"),
        (
            "operator",
            {"QBO_GATEWAY_URL": "qbo.example.com"},
            "QBO_GATEWAY_URL='qbo.example.com' is not an http(s) URL",
        ),
        ("operator", {"QBO_STATE_SIGNING_KEY": "short"}, "QBO_STATE_SIGNING_KEY must be at least 32 bytes"),
        ("operator", {"QBO_DEFAULT_SCHEDULE": "H 2 * *"}, "QBO_DEFAULT_SCHEDULE:"),
        ("operator", {"QBO_DEFAULT_SCHEDULE": "61 2 * * *"}, "not a valid 5-field cron schedule"),
        ("operator", {"QBO_DEFAULT_TIME_ZONE": "Mars/Olympus"}, "not an IANA time zone"),
        ("sync", {"QBO_API_URL": "ftp://x"}, "QBO_API_URL='ftp://x' is not an http(s) URL"),
    ],
)
def test_each_problem_names_its_variable(component: str, change: dict[str, str | None], expected: str) -> None:
    env = {k: v for k, v in {**GOOD, **change}.items() if v is not None}
    with pytest.raises(ConfigError) as err:
        load_settings(component, env)  # type: ignore[arg-type]
    assert any(expected in line for line in err.value.problems), err.value.problems
    assert len(err.value.problems) == 1


def test_all_problems_at_once() -> None:
    with pytest.raises(ConfigError) as err:
        load_settings("gateway", {})
    assert len(err.value.problems) == 6
    assert all(line.endswith("is not set") for line in err.value.problems)


def test_secret_values_never_in_errors() -> None:
    env = {**GOOD, "QBO_STATE_SIGNING_KEY": "tiny-secret"}
    with pytest.raises(ConfigError) as err:
        load_settings("operator", env)
    assert "tiny-secret" not in str(err.value)


def test_discovery_document_supplies_the_oauth_endpoints() -> None:
    from qbo_operator.harness.sandbox.qbo import QboSandbox

    sandbox = QboSandbox(client_id="c", client_secret="s", redirect_uri="http://127.0.0.1/oauth/callback")
    with sandbox.serve_in_thread("127.0.0.1", 0):
        settings = load_settings("sync", {**GOOD, "QBO_DISCOVERY_URL": sandbox.discovery_url})
        explicit = load_settings(
            "sync", {**GOOD, "QBO_DISCOVERY_URL": sandbox.discovery_url, "QBO_TOKEN_URL": "https://token.example"}
        )
        expected = (sandbox.auth_url, sandbox.token_url, sandbox.revoke_url)
    assert (settings.qbo_auth_url, settings.qbo_token_url, settings.qbo_revoke_url) == expected
    assert explicit.qbo_token_url == "https://token.example"  # an explicit variable still wins


@pytest.mark.parametrize("path", ["/nothing-here", "/_sandbox/state"])
def test_a_bad_discovery_url_is_one_clear_line(path: str) -> None:
    from qbo_operator.harness.sandbox.qbo import QboSandbox

    sandbox = QboSandbox(client_id="c", client_secret="s", redirect_uri="http://127.0.0.1/oauth/callback")
    with sandbox.serve_in_thread("127.0.0.1", 0) as base_url, pytest.raises(ConfigError) as err:
        load_settings("sync", {**GOOD, "QBO_DISCOVERY_URL": base_url + path})
    assert len(err.value.problems) == 1 and err.value.problems[0].startswith("QBO_DISCOVERY_URL: ")


@pytest.mark.parametrize("value", ["qbo-gateway", "a/b/c", "/gw", "ns/"])
def test_gateway_service_account_must_be_namespace_slash_name(value: str) -> None:
    with pytest.raises(ConfigError) as err:
        load_settings("operator", {**GOOD, "QBO_GATEWAY_SERVICE_ACCOUNT": value})
    assert err.value.problems == [f"QBO_GATEWAY_SERVICE_ACCOUNT={value!r} must be <namespace>/<name>"]


# --- the sync's tuning and run metadata ------------------------------------------------------


@pytest.mark.parametrize(
    ("env", "hostname", "expected"),
    [
        ({"JOB_NAME": "acme-qbo-sync-29123456"}, "whatever", "acme-qbo-sync-29123456"),
        ({}, "acme-qbo-sync-29123456-x7k2p", "acme-qbo-sync-29123456"),  # a Job pod's hostname
        ({"JOB_NAME": "  "}, "acme-qbo-sync-manual-abcde", "acme-qbo-sync-manual"),
        ({}, "laptop", "laptop"),
        ({}, "my-laptop-long", "my-laptop-long"),  # no 5-character pod suffix
    ],
)
def test_job_name(env: dict[str, str], hostname: str, expected: str) -> None:
    assert job_name_from_env(env, hostname) == expected


@pytest.mark.parametrize(
    ("value", "expected"),
    [("", "Schedule"), ("Manual", "Manual"), ("webhook", "Webhook"), (" schedule ", "Schedule")],
)
def test_trigger(value: str, expected: str) -> None:
    assert trigger_from_env({"QBO_SYNC_TRIGGER": value}) == expected


def test_bad_trigger_is_a_config_error() -> None:
    with pytest.raises(ConfigError, match="QBO_SYNC_TRIGGER='Nightly' must be Schedule, Manual or Webhook"):
        trigger_from_env({"QBO_SYNC_TRIGGER": "Nightly"})
