"""`qbo-operator demo`: the whole mission on one machine, with no accounts and no cluster.

A local control plane, the Helm chart, the QBO and Green Check sandboxes, the operator and the
gateway as processes under the chart's ServiceAccounts, a sample company connected through the
Connect flow, a day of payments, the night's sync through the CronJob's Job, and what arrived in
Green Check next to the demo's own projection of QBO's books; then a bookkeeper's changes to payments
already delivered, a second night, and Green Check corrected (records updated and retracted, each
with its versions); then a second company that delivers over Green Check's documented SFTP intake to a
real sshd, its files' rows next to its books. Each step prints what it does; a failure names the step."""

from __future__ import annotations

import argparse
import contextlib
import itertools
import shutil
import signal
import sys
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from decimal import Decimal
from pathlib import Path
from typing import Any, TypeVar

import httpx
import yaml

from qbo_operator.core import names
from qbo_operator.core.models import parse_rfc3339
from qbo_operator.harness import demo_sftp, polling
from qbo_operator.harness.controlplane import ControlPlane, ControlPlaneError, run_job_pods
from qbo_operator.harness.demo_books import (
    Bookkeeper,
    Comparison,
    compare,
    created,
    expected_cash,
    invoice_links,
    invoices_only,
    payment_cash,
    payment_of,
    to_cents,
    voided,
)
from qbo_operator.harness.localstack import SYSTEM_NAMESPACE, LocalStack, StackError, parse_forms, submit
from qbo_operator.harness.sshd import SftpServer

ROOT = Path(__file__).resolve().parents[3]
EXAMPLE = ROOT / "examples" / "quickbooksintegration-minimal.yaml"
EXAMPLE_SFTP = ROOT / "examples" / "quickbooksintegration-sftp.yaml"
ALERTS = ROOT / "charts" / "qbo-operator" / "files" / "alerts.yaml"
T = TypeVar("T")


class DemoError(RuntimeError):
    pass


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--interactive", action="store_true", help="wait for you to open the Connect link")
    parser.add_argument("--no-wait", action="store_true", help="stop after the summary (for scripts and CI)")
    parser.add_argument("--payments", type=int, default=24, help="payments created during the demo's day")
    parser.add_argument("--history", type=int, default=40, help="payments that exist before the connection")
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument("--dir", type=Path, default=ROOT / ".cache" / "demo", help="working directory")


# --- output ------------------------------------------------------------------------------------

_TTY = sys.stdout.isatty()
BOLD, DIM, GREEN, RED, RESET = ("\033[1m", "\033[2m", "\033[32m", "\033[31m", "\033[0m") if _TTY else ("",) * 5


def say(text: str = "") -> None:
    print(text, flush=True)


@contextmanager
def step(number: int, title: str) -> Iterator[None]:
    """One numbered step: a spinner while it runs (on a terminal), its time when done, and on
    failure the step's name with the reason."""
    say(f"\n{BOLD}[{number}] {title}{RESET}")
    started = time.monotonic()
    done = threading.Event()

    def spin() -> None:
        for frame in itertools.cycle("⠋⠙⠹⠸⠼⠴⠦⠧⠇⠏"):
            if done.wait(0.1):
                break
            sys.stdout.write(f"\r    {frame} {time.monotonic() - started:5.1f}s")
            sys.stdout.flush()
        sys.stdout.write("\r" + " " * 20 + "\r")

    spinner = threading.Thread(target=spin, daemon=True) if _TTY else None
    if spinner:
        spinner.start()
    try:
        yield
    except Exception as exc:
        done.set()
        if spinner:
            spinner.join()
        raise DemoError(f"step {number} ({title}) failed: {exc}") from exc
    done.set()
    if spinner:
        spinner.join()
    say(f"    {GREEN}✓{RESET} {DIM}{time.monotonic() - started:.1f}s{RESET}")


def wait_for(what: str, check: Callable[[], T | None], timeout: float = 120.0, every: float = 0.5) -> T:
    """`polling.wait_for` at the demo's pace; a timeout is a DemoError naming what was awaited."""
    try:
        return polling.wait_for(what, check, timeout, every)
    except polling.WaitTimeout:
        raise DemoError(f"timed out after {timeout:.0f}s waiting for {what}") from None


