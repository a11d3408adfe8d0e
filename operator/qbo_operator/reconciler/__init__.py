"""The operator process (`qbo-operator run`): kopf handlers, the level-based reconcile, manifests, conditions."""
