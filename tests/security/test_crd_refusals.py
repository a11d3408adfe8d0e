"""A catalogue of invalid QuickbooksIntegrations and the exact message the API server gives the user.

Every entry goes through the real API server (kubectl as a user would type it); the expected text is
the whole of kubectl's error output, so a regression in wording, a rule that stops firing, or a rule
that fires twice is caught. Nothing refused is ever stored."""

from __future__ import annotations

import json
from typing import Any

import pytest

from qbo_operator.core import names
from qbo_operator.harness.controlplane import ControlPlane
from tests.support.ledger import Report
from tests.support.objects import SFTP

pytestmark = pytest.mark.e2e

CRB = "5f0c3a2e-8d1b-4c7e-9a61-2b7f3c9d4e10"
UNCHECKED = (
    "* <nil>: Invalid value: null: some validation rules were not checked because the object was invalid; "
    "correct the existing errors to complete validation"
)
CRON = (
    'schedule must be a 5-field cron expression (minute hour day-of-month month day-of-week, for example "H 2 * * *") '
    "or a macro such as @daily"
)
ZONE = "timeZone must be an IANA time zone name such as America/Los_Angeles, Europe/Berlin or UTC"
# What the API server says for each sftp field left out (one CEL rule each, all reported together).
SFTP_MISSING = {
    "host": "spec.delivery.sftp.host is required: the SFTP server's host name",
    "username": "spec.delivery.sftp.username is required: the SFTP account to log in as",
    "directory": (
        "spec.delivery.sftp.directory is required: the absolute directory the files are uploaded to, for example "
        "/upload"
    ),
    "locationId": (
        "spec.delivery.sftp.locationId is required: the Green Check location id written in every row's location_id "
        "column"
    ),
    "secretName": (
        "spec.delivery.sftp.secretName is required: the Secret in this namespace with the keys ssh-privatekey and "
        "known_hosts"
    ),
}
SFTP_BLOCK_MISSING = (
    'spec.delivery: Invalid value: "object": spec.delivery.sftp is required when method is sftp: host, username, '
    "directory, locationId and secretName"
)
SFTP_WITHOUT_METHOD = (
    'spec.delivery: Invalid value: "object": spec.delivery.sftp is set but method is not sftp: set method: sftp or '
    "remove the sftp block"
)


def sftp_without(*fields: str) -> dict[str, Any]:
    return {"delivery": {"method": "sftp", "sftp": {k: v for k, v in SFTP.items() if k not in fields}}}


def sftp_missing(*fields: str) -> str:
    """The API server's line for each missing field, in the rules' order (a bullet each when more than one)."""
    lines = [f'spec.delivery.sftp: Invalid value: "object": {SFTP_MISSING[f]}' for f in SFTP_MISSING if f in fields]
    return lines[0] if len(lines) == 1 else "\n" + "\n".join(f"* {line}" for line in lines)


def invalid(name: str, *lines: str) -> str:
    """kubectl's text for an Invalid refusal: one line for one cause, else a bulleted list."""
    head = f'The QuickbooksIntegration "{name}" is invalid: '
    return head + lines[0] if len(lines) == 1 else head + "\n" + "\n".join(lines)


