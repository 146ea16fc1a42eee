"""Tests of fleetwatch.evaluate: NAB scorer, corpus files, detectors, simulator harness."""
