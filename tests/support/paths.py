"""Where the checkout, the test artifacts and the entry point under test are."""

from __future__ import annotations

import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
ARTIFACTS = ROOT / "test-artifacts"
# The virtualenv running the tests holds the `qbo-operator` under test.
VENV_BIN = Path(sys.executable).parent
QBO_OPERATOR = str(VENV_BIN / "qbo-operator")
