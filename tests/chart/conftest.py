"""Helpers for the chart tests: the pinned helm binary, rendering, promtool."""

from __future__ import annotations

import shutil
import subprocess
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import yaml

from qbo_operator.harness.controlplane import ControlPlaneError, find_assets

ROOT = Path(__file__).resolve().parents[2]
CHART = ROOT / "charts" / "qbo-operator"
VALUES = Path(__file__).resolve().parent / "values"
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


@pytest.fixture(scope="session")
def helm() -> Helm:
    try:
        assets = find_assets()
    except (ControlPlaneError, subprocess.CalledProcessError) as exc:
        pytest.fail(f"no helm binary: {exc} (run `make tools`)")
    return Helm(assets / "helm")


@pytest.fixture(scope="session")
def promtool() -> str:
    path = shutil.which("promtool")
    if path is None:
        pytest.fail("promtool is missing: `make system-packages` installs it (Debian package prometheus)")
    return path


@pytest.fixture(scope="session")
def rendered(helm: Helm) -> dict[str, list[dict[str, Any]]]:
    """Each mode rendered once per session."""
    return {mode: helm.template(*args) for mode, args in MODES.items()}


def find(objs: Iterable[Mapping[str, Any]], kind: str, name_suffix: str = "") -> list[Mapping[str, Any]]:
    return [o for o in objs if o["kind"] == kind and o["metadata"]["name"].endswith(name_suffix)]


def one(objs: Iterable[Mapping[str, Any]], kind: str, name_suffix: str = "") -> Mapping[str, Any]:
    found = find(objs, kind, name_suffix)
    assert len(found) == 1, f"expected one {kind} named *{name_suffix}, got {[o['metadata']['name'] for o in found]}"
    return found[0]


def container(deployment: Mapping[str, Any]) -> Mapping[str, Any]:
    containers = deployment["spec"]["template"]["spec"]["containers"]
    assert len(containers) == 1
    return containers[0]


def env_of(c: Mapping[str, Any]) -> dict[str, Any]:
    """name → value (plain) or the valueFrom mapping."""
    return {e["name"]: e.get("value", e.get("valueFrom")) for e in c.get("env", [])}
