"""Local imitations of the outside services (docs/qbo.md, docs/greencheck.md) for tests, the demo and benchmarks.

`qbo_operator.harness.sandbox.qbo.QboSandbox` imitates Intuit (OAuth, Accounting API, webhooks);
`qbo_operator.harness.sandbox.greencheck.GreenCheckSandbox` imitates Green Check. Both use
`qbo_operator.harness.sandbox.faults.Faults` for fault injection. Nothing here is imported by the product
code paths: the package is loaded only by `qbo-operator sandbox`, tests, the demo and benchmarks."""
