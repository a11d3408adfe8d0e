"""`qbo-operator sandbox qbo|greencheck` as a real process: configuration errors, URLs printed, clean stop."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import httpx
import pytest

from tests.support.sandbox import CLIENT_ID, CLIENT_SECRET, REDIRECT_URI, VERIFIER

EXE = str(Path(sys.executable).with_name("qbo-operator"))
QBO_ENV = {
    "QBO_CLIENT_ID": CLIENT_ID,
    "QBO_CLIENT_SECRET": CLIENT_SECRET,
    "QBO_REDIRECT_URI": REDIRECT_URI,
    "QBO_WEBHOOK_VERIFIER_TOKEN": VERIFIER,
}


def env(extra: dict[str, str]) -> dict[str, str]:
    base = {k: v for k, v in os.environ.items() if not k.startswith(("QBO_", "GREENCHECK_"))}
    return {**base, **extra}


@contextmanager
def running(args: list[str], extra_env: dict[str, str]) -> Iterator[tuple[subprocess.Popen[str], list[str]]]:
    proc = subprocess.Popen(
        [EXE, "sandbox", *args], env=env(extra_env), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    )
    lines: list[str] = []
    try:
        assert proc.stdout is not None
        for line in proc.stdout:
            lines.append(line.rstrip("\n"))
            if line.startswith("Press Ctrl-C"):
                break
        else:
            pytest.fail(f"the sandbox exited early: {proc.wait()} {proc.stderr.read() if proc.stderr else ''}")
        yield proc, lines
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()


@pytest.mark.parametrize("missing", sorted(QBO_ENV))
def test_missing_variable_is_one_clear_line(missing: str) -> None:
    result = subprocess.run(
        [EXE, "sandbox", "qbo", "--port", "0"],
        env=env({k: v for k, v in QBO_ENV.items() if k != missing}),
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 2
    assert result.stderr.strip().splitlines() == [
        f"qbo-operator sandbox: configuration error: {missing} is required for `qbo-operator sandbox` but is not set"
    ]
    assert CLIENT_SECRET not in result.stderr + result.stdout


def test_qbo_sandbox_serves_and_stops_on_sigint() -> None:
    args = ["qbo", "--port", "0", "--company", "Acme Dispensary", "--company", "Bridgetown Wholesale",
            "--history", "30", "--payments", "12", "--seed", "4", "--no-throttle"]  # fmt: skip
    with running(args, QBO_ENV) as (proc, lines):
        base = re.search(r"listening on (http://127\.0\.0\.1:\d+)", lines[0])
        assert base is not None, lines
        url = base.group(1)
        assert f"  discovery  {url}/.well-known/openid_configuration" in lines
        assert f"  api        {url}" in lines
        realms = re.findall(r"realm (\d{16})  (.+?)  \((\d+) payments", "\n".join(lines))
        assert [(name, count) for _, name, count in realms] == [
            ("Acme Dispensary", "42"),
            ("Bridgetown Wholesale", "42"),
        ]
        doc = httpx.get(f"{url}/.well-known/openid_configuration", timeout=10).json()
        assert doc["token_endpoint"] == f"{url}/oauth2/v1/tokens/bearer"
        state = httpx.get(f"{url}/_sandbox/state", timeout=10).json()
        assert [r["realmId"] for r in state["realms"]] == [r for r, _, _ in realms]
        assert state["throttle"] is None
        proc.send_signal(signal.SIGINT)
        assert proc.wait(timeout=30) == 0
    output = "\n".join(lines)
    assert CLIENT_SECRET not in output and VERIFIER not in output


def test_greencheck_sandbox_serves_and_stops_on_sigterm() -> None:
    gc_env = {
        "GREENCHECK_CLIENT_ID": "gc",
        "GREENCHECK_CLIENT_SECRET": "gc-secret",
        "GREENCHECK_SERVICE_PROVIDER_ID": "sp-1",
    }
    with running(["greencheck", "--port", "0"], gc_env) as (proc, lines):
        match = re.search(r"listening on (http://127\.0\.0\.1:\d+)", lines[0])
        assert match is not None, lines
        assert httpx.get(match.group(1) + "/nothing", timeout=10).status_code == 404
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=30) == 0
    missing = subprocess.run([EXE, "sandbox", "greencheck"], env=env({}), capture_output=True, text=True, timeout=60)
    assert missing.returncode == 2 and "GREENCHECK_CLIENT_ID is required" in missing.stderr


def test_sandbox_kind_is_required() -> None:
    result = subprocess.run([EXE, "sandbox"], env=env(QBO_ENV), capture_output=True, text=True, timeout=60)
    assert result.returncode == 2 and "SANDBOX" in result.stderr
