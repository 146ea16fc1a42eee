"""`python -m fleetwatch.evaluate`: see fleetwatch/evaluate/cli.py."""

import sys

from fleetwatch.evaluate.cli import main

sys.exit(main())
