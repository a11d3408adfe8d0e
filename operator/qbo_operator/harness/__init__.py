"""The development harness: the local control plane, the local stack, the demo and the sandboxes.
The product never imports this package."""
