"""localflux: local stand-ins for the production services (InfluxDB 3, Telegraf, MQTT, Slack)."""

__version__ = "0.1.0"
