"""The generator: same seed same data, consistent books, every odd case a sync must tell apart, and new
payments after the consent."""

from __future__ import annotations

import itertools
from collections import Counter
from datetime import timedelta
from typing import Any

from qbo_operator.harness.sandbox.qbo_books import check_books
from qbo_operator.harness.sandbox.qbo_values import INACTIVE_METHODS, PAYMENT_METHODS, parse_time
from tests.support.sandbox import FakeClock, SandboxFactory, snapshot


def kinds(payment: dict[str, Any]) -> set[str]:
    """What a sync has to tell apart, from the payment alone."""
    types = Counter(t["TxnType"] for ln in payment["Line"] for t in ln["LinkedTxn"])
    out = set()
    if payment.get("PrivateNote", "").startswith("Voided"):
        out.add("voided")
    if types["Invoice"] >= 2:
        out.add("split")
    if types["Invoice"] == 1:
        out.add("one_invoice")
    if types["CreditMemo"] and not types["Invoice"]:
        out.add("credit_only")
    if types["CreditMemo"] and types["Invoice"]:
        out.add("credit_applied")
    if payment["TotalAmt"] == 0 and types["Invoice"]:
        out.add("zero_total_settles")
    if payment["UnappliedAmt"] > 0 and types["Invoice"]:
        out.add("unapplied_remainder")
    if not payment["Line"] and not out & {"voided"}:
        out.add("unapplied_only")
    if "PaymentMethodRef" not in payment:
        out.add("no_method")
    return out


def test_same_seed_same_data(make_sandbox: SandboxFactory) -> None:
    a, b = make_sandbox(), make_sandbox()
    ra, rb = (
        a.add_company("Acme Dispensary", seed=11, payments=150),
        b.add_company("Acme Dispensary", seed=11, payments=150),
    )
    assert ra == rb
    a.generate_payments(ra, n=300, seed=5)
    b.generate_payments(rb, n=300, seed=5)
    assert snapshot(a, ra) == snapshot(b, rb)
    c = make_sandbox()
    rc = c.add_company("Acme Dispensary", seed=12, payments=150)
    assert snapshot(c, rc) != snapshot(a, ra)


def test_history_is_consistent_and_has_every_odd_case(make_sandbox: SandboxFactory, clock: FakeClock) -> None:
    sb = make_sandbox()
    realm = sb.add_company("Acme Dispensary", seed=1, payments=800)
    company = sb.companies[realm]
    assert check_books(company) == []
    assert len(company.payments) == 800
    assert company.deleted and all(d.entity == "Payment" for d in company.deleted)
    assert not {d.id for d in company.deleted} & set(company.payments)
    seen = Counter(k for p in company.payments.values() for k in kinds(p))
    for kind in ("voided", "split", "one_invoice", "credit_only", "credit_applied", "zero_total_settles",
                 "unapplied_remainder", "unapplied_only", "no_method"):  # fmt: skip
        assert seen[kind] > 0, kind
    assert seen["one_invoice"] > 0.6 * len(company.payments)
    applied_later = [p for p in company.payments.values()
                     if p.get("PrivateNote") == "Prepayment for next order" and p["Line"]]  # fmt: skip
    assert applied_later and all(
        p["SyncToken"] == "1" and parse_time(p["MetaData"]["LastUpdatedTime"]) > parse_time(p["MetaData"]["CreateTime"])
        for p in applied_later
    ), "some prepayments are applied to an invoice days later"
    used = {company.method_name(p.get("PaymentMethodRef")) for p in company.payments.values()}
    assert used - {None} == set(PAYMENT_METHODS) | set(INACTIVE_METHODS), "an inactive method is still named"
    assert all(set(p["PaymentMethodRef"]) == {"value"} for p in company.payments.values() if "PaymentMethodRef" in p)
    created = [parse_time(p["MetaData"]["CreateTime"]) for p in company.tables["Payment"].ordered()]
    assert created == sorted(created) and len(set(created)) == len(created)
    assert clock.now - timedelta(days=91) < created[0] and created[-1] < clock.now
    detail_types = Counter(ln["DetailType"] for i in company.invoices.values() for ln in i["Line"])
    assert {"SalesItemLineDetail", "SubTotalLineDetail", "DiscountLineDetail", "DescriptionOnly"} <= set(detail_types)
    assert any(i["TxnTaxDetail"]["TotalTax"] > 0 for i in company.invoices.values())
    assert any(i["Balance"] > 0 for i in company.invoices.values()), "some receivables stay open"
    assert all(r["Balance"] == 0 and r["PaymentMethodRef"] for r in company.sales_receipts.values())
    assert len({c["DisplayName"] for c in company.customers.values()}) == len(company.customers)


def test_new_payments_are_now_after_consent_in_whole_seconds(make_sandbox: SandboxFactory, clock: FakeClock) -> None:
    sb = make_sandbox()
    realm = sb.add_company("Acme Dispensary", seed=2, payments=50)
    clock.advance(3600)
    new = sb.generate_payments(realm, n=1000, seed=3)
    company = sb.companies[realm]
    assert len(new) == 1000 and len(company.payments) == 1050
    stamps = [parse_time(p["MetaData"]["CreateTime"]) for p in new]
    assert all(b >= a for a, b in itertools.pairwise(stamps)), "non-decreasing; many share a second"
    assert len(set(stamps)) < len(stamps) and all(s.microsecond == 0 for s in stamps)
    assert clock.now - timedelta(minutes=1) <= stamps[0] and stamps[-1] <= clock.now
    assert check_books(company) == []
    assert Counter(k for p in new for k in kinds(p))["voided"] > 10

    # After a consent, new payments come after it, even when the clock has not moved.
    sb.issue_tokens(realm)
    consent = clock.now
    more = sb.generate_payments(realm, n=10, seed=4)
    assert min(parse_time(p["MetaData"]["CreateTime"]) for p in more) > consent
    # And they always come after the newest payment.
    again = sb.generate_payments(realm, n=5, seed=4)
    assert parse_time(again[0]["MetaData"]["CreateTime"]) >= parse_time(more[-1]["MetaData"]["CreateTime"])
    assert [int(p["Id"]) for p in company.tables["Payment"].ordered()] == sorted(int(i) for i in company.payments)
    assert check_books(company) == []


def test_many_payments_within_a_few_seconds(make_sandbox: SandboxFactory, clock: FakeClock) -> None:
    sb = make_sandbox()
    realm = sb.add_company("Acme Dispensary", seed=2, payments=20)
    clock.advance(600)
    new = sb.generate_payments(realm, n=2500, seed=1, seconds=2)
    stamps = {parse_time(p["MetaData"]["CreateTime"]) for p in new}
    assert len(stamps) <= 2 and max(stamps) <= clock.now, "2,500 payments share two seconds"
    assert check_books(sb.companies[realm]) == []