# (case, spec, expected text); the object's name is the case's id.
CREATE_CASES: list[tuple[str, dict[str, Any], str]] = [
    ("no-company", {}, invalid("no-company", "* spec.companyId: Required value", UNCHECKED)),
    (
        "bad-uuid",
        {"companyId": "acme"},
        invalid(
            "bad-uuid",
            '* spec.companyId: Invalid value: "acme": spec.companyId in body should be at least 36 chars long',
            '* spec.companyId: Invalid value: "acme": spec.companyId in body must be of type uuid: "acme"',
            UNCHECKED,
        ),
    ),
    (
        "uuid-no-dashes",
        {"companyId": "5f0c3a2e8d1b4c7e9a612b7f3c9d4e10abcd"},
        invalid(
            "uuid-no-dashes",
            '* spec.companyId: Invalid value: "5f0c3a2e8d1b4c7e9a612b7f3c9d4e10abcd": spec.companyId in body should '
            "match '^[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}$'",
            '* spec.companyId: Invalid value: "5f0c3a2e8d1b4c7e9a612b7f3c9d4e10abcd": spec.companyId in body must be '
            'of type uuid: "5f0c3a2e8d1b4c7e9a612b7f3c9d4e10abcd"',
            UNCHECKED,
        ),
    ),
    (
        "bad-enum",
        {"environment": "staging"},
        invalid(
            "bad-enum",
            '* spec.environment: Unsupported value: "staging": supported values: "production", "sandbox"',
            UNCHECKED,
        ),
    ),
    (
        "bad-bool",
        {"suspend": "yes"},
        invalid(
            "bad-bool",
            '* spec.suspend: Invalid value: "string": spec.suspend in body must be of type boolean: "string"',
            UNCHECKED,
        ),
    ),
    (
        "schedule-words",
        {"schedule": "every night"},
        invalid("schedule-words", f'spec.schedule: Invalid value: "string": {CRON}'),
    ),
    (
        "schedule-six-fields",
        {"schedule": "0 0 2 * * *"},
        invalid("schedule-six-fields", f'spec.schedule: Invalid value: "string": {CRON}'),
    ),
    (
        "schedule-reboot",
        {"schedule": "@reboot"},
        invalid("schedule-reboot", f'spec.schedule: Invalid value: "string": {CRON}'),
    ),
    (
        "schedule-tz",
        {"schedule": "CRON_TZ=UTC 0 2 * * *"},
        invalid(
            "schedule-tz",
            f'* spec.schedule: Invalid value: "string": {CRON}',
            '* spec.schedule: Invalid value: "string": put the time zone in spec.timeZone, not in the schedule',
        ),
    ),
    (
        "schedule-number",
        {"schedule": 5},
        invalid(
            "schedule-number",
            '* spec.schedule: Invalid value: "integer": spec.schedule in body must be of type string: "integer"',
            UNCHECKED,
        ),
    ),
    ("zone-local", {"timeZone": "Local"}, invalid("zone-local", f'spec.timeZone: Invalid value: "string": {ZONE}')),
    (
        "zone-spaces",
        {"timeZone": "Mars/Olympus Mons"},
        invalid("zone-spaces", f'spec.timeZone: Invalid value: "string": {ZONE}'),
    ),
    (
        "secret-name",
        {"tokenSecretName": "Not_A_Name"},
        invalid(
            "secret-name",
            'spec.tokenSecretName: Invalid value: "Not_A_Name": spec.tokenSecretName in body should match '
            "'^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$'",
        ),
    ),
    (
        "empty-company-name",
        {"companyName": ""},
        invalid(
            "empty-company-name",
            'spec.companyName: Invalid value: "": spec.companyName in body should be at least 1 chars long',
        ),
    ),
    (
        "long-company-name",
        {"companyName": "x" * 201},
        invalid("long-company-name", "* spec.companyName: Too long: may not be more than 200 bytes", UNCHECKED),
    ),
    *(
        (f"sftp-no-{field.lower()}", sftp_without(field), invalid(f"sftp-no-{field.lower()}", sftp_missing(field)))
        for field in SFTP_MISSING
    ),
    ("sftp-empty", sftp_without(*SFTP), invalid("sftp-empty", sftp_missing(*SFTP))),
    (
        "sftp-two-missing",
        sftp_without("host", "secretName"),
        invalid("sftp-two-missing", sftp_missing("host", "secretName")),
    ),
    ("sftp-no-block", {"delivery": {"method": "sftp"}}, invalid("sftp-no-block", SFTP_BLOCK_MISSING)),
    ("sftp-no-method", {"delivery": {"sftp": SFTP}}, invalid("sftp-no-method", SFTP_WITHOUT_METHOD)),
    ("sftp-method-api", {"delivery": {"method": "api", "sftp": SFTP}}, invalid("sftp-method-api", SFTP_WITHOUT_METHOD)),
    (
        "delivery-ftp",
        {"delivery": {"method": "ftp"}},
        invalid(
            "delivery-ftp",
            '* spec.delivery.method: Unsupported value: "ftp": supported values: "api", "sftp"',
            UNCHECKED,
        ),
    ),
    *(
        (
            f"sftp-host-{i}",
            {"delivery": {"method": "sftp", "sftp": {**SFTP, "host": host}}},
            invalid(
                f"sftp-host-{i}",
                'spec.delivery.sftp.host: Invalid value: "string": spec.delivery.sftp.host must be a host name or an '
                "IP address, without a scheme, user or port (the port is spec.delivery.sftp.port)",
            ),
        )
        for i, host in enumerate(["sftp://sftp.greencheck.example", "sftp.greencheck.example:22", "acme@sftp.gc"])
    ),
    (
        "sftp-relative-dir",
        {"delivery": {"method": "sftp", "sftp": {**SFTP, "directory": "upload"}}},
        invalid(
            "sftp-relative-dir",
            'spec.delivery.sftp.directory: Invalid value: "string": spec.delivery.sftp.directory must be an absolute '
            "path (start with /)",
        ),
    ),
    (
        "sftp-parent-dir",
        {"delivery": {"method": "sftp", "sftp": {**SFTP, "directory": "/upload/../etc"}}},
        invalid(
            "sftp-parent-dir",
            'spec.delivery.sftp.directory: Invalid value: "string": spec.delivery.sftp.directory must not contain a '
            ".. path segment",
        ),
    ),
    (
        "sftp-port",
        {"delivery": {"method": "sftp", "sftp": {**SFTP, "port": 65536}}},
        invalid(
            "sftp-port",
            "spec.delivery.sftp.port: Invalid value: 65536: spec.delivery.sftp.port in body should be less than or "
            "equal to 65535",
        ),
    ),
    (
        "sftp-secret-name",
        {"delivery": {"method": "sftp", "sftp": {**SFTP, "secretName": "Acme_SFTP"}}},
        invalid(
            "sftp-secret-name",
            'spec.delivery.sftp.secretName: Invalid value: "Acme_SFTP": spec.delivery.sftp.secretName in body '
            "should match '^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$'",
        ),
    ),
    (
        "x" * 64,
        {},
        invalid(
            "x" * 64,
            '<nil>: Invalid value: "object": metadata.name must be at most 63 characters: it is used as a label value '
            "on the objects the operator creates",
        ),
    ),
]

