"""Which refused token request means what (docs/qbo.md "Corrections" 5): only `invalid_grant` is a dead grant;
`invalid_client` / `unauthorized_client` (or a bare 401) is the operator's own app; the rest is transient."""

from __future__ import annotations

import pytest

from qbo_operator.core.config import Settings
from qbo_operator.core.oauth import OAuthError, TokenErrorKind, classify
from qbo_operator.core.tokens import AppCredentialsRejected, GrantDead

DEAD, APP, TRANSIENT = TokenErrorKind.DEAD_GRANT, TokenErrorKind.APP_CREDENTIALS, TokenErrorKind.TRANSIENT


@pytest.mark.parametrize(
    ("error", "status", "kind"),
    [
        ("invalid_grant", 400, DEAD),
        ("invalid_grant", None, DEAD),
        ("invalid_client", 401, APP),
        ("invalid_client", 400, APP),
        ("invalid_client", None, APP),
        ("unauthorized_client", 400, APP),
        ("unauthorized_client", 401, APP),
        ("missing_token", 401, APP),  # 401 with a body that names no error: client authentication failed
        ("unavailable", 401, APP),  # 401 with a body that is not JSON
        ("invalid_grant", 500, TRANSIENT),  # a 5xx is the server's trouble, whatever its body says
        ("invalid_client", 503, TRANSIENT),
        ("unavailable", 502, TRANSIENT),
        ("unavailable", None, TRANSIENT),  # no answer at all
        ("invalid_request", 400, TRANSIENT),
        ("unsupported_grant_type", 400, TRANSIENT),
        ("missing_token", 200, TRANSIENT),
        ("invalid_scope", 400, TRANSIENT),
    ],
)
def test_classify(error: str, status: int | None, kind: TokenErrorKind) -> None:
    assert classify(error, status) is kind
    exc = OAuthError(error, "refused", status=status)
    assert exc.kind is kind
    assert exc.dead_grant == (kind is DEAD)
    assert exc.app_credentials == (kind is APP)


@pytest.mark.parametrize(
    ("environment", "variables"),
    [
        ("production", "QBO_CLIENT_ID and QBO_CLIENT_SECRET"),
        ("sandbox", "QBO_SANDBOX_CLIENT_ID and QBO_SANDBOX_CLIENT_SECRET"),
    ],
)
def test_app_credentials_rejected_names_the_apps_variables(environment: str, variables: str) -> None:
    settings = Settings(qbo_client_id="prod-id", qbo_sandbox_client_id="dev-id").for_environment(environment)  # type: ignore[arg-type]
    exc = AppCredentialsRejected(settings.environment, "invalid_client")
    assert not isinstance(exc, GrantDead)
    assert exc.environment == environment
    assert f"fix {variables} in the operator's credentials Secret" in str(exc)
    assert "invalid_client" in str(exc)
