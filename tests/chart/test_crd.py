"""The QuickbooksIntegration CRD: identical in crds/ and the chart, in step with models.py, documented,
structural, and with CEL shape checks that never refuse what the operator accepts. The API server's own
verdicts on the same rules are in test_cluster.py."""

from __future__ import annotations

import re
import typing
import uuid
import zoneinfo
from collections.abc import Iterator
from typing import Any

import pytest
import yaml
from pydantic import BaseModel

from qbo_operator.core import models, names, schedule
from tests.support.chart import CHART
from tests.support.paths import ROOT

CRD_PATH = ROOT / "crds" / "quickbooksintegrations.yaml"
CHART_CRD_PATH = CHART / "crds" / "quickbooksintegrations.yaml"


@pytest.fixture(scope="module")
def crd() -> dict[str, Any]:
    data: dict[str, Any] = yaml.safe_load(CRD_PATH.read_text())
    return data


@pytest.fixture(scope="module")
def schema(crd: dict[str, Any]) -> dict[str, Any]:
    result: dict[str, Any] = crd["spec"]["versions"][0]["schema"]["openAPIV3Schema"]
    return result


def test_chart_ships_the_same_crd_byte_for_byte() -> None:
    assert CHART_CRD_PATH.read_bytes() == CRD_PATH.read_bytes(), (
        "charts/qbo-operator/crds/quickbooksintegrations.yaml differs from crds/quickbooksintegrations.yaml: "
        "copy the top-level file into the chart"
    )


def test_names_scope_and_version(crd: dict[str, Any]) -> None:
    spec = crd["spec"]
    assert crd["metadata"]["name"] == f"{names.PLURAL}.{names.GROUP}"
    assert spec["group"] == names.GROUP
    assert spec["scope"] == "Namespaced"
    assert spec["names"] == {
        "kind": names.KIND,
        "listKind": f"{names.KIND}List",
        "plural": names.PLURAL,
        "singular": "quickbooksintegration",
        "shortNames": ["qbi"],
        "categories": ["greencheck"],
    }
    [version] = spec["versions"]
    assert (version["name"], version["served"], version["storage"]) == (names.VERSION, True, True)
    assert version["subresources"] == {"status": {}}


def test_printer_columns(crd: dict[str, Any]) -> None:
    columns = [
        (c["name"], c["type"], c["jsonPath"], c.get("priority", 0))
        for c in crd["spec"]["versions"][0]["additionalPrinterColumns"]
    ]
    assert columns == [
        ("Company", "string", ".spec.companyName", 0),
        ("Phase", "string", ".status.phase", 0),
        ("Ready", "string", '.status.conditions[?(@.type=="Ready")].status', 0),
        ("Realm", "string", ".status.realmId", 1),
        ("Suspended", "boolean", ".spec.suspend", 1),
        ("Rejected", "integer", ".status.rejected.count", 1),
        ("Delivery", "string", ".spec.delivery.method", 1),
        ("Last Sync", "date", ".status.lastSuccessfulSyncTime", 0),
        ("Age", "date", ".metadata.creationTimestamp", 0),
    ]


def _aliases(model: type[BaseModel]) -> set[str]:
    return {field.alias or name for name, field in model.model_fields.items()}


@pytest.mark.parametrize(
    ("path", "model"),
    [
        (("spec",), models.IntegrationSpec),
        (("spec", "delivery"), models.Delivery),
        (("spec", "delivery", "sftp"), models.SftpDelivery),
        (("status",), models.IntegrationStatus),
        (("status", "lastSync"), models.LastSync),
        (("status", "webhook"), models.WebhookStatus),
        (("status", "conditions", "items"), models.Condition),
    ],
)
def test_fields_match_the_models(schema: dict[str, Any], path: tuple[str, ...], model: type[BaseModel]) -> None:
    node = schema
    for key in path:
        node = node["items"] if key == "items" else node["properties"][key]
    assert set(node["properties"]) == _aliases(model), f"{'.'.join(path)} differs from {model.__name__}"


def _literal(model: type[BaseModel], field: str) -> set[str]:
    """The values of a `Literal[...]` field, also inside `Literal[...] | None`."""
    annotation = model.model_fields[field].annotation
    options = [annotation] if typing.get_origin(annotation) is typing.Literal else typing.get_args(annotation)
    args: set[str] = set()
    for arg in options:
        if typing.get_origin(arg) is typing.Literal:
            args.update(typing.get_args(arg))
    return args