def indent(text: str) -> str:
    return "\n".join("    " + line for line in text.rstrip().splitlines())


def cents(value: int) -> str:
    return f"${Decimal(value) / 100:,.2f}"


# --- the demo ----------------------------------------------------------------------------------


class Demo:
    def __init__(self, args: argparse.Namespace) -> None:
        self.args = args
        self.workdir: Path = args.dir.resolve()
        example = yaml.safe_load(EXAMPLE.read_text())
        self.namespace: str = example["metadata"]["namespace"]
        self.name: str = example["metadata"]["name"]
        self.company_id: str = example["spec"]["companyId"]
        self.company_name: str = example["spec"].get("companyName", self.name)
        self.cp: ControlPlane | None = None
        self.stack: LocalStack | None = None
        self.night: dict[str, Any] = {}
        self.changes = "updated=0 retracted=0"
        self.sftp_server: SftpServer | None = None
        self.sftp_line = ""

    # helpers
    def kubectl(self, *args: str) -> str:
        assert self.cp is not None
        return self.cp.kubectl(*args).stdout

    def integration(self, name: str | None = None) -> dict[str, Any]:
        assert self.cp is not None
        obj: dict[str, Any] = self.cp.kubectl_json("get", "qbi", name or self.name, "-n", self.namespace)
        return obj

    def phase(self, name: str | None = None) -> str | None:
        phase: str | None = (self.integration(name).get("status") or {}).get("phase")
        return phase

    def run(self) -> int:
        # Ctrl-C (and SIGTERM) stop the demo cleanly even when it was started with SIGINT ignored, as a
        # background job of a non-interactive shell is: Python installs no KeyboardInterrupt handler then.
        signal.signal(signal.SIGINT, signal.default_int_handler)
        signal.signal(signal.SIGTERM, signal.default_int_handler)
        shutil.rmtree(self.workdir, ignore_errors=True)
        self.workdir.mkdir(parents=True)
        say(f"{BOLD}qbo-operator demo{RESET}: QuickBooks Online → Green Check, end to end, on this machine.")
        say(f"{DIM}Working directory: {self.workdir} (logs in logs/){RESET}")
        try:
            self.steps()
            if not self.args.no_wait:
                # the announcement is inside the suppress: a Ctrl-C right after it is still a clean stop
                with contextlib.suppress(KeyboardInterrupt):
                    say(f"\n{BOLD}Running until Ctrl-C.{RESET}")
                    while True:
                        time.sleep(3600)
        finally:
            self.stop()
        return 0

    def steps(self) -> None:
        with step(1, "Start a local Kubernetes control plane (etcd, kube-apiserver, kube-controller-manager)"):
            self.start_cluster()
        self.stack = LocalStack(self.cluster, self.workdir)
        with step(2, "Start the QBO and Green Check sandboxes"):
            self.start_sandboxes()
        with step(
            3,
            "Install the Helm chart (real helm) and start the operator and the gateway under its ServiceAccounts",
        ):
            self.install()
        with step(4, f"Apply a QuickbooksIntegration ({EXAMPLE.relative_to(ROOT)})"):
            self.apply_integration()
        with step(5, "Connect: a person at the company opens the link and approves at Intuit"):
            self.connect()
        with step(6, f"A day of business: {self.args.payments} new payments in QuickBooks (webhooks arrive)"):
            self.day_of_business()
        with step(7, "The night's sync: a Job from the integration's CronJob, run by the test kubelet"):
            self.nightly_sync("demo")
        with step(8, "What arrived in Green Check (its read-back API) next to what QuickBooks holds"):
            self.compare()
        with step(9, "The next day a bookkeeper changes payments already delivered (webhooks arrive)"):
            self.next_day()
        with step(10, "The next night's sync reads what changed since the last one"):
            self.nightly_sync("demo-2")
        with step(11, "Green Check corrected: the current truth, and each record's versions for audit"):
            self.corrected_in_green_check()
        with step(12, "A second company delivers over SFTP, Green Check's documented intake (a real OpenSSH sshd)"):
            self.sftp_company()
        with step(13, "Metrics and alerts"):
            self.metrics_and_alerts()
        self.next_steps()

    @property
    def cluster(self) -> ControlPlane:
        assert self.cp is not None, "the control plane is not started"
        return self.cp

    def start_cluster(self) -> None:
        self.cp = ControlPlane(directory=self.workdir / "cluster")
        self.cp.start()
        self.cp.apply_crds(ROOT / "crds" / "quickbooksintegrations.yaml")
        say(indent(self.kubectl("version").strip()))

    def start_sandboxes(self) -> None:
        stack = self.stack
        assert stack is not None
        stack.start_sandboxes(self.company_name, history=self.args.history, seed=self.args.seed)
        state = stack.qbo_state()
        self.realm = state["realms"][0]["realmId"]
        self.books = Bookkeeper(stack.qbo_url, self.realm)
        say(f"    QBO sandbox        {stack.qbo_url}  (company {self.company_name!r}, realm {self.realm},")
        say(f"                       {self.args.history} payments from before today)")
        say(f"    Green Check sandbox {stack.greencheck_url}")

    def install(self) -> None:
        stack = self.stack
        assert stack is not None
        stack.install_chart()
        say(indent(self.cluster.helm("list", "-n", "qbo-system").stdout))
        stack.start_gateway()
        stack.start_operator()
        say("    The chart's Deployments stay Pending here (no nodes); the same code runs as local processes")
        say(f"    gateway  {stack.gateway_url}    operator metrics {stack.operator_metrics_url}")

    def apply_integration(self) -> None:
        self.kubectl("create", "namespace", self.namespace)
        self.kubectl("apply", "-f", str(EXAMPLE))
        wait_for("phase Pending", lambda: self.phase() == "Pending")
        say(indent(self.kubectl("get", "qbi", "-n", self.namespace, "-o", "wide")))
        self.link = self.integration()["status"]["authorizationURL"]
        say(f"    Connect link: {self.link}")

    def connect(self) -> None:
        if self.args.interactive:
            say(f"    Open this link in your browser and approve:\n      {self.link}")
        else:
            self.connect_like_a_browser(self.link, self.realm)
        wait_for(
            "phase Connected",
            lambda: self.phase() == "Connected",
            timeout=600 if self.args.interactive else 120,
        )
        say(indent(self.kubectl("get", "qbi", "-n", self.namespace, "-o", "wide")))
        self.connected_at = parse_rfc3339(self.integration()["status"]["connectedAt"])
        secret = self.cluster.kubectl_json("get", "secret", f"{self.name}-qbo-tokens", "-n", self.namespace)
        keys = ", ".join(sorted(secret["data"]))
        say(f"    Token Secret {self.name}-qbo-tokens holds: {keys} (values never shown)")

    def day_of_business(self) -> None:
        assert self.stack is not None
        httpx.post(
            f"{self.stack.qbo_url}/_sandbox/companies/{self.realm}/payments",
            json={"n": self.args.payments, "seed": self.args.seed + 1},
            timeout=60,
        ).raise_for_status()
        customer = next(p["CustomerRef"]["value"] for p in self.books.payments() if created(p) >= self.connected_at)
        self.prepaid = self.books.prepayment(customer, Decimal("250.00"))
        say(f"    and a prepayment: payment {self.prepaid['Id']} of $250.00, a cheque that came before its invoice")
        events = wait_for(
            "webhook events on the integration",
            lambda: ((self.integration().get("status") or {}).get("webhook") or {}).get("eventsSinceLastSync"),
            timeout=60,
        )
        say(f"    status.webhook.eventsSinceLastSync = {events} (signed webhooks, verified by the gateway)")

    def nightly_sync(self, suffix: str, name: str | None = None) -> None:
        """One night: a Job created from the CronJob (as the CronJob controller would), its Pod run here."""
        name = name or self.name
        # The sync runs in the release namespace, beside the platform credentials (docs/security.md).
        cronjob, home = names.sync_workload_name(self.namespace, name), SYSTEM_NAMESPACE
        cj = self.cluster.kubectl_json("get", "cronjob", cronjob, "-n", home)
        say(f"    CronJob {home}/{cronjob}: schedule {cj['spec']['schedule']!r} ({cj['spec'].get('timeZone', 'UTC')})")
        job = names.shorten(cronjob, f"-{suffix}", 63)
        before = _last_sync(self.integration(name))
        self.kubectl("create", "job", job, f"--from=cronjob/{cronjob}", "-n", home)
        run = run_job_pods(
            self.cluster,
            home,
            job,
            command_map={"qbo-operator": str(Path(sys.executable).parent / "qbo-operator")},
        )
        say(indent(run.stderr.strip()[-1500:]) if run.stderr.strip() else "")
        if run.exit_code != 0:
            raise DemoError(f"the sync exited with {run.exit_code}")
        self.kubectl("wait", "--for=condition=Complete", f"job/{job}", "-n", home, "--timeout=120s")
        night = wait_for(f"status.lastSync of job {job}", lambda: _new_success(self.integration(name), before))
        if name == self.name:
            self.night = night
        say(indent(self.kubectl("get", "qbi", "-n", self.namespace, "-o", "wide")))

    def connect_like_a_browser(self, link: str, realm: str, company: str | None = None) -> None:
        with httpx.Client(follow_redirects=False, timeout=30) as browser:
            page = browser.get(link)
            page.raise_for_status()
            shown = company or self.company_name
            say(f"    GET  Connect page          → {page.status_code} ({shown} and what will be shared)")
            form = parse_forms(page.text)[0]
            resp = submit(browser, str(page.url), form, {})
            # Browsers treat http://127.0.0.1 as a secure context and keep the `__Host-` (Secure)
            # cookie; Python's cookie jar does not, so carry it the way Chromium would.
            cookies = "; ".join(c.split(";", 1)[0] for c in resp.headers.get_list("set-cookie"))
            location = resp.headers["location"]
            say(f"    Connect button             → redirect to Intuit (sandbox) {location.split('?')[0]}")
            consent = browser.get(location)
            consent.raise_for_status()
            form = parse_forms(consent.text)[0]
            approve = next(b for b in form.buttons if b[1] == "approve")
            answer = submit(browser, str(consent.url), form, {approve[0]: approve[1], "realmId": realm})
            say(f"    Approve at Intuit          → {answer.status_code} redirect back to the gateway")
            done = browser.get(answer.headers["location"], headers={"Cookie": cookies})
            say(f"    OAuth callback             → {done.status_code} “connected” page")
            if done.status_code != 200:
                raise DemoError(f"the callback answered {done.status_code}: {done.text[:300]}")

    def compare(self) -> None:
        stack = self.stack
        assert stack is not None
        records = stack.greencheck_records(self.company_id)
        payments = self.books.payments()
        say(f"    Green Check now holds {len(records)} invoice-payment records for {self.company_name}:")
        header = ("invoice #", "inv. total", "payment", "paid on", "cash")
        say("    {:>9} {:>11} {:>8} {:>10} {:>11}  customer: products".format(*header))
        for rec in records[:15]:
            inv = rec.get("invoice") or {}
            products = ", ".join(li.get("product_name", "?") for li in rec.get("line_items") or [])
            say(
                f"    {inv.get('number') or '?':>9} {cents(int(inv.get('total') or 0)):>11} "
                f"{payment_of(str(rec.get('pos_sale_id', ''))):>8} {str(rec.get('date', ''))[:10]:>10} "
                f"{cents(int(rec.get('total_paid') or 0)):>11}  "
                f"{(rec.get('customer') or {}).get('name', '?')}: {products[:48]}"
            )
        if len(records) > 15:
            say(f"    … and {len(records) - 15} more")
        before = [p for p in payments if created(p) < self.connected_at]
        new = [p for p in payments if created(p) >= self.connected_at]
        unlinked = [p for p in new if not invoice_links(p)]
        gone = [p for p in new if voided(p)]
        company = httpx.get(f"{stack.qbo_url}/_sandbox/companies/{self.realm}", timeout=30).json()
        receipts = (company.get("counts") or {}).get("SalesReceipt", 0)
        say(f"\n    QuickBooks holds {len(payments)} payments: {len(before)} created before the connection,")
        say(f"    {len(new)} since ({len(unlinked)} not applied to any invoice, {len(gone)} voided).")
        say("    Absent from Green Check, by design:")
        say(f"      • the {len(before)} payments from before the connection (at {self.connected_at:%Y-%m-%d %H:%M}Z)")
        say(f"      • the {receipts} sales receipts: cash sales, not invoice payments; never read")
        say("      • unapplied (the prepayment among them), credit-only and voided payments: no cash on an invoice")
        say("    One record per (payment, invoice): a payment split over three invoices gives three records;")
        say("    each record's amount is cash — credits applied with it are carried apart, never as cash.")
        self.check_against_books(records, payments)

    def check_against_books(self, records: list[dict[str, Any]], payments: list[dict[str, Any]]) -> Comparison:
        """Green Check's current records against the demo's own projection of QuickBooks' books."""
        expected = expected_cash(self.realm, payments, self.connected_at)
        held = [(str(r.get("pos_sale_id")), int(r.get("total_paid") or 0)) for r in records]
        result = compare(expected, held)
        say(f"    Checked against QuickBooks' books: {result.line()}")
        if not result.exact:
            raise DemoError(
                f"Green Check does not hold exactly the expected records: missing {result.missing[:5]}, "
                f"unexpected {result.unexpected[:5]}, wrong cash {result.misstated[:5]}"
            )
        self.result = result
        return result

    def next_day(self) -> None:
        """Three everyday corrections to books already delivered: each must reach Green Check."""
        payments = {p["Id"]: p for p in self.books.payments()}
        records: dict[str, list[str]] = {}
        for external_id in sorted(expected_cash(self.realm, payments.values(), self.connected_at)):
            records.setdefault(payment_of(external_id), []).append(external_id)
        by_size = sorted(records, key=lambda pid: (-len(records[pid]), int(pid)))
        if not by_size:
            raise DemoError("no payment reached Green Check on the first night")
        self.voided_id, self.voided_records = by_size[0], records[by_size[0]]
        prepaid = Decimal(str(self.prepaid["TotalAmt"]))
        invoice = self.books.invoice(self.prepaid["CustomerRef"]["value"], prepaid + 50)
        self.books.apply(self.prepaid["Id"], [(invoice["Id"], prepaid)])
        say(f"    • invoice {invoice.get('DocNumber') or invoice['Id']} raised for {cents(to_cents(prepaid + 50))};")
        say(f"      yesterday's prepayment {self.prepaid['Id']} ({cents(to_cents(prepaid))}) applied to it")
        self.books.void(self.voided_id)
        say(f"    • payment {self.voided_id} voided (Green Check holds {len(self.voided_records)} records of it)")
        self.corrected = self.correct_one(payments, records, exclude=self.voided_id)
        self.applied = f"qbo:{self.realm}:payment:{self.prepaid['Id']}:invoice:{invoice['Id']}"
        events = wait_for("webhook events for the changes", lambda: _webhook_events(self.integration()), timeout=60)
        say(f"    status.webhook.eventsSinceLastSync = {events}")

    def correct_one(
        self, payments: dict[str, dict[str, Any]], records: dict[str, list[str]], exclude: str
    ) -> tuple[str, int] | None:
        """Take $10.00 off a delivered one-invoice cash payment (a typo fixed): (its record, the new cash)."""
        for pid in sorted(records, key=int):
            pay = payments[pid]
            cash = payment_cash(pay)
            if pid == exclude or len(cash) != 1 or not invoices_only(pay):
                continue
            ((invoice_id, amount),) = cash.items()
            if amount < 2000:
                continue
            total = Decimal(str(pay["TotalAmt"])) - 10
            self.books.apply(pid, [(invoice_id, Decimal(amount - 1000) / 100)], total=total)
            say(f"    • payment {pid} corrected on invoice {invoice_id}: {cents(amount)} → {cents(amount - 1000)}")
            return records[pid][0], amount - 1000
        say("    • (no one-invoice cash payment of $20 or more to correct tonight)")
        return None

    def corrected_in_green_check(self) -> None:
        """After the second night: the books' projection again, and the audit trail of each change."""
        stack = self.stack
        assert stack is not None
        result = self.check_against_books(stack.greencheck_records(self.company_id), self.books.payments())
        last = self.night
        self.changes = f"updated={last.get('recordsUpdated', 0)} retracted={last.get('recordsRetracted', 0)}"
        say(
            f"    The sync's own count for the night (status.lastSync): created={last.get('recordsCreated', 0)} "
            f"{self.changes}"
        )
        watched = [(self.applied, "created"), *((r, "retracted") for r in self.voided_records)]
        if self.corrected is not None:
            watched.append((self.corrected[0], "updated"))
        for external_id, wanted in watched:
            history = stack.greencheck_versions(self.company_id, external_id)
            trail = " → ".join(v["status"] for v in history)
            say(f"    {external_id}: {trail}")
            if history[-1]["status"] != wanted:
                raise DemoError(f"{external_id} should be {wanted} now; its versions are {trail}")
        if int(last.get("recordsRetracted", 0)) < len(self.voided_records) or (
            self.corrected is not None and int(last.get("recordsUpdated", 0)) < 1
        ):
            raise DemoError(f"the night reported {self.changes}, less than the bookkeeper changed")
        say(f"    Nothing duplicated: {result.delivered} records, {result.expected} expected, each once.")

    def sftp_company(self) -> None:
        """A second company, its integration set to deliver over SFTP; its night's files next to its books."""
        stack = self.stack
        assert stack is not None
        server = self.sftp_server = SftpServer(self.workdir / "sftp").start()
        say(f"    sshd (OpenSSH, internal-sftp) on {server.host}:{server.port}, keys generated for this run")
        company = (
            httpx.post(
                f"{stack.qbo_url}/_sandbox/companies",
                json={"name": demo_sftp.COMPANY_NAME, "seed": self.args.seed + 7, "payments": self.args.history},
                timeout=60,
            )
            .raise_for_status()
            .json()
        )
        realm = company["realmId"]
        manifest = self.workdir / "sftp-integration.yaml"
        manifest.write_text(yaml.safe_dump_all(demo_sftp.manifests(EXAMPLE_SFTP, server)))
        self.kubectl("apply", "-f", str(manifest))
        say(f"    Applied {EXAMPLE_SFTP.relative_to(ROOT)} as {demo_sftp.NAME}: its Secret holds the private key")
        say("    and the server's pinned host key (known_hosts; no trust on first use)")
        link = wait_for(
            "the Connect link", lambda: (self.integration(demo_sftp.NAME).get("status") or {}).get("authorizationURL")
        )
        self.connect_like_a_browser(link, realm, demo_sftp.COMPANY_NAME)
        wait_for("phase Connected", lambda: self.phase(demo_sftp.NAME) == "Connected")
        connected_at = parse_rfc3339(self.integration(demo_sftp.NAME)["status"]["connectedAt"])
        books = Bookkeeper(stack.qbo_url, realm)
        httpx.post(
            f"{stack.qbo_url}/_sandbox/companies/{realm}/payments",
            json={"n": self.args.payments, "seed": self.args.seed + 8},
            timeout=60,
        ).raise_for_status()
        say(f"    A day of business at {demo_sftp.COMPANY_NAME}: {self.args.payments} new payments")
        self.nightly_sync("demo-sftp", demo_sftp.NAME)
        files = server.files()
        rows = demo_sftp.read_rows(files)
        result, books_cash = demo_sftp.check(rows, realm, books.payments(), books.invoices(), connected_at)
        say(f"    {len(files)} files in {server.directory}: {', '.join(f.name for f in files)}")
        say("    {:>9} {:>10} {:>8} {:>7} {:>10} {:>10}  customer: products".format(
            "invoice #", "paid on", "payment", "type", "file", "QuickBooks"))  # fmt: skip
        for row in rows[:12]:
            cash = books_cash.get((row["Payment ID"], row["Invoice Number"]), 0)
            say(
                f"    {row['Invoice Number']:>9} {row['Payment Date']:>10} {row['Payment ID']:>8} "
                f"{row['Payment Type'] or '-':>7} {row['Payment Amount']:>10} {cents(cash):>10}  "
                f"{row['Customer']}: {row['Product'][:40]}"
            )
        if len(rows) > 12:
            say(f"    … and {len(rows) - 12} more rows (location_id {rows[0]['location_id']} on every row)")
        say(f"    Checked against QuickBooks' books: {result.line()}")
        say("    (header exactly as published; Invoice Number, Customer and location_id on every row; each row's")
        say("    dates, customer, invoice total, open balance and cash as the books say)")
        self.sftp_line = f"DEMO-SFTP files={len(files)} rows={len(rows)} {result.line()}"
        if not result.exact:
            raise DemoError(f"the SFTP files do not hold exactly the expected rows: {result.line()}")

    def metrics_and_alerts(self) -> None:
        stack = self.stack
        assert stack is not None
        text = httpx.get(stack.operator_metrics_url, timeout=10).text
        wanted = [
            line for line in text.splitlines()
            if (line.startswith("qbo_") and f'name="{self.name}"' in line) or line.startswith("qbo_integrations{")
        ]  # fmt: skip
        say(indent("\n".join(wanted[:14])))
        if ALERTS.exists():
            rules = yaml.safe_load(ALERTS.read_text())
            alerts = [r for g in rules.get("groups", []) for r in g.get("rules", []) if "alert" in r]
            say(f"\n    {len(alerts)} alerts ship in the chart's PrometheusRule; none fires now. Each would if:")
            for rule in alerts:
                say(f"      • {rule['alert']}: {rule.get('annotations', {}).get('summary', '')}")

    def next_steps(self) -> None:
        assert self.cp is not None and self.stack is not None
        say(
            f"\n{BOLD}Summary{RESET}: phase {self.phase()}, {self.result.delivered} records in Green Check, "
            f"as QuickBooks' books say after the bookkeeper's changes ({self.changes})."
        )
        say(f"DEMO-SUMMARY phase={self.phase()} {self.result.line()} {self.changes}")
        say(self.sftp_line)
        kc = self.cp.kubeconfig
        say(f"\n{BOLD}Poke at it{RESET} (in another terminal):")
        say(f"    export KUBECONFIG={kc}")
        say(f"    {self.cp.bin('kubectl')} get qbi -A -o wide")
        say(f"    kubectl describe qbi {self.name} -n {self.namespace}")
        say(f"    kubectl annotate qbi {self.name} -n {self.namespace} {names.SYNC_REQUESTED_ANNOTATION}=$(date +%s)")
        say(f"    curl -s {self.stack.operator_metrics_url} | grep ^qbo_")
        say(f"    curl -s {self.stack.greencheck_url}/_sandbox/state")

    def stop(self) -> None:
        say("\nStopping everything …")
        if self.sftp_server is not None:
            self.sftp_server.stop()
        if self.stack is not None:
            self.stack.stop()
        if self.cp is not None:
            self.cp.stop()
        say("Stopped: no process left running.")


