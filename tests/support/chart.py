"""The chart as the tests render it: the pinned helm binary, the three modes every render covers, and
lookups in the rendered objects."""

from __future__ import annotations

import subprocess
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from qbo_operator.harness.controlplane import KubeClients
from tests.support.paths import ROOT

CHART = ROOT / "charts" / "qbo-operator"
VALUES = ROOT / "tests" / "chart" / "values"
RELEASE = "qbo"
NAMESPACE = "qbo-system"
# The three modes every render/lint test covers: defaults, everything enabled, namespaced RBAC.
MODES: dict[str, tuple[str, ...]] = {
    "default": (),
    "full": ("-f", str(VALUES / "full.yaml")),
    "namespaced": ("-f", str(VALUES / "namespaced.yaml")),
}


@dataclass(frozen=True)
class Helm:
    binary: Path

    def run(self, *args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run([str(self.binary), *args], capture_output=True, text=True, timeout=120, check=False)

    def template(self, *args: str, sets: Mapping[str, str] | None = None, chart: Path = CHART) -> list[dict[str, Any]]:
        """`helm template` → the rendered objects; fails the test with helm's stderr on an error."""
        result = self.run("template", RELEASE, str(chart), "--namespace", NAMESPACE, *args, *_sets(sets))
        assert result.returncode == 0, result.stderr
        return [doc for doc in yaml.safe_load_all(result.stdout) if doc]

    def template_error(self, *args: str, sets: Mapping[str, str] | None = None) -> str:
        """`helm template` that must fail; returns its error output."""
        result = self.run("template", RELEASE, str(CHART), "--namespace", NAMESPACE, *args, *_sets(sets))
        assert result.returncode != 0, f"helm template accepted {args} {sets}"
        return result.stderr


def _sets(sets: Mapping[str, str] | None) -> Iterable[str]:
    for key, value in (sets or {}).items():
        yield "--set-string" if isinstance(value, str) else "--set"
        yield f"{key}={value}"


def find(objs: Iterable[Mapping[str, Any]], kind: str, name_suffix: str = "") -> list[Mapping[str, Any]]:
    return [o for o in objs if o["kind"] == kind and o["metadata"]["name"].endswith(name_suffix)]


def one(objs: Iterable[Mapping[str, Any]], kind: str, name_suffix: str = "") -> Mapping[str, Any]:
    found = find(objs, kind, name_suffix)
    assert len(found) == 1, f"expected one {kind} named *{name_suffix}, got {[o['metadata']['name'] for o in found]}"
    return found[0]


def container(deployment: Mapping[str, Any]) -> Mapping[str, Any]:
    containers: list[Mapping[str, Any]] = deployment["spec"]["template"]["spec"]["containers"]
    assert len(containers) == 1
    return containers[0]


def env_of(c: Mapping[str, Any]) -> dict[str, Any]:
    """name → value (plain) or the valueFrom mapping."""
    return {e["name"]: e.get("value", e.get("valueFrom")) for e in c.get("env", [])}


def install_namespaced(
    cluster: KubeClients, release: str, namespace: str, watched: str, values_file: Path, secret_suffix: str = ""
) -> subprocess.CompletedProcess[str]:
    """`helm install` of the chart into `namespace`, watching only `watched`, with placeholder settings and
    credentials (`secret_suffix` makes the secret values unique, for a scan that looks for them)."""
    values = {
        "watchNamespaces": [watched],
        "config": {
            "gatewayUrl": "https://qbo.example.com",
            "greencheckApiUrl": "https://api.greencheck.example.com",
            "serviceProviderId": "sp-1",
        },
        "credentials": {
            "clientId": "cid",
            "clientSecret": f"csecret{secret_suffix}",
            "webhookVerifierToken": "verifier",
            "greencheck": {"clientId": "gc", "clientSecret": f"gcsecret{secret_suffix}"},
        },
    }
    values_file.write_text(yaml.safe_dump(values))
    return cluster.helm("install", release, str(CHART), "--namespace", namespace, "-f", str(values_file))
