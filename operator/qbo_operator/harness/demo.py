"""`qbo-operator demo`: the whole mission on one machine, with no accounts and no cluster.

A local control plane, the Helm chart, the QBO and Green Check sandboxes, the operator and the
gateway as processes under the chart's ServiceAccounts, a sample company connected through the
Connect flow, a day of payments, the night's sync through the CronJob's Job, and what arrived in
Green Check next to what QBO holds. Each step prints what it does; a failure names the step."""

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
from datetime import datetime
from decimal import Decimal
from pathlib import Path
from typing import Any, TypeVar

import httpx
import yaml

from qbo_operator.core import names
from qbo_operator.core.models import parse_rfc3339
from qbo_operator.harness import polling
from qbo_operator.harness.controlplane import ControlPlane, ControlPlaneError, run_job_pods
from qbo_operator.harness.localstack import LocalStack, StackError, parse_forms, submit

ROOT = Path(__file__).resolve().parents[3]
EXAMPLE = ROOT / "examples" / "quickbooksintegration-minimal.yaml"
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

    # helpers
    def kubectl(self, *args: str) -> str:
        assert self.cp is not None
        return self.cp.kubectl(*args).stdout

    def integration(self) -> dict[str, Any]:
        assert self.cp is not None
        obj: dict[str, Any] = self.cp.kubectl_json("get", "qbi", self.name, "-n", self.namespace)
        return obj

    def phase(self) -> str | None:
        phase: str | None = (self.integration().get("status") or {}).get("phase")
        return phase

    def run(self) -> int:
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
            self.nightly_sync()
        with step(8, "What arrived in Green Check (its read-back API) next to what QuickBooks holds"):
            self.compare()
        with step(9, "Metrics and alerts"):
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
            self.connect_like_a_browser()
        wait_for(
            "phase Connected",
            lambda: self.phase() == "Connected",
            timeout=600 if self.args.interactive else 120,
        )
        say(indent(self.kubectl("get", "qbi", "-n", self.namespace, "-o", "wide")))
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
        events = wait_for(
            "webhook events on the integration",
            lambda: ((self.integration().get("status") or {}).get("webhook") or {}).get("eventsSinceLastSync"),
            timeout=60,
        )
        say(f"    status.webhook.eventsSinceLastSync = {events} (signed webhooks, verified by the gateway)")

    def nightly_sync(self) -> None:
        cronjob = names.cronjob_name(self.name)
        cj = self.cluster.kubectl_json("get", "cronjob", cronjob, "-n", self.namespace)
        say(f"    CronJob {cronjob}: schedule {cj['spec']['schedule']!r} ({cj['spec'].get('timeZone', 'UTC')})")
        job = f"{cronjob}-demo"
        self.kubectl("create", "job", job, f"--from=cronjob/{cronjob}", "-n", self.namespace)
        run = run_job_pods(
            self.cluster,
            self.namespace,
            job,
            command_map={"qbo-operator": str(Path(sys.executable).parent / "qbo-operator")},
        )
        say(indent(run.stderr.strip()[-1500:]) if run.stderr.strip() else "")
        if run.exit_code != 0:
            raise DemoError(f"the sync exited with {run.exit_code}")
        self.kubectl("wait", "--for=condition=Complete", f"job/{job}", "-n", self.namespace, "--timeout=120s")
        wait_for(
            "the Last Sync column",
            lambda: (self.integration().get("status") or {}).get("lastSuccessfulSyncTime"),
        )
        say(indent(self.kubectl("get", "qbi", "-n", self.namespace, "-o", "wide")))

    def connect_like_a_browser(self) -> None:
        with httpx.Client(follow_redirects=False, timeout=30) as browser:
            page = browser.get(self.link)
            page.raise_for_status()
            say(f"    GET  Connect page          → {page.status_code} ({self.company_name} and what will be shared)")
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
            answer = submit(browser, str(consent.url), form, {approve[0]: approve[1], "realmId": self.realm})
            say(f"    Approve at Intuit          → {answer.status_code} redirect back to the gateway")
            done = browser.get(answer.headers["location"], headers={"Cookie": cookies})
            say(f"    OAuth callback             → {done.status_code} “connected” page")
            if done.status_code != 200:
                raise DemoError(f"the callback answered {done.status_code}: {done.text[:300]}")

    def compare(self) -> None:
        stack = self.stack
        assert stack is not None
        records = stack.greencheck_records(self.company_id)
        qbo = httpx.get(f"{stack.qbo_url}/_sandbox/companies/{self.realm}/payments", timeout=30).json()
        payments: list[dict[str, Any]] = qbo["payments"]
        connected_at = parse_rfc3339(self.integration()["status"]["connectedAt"])
        say(f"    Green Check now holds {len(records)} invoice-payment records for {self.company_name}:")
        header = ("invoice #", "inv. total", "payment", "paid on", "applied")
        say("    {:>9} {:>11} {:>8} {:>10} {:>11}  customer: products".format(*header))
        for rec in records[:15]:
            inv = rec.get("invoice") or {}
            payment_id = str(rec.get("pos_sale_id", "")).split(":payment:")[-1].split(":")[0]
            products = ", ".join(li.get("product_name", "?") for li in rec.get("line_items") or [])
            say(
                f"    {inv.get('number') or '?':>9} {cents(int(inv.get('total') or 0)):>11} {payment_id:>8} "
                f"{str(rec.get('date', ''))[:10]:>10} {cents(int(rec.get('total_paid') or 0)):>11}  "
                f"{(rec.get('customer') or {}).get('name', '?')}: {products[:48]}"
            )
        if len(records) > 15:
            say(f"    … and {len(records) - 15} more")
        before = [p for p in payments if _created(p) < connected_at]
        new = [p for p in payments if _created(p) >= connected_at]
        unlinked = [p for p in new if not _invoice_links(p)]
        voided = [p for p in new if _voided(p)]
        company = httpx.get(f"{stack.qbo_url}/_sandbox/companies/{self.realm}", timeout=30).json()
        receipts = (company.get("counts") or {}).get("SalesReceipt", 0)
        say(f"\n    QuickBooks holds {len(payments)} payments: {len(before)} created before the connection,")
        say(f"    {len(new)} since ({len(unlinked)} not applied to any invoice, {len(voided)} voided).")
        say("    Absent from Green Check, by design:")
        say(f"      • the {len(before)} payments from before the connection (at {connected_at:%Y-%m-%d %H:%M}Z)")
        say(f"      • the {receipts} sales receipts: cash sales, not invoice payments; never read")
        say("      • unapplied, credit-only and voided payments: no invoice payment to report")
        say("    One record per (payment, invoice): a payment split over three invoices gives three records.")
        expected = {
            f"qbo:{self.realm}:payment:{p['Id']}:invoice:{invoice_id}"
            for p in new
            if p not in voided
            for invoice_id in _invoice_links(p)
        }
        got = [str(r.get("pos_sale_id")) for r in records]
        missing, unexpected = expected - set(got), set(got) - expected
        self.check = (
            f"expected={len(expected)} delivered={len(got)} missing={len(missing)} "
            f"unexpected={len(unexpected)} duplicated={len(got) - len(set(got))}"
        )
        say(f"    Checked against QuickBooks: {self.check}")
        if missing or unexpected or len(got) != len(set(got)):
            raise DemoError(f"Green Check does not hold exactly the expected records: missing {sorted(missing)[:5]}")
        self.delivered = len(records)

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
        say(f"\n{BOLD}Summary{RESET}: phase {self.phase()}, {self.delivered} records delivered to Green Check.")
        say(f"DEMO-SUMMARY phase={self.phase()} {self.check}")
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
        if self.stack is not None:
            self.stack.stop()
        if self.cp is not None:
            self.cp.stop()
        say("Stopped: no process left running.")


def _created(payment: dict[str, Any]) -> datetime:
    return parse_rfc3339(payment["MetaData"]["CreateTime"])


def _voided(payment: dict[str, Any]) -> bool:
    note = (payment.get("PrivateNote") or "").lower()
    return payment.get("TxnStatus") == "Voided" or (
        note.startswith("voided") and Decimal(str(payment["TotalAmt"])) == 0
    )


def _invoice_links(payment: dict[str, Any]) -> list[str]:
    return [
        link["TxnId"]
        for line in payment.get("Line") or []
        for link in line.get("LinkedTxn") or []
        if link.get("TxnType") == "Invoice"
    ]


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
