import sys

from qbo_operator.cli import main

sys.exit(main())