UPDATE_CASES: list[tuple[str, str, str, str]] = [
    # (case, patch, subresource, expected text); applied to an object created with tokenSecretName "mine".
    (
        "changed-company",
        '{"spec":{"companyId":"11111111-2222-4333-8444-555555555555"}}',
        "",
        'spec.companyId: Invalid value: "string": companyId is immutable: create a new QuickbooksIntegration for '
        "another company",
    ),
    (
        "changed-secret-name",
        '{"spec":{"tokenSecretName":"theirs"}}',
        "",
        'spec.tokenSecretName: Invalid value: "object": tokenSecretName is immutable: it cannot be set, changed or '
        "removed after creation (create a new QuickbooksIntegration to use another Secret)",
    ),
    (
        "removed-secret-name",
        '{"spec":{"tokenSecretName":null}}',
        "",
        'spec.tokenSecretName: Invalid value: "object": tokenSecretName is immutable: it cannot be set, changed or '
        "removed after creation (create a new QuickbooksIntegration to use another Secret)",
    ),
    (
        "environment-after-connect",
        '{"spec":{"environment":"sandbox"}}',
        "connected",
        'spec.environment: Invalid value: "object": spec.environment cannot change once a QuickBooks company is '
        "connected (status.realmId is set): create a new QuickbooksIntegration for the other Intuit environment",
    ),
    (
        "sftp-without-its-block",
        '{"spec":{"delivery":{"method":"sftp"}}}',
        "",
        SFTP_BLOCK_MISSING,
    ),
    (
        "sftp-block-without-host",
        '{"spec":{"delivery":{"method":"sftp","sftp":{"username":"acme","directory":"/upload","locationId":"l",'
        '"secretName":"acme-sftp"}}}}',
        "",
        sftp_missing("host"),
    ),
    (
        "status-bad-phase",
        '{"status":{"phase":"Happy"}}',
        "status",
        '\n* status.phase: Unsupported value: "Happy": supported values: "Pending", "Connected", "Disconnected", '
        f'"Error"\n{UNCHECKED}',
    ),
    (
        "status-bad-watermark",
        '{"status":{"syncWatermark":"yesterday"}}',
        "status",
        '\n* status.syncWatermark: Invalid value: "yesterday": syncWatermark in body must be of type date-time: '
        f'"yesterday"\n{UNCHECKED}',
    ),
]