def _last_sync(obj: dict[str, Any]) -> dict[str, Any]:
    last: dict[str, Any] = (obj.get("status") or {}).get("lastSync") or {}
    return last


def _webhook_events(obj: dict[str, Any]) -> int | None:
    events = ((obj.get("status") or {}).get("webhook") or {}).get("eventsSinceLastSync")
    return int(events) if events else None


def _new_success(obj: dict[str, Any], before: dict[str, Any]) -> dict[str, Any] | None:
    """status.lastSync once a newer run than `before` wrote it and succeeded, else None."""
    last = _last_sync(obj)
    fresh = last and last != before and last.get("result") in ("Succeeded", "PartiallySucceeded")
    return last if fresh else None


def _interrupt(signum: int, frame: object) -> None:
    raise KeyboardInterrupt


def main(args: argparse.Namespace) -> int:
    signal.signal(signal.SIGTERM, _interrupt)  # SIGTERM cleans up like Ctrl-C
    demo = Demo(args)
    try:
        return demo.run()
    except (DemoError, ControlPlaneError, StackError) as exc:
        print(f"\n{RED}demo failed{RESET}: {exc}", file=sys.stderr)
        for proc in demo.stack.processes.values() if demo.stack else []:
            print(f"--- last lines of {proc.log}:\n{proc.tail(800)}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 130
