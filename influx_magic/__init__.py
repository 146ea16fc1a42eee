"""influx_magic: the product around the detection core.

Its settings, InfluxDB I/O through the official client, the run transaction, alerts to Slack,
plots, and the Mage launcher and patches. The Mage project `influx-magic/` calls it.
"""

__version__ = "0.1.0"
