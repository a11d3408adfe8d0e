"""One Intuit app per environment (issue 18): which variables make an app, what each command refuses at start,
which app an integration of each environment uses, and the refusal of an environment without one."""

from __future__ import annotations

import base64
from typing import Any

import pytest

from qbo_operator.core.config import (
    Component,
    ConfigError,
    Environment,
    app_problems,
    app_variables,
    load_settings,
    missing_credentials_message,
)
from qbo_operator.core.models import IntegrationSpec
from qbo_operator.core.status import Reason
from qbo_operator.reconciler.conditions import check_spec
from qbo_operator.reconciler.manifests import Owner, credentials_secret
from tests.support.config import PLATFORM, SANDBOX_APP

PRODUCTION = {
    "QBO_CLIENT_ID": "prod-id",
    "QBO_CLIENT_SECRET": "prod-secret",
    "QBO_WEBHOOK_VERIFIER_TOKEN": "prod-verifier",
}
COMPONENTS: list[Component] = ["operator", "gateway", "sync"]


@pytest.mark.parametrize(
    ("environment", "component", "expected"),
    [
        ("production", "sync", ("QBO_CLIENT_ID", "QBO_CLIENT_SECRET")),
        ("production", "operator", ("QBO_CLIENT_ID", "QBO_CLIENT_SECRET")),
        ("production", "gateway", ("QBO_CLIENT_ID", "QBO_CLIENT_SECRET", "QBO_WEBHOOK_VERIFIER_TOKEN")),
        ("sandbox", "sync", ("QBO_SANDBOX_CLIENT_ID", "QBO_SANDBOX_CLIENT_SECRET")),
        (
            "sandbox",
            "gateway",
            ("QBO_SANDBOX_CLIENT_ID", "QBO_SANDBOX_CLIENT_SECRET", "QBO_SANDBOX_WEBHOOK_VERIFIER_TOKEN"),
        ),
    ],
)
def test_the_variables_of_each_app(environment: Environment, component: Component, expected: tuple[str, ...]) -> None:
    assert app_variables(environment, component) == expected


# (name, component, the apps' variables given, the problems expected)
START_CASES: list[tuple[str, Component, dict[str, str], list[str]]] = [
    ("both apps", "gateway", {**PRODUCTION, **SANDBOX_APP}, []),
    ("production only", "gateway", PRODUCTION, []),
    ("sandbox only", "gateway", SANDBOX_APP, []),
    ("sandbox only, operator", "operator", {k: SANDBOX_APP[k] for k in list(SANDBOX_APP)[:2]}, []),
    ("production keys, no verifier, operator", "operator", {k: PRODUCTION[k] for k in list(PRODUCTION)[:2]}, []),
    (
        "production keys, no verifier, gateway",
        "gateway",
        {k: PRODUCTION[k] for k in list(PRODUCTION)[:2]},
        ["QBO_WEBHOOK_VERIFIER_TOKEN is required for `qbo-operator gateway` but is not set"],
    ),
    (
        "half a sandbox app",
        "sync",
        {**PRODUCTION, "QBO_SANDBOX_CLIENT_ID": "dev-id"},
        ["QBO_SANDBOX_CLIENT_SECRET is required for `qbo-operator sync` but is not set"],
    ),
    (
        "a sandbox secret without its id",
        "operator",
        {"QBO_SANDBOX_CLIENT_SECRET": "dev-secret"},
        ["QBO_SANDBOX_CLIENT_ID is required for `qbo-operator operator` but is not set"],
    ),
    (
        "no app at all",
        "sync",
        {},
        [
            "QBO_CLIENT_ID is required for `qbo-operator sync` (or QBO_SANDBOX_CLIENT_ID for sandbox companies "
            "only) but is not set",
            "QBO_CLIENT_SECRET is required for `qbo-operator sync` (or QBO_SANDBOX_CLIENT_SECRET for sandbox "
            "companies only) but is not set",
        ],
    ),
    ("blank values count as absent", "sync", {"QBO_CLIENT_ID": " ", "QBO_CLIENT_SECRET": ""}, ["no app"]),
]


