"""End-to-end harness: a QuickbooksIntegration and its token Secret on the real control plane, the
two sandboxes in this event loop, and `qbo-operator sync` run as a real process against all three."""

from __future__ import annotations

import asyncio
import base64
import json
import os
import sys
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
from aiohttp import web

from qbo_operator.core.models import Tokens, rfc3339
from qbo_operator.core.oauth import TokenResponse
from qbo_operator.harness.sandbox.greencheck import GreenCheckSandbox
from qbo_operator.harness.sandbox.qbo import QboSandbox
from tests.sync.conftest import QBO_CLIENT_ID, QBO_CLIENT_SECRET

ROOT = Path(__file__).resolve().parents[2]
VENV_BIN = Path(os.environ.get("VIRTUAL_ENV", ROOT / ".venv")) / "bin"
GC_CLIENT_ID = "gc-sync-client"
GC_CLIENT_SECRET = "gc-sync-secret-8a7b6c5d4e3f"
SP_ID = "sp-e2e"
CRB = "5f0c3a2e-8d1b-4c7e-9a61-2b7f3c9d4e10"
# Measures the sync's peak RSS: the wrapper's only child is the sync, so RUSAGE_CHILDREN is the sync's.
RSS_WRAPPER = (
    "import resource, subprocess, sys; rc = subprocess.call(sys.argv[1:]); "
    "print(f'MAXRSS_KB {resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss}', file=sys.stderr); sys.exit(rc)"
)


@dataclass
class Run:
    rc: int
    stdout: str
    stderr: str

    @property
    def error_lines(self) -> list[str]:
        return [line for line in self.stderr.splitlines() if line.startswith("qbo-operator sync: error:")]

    @property
    def max_rss_kb(self) -> int:
        line = next(x for x in self.stderr.splitlines() if x.startswith("MAXRSS_KB "))
        return int(line.split()[1])


