"""Fixtures for the chart tests: the pinned helm binary, promtool, each mode rendered once."""

from __future__ import annotations

import shutil
import subprocess
from typing import Any

import pytest

from qbo_operator.harness.controlplane import ControlPlaneError, find_assets
from tests.support.chart import MODES, Helm


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