def test_enums_and_defaults_match_the_models(schema: dict[str, Any]) -> None:
    spec = schema["properties"]["spec"]["properties"]
    status = schema["properties"]["status"]["properties"]
    assert set(spec["environment"]["enum"]) == _literal(models.IntegrationSpec, "environment")
    assert set(spec["delivery"]["properties"]["method"]["enum"]) == _literal(models.Delivery, "method")
    assert set(status["phase"]["enum"]) == {p.value for p in models.Phase}
    assert set(status["lastSync"]["properties"]["result"]["enum"]) == {r.value for r in models.SyncResult}
    assert set(status["lastSync"]["properties"]["trigger"]["enum"]) == _literal(models.LastSync, "trigger")
    cond_status = status["conditions"]["items"]["properties"]["status"]["enum"]
    assert set(cond_status) == _literal(models.Condition, "status")
    fields = models.IntegrationSpec.model_fields
    defaults = {key: prop["default"] for key, prop in spec.items() if "default" in prop}
    assert defaults == {
        "environment": "production",
        "suspend": False,
        "revokeOnDelete": True,
        "delivery": {"method": "api"},
    }
    assert defaults == {
        "environment": fields["environment"].default,
        "suspend": fields["suspend"].default,
        "revokeOnDelete": fields["revoke_on_delete"].default,
        "delivery": models.Delivery().model_dump(by_alias=True, exclude_none=True),
    }
    delivery = spec["delivery"]["properties"]
    assert delivery["method"]["default"] == models.Delivery.model_fields["method"].default
    assert delivery["sftp"]["properties"]["port"]["default"] == models.SftpDelivery.model_fields["port"].default


def test_required_fields(schema: dict[str, Any]) -> None:
    assert schema["required"] == ["spec"]
    assert schema["properties"]["spec"]["required"] == ["companyId"]
    assert schema["properties"]["status"]["properties"]["conditions"]["items"]["required"] == [
        "type",
        "status",
        "lastTransitionTime",
        "reason",
        "message",
    ]


def _walk(node: dict[str, Any], path: str) -> Iterator[tuple[str, dict[str, Any]]]:
    yield path, node
    for key, child in (node.get("properties") or {}).items():
        yield from _walk(child, f"{path}.{key}")
    if "items" in node:
        yield from _walk(node["items"], f"{path}[]")


def test_every_field_has_a_description(schema: dict[str, Any]) -> None:
    undocumented = [
        path
        for path, node in _walk(schema, "qbi")
        if path != "qbi.metadata" and not str(node.get("description", "")).strip()
    ]
    assert undocumented == []


def test_schema_is_structural_with_no_unknown_fields_kept(schema: dict[str, Any]) -> None:
    kept = [path for path, node in _walk(schema, "qbi") if "x-kubernetes-preserve-unknown-fields" in node]
    assert kept == []
    untyped = [path for path, node in _walk(schema, "qbi") if "type" not in node]
    assert untyped == []


def test_conditions_are_a_map_list_keyed_by_type(schema: dict[str, Any]) -> None:
    conditions = schema["properties"]["status"]["properties"]["conditions"]
    assert conditions["x-kubernetes-list-type"] == "map"
    assert conditions["x-kubernetes-list-map-keys"] == ["type"]


def _rules(node: dict[str, Any]) -> list[dict[str, Any]]:
    rules: list[dict[str, Any]] = node.get("x-kubernetes-validations", [])
    return rules


def test_immutability_rules_carry_the_agreed_messages(schema: dict[str, Any]) -> None:
    spec = schema["properties"]["spec"]
    [company] = _rules(spec["properties"]["companyId"])
    assert company == {
        "rule": "self == oldSelf",
        "message": "companyId is immutable: create a new QuickbooksIntegration for another company",
    }
    [token] = _rules(spec)
    assert "oldSelf.tokenSecretName" in token["rule"]
    assert token["message"].startswith("tokenSecretName is immutable")


def _patterns(rule: str) -> list[str]:
    return re.findall(r"matches\('([^']*)'\)", rule)


def cel_accepts_schedule(schema: dict[str, Any], value: str) -> bool:
    """The two schedule rules: (macro || five fields) && no TZ= prefix, with CEL's RE2 `matches`."""
    shape, no_tz = _rules(schema["properties"]["spec"]["properties"]["schedule"])
    assert "TZ=" in no_tz["rule"]
    return any(re.search(p, value) for p in _patterns(shape["rule"])) and "TZ=" not in value


def cel_accepts_time_zone(schema: dict[str, Any], value: str) -> bool:
    """The timeZone rule: matches the shape && !matches 'Local'."""
    [rule] = _rules(schema["properties"]["spec"]["properties"]["timeZone"])
    shape, local = _patterns(rule["rule"])
    return bool(re.search(shape, value)) and not re.search(local, value)


OPERATOR_SCHEDULES = [
    "H 2 * * *",
    "0 2 * * *",
    "H(0-29) H(1-4) * * 1-5",
    "H/15 * * * *",
    "*/30 1,3 * * MON-FRI",
    "5 4 1 jan *",
    "@daily",
    "@hourly",
    "@midnight",
    "0  2  *  *  *",
]


@pytest.mark.parametrize("value", OPERATOR_SCHEDULES)
def test_schedule_rule_accepts_what_the_operator_accepts(schema: dict[str, Any], value: str) -> None:
    schedule.validate_schedule(value)  # the operator's own check passes...
    assert cel_accepts_schedule(schema, value)  # ...so the API server must not refuse it


