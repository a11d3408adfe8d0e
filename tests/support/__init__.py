"""What the tests share, in one package (never a test module, never a conftest.py):

- `paths`: the checkout, test-artifacts/ and the `qbo-operator` entry point under test.
- `wait`: the one polling helper, `harness.polling.wait_for`, and the timeout a whole product needs.
- `objects`: manifests (QuickbooksIntegration, token Secret) and tokens, named with `core.names`.
- `kube`: reading and writing them on the control plane, the audit log, ServiceAccounts and RBAC.
- `kubelet`: the test kubelet, built on the harness's (`run_job_pods`, `pod_env`, `report_pod_exit`).
- `processes`: the operator and the gateway as real processes.
- `connect`, `webhooks`: the Connect flow without a browser; webhook bodies and vectors.
- `proxies`: a TCP forwarder that can be cut, an HTTP proxy that can rewrite answers.
- `sync`: the sync end to end (E2E) and the expected records; `faults`: the fault matrix's stand-ins and
  invariants.
- `stack`: the whole product as processes (harness.localstack) for the chaos and restart tests.
- `sandbox`: the QBO sandbox's app credentials, a clock the test moves, the OAuth dance over HTTP.
- `sandbox`: the QBO sandbox's app credentials, a clock the test moves, the OAuth dance over HTTP.
- `greencheck`: Green Check records and constants; `chart`: helm rendering; `ledger`: the reliability report
  and the secret-hygiene ledger; `operator`: the operator tests' settings and identity."""
