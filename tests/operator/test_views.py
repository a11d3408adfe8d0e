"""Pure parts of the control loop: the metrics collector over CR bodies, the summaries the indexes keep of Jobs
and Secrets (no secret values), the indexes themselves, and the Change a watch event is reduced to."""

from __future__ import annotations

import copy
from datetime import UTC, datetime
from typing import Any

import pytest
from prometheus_client.parser import text_string_to_metric_families

from qbo_operator.core import names
from qbo_operator.reconciler import manifests
from qbo_operator.reconciler.metrics import OperatorMetrics
from qbo_operator.reconciler.registration import change
from qbo_operator.reconciler.views import (
    CR,
    CRONJOBS,
    JOBS,
    ROLES,
    SECRETS,
    Index,
    Views,
    job_view,
    newer,
    only,
    secret_view,
    snapshot,
)
from tests.support.objects import COMPANY_ID, fake_tokens, token_secret


def body(name: str, phase: str | None, **status: Any) -> dict[str, Any]:
    return {
        "metadata": {"name": name, "namespace": "tenants", "uid": f"u-{name}", "generation": 1},
        "spec": {"companyId": COMPANY_ID, "suspend": name.endswith("zz")},
        "status": {**({"phase": phase} if phase else {}), **status},
    }


def samples(text: bytes) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    families = text_string_to_metric_families(text.decode())
    return {(s.name, tuple(sorted(s.labels.items()))): s.value for f in families for s in f.samples}


def test_collector_reports_each_integration_from_its_status() -> None:
    bodies = [
        body(
            "acme",
            "Connected",
            realmId="913",
            lastSync={"result": "PartiallySucceeded", "paymentsSynced": 41, "recordsRejected": 2},
            rejected={"count": 3, "payments": [{"paymentId": str(i)} for i in (7, 8, 9)]},
            lastSuccessfulSyncTime="2026-11-25T02:03:04Z",
            refreshTokenExpiresAt="2027-03-01T00:00:00Z",
        ),
        body("brokezz", "Disconnected", lastSync={"result": "Failed"}),
        body("new", None),
        {**body("leaving", "Connected"), "metadata": {**body("leaving", "x")["metadata"], "deletionTimestamp": "now"}},
        {"metadata": {"name": "garbage", "namespace": "tenants"}, "spec": {}},  # unparseable: skipped
    ]
    got = samples(OperatorMetrics(lambda: [snapshot(b) for b in bodies], realm_ids=True).exposition())
    key = (("name", "acme"), ("namespace", "tenants"))
    assert got[("qbo_integrations", (("phase", "Connected"),))] == 1
    assert got[("qbo_integrations", (("phase", "Disconnected"),))] == 1
    assert got[("qbo_integrations", (("phase", "Pending"),))] == 0
    assert got[("qbo_integrations", (("phase", "Error"),))] == 0
    info = (("company_id", COMPANY_ID), ("name", "acme"), ("namespace", "tenants"), ("phase", "Connected"),
            ("realm_id", "913"))  # fmt: skip
    assert got[("qbo_integration_info", info)] == 1
    assert got[("qbo_integration_connected", key)] == 1
    assert got[("qbo_integration_suspended", key)] == 0
    assert got[("qbo_integration_last_sync_success", key)] == 1
    assert got[("qbo_integration_last_sync_payments", key)] == 41
    assert got[("qbo_integration_last_sync_rejected", key)] == 2
    assert got[("qbo_integration_rejected_payments", key)] == 3  # kept and retried, not only the last run's
    assert (
        got[("qbo_integration_last_successful_sync_timestamp_seconds", key)]
        == datetime(2026, 11, 25, 2, 3, 4, tzinfo=UTC).timestamp()
    )
    assert (
        got[("qbo_integration_refresh_token_expiry_timestamp_seconds", key)]
        == datetime(2027, 3, 1, tzinfo=UTC).timestamp()
    )
    broke = (("name", "brokezz"), ("namespace", "tenants"))
    assert got[("qbo_integration_last_sync_success", broke)] == 0
    assert got[("qbo_integration_suspended", broke)] == 1
    assert not any(dict(labels).get("name") in ("leaving", "garbage") for _, labels in got)
    new = (("name", "new"), ("namespace", "tenants"))
    assert ("qbo_integration_last_sync_success", new) not in got  # never ran: no made-up value


def test_series_vanish_with_the_integration() -> None:
    store = [snapshot(body("acme", "Connected"))]
    metrics = OperatorMetrics(lambda: store)
    assert b'qbo_integration_info{namespace="tenants",name="acme",company_id=' in metrics.exposition()
    store.clear()
    text = metrics.exposition().decode()
    assert "qbo_integration_info{" not in text and 'qbo_integrations{phase="Connected"} 0.0' in text
    metrics.api_writes.labels(kind="CronJob", verb="apply").inc()
    assert 'qbo_operator_api_writes_total{kind="CronJob",verb="apply"} 1.0' in metrics.exposition().decode()


