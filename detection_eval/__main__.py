"""`python -m detection_eval`: see detection_eval/cli.py."""

import sys

from detection_eval.cli import main

sys.exit(main())
