"""The registry of every setting of the system, and the Docker stack's own keys.

`make run` wires the packages together, so it is the one place that knows all their settings:
the registry joins the keys each package declares (a key two packages read, like
`FLEETWATCH_OUTPUT_DIR`, must have one default) with the keys only the Docker stack reads.
`.env.example` documents exactly these keys (a test checks both ways).

>>> REGISTRY.get("INFLUX_DATABASE", {})
'machines'
>>> "LOCALFLUX_PORT" in REGISTRY and "SIM_SEED" in REGISTRY
True
"""

from __future__ import annotations

from detection_eval.settings import SETTINGS as EVALUATION
from influx_magic.settings import SETTINGS as PRODUCT
from localflux.inbox.settings import SETTINGS as INBOX
from localflux.influxdb.settings import SETTINGS as INFLUXDB
from machine_simulator.settings import SETTINGS as SIMULATOR
from magic_common.envsettings import Settings, joined, load_dotenv

# Read by docker compose only: the stack's published address, its plots server's and Grafana's
# ports, and Grafana's first admin password.
DOCKER_STACK = Settings(
    {
        "DOCKER_PUBLISH_ADDRESS": "127.0.0.1",
        "PLOTS_PORT": "5006",
        "GRAFANA_PORT": "3000",
        "GRAFANA_ADMIN_PASSWORD": "",
    }
)

REGISTRY = joined([PRODUCT, INFLUXDB, INBOX, SIMULATOR, EVALUATION, DOCKER_STACK])
DEFAULTS = REGISTRY.defaults

setting = REGISTRY.get
int_setting = REGISTRY.integer
path_setting = REGISTRY.path

__all__ = ["DEFAULTS", "REGISTRY", "int_setting", "load_dotenv", "path_setting", "setting"]
