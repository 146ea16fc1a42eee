"""`python -m detection_eval`: see fleetwatch/evaluate/cli.py."""

import sys

from detection_eval.cli import main

sys.exit(main())