@pytest.mark.parametrize("company_id", ['say "hi"', "back\\slash", "two\nlines", "ünïcode"])
def test_label_values_survive_the_text_format(company_id: str) -> None:
    """The per-integration series are written by hand (prometheus-client formatted 90,000 of them in seconds):
    what a Prometheus parser reads back is the company id as the spec has it."""
    obj = body("acme", "Connected")
    obj["spec"]["companyId"] = company_id
    got = samples(OperatorMetrics(lambda: [snapshot(obj)]).exposition())
    (labels,) = [dict(k[1]) for k in got if k[0] == "qbo_integration_info"]
    assert labels["company_id"] == company_id


def test_a_scrape_parses_only_the_integrations_that_changed() -> None:
    """The series of an unchanged CR come from the last scrape; a changed one (a new snapshot) is parsed again."""
    store = [snapshot(body("acme", "Connected")), snapshot(body("beta", "Pending"))]
    metrics = OperatorMetrics(lambda: store)
    first = samples(metrics.exposition())
    parsed: list[str] = []
    parse = metrics.integrations._seen

    def counting(obj: dict[str, Any]) -> Any:
        parsed.append(obj["metadata"]["name"])
        return parse(obj)

    metrics.integrations._seen = counting  # type: ignore[method-assign]
    again = samples(metrics.exposition())
    assert parsed == [] and {k: v for k, v in again.items() if "integration" in k[0]} == {
        k: v for k, v in first.items() if "integration" in k[0]
    }
    store[1] = snapshot(body("beta", "Connected"))
    assert samples(metrics.exposition())[("qbo_integrations", (("phase", "Connected"),))] == 2
    assert parsed == ["beta"]


def test_job_view_reads_the_job_controllers_conditions() -> None:
    failed = {
        "metadata": {"name": "j1", "annotations": {names.TRIGGER_ANNOTATION: "Manual"}},
        "status": {
            "conditions": [
                {"type": "FailureTarget", "status": "True", "lastTransitionTime": "2026-11-25T02:00:00Z"},
                {"type": "Failed", "status": "True", "reason": "PodFailurePolicy", "message": "exit 2",
                 "lastTransitionTime": "2026-11-25T02:00:05Z"},
            ]
        },
    }  # fmt: skip
    view = job_view(failed)
    assert view.trigger == "Manual" and view.outcome is not None
    assert view.outcome.failed and view.outcome.reason == "PodFailurePolicy"
    assert view.outcome.finished_at == datetime(2026, 11, 25, 2, 0, 5, tzinfo=UTC)
    done = {
        "metadata": {"name": "j2"},
        "status": {
            "completionTime": "2026-11-25T02:10:00Z",
            "conditions": [{"type": "Complete", "status": "True", "lastTransitionTime": "2026-11-25T02:10:01Z"}],
        },
    }
    assert job_view(done).outcome is not None and not job_view(done).outcome.failed  # type: ignore[union-attr]
    assert job_view({"metadata": {"name": "j3"}, "status": {"active": 1}}).outcome is None


def test_secret_views_keep_no_values() -> None:
    tokens = fake_tokens("913")
    view = secret_view(token_secret("tenants", "acme", tokens))
    assert view.integration == "acme" and not view.credentials
    assert view.token is not None and view.token.realm_id == "913"
    assert tokens.refresh_token not in repr(view) and tokens.access_token not in repr(view)
    creds = copy.deepcopy(token_secret("tenants", "acme", tokens, name="acme-qbo-sync"))
    creds["metadata"]["labels"][manifests.COMPONENT_LABEL] = manifests.CREDENTIALS_COMPONENT
    view = secret_view(creds)
    assert view.credentials and view.token is None and "dataDigest" in view.observed


def test_our_own_write_wins_until_the_watch_catches_up() -> None:
    indexed = snapshot({"metadata": {"resourceVersion": "10"}, "v": "old"})
    written = snapshot({"metadata": {"resourceVersion": "12"}, "v": "ours"})
    assert newer(indexed, written) == (written, False)
    caught_up = snapshot({"metadata": {"resourceVersion": "13"}, "v": "newer"})
    assert newer(caught_up, written) == (caught_up, True)  # the caller drops its copy
    assert newer(indexed, None) == (indexed, False)
    assert newer(None, written) == (written, False)


# --- the indexes the informers fill ---------------------------------------------------------------


def test_an_index_maps_each_key_to_every_object_that_names_it() -> None:
    index = Index()
    index.put(("t", "a"), {"913": ("t", "a")})
    index.put(("t", "b"), {"913": ("t", "b")})
    assert sorted(index.get("913") or ()) == [("t", "a"), ("t", "b")] and len(index) == 1
    index.put(("t", "a"), {"914": ("t", "a")})  # a's realm changed: it leaves 913
    assert list(index.get("913") or ()) == [("t", "b")] and list(index.get("914") or ()) == [("t", "a")]
    index.drop(("t", "b"))
    index.drop(("t", "b"))  # twice: nothing
    assert index.get("913") is None and only(index, "914") == ("t", "a") and list(index.keys()) == ["914"]
    index.put(("t", "a"), {})  # maps to nothing now
    assert len(index) == 0 and only(index, "914") is None


