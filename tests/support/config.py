"""One complete operator configuration for the tests that load settings: the production Intuit app, the
sandbox app kept apart (it is optional), and the rest every process needs."""

from __future__ import annotations

PRODUCTION_APP = {
    "QBO_CLIENT_ID": "client",
    "QBO_CLIENT_SECRET": "secret-value",
    "QBO_WEBHOOK_VERIFIER_TOKEN": "verifier",
}
SANDBOX_APP = {
    "QBO_SANDBOX_CLIENT_ID": "dev-id",
    "QBO_SANDBOX_CLIENT_SECRET": "dev-secret",
    "QBO_SANDBOX_WEBHOOK_VERIFIER_TOKEN": "dev-verifier",
}
PLATFORM = {
    "QBO_STATE_SIGNING_KEY": "s" * 32,
    "QBO_REDIRECT_URI": "https://qbo.example.com/oauth/callback",
    "QBO_GATEWAY_URL": "https://qbo.example.com",
    "GREENCHECK_API_URL": "https://sandbox-api.greencheckverified.com",
    "GREENCHECK_CLIENT_ID": "gc",
    "GREENCHECK_CLIENT_SECRET": "gc-secret",
    "GREENCHECK_SERVICE_PROVIDER_ID": "sp-1",
}
GOOD = {**PRODUCTION_APP, **PLATFORM}
