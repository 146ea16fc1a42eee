"""The fleet status page (`python -m influx_magic.fleet_page`, started by `make run`)."""
