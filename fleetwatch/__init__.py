"""fleetwatch: anomaly detection for machine fleets, the library behind the influx-magic blocks."""

__version__ = "0.1.0"