@pytest.mark.parametrize(("name", "component", "given", "expected"), START_CASES, ids=[c[0] for c in START_CASES])
def test_start_up_refuses_half_an_app_or_none(
    name: str, component: Component, given: dict[str, str], expected: list[str]
) -> None:
    problems = app_problems(component, given)
    if expected == ["no app"]:
        assert problems == app_problems(component, {})
        return
    assert problems == expected
    if expected:
        with pytest.raises(ConfigError) as err:
            load_settings(component, {**PLATFORM, **given})
        assert err.value.problems == expected
    else:
        load_settings(component, {**PLATFORM, **given})


# (environment variables, environment asked for) -> (client id, secret, verifier, token URL, API URL, missing)
ROUTES: list[tuple[dict[str, str], Environment, tuple[str, str, str, str, str, tuple[str, ...]]]] = [
    (
        {**PRODUCTION, **SANDBOX_APP},
        "production",
        ("prod-id", "prod-secret", "prod-verifier", "https://oauth.platform.intuit.com/oauth2/v1/tokens/bearer",
         "https://quickbooks.api.intuit.com", ()),
    ),
    (
        {**PRODUCTION, **SANDBOX_APP},
        "sandbox",
        ("dev-id", "dev-secret", "dev-verifier", "https://oauth.platform.intuit.com/oauth2/v1/tokens/bearer",
         "https://sandbox-quickbooks.api.intuit.com", ()),
    ),
    (
        {**PRODUCTION, **SANDBOX_APP, "QBO_TOKEN_URL": "http://127.0.0.1:1/t", "QBO_API_URL": "http://127.0.0.1:1"},
        "sandbox",
        ("dev-id", "dev-secret", "dev-verifier", "http://127.0.0.1:1/t", "http://127.0.0.1:1", ()),
    ),
    (
        {**SANDBOX_APP, "QBO_TOKEN_URL": "http://127.0.0.1:1/t", "QBO_SANDBOX_TOKEN_URL": "http://127.0.0.1:2/t",
         "QBO_SANDBOX_API_URL": "http://127.0.0.1:2"},
        "sandbox",
        ("dev-id", "dev-secret", "dev-verifier", "http://127.0.0.1:2/t", "http://127.0.0.1:2", ()),
    ),
    (
        SANDBOX_APP,
        "production",
        ("", "", "", "https://oauth.platform.intuit.com/oauth2/v1/tokens/bearer",
         "https://quickbooks.api.intuit.com", ("QBO_CLIENT_ID", "QBO_CLIENT_SECRET")),
    ),
    (
        PRODUCTION,
        "sandbox",
        ("", "", "", "https://oauth.platform.intuit.com/oauth2/v1/tokens/bearer",
         "https://sandbox-quickbooks.api.intuit.com", ("QBO_SANDBOX_CLIENT_ID", "QBO_SANDBOX_CLIENT_SECRET")),
    ),
]  # fmt: skip


@pytest.mark.parametrize(("given", "environment", "expected"), ROUTES)
def test_an_integration_uses_the_app_of_its_environment(
    given: dict[str, str], environment: Environment, expected: tuple[str, str, str, str, str, tuple[str, ...]]
) -> None:
    settings = load_settings("gateway" if expected[0] else "sync", {**PLATFORM, **given})
    app = settings.for_environment(environment)
    got = (
        app.qbo_client_id,
        app.qbo_client_secret.get_secret_value(),
        app.qbo_webhook_verifier_token.get_secret_value(),
        app.qbo_token_url,
        app.api_url(environment),
        settings.missing_credentials(environment),
    )
    assert got == expected