@dataclass
class E2E:
    cluster: Any
    namespace: str
    qbo: QboSandbox
    gc: GreenCheckSandbox
    gc_url: str
    name: str = "acme"
    realm: str = ""
    connected_at: datetime = field(default_factory=lambda: datetime.now(UTC))
    token_reply: dict[str, Any] = field(default_factory=dict)
    outputs: list[str] = field(default_factory=list)
    qbo_api_url: str | None = None

    # --- set-up -------------------------------------------------------------------------------

    def kubectl(self, *args: str, input: str | None = None, check: bool = True) -> Any:
        return self.cluster.kubectl("-n", self.namespace, *args, input=input, check=check)

    def create_integration(self, *, suspend: bool = False, with_secret: bool = True, **secret_over: Any) -> None:
        """The CR (status Connected, realm, connectedAt) and a token Secret from a real sandbox grant."""
        manifest = {
            "apiVersion": "integrations.greencheckverified.com/v1alpha1",
            "kind": "QuickbooksIntegration",
            "metadata": {"name": self.name, "namespace": self.namespace},
            "spec": {"companyId": CRB, "companyName": "Acme Dispensary", "suspend": suspend},
        }
        self.kubectl("apply", "-f", "-", input=json.dumps(manifest))
        self.token_reply = self.qbo.issue_tokens(self.realm)
        if with_secret:
            self.write_secret(**secret_over)
        status = {"phase": "Connected", "realmId": self.realm, "connectedAt": rfc3339(self.connected_at)}
        self.patch_status(status)

    def tokens(self, **over: Any) -> Tokens:
        now = datetime.now(UTC)
        tokens = TokenResponse.model_validate(self.token_reply).to_tokens(self.realm, self.connected_at, now)
        return tokens.model_copy(update=over)

    def write_secret(self, **over: Any) -> None:
        data = self.tokens(**over).to_secret_data()
        secret = {
            "apiVersion": "v1",
            "kind": "Secret",
            "type": "Opaque",
            "metadata": {"name": f"{self.name}-qbo-tokens", "namespace": self.namespace},
            "data": data,
        }
        self.kubectl("apply", "-f", "-", input=json.dumps(secret))

    def patch_status(self, status: dict[str, Any]) -> None:
        self.kubectl("patch", "qbi", self.name, "--subresource=status", "--type=merge", "-p",
                     json.dumps({"status": status}))  # fmt: skip

    def expire_access_token(self) -> None:
        """The Secret's access token looks expired, so the next sync refreshes first."""
        self.write_secret(expires_at=datetime.now(UTC) - timedelta(minutes=1))

    # --- reading ------------------------------------------------------------------------------

    def obj(self) -> dict[str, Any]:
        return json.loads(self.kubectl("get", "qbi", self.name, "-o", "json").stdout)

    def status(self) -> dict[str, Any]:
        return dict(self.obj().get("status") or {})

    def condition(self, type_: str) -> dict[str, Any] | None:
        return next((c for c in self.status().get("conditions", []) if c["type"] == type_), None)

    def secret_data(self) -> dict[str, str]:
        data = json.loads(self.kubectl("get", "secret", f"{self.name}-qbo-tokens", "-o", "json").stdout)["data"]
        return {k: base64.b64decode(v).decode() for k, v in data.items()}

    def events(self) -> list[dict[str, Any]]:
        return list(json.loads(self.kubectl("get", "events", "-o", "json").stdout)["items"])

    def secret_values(self) -> list[str]:
        """Every secret value that must never show up in output, status or Events."""
        values = [QBO_CLIENT_SECRET, GC_CLIENT_SECRET, self.token_reply.get("access_token", ""),
                  self.token_reply.get("refresh_token", "")]  # fmt: skip
        try:
            data = self.secret_data()
            values += [data["access_token"], data["refresh_token"]]
        except Exception:  # noqa: S110 - no Secret in this test
            pass
        values += list(self.gc._tokens)  # Green Check access tokens issued to the sync
        return [v for v in values if v]

    def assert_no_secrets_leaked(self) -> None:
        haystacks = [*self.outputs, json.dumps(self.status()), json.dumps(self.events())]
        for value in self.secret_values():
            for text in haystacks:
                assert value not in text, "a secret value leaked into output, status or an Event"

    # --- running ------------------------------------------------------------------------------

    def env(self, **extra: str) -> dict[str, str]:
        env = {
            "PATH": os.environ.get("PATH", ""),
            "HOME": os.environ.get("HOME", "/tmp"),
            "KUBECONFIG": str(self.cluster.kubeconfig),
            "QBO_CLIENT_ID": QBO_CLIENT_ID,
            "QBO_CLIENT_SECRET": QBO_CLIENT_SECRET,
            "QBO_TOKEN_URL": self.qbo.token_url,
            "QBO_API_URL": self.qbo_api_url or self.qbo.api_url,
            "GREENCHECK_API_URL": self.gc_url,
            "GREENCHECK_CLIENT_ID": GC_CLIENT_ID,
            "GREENCHECK_CLIENT_SECRET": GC_CLIENT_SECRET,
            "GREENCHECK_SERVICE_PROVIDER_ID": SP_ID,
            "JOB_NAME": "acme-qbo-sync-29123456",
            "QBO_THROTTLE_WAIT_SECONDS": "0.5",
            "QBO_SYNC_BACKOFF_SECONDS": "0.05",
            "QBO_SYNC_BACKOFF_MAX_SECONDS": "0.2",
            "QBO_SYNC_RETRIES": "2",
        }
        env.update(extra)
        return env

    def command(self, *args: str) -> list[str]:
        return [str(VENV_BIN / "qbo-operator"), "sync", "--namespace", self.namespace, "--name", self.name, *args]

    async def start(self, *args: str, measure_rss: bool = False, **env: str) -> asyncio.subprocess.Process:
        cmd = self.command(*args)
        if measure_rss:
            cmd = [sys.executable, "-c", RSS_WRAPPER, *cmd]
        return await asyncio.create_subprocess_exec(
            *cmd, env=self.env(**env), stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE
        )

    async def finish(self, proc: asyncio.subprocess.Process, timeout: float = 300) -> Run:
        out, err = await asyncio.wait_for(proc.communicate(), timeout)
        run = Run(proc.returncode if proc.returncode is not None else -1, out.decode(), err.decode())
        self.outputs += [run.stdout, run.stderr]
        return run

    async def sync(self, *args: str, measure_rss: bool = False, **env: str) -> Run:
        return await self.finish(await self.start(*args, measure_rss=measure_rss, **env))


# --- a proxy in front of a sandbox ---------------------------------------------------------------

Rewrite = Callable[[web.Request, httpx.Response], Awaitable[web.Response | None]]


class Proxy:
    """Forwards every request to `upstream`; `rewrite` may answer differently (None: pass the answer on)."""

    def __init__(self, upstream: str, rewrite: Rewrite | None = None) -> None:
        self.upstream = upstream.rstrip("/")
        self.rewrite = rewrite
        self.requests = 0

    async def handle(self, request: web.Request) -> web.Response:
        self.requests += 1
        headers = {k: v for k, v in request.headers.items() if k.lower() not in ("host", "content-length")}
        async with httpx.AsyncClient(timeout=30) as http:
            resp = await http.request(
                request.method, self.upstream + request.path_qs, content=await request.read(), headers=headers
            )
        replaced = None if self.rewrite is None else await self.rewrite(request, resp)
        if replaced is not None:
            return replaced
        keep = {
            k: v
            for k, v in resp.headers.items()
            if k.lower() in ("content-type", "intuit_tid", "retry-after", "x-amzn-requestid")
        }
        return web.Response(status=resp.status_code, body=resp.content, headers=keep)

    @asynccontextmanager
    async def serve(self) -> AsyncIterator[str]:
        app = web.Application(client_max_size=16 * 1024 * 1024)
        app.router.add_route("*", "/{tail:.*}", self.handle)
        runner = web.AppRunner(app, shutdown_timeout=1.0)
        await runner.setup()
        await web.TCPSite(runner, "127.0.0.1", 0).start()
        try:
            yield f"http://127.0.0.1:{runner.addresses[0][1]}"
        finally:
            await runner.cleanup()
