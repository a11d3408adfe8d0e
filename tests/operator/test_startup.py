"""`qbo-operator run` refuses to start with missing or malformed configuration: one line per variable,
no traceback, exit code 2, and no secret value echoed."""

from __future__ import annotations

import os
import subprocess

from tests.support.operator import QBO_CLIENT_SECRET
from tests.support.paths import VENV_BIN


def run(env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    base = {k: v for k, v in os.environ.items() if not k.startswith(("QBO_", "GREENCHECK_"))}
    base["KUBECONFIG"] = "/nonexistent/kubeconfig"  # never reached: configuration is checked first
    return subprocess.run(
        [str(VENV_BIN / "qbo-operator"), "run", *args],
        env={**base, **env},
        capture_output=True,
        text=True,
        timeout=60,
    )


GOOD = {
    "QBO_CLIENT_ID": "id",
    "QBO_CLIENT_SECRET": QBO_CLIENT_SECRET,
    "QBO_STATE_SIGNING_KEY": "x" * 40,
    "QBO_GATEWAY_URL": "https://qbo.example.test",
    "GREENCHECK_API_URL": "https://api.greencheck.example",
    "GREENCHECK_CLIENT_ID": "gc",
    "GREENCHECK_CLIENT_SECRET": "gc-secret-value-123",
    "GREENCHECK_SERVICE_PROVIDER_ID": "sp",
}


def test_each_bad_variable_gets_one_line() -> None:
    env = {
        **GOOD,
        "QBO_STATE_SIGNING_KEY": "short",
        "GREENCHECK_API_URL": "ftp://nowhere",
        "QBO_DEFAULT_TIME_ZONE": "Mars/Olympus",
    }
    del env["QBO_GATEWAY_URL"]
    del env["GREENCHECK_CLIENT_SECRET"]
    result = run(env, "--all-namespaces")
    assert result.returncode == 2
    lines = result.stderr.strip().splitlines()
    for var in (
        "QBO_GATEWAY_URL",
        "GREENCHECK_CLIENT_SECRET",
        "QBO_STATE_SIGNING_KEY",
        "GREENCHECK_API_URL",
        "QBO_DEFAULT_TIME_ZONE",
    ):
        assert sum(var in line for line in lines) == 1, (var, lines)
    assert len(lines) == 5
    assert "Traceback" not in result.stderr
    assert QBO_CLIENT_SECRET not in result.stderr + result.stdout


def test_a_scope_is_required() -> None:
    result = run(GOOD)
    assert result.returncode == 2
    assert "--namespace NS" in result.stderr and "--all-namespaces" in result.stderr


def test_namespace_and_all_namespaces_exclude_each_other() -> None:
    result = run(GOOD, "--all-namespaces", "--namespace", "a")
    assert result.returncode == 2
    assert "not allowed with argument" in result.stderr