def cr(name: str, realm: str | None = None) -> dict[str, Any]:
    return {**body(name, "Connected", **({"realmId": realm} if realm else {})), "apiVersion": "x"}


def labelled(kind_body: dict[str, Any], integration: str, home: str | None = None) -> dict[str, Any]:
    out = copy.deepcopy(kind_body)
    labels = out["metadata"].setdefault("labels", {})
    labels[names.INTEGRATION_LABEL] = integration
    if home:
        labels[names.INTEGRATION_NAMESPACE_LABEL] = home
    return out


def test_views_apply_listed_objects_and_events_to_every_index_of_their_kind() -> None:
    views = Views()
    views.apply(CR, None, cr("acme", "913"))
    views.apply(CR, "ADDED", cr("bolt"))
    assert sorted(views.integration_keys()) == [("tenants", "acme"), ("tenants", "bolt")]
    assert views.realm_holders("913") == {("tenants", "acme")}
    assert (views.body("tenants", "acme") or {})["status"]["realmId"] == "913"
    views.apply(CR, "MODIFIED", cr("acme", "914"))
    assert views.realm_holders("913") == set() and views.realm_holders("914") == {("tenants", "acme")}
    secret = token_secret("tenants", "acme", fake_tokens("914"))
    views.apply(SECRETS, None, secret)
    assert (views.secret("tenants", secret["metadata"]["name"]) or Any).token.realm_id == "914"
    job = labelled({"metadata": {"name": "j1", "namespace": "home"}, "status": {}}, "acme", home="tenants")
    views.apply(JOBS, "ADDED", job)
    assert views.indices["jobs"].get(("tenants", "acme")) is not None  # by the integration, not the Job
    views.apply(JOBS, "DELETED", {"metadata": {"namespace": "home", "name": "j1"}})  # a relisting's name only
    views.apply(CR, "DELETED", {"metadata": {"namespace": "tenants", "name": "acme"}})
    assert views.integration_keys() == [("tenants", "bolt")] and views.realm_holders("914") == set()
    assert views.indices["jobs"].get(("tenants", "acme")) is None and views.body("tenants", "acme") is None


TOKEN_SECRET = token_secret("tenants", "acme", fake_tokens("77"))


@pytest.mark.parametrize(
    ("resource", "event", "obj", "expected"),
    [
        (CR, None, cr("acme", "913"), ("acme", None, "tenants", False, "913")),
        (CR, "DELETED", cr("acme"), ("acme", None, "tenants", False, None)),
        (SECRETS, "MODIFIED", TOKEN_SECRET, (None, "acme", "tenants", False, "77")),
        (SECRETS, "DELETED", TOKEN_SECRET, (None, "acme", "tenants", False, None)),  # a deleted Secret holds none
        (SECRETS, "ADDED", token_secret("tenants", "acme", None), (None, "acme", "tenants", False, None)),
        (CRONJOBS, None, labelled({"metadata": {"name": "c", "namespace": "home"}}, "acme", home="tenants"),
         ("c", "acme", "tenants", True, None)),
        (ROLES, "ADDED", labelled({"metadata": {"name": "r", "namespace": "tenants"}}, "acme"),
         ("r", "acme", "tenants", False, None)),
        (ROLES, "ADDED", {"metadata": {"name": "r", "namespace": "tenants"}}, ("r", None, "tenants", False, None)),
    ],
)  # fmt: skip
def test_a_change_keeps_only_what_handling_it_needs(
    resource: Any, event: str | None, obj: dict[str, Any], expected: tuple[Any, ...]
) -> None:
    what = change(resource, event, obj)
    name, integration, owner_namespace, at_home, realm = expected
    assert (what.integration, what.owner_namespace, what.at_home, what.realm) == (
        integration,
        owner_namespace,
        at_home,
        realm,
    )
    assert what.type == event and what.resource == resource
    if name is not None:
        assert what.name == name


def test_an_object_gone_during_a_gap_is_handled_as_the_indexes_last_knew_it() -> None:
    views = Views()
    views.apply(CR, None, cr("acme", "913"))
    cron = labelled({"apiVersion": "batch/v1", "kind": "CronJob", "metadata": {"name": "c", "namespace": "home"}},
                    "acme", home="tenants")  # fmt: skip
    views.apply(CRONJOBS, None, cron)
    # A relisting reports these two gone by name only; what the handler needs comes from the indexes.
    gone_cr = change(CR, "DELETED", views.last_known(CR, ("tenants", "acme")) or {})
    gone_cron = change(CRONJOBS, "DELETED", views.last_known(CRONJOBS, ("home", "c")) or {})
    assert (gone_cr.name, gone_cr.realm) == ("acme", "913")
    assert (gone_cron.integration, gone_cron.owner_namespace, gone_cron.at_home) == ("acme", "tenants", True)
    assert views.last_known(CRONJOBS, ("home", "other")) is None and views.last_known(JOBS, ("home", "j")) is None
