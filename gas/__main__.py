"""`python -m gas` runs the CLI."""

import sys

from gas.cli import main

sys.exit(main())
