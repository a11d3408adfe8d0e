"""qbo-operator: QuickBooks Online invoice payments to Green Check, one integration per company."""

__version__ = "0.1.0"
