"""`python -m influx_magic.fleet_page [--host H] [--port P]`: serve the fleet status page."""

import sys

from influx_magic.fleet_page.server import main

sys.exit(main())
