"""The nightly sync process (`qbo-operator sync`): QBO and Green Check clients, the mapping, the run."""