@pytest.mark.parametrize(
    "value",
    ["H 2 * *", "0 2 * * * *", "every night", "CRON_TZ=UTC 0 2 * * *", "TZ=UTC 0 2 * * *", "@nightly", " 0 2 * * *"],
)
def test_schedule_rule_refuses_the_wrong_shape(schema: dict[str, Any], value: str) -> None:
    assert not cel_accepts_schedule(schema, value)


def test_time_zone_rule_accepts_every_iana_zone(schema: dict[str, Any]) -> None:
    zones = zoneinfo.available_timezones()
    assert len(zones) > 300
    refused = sorted(z for z in zones if not cel_accepts_time_zone(schema, z))
    assert refused == []


@pytest.mark.parametrize("value", ["Local", "local", "America/", "/etc/passwd", "../UTC", "UTC ", "Los Angeles", "ü"])
def test_time_zone_rule_refuses_non_zone_shapes(schema: dict[str, Any], value: str) -> None:
    assert not cel_accepts_time_zone(schema, value)


def test_company_id_pattern(schema: dict[str, Any]) -> None:
    company = schema["properties"]["spec"]["properties"]["companyId"]
    assert company["format"] == "uuid"
    pattern = re.compile(company["pattern"])
    for _ in range(50):
        assert pattern.search(str(uuid.uuid4()))
    assert pattern.search("5F0C3A2E-8D1B-4C7E-9A61-2B7F3C9D4E10")
    for bad in [
        "acme",
        uuid.uuid4().hex,
        f"{{{uuid.uuid4()}}}",
        f"{uuid.uuid4()}x",
        "5f0c3a2e-8d1b-4c7e-9a61-2b7f3c9d4e1g",
    ]:
        assert not pattern.search(bad), bad


# --- spec.delivery ------------------------------------------------------------------------------------------


def test_sftp_fields_are_required_by_cel_rules_that_name_them(schema: dict[str, Any]) -> None:
    """The sftp block's required fields are CEL `has()` rules, not OpenAPI `required` (which would refuse with a
    bare "Required value" and stop the other rules): one rule per field the model requires, naming it."""
    sftp = schema["properties"]["spec"]["properties"]["delivery"]["properties"]["sftp"]
    assert "required" not in sftp
    required = {f.alias or n for n, f in models.SftpDelivery.model_fields.items() if f.is_required()}
    assert required == {"host", "username", "directory", "locationId", "secretName"}
    rules = {rule["rule"]: rule["message"] for rule in _rules(sftp)}
    assert set(rules) == {f"has(self.{field})" for field in required}
    for field in required:
        assert rules[f"has(self.{field})"].startswith(f"spec.delivery.sftp.{field} is required: ")


def test_delivery_rules_tie_the_method_to_the_sftp_block(schema: dict[str, Any]) -> None:
    delivery = schema["properties"]["spec"]["properties"]["delivery"]
    assert [(r["rule"], r["message"]) for r in _rules(delivery)] == [
        (
            "self.method != 'sftp' || has(self.sftp)",
            "spec.delivery.sftp is required when method is sftp: host, username, directory, locationId and secretName",
        ),
        (
            "self.method == 'sftp' || !has(self.sftp)",
            "spec.delivery.sftp is set but method is not sftp: set method: sftp or remove the sftp block",
        ),
    ]


def test_every_cel_string_is_bounded(schema: dict[str, Any]) -> None:
    """CEL's cost estimate multiplies by a string's maxLength: every string a rule reads has one."""
    unbounded = [
        path
        for path, node in _walk(schema, "qbi")
        if node.get("type") == "string"
        and "x-kubernetes-validations" in node
        and "maxLength" not in node
        and "enum" not in node
    ]
    assert unbounded == []


def cel_accepts_directory(schema: dict[str, Any], value: str) -> bool:
    """The directory rules: startsWith('/') && !matches(a `..` segment)."""
    node = schema["properties"]["spec"]["properties"]["delivery"]["properties"]["sftp"]["properties"]["directory"]
    absolute, no_parent = _rules(node)
    assert absolute["rule"] == "self.startsWith('/')"
    [segment] = _patterns(no_parent["rule"])
    return value.startswith("/") and not re.search(segment, value)


@pytest.mark.parametrize(
    ("value", "accepted"),
    [
        ("/", True),
        ("/upload", True),
        ("/upload/acme/", True),
        ("/up..load/.x/..y/x..", True),
        ("upload", False),
        ("./upload", False),
        ("/..", False),
        ("/../upload", False),
        ("/upload/..", False),
        ("/upload/../etc", False),
    ],
)
def test_directory_rule(schema: dict[str, Any], value: str, accepted: bool) -> None:
    assert cel_accepts_directory(schema, value) is accepted


def test_sftp_secret_name_is_a_dns_subdomain_like_the_token_secret_name(schema: dict[str, Any]) -> None:
    spec = schema["properties"]["spec"]["properties"]
    secret = spec["delivery"]["properties"]["sftp"]["properties"]["secretName"]
    token = spec["tokenSecretName"]
    assert (secret["pattern"], secret["minLength"], secret["maxLength"]) == (token["pattern"], 1, 253)
