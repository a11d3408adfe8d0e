"""The audit log as the benches and the least-privilege tests read it: the API server's rotated files too."""

from __future__ import annotations

import json
from pathlib import Path

from qbo_operator.harness.controlplane import ControlPlane


def _write(path: Path, *ids: str) -> None:
    path.write_text("".join(json.dumps({"auditID": i}) + "\n" for i in ids))


def test_rotated_files_are_read_oldest_first_then_the_current_one(tmp_path: Path) -> None:
    _write(tmp_path / "audit-2026-12-04T23-40-00.000.log", "c", "d")
    _write(tmp_path / "audit-2026-12-04T23-30-00.000.log", "a", "b")
    _write(tmp_path / "audit.log", "e")
    (tmp_path / "audit-policy.yaml").write_text("kind: Policy\n")
    with (tmp_path / "audit.log").open("a") as fh:
        fh.write('{"auditID": "torn\n')  # a line the server was still writing
    cp = ControlPlane(directory=tmp_path)
    assert [e["auditID"] for e in cp.audit_events()] == ["a", "b", "c", "d", "e"]


def test_no_log_yet_is_no_events(tmp_path: Path) -> None:
    assert list(ControlPlane(directory=tmp_path).audit_events()) == []
