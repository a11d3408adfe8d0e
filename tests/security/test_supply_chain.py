"""What is tested is what ships: one set of locked, hash-pinned dependencies for `make test` (dev.lock) and
the image (runtime.lock), and a vulnerability audit of what the image installs where the service is reachable."""

from __future__ import annotations

import json
import re
import subprocess
import sys
import tomllib
from importlib import metadata
from pathlib import Path

import pytest

from tests.support.ledger import Report
from tests.support.paths import ROOT

RUNTIME = ROOT / "requirements" / "runtime.lock"
DEV = ROOT / "requirements" / "dev.lock"
PIP_AUDIT = Path(sys.executable).parent / "pip-audit"

_REQ = re.compile(r"^([A-Za-z0-9][A-Za-z0-9._-]*)(\[[^\]]*\])?==([^\s;\\]+)")
_HASH = re.compile(r"--hash=(sha256:[0-9a-f]{64})")


def canonical(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def parse_lock(path: Path) -> dict[str, tuple[str, frozenset[str]]]:
    """name -> (version, hashes) for every requirement of a `uv pip compile --generate-hashes` file."""
    out: dict[str, tuple[str, frozenset[str]]] = {}
    current: str | None = None
    for raw in path.read_text().splitlines():
        line = raw.strip()
        if not line or line.startswith("#"):
            current = None if not raw.startswith(" ") else current
            continue
        match = _REQ.match(line)
        if match:
            current = canonical(match.group(1))
            assert current not in out, f"{path.name} lists {current} twice"
            out[current] = (match.group(3), frozenset())
        if current is not None:
            version, hashes = out[current]
            out[current] = (version, hashes | frozenset(_HASH.findall(line)))
    return out


def test_lock_files_pin_every_package_with_hashes(report: Report) -> None:
    runtime, dev = parse_lock(RUNTIME), parse_lock(DEV)
    assert len(runtime) > 20 and len(dev) > len(runtime)
    unhashed = [n for lock in (runtime, dev) for n, (_, h) in lock.items() if not h]
    assert unhashed == [], f"requirements without --hash: {unhashed}"
    report.row(
        "dependencies",
        "every locked requirement pinned (==) with sha256 hashes",
        tried=f"{len(runtime)} runtime + {len(dev)} dev",
        held="all hashed",
    )


def test_runtime_lock_is_a_subset_of_dev_lock_with_the_same_versions_and_hashes(report: Report) -> None:
    runtime, dev = parse_lock(RUNTIME), parse_lock(DEV)
    missing = sorted(set(runtime) - set(dev))
    assert missing == [], f"in runtime.lock but not tested (dev.lock): {missing}"
    differ = {n: (runtime[n][0], dev[n][0]) for n in runtime if runtime[n][0] != dev[n][0]}
    assert differ == {}, f"runtime.lock and dev.lock pin different versions: {differ}"
    hashes = [n for n in runtime if runtime[n][1] != dev[n][1]]
    assert hashes == [], f"same version, different hashes (a different artifact could ship): {hashes}"
    report.row(
        "dependencies",
        "runtime.lock ⊆ dev.lock (same versions, same hashes)",
        tried=f"{len(runtime)} packages",
        held=f"{len(runtime) - len(missing) - len(differ) - len(hashes)}",
    )


def test_every_declared_runtime_dependency_is_locked() -> None:
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    runtime = parse_lock(RUNTIME)
    declared = [canonical(re.split(r"[<>=!~\[; ]", d, maxsplit=1)[0]) for d in project["dependencies"]]
    assert [d for d in declared if d not in runtime] == []


def test_the_tested_virtualenv_holds_exactly_the_locked_versions(report: Report) -> None:
    """`make test` runs against dev.lock: every runtime package installed here is the locked version."""
    runtime = parse_lock(RUNTIME)
    installed = {canonical(d.metadata["Name"]): d.version for d in metadata.distributions()}
    wrong = {n: (v, installed.get(n)) for n, (v, _) in runtime.items() if installed.get(n) != v}
    assert wrong == {}, f"installed versions differ from runtime.lock (locked, installed): {wrong}"
    report.row("dependencies", "tested virtualenv = runtime.lock versions", tried=len(runtime), held=len(runtime))


def test_the_dockerfile_installs_runtime_lock_with_require_hashes_and_nothing_else() -> None:
    text = (ROOT / "Dockerfile").read_text()
    commands = " ".join(line.strip().rstrip("\\") for line in text.splitlines() if not line.lstrip().startswith("#"))
    pip_runs = re.findall(r"pip (?:--python \S+ )?(wheel|install)([^&]*?)(?=&&|RUN|COPY|FROM|USER|$)", commands)
    assert pip_runs, "the Dockerfile installs nothing with pip?"
    wheels = [args for verb, args in pip_runs if verb == "wheel" and "-r requirements/runtime.lock" in args]
    assert len(wheels) == 1, pip_runs
    assert "--require-hashes" in wheels[0] and "--no-deps" in wheels[0]
    assert "--only-binary=:all:" in wheels[0]  # no sdist builds: what is hashed is what is installed
    installs = [args for verb, args in pip_runs if verb == "install"]
    assert installs and all("--no-index" in a and "--no-deps" in a for a in installs), installs
    other = [args for verb, args in pip_runs if verb == "wheel" and "runtime.lock" not in args]
    assert all("--no-deps" in a for a in other), "the project wheel must not pull dependencies from an index"
    assert "COPY requirements/runtime.lock" in text and "dev.lock" not in text


def _audit(service: str) -> tuple[int, str, str]:
    proc = subprocess.run(
        [
            str(PIP_AUDIT),
            "--disable-pip",
            "--require-hashes",
            "-r",
            str(RUNTIME),
            "--progress-spinner",
            "off",
            "--timeout",
            "5",
            "-f",
            "json",
            "-s",
            service,
        ],
        capture_output=True,
        text=True,
        timeout=240,
    )
    return proc.returncode, proc.stdout, proc.stderr


def test_pip_audit_of_runtime_lock(report: Report) -> None:
    """Known vulnerabilities in what the image installs. Skipped, saying why, when no vulnerability
    service can be reached (these machines have no internet); an audit that audited nothing is no pass."""
    locked = parse_lock(RUNTIME)
    reasons = []
    for service in ("pypi", "osv"):
        rc, out, err = _audit(service)
        try:
            result = json.loads(out)
        except ValueError:
            last = (err.strip().splitlines() or ["no output"])[-1]
            reasons.append(f"{service}: pip-audit exited {rc}: {last[:200]}")
            continue
        deps = result["dependencies"]
        skipped = [d for d in deps if "skip_reason" in d]
        audited = [d for d in deps if "skip_reason" not in d]
        if not audited:
            example = skipped[0]["skip_reason"] if skipped else "no dependencies reported"
            reasons.append(f"{service}: audited none of {len(locked)} packages ({example})")
            continue
        vulnerable = {d["name"]: [v["id"] for v in d["vulns"]] for d in audited if d.get("vulns")}
        report.row(
            "dependencies",
            f"pip-audit of runtime.lock ({service} service reachable)",
            tried=len(audited),
            held=len(audited) - len(vulnerable),
        )
        assert vulnerable == {}, f"known vulnerabilities in runtime.lock: {vulnerable}"
        assert not skipped, f"not audited: {[d['name'] for d in skipped]}"
        return
    why = "no vulnerability service reachable: " + "; ".join(reasons)
    report.row("dependencies", "pip-audit of runtime.lock", tried="0 (service unreachable)", held="skipped")
    print(why)
    pytest.skip(why)
