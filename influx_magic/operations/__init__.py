"""Operating the pipeline: per-machine settings, mutes, acknowledgements, false alarms, the
fleet's status and the `influx-magic` command-line tool (see the package README)."""
