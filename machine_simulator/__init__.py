"""machine_simulator: a fleet of machines publishing telemetry over MQTT, with fault injection."""

__version__ = "0.1.0"