def manifest(namespace: str, name: str, spec: dict[str, Any]) -> str:
    spec = {"companyId": CRB, **spec} if "companyId" not in spec and name != "no-company" else spec
    return json.dumps(
        {
            "apiVersion": names.API_VERSION,
            "kind": names.KIND,
            "metadata": {"name": name, "namespace": namespace},
            "spec": spec,
        }
    )


def stored(cluster: ControlPlane, namespace: str) -> list[str]:
    return cluster.kubectl("get", names.PLURAL, "-n", namespace, "-o", "name").stdout.split()


@pytest.mark.parametrize(("case", "spec", "expected"), CREATE_CASES, ids=[c[0][:20] for c in CREATE_CASES])
def test_invalid_specs_are_refused_with_the_exact_message(
    cluster: ControlPlane, namespace: str, case: str, spec: dict[str, Any], expected: str, report: Report
) -> None:
    result = cluster.kubectl("create", "-f", "-", input=manifest(namespace, case, spec), check=False)
    assert result.returncode != 0
    assert result.stderr.strip() == expected
    assert stored(cluster, namespace) == []
    report.row("hostile input", "invalid CRs refused by the API server (exact message)", tried=1, held=1)


def test_unknown_fields_are_refused_with_the_exact_message(
    cluster: ControlPlane, namespace: str, report: Report
) -> None:
    for command in (("create", "-f", "-"), ("apply", "-f", "-")):
        result = cluster.kubectl(*command, input=manifest(namespace, "typo", {"compnyName": "x"}), check=False)
        assert result.returncode != 0
        assert result.stderr.strip() == (
            f'Error from server (BadRequest): error when creating "STDIN": {names.KIND} in version "v1alpha1" cannot '
            f'be handled as a {names.KIND}: strict decoding error: unknown field "spec.compnyName"'
        )
    assert stored(cluster, namespace) == []
    report.row("hostile input", "invalid CRs refused by the API server (exact message)", tried=2, held=2)


@pytest.mark.parametrize(("case", "patch", "when", "expected"), UPDATE_CASES, ids=[c[0] for c in UPDATE_CASES])
def test_invalid_changes_are_refused_with_the_exact_message_and_change_nothing(
    cluster: ControlPlane, namespace: str, case: str, patch: str, when: str, expected: str, report: Report
) -> None:
    cluster.kubectl("create", "-f", "-", input=manifest(namespace, "acme", {"tokenSecretName": "mine"}))
    if when == "connected":
        cluster.kubectl(
            "patch",
            names.PLURAL,
            "acme",
            "-n",
            namespace,
            "--subresource=status",
            "--type=merge",
            "-p",
            '{"status":{"realmId":"9130355357483456"}}',
        )
    before = cluster.kubectl_json("get", names.PLURAL, "acme", "-n", namespace)
    sub = ["--subresource=status"] if when == "status" else []
    result = cluster.kubectl(
        "patch", names.PLURAL, "acme", "-n", namespace, *sub, "--type=merge", "-p", patch, check=False
    )
    assert result.returncode != 0
    assert result.stderr.strip() == f'The QuickbooksIntegration "acme" is invalid: {expected}'
    after = cluster.kubectl_json("get", names.PLURAL, "acme", "-n", namespace)
    assert after["metadata"]["resourceVersion"] == before["metadata"]["resourceVersion"]
    report.row("hostile input", "invalid CR changes refused, object unchanged (exact message)", tried=1, held=1)