@pytest.mark.parametrize(
    ("given", "tokens"),
    [
        ({**PRODUCTION, **SANDBOX_APP}, {"production": "prod-verifier", "sandbox": "dev-verifier"}),
        (PRODUCTION, {"production": "prod-verifier"}),
        (SANDBOX_APP, {"sandbox": "dev-verifier"}),
    ],
)
def test_the_gateway_knows_each_apps_verifier_token(given: dict[str, str], tokens: dict[str, str]) -> None:
    assert load_settings("gateway", {**PLATFORM, **given}).webhook_verifier_tokens() == tokens


@pytest.mark.parametrize(
    ("environment", "variables", "expected"),
    [
        (
            "sandbox",
            ("QBO_SANDBOX_CLIENT_ID", "QBO_SANDBOX_CLIENT_SECRET"),
            "spec.environment is sandbox, but the operator has no credentials for it: QBO_SANDBOX_CLIENT_ID and "
            "QBO_SANDBOX_CLIENT_SECRET are not set. Put the Intuit app's development keys there (the operator's "
            "credentials Secret), or use the other environment.",
        ),
        (
            "production",
            ("QBO_CLIENT_SECRET",),
            "spec.environment is production, but the operator has no credentials for it: QBO_CLIENT_SECRET is not "
            "set. Put the Intuit app's production keys there (the operator's credentials Secret), or use the other "
            "environment.",
        ),
    ],
)
def test_the_refusal_names_the_missing_variables(environment: str, variables: tuple[str, ...], expected: str) -> None:
    assert missing_credentials_message(environment, variables) == expected


def _spec(**over: Any) -> IntegrationSpec:
    return IntegrationSpec.model_validate({"companyId": "3f0b7c52-4a51-4ad4-9d8e-1b2c3d4e5f60", **over})


@pytest.mark.parametrize(
    ("spec", "connected", "missing", "reason"),
    [
        (
            {"environment": "sandbox"},
            None,
            ("QBO_SANDBOX_CLIENT_ID", "QBO_SANDBOX_CLIENT_SECRET"),
            "MissingCredentials",
        ),
        ({}, None, ("QBO_CLIENT_ID", "QBO_CLIENT_SECRET"), "MissingCredentials"),
        ({}, None, (), None),
        # What a person must change in the spec comes first: the environment back, or a valid schedule.
        ({"environment": "sandbox"}, "production", ("QBO_SANDBOX_CLIENT_ID",), "EnvironmentChanged"),
        ({"schedule": "61 2 * * *"}, None, ("QBO_CLIENT_ID",), "InvalidSchedule"),
    ],
)
def test_an_environment_without_an_app_is_a_spec_problem(
    spec: dict[str, Any], connected: str | None, missing: tuple[str, ...], reason: str | None
) -> None:
    problem = check_spec(_spec(**spec), "acme", connected, "UTC", missing)
    assert (problem.reason if problem else None) == reason
    if reason == Reason.MISSING_CREDENTIALS:
        assert problem is not None
        assert problem.message == missing_credentials_message(_spec(**spec).environment, missing)


@pytest.mark.parametrize(
    ("environment", "keys"),
    [
        ("production", {"QBO_CLIENT_ID": "prod-id", "QBO_CLIENT_SECRET": "prod-secret"}),
        ("sandbox", {"QBO_SANDBOX_CLIENT_ID": "dev-id", "QBO_SANDBOX_CLIENT_SECRET": "dev-secret"}),
    ],
)
def test_a_sync_job_gets_only_the_app_of_its_environment(environment: Environment, keys: dict[str, str]) -> None:
    settings = load_settings("operator", {**PLATFORM, **PRODUCTION, **SANDBOX_APP})
    owner = Owner(namespace="tenants", name="acme", uid="uid-1", home="qbo-system")
    secret = credentials_secret(owner.home, settings, environment)
    data = {k: base64.b64decode(v).decode() for k, v in secret["data"].items()}
    assert data == {**keys, "GREENCHECK_CLIENT_ID": "gc", "GREENCHECK_CLIENT_SECRET": "gc-secret"}
