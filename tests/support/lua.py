"""Run the chart's Argo CD Lua scripts the way Argo CD does: a real Lua 5.1 interpreter, the object in the
global `obj`, the script's return value read back."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest

from tests.support.chart import CHART

HEALTH = CHART / "files" / "health.lua"
DISCOVERY = CHART / "files" / "actions" / "discovery.lua"
SYNC_NOW = CHART / "files" / "actions" / "sync-now" / "action.lua"


def interpreter() -> str:
    path = shutil.which("lua5.1")
    if path is None:
        pytest.fail("lua5.1 is missing: `make system-packages` installs it (Debian package lua5.1)")
    return path


def literal(value: Any) -> str:
    """`value` (JSON-shaped) as a Lua expression, as Argo CD converts an object for its scripts."""
    if value is None:
        return "nil"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int | float):
        return repr(value)
    if isinstance(value, str):
        # Lua 5.1 strings are bytes: quote and backslash escaped, anything not printable ASCII as \ddd.
        return '"' + "".join(_byte(b) for b in value.encode()) + '"'
    if isinstance(value, list):
        return "{" + ", ".join(literal(v) for v in value) + "}"
    if isinstance(value, dict):
        return "{" + ", ".join(f"[{literal(str(k))}] = {literal(v)}" for k, v in value.items()) + "}"
    raise TypeError(f"no Lua literal for {type(value).__name__}")


def _byte(b: int) -> str:
    if b in (0x22, 0x5C):
        return "\\" + chr(b)
    return chr(b) if 0x20 <= b < 0x7F else f"\\{b:03d}"


def run(script: Path, obj: dict[str, Any], show: str) -> list[str]:
    """Run `script` with `obj`; `show` is a Lua expression over the script's result `r`, printed line by line."""
    program = f"""
obj = {literal(obj)}
local chunk = assert(loadfile({literal(str(script))}))
local r = chunk()
for _, line in ipairs({show}) do print(tostring(line)) end
"""
    result = subprocess.run(
        [interpreter(), "-"], input=program, capture_output=True, text=True, timeout=30, check=False
    )
    assert result.returncode == 0, result.stderr
    return result.stdout.splitlines()


def health(obj: dict[str, Any]) -> tuple[str, str]:
    status, message = run(HEALTH, obj, "{r.status, r.message}")
    return status, message
